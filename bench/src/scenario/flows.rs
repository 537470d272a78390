//! `braid-bench flows`: seed 003's production mix through the demux flow table.
//!
//! A two-pair lab; host a gets the extra source addresses the flow count needs (from its own
//! prefix 198.18.1.0/24, starting at .100), and a [`super::flood`] sender inside host a sends
//! `count` concurrent UDP flows at `pps` packets per second to host b's discard port. Before and
//! after, the scenario reads demux a's status (every drop counter, packets taken from the TUN,
//! live flows) and memory (VmRSS), and host b's received-packet counter. Nothing listens on the
//! discard port: host b's kernel counts the packets and drops them, so the receiving side costs
//! no process time; its ICMP replies are rate-limited by the kernel.
//!
//! Drops are counted wherever they happen: every drop counter of every demux and gateway
//! that grew, and every UDP datagram the kernel dropped for a full socket receive buffer
//! (`RcvbufErrors`) in any of the lab's namespaces (a demux's or a gateway's socket that its
//! process did not drain in time), which no braid counter can see.
//!
//! The flow table's memory is reported twice: as live flows × [`BYTES_PER_FLOW`] (the table's
//! documented entry cost) and as the demux's resident-memory growth during the run.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use braid_lab::netns::{ip_in, run_in, udp_receive_buffer_errors};
use serde::Serialize;
use serde_json::Value;

use super::flood::{addresses_needed, FloodReport};
use super::{lab_name, LabRun};

/// The demux flow table's documented cost of one flow.
pub const BYTES_PER_FLOW: u64 = 65;
/// The first extra source address of host a.
pub const SOURCE_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
/// The UDP port the flood goes to (discard).
pub const DISCARD_PORT: u16 = 9;
const PAIRS: u16 = 2;

