//! Test results as JSON-ready structures and as iperf3-style text.
//!
//! Receivers are authoritative: a stream's bytes and throughput are what its receiver counted
//! and verified, retransmits are what its sender's kernel reported.

use std::fmt::Write as _;

use serde::Serialize;

use crate::intervals::{mbps, IntervalReport};
use crate::spec::{Direction, Side};
use crate::stats::LatencySummary;

/// One TCP stream's final figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamReport {
    pub index: u32,
    pub sender: Side,
    pub bytes: u64,
    pub seconds: f64,
    pub mbps: f64,
    pub retransmits: u64,
    pub corrupted_bytes: u64,
    pub first_bad_offset: Option<u64>,
    /// Whether the stream ended with the sender's FIN (false: it stalled or broke).
    pub complete: bool,
}

/// A TCP test's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpReport {
    pub test_id: u64,
    pub direction: Direction,
    pub duration_s: f64,
    pub aggregate_mbps: f64,
    pub bytes: u64,
    pub retransmits: u64,
    pub streams: Vec<StreamReport>,
    pub intervals: Vec<IntervalReport>,
    /// No stream had a corrupted byte.
    pub integrity_ok: bool,
    /// Every stream ended cleanly.
    pub complete: bool,
}

/// One UDP flow's final figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowReport {
    pub index: u32,
    pub sent: u64,
    pub received: u64,
    pub bytes: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
    /// Arrived too far behind the newest to tell new from duplicate (counted as reordered).
    pub late: u64,
    pub corrupted: u64,
    pub jitter_ms: f64,
    pub max_gap_ms: f64,
    pub latency_us: Option<LatencySummary>,
}

/// Sums over every UDP flow.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct UdpTotals {
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    pub bytes: u64,
    pub lost: u64,
    pub loss_percent: f64,
    pub reordered: u64,
    pub duplicates: u64,
    pub corrupted: u64,
    pub max_jitter_ms: f64,
    pub max_gap_ms: f64,
}

/// A UDP test's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UdpReport {
    pub test_id: u64,
    pub duration_s: f64,
    pub rate_bps: u64,
    pub size: usize,
    pub aggregate_mbps: f64,
    pub clocks_shared: bool,
    pub flows: Vec<FlowReport>,
    pub totals: UdpTotals,
    pub intervals: Vec<IntervalReport>,
    /// No datagram had a corrupted payload.
    pub integrity_ok: bool,
}

impl TcpReport {
    /// Assembles the report; the aggregate rate spans the longest receiver's time.
    pub fn new(
        test_id: u64,
        direction: Direction,
        duration_s: f64,
        streams: Vec<StreamReport>,
        intervals: Vec<IntervalReport>,
    ) -> Self {
        let bytes = streams.iter().map(|s| s.bytes).sum();
        let seconds = streams.iter().map(|s| s.seconds).fold(0.0, f64::max);
        TcpReport {
            test_id,
            direction,
            duration_s,
            aggregate_mbps: mbps(bytes, if seconds > 0.0 { seconds } else { duration_s }),
            bytes,
            retransmits: streams.iter().map(|s| s.retransmits).sum(),
            integrity_ok: streams.iter().all(|s| s.corrupted_bytes == 0),
            complete: streams.iter().all(|s| s.complete),
            streams,
            intervals,
        }
    }
}

impl UdpTotals {
    /// Sums `flows`.
    pub fn of(flows: &[FlowReport], send_errors: u64) -> Self {
        let mut t = UdpTotals {
            send_errors,
            ..UdpTotals::default()
        };
        for f in flows {
            t.sent += f.sent;
            t.received += f.received;
            t.bytes += f.bytes;
            t.lost += f.lost;
            t.reordered += f.reordered;
            t.duplicates += f.duplicates;
            t.corrupted += f.corrupted;
            t.max_jitter_ms = t.max_jitter_ms.max(f.jitter_ms);
            t.max_gap_ms = t.max_gap_ms.max(f.max_gap_ms);
        }
        let expected = t.received.saturating_sub(t.duplicates) + t.lost;
        t.loss_percent = if expected > 0 {
            100.0 * t.lost as f64 / expected as f64
        } else {
            0.0
        };
        t
    }
}

/// `bytes` as iperf3 prints a transfer (binary units).
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=1023 => format!("{bytes} Bytes"),
        1024..=1_048_575 => format!("{:.1} KBytes", b / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MBytes", b / 1_048_576.0),
        _ => format!("{:.2} GBytes", b / 1_073_741_824.0),
    }
}

/// Megabits per second as iperf3 prints a bitrate.
pub fn human_rate(mbps: f64) -> String {
    if mbps >= 1000.0 {
        format!("{:.2} Gbits/sec", mbps / 1000.0)
    } else {
        format!("{mbps:.1} Mbits/sec")
    }
}

/// The header above interval lines.
pub const INTERVAL_HEADER: &str = "[ ID] Interval           Transfer     Bitrate         Retr";

fn row(id: &str, start: f64, end: f64, bytes: u64, mbps: f64, tail: &str) -> String {
    format!(
        "[{id:>3}] {start:6.2}-{end:<6.2} sec  {:>12}  {:>16}  {tail}",
        human_bytes(bytes),
        human_rate(mbps)
    )
}

