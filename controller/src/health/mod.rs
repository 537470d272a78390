//! The controller's health and membership logic, as pure state machines.
//!
//! Design: nothing in this module does I/O, reads a clock or spawns a thread. Time comes in as
//! `now_ms` (milliseconds on any monotonic clock the caller chooses), observations come in as
//! plain structs, and decisions come out as values the supervisor acts on. That keeps every
//! timing rule testable in simulated time, step by step, and deterministic.
//!
//! * [`detector`]: heartbeats, process exits and canary probes in; per-daemon liveness and
//!   per-pair health out, with hysteresis so a flapping pair stays out of service.
//! * [`membership`]: the operator's intent (active / draining / removed) combined with health
//!   into epoch-numbered `(active, serving)` sets, pushed to every demux until acknowledged.
//! * [`restart`]: when to restart a daemon that exited, with capped exponential backoff.
//!
//! The supervisor wires them: detector events feed [`membership::MembershipMachine::set_health`]
//! and, for dead daemons, a kill plus [`restart::RestartTracker::on_exit`].

pub mod detector;
pub mod membership;
pub mod restart;
mod types;

#[cfg(test)]
mod scenario_tests;

pub use types::{DaemonKey, Failure, FailureReason, Role, SiteIndex, SITES};
