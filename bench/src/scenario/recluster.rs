//! `braid-bench recluster`: what flows see when the cluster grows and shrinks online.
//!
//! A lab with three pairs carries a first set of UDP flows ("old flows", started before any
//! change). The lab is scaled to five pairs while they run; a second set ("new flows") starts
//! once the new pairs are up, so some of them land on pairs 4 and 5; then the lab is scaled
//! back to three, which drains pairs 4 and 5: they take no new flows and keep their pinned ones
//! until those go idle or the drain deadline passes. Established flows should never move, so
//! neither set should show a gap or a loss at either change. Per-pair byte counters from the
//! demux show where the new flows went.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use braid_lab::demo::{pair_tx_bytes, BenchServer};
use serde::Serialize;

use crate::chart::{Chart, Event};

use super::timeline::{self, Timeline};
use super::{lab_name, lab_udp, LabRun, READY_TIMEOUT};

const FROM: u16 = 3;
const TO: u16 = 5;

/// What to run.
#[derive(Debug, Clone)]
pub struct ReclusterOptions {
    /// UDP flows in each set.
    pub flows: u32,
    /// Aggregate UDP rate of each set (k, M or G suffix).
    pub rate: String,
    /// Seconds of traffic of the old flows (the new ones run for the rest of it).
    pub seconds: f64,
}

/// One online change and how long the controller took to complete it.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub what: String,
    /// Seconds from the start of the old flows.
    pub at_s: f64,
    pub took_ms: u64,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ReclusterReport {
    pub changes: Vec<Change>,
    /// Seconds from the start of the old flows at which the new flows started.
    pub new_flows_start_s: f64,
    pub old_flows: Timeline,
    pub new_flows: Timeline,
    /// Bytes demux a sent to each pair over the whole run, by pair id (for the pairs drained
    /// away, up to the last reading before they were removed).
    pub pair_tx_bytes: Vec<(u16, u64)>,
}

fn change(lab: &mut LabRun, to: u16, started: Instant, what: &str) -> Result<Change> {
    let at_s = started.elapsed().as_secs_f64();
    braid_lab::scale(lab.name(), &lab.bin_dir, to, READY_TIMEOUT)?;
    lab.reload()?;
    Ok(Change {
        what: what.into(),
        at_s,
        took_ms: ((started.elapsed().as_secs_f64() - at_s) * 1e3) as u64,
    })
}

/// Runs the scenario.
pub fn run(options: &ReclusterOptions, bin_dir: &Path) -> Result<ReclusterReport> {
    let mut lab = LabRun::up(&lab_name("rc"), FROM, bin_dir)?;
    let _server = BenchServer::start(&lab.info, bin_dir)?;
    let before = pair_tx_bytes(&lab.info, "a");
    // The traffic threads keep the addresses of the lab as it was built; scaling changes only
    // the gateways, never the hosts.
    let info = lab.info.clone();
    let third = options.seconds / 3.0;
    let started = Instant::now();
    let result = thread::scope(|scope| -> Result<_> {
        let old = scope.spawn(|| lab_udp(&info, bin_dir, options.flows, &options.rate, options.seconds));
        thread::sleep(Duration::from_secs_f64(third));
        let grow = change(&mut lab, TO, started, "scale 3 → 5")?;
        let new_start = started.elapsed().as_secs_f64();
        let remaining = (options.seconds - new_start).max(2.0 * third.min(1.0));
        let info = &info;
        let new = scope.spawn(move || lab_udp(info, bin_dir, options.flows, &options.rate, remaining));
        thread::sleep(Duration::from_secs_f64(remaining / 3.0));
        // The pairs drained away leave the demux's status once removed: read them while all
        // five are there.
        let at_five = pair_tx_bytes(&lab.info, "a");
        let shrink = change(&mut lab, FROM, started, "drain to 3")?;
        let old = old
            .join()
            .map_err(|_| anyhow::anyhow!("the UDP client thread panicked"))??;
        let new = new
            .join()
            .map_err(|_| anyhow::anyhow!("the UDP client thread panicked"))??;
        Ok((grow, shrink, new_start, old, new, at_five))
    });
    let (grow, shrink, new_flows_start_s, old, new, at_five) = result?;
    let at_end = pair_tx_bytes(&lab.info, "a");
    let bytes_of = |readings: &[(u16, u64)], id: u16| readings.iter().find(|(p, _)| *p == id).map_or(0, |(_, b)| *b);
    let mut ids: Vec<u16> = at_five.iter().chain(&at_end).map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let pair_tx_bytes = ids
        .into_iter()
        .map(|id| {
            let last = bytes_of(&at_end, id).max(bytes_of(&at_five, id));
            (id, last.saturating_sub(bytes_of(&before, id)))
        })
        .collect();
    Ok(ReclusterReport {
        changes: vec![grow, shrink],
        new_flows_start_s,
        old_flows: timeline::from_udp_report(&old)?,
        new_flows: timeline::from_udp_report(&new)?,
        pair_tx_bytes,
    })
}

/// The text summary.
pub fn render(r: &ReclusterReport) -> String {
    let mut s = String::new();
    for c in &r.changes {
        s += &format!("{} at {:.1} s, completed in {} ms\n", c.what, c.at_s, c.took_ms);
    }
    s += "old flows (started on 3 pairs):\n";
    s += &timeline::render(&r.old_flows);
    s += &format!("new flows (started at {:.1} s on 5 pairs):\n", r.new_flows_start_s);
    s += &timeline::render(&r.new_flows);
    let pairs: Vec<String> = r
        .pair_tx_bytes
        .iter()
        .map(|(id, b)| format!("{id}: {:.1} MB", *b as f64 / 1e6))
        .collect();
    s += &format!("bytes per pair (demux a): {}\n", pairs.join(", "));
    s
}

/// The old flows' time series with both changes marked.
pub fn chart(r: &ReclusterReport) -> Chart {
    let events = r
        .changes
        .iter()
        .map(|c| Event {
            x: c.at_s,
            label: c.what.clone(),
        })
        .collect();
    timeline::chart(
        "Re-cluster 3 → 5 → 3: per-flow UDP rate of the flows started before",
        &r.old_flows,
        events,
    )
}
