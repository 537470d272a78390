//! Turning both ends' cumulative samples into per-interval figures.
//!
//! Both ends sample their counters at the same ticks of the test clock (see
//! [`TestSpec::tick_ms`]): the receiver of a stream knows its bytes, the sender its
//! retransmits. The client keeps its own samples and the ones the server sends over the control
//! connection; once it holds both for the next tick, [`IntervalAssembler::next_ready`] yields the
//! interval's deltas. Counts naming streams outside the test are ignored.

use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::control::{Count, Sample};
use crate::spec::TestSpec;

/// One stream's share of an interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntervalStream {
    pub index: u32,
    pub bytes: u64,
    pub mbps: f64,
    pub retransmits: u64,
}

/// The figures of one interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntervalReport {
    pub start_s: f64,
    pub end_s: f64,
    pub bytes: u64,
    pub mbps: f64,
    pub retransmits: u64,
    pub streams: Vec<IntervalStream>,
}

/// Megabits per second of `bytes` over `seconds` (0 when the time is empty).
pub fn mbps(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 * 8.0 / seconds / 1e6
    } else {
        0.0
    }
}

/// Calls `each(tick)` at every tick of `spec` (1-based) measured from `start`, sleeping in
/// between, until the last tick or until `each` returns false.
pub fn run_ticks(spec: &TestSpec, start: Instant, mut each: impl FnMut(u32) -> bool) {
    for tick in 1..=spec.ticks() {
        let due = start + Duration::from_millis(spec.tick_ms(tick));
        thread::sleep(due.saturating_duration_since(Instant::now()));
        if !each(tick) {
            return;
        }
    }
}

/// Pairs local and remote samples tick by tick.
#[derive(Debug)]
pub struct IntervalAssembler {
    spec: TestSpec,
    local: Vec<Sample>,
    remote: Vec<Sample>,
    emitted: usize,
    received_before: Vec<u64>,
    retransmits_before: Vec<u64>,
}

impl IntervalAssembler {
    pub fn new(spec: &TestSpec) -> Self {
        let streams = spec.total_streams() as usize;
        IntervalAssembler {
            spec: spec.clone(),
            local: Vec::new(),
            remote: Vec::new(),
            emitted: 0,
            received_before: vec![0; streams],
            retransmits_before: vec![0; streams],
        }
    }

    /// Adds this end's next sample.
    pub fn push_local(&mut self, sample: Sample) {
        self.local.push(sample);
    }

    /// Adds the peer's next sample.
    pub fn push_remote(&mut self, sample: Sample) {
        self.remote.push(sample);
    }

    /// The next interval both ends have sampled, if any.
    pub fn next_ready(&mut self) -> Option<IntervalReport> {
        let local = self.local.get(self.emitted)?;
        let remote = self.remote.get(self.emitted)?;
        let streams = self.received_before.len();
        let mut bytes = vec![0u64; streams];
        let mut retransmits = vec![0u64; streams];
        let received = local.received.iter().chain(&remote.received);
        delta(received, &mut self.received_before, &mut bytes);
        let retrans = local.retransmits.iter().chain(&remote.retransmits);
        delta(retrans, &mut self.retransmits_before, &mut retransmits);

        let tick = self.emitted as u32 + 1;
        self.emitted += 1;
        let start_s = self.spec.tick_ms(tick - 1) as f64 / 1e3;
        let end_s = self.spec.tick_ms(tick) as f64 / 1e3;
        let seconds = end_s - start_s;
        let per_stream: Vec<IntervalStream> = (0..streams)
            .map(|i| IntervalStream {
                index: i as u32,
                bytes: bytes[i],
                mbps: mbps(bytes[i], seconds),
                retransmits: retransmits[i],
            })
            .collect();
        let total: u64 = bytes.iter().sum();
        Some(IntervalReport {
            start_s,
            end_s,
            bytes: total,
            mbps: mbps(total, seconds),
            retransmits: retransmits.iter().sum(),
            streams: per_stream,
        })
    }
}

/// Writes each counted stream's increase since its previous value into `out`.
fn delta<'a>(counts: impl Iterator<Item = &'a Count>, before: &mut [u64], out: &mut [u64]) {
    for count in counts {
        let i = count.stream as usize;
        if let (Some(previous), Some(slot)) = (before.get_mut(i), out.get_mut(i)) {
            *slot = count.value.saturating_sub(*previous);
            *previous = count.value.max(*previous);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{tests::tcp_spec, Direction};

    fn count(stream: u32, value: u64) -> Count {
        Count { stream, value }
    }

    #[test]
    fn deltas_come_from_the_receiver_and_the_sender() {
        let spec = tcp_spec(Direction::Bidir); // 2 streams each way, 2.5 s, 1 s ticks
        let mut a = IntervalAssembler::new(&spec);
        // Client receives 2 and 3, sends 0 and 1; the server the opposite.
        a.push_local(Sample {
            tick: 1,
            received: vec![count(2, 1_000_000), count(3, 0)],
            retransmits: vec![count(0, 1), count(1, 0)],
        });
        assert_eq!(a.next_ready(), None, "waits for the server's sample");
        a.push_remote(Sample {
            tick: 1,
            received: vec![count(0, 500_000), count(1, 250_000), count(99, 7)],
            retransmits: vec![count(2, 4), count(3, 0)],
        });
        let first = a.next_ready().unwrap();
        assert_eq!(first.bytes, 1_750_000);
        assert_eq!(first.retransmits, 5);
        assert_eq!(first.streams[2].mbps, 8.0);
        assert_eq!((first.start_s, first.end_s), (0.0, 1.0));

        a.push_local(Sample {
            tick: 2,
            received: vec![count(2, 1_500_000)],
            retransmits: vec![],
        });
        a.push_remote(Sample {
            tick: 2,
            received: vec![count(0, 500_000)],
            retransmits: vec![],
        });
        let second = a.next_ready().unwrap();
        assert_eq!(second.streams[2].bytes, 500_000);
        assert_eq!(second.streams[0].bytes, 0);
        assert_eq!(a.next_ready(), None);
    }

    #[test]
    fn last_interval_is_short() {
        let spec = tcp_spec(Direction::Forward);
        let mut a = IntervalAssembler::new(&spec);
        for tick in 1..=3 {
            a.push_local(Sample {
                tick,
                ..Sample::default()
            });
            a.push_remote(Sample {
                tick,
                received: vec![count(0, 500_000 * u64::from(tick))],
                retransmits: vec![],
            });
        }
        let last = std::iter::from_fn(|| a.next_ready()).last().unwrap();
        assert_eq!((last.start_s, last.end_s), (2.0, 2.5));
        assert_eq!(last.mbps, 8.0);
    }
}
