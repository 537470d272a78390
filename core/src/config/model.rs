//! The validated cluster configuration: every value in range, every path resolved, every
//! cross-reference checked. Components read these plain structs and never re-validate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::prefix::Prefix;
use crate::keys::PublicKey;

/// Inner MTU at the demux TUN when the file does not set one: 1500 less WireGuard's 80 bytes of
/// IPv6 overhead, the same default as `wg-quick`.
pub const DEFAULT_MTU: u16 = 1420;
/// Maglev lookup table size when the file does not set one: the prime the Maglev paper uses.
pub const DEFAULT_MAGLEV_TABLE_SIZE: usize = 65537;
/// Flow table capacity when the file does not set one: 1 Mi flows.
pub const DEFAULT_FLOW_TABLE_CAPACITY: usize = 1 << 20;

/// A whole cluster: two sites joined by one or more gateway pairs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ClusterConfig {
    /// The file this was loaded from; relative paths inside it were resolved against its
    /// directory, and errors name it.
    pub path: PathBuf,
    pub cluster: ClusterSettings,
    /// Exactly two sites, by name.
    pub sites: BTreeMap<String, SiteConfig>,
    /// At least one pair, in file order, ids unique.
    pub pairs: Vec<PairConfig>,
}

/// Cluster-wide settings.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ClusterSettings {
    /// `[a-z0-9-]{1,32}`.
    pub name: String,
    /// The shared secret keying the flow hash (resolved path).
    pub secret_file: PathBuf,
    /// Inner MTU at the demux TUN, 576..=9000 (at least 1280 when a site has IPv6 prefixes).
    pub mtu: u16,
    /// Maglev lookup table size: a prime larger than the number of pairs.
    pub maglev_table_size: usize,
    /// Flows each demux tracks, 1024..=2^26.
    pub flow_table_capacity: usize,
    pub timeouts: Timeouts,
}

/// Flow-table idle timeouts, in seconds.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Timeouts {
    /// An established TCP flow with no packets.
    pub tcp_idle: u64,
    /// A TCP flow after FIN or RST.
    pub tcp_closing: u64,
    pub udp_idle: u64,
    /// ICMP and every other protocol.
    pub other_idle: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_idle: 350,
            tcp_closing: 10,
            udp_idle: 120,
            other_idle: 120,
        }
    }
}

/// One site.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SiteConfig {
    /// The site's own addresses; never overlapping another prefix in the cluster.
    pub prefixes: Vec<Prefix>,
    pub demux: DemuxConfig,
}

/// A site's demux.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DemuxConfig {
    /// TUN interface name.
    pub tun: String,
    /// Where this site's gateways send returning traffic (GENEVE over UDP).
    pub geneve: SocketAddr,
}

/// A gateway pair: one gateway in each site, joined by a WireGuard session.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PairConfig {
    /// 1..=4095: the GENEVE VNI and the Maglev backend id.
    pub id: u16,
    /// Exactly one gateway per site, keyed by site name.
    pub gateways: BTreeMap<String, GatewayConfig>,
}

/// One gateway of a pair.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GatewayConfig {
    /// The gateway's LAN address, where its demux sends GENEVE.
    pub geneve: SocketAddr,
    /// Its WireGuard endpoint.
    pub wan: SocketAddr,
    pub public_key: PublicKey,
    /// Resolved path of its private key; only needed where the gateway runs.
    pub private_key_file: Option<PathBuf>,
}
