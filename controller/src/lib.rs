//! braid: the operator CLI and (soon) the controller of a braid tunnel cluster.
//!
//! * [`lab`]: two sites on one machine in network namespaces, with real daemons and traffic.
//! * [`demo`]: the lab, a multi-stream run from host a to host b, and a readable summary.
//! * [`keys_cmd`], [`check_cmd`]: key generation (WireGuard-compatible) and config validation.

pub mod check_cmd;
pub mod demo;
pub mod health;
pub mod keys_cmd;
pub mod lab;
