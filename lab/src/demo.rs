//! `braid demo`: lab up (WireGuard or IPsec pairs, `--suite`), real traffic from host a to
//! host b, a summary, lab down.
//!
//! The traffic is `braid-bench`'s: multi-stream TCP with every byte verified, then
//! sequence-numbered UDP flows that expose loss and reordering. Per-pair figures come from the
//! demuxes' status files (bytes each pair carried during the run).

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use braid_core::config::Suite;
use serde_json::Value;

use crate::{netns, LabInfo, UpOptions};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub lab: UpOptions,
    pub streams: u32,
    pub seconds: u32,
    pub udp_rate: String,
    pub keep: bool,
}

/// The bench server port inside host b.
pub const BENCH_PORT: u16 = 5201;

/// Runs the whole demo and prints its summary; the lab is removed afterwards unless `keep`.
pub fn run(opts: &DemoOptions) -> Result<()> {
    let started = Instant::now();
    eprintln!(
        "building lab {:?} with {} {} gateway pair(s)…",
        opts.lab.name,
        opts.lab.gateways,
        suite_label(opts.lab.suite)
    );
    let info = crate::up(&opts.lab)?;
    eprintln!(
        "lab up in {:.1} s; every pair carries traffic",
        started.elapsed().as_secs_f64()
    );
    let result = traffic(opts, &info);
    if opts.keep {
        eprintln!("lab kept: `braid lab down --name {}` removes it", info.name);
    } else {
        crate::down(&info.name)?;
    }
    let summary = result?;
    print!("{summary}");
    Ok(())
}

/// The suite as people write it.
fn suite_label(suite: Suite) -> &'static str {
    match suite {
        Suite::WireGuard => "WireGuard",
        Suite::Ipsec => "IPsec",
    }
}

/// A bench server in host b for as long as this lives.
#[derive(Debug)]
pub struct BenchServer(Child);

impl BenchServer {
    /// A server on [`BENCH_PORT`].
    pub fn start(info: &LabInfo, bin_dir: &Path) -> Result<BenchServer> {
        BenchServer::start_on(info, bin_dir, BENCH_PORT)
    }

    /// A server on `port` (TCP and UDP), for flows that must not share a 5-tuple with any
    /// flow sent to another server before.
    pub fn start_on(info: &LabInfo, bin_dir: &Path, port: u16) -> Result<BenchServer> {
        let log = info.state_dir.join("logs").join(format!("bench-server-{port}.log"));
        let child = netns::spawn_in(
            &info.hosts.b.netns,
            &bin_dir.join("braid-bench"),
            &["server".into(), "--port".into(), port.to_string()],
            &log,
        )?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(BenchServer(child))
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `braid-bench client ARGS --json` in host a against host b and parses its JSON.
pub fn bench_client(info: &LabInfo, bin_dir: &Path, extra: &[&str]) -> Result<Value> {
    bench_client_on(info, bin_dir, BENCH_PORT, extra)
}

/// [`bench_client`] against a server on `port` ([`BenchServer::start_on`]).
pub fn bench_client_on(info: &LabInfo, bin_dir: &Path, port: u16, extra: &[&str]) -> Result<Value> {
    let mut args: Vec<String> = vec![
        "client".into(),
        "-c".into(),
        info.hosts.b.addr.to_string(),
        "--port".into(),
        port.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--json".into());
    let out = netns::run_in(&info.hosts.a.netns, &bin_dir.join("braid-bench"), &args)?;
    serde_json::from_str(&out).with_context(|| format!("braid-bench printed no JSON: {out}"))
}

/// Per-pair bytes sent by demux `site` so far, by pair id.
pub fn pair_tx_bytes(info: &LabInfo, site: &str) -> Vec<(u16, u64)> {
    let Some(demux) = info.processes.iter().find(|p| p.role == "demux" && p.site == site) else {
        return Vec::new();
    };
    let status = crate::read_status(&demux.status_file).unwrap_or(Value::Null);
    status["pairs"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|p| Some((p["id"].as_u64()? as u16, p["tx_bytes"].as_u64().unwrap_or(0))))
                .collect()
        })
        .unwrap_or_default()
}

/// Every non-zero drop counter of every daemon in the lab, as `role site index: name=value`.
pub fn nonzero_drops(info: &LabInfo) -> Vec<String> {
    let mut out = Vec::new();
    for p in &info.processes {
        let Some(status) = crate::read_status(&p.status_file) else {
            continue;
        };
        if let Some(counters) = status["counters"].as_object() {
            for (name, value) in counters {
                if name.starts_with("drop") && value.as_u64().unwrap_or(0) > 0 {
                    out.push(format!("{} {}{}: {name}={value}", p.role, p.site, p.index));
                }
            }
        }
    }
    out
}

fn traffic(opts: &DemoOptions, info: &LabInfo) -> Result<String> {
    let bin = &opts.lab.bin_dir;
    let _server = BenchServer::start(info, bin)?;
    let before = pair_tx_bytes(info, "a");
    let seconds = opts.seconds.to_string();
    let streams = opts.streams.to_string();
    eprintln!(
        "TCP: {} streams for {} s from host a to host b…",
        opts.streams, opts.seconds
    );
    let tcp = bench_client(info, bin, &["-P", &streams, "-t", &seconds])?;
    std::thread::sleep(Duration::from_millis(700));
    let after = pair_tx_bytes(info, "a");
    eprintln!("UDP: {} sequence-numbered flows at {}…", opts.streams, opts.udp_rate);
    let udp = bench_client(
        info,
        bin,
        &[
            "--udp",
            "--rate",
            &opts.udp_rate,
            "--size",
            "1200",
            "-P",
            &streams,
            "-t",
            "3",
        ],
    )?;

    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "\nbraid demo: {} gateway pair(s) speaking {}, lab {:?}",
        info.gateways,
        suite_label(info.suite),
        info.name
    );
    let _ = writeln!(
        s,
        "TCP  {} streams, {} s: {:.0} Mbit/s aggregate, payload integrity {}",
        opts.streams,
        opts.seconds,
        tcp["aggregate_mbps"].as_f64().unwrap_or(0.0),
        if tcp["integrity_ok"].as_bool() == Some(true) {
            "OK"
        } else {
            "FAILED"
        }
    );
    let _ = writeln!(s, "     per pair (demux a → gateways, during the TCP run):");
    for (id, bytes) in &after {
        let prior = before.iter().find(|(p, _)| p == id).map(|(_, b)| *b).unwrap_or(0);
        let mbps = (bytes - prior) as f64 * 8.0 / 1e6 / f64::from(opts.seconds);
        let _ = writeln!(s, "       pair {id}: {mbps:>8.0} Mbit/s");
    }
    let totals = &udp["totals"];
    let _ = writeln!(
        s,
        "UDP  {} flows: sent {}, received {}, lost {}, reordered {}, duplicates {}, {:.0} Mbit/s",
        opts.streams,
        totals["sent"],
        totals["received"],
        totals["lost"],
        totals["reordered"],
        totals["duplicates"],
        udp["aggregate_mbps"].as_f64().unwrap_or(0.0)
    );
    let drops = nonzero_drops(info);
    if drops.is_empty() {
        let _ = writeln!(s, "drops: none");
    } else {
        let _ = writeln!(s, "drops:\n  {}", drops.join("\n  "));
    }
    Ok(s)
}
