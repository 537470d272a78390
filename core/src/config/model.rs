//! The validated cluster configuration: every value in range, every path resolved, every
//! cross-reference checked. Components read these plain structs and never re-validate.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use braid_ipsec::proposal::{EspProposal, IkeProposal};

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
    /// The tunnel protocol every pair speaks (`cluster.suite`, default WireGuard).
    pub suite: Suite,
    /// The IPsec settings (the file's `ipsec:` section): `Some` exactly when `suite` is
    /// [`Suite::Ipsec`].
    pub ipsec: Option<IpsecConfig>,
}

/// The tunnel protocol between the two gateways of every pair. One per cluster.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// WireGuard (Noise IK), on each gateway's `wan` port; keys per gateway.
    #[default]
    WireGuard,
    /// IKEv2 with a pre-shared key and ESP in UDP (RFC 7296, RFC 4303, RFC 3948).
    Ipsec,
}

impl Suite {
    /// Both suites, in the order they are listed in messages.
    pub const ALL: [Suite; 2] = [Suite::WireGuard, Suite::Ipsec];

    /// The name the cluster file and the command line use: `wireguard` or `ipsec`.
    pub fn as_str(self) -> &'static str {
        match self {
            Suite::WireGuard => "wireguard",
            Suite::Ipsec => "ipsec",
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Suite {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Suite::ALL
            .into_iter()
            .find(|suite| suite.as_str() == text)
            .ok_or_else(|| format!("expected wireguard or ipsec, got {text:?}"))
    }
}

/// IKE SA lifetime when the file does not set one: 4 hours, strongSwan's `rekey_time`.
pub const DEFAULT_IKE_LIFETIME_S: u64 = 14_400;
/// CHILD SA lifetime when the file does not set one: 1 hour, strongSwan's `rekey_time`.
pub const DEFAULT_CHILD_LIFETIME_S: u64 = 3_600;
/// Interval of the INFORMATIONAL liveness check when the file does not set one.
pub const DEFAULT_LIVENESS_S: u64 = 5;

/// The IPsec suite's settings, shared by every pair.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IpsecConfig {
    /// The pre-shared key file (resolved path): one line of text, mode 0600, used byte for
    /// byte (see [`crate::keys::PresharedKey`]). Both sites use the same key.
    pub psk_file: PathBuf,
    /// IKE SA proposals offered and accepted, most preferred first; never empty.
    pub ike_proposals: Vec<IkeProposal>,
    /// ESP (CHILD SA) proposals offered and accepted, most preferred first; never empty.
    pub esp_proposals: Vec<EspProposal>,
    /// IKE SA lifetime in seconds, 20..=604800; the engine rekeys before it ends.
    pub ike_lifetime_s: u64,
    /// CHILD SA lifetime in seconds, 10..=604800; the engine rekeys before it ends.
    /// Independent of `ike_lifetime_s`.
    pub child_lifetime_s: u64,
    /// ESP anti-replay window in packets, `braid_ipsec::replay::{MIN,MAX}_REPLAY_WINDOW`
    /// (64..=65536); the engine rounds it up to a multiple of 64.
    pub replay_window: u32,
    /// Seconds between INFORMATIONAL liveness checks, 1..=3600.
    pub liveness_s: u64,
    /// The sites whose gateways start IKE SAs (every site by default). A site that peers with
    /// a VPN gateway that insists on initiating itself lists only the other site; gateways of
    /// a site not listed only answer.
    pub initiators: Vec<String>,
    /// Whether each gateway seals ESP on a thread of its own, beside the thread that opens
    /// ESP and runs IKE (default no): up to twice the throughput of one thread for traffic
    /// in both directions, on a host with a core to spare per gateway.
    pub seal_thread: bool,
}

impl IpsecConfig {
    /// The defaults, with the pre-shared key in `psk_file`.
    pub fn with_psk_file(psk_file: PathBuf) -> Self {
        IpsecConfig {
            psk_file,
            ike_proposals: braid_ipsec::proposal::default_ike_proposals(),
            esp_proposals: braid_ipsec::proposal::default_esp_proposals(),
            ike_lifetime_s: DEFAULT_IKE_LIFETIME_S,
            child_lifetime_s: DEFAULT_CHILD_LIFETIME_S,
            replay_window: braid_ipsec::replay::DEFAULT_REPLAY_WINDOW,
            liveness_s: DEFAULT_LIVENESS_S,
            initiators: Vec::new(),
            seal_thread: false,
        }
    }

