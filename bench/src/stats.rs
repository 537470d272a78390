//! Per-flow UDP receive statistics, free of I/O and clocks.
//!
//! The receiver feeds every datagram of a flow to [`FlowStats::record`] as an [`Arrival`]
//! (sequence number, sender and receiver timestamps, whether the payload matched the pattern) in
//! arrival order; [`FlowStats::summary`] turns the counts into a [`FlowSummary`].
//!
//! * A sliding window of [`WINDOW`] sequence numbers behind the highest one seen tells new
//!   datagrams from duplicates. A datagram older than the window cannot be classified; it counts
//!   as received, reordered and `late`.
//! * **Reordered**: a new datagram whose sequence number is below one already seen.
//! * **Lost**: `max(sent, highest + 1) - unique received`, so datagrams lost after the last one
//!   that arrived are counted when the sender's count is known.
//! * **Jitter**: RFC 3550 §6.4.1, the smoothed mean deviation of the transit-time difference of
//!   consecutive arrivals; valid without synchronised clocks.
//! * **Largest gap**: the longest time between two consecutive arrivals.
//! * **Latency**: one-way, only when both ends read the same monotonic clock.

use serde::{Deserialize, Serialize};

use crate::histogram::LatencyHistogram;

/// Sequence numbers tracked behind the highest one for duplicate detection.
pub const WINDOW: u64 = 1 << 16;
const WORDS: usize = (WINDOW / 64) as usize;

/// How a sequence number relates to the ones seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never seen, and not lower than the highest seen.
    InOrder,
    /// Never seen, but lower than the highest seen.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Too far behind the highest to tell.
    TooOld,
}

/// A bitmap over the last [`WINDOW`] sequence numbers.
#[derive(Debug, Clone)]
pub struct SeqWindow {
    bits: Box<[u64]>,
    highest: Option<u64>,
}

impl Default for SeqWindow {
    fn default() -> Self {
        SeqWindow {
            bits: vec![0; WORDS].into_boxed_slice(),
            highest: None,
        }
    }
}

impl SeqWindow {
    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn clear(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        self.bits[word] &= !mask;
    }

    /// The highest sequence number seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Marks `seq` as seen and says how it relates to earlier ones.
    pub fn mark(&mut self, seq: u64) -> Seen {
        let verdict = match self.highest {
            Some(high) if seq <= high => {
                if high - seq >= WINDOW {
                    return Seen::TooOld;
                }
                let (word, mask) = Self::slot(seq);
                if self.bits[word] & mask != 0 {
                    return Seen::Duplicate;
                }
                Seen::Reordered
            }
            Some(high) => {
                if seq - high >= WINDOW {
                    self.bits.fill(0);
                } else {
                    for skipped in high + 1..seq {
                        self.clear(skipped);
                    }
                }
                self.highest = Some(seq);
                Seen::InOrder
            }
            None => {
                self.highest = Some(seq);
                Seen::InOrder
            }
        };
        let (word, mask) = Self::slot(seq);
        self.bits[word] |= mask;
        verdict
    }
}

/// One datagram as the receiver saw it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Sequence number within the flow.
    pub seq: u64,
    /// Sender's monotonic clock at sending, nanoseconds.
    pub sent_ns: u64,
    /// Receiver's monotonic clock at arrival, nanoseconds.
    pub arrived_ns: u64,
    /// UDP payload bytes.
    pub bytes: u64,
    /// Whether the payload matched the pattern.
    pub intact: bool,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// What one flow's receiver measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FlowSummary {
    pub received: u64,
    pub bytes: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub late: u64,
    pub corrupted: u64,
    pub jitter_ms: f64,
    pub max_gap_ms: f64,
    pub latency_us: Option<LatencySummary>,
}

/// Receive statistics of one flow.
#[derive(Debug, Clone)]
pub struct FlowStats {
    window: SeqWindow,
    unique: u64,
    received: u64,
    bytes: u64,
    reordered: u64,
    duplicates: u64,
    late: u64,
    corrupted: u64,
    jitter_ns: f64,
    last_transit_ns: Option<i64>,
    last_arrival_ns: Option<u64>,
    max_gap_ns: u64,
    latency: Option<LatencyHistogram>,
}

impl FlowStats {
    /// Empty statistics; latency is measured only if `clocks_shared`.
    pub fn new(clocks_shared: bool) -> Self {
        FlowStats {
            window: SeqWindow::default(),
            unique: 0,
            received: 0,
            bytes: 0,
            reordered: 0,
            duplicates: 0,
            late: 0,
            corrupted: 0,
            jitter_ns: 0.0,
            last_transit_ns: None,
            last_arrival_ns: None,
            max_gap_ns: 0,
            latency: clocks_shared.then(LatencyHistogram::default),
        }
    }

