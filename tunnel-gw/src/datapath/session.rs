//! The session state the data thread publishes for status, readable from any thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::suite::SessionState;

/// The session state as last published by the data thread, readable from any thread.
///
/// One atomic per figure, so publishing takes no lock and allocates nothing; a reader may see
/// figures from two consecutive ticks, which status can live with. Absent values are stored as
/// [`ABSENT`].
#[derive(Debug)]
pub struct SharedSession {
    established: AtomicBool,
    /// Milliseconds since the last handshake (the SA age).
    handshake_age_ms: AtomicU64,
    ike_sa_age_ms: AtomicU64,
    rekeys: AtomicU64,
    ike_rekeys: AtomicU64,
}

/// What a [`SharedSession`] figure holds when it has no value.
const ABSENT: u64 = u64::MAX;

fn store(cell: &AtomicU64, value: Option<u64>) {
    cell.store(value.unwrap_or(ABSENT), Ordering::Relaxed);
}

fn load(cell: &AtomicU64) -> Option<u64> {
    Some(cell.load(Ordering::Relaxed)).filter(|v| *v != ABSENT)
}

fn millis(age: Duration) -> u64 {
    u64::try_from(age.as_millis()).unwrap_or(ABSENT - 1)
}

/// Before the first tick: no session, nothing to report.
impl Default for SharedSession {
    fn default() -> Self {
        SharedSession {
            established: AtomicBool::new(false),
            handshake_age_ms: AtomicU64::new(ABSENT),
            ike_sa_age_ms: AtomicU64::new(ABSENT),
            rekeys: AtomicU64::new(0),
            ike_rekeys: AtomicU64::new(ABSENT),
        }
    }
}

impl SharedSession {
    pub(super) fn publish(&self, state: SessionState) {
        self.established.store(state.established, Ordering::Relaxed);
        store(&self.handshake_age_ms, state.last_handshake_age.map(millis));
        store(&self.ike_sa_age_ms, state.ike_sa_age.map(millis));
        self.rekeys.store(state.rekeys, Ordering::Relaxed);
        store(&self.ike_rekeys, state.ike_rekeys);
    }

    /// The last published state (at most one timer tick old), ages to the millisecond.
    pub fn get(&self) -> SessionState {
        SessionState {
            established: self.established.load(Ordering::Relaxed),
            last_handshake_age: load(&self.handshake_age_ms).map(Duration::from_millis),
            ike_sa_age: load(&self.ike_sa_age_ms).map(Duration::from_millis),
            rekeys: self.rekeys.load(Ordering::Relaxed),
            ike_rekeys: load(&self.ike_rekeys),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_session_returns_what_was_published() {
        let shared = SharedSession::default();
        assert_eq!(shared.get(), SessionState::default(), "nothing published yet");
        let states = [
            SessionState::default(),
            SessionState {
                established: true,
                last_handshake_age: Some(Duration::from_millis(42_007)),
                ike_sa_age: Some(Duration::from_secs(3_600)),
                rekeys: 5,
                ike_rekeys: Some(0),
            },
            SessionState {
                established: true,
                last_handshake_age: Some(Duration::ZERO),
                ike_sa_age: None,
                rekeys: u64::MAX - 1,
                ike_rekeys: None,
            },
        ];
        for state in states {
            shared.publish(state);
            assert_eq!(shared.get(), state);
        }
    }

    #[test]
    fn ages_are_kept_to_the_millisecond() {
        let shared = SharedSession::default();
        shared.publish(SessionState {
            last_handshake_age: Some(Duration::from_micros(1_999)),
            ..SessionState::default()
        });
        assert_eq!(shared.get().last_handshake_age, Some(Duration::from_millis(1)));
    }
}