    /// Whether gateways of `site` start IKE SAs.
    pub fn initiates(&self, site: &str) -> bool {
        self.initiators.iter().any(|s| s == site)
    }
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
    /// A TCP flow whose handshake has not completed (created by a SYN, no ACK without SYN
    /// seen yet): short, so a SYN flood cannot hold flow-table slots for the full `tcp_idle`.
    pub tcp_half_open: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_idle: 350,
            tcp_closing: 10,
            udp_idle: 120,
            other_idle: 120,
            tcp_half_open: 5,
        }
    }
}

/// One site.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SiteConfig {
    /// The site's own addresses; never overlapping another prefix in the cluster.
    pub prefixes: Vec<Prefix>,
    /// The site's demux: `None` exactly when the site is external.
    pub demux: Option<DemuxConfig>,
    /// `Some` when the site runs no braid (`external: true`, IPsec only, at most one site):
    /// its gateways are standard IPsec endpoints (strongSwan, a cloud VPN gateway) that the
    /// controller neither launches nor hears from.
    pub external: Option<ExternalSite>,
}

impl SiteConfig {
    /// Whether the site runs no braid.
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }
}

/// What braid needs to know of a site that runs no braid.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExternalSite {
    /// An address inside the site's prefixes that answers ICMP echo. The other site's demux
    /// pings it through every pair (its canary): the pair's health is the local gateway's
    /// heartbeat and IKE/ESP session plus these echoes.
    pub canary: IpAddr,
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
    /// Data threads (each owns a TUN queue and a GENEVE socket); `None`: one per CPU core.
    pub data_threads: Option<usize>,
}

/// A gateway pair: one gateway in each site, joined by a tunnel of the cluster's suite.
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
    /// The gateway's LAN address, where its demux sends GENEVE; `None` exactly for a gateway
    /// of an external site (which has no demux).
    pub geneve: Option<SocketAddr>,
    /// Its tunnel endpoint as the peer gateway sees it, where the peer sends: WireGuard's UDP
    /// port, or for IPsec the UDP port ESP and IKE share (4500 by convention, RFC 3948). Behind
    /// a 1:1 NAT this is the public (external) address, which the gateway cannot bind.
    pub wan: SocketAddr,
    /// The local address the gateway binds when it differs from `wan` (behind a 1:1 NAT: the
    /// private address the NAT forwards `wan` to); `None` binds `wan` itself. Same family as
    /// `wan`, non-zero port; the IP may be unspecified (`0.0.0.0:51820`).
    pub wan_listen: Option<SocketAddr>,
    /// Its WireGuard public key: always present when the suite is WireGuard; optional and
    /// unused when it is IPsec.
    pub public_key: Option<PublicKey>,
    /// Resolved path of its WireGuard private key; only needed where the gateway runs, and
    /// unused when the suite is IPsec.
    pub private_key_file: Option<PathBuf>,
    /// IPsec only: the IKE identity this gateway sends and its peer expects (IDi/IDr), in
    /// strongSwan's notation. `None` means the WAN IP address (ID_IPV4_ADDR / ID_IPV6_ADDR).
    pub ike_id: Option<String>,
    /// The network namespace the supervisor runs the gateway in (`ip netns exec`), if any.
    pub netns: Option<String>,
}

impl GatewayConfig {
    /// The address the gateway binds its tunnel socket to: `wan_listen`, else `wan`.
    pub fn wan_bind(&self) -> SocketAddr {
        self.wan_listen.unwrap_or(self.wan)
    }
}

/// Where the Prometheus and status HTTP endpoint listens when the file does not say: loopback.
pub const DEFAULT_METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9477);

