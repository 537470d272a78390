//! The LAN → WAN direction: GENEVE from the demux, sealed for the peer gateway.
//!
//! [`seal_batch`] is the direction's one walk, whichever thread runs it: accept GENEVE only
//! from the configured demux, parse it as untrusted input, require this pair's VNI and an
//! inner source inside the local site, then encrypt straight into the WAN send batch for the
//! peer's current endpoint. The main data thread runs it between its WAN batches; with a
//! sealing thread, [`Sealing`] runs it alone, with the suite's split-off sealer.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use braid_core::daemon::StopFlag;
use braid_core::service::Progress;
use braid_core::udp::poll_readable;

use super::ports::{Inbox, Outbox};
use super::{Policy, TIMER_TICK};
use crate::counters::{Counter, ThreadCounters};
use crate::suite::{Action, Seal, SuiteError};

/// Seals one batch received on `lan` into `to_wan`, for the peer at `peer`.
pub(super) fn seal_batch(
    lan: &mut Inbox,
    to_wan: &mut Outbox,
    policy: &Policy,
    sealer: &mut impl Seal,
    peer: SocketAddr,
    counters: &ThreadCounters,
) {
    let count = lan.receive(counters);
    for i in 0..count {
        if lan.batch.truncated(i) {
            counters.inc(Counter::DropLanTruncated);
            continue;
        }
        let (datagram, source) = lan.batch.get(i);
        let inner = match policy.accept_from_lan(datagram, source) {
            Ok(inner) => inner,
            Err(drop) => {
                drop.count(counters);
                continue;
            }
        };
        to_wan.make_room(counters);
        let Some(out) = to_wan.batch.next_buf() else {
            continue;
        };
        match sealer.encapsulate(inner, out) {
            Action::SendToPeer { len } => to_wan.batch.commit(len, peer),
            Action::Done => counters.inc(Counter::LanQueuedForSession),
            Action::Drop(error) => counters.suite_drop(error),
            Action::ReplyToSender { .. } | Action::Deliver { .. } => counters.suite_drop(SuiteError::Protocol),
        }
    }
}

/// The sealing thread's half of a split data path: the LAN inbox, a WAN outbox of its own, the
/// suite's sealer.
#[derive(Debug)]
pub struct Sealing<E> {
    pub(super) lan: Inbox,
    pub(super) to_wan: Outbox,
    pub(super) sealer: E,
    pub(super) policy: Arc<Policy>,
    /// The peer's WAN endpoint, replaced by the main data thread when the peer roams.
    pub(super) peer: Arc<ArcSwap<SocketAddr>>,
    pub(super) counters: Arc<ThreadCounters>,
    /// Marked every round (at least every [`TIMER_TICK`]).
    pub(super) progress: Progress,
}

impl<E: Seal> Sealing<E> {
    /// Seals until `stop` is raised. Syncs the sealer every round, with or without traffic,
    /// so it takes up new keys and reports its figures within a tick.
    pub(super) fn run(mut self, stop: &StopFlag) -> io::Result<()> {
        while !stop.is_stopped() {
            let [ready] = poll_readable([&self.lan.socket], TIMER_TICK)?;
            self.sealer.sync();
            if ready {
                let peer = **self.peer.load();
                seal_batch(
                    &mut self.lan,
                    &mut self.to_wan,
                    &self.policy,
                    &mut self.sealer,
                    peer,
                    &self.counters,
                );
            }
            self.to_wan.flush(&self.counters);
            self.progress.mark();
        }
        Ok(())
    }
}
