//! The control protocol between the braid daemons and the controller.
//!
//! Design: every daemon (demux, gateway) sends the controller a [`Heartbeat`] on a fixed period
//! (100 ms by default) from a dedicated OS thread; the controller pushes [`Membership`] (which
//! pairs the demuxes may steer to, with an epoch) and each demux acknowledges the epoch it
//! applied. Control traffic is about ten datagrams a second per daemon, so bodies are JSON and
//! the control plane may allocate; nothing here runs on the data path or needs an async runtime.
//!
//! Layers, each in its own file:
//!
//! * [`message`]: what is said ([`Body`] and the types in it), as serde JSON.
//! * [`keyring`]: who holds which key. Each daemon holds only its own role key (derived from
//!   the cluster secret, which only the controller holds), keying its link with the controller
//!   one way and the other; the controller derives every member's link.
//! * [`envelope`]: how it travels: a binary header (magic, version, the sender's name, its
//!   incarnation and sequence number, the echo of the receiver's incarnation, body length),
//!   the JSON body, and an HMAC-SHA256 tag with the link key of the sender's direction. The
//!   tag is verified in constant time before any field past the sender's name is read.
//! * [`replay`]: a sans-IO [`ReplayGuard`] without any clock that refuses replayed, reordered
//!   and replaced-life messages per sender, and accepts a new life only when it echoes the
//!   receiver's own; the receiver answers an unfresh one with a hello.
//! * [`transport`]: datagram sockets over UDP or unix paths ([`ControlAddr`]). Unix datagram
//!   sockets reach across network namespaces, which is how the lab's daemons, each in its own
//!   namespace, reach a controller in the root one.
//! * [`client`]: the daemon side, a blocking loop for a plain std thread.
//! * [`server`]: the controller side, which remembers where each daemon last spoke from.
//!
//! Every datagram that is refused is counted by its [`ControlError`] reason in
//! [`ControlCounters`], never silently dropped.

pub mod client;
pub mod counters;
mod endpoint;
pub mod envelope;
pub mod error;
pub mod keyring;
pub mod message;
pub mod replay;
pub mod server;
pub mod transport;

#[cfg(test)]
mod tests;

pub use client::ControlClient;
pub use counters::{ControlCounter, ControlCounters};
pub use envelope::{open, seal, Header, Sender, MAX_DATAGRAM};
pub use error::ControlError;
pub use keyring::{Keyring, LinkKeys};
pub use message::{Body, DaemonId, Heartbeat, Membership, PairGateway, PairReport, Role, MAX_PAIR_ID};
pub use replay::ReplayGuard;
pub use server::{ControlServer, Inbound};
pub use transport::{ControlAddr, ControlAddrError, ControlSocket};

/// Milliseconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
