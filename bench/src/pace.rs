//! Datagram pacing without a spinning core, free of I/O and clocks.
//!
//! Datagram `k` (counted over all flows) is due at `start + k * period`. The sender asks how many
//! are due now, sends them (at most a burst), and otherwise sleeps until the next one is due. The
//! kernel wakes a sleeping thread tens of microseconds late, so at high rates datagrams leave in
//! small bursts that keep the average exact, instead of a core spinning on the clock.

/// The most datagrams sent back to back before checking the clock again.
pub const MAX_BURST: u64 = 64;

/// A constant-rate schedule.
#[derive(Debug, Clone)]
pub struct Pacer {
    start_ns: u64,
    period_ns: f64,
    sent: u64,
}

impl Pacer {
    /// A schedule of `rate_bps` bits per second in datagrams of `datagram_bytes`, from `start_ns`.
    pub fn new(start_ns: u64, rate_bps: u64, datagram_bytes: usize) -> Self {
        let bits = (datagram_bytes as f64) * 8.0;
        Pacer {
            start_ns,
            period_ns: bits * 1e9 / rate_bps.max(1) as f64,
            sent: 0,
        }
    }

    fn due_at(&self, index: u64) -> u64 {
        self.start_ns + (index as f64 * self.period_ns) as u64
    }

    /// How many datagrams to send now (at most [`MAX_BURST`]).
    pub fn due(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        let owed = ((now_ns - self.start_ns) as f64 / self.period_ns) as u64 + 1;
        owed.saturating_sub(self.sent).min(MAX_BURST)
    }

    /// Nanoseconds until the next datagram is due (0 if one is due now).
    pub fn wait_ns(&self, now_ns: u64) -> u64 {
        self.due_at(self.sent).saturating_sub(now_ns)
    }

    /// Records that `n` datagrams left.
    pub fn sent(&mut self, n: u64) {
        self.sent += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_datagrams_evenly() {
        // 8 Mbit/s in 1000-byte datagrams: one every 1 ms.
        let mut p = Pacer::new(1_000, 8_000_000, 1000);
        assert_eq!(p.due(0), 0);
        assert_eq!(p.due(1_000), 1);
        p.sent(1);
        assert_eq!(p.due(1_000), 0);
        assert_eq!(p.wait_ns(1_000), 1_000_000);
        assert_eq!(p.due(3_500_000), 3);
        p.sent(3);
        assert_eq!(p.wait_ns(3_500_000), 501_000);
    }

    #[test]
    fn bursts_are_capped() {
        let p = Pacer::new(0, 1_000_000_000, 100);
        assert_eq!(p.due(1_000_000_000), MAX_BURST);
    }
}
