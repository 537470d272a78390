//! `braid-bench scale`: aggregate TCP throughput as gateway pairs are added.
//!
//! For every N a fresh lab with N pairs is built; with a cap, every gateway's WAN egress is
//! shaped to it ([`super::shaping`]) so that one pair cannot carry more than the cap, as with a
//! cloud instance's bandwidth limit. P TCP streams then run from host a to host b, and the
//! receivers' byte counts give the aggregate. Efficiency is aggregate / (N × cap): 1.0 means
//! braid adds every gateway's full capacity. The flow hash spreads streams, not bytes, so P
//! should be several times N for every pair to get at least one stream.
//!
//! The cap meters whole frames on the WAN (Ethernet, IP, UDP and WireGuard around each inner
//! packet, itself carrying TCP/IP headers), so TCP payload alone can never reach 1.0. The WAN
//! interfaces' own byte counters, read around the run, give the wire rate as well: wire
//! efficiency = wire rate / (N × cap) shows how full the capped links actually ran.

use anyhow::{bail, Result};
use braid_lab::demo::BenchServer;
use serde::Serialize;

use crate::chart::{Chart, Series};

use super::shaping::{shape_gateways, wan_tx_bytes, Cap};
use super::{lab_name, lab_tcp, LabRun};
use braid_lab::topology::SITES;
use std::path::Path;

/// What to measure.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    pub gateways: Vec<u16>,
    pub cap: Option<Cap>,
    pub streams: u32,
    pub seconds: f64,
}

/// One lab size's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    pub gateways: u16,
    pub mbps: f64,
    /// mbps / (gateways × cap), when capped.
    pub efficiency: Option<f64>,
    /// What the site-a gateways sent on their WAN links during the run, in Mbit/s: the TCP
    /// payload rate scaled by the wire bytes each payload byte cost.
    pub wire_mbps: f64,
    /// wire_mbps / (gateways × cap), when capped: how full the capped links ran.
    pub wire_efficiency: Option<f64>,
    /// mbps / (gateways × the one-pair figure), when one pair was measured: how much of a
    /// lane's throughput each added pair brings, whatever limits a lane.
    pub scaling: Option<f64>,
    pub retransmits: u64,
    pub streams: u32,
}

/// The scenario's result, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub cap_mbps: Option<f64>,
    pub seconds: f64,
    pub points: Vec<ScalePoint>,
}

/// Efficiency of `mbps` over `gateways` pairs capped at `cap_mbps` each.
pub fn efficiency(mbps: f64, gateways: u16, cap_mbps: f64) -> f64 {
    mbps / (f64::from(gateways) * cap_mbps)
}

/// The wire rate of a run that delivered `payload_bytes` at `payload_mbps` while the links
/// sent `wire_bytes`: both byte counts cover the same traffic, so their ratio is the cost of
/// encapsulation (and of retransmissions) per payload byte.
pub fn wire_rate(payload_mbps: f64, payload_bytes: u64, wire_bytes: u64) -> f64 {
    if payload_bytes == 0 {
        return 0.0;
    }
    payload_mbps * wire_bytes as f64 / payload_bytes as f64
}