    /// Accounts for one datagram, in arrival order.
    pub fn record(&mut self, arrival: Arrival) {
        self.received += 1;
        self.bytes += arrival.bytes;
        if !arrival.intact {
            self.corrupted += 1;
        }
        match self.window.mark(arrival.seq) {
            Seen::InOrder => self.unique += 1,
            Seen::Reordered => {
                self.unique += 1;
                self.reordered += 1;
            }
            Seen::Duplicate => self.duplicates += 1,
            Seen::TooOld => {
                self.unique += 1;
                self.reordered += 1;
                self.late += 1;
            }
        }
        let transit = arrival.arrived_ns.wrapping_sub(arrival.sent_ns) as i64;
        if let Some(previous) = self.last_transit_ns {
            let deviation = transit.wrapping_sub(previous).unsigned_abs() as f64;
            self.jitter_ns += (deviation - self.jitter_ns) / 16.0;
        }
        self.last_transit_ns = Some(transit);
        if let Some(previous) = self.last_arrival_ns {
            self.max_gap_ns = self.max_gap_ns.max(arrival.arrived_ns.saturating_sub(previous));
        }
        self.last_arrival_ns = Some(arrival.arrived_ns);
        if let Some(latency) = &mut self.latency {
            latency.record(arrival.arrived_ns.saturating_sub(arrival.sent_ns));
        }
    }

    /// Payload bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The flow's figures; `sent` is the sender's datagram count when known.
    pub fn summary(&self, sent: Option<u64>) -> FlowSummary {
        let expected = self.window.highest().map_or(0, |h| h + 1).max(sent.unwrap_or(0));
        let to_us = |ns: u64| ns as f64 / 1_000.0;
        FlowSummary {
            received: self.received,
            bytes: self.bytes,
            lost: expected.saturating_sub(self.unique),
            reordered: self.reordered,
            duplicates: self.duplicates,
            late: self.late,
            corrupted: self.corrupted,
            jitter_ms: self.jitter_ns / 1e6,
            max_gap_ms: self.max_gap_ns as f64 / 1e6,
            latency_us: self.latency.as_ref().and_then(|h| {
                Some(LatencySummary {
                    p50: to_us(h.quantile(0.5)?),
                    p99: to_us(h.quantile(0.99)?),
                    max: to_us(h.max()),
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stats: &mut FlowStats, seqs: &[u64]) {
        for (i, &seq) in seqs.iter().enumerate() {
            let arrived_ns = 1_000_000 * (i as u64 + 1);
            stats.record(Arrival {
                seq,
                sent_ns: arrived_ns - 50_000,
                arrived_ns,
                bytes: 100,
                intact: true,
            });
        }
    }

    #[test]
    fn reorder_and_loss_from_a_hand_made_sequence() {
        let mut stats = FlowStats::new(false);
        feed(&mut stats, &[0, 1, 3, 2, 5]);
        let s = stats.summary(None);
        assert_eq!(s.received, 5);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.lost, 1);
        assert_eq!(s.duplicates, 0);
        assert_eq!(s.bytes, 500);
        assert_eq!(s.latency_us, None);
    }

    #[test]
    fn duplicates_are_not_reordered_nor_unique() {
        let mut stats = FlowStats::new(false);
        feed(&mut stats, &[0, 1, 1, 0, 2]);
        let s = stats.summary(None);
        assert_eq!(s.duplicates, 2);
        assert_eq!(s.reordered, 0);
        assert_eq!(s.lost, 0);
    }

    #[test]
    fn sender_count_reveals_tail_loss() {
        let mut stats = FlowStats::new(false);
        feed(&mut stats, &[0, 1, 2]);
        assert_eq!(stats.summary(Some(10)).lost, 7);
        assert_eq!(stats.summary(None).lost, 0);
    }

    #[test]
    fn window_slides_and_forgets_old_sequence_numbers() {
        let mut stats = FlowStats::new(false);
        feed(&mut stats, &[0, WINDOW + 5, 3, WINDOW + 5, WINDOW + 4]);
        let s = stats.summary(None);
        assert_eq!(s.late, 1, "3 is more than a window behind");
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 2, "late 3 and reordered WINDOW+4");
        assert_eq!(s.lost, WINDOW + 6 - 4);
    }

    #[test]
    fn a_seq_reused_after_the_window_moved_is_new_again() {
        let mut w = SeqWindow::default();
        assert_eq!(w.mark(1), Seen::InOrder);
        assert_eq!(w.mark(1 + WINDOW - 1), Seen::InOrder);
        assert_eq!(w.mark(1), Seen::Duplicate);
        assert_eq!(w.mark(1 + WINDOW), Seen::InOrder);
        assert_eq!(w.mark(1), Seen::TooOld);
        assert_eq!(w.mark(2), Seen::Reordered);
    }

    #[test]
    fn jitter_gap_latency_and_corruption() {
        let mut stats = FlowStats::new(true);
        let arrivals = [(0, 0, 100_000), (1, 1_000_000, 1_300_000), (2, 2_000_000, 5_100_000)];
        for (seq, sent_ns, arrived_ns) in arrivals {
            stats.record(Arrival {
                seq,
                sent_ns,
                arrived_ns,
                bytes: 10,
                intact: seq != 1,
            });
        }
        let s = stats.summary(None);
        assert_eq!(s.corrupted, 1);
        // Transit 100 µs, 300 µs, 3100 µs: |D| = 200 µs then 2800 µs.
        let j1 = 200_000.0 / 16.0;
        let j2 = j1 + (2_800_000.0 - j1) / 16.0;
        assert!((s.jitter_ms - j2 / 1e6).abs() < 1e-9);
        assert!((s.max_gap_ms - 3.8).abs() < 1e-9);
        let latency = s.latency_us.unwrap();
        assert_eq!(latency.max, 3_100.0);
        assert!(latency.p50 >= 300.0 && latency.p50 < 310.0, "{latency:?}");
    }
}
