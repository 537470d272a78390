//! Membership: which pairs take new flows and which keep their pinned flows, pushed to every
//! demux with an epoch until acknowledged.
//!
//! Design. Each pair has an admin state (the operator's intent) and a health bit (from the
//! detector). Two sets follow from them:
//!
//! * `active`  = Active ∧ healthy: the pairs the Maglev table spreads **new** flows over;
//! * `serving` = (Active ∨ Draining) ∧ healthy: the pairs whose **pinned** flows stay put.
//!
//! **Fail-static.** When not one pair is healthy, the sets do not empty: the pairs last in
//! `active` (and in `serving`) that the operator has not drained or removed stay there. A site
//! whose every pair looks down at once — canaries lost to an overloaded host, a monitoring
//! fault — keeps forwarding over the pairs last known to work instead of dropping every packet;
//! traffic through pairs that really died is lost either way. As soon as one pair is healthy the
//! sets follow health again. Until a first pair has ever been healthy, they stay empty.
//!
//! Every change of `(active, serving)` bumps the epoch and makes a new [`Membership`], which
//! every demux must acknowledge. [`MembershipMachine::pending`] says what to (re)send: the
//! latest membership to each demux that has not acked it, at most once per `resend_ms`. An ack
//! counts only for the latest epoch. A drain ends when every demux has reported zero flows
//! pinned to the pair since the drain began, or at its deadline; [`MembershipMachine::tick`]
//! reports the drains it finished so the supervisor can stop those gateways.

use std::collections::BTreeMap;
use std::fmt;

use braid_core::flow::PairId;

use super::types::SiteIndex;

/// The operator's intent for one pair.
/// How long after a drain begins a demux's pinned-flow report is sure to come from a census
/// taken after it began: the census period (1 s) plus a heartbeat period and slack.
pub const CENSUS_LAG_MS: u64 = 1_500;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AdminState {
    /// Takes new flows while healthy.
    Active,
    /// Takes no new flows; keeps its pinned flows until they go idle or the deadline.
    Draining { since_ms: u64, deadline_ms: u64 },
    /// Out of both sets; its gateways may be stopped.
    Removed,
}

/// One epoch of membership, as pushed to a demux. Every set is sorted.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Membership {
    pub epoch: u64,
    pub active: Vec<PairId>,
    pub serving: Vec<PairId>,
    /// Every pair not removed, healthy or not: the demuxes send canaries through all of them,
    /// which is how a pair that joined online (or is down) is seen to be healthy.
    pub probing: Vec<PairId>,
}

/// How a drain ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DrainEnd {
    /// Every demux reported no flow pinned to the pair.
    Idle,
    /// The deadline passed with flows still pinned.
    Deadline,
}

/// A drain that [`MembershipMachine::tick`] finished: the pair is now removed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DrainFinished {
    pub pair: PairId,
    pub end: DrainEnd,
}

/// An admin operation that does not apply to the pair's current state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AdminError {
    UnknownPair(PairId),
    AlreadyMember(PairId),
    NotActive(PairId),
    AlreadyActive(PairId),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::UnknownPair(p) => write!(f, "pair {p} is not in the cluster"),
            AdminError::AlreadyMember(p) => write!(f, "pair {p} is already in the cluster"),
            AdminError::NotActive(p) => write!(f, "pair {p} is not active"),
            AdminError::AlreadyActive(p) => write!(f, "pair {p} is already active"),
        }
    }
}

impl std::error::Error for AdminError {}

#[derive(Debug)]
struct PairEntry {
    admin: AdminState,
    healthy: bool,
    /// Per demux: the flows pinned to this pair in its latest report since the drain began.
    pinned_since_drain: BTreeMap<SiteIndex, u64>,
}

#[derive(Debug, Default)]
struct DemuxSync {
    acked_epoch: Option<u64>,
    last_sent_ms: Option<u64>,
}

/// Epochs from here on are absurd: at ten epochs a second a controller needs 28 million years
/// to get there (and 2^53 is the largest integer every JSON reader keeps exactly).
pub const MAX_EPOCH: u64 = 1 << 53;

/// The membership of one cluster and its delivery to the demuxes.
#[derive(Debug)]
pub struct MembershipMachine {
    resend_ms: u64,
    pairs: BTreeMap<PairId, PairEntry>,
    demuxes: BTreeMap<SiteIndex, DemuxSync>,
    current: Membership,
}

