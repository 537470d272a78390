//! `braid-bench failover`: what flows see when a gateway dies.
//!
//! A lab with three pairs carries 16 sequence-numbered UDP flows; part-way through, gateway
//! `a2` is killed with SIGKILL (no goodbye, as when a host dies). While the flows run, the
//! controller's status is polled to time the detection (pair 2 no longer "up"), the restart
//! (a new gateway process up) and the pair's return. The receivers' per-flow, per-100 ms counts
//! give the time series: flows pinned to pair 2 stop until the demux moves them to a healthy
//! pair; the others should not notice.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use braid_lab::controller;
use braid_lab::demo::BenchServer;
use serde::Serialize;

use crate::chart::{Chart, Event};

use super::timeline::{self, Timeline};
use super::{lab_name, lab_udp, LabRun};

/// The pair whose site-a gateway is killed.
pub const VICTIM_PAIR: u16 = 2;
const PAIRS: u16 = 3;
const POLL: Duration = Duration::from_millis(20);
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    pub flows: u32,
    /// Aggregate UDP rate (k, M or G suffix).
    pub rate: String,
    pub seconds: f64,
    /// Seconds after the traffic starts at which the gateway is killed.
    pub kill_at: f64,
}

/// Milliseconds from the kill to each stage of the recovery, as the controller reported it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovery {
    /// Pair no longer "up" in the controller's status.
    pub detected_ms: Option<u64>,
    /// A new gateway process reported up.
    pub restarted_ms: Option<u64>,
    /// The pair "up" and taking flows again.
    pub pair_up_ms: Option<u64>,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub pairs: u16,
    pub killed: String,
    /// When the kill happened, in seconds from the start of the client (approximate to the
    /// client's connection set-up, a few milliseconds).
    pub kill_at_s: f64,
    pub recovery: Recovery,
    /// How many flows lost at least one datagram (about flows / pairs when only the killed
    /// pair's flows were hit).
    pub flows_with_loss: usize,
    pub timeline: Timeline,
}

/// Runs the scenario.
pub fn run(options: &FailoverOptions, bin_dir: &Path) -> Result<FailoverReport> {
    let lab = LabRun::up(&lab_name("fo"), PAIRS, bin_dir)?;
    let _server = BenchServer::start(&lab.info, bin_dir)?;
    let victim = controller::status(lab.info.metrics)?
        .gateways
        .iter()
        .find(|g| g.site == "a" && g.index == VICTIM_PAIR)
        .and_then(|g| g.pid)
        .context("the controller shows no pid for gateway a2")?;
    let (report, recovery, kill_at_s) = thread::scope(|scope| {
        let started = Instant::now();
        let traffic = scope.spawn(|| lab_udp(&lab.info, bin_dir, options.flows, &options.rate, options.seconds));
        thread::sleep(Duration::from_secs_f64(options.kill_at));
        let kill_at_s = started.elapsed().as_secs_f64();
        // SAFETY: kill(2) on the gateway pid the lab's controller reports for a2.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        let recovery = watch_recovery(&lab, victim);
        let report = traffic
            .join()
            .map_err(|_| anyhow::anyhow!("the UDP client thread panicked"))?;
        Ok::<_, anyhow::Error>((report?, recovery, kill_at_s))
    })?;
    let timeline = timeline::from_udp_report(&report)?;
    Ok(FailoverReport {
        pairs: PAIRS,
        killed: format!("gateway a{VICTIM_PAIR} (pid {victim}, SIGKILL)"),
        kill_at_s,
        recovery,
        flows_with_loss: timeline.flows.iter().filter(|f| f.lost > 0).count(),
        timeline,
    })
}

/// Polls the controller until pair [`VICTIM_PAIR`] is back or the timeout passes.
fn watch_recovery(lab: &LabRun, killed_pid: u32) -> Recovery {
    let start = Instant::now();
    let mut recovery = Recovery::default();
    while start.elapsed() < RECOVERY_TIMEOUT && recovery.pair_up_ms.is_none() {
        thread::sleep(POLL);
        let Ok(status) = controller::status(lab.info.metrics) else {
            continue;
        };
        let now = start.elapsed().as_millis() as u64;
        let pair = status.pairs.iter().find(|p| p.index == VICTIM_PAIR);
        let pair_up = pair.is_some_and(|p| p.state == "up" && p.active);
        if recovery.detected_ms.is_none() && !pair_up {
            recovery.detected_ms = Some(now);
        }
        let restarted = status.gateways.iter().any(|g| {
            g.site == "a" && g.index == VICTIM_PAIR && g.state == "up" && g.pid.is_some_and(|p| p != killed_pid)
        });
        if recovery.restarted_ms.is_none() && restarted {
            recovery.restarted_ms = Some(now);
        }
        if recovery.detected_ms.is_some() && restarted && pair_up {
            recovery.pair_up_ms = Some(now);
        }
    }
    recovery
}

/// The text summary.
pub fn render(r: &FailoverReport) -> String {
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "not seen".into());
    format!(
        "killed {} at {:.1} s of a {}-pair lab\n\
         detected after {}, gateway restarted after {}, pair back after {}\n\
         flows that lost datagrams: {} of {}\n{}",
        r.killed,
        r.kill_at_s,
        r.pairs,
        ms(r.recovery.detected_ms),
        ms(r.recovery.restarted_ms),
        ms(r.recovery.pair_up_ms),
        r.flows_with_loss,
        r.timeline.flows.len(),
        timeline::render(&r.timeline)
    )
}

/// The per-flow time series with the kill and the pair's return marked.
pub fn chart(r: &FailoverReport) -> Chart {
    let mut events = vec![Event {
        x: r.kill_at_s,
        label: format!("a{VICTIM_PAIR} killed"),
    }];
    if let Some(up) = r.recovery.pair_up_ms {
        events.push(Event {
            x: r.kill_at_s + up as f64 / 1e3,
            label: "pair back".into(),
        });
    }
    timeline::chart(
        &format!("Failover: per-flow UDP rate, {} pairs, gateway killed", r.pairs),
        &r.timeline,
        events,
    )
}
