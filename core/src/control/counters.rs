//! What one end of the control protocol counts: messages in and out, every refusal by reason,
//! and (on daemons) what became of membership pushes. Readable from any thread.

use crate::counters::CounterSet;

use super::error::ControlError;

/// One control-protocol counter.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum ControlCounter {
    /// Datagrams sent.
    Sent,
    /// Datagrams that could not be sent (socket error, unknown destination).
    SendErrors,
    /// Datagrams accepted: authentic, fresh and expected.
    Accepted,
    /// Receive errors, including datagrams from an unnamed unix socket that cannot be answered.
    RecvErrors,
    RejectedForged,
    RejectedReplayed,
    RejectedUnfresh,
    RejectedUnknownSender,
    RejectedMalformed,
    RejectedTooLarge,
    RejectedUnexpected,
    /// Daemons: membership pushes with a newer epoch that were applied.
    MembershipApplied,
    /// Daemons: membership pushes with a newer epoch that the daemon could not apply.
    MembershipRefused,
    /// Daemons: membership pushes with an epoch older than the one applied, ignored.
    MembershipOutdated,
    /// Daemons: acknowledgements sent (first and repeated).
    AcksSent,
    /// Hellos sent in answer to authentic messages that were not yet fresh.
    HellosSent,
}

const NAMES: &[&str] = &[
    "sent",
    "send_errors",
    "accepted",
    "recv_errors",
    "rejected_forged",
    "rejected_replayed",
    "rejected_unfresh",
    "rejected_unknown_sender",
    "rejected_malformed",
    "rejected_too_large",
    "rejected_unexpected",
    "membership_applied",
    "membership_refused",
    "membership_outdated",
    "acks_sent",
    "hellos_sent",
];

/// The counters of one control client or server.
#[derive(Debug)]
pub struct ControlCounters(CounterSet);

impl Default for ControlCounters {
    fn default() -> Self {
        ControlCounters(CounterSet::new(NAMES))
    }
}

impl ControlCounters {
    pub fn inc(&self, counter: ControlCounter) {
        self.0.inc(counter as usize);
    }

    pub fn get(&self, counter: ControlCounter) -> u64 {
        self.0.get(counter as usize)
    }

    /// Counts a refused datagram under its reason.
    pub fn reject(&self, reason: ControlError) {
        self.inc(Self::rejected_counter(reason));
    }

    /// How many datagrams were refused for `reason`.
    pub fn rejected(&self, reason: ControlError) -> u64 {
        self.get(Self::rejected_counter(reason))
    }

    /// Every counter by name, for status documents and metrics.
    pub fn set(&self) -> &CounterSet {
        &self.0
    }

    fn rejected_counter(reason: ControlError) -> ControlCounter {
        match reason {
            ControlError::Forged => ControlCounter::RejectedForged,
            ControlError::Replayed => ControlCounter::RejectedReplayed,
            ControlError::Unfresh => ControlCounter::RejectedUnfresh,
            ControlError::UnknownSender => ControlCounter::RejectedUnknownSender,
            ControlError::Malformed => ControlCounter::RejectedMalformed,
            ControlError::TooLarge => ControlCounter::RejectedTooLarge,
            ControlError::Unexpected => ControlCounter::RejectedUnexpected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_counters_and_reasons_count_apart() {
        assert_eq!(NAMES.len(), ControlCounter::HellosSent as usize + 1);
        let counters = ControlCounters::default();
        counters.reject(ControlError::Unfresh);
        counters.reject(ControlError::Unfresh);
        counters.reject(ControlError::TooLarge);
        counters.inc(ControlCounter::AcksSent);
        assert_eq!(counters.rejected(ControlError::Unfresh), 2);
        assert_eq!(counters.set().get_by_name("rejected_too_large"), Some(1));
        assert_eq!(counters.set().get_by_name("rejected_forged"), Some(0));
        assert_eq!(counters.set().get_by_name("acks_sent"), Some(1));
    }
}