/// Runs every lab size in turn.
pub fn run(options: &ScaleOptions, bin_dir: &Path) -> Result<ScaleReport> {
    if options.gateways.is_empty() {
        bail!("--gateways needs at least one count");
    }
    let mut points = Vec::new();
    for &n in &options.gateways {
        eprintln!("scale: {n} pair(s)…");
        let lab = LabRun::up(&lab_name(&format!("sc{n}")), n, bin_dir)?;
        if let Some(cap) = options.cap {
            shape_gateways(lab.name(), 1..=n, cap)?;
        }
        let _server = BenchServer::start(&lab.info, bin_dir)?;
        let wire_before = wan_tx_bytes(lab.name(), SITES[0], 1..=n)?;
        let figure = lab_tcp(&lab, options.streams, options.seconds)?;
        let wire_bytes = wan_tx_bytes(lab.name(), SITES[0], 1..=n)?.saturating_sub(wire_before);
        let wire_mbps = wire_rate(figure.mbps, figure.bytes, wire_bytes);
        let point = ScalePoint {
            gateways: n,
            mbps: figure.mbps,
            efficiency: options.cap.map(|c| efficiency(figure.mbps, n, c.mbps())),
            wire_mbps,
            wire_efficiency: options.cap.map(|c| efficiency(wire_mbps, n, c.mbps())),
            scaling: None,
            retransmits: figure.retransmits,
            streams: options.streams,
        };
        eprintln!(
            "scale: {n} pair(s): {:.0} Mbit/s ({:.0} on the wire){}",
            point.mbps,
            point.wire_mbps,
            point
                .efficiency
                .zip(point.wire_efficiency)
                .map(|(e, w)| format!(", efficiency {e:.2} (wire {w:.2})"))
                .unwrap_or_default()
        );
        points.push(point);
    }
    if let Some(one) = points.iter().find(|p| p.gateways == 1).map(|p| p.mbps) {
        for p in &mut points {
            p.scaling = Some(efficiency(p.mbps, p.gateways, one));
        }
    }
    Ok(ScaleReport {
        cap_mbps: options.cap.map(|c| c.mbps()),
        seconds: options.seconds,
        points,
    })
}

/// The text summary.
pub fn render(report: &ScaleReport) -> String {
    let mut s = String::from("gateways   Mbit/s   wire Mbit/s   efficiency   wire eff.   scaling   retransmits\n");
    let show = |v: Option<f64>| v.map(|e| format!("{e:.2}")).unwrap_or_else(|| "-".into());
    for p in &report.points {
        s += &format!(
            "{:>8} {:>8.0} {:>13.0} {:>12} {:>11} {:>9} {:>13}\n",
            p.gateways,
            p.mbps,
            p.wire_mbps,
            show(p.efficiency),
            show(p.wire_efficiency),
            show(p.scaling),
            p.retransmits
        );
    }
    s
}

/// Throughput against gateway pairs, with the ideal N × cap line when capped.
pub fn chart(report: &ScaleReport) -> Chart {
    let measured: Vec<(f64, f64)> = report.points.iter().map(|p| (f64::from(p.gateways), p.mbps)).collect();
    let mut series = vec![Series {
        name: "braid (measured)".into(),
        points: measured,
        dashed: false,
        colour: 0,
        in_legend: true,
    }];
    if let Some(cap) = report.cap_mbps {
        series.push(Series {
            name: "braid on the WAN (with encapsulation)".into(),
            points: report
                .points
                .iter()
                .map(|p| (f64::from(p.gateways), p.wire_mbps))
                .collect(),
            dashed: false,
            colour: 2,
            in_legend: true,
        });
        series.push(Series {
            name: format!("ideal N x {cap:.0}"),
            points: report
                .points
                .iter()
                .map(|p| (f64::from(p.gateways), f64::from(p.gateways) * cap))
                .collect(),
            dashed: true,
            colour: 1,
            in_legend: true,
        });
    }
    let cap = report
        .cap_mbps
        .map(|c| format!(", each pair capped at {c:.0} Mbit/s"))
        .unwrap_or_default();
    Chart {
        title: format!("braid aggregate TCP throughput{cap}"),
        x_label: "gateway pairs".into(),
        y_label: "Mbit/s".into(),
        series,
        events: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_is_aggregate_over_ideal() {
        assert_eq!(efficiency(380.0, 4, 100.0), 0.95);
        assert_eq!(efficiency(100.0, 1, 100.0), 1.0);
    }

    #[test]
    fn wire_rate_scales_payload_rate_by_bytes_on_the_wire() {
        assert_eq!(wire_rate(100.0, 1000, 1100), 110.0);
        assert_eq!(wire_rate(100.0, 0, 1100), 0.0);
    }
}
