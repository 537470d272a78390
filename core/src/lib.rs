//! What every braid component speaks.
//!
//! * [`wire`]: zero-copy, checked views over packet bytes (IPv4, IPv6, TCP, UDP, ICMP, GENEVE)
//!   and the flow classifier that turns an inner packet into a [`flow::FiveTuple`].
//! * [`flow`]: the 5-tuple that identifies a flow.
//! * [`config`]: the cluster YAML schema, validated with errors that name file and field.
//! * [`control`]: the authenticated heartbeat and membership protocol between daemons and the
//!   controller.
//! * [`keys`]: WireGuard-format keys and the cluster secret, with file-permission checks.
//! * [`status`]: the controller's status document (`GET /status`) and the blocking HTTP client
//!   its readers (the CLI, the lab, the bench) fetch it with.
//! * [`counters`]: lock-free named counters shared between data-path threads and reporters.
//! * [`udp`]: batched UDP socket I/O (`recvmmsg`/`sendmmsg`) for the data-path threads,
//!   re-exported from `braid-sys`, where the system calls live.
//! * [`daemon`]: what every daemon shares: stop on SIGTERM/SIGINT, atomic status files, logging.
//! * [`testing`]: what the crates' tests share (scratch directories, free loopback ports).
//!
//! Nothing here allocates per packet or touches an async runtime, and nothing here is unsafe:
//! system calls that need unsafe code live in `braid-sys`.

#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod flow;
pub mod keys;
pub mod service;
pub mod status;
pub mod testing;
pub mod wire;

pub use braid_sys::udp;
