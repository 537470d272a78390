//! A peer site that runs no braid, in the lab: `braid lab up --suite ipsec --external-peer
//! strongswan` makes site b strongSwan alone — one charon (5.9.8, kernel-libipsec) per external
//! gateway, host b behind them — while site a is braid as usual (its demux and two braid
//! gateways under `braid up`), from a cluster file that declares site b `external: true` with
//! host b as its canary (see `braid_lab::external`).
//!
//! Host b routes every reply to site a through charon 1 (a plain external site picks its
//! return tunnel; this one always picks the first). So pair 2's canaries go out through pair 2
//! and come back through pair 1, which the demux accepts: the echo identifier and payload name
//! the pair. Killing charon 2 takes pair 2 out of service (its canaries are lost) while pair 1
//! keeps carrying every flow, in order.
//!
//! Run: `cargo test --release -p braid --test external_site -- --nocapture` (root, strongSwan).

#![allow(dead_code)]

mod support;

#[path = "support/strongswan.rs"]
mod strongswan;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use braid::status::StatusSnapshot;
use braid_core::config::Suite;
use braid_lab::controller as lab_controller;
use braid_lab::netns::{run_in, spawn_in};
use braid_lab::{self as lab, LabInfo, UpOptions};
use serde_json::Value;
use strongswan::skip_without_strongswan;
use support::{bin_dir, one_lab_at_a_time, signal, skip_without_lab, udp_flows};

const LAB: &str = "xs";
const PAIRS: u16 = 2;
const BENCH_PORT: u16 = 5299;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

/// The lab, removed on drop (also when the test panics), with the bench server it runs.
struct ExternalLab {
    info: LabInfo,
    server: Option<Child>,
}

impl Drop for ExternalLab {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        if let Err(e) = lab::down(&self.info.name) {
            eprintln!("lab down: {e:#}");
        }
    }
}

fn status(metrics: SocketAddr) -> StatusSnapshot {
    ok(lab_controller::status(metrics))
}

fn pair_state(s: &StatusSnapshot, id: u16) -> (String, bool) {
    let p = s
        .pairs
        .iter()
        .find(|p| p.index == id)
        .unwrap_or_else(|| panic!("pair {id} missing"));
    (p.state.clone(), p.active)
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {timeout:?}");
}