/// The lines for one interval: one per stream when there are several, then the sum.
pub fn interval_lines(interval: &IntervalReport) -> String {
    let mut out = String::new();
    let (start, end) = (interval.start_s, interval.end_s);
    if interval.streams.len() > 1 {
        for s in &interval.streams {
            let line = row(
                &s.index.to_string(),
                start,
                end,
                s.bytes,
                s.mbps,
                &s.retransmits.to_string(),
            );
            let _ = writeln!(out, "{line}");
        }
    }
    let sum = row(
        "SUM",
        start,
        end,
        interval.bytes,
        interval.mbps,
        &interval.retransmits.to_string(),
    );
    let _ = writeln!(out, "{sum}");
    out
}

/// The end-of-test summary of a TCP test.
pub fn render_tcp(report: &TcpReport) -> String {
    let mut out = String::from("- - - - - - - - - - - - - - - - - - - - - - - - -\n");
    let _ = writeln!(out, "{INTERVAL_HEADER}  Corrupt  Sender");
    for s in &report.streams {
        let tail = format!(
            "{:>4}  {:>7}  {:?}{}",
            s.retransmits,
            s.corrupted_bytes,
            s.sender,
            if s.complete { "" } else { " (incomplete)" }
        );
        let _ = writeln!(
            out,
            "{}",
            row(&s.index.to_string(), 0.0, s.seconds, s.bytes, s.mbps, &tail)
        );
    }
    let tail = format!(
        "{:>4}  {:>7}  receiver",
        report.retransmits,
        report.streams.iter().map(|s| s.corrupted_bytes).sum::<u64>()
    );
    let _ = writeln!(
        out,
        "{}",
        row(
            "SUM",
            0.0,
            report.duration_s,
            report.bytes,
            report.aggregate_mbps,
            &tail
        )
    );
    let _ = writeln!(
        out,
        "integrity: {}",
        if report.integrity_ok {
            "ok (every byte verified)"
        } else {
            "CORRUPTED"
        }
    );
    out
}

/// The end-of-test summary of a UDP test.
pub fn render_udp(report: &UdpReport) -> String {
    let mut out = String::from("- - - - - - - - - - - - - - - - - - - - - - - - -\n");
    let _ = writeln!(
        out,
        "[ ID]     sent  received     lost  reorder   dup  corrupt  jitter ms  max gap ms  latency us p50/p99/max"
    );
    for f in &report.flows {
        let latency = f
            .latency_us
            .map_or("-".to_string(), |l| format!("{:.0}/{:.0}/{:.0}", l.p50, l.p99, l.max));
        let _ = writeln!(
            out,
            "[{:>3}] {:>8} {:>9} {:>8} {:>8} {:>5} {:>8} {:>10.3} {:>11.3}  {latency}",
            f.index, f.sent, f.received, f.lost, f.reordered, f.duplicates, f.corrupted, f.jitter_ms, f.max_gap_ms
        );
    }
    let t = &report.totals;
    let _ = writeln!(
        out,
        "[SUM] {:>8} {:>9} {:>8} {:>8} {:>5} {:>8} {:>10.3} {:>11.3}  loss {:.3}%  {}",
        t.sent,
        t.received,
        t.lost,
        t.reordered,
        t.duplicates,
        t.corrupted,
        t.max_jitter_ms,
        t.max_gap_ms,
        t.loss_percent,
        human_rate(report.aggregate_mbps)
    );
    let _ = writeln!(
        out,
        "integrity: {}",
        if report.integrity_ok {
            "ok (every payload byte verified)"
        } else {
            "CORRUPTED"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(index: u32, bytes: u64, corrupted_bytes: u64) -> StreamReport {
        StreamReport {
            index,
            sender: Side::Client,
            bytes,
            seconds: 2.0,
            mbps: mbps(bytes, 2.0),
            retransmits: 1,
            corrupted_bytes,
            first_bad_offset: None,
            complete: true,
        }
    }

    #[test]
    fn tcp_report_sums_streams_and_flags_corruption() {
        let r = TcpReport::new(
            1,
            Direction::Forward,
            2.0,
            vec![stream(0, 1_000_000, 0), stream(1, 1_500_000, 0)],
            vec![],
        );
        assert_eq!(r.bytes, 2_500_000);
        assert_eq!(r.aggregate_mbps, 10.0);
        assert_eq!(r.retransmits, 2);
        assert!(r.integrity_ok);
        let bad = TcpReport::new(1, Direction::Forward, 2.0, vec![stream(0, 10, 3)], vec![]);
        assert!(!bad.integrity_ok);
        assert!(render_tcp(&bad).contains("CORRUPTED"));
    }

    #[test]
    fn human_units_follow_iperf3() {
        assert_eq!(human_bytes(512), "512 Bytes");
        assert_eq!(human_bytes(3 * 1_048_576), "3.0 MBytes");
        assert_eq!(human_rate(940.04), "940.0 Mbits/sec");
        assert_eq!(human_rate(2_500.0), "2.50 Gbits/sec");
    }
}
