//! What `braid status` shows and `/metrics` exports: one snapshot, built by the supervisor loop
//! a few times a second and read by the HTTP thread, so readers never touch live state.

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
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub site: String,
    pub index: u16,
    pub pid: Option<u32>,
    /// "up", "down", "starting".
    pub state: String,
    pub restarts: u32,
    pub handshake_age_ms: Option<u64>,
    pub session_established: bool,
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
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Alarms {
    /// Fewer than one pair up.
    pub pairs_up_below_one: bool,
    /// Pairs whose canary round trip exceeds the configured threshold.
    pub canary_rtt_high: Vec<u16>,
    pub canary_rtt_threshold_ms: u64,
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
}

/// `braid status` as a table an operator reads at a glance.
pub fn render_table(s: &StatusSnapshot) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "cluster {}  controller pid {}  up {:.0} s  pairs up {}/{}  epoch {} ({})",
        s.cluster,
        s.controller_pid,
        s.uptime_ms as f64 / 1e3,
        s.pairs_up,
        s.pairs.len(),
        s.epoch,
        if s.converged { "acknowledged" } else { "pending" }
    );
    let _ = writeln!(
        o,
        "\nPAIR  STATE     NEW  FLOWS    TX MB     RX MB   CANARY RTT  LOST  LAST FAILURE"
    );
    for p in &s.pairs {
        let rtt = p
            .canary_rtt_us
            .map(|r| format!("{:.2} ms", r as f64 / 1e3))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "{:<5} {:<9} {:<4} {:<8} {:>8.1} {:>9.1} {:>11} {:>5}  {}",
            p.index,
            p.state,
            if p.active { "yes" } else { "no" },
            p.pinned_flows,
            p.tx_bytes as f64 / 1e6,
            p.rx_bytes as f64 / 1e6,
            rtt,
            p.canary_lost,
            p.last_failure.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(
        o,
        "\nGATEWAY  STATE     PID      RESTARTS  HANDSHAKE  TX MB     RX MB     DROPS  LAST FAILURE"
    );
    for g in &s.gateways {
        let hs = g
            .handshake_age_ms
            .map(|a| format!("{:.0} s", a as f64 / 1e3))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "{:<8} {:<9} {:<8} {:<9} {:<10} {:>8.1} {:>9.1} {:>6}  {}",
            format!("{}{}", g.site, g.index),
            g.state,
            g.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            g.restarts,
            hs,
            g.tx_bytes as f64 / 1e6,
            g.rx_bytes as f64 / 1e6,
            g.drops,
            g.last_failure.as_deref().unwrap_or("-")
        );
    }
    for d in &s.demuxes {
        let _ = writeln!(
            o,
            "demux {:<3} {:<9} pid {:<8} restarts {}  epoch {}",
            d.site,
            d.state,
            d.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            d.restarts,
            d.membership_epoch
        );
    }
    let mut alarms = Vec::new();
    if s.alarms.pairs_up_below_one {
        alarms.push("no pair up".to_string());
    }
    if !s.alarms.canary_rtt_high.is_empty() {
        alarms.push(format!(
            "canary RTT over {} ms on pairs {:?}",
            s.alarms.canary_rtt_threshold_ms, s.alarms.canary_rtt_high
        ));
    }
    let _ = writeln!(
        o,
        "\nalarms: {}",
        if alarms.is_empty() {
            "none".into()
        } else {
            alarms.join("; ")
        }
    );
    o
}