/// Per-pair counters of demux a (its status file): (tx_bytes, canary_answered).
fn demux_pairs(dir: &Path) -> Vec<(u16, u64, u64)> {
    let text = std::fs::read_to_string(dir.join("status").join("demux-a.json")).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["pairs"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|p| {
                    Some((
                        p["id"].as_u64()? as u16,
                        p["tx_bytes"].as_u64().unwrap_or(0),
                        p["canary_answered"].as_u64().unwrap_or(0),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn bench(info: &LabInfo, extra: &[&str]) -> Value {
    let mut args: Vec<String> = [
        "client",
        "-c",
        &info.hosts.b.addr.to_string(),
        "--port",
        &BENCH_PORT.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--json".into());
    let out = ok(run_in(&info.hosts.a.netns, &bin_dir().join("braid-bench"), &args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("braid-bench printed no JSON ({e}): {out}"))
}

/// `braid ARGS`, in this namespace; its stdout.
fn braid(args: &[&str]) -> String {
    let out = ok(std::process::Command::new(bin_dir().join("braid")).args(args).output());
    assert!(
        out.status.success(),
        "braid {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn strongswan_as_the_whole_peer_site() {
    const TEST: &str = "strongswan_as_the_whole_peer_site";
    if skip_without_lab(TEST) || skip_without_strongswan(TEST) {
        return;
    }
    let _one = one_lab_at_a_time();
    let started = Instant::now();
    let _ = lab::down(LAB);
    let info = ok(lab::up(&UpOptions {
        name: LAB.into(),
        gateways: PAIRS,
        bin_dir: bin_dir(),
        ready_timeout: Duration::from_secs(30),
        suite: Suite::Ipsec,
        external_peer: true,
        data_threads: None,
        controllers: 1,
        nat: false,
    }));
    let mut lab = ExternalLab {
        info: info.clone(),
        server: None,
    };
    eprintln!("lab up with both pairs up after {:?}", started.elapsed());
    let (metrics, dir) = (info.metrics, info.state_dir.clone());
    let check = braid(&["check", "-c", &info.config.display().to_string()]);
    assert!(
        check.contains("external"),
        "braid check explains the external site:\n{check}"
    );
    let charon = |pair: u16| {
        info.processes
            .iter()
            .find(|p| p.role == "strongswan" && p.index == pair)
            .unwrap_or_else(|| panic!("the lab lists charon {pair}"))
            .pid
    };
    let s = status(metrics);
    assert!(
        s.gateways.iter().all(|g| g.site == "a"),
        "only site a's gateways are braid's: {:?}",
        s.gateways.iter().map(|g| (&g.site, g.index)).collect::<Vec<_>>()
    );
    // `braid status` shows both pairs up.
    let text = braid(&["status", "--controller", &metrics.to_string()]);
    eprintln!("{text}");

    lab.server = Some(ok(spawn_in(
        &info.hosts.b.netns,
        &bin_dir().join("braid-bench"),
        &["server".into(), "--port".into(), BENCH_PORT.to_string()],
        &dir.join("logs").join("bench-server.log"),
    )));
    std::thread::sleep(Duration::from_millis(300));

    // 16 sequence-numbered UDP flows over both pairs: nothing lost, reordered or duplicated.
    let before = demux_pairs(&dir);
    let run = bench(
        &info,
        &["--udp", "--rate", "16M", "--size", "1000", "-P", "16", "-t", "4"],
    );
    let flows = udp_flows(&run);
    assert_eq!(flows.len(), 16, "{run}");
    for f in &flows {
        assert!(f.received > 0, "flow received nothing: {f:?}");
        assert_eq!((f.lost, f.reordered, f.duplicates), (0, 0, 0), "flow {f:?}");
    }
    let after = demux_pairs(&dir);
    for pair in 1..=PAIRS {
        let sent = |v: &[(u16, u64, u64)]| v.iter().find(|p| p.0 == pair).map_or(0, |p| p.1);
        let carried = sent(&after) - sent(&before);
        eprintln!("pair {pair} carried {carried} bytes from site a");
        assert!(carried > 1_000_000, "pair {pair} carried only {carried} bytes");
    }

    // Kill charon 2: pair 2's echoes stop, it leaves service; pair 1 stays up.
    signal(charon(2), libc::SIGKILL);
    let took = wait_until("pair 2 down", Duration::from_secs(10), || {
        let s = status(metrics);
        pair_state(&s, 2).0 != "up" || !pair_state(&s, 2).1
    });
    eprintln!("pair 2 out of service {took:?} after its strongSwan died");
    let s = status(metrics);
    let p2 = s.pairs.iter().find(|p| p.index == 2).unwrap();
    eprintln!("pair 2: {p2:?}");
    assert_eq!(pair_state(&s, 1), ("up".to_string(), true), "pair 1 stays in service");
    wait_until("membership converged without pair 2", Duration::from_secs(5), || {
        let s = status(metrics);
        s.converged && !pair_state(&s, 2).1
    });

    // Every flow now crosses pair 1, in order, nothing lost.
    let before = demux_pairs(&dir);
    let run = bench(
        &info,
        &["--udp", "--rate", "8M", "--size", "1000", "-P", "16", "-t", "3"],
    );
    for f in &udp_flows(&run) {
        assert!(f.received > 0, "flow received nothing after the failure: {f:?}");
        assert_eq!(
            (f.lost, f.reordered, f.duplicates),
            (0, 0, 0),
            "after the failure: flow {f:?}"
        );
    }
    let after = demux_pairs(&dir);
    let sent = |v: &[(u16, u64, u64)], pair: u16| v.iter().find(|p| p.0 == pair).map_or(0, |p| p.1);
    assert!(
        sent(&after, 1) - sent(&before, 1) > 1_000_000,
        "pair 1 carries the flows"
    );
    let s = status(metrics);
    assert_eq!(pair_state(&s, 1), ("up".to_string(), true), "pair 1 still in service");
    assert_ne!(
        pair_state(&s, 2).0,
        "up",
        "pair 2 stays out while its strongSwan is dead"
    );
    eprintln!("{TEST}: passed in {:?}", started.elapsed());
}
