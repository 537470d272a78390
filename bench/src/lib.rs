//! braid-bench: the traffic that measures braid.
//!
//! Design: one **server** process answers any number of tests; a **client** runs one test at a
//! time against it. A test is described by a [`spec::TestSpec`] the client sends over a TCP
//! control connection ([`control`]); the server validates it and the two ends then exchange
//! data either as P verified TCP byte streams ([`tcp`]) or as P paced, sequence-numbered UDP
//! flows ([`udp`]). Every payload byte is a deterministic function of (test id, stream, offset)
//! ([`pattern`]), so receivers verify all of it. Receivers are authoritative: they count bytes and
//! datagrams, the server reports what it received back to the client, and the client merges both
//! ends' samples into interval lines ([`intervals`]) and a final [`report`].
//!
//! The statistics cores — payload pattern, UDP sequence/jitter/latency tracking ([`stats`]),
//! pacing ([`pace`]), interval assembly — are free of I/O and clocks and unit-tested on
//! hand-made inputs. I/O uses blocking sockets on plain threads; nothing allocates per datagram
//! or per read. Bad input — garbage on the server's port, foreign datagrams, wrong test ids — is
//! refused with a typed error and counted in [`server::ServerCounters`]; the server keeps serving.
//!
//! Scenario code drives it as a library ([`client::run_tcp`], [`client::run_udp`],
//! [`probe::run_probe`], [`server::Server`]) or as the `braid-bench` process.

pub mod chart;
pub mod client;
pub mod clock;
pub mod control;
pub mod datagram;
pub mod histogram;
pub mod intervals;
pub mod pace;
pub mod pattern;
pub mod probe;
pub mod report;
pub mod scenario;
pub mod server;
pub mod spec;
pub mod stats;
pub mod tcp;
pub mod tcp_info;
pub mod udp;
