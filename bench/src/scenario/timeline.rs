//! Per-flow time series from a UDP run, and what they say about an event in the middle of it.
//!
//! The UDP receiver reports, for every interval (100 ms in the scenarios), the bytes each flow
//! delivered, and for every flow its losses and the largest gap between two arrivals. A flow
//! whose largest gap is at least [`AFFECTED_GAP_MS`] was interrupted by the event (its packets
//! normally arrive milliseconds apart); every other flow is "unaffected", and its losses are
//! the collateral damage the event caused.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::chart::{Chart, Event, Series};

/// A gap this long marks a flow as interrupted.
pub const AFFECTED_GAP_MS: f64 = 50.0;

/// One flow's received rate per interval and its totals.
#[derive(Debug, Clone, Serialize)]
pub struct FlowSeries {
    pub flow: u32,
    /// Mbit/s received in each interval.
    pub mbps: Vec<f64>,
    pub sent: u64,
    pub lost: u64,
    pub max_gap_ms: f64,
    pub affected: bool,
}

/// Every flow's series, and the summary of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub interval_s: f64,
    pub flows: Vec<FlowSeries>,
    pub largest_gap_ms: f64,
    pub affected_flows: usize,
    pub lost_on_affected: u64,
    pub lost_on_unaffected: u64,
}

/// Builds the timeline of a `braid-bench client --udp --json` report.
pub fn from_udp_report(report: &Value) -> Result<Timeline> {
    let intervals = report["intervals"].as_array().context("UDP report has no intervals")?;
    let flows = report["flows"].as_array().context("UDP report has no flows")?;
    let interval_s = intervals
        .first()
        .and_then(|i| Some(i["end_s"].as_f64()? - i["start_s"].as_f64()?))
        .unwrap_or(0.0);
    let series: Vec<FlowSeries> = flows
        .iter()
        .enumerate()
        .map(|(index, flow)| {
            let mbps = intervals
                .iter()
                .map(|i| {
                    i["streams"]
                        .as_array()
                        .and_then(|s| s.get(index))
                        .and_then(|s| s["mbps"].as_f64())
                        .unwrap_or(0.0)
                })
                .collect();
            let max_gap_ms = flow["max_gap_ms"].as_f64().unwrap_or(0.0);
            FlowSeries {
                flow: index as u32,
                mbps,
                sent: flow["sent"].as_u64().unwrap_or(0),
                lost: flow["lost"].as_u64().unwrap_or(0),
                max_gap_ms,
                affected: max_gap_ms >= AFFECTED_GAP_MS,
            }
        })
        .collect();
    Ok(summarise(interval_s, series))
}

/// The summary over `flows`.
pub fn summarise(interval_s: f64, flows: Vec<FlowSeries>) -> Timeline {
    let lost = |affected: bool| flows.iter().filter(|f| f.affected == affected).map(|f| f.lost).sum();
    Timeline {
        interval_s,
        largest_gap_ms: flows.iter().map(|f| f.max_gap_ms).fold(0.0, f64::max),
        affected_flows: flows.iter().filter(|f| f.affected).count(),
        lost_on_affected: lost(true),
        lost_on_unaffected: lost(false),
        flows,
    }
}

/// One line per flow (flows that paused or lost datagrams in red, one legend entry per kind)
/// and the events.
pub fn chart(title: &str, timeline: &Timeline, events: Vec<Event>) -> Chart {
    let mut legend_shown = [false, false];
    let series = timeline
        .flows
        .iter()
        .map(|f| {
            let hit = f.affected || f.lost > 0;
            let kind = usize::from(hit);
            let in_legend = !legend_shown[kind];
            legend_shown[kind] = true;
            Series {
                name: if hit {
                    "flows with a pause or loss"
                } else {
                    "other flows"
                }
                .into(),
                points: f
                    .mbps
                    .iter()
                    .enumerate()
                    .map(|(i, &m)| ((i as f64 + 0.5) * timeline.interval_s, m))
                    .collect(),
                dashed: false,
                colour: kind,
                in_legend,
            }
        })
        .collect();
    Chart {
        title: title.into(),
        x_label: "seconds".into(),
        y_label: "Mbit/s received per flow".into(),
        series,
        events,
    }
}

/// The text summary.
pub fn render(t: &Timeline) -> String {
    format!(
        "flows {}, interrupted {} (gap ≥ {AFFECTED_GAP_MS} ms), largest gap {:.0} ms\n\
         lost on interrupted flows {}, lost on the other flows {}\n",
        t.flows.len(),
        t.affected_flows,
        t.largest_gap_ms,
        t.lost_on_affected,
        t.lost_on_unaffected
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flows_with_a_long_gap_are_the_interrupted_ones() {
        let report = json!({
            "intervals": [
                {"start_s": 0.0, "end_s": 0.1, "streams": [{"mbps": 4.0}, {"mbps": 4.0}]},
                {"start_s": 0.1, "end_s": 0.2, "streams": [{"mbps": 0.0}, {"mbps": 4.0}]},
            ],
            "flows": [
                {"sent": 100, "lost": 30, "max_gap_ms": 420.0},
                {"sent": 100, "lost": 0, "max_gap_ms": 3.0},
            ],
        });
        let t = from_udp_report(&report).unwrap();
        assert!((t.interval_s - 0.1).abs() < 1e-9);
        assert_eq!(t.flows[0].mbps, vec![4.0, 0.0]);
        assert_eq!(t.affected_flows, 1);
        assert_eq!((t.lost_on_affected, t.lost_on_unaffected), (30, 0));
        assert_eq!(t.largest_gap_ms, 420.0);
        let chart = chart("x", &t, Vec::new());
        assert_eq!(chart.series.iter().filter(|s| s.in_legend).count(), 2);
    }
}