impl MembershipMachine {
    /// No pairs yet; epoch `first_epoch` (empty) is due to every demux in `demuxes`. A restarted
    /// controller passes one more than the highest epoch it persisted; demuxes that report a
    /// higher one move it further ([`MembershipMachine::observe_applied`]).
    pub fn new(demuxes: impl IntoIterator<Item = SiteIndex>, resend_ms: u64, first_epoch: u64) -> Self {
        MembershipMachine {
            resend_ms,
            pairs: BTreeMap::new(),
            demuxes: demuxes.into_iter().map(|d| (d, DemuxSync::default())).collect(),
            current: Membership {
                epoch: first_epoch,
                active: Vec::new(),
                serving: Vec::new(),
                probing: Vec::new(),
            },
        }
    }

    /// The latest membership.
    pub fn current(&self) -> &Membership {
        &self.current
    }

    /// Makes the current sets a new epoch due to every demux again: a controller that has just
    /// become the leader pushes under its own term at once.
    pub fn republish(&mut self) {
        self.current.epoch = self.current.epoch.saturating_add(1).min(MAX_EPOCH);
        for sync in self.demuxes.values_mut() {
            *sync = DemuxSync::default();
        }
    }

    /// The admin state of `pair`, if it is known.
    pub fn admin_state(&self, pair: PairId) -> Option<AdminState> {
        self.pairs.get(&pair).map(|p| p.admin)
    }

    /// Adds `pair` as Active (a removed pair may be added again). It joins `active` once the
    /// detector reports it healthy, and then takes new flows only.
    pub fn add_pair(&mut self, pair: PairId) -> Result<(), AdminError> {
        match self.pairs.get(&pair).map(|p| p.admin) {
            None | Some(AdminState::Removed) => {
                self.pairs.insert(
                    pair,
                    PairEntry {
                        admin: AdminState::Active,
                        healthy: false,
                        pinned_since_drain: BTreeMap::new(),
                    },
                );
                // Not in `active` yet, but in `probing`: the demuxes start canaries through it.
                self.recompute();
                Ok(())
            }
            Some(_) => Err(AdminError::AlreadyMember(pair)),
        }
    }

    /// The detector's verdict on `pair` (PairUp / PairDown). Unknown pairs are ignored.
    pub fn set_health(&mut self, pair: PairId, healthy: bool) {
        if let Some(p) = self.pairs.get_mut(&pair) {
            p.healthy = healthy;
            self.recompute();
        }
    }

    /// Stops new flows to `pair` at once; it keeps serving its pinned flows until every demux
    /// reports none left, or until `now_ms + timeout_ms`.
    pub fn drain(&mut self, pair: PairId, now_ms: u64, timeout_ms: u64) -> Result<(), AdminError> {
        let p = self.pairs.get_mut(&pair).ok_or(AdminError::UnknownPair(pair))?;
        if p.admin != AdminState::Active {
            return Err(AdminError::NotActive(pair));
        }
        p.admin = AdminState::Draining {
            since_ms: now_ms,
            deadline_ms: now_ms.saturating_add(timeout_ms),
        };
        p.pinned_since_drain.clear();
        self.recompute();
        Ok(())
    }

    /// Takes `pair` out of both sets at once.
    pub fn remove(&mut self, pair: PairId) -> Result<(), AdminError> {
        let p = self.pairs.get_mut(&pair).ok_or(AdminError::UnknownPair(pair))?;
        p.admin = AdminState::Removed;
        self.recompute();
        Ok(())
    }

    /// Returns a draining or removed `pair` to Active.
    pub fn reactivate(&mut self, pair: PairId) -> Result<(), AdminError> {
        let p = self.pairs.get_mut(&pair).ok_or(AdminError::UnknownPair(pair))?;
        if p.admin == AdminState::Active {
            return Err(AdminError::AlreadyActive(pair));
        }
        p.admin = AdminState::Active;
        self.recompute();
        Ok(())
    }

    /// `demux` reports, at `now_ms`, `count` flows pinned to `pair`. Only reports during a drain
    /// matter, and only from [`CENSUS_LAG_MS`] after it began: a demux counts its flows once a
    /// second, so an earlier report may be a census from before the drain, taken before the
    /// flows that the drain must wait for were pinned.
    pub fn observe_pinned_flows(&mut self, demux: SiteIndex, pair: PairId, count: u64, now_ms: u64) {
        if let Some(p) = self.pairs.get_mut(&pair) {
            if let AdminState::Draining { since_ms, .. } = p.admin {
                if now_ms >= since_ms.saturating_add(CENSUS_LAG_MS) {
                    p.pinned_since_drain.insert(demux, count);
                }
            }
        }
    }

    /// Finishes the drains that are idle on every demux or past their deadline.
    pub fn tick(&mut self, now_ms: u64) -> Vec<DrainFinished> {
        let mut finished = Vec::new();
        for (&pair, p) in &mut self.pairs {
            let AdminState::Draining { deadline_ms, .. } = p.admin else {
                continue;
            };
            let idle = self.demuxes.keys().all(|d| p.pinned_since_drain.get(d) == Some(&0));
            let end = if idle {
                DrainEnd::Idle
            } else if now_ms >= deadline_ms {
                DrainEnd::Deadline
            } else {
                continue;
            };
            p.admin = AdminState::Removed;
            finished.push(DrainFinished { pair, end });
        }
        if !finished.is_empty() {
            self.recompute();
        }
        finished
    }