/// The controller: where daemons reach it, how it judges them, and how it restarts them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ControllerConfig {
    /// The control socket daemons send heartbeats to (a unix path, resolved, or UDP): for
    /// UDP, the address as the daemons see it (behind a 1:1 NAT, the public one).
    pub address: ControlAddr,
    /// The local UDP address the controller binds when it differs from a UDP `address` (behind
    /// a 1:1 NAT: the private address the NAT forwards `address` to); `None` binds `address`.
    /// Never set with a unix `address`.
    pub listen: Option<SocketAddr>,
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
    /// Run as `sh -c` in its own process group, at most one at a time per daemon, killed (the
    /// whole group) after 30 s; outcomes are on `/metrics` as `braid_restart_hooks_total`.
    pub restart_hook: Option<String>,
    /// The local administration socket (resolved path): a unix stream socket, mode 0600, that
    /// serves only root and the controller's own user (checked with `SO_PEERCRED`).
    pub admin_socket: PathBuf,
    /// Where the controller takes signed administration requests over TCP, if anywhere; `Some`
    /// exactly when `admin_key_file` is.
    pub admin_listen: Option<SocketAddr>,
    /// The admin key (resolved path) that signs remote administration requests: 32 bytes of
    /// base64, mode 0600; `Some` exactly when `admin_listen` is.
    pub admin_key_file: Option<PathBuf>,
    /// The controller's persistent state (resolved path), created mode 0700 at start.
    pub state_dir: PathBuf,
    /// Every member of the controller set, by index: one entry for a lone controller (the
    /// fields above), several under `controller.members`. Daemons heartbeat to every member.
    pub members: Vec<ControllerMember>,
    /// Which member the fields `address`, `metrics`, `admin_socket` and `state_dir` are
    /// (`braid up --member N`; 0 by default).
    pub member: u16,
    /// The etcd cluster a controller set elects its leader through; `None`: one controller,
    /// always the leader.
    pub etcd: Option<EtcdConfig>,
}

/// One controller of a controller set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerMember {
    /// Where daemons send it heartbeats (and where it listens, unless `listen` says).
    pub address: ControlAddr,
    /// The local UDP address it binds when `address` is translated by a NAT.
    pub listen: Option<SocketAddr>,
    /// Its `/metrics` and `/status`.
    pub metrics: SocketAddr,
    /// Its local administration socket (resolved path).
    pub admin_socket: PathBuf,
    /// Its state directory (resolved path).
    pub state_dir: PathBuf,
}

/// `controller.etcd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, `http://host:port`.
    pub endpoints: Vec<String>,
    /// The key prefix of this cluster's state (default `/braid/<cluster name>`).
    pub prefix: String,
    /// The leader's lease, 1..=60 s (default 2): a dead or cut-off leader is replaced within
    /// about this long, and a leader that cannot renew it stops acting before it runs out.
    pub lease_ttl_s: u64,
}

impl ControllerConfig {
    /// The defaults for cluster `name`: a control socket at `/run/braid/<name>/control.sock`,
    /// the admin socket beside it (`admin.sock`), no remote administration, and the state in
    /// `/var/lib/braid/<name>`.
    pub fn defaults(cluster_name: &str) -> Self {
        let run_dir = PathBuf::from("/run/braid").join(cluster_name);
        ControllerConfig {
            address: ControlAddr::Unix(run_dir.join("control.sock")),
            listen: None,
            metrics: DEFAULT_METRICS_ADDR,
            heartbeat_ms: 100,
            failure_timeout_ms: 400,
            recovery_ms: 1000,
            canary_rtt_alarm_ms: 200,
            drain_timeout_s: 300,
            restart_hook: None,
            admin_socket: run_dir.join("admin.sock"),
            admin_listen: None,
            admin_key_file: None,
            state_dir: PathBuf::from("/var/lib/braid").join(cluster_name),
            members: Vec::new(),
            member: 0,
            etcd: None,
        }
        .with_self_as_only_member()
    }

    /// A lone controller: its own fields are the whole set.
    fn with_self_as_only_member(mut self) -> Self {
        self.members = vec![ControllerMember {
            address: self.address.clone(),
            listen: self.listen,
            metrics: self.metrics,
            admin_socket: self.admin_socket.clone(),
            state_dir: self.state_dir.clone(),
        }];
        self
    }

    /// This configuration as member `index` of the set runs it; `None` if there is no such
    /// member.
    pub fn as_member(&self, index: u16) -> Option<ControllerConfig> {
        let m = self.members.get(usize::from(index))?;
        Some(ControllerConfig {
            address: m.address.clone(),
            listen: m.listen,
            metrics: m.metrics,
            admin_socket: m.admin_socket.clone(),
            state_dir: m.state_dir.clone(),
            member: index,
            ..self.clone()
        })
    }

    /// Every member's control address, by index: where daemons send heartbeats.
    pub fn control_addresses(&self) -> Vec<ControlAddr> {
        self.members.iter().map(|m| m.address.clone()).collect()
    }

    /// The control address the controller binds: `listen` when set, else `address`.
    pub fn bind_address(&self) -> ControlAddr {
        match self.listen {
            Some(listen) => ControlAddr::Udp(listen),
            None => self.address.clone(),
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
