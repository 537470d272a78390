//! The daemon side: heartbeats out, membership in, acknowledgements out.
//!
//! [`ControlClient::run`] is a blocking loop for a dedicated std thread. Every `period` it asks
//! the daemon for a [`Heartbeat`] and sends it to every member of the controller set (one
//! controller, or several electing a leader); in between it waits for datagrams, checking the
//! stop flag at least every 50 ms.
//!
//! Membership pushes are ordered by `(term, epoch)`: the leadership term of the controller
//! that sent it, then its epoch. A push newer than the one applied is handed to the daemon, and
//! acknowledged to its sender if the daemon applied it; the push already applied is
//! acknowledged again without being re-applied (a controller repeats a push until
//! acknowledged); an older one — a stale epoch, or a deposed leader's term once a newer leader
//! has pushed (fencing) — is refused and counted.
//!
//! Only controllers are listened to: the daemon's keyring holds no key for anyone else. A
//! hello from a controller (its answer to a heartbeat that was not yet fresh, e.g. after either
//! end restarted) is answered at once with a heartbeat, so a new controller hears a fresh one
//! within a round trip. The client owns the identity and the applied `(term, epoch)` it
//! reports: it writes them into every heartbeat, whatever the daemon's closure filled in.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::counters::{ControlCounter, ControlCounters};
use super::endpoint::{Endpoint, Received};
use super::error::ControlError;
use super::keyring::Keyring;
use super::message::{Body, DaemonId, Heartbeat, Membership};
use super::transport::ControlAddr;
use crate::daemon::StopFlag;

/// The longest the loop waits before looking at the stop flag again.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A daemon's link to its controllers.
#[derive(Debug)]
pub struct ControlClient {
    endpoint: Endpoint,
    /// Every member of the controller set, by index, with its control address.
    controllers: Vec<(DaemonId, ControlAddr)>,
    applied_term: u64,
    applied_epoch: u64,
}

impl ControlClient {
    /// Binds `local` (a unix path, or a UDP address with port 0 for an ephemeral port) to talk
    /// to the controller set whose member `i` listens at `controllers[i]`, as the daemon whose
    /// keyring is `keys`.
    pub fn new(keys: Keyring, controllers: &[ControlAddr], local: ControlAddr) -> io::Result<Self> {
        Ok(ControlClient {
            endpoint: Endpoint::bind(keys, &local)?,
            controllers: (0u16..)
                .zip(controllers)
                .map(|(i, addr)| (DaemonId::controller_member(i), addr.clone()))
                .collect(),
            applied_term: 0,
            applied_epoch: 0,
        })
    }

    /// The counters, to read from other threads while [`ControlClient::run`] runs.
    pub fn counters(&self) -> Arc<ControlCounters> {
        Arc::clone(self.endpoint.counters())
    }

    /// The bound local address (for UDP, with the port the system picked).
    pub fn local_addr(&self) -> &ControlAddr {
        self.endpoint.local_addr()
    }

    /// Runs until `stop` is raised: a heartbeat from `report` every `period`, and
    /// `on_membership` for each newer membership epoch that is well formed
    /// ([`Membership::check`]; a push that is not is counted as malformed), which returns
    /// whether it was applied.
    pub fn run(
        mut self,
        stop: &StopFlag,
        period: Duration,
        mut report: impl FnMut() -> Heartbeat,
        mut on_membership: impl FnMut(&Membership) -> bool,
    ) {
        let mut next_beat = Instant::now();
        while !stop.is_stopped() {
            let now = Instant::now();
            if now >= next_beat {
                self.send_heartbeat(&mut report);
                next_beat += period;
                if next_beat < now {
                    next_beat = now + period;
                }
            }
            let wait = next_beat.saturating_duration_since(Instant::now()).min(STOP_CHECK);
            if let Some(received) = self.endpoint.recv(wait) {
                self.handle(received, &mut report, &mut on_membership);
            }
        }
    }

    fn send_heartbeat(&mut self, report: &mut impl FnMut() -> Heartbeat) {
        let mut heartbeat = report();
        heartbeat.id = self.endpoint.me().clone();
        heartbeat.membership_epoch = self.applied_epoch;
        heartbeat.membership_term = self.applied_term;
        let body = Body::Heartbeat(Box::new(heartbeat));
        for i in 0..self.controllers.len() {
            self.send_to(i, &body);
        }
    }

    fn handle(
        &mut self,
        received: Received,
        report: &mut impl FnMut() -> Heartbeat,
        on_membership: &mut impl FnMut(&Membership) -> bool,
    ) {
        let counters = Arc::clone(self.endpoint.counters());
        let membership = match received.body {
            Body::Membership(membership) => membership,
            Body::Hello => {
                counters.inc(ControlCounter::Accepted);
                return self.send_heartbeat(report);
            }
            _ => return self.endpoint.reject(ControlError::Unexpected, &received.from),
        };
        if let Err(problem) = membership.check() {
            tracing::warn!(
                epoch = membership.epoch,
                "membership push refused as malformed: {problem}"
            );
            return self.endpoint.reject(ControlError::Malformed, &received.from);
        }
        counters.inc(ControlCounter::Accepted);
        let Some(sender) = self
            .controllers
            .iter()
            .position(|(id, _)| *id == received.header.sender)
        else {
            // Authentic, but from a member this daemon was not configured with.
            return self.endpoint.reject(ControlError::Unexpected, &received.from);
        };
        let pushed = (membership.term, membership.epoch);
        let applied = (self.applied_term, self.applied_epoch);
        if pushed < applied {
            counters.inc(ControlCounter::MembershipOutdated);
            if membership.term < self.applied_term {
                tracing::warn!(
                    controller = %received.header.sender, term = membership.term, applied_term = self.applied_term,
                    "membership refused: pushed by a deposed leader"
                );
            }
            return;
        }
        if pushed > applied {
            if !on_membership(&membership) {
                counters.inc(ControlCounter::MembershipRefused);
                return;
            }
            (self.applied_term, self.applied_epoch) = pushed;
            counters.inc(ControlCounter::MembershipApplied);
        }
        let ack = Body::MembershipAck {
            epoch: membership.epoch,
            term: membership.term,
        };
        if self.send_to(sender, &ack) {
            counters.inc(ControlCounter::AcksSent);
        }
    }

    /// Sends `body` to controller `index`; a failure is counted and logged, and the next period
    /// tries again.
    fn send_to(&mut self, index: usize, body: &Body) -> bool {
        let (id, addr) = self.controllers[index].clone();
        match self.endpoint.send(&id, &addr, body) {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(controller = %addr, %error, "control send failed");
                false
            }
        }
    }
}
