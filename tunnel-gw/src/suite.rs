//! The seam between the gateway data loop and a tunnel protocol.
//!
//! Design: a [`TunnelSuite`] is a protocol core with no I/O and no threads, in the style of
//! boringtun's `Tunn`: bytes in, bytes out, and an [`Action`] that tells the caller what to do
//! with the bytes it wrote. The caller owns every buffer (so nothing is allocated per packet)
//! and every socket (so the suite never blocks). WireGuard ([`crate::wireguard`]) and IPsec
//! ([`crate::ipsec`]: IKEv2 and ESP in UDP) are the two suites; the data loop and the demux
//! are the same for both, because all the loop needs is this trait.
//!
//! Buffer contract: every method writes its output at the start of `out` and reports its length
//! in the [`Action`]. `out` must be at least [`TunnelSuite::overhead`] bytes longer than the
//! inner packet for [`Seal::encapsulate`], at least as long as the datagram for
//! [`TunnelSuite::decapsulate`], and at least [`MIN_CONTROL_BUFFER`] bytes for every call. A
//! suite given a shorter buffer returns [`SuiteError::BufferTooSmall`]; it never panics.
//!
//! Threads: a suite is driven by one data thread, unless it can hand its [`Seal`] half to a
//! thread of its own ([`TunnelSuite::split_sealer`]). IPsec can: its outbound SA is independent
//! of everything inbound, so one thread seals while another opens ESP and runs IKE, and the
//! only traffic between them is the outbound SA moving to the sealer when IKE installs one
//! (checked once per round, never per packet). WireGuard cannot: boringtun's `Tunn` is one
//! `&mut` state for both directions, and sharing it would take a lock per packet.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The smallest `out` buffer any suite call accepts: room for the largest control message
/// (a WireGuard handshake initiation is 148 bytes).
pub const MIN_CONTROL_BUFFER: usize = 256;

/// What the caller must do with the bytes a suite call wrote to `out`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Nothing to send or deliver.
    Done,
    /// Send `out[..len]` to the peer gateway's current WAN endpoint.
    SendToPeer { len: usize },
    /// Send `out[..len]` back to the source of the datagram being decapsulated (e.g. a cookie
    /// reply under load), without treating that source as the peer.
    ReplyToSender { len: usize },
    /// `out[..len]` is a decrypted inner IP packet whose header claims `source`; the caller
    /// must check `source` against the peer site before delivering it.
    Deliver { len: usize, source: IpAddr },
    /// The input was dropped for this reason.
    Drop(SuiteError),
}

/// Why a suite dropped a packet. Each variant is a separately counted drop reason.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SuiteError {
    /// Not a message of this protocol, or a message with an impossible length or layout.
    Malformed,
    /// A MAC, AEAD tag, key or session index did not verify: not from our peer.
    AuthenticationFailed,
    /// A message counter already seen (a replay or a duplicate).
    Replay,
    /// A message counter older than the anti-replay window: reordered further than the window
    /// allows, or replayed long after.
    TooOld,
    /// A data message for a session that does not exist (yet or any more).
    NoSession,
    /// A handshake refused because the suite is under load and the sender proved no cookie.
    UnderLoad,
    /// A decrypted payload that is not an IPv4 or IPv6 packet.
    InvalidInnerPacket,
    /// The session expired and could not be re-established yet.
    SessionExpired,
    /// The caller's buffer is shorter than the buffer contract requires.
    BufferTooSmall,
    /// A protocol state the peer should not have driven us into (e.g. an unexpected message).
    Protocol,
}

impl SuiteError {
    /// Every variant, in [`SUITE_DROP_COUNTERS`] order.
    pub const ALL: [SuiteError; 10] = [
        SuiteError::Malformed,
        SuiteError::AuthenticationFailed,
        SuiteError::Replay,
        SuiteError::TooOld,
        SuiteError::NoSession,
        SuiteError::UnderLoad,
        SuiteError::InvalidInnerPacket,
        SuiteError::SessionExpired,
        SuiteError::BufferTooSmall,
        SuiteError::Protocol,
    ];

    /// Position of this reason in [`SUITE_DROP_COUNTERS`].
    pub fn counter_index(self) -> usize {
        self as usize
    }
}

/// Drop counter names for every [`SuiteError`], indexed by [`SuiteError::counter_index`].
pub const SUITE_DROP_COUNTERS: [&str; 10] = [
    "drop_suite_malformed",
    "drop_suite_authentication_failed",
    "drop_suite_replay",
    "drop_suite_too_old",
    "drop_suite_no_session",
    "drop_suite_under_load",
    "drop_suite_invalid_inner_packet",
    "drop_suite_session_expired",
    "drop_suite_buffer_too_small",
    "drop_suite_protocol",
];

/// What a datagram from the WAN proved about its sender.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proof {
    /// Nothing: it did not verify under the peer's keys (or carried nothing to verify).
    None,
    /// A handshake or IKE message that verified. It may still be a replay (a captured
    /// initiation is accepted again by a restarted responder), so it does not move the peer's
    /// endpoint.
    Control,
    /// Transport data (or a keepalive) that verified under a session key and passed the
    /// anti-replay window: only such a datagram moves the peer's WAN endpoint (roaming).
    Data,
}

