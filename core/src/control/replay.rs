//! Replay protection for authenticated control messages: a sans-IO state machine, time passed
//! in.
//!
//! For each sender identity the guard remembers the newest incarnation and the highest sequence
//! number accepted in it. A message is accepted only if it was sent within the allowed clock skew
//! of the receiver's clock, and either comes from a newer incarnation (the sender restarted) or
//! carries a higher sequence number than any accepted from the current one. Control messages
//! are idempotent reports and commands resent on a timer, so a reordered message is simply
//! refused rather than held in a window. State changes only when a message is accepted, so a
//! refused message never moves the guard. Entries are made only for authenticated senders, whose
//! number the cluster configuration bounds.

use std::collections::HashMap;
use std::time::Duration;

use super::envelope::Header;
use super::error::ControlError;
use super::message::DaemonId;

/// How far a message's send time may be from the receiver's clock: 30 s.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// The newest (incarnation, seq) accepted from each sender.
#[derive(Debug)]
pub struct ReplayGuard {
    max_skew_ms: u64,
    newest: HashMap<DaemonId, (u64, u64)>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(DEFAULT_MAX_CLOCK_SKEW)
    }
}

impl ReplayGuard {
    /// A guard accepting send times within `max_skew` of the receiver's clock, either way.
    pub fn new(max_skew: Duration) -> Self {
        ReplayGuard {
            max_skew_ms: u64::try_from(max_skew.as_millis()).unwrap_or(u64::MAX),
            newest: HashMap::new(),
        }
    }

    /// Accepts `header` (and remembers it) or says why not.
    pub fn check(&mut self, header: &Header, now_unix_ms: u64) -> Result<(), ControlError> {
        if header.sent_unix_ms.abs_diff(now_unix_ms) > self.max_skew_ms {
            return Err(ControlError::Stale);
        }
        let seen = (header.incarnation, header.seq);
        match self.newest.get_mut(&header.sender) {
            Some(newest) if seen <= *newest => Err(ControlError::Replayed),
            Some(newest) => {
                *newest = seen;
                Ok(())
            }
            None => {
                self.newest.insert(header.sender.clone(), seen);
                Ok(())
            }
        }
    }

    /// Forgets `sender`, e.g. once it is removed from the cluster.
    pub fn forget(&mut self, sender: &DaemonId) {
        self.newest.remove(sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn header(sender: DaemonId, incarnation: u64, seq: u64, sent_unix_ms: u64) -> Header {
        Header {
            sender,
            incarnation,
            seq,
            sent_unix_ms,
        }
    }

    fn gw() -> DaemonId {
        DaemonId::gateway("a", 1)
    }

    #[test]
    fn accepts_increasing_seq_refuses_repeats_and_reordering() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.check(&header(gw(), 10, 0, NOW), NOW), Ok(()));
        assert_eq!(guard.check(&header(gw(), 10, 1, NOW), NOW), Ok(()));
        assert_eq!(guard.check(&header(gw(), 10, 1, NOW), NOW), Err(ControlError::Replayed));
        assert_eq!(guard.check(&header(gw(), 10, 5, NOW), NOW), Ok(()));
        assert_eq!(guard.check(&header(gw(), 10, 4, NOW), NOW), Err(ControlError::Replayed));
    }

    #[test]
    fn newer_incarnation_restarts_seq_older_is_refused() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.check(&header(gw(), 10, 7, NOW), NOW), Ok(()));
        assert_eq!(guard.check(&header(gw(), 11, 0, NOW), NOW), Ok(()));
        assert_eq!(guard.check(&header(gw(), 10, 8, NOW), NOW), Err(ControlError::Replayed));
        assert_eq!(guard.check(&header(gw(), 11, 1, NOW), NOW), Ok(()));
    }

    #[test]
    fn senders_are_independent() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.check(&header(gw(), 10, 3, NOW), NOW), Ok(()));
        let other = DaemonId::gateway("b", 1);
        assert_eq!(guard.check(&header(other.clone(), 1, 0, NOW), NOW), Ok(()));
        guard.forget(&gw());
        assert_eq!(guard.check(&header(gw(), 10, 0, NOW), NOW), Ok(()));
        assert_eq!(guard.check(&header(other, 1, 0, NOW), NOW), Err(ControlError::Replayed));
    }

    #[test]
    fn stale_and_future_send_times() {
        let mut guard = ReplayGuard::new(Duration::from_secs(30));
        for sent in [NOW - 30_001, NOW + 30_001, 0, u64::MAX] {
            assert_eq!(
                guard.check(&header(gw(), 10, 1, sent), NOW),
                Err(ControlError::Stale),
                "{sent}"
            );
        }
        // A refused message does not move the guard: seq 1 is still fresh.
        assert_eq!(guard.check(&header(gw(), 10, 1, NOW - 30_000), NOW), Ok(()));
        assert_eq!(guard.check(&header(gw(), 10, 2, NOW + 30_000), NOW), Ok(()));
    }
}
