//! The validated cluster configuration: every value in range, every path resolved, every
//! cross-reference checked. Components read these plain structs and never re-validate.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::prefix::Prefix;
use crate::control::{ControlAddr, DaemonId, Role};
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
    /// The controller; defaults when the file has no `controller:` section.
    pub controller: ControllerConfig,
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
    /// The network namespace the supervisor runs the demux in (`ip netns exec`), if any.
    pub netns: Option<String>,
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
    /// The network namespace the supervisor runs the gateway in (`ip netns exec`), if any.
    pub netns: Option<String>,
}

/// Where the Prometheus and status HTTP endpoint listens when the file does not say: loopback.
pub const DEFAULT_METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9477);

/// The controller: where daemons reach it, how it judges them, and how it restarts them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ControllerConfig {
    /// The control socket daemons send heartbeats to (a unix path, resolved, or UDP).
    pub address: ControlAddr,
    /// Prometheus `/metrics` and status over HTTP.
    pub metrics: SocketAddr,
    /// How often every daemon sends a heartbeat, 10..=10000 ms.
    pub heartbeat_ms: u64,
    /// No heartbeat for this long means the daemon is dead; at least two heartbeat periods.
    pub failure_timeout_ms: u64,
    /// How long a pair must stay healthy before it takes new flows again.
    pub recovery_ms: u64,
    /// Canary round trips above this raise the latency alarm.
    pub canary_rtt_alarm_ms: u64,
    /// How long a draining pair waits for its pinned flows to go idle before removal.
    pub drain_timeout_s: u64,
    /// Command that restarts a daemon the controller does not launch itself, with `{role}`
    /// (`gw` or `demux`), `{site}` and `{pair}` replaced; `None` when every daemon is local.
    pub restart_hook: Option<String>,
}

impl ControllerConfig {
    /// The defaults for cluster `name`: a unix socket at `/run/braid/<name>/control.sock`.
    pub fn defaults(cluster_name: &str) -> Self {
        ControllerConfig {
            address: ControlAddr::Unix(PathBuf::from("/run/braid").join(cluster_name).join("control.sock")),
            metrics: DEFAULT_METRICS_ADDR,
            heartbeat_ms: 100,
            failure_timeout_ms: 400,
            recovery_ms: 1000,
            canary_rtt_alarm_ms: 200,
            drain_timeout_s: 300,
            restart_hook: None,
        }
    }

    /// The restart hook for daemon `id`, placeholders filled in.
    pub fn restart_command(&self, id: &DaemonId) -> Option<String> {
        let role = match id.role {
            Role::Demux => "demux",
            Role::Gateway => "gw",
            Role::Controller => "controller",
        };
        self.restart_hook.as_ref().map(|hook| {
            hook.replace("{role}", role)
                .replace("{site}", &id.site)
                .replace("{pair}", &id.pair.to_string())
        })
    }
}