/// What to send.
#[derive(Debug, Clone)]
pub struct FlowsOptions {
    pub count: u32,
    pub pps: u64,
    pub size: usize,
    pub seconds: f64,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct FlowsReport {
    pub pairs: u16,
    /// IPv4 packet size in bytes.
    pub size: usize,
    pub sender: FloodReport,
    /// Packets demux a read from its TUN during the run.
    pub demux_in_packets: u64,
    /// Packets host b received during the run, and per second.
    pub delivered: u64,
    pub delivered_pps: f64,
    pub delivered_mbps: f64,
    /// Every drop counter of every demux and gateway that grew, and every namespace's kernel
    /// UDP receive-buffer drops that grew, by name.
    pub drops: BTreeMap<String, u64>,
    /// Live flows in demux a's table at the end.
    pub live_flows: u64,
    pub table_bytes_documented: u64,
    /// Growth of demux a's resident memory during the run, in bytes.
    pub demux_rss_growth: Option<u64>,
}

fn counters(status: &Option<Value>) -> BTreeMap<String, u64> {
    status
        .as_ref()
        .and_then(|s| s["counters"].as_object())
        .map(|c| c.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
        .unwrap_or_default()
}

fn rx_packets(ns: &str) -> Result<u64> {
    let out = run_in(
        ns,
        Path::new("cat"),
        &["/sys/class/net/eth0/statistics/rx_packets".into()],
    )?;
    out.trim().parse().context("unreadable rx_packets")
}

/// A daemon of the lab whose drops the scenario counts.
struct Daemon {
    /// What it is: "demux a", "gw b2".
    what: String,
    pid: u32,
    netns: String,
    status_file: PathBuf,
}

/// Every demux and gateway of the lab.
fn daemons(lab: &LabRun) -> Vec<Daemon> {
    lab.info
        .processes
        .iter()
        .filter(|p| !p.netns.is_empty())
        .map(|p| Daemon {
            what: match p.role.as_str() {
                "demux" => format!("demux {}", p.site),
                role => format!("{role} {}{}", p.site, p.index),
            },
            pid: p.pid,
            netns: p.netns.clone(),
            status_file: PathBuf::from(&p.status_file),
        })
        .collect()
}

/// One daemon's published status and its counters plus its namespace's kernel UDP
/// receive-buffer drops, read once.
struct Reading {
    status: Option<Value>,
    counts: BTreeMap<String, u64>,
}

/// Every daemon's reading, now.
fn read_all(daemons: &[Daemon]) -> Result<Vec<Reading>> {
    daemons
        .iter()
        .map(|daemon| {
            let status = braid_lab::read_status(&daemon.status_file);
            let mut counts = counters(&status);
            counts.insert(KERNEL_RCVBUF.to_string(), udp_receive_buffer_errors(&daemon.netns)?);
            Ok(Reading { status, counts })
        })
        .collect()
}

/// The name under which a namespace's kernel UDP receive-buffer drops are reported.
const KERNEL_RCVBUF: &str = "kernel: udp_receive_buffer_full";

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the scenario.
pub fn run(options: &FlowsOptions, bin_dir: &Path) -> Result<FlowsReport> {
    let addresses = addresses_needed(options.count);
    if u32::from(SOURCE_BASE.octets()[3]) + addresses > 255 {
        bail!(
            "--count {} needs {addresses} source addresses; host a's prefix has room for 155",
            options.count
        );
    }
    let lab = LabRun::up(&lab_name("fl"), PAIRS, bin_dir)?;
    let host_a = &lab.info.hosts.a.netns;
    for i in 0..addresses {
        let address = Ipv4Addr::from(u32::from(SOURCE_BASE) + i);
        ip_in(host_a, &["addr", "add", &format!("{address}/32"), "dev", "eth0"])?;
    }
    let daemons = daemons(&lab);
    let demux_a = daemons
        .iter()
        .position(|d| d.what == "demux a")
        .context("the lab has no demux a")?;
    let demux_pid = daemons[demux_a].pid;
    let rx_before = rx_packets(&lab.info.hosts.b.netns)?;
    let before = read_all(&daemons)?;
    let rss_before = rss_bytes(demux_pid);
    let args: Vec<String> = [
        "flood",
        "--destination",
        &lab.info.hosts.b.addr.to_string(),
        "--port",
        &DISCARD_PORT.to_string(),
        "--source-base",
        &SOURCE_BASE.to_string(),
        "--flows",
        &options.count.to_string(),
        "--pps",
        &options.pps.to_string(),
        "--size",
        &options.size.to_string(),
        "--seconds",
        &options.seconds.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = run_in(host_a, &bin_dir.join("braid-bench"), &args)?;
    let sender: FloodReport = serde_json::from_str(&out).context("the flood sender printed no report")?;
    // Let the last packets land and the demuxes publish their status.
    std::thread::sleep(Duration::from_millis(1500));
    let rx = rx_packets(&lab.info.hosts.b.netns)?.saturating_sub(rx_before);
    let after = read_all(&daemons)?;
    let mut drops = BTreeMap::new();
    for (daemon, (before, after)) in daemons.iter().zip(before.iter().zip(&after)) {
        for (name, &value) in &after.counts {
            let grew = value.saturating_sub(before.counts.get(name).copied().unwrap_or(0));
            if grew > 0 && (name.starts_with("drop") || name.contains("table_full") || name == KERNEL_RCVBUF) {
                drops.insert(format!("{}: {name}", daemon.what), grew);
            }
        }
    }
    let (before_a, after_a) = (&before[demux_a].counts, &after[demux_a].counts);
    let live_flows = after[demux_a]
        .status
        .as_ref()
        .and_then(|s| s["flows"].as_u64())
        .unwrap_or(0);
    let seconds = sender.seconds.max(1e-9);
    Ok(FlowsReport {
        pairs: PAIRS,
        size: options.size,
        demux_in_packets: after_a
            .get("tun_rx_packets")
            .copied()
            .unwrap_or(0)
            .saturating_sub(before_a.get("tun_rx_packets").copied().unwrap_or(0)),
        delivered: rx,
        delivered_pps: rx as f64 / seconds,
        delivered_mbps: rx as f64 * options.size as f64 * 8.0 / seconds / 1e6,
        drops,
        live_flows,
        table_bytes_documented: live_flows * BYTES_PER_FLOW,
        demux_rss_growth: rss_bytes(demux_pid)
            .zip(rss_before)
            .map(|(after, before)| after.saturating_sub(before)),
        sender,
    })
}

/// The text summary.
pub fn render(r: &FlowsReport) -> String {
    let mut s = format!(
        "{} flows, {} B packets, offered {} pps for {:.1} s through {} pairs\n\
         sent {:.0} pps ({} send errors), demux a took {} packets, host b received {} ({:.0} pps, {:.0} Mbit/s)\n\
         flow table: {} live flows, {:.1} MB at {BYTES_PER_FLOW} B/flow; demux a RSS grew {}\n",
        r.sender.flows,
        r.size,
        r.sender.offered_pps,
        r.sender.seconds,
        r.pairs,
        r.sender.achieved_pps,
        r.sender.send_errors,
        r.demux_in_packets,
        r.delivered,
        r.delivered_pps,
        r.delivered_mbps,
        r.live_flows,
        r.table_bytes_documented as f64 / 1e6,
        r.demux_rss_growth
            .map(|b| format!("{:.1} MB", b as f64 / 1e6))
            .unwrap_or_else(|| "(unknown)".into()),
    );
    if r.drops.is_empty() {
        s += "drops: none\n";
    }
    for (name, value) in &r.drops {
        s += &format!("drop {name}: {value}\n");
    }
    s
}