    /// `demux` acknowledged `epoch`. Returns false when the ack does not count (an older
    /// epoch, a future one, or an unknown demux): the caller counts those.
    pub fn on_ack(&mut self, demux: SiteIndex, epoch: u64) -> bool {
        match self.demuxes.get_mut(&demux) {
            Some(sync) if epoch == self.current.epoch => {
                sync.acked_epoch = Some(epoch);
                true
            }
            _ => false,
        }
    }

    /// `demux` reports `epoch` applied (in its heartbeat). A demux only applies newer epochs,
    /// so one above ours, or ours that it applied without acknowledging it to us (a controller
    /// whose persisted epoch was lost or older) means ours would be ignored: the current membership moves to the epoch after it, due to every
    /// demux at once. Epochs only ever move forward. Returns whether it moved.
    ///
    /// An absurd report (at or above [`MAX_EPOCH`], which no controller reaches) is ignored, so
    /// a daemon's bug or a stolen demux key cannot push the epoch to the end of its range.
    pub fn observe_applied(&mut self, demux: SiteIndex, epoch: u64) -> bool {
        let Some(sync) = self.demuxes.get(&demux) else {
            return false;
        };
        // Our own epoch, applied and acknowledged, is the normal state; the same number
        // applied without our acknowledgement came from another controller.
        let ours = epoch == self.current.epoch && sync.acked_epoch == Some(epoch);
        if epoch < self.current.epoch || ours || epoch >= MAX_EPOCH {
            return false;
        }
        self.current.epoch = epoch + 1;
        for sync in self.demuxes.values_mut() {
            *sync = DemuxSync::default();
        }
        true
    }

    /// `demux` restarted and lost its membership: it is due the latest one at once.
    pub fn on_demux_restart(&mut self, demux: SiteIndex) {
        if let Some(sync) = self.demuxes.get_mut(&demux) {
            *sync = DemuxSync::default();
        }
    }

    /// What to send now: the latest membership to each demux that has not acked it and was
    /// not sent it within `resend_ms`. Records the sends.
    pub fn pending(&mut self, now_ms: u64) -> Vec<(SiteIndex, Membership)> {
        let epoch = self.current.epoch;
        let resend_ms = self.resend_ms;
        let mut out = Vec::new();
        for (&demux, sync) in &mut self.demuxes {
            let acked = sync.acked_epoch == Some(epoch);
            let due = sync.last_sent_ms.is_none_or(|t| now_ms.saturating_sub(t) >= resend_ms);
            if !acked && due {
                sync.last_sent_ms = Some(now_ms);
                out.push((demux, self.current.clone()));
            }
        }
        out
    }

    /// Every demux has acknowledged the latest epoch.
    pub fn converged(&self) -> bool {
        let epoch = Some(self.current.epoch);
        self.demuxes.values().all(|s| s.acked_epoch == epoch)
    }

    /// Recomputes the sets; a change makes a new epoch, due to every demux at once.
    fn recompute(&mut self) {
        let healthy = |admin_ok: fn(AdminState) -> bool| -> Vec<PairId> {
            self.pairs
                .iter()
                .filter(|(_, p)| p.healthy && admin_ok(p.admin))
                .map(|(id, _)| *id)
                .collect()
        };
        let mut active = healthy(|a| a == AdminState::Active);
        let mut serving = healthy(|a| a != AdminState::Removed);
        // Fail-static (see the module docs): no healthy pair at all keeps the last ones.
        let still = |pairs: &[PairId], admin_ok: fn(AdminState) -> bool| -> Vec<PairId> {
            pairs
                .iter()
                .copied()
                .filter(|id| self.pairs.get(id).is_some_and(|p| admin_ok(p.admin)))
                .collect()
        };
        if active.is_empty() && serving.is_empty() {
            active = still(&self.current.active, |a| a == AdminState::Active);
            serving = still(&self.current.serving, |a| a != AdminState::Removed);
        }
        let probing: Vec<PairId> = self
            .pairs
            .iter()
            .filter(|(_, p)| p.admin != AdminState::Removed)
            .map(|(id, _)| *id)
            .collect();
        if active == self.current.active && serving == self.current.serving && probing == self.current.probing {
            return;
        }
        self.current = Membership {
            epoch: self.current.epoch.saturating_add(1),
            active,
            serving,
            probing,
        };
        for sync in self.demuxes.values_mut() {
            sync.last_sent_ms = None;
        }
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