/// The result of decapsulating one datagram from the WAN.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Decapsulated {
    pub action: Action,
    /// What the datagram proved; the caller moves the peer's WAN endpoint to the datagram's
    /// source only on [`Proof::Data`].
    pub proof: Proof,
}

impl Decapsulated {
    /// Whether the datagram verified under the peer's keys at all.
    pub fn authenticated(&self) -> bool {
        self.proof != Proof::None
    }
}

/// The state of the session with the peer gateway, as status reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SessionState {
    /// Whether data can flow now: a session exists and its keys are still valid.
    pub established: bool,
    /// The age of the keys data is sent with (the SA age), if there are any: time since the
    /// WireGuard handshake completed, or since the IPsec CHILD SA we send on was installed.
    pub last_handshake_age: Option<Duration>,
    /// Time since the IPsec IKE SA was established or rekeyed; `None` for WireGuard, which has
    /// no SA apart from the data keys.
    pub ike_sa_age: Option<Duration>,
    /// Times since start that the data keys were replaced while still valid: WireGuard
    /// handshakes over a live session, IPsec CHILD SA rekeys. The first session is no rekey.
    pub rekeys: u64,
    /// IPsec IKE SA rekeys since start; `None` for WireGuard.
    pub ike_rekeys: Option<u64>,
}

/// Protecting inner packets for the peer: what the LAN → WAN direction needs of a suite.
pub trait Seal {
    /// Protects one inner IP packet from the LAN for the peer. Before a session exists the
    /// suite may queue the packet and return a handshake to send instead.
    fn encapsulate(&mut self, inner: &[u8], out: &mut [u8]) -> Action;

    /// Catches up with the rest of the suite (keys it installed, figures it reads). The thread
    /// that seals calls it once per round, before the round's packets; never per packet.
    fn sync(&mut self) {}
}

/// The sealer of a suite that cannot split ([`TunnelSuite::split_sealer`] returns `None`).
#[derive(Debug)]
pub enum NoSealer {}

impl Seal for NoSealer {
    fn encapsulate(&mut self, _: &[u8], _: &mut [u8]) -> Action {
        match *self {}
    }
}

/// A tunnel protocol core, owned and driven by one data thread (and, split, a sealing one).
pub trait TunnelSuite: Seal {
    /// What [`TunnelSuite::split_sealer`] hands to a sealing thread.
    type Sealer: Seal + Send + 'static;

    /// Hands the sealing half to a thread of its own, if this suite can split: from then on
    /// only the returned sealer encapsulates (the suite's own [`Seal::encapsulate`] drops
    /// with [`SuiteError::Protocol`]), and the suite keeps everything else. `None` if it
    /// cannot split, or already has.
    fn split_sealer(&mut self) -> Option<Self::Sealer>;

    /// Bytes the suite adds to an inner packet on the WAN (headers, tag, padding bound).
    fn overhead(&self) -> usize;

    /// The largest control (handshake) datagram the suite accepts from the WAN, which may be
    /// longer than any data datagram of a small MTU: the WAN receive buffers are at least this
    /// long.
    fn largest_control_datagram(&self) -> usize {
        MIN_CONTROL_BUFFER
    }

    /// Starts the session so the pair comes up without waiting for traffic. Returns what to
    /// send (a handshake) or [`Action::Done`].
    fn start(&mut self, out: &mut [u8]) -> Action;

    /// Whether `datagram` is a handshake (key exchange) message rather than transport data:
    /// the caller rate-limits handshakes per source before [`TunnelSuite::decapsulate`], and
    /// never transport data. Looks at the first bytes only.
    fn is_handshake(&self, datagram: &[u8]) -> bool;

    /// Processes one datagram that arrived on the WAN from `source`.
    fn decapsulate(&mut self, source: SocketAddr, datagram: &[u8], out: &mut [u8]) -> Decapsulated;

    /// Drives time: retransmissions, keepalives, rekeys. Call once every 100 ms or so (at most
    /// every 250 ms); each call returns at most one message to send, and when it returns
    /// [`Action::SendToPeer`] the caller drains further messages with [`TunnelSuite::drain`].
    fn timers(&mut self, out: &mut [u8]) -> Action;

    /// Emits packets the suite queued (data waiting for a session, further control messages).
    /// Call after a decapsulation or a timer call that returned [`Action::SendToPeer`],
    /// repeating until it returns [`Action::Done`].
    fn drain(&mut self, out: &mut [u8]) -> Action;

    /// The session's current state.
    fn session(&self) -> SessionState;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counters_are_indexed_in_order_and_unique() {
        for (i, e) in SuiteError::ALL.iter().enumerate() {
            assert_eq!(e.counter_index(), i);
            assert!(SUITE_DROP_COUNTERS[i].starts_with("drop_suite_"));
            assert!(!SUITE_DROP_COUNTERS[i + 1..].contains(&SUITE_DROP_COUNTERS[i]));
        }
    }
}
