//! braid: the operator CLI and the controller of a braid tunnel cluster.
//!
//! * [`supervisor`]: `braid up` — launches and supervises the fleet, detects failures, restarts
//!   gateways, pushes membership, serves [`http`] (`/metrics`, `/status`, read-only) and
//!   [`admin`] (the authenticated admin channel: reload, drain, remove, activate).
//! * [`health`]: the controller's pure state machines (failure detector, membership, restarts).
//! * [`fleet`]: which daemons to run and their processes; [`status`] and [`metrics`]: what
//!   operators read.
//! * [`keys_cmd`], [`check_cmd`]: key generation (WireGuard-compatible) and config validation.
//!
//! The lab and the demo (`braid lab`, `braid demo`) are the `braid-lab` crate, which runs this
//! crate's binary rather than linking it.

pub mod admin;
pub mod check_cmd;
pub mod conn;
pub mod fleet;
pub mod health;
pub mod http;
pub mod keys_cmd;
pub mod leader;
pub mod metrics;
pub mod status;
pub mod supervisor;
