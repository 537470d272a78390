//! The controller's status document: what `GET /status` answers, `braid status` shows and
//! `/metrics` exports. The controller builds one snapshot a few times a second in its
//! supervisor loop and its HTTP thread serves it, so readers never touch live state. It lives
//! here, not in the controller, because its readers do not run the controller's code: the lab
//! and the bench fetch it over HTTP ([`http_get`]) like any operator tool would.
//!
//! Tunnel figures are the same for both suites: the SA age is the age of the keys a gateway
//! sends with (since the last WireGuard handshake, or since the IPsec CHILD SA it sends on was
//! installed); rekeys count those keys replaced while still valid, IPsec IKE SA rekeys apart;
//! replay drops are split into counters already seen (replayed) and counters left of the
//! anti-replay window (too old). Fields added since the first release default when absent, so
//! a newer `braid status` reads an older controller's document.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole cluster as the controller sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub cluster: String,
    pub controller_pid: u32,
    pub uptime_ms: u64,
    /// When the supervisor loop built this snapshot (Unix ms); readers derive the loop's age.
    pub published_unix_ms: u64,
    /// Membership epoch last pushed, and whether every demux acknowledged it.
    pub epoch: u64,
    pub converged: bool,
    pub pairs_up: usize,
    pub gateways: Vec<GatewayStatus>,
    pub demuxes: Vec<DemuxStatus>,
    pub pairs: Vec<PairStatus>,
    pub alarms: Alarms,
    pub monitoring: Monitoring,
    /// The controller set as this controller sees it: itself, and the leader if that is
    /// another member. Empty from older controllers.
    #[serde(default)]
    pub controllers: Vec<ControllerStatus>,
}

/// One member of the controller set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStatus {
    /// Its index in `controller.members` (0 for a lone controller).
    pub index: u16,
    /// Its pid, for the controller that wrote the status; `None` for another member.
    pub pid: Option<u32>,
    /// Whether it leads (acts) now.
    pub leader: bool,
    /// The term it leads under, or of the leader it follows (0 without etcd).
    pub term: u64,
    /// Whether its last exchange with etcd succeeded (always true without etcd).
    #[serde(default)]
    pub store_reachable: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub site: String,
    pub index: u16,
    pub pid: Option<u32>,
    /// "up", "down", "starting".
    pub state: String,
    pub restarts: u32,
    /// The SA age under its older name; the same as `sa_age_ms`.
    pub handshake_age_ms: Option<u64>,
    pub session_established: bool,
    /// `wireguard` or `ipsec`: what the gateway reports, else the cluster's suite.
    #[serde(default)]
    pub suite: String,
    #[serde(default)]
    pub sa_age_ms: Option<u64>,
    /// IPsec: the IKE SA's age.
    #[serde(default)]
    pub ike_sa_age_ms: Option<u64>,
    /// Rekeys since the gateway started; `None` when it does not report them.
    #[serde(default)]
    pub rekeys: Option<u64>,
    /// IPsec: IKE SA rekeys since the gateway started.
    #[serde(default)]
    pub ike_rekeys: Option<u64>,
    #[serde(default)]
    pub drops_replayed: Option<u64>,
    #[serde(default)]
    pub drops_too_old: Option<u64>,
    /// Handshakes refused by the gateway's handshake rate limits (per source and global).
    #[serde(default)]
    pub drops_handshake_limited: Option<u64>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub drops: u64,
    pub heartbeat_age_ms: Option<u64>,
    pub max_heartbeat_gap_ms: u64,
    pub last_failure: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DemuxStatus {
    pub site: String,
    pub pid: Option<u32>,
    pub state: String,
    pub restarts: u32,
    pub membership_epoch: u64,
    pub heartbeat_age_ms: Option<u64>,
    pub last_failure: Option<String>,
    /// Every counter the demux last reported, by name (drop reasons are `drop_*`).
    #[serde(default)]
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Flow-table slots in use, when the demux reports them.
    #[serde(default)]
    pub flow_table_entries: Option<u64>,
    /// The flows its flow tables are sized for, when the demux reports them.
    #[serde(default)]
    pub flow_table_capacity: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PairStatus {
    pub index: u16,
    /// "up", "down", "draining", "removed".
    pub state: String,
    /// Takes new flows.
    pub active: bool,
    /// Keeps its pinned flows.
    pub serving: bool,
    pub pinned_flows: u64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub canary_rtt_us: Option<u64>,
    pub canary_sent: u64,
    pub canary_lost: u64,
    pub last_failure: Option<String>,
    /// The suite its gateways run.
    #[serde(default)]
    pub suite: String,
    /// The older of its gateways' SA ages.
    #[serde(default)]
    pub sa_age_ms: Option<u64>,
    /// The higher of its gateways' rekey counts (both ends count every rekey, but each since
    /// its own start).
    #[serde(default)]
    pub rekeys: Option<u64>,
    #[serde(default)]
    pub ike_rekeys: Option<u64>,
    /// Replay drops at both gateways together.
    #[serde(default)]
    pub drops_replayed: u64,
    #[serde(default)]
    pub drops_too_old: u64,
}

impl PairStatus {
    /// Folds one of the pair's gateways into the pair's tunnel figures.
    pub fn add_gateway(&mut self, g: &GatewayStatus) {
        self.suite.clone_from(&g.suite);
        self.sa_age_ms = self.sa_age_ms.max(g.sa_age_ms);
        self.rekeys = self.rekeys.max(g.rekeys);
        self.ike_rekeys = self.ike_rekeys.max(g.ike_rekeys);
        self.drops_replayed += g.drops_replayed.unwrap_or(0);
        self.drops_too_old += g.drops_too_old.unwrap_or(0);
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Alarms {
    /// Fewer than one pair up.
    pub pairs_up_below_one: bool,
    /// Pairs whose canary round trip exceeds the configured threshold.
    pub canary_rtt_high: Vec<u16>,
    pub canary_rtt_threshold_ms: u64,
    /// Sites the controller lost sight of: most of their daemons went silent at once. Their
    /// pairs stay in service while canaries cross them; nothing there is restarted.
    #[serde(default)]
    pub sites_unreachable: Vec<String>,
}

impl StatusSnapshot {
    /// The alarms raised, by their `braid_alarm` name: `pairs_up_below_one`,
    /// `canary_rtt_high`, `site_unreachable`, `monitoring_unhealthy`. Empty when the cluster is
    /// healthy.
    pub fn alarms_raised(&self) -> Vec<&'static str> {
        [
            ("pairs_up_below_one", self.alarms.pairs_up_below_one),
            ("canary_rtt_high", !self.alarms.canary_rtt_high.is_empty()),
            ("site_unreachable", !self.alarms.sites_unreachable.is_empty()),
            ("monitoring_unhealthy", self.monitoring.unhealthy()),
        ]
        .into_iter()
        .filter_map(|(name, raised)| raised.then_some(name))
        .collect()
    }
}

/// The health of the monitoring itself (seed 004's lesson: watch the watcher).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Monitoring {
    /// Milliseconds since the supervisor loop last ran.
    pub loop_age_ms: u64,
    pub heartbeats_received: u64,
    /// Control messages rejected, by reason.
    pub rejected: Vec<(String, u64)>,
    /// Daemons that have never sent a heartbeat.
    pub never_heard: usize,
    /// Administration requests refused, by reason (filled in by the HTTP endpoint).
    #[serde(default)]
    pub admin_refused: Vec<(String, u64)>,
    /// HTTP connections refused or cut off, by reason (filled in by the HTTP endpoint).
    #[serde(default)]
    pub http_refused: Vec<(String, u64)>,
    /// Restart hooks run for daemons on other hosts, by outcome.
    #[serde(default)]
    pub restart_hooks: HookCounts,
}

impl Monitoring {
    /// The supervisor loop's snapshot is older than this: the controller is stuck.
    pub const STALE_AFTER_MS: u64 = 2_000;

    /// The monitoring cannot be trusted: the controller's loop has not run for
    /// [`Self::STALE_AFTER_MS`], or a daemon has never been heard from.
    pub fn unhealthy(&self) -> bool {
        self.loop_age_ms > Self::STALE_AFTER_MS || self.never_heard > 0
    }
}

/// What became of the restart hooks this controller ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCounts {
    /// Hooks launched.
    pub started: u64,
    /// Exited with status 0.
    pub succeeded: u64,
    /// Exited non-zero, died of a signal, or could not be launched or waited for.
    pub failed: u64,
    /// Killed at the deadline.
    pub timed_out: u64,
    /// Not launched: the daemon's previous hook was still running.
    pub skipped: u64,
    /// Running now.
    pub running: u64,
}

/// `GET path` from the controller's HTTP endpoint at `addr`: the body of a 2xx answer.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    http_request(addr, "GET", path)
}

/// The largest answer [`http_request`] reads (a status or `/metrics` of thousands of pairs is a
/// few MiB): a larger one is an error, so whatever answers at the address cannot make the
/// caller allocate without bound.
pub const MAX_HTTP_ANSWER: u64 = 64 << 20;

/// A blocking HTTP request to the controller's HTTP endpoint: returns the body of a 2xx answer.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<String> {
    http_request_limited(addr, method, path, MAX_HTTP_ANSWER)
}

fn http_request_limited(addr: SocketAddr, method: &str, path: &str, limit: u64) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot reach the controller at {addr} (is `braid up` running?): {e}"),
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.take(limit + 1).read_to_string(&mut response)?;
    if response.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "the answer from {addr} is larger than {limit} bytes: is this the controller's HTTP endpoint?"
        )));
    }
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or("");
    if !status.split_whitespace().nth(1).is_some_and(|c| c.starts_with('2')) {
        return Err(std::io::Error::other(format!(
            "controller answered {status}: {}",
            body.trim()
        )));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A one-shot server on loopback answering the first request with `answer`.
    fn server(answer: Vec<u8>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut head = [0u8; 1024];
                let _ = stream.read(&mut head);
                let _ = stream.write_all(&answer);
            }
        });
        addr
    }

    #[test]
    fn an_answer_is_read_up_to_the_limit_and_no_further() {
        let ok = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"pairs_up\":1}".to_vec();
        assert_eq!(
            http_request_limited(server(ok), "GET", "/status", 4096).unwrap(),
            "{\"pairs_up\":1}"
        );
        let mut endless = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        endless.resize(1 << 20, b'x');
        let err = http_request_limited(server(endless), "GET", "/status", 4096).unwrap_err();
        assert!(err.to_string().contains("larger than 4096 bytes"), "{err}");
        let refused = b"HTTP/1.1 403 Forbidden\r\n\r\nno".to_vec();
        let err = http_request_limited(server(refused), "GET", "/status", 4096).unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
    }
}
