//! The WireGuard suite: [`TunnelSuite`] over boringtun's `noise::Tunn`.
//!
//! Design: `Tunn` is a synchronous protocol core with `&mut self` methods, so the suite owns it
//! and lives on the one data thread; no lock is needed. Its rough edges are handled here so the
//! data loop never sees them:
//!
//! * `Tunn` panics on short output buffers; every call checks the suite's buffer contract first
//!   and returns [`SuiteError::BufferTooSmall`] instead. `drain` re-encapsulates queued packets,
//!   so the suite remembers the largest packet it was ever asked to encapsulate.
//! * An empty datagram means "drain the queue" to `Tunn`, so empty WAN datagrams are rejected
//!   as malformed before they reach it.
//! * Handshake rate limiting uses a shared `RateLimiter` and the datagram's source address, so
//!   cookie replies work under load; the suite resets the limiter's count every second. That
//!   limiter is global: it still verifies mac1 and writes a cookie reply for every handshake
//!   past its limit, so the data thread limits handshakes per source before they get here
//!   ([`crate::handshake_limit`]; [`TunnelSuite::is_handshake`] names message types 1 to 3).
//! * Only transport data (type 4, a keepalive included) that decrypts under a session key and
//!   passes the counter window is [`Proof::Data`], which may move the peer's endpoint. A
//!   handshake is at most [`Proof::Control`]: a restarted gateway has forgotten the newest
//!   initiation timestamp and answers a replayed initiation.
//! * `Tunn` gives up after 90 s of unanswered handshakes and then stays silent until traffic
//!   arrives. A gateway pair must come back on its own, so on expiry the suite starts a new
//!   handshake right away.
//! * `Tunn` does not check the inner source address; [`Action::Deliver`] hands it to the
//!   caller, which does. `Tunn` trusts the inner IPv4 total length, even one shorter than the
//!   header; such a packet is refused here as [`SuiteError::InvalidInnerPacket`].
//! * `Tunn` does not count handshakes. A handshake message from the peer that `Tunn` answers
//!   (an initiation with a response, a response with a keepalive) completed one, so the suite
//!   counts those that replaced a still valid session as rekeys.
//! * `Tunn` reports a counter already seen and a counter left of its window alike as replays
//!   to a caller that does not look at the error; they are told apart here
//!   ([`SuiteError::Replay`], [`SuiteError::TooOld`]).
//!
//! The session comes up at [`TunnelSuite::start`] (handshake initiation) and is kept alive by a
//! 25 s persistent keepalive so NAT and stateful firewalls on the WAN keep the path open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::suite::{
    Action, Decapsulated, NoSealer, Proof, Seal, SessionState, SuiteError, TunnelSuite, MIN_CONTROL_BUFFER,
};

/// Bytes WireGuard adds to an inner packet: 16-byte header and 16-byte Poly1305 tag.
pub const WIREGUARD_OVERHEAD: usize = 32;
/// Persistent keepalive interval.
pub const PERSISTENT_KEEPALIVE_SECS: u16 = 25;
/// Handshakes per second accepted before senders must prove their address with a cookie.
pub const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Keys are rejected this long after their handshake (WireGuard's REJECT_AFTER_TIME).
const REJECT_AFTER: Duration = Duration::from_secs(180);
const RATE_LIMIT_RESET_PERIOD: Duration = Duration::from_secs(1);
/// The shortest IP packet: an IPv4 header without options (IPv6 packets `Tunn` delivers are
/// never shorter than their 40-byte header).
const IPV4_MIN_HEADER_LEN: usize = 20;

/// WireGuard message types (first byte; the next three are reserved zero).
const MESSAGE_HANDSHAKE_INITIATION: u8 = 1;
const MESSAGE_HANDSHAKE_RESPONSE: u8 = 2;
const MESSAGE_COOKIE_REPLY: u8 = 3;
const MESSAGE_DATA: u8 = 4;

/// A WireGuard session with one peer gateway.
pub struct WireGuardSuite {
    tunnel: Tunn,
    rate_limiter: Arc<RateLimiter>,
    last_rate_limit_reset: Instant,
    largest_inner: usize,
    /// Handshakes completed over a still valid session.
    rekeys: u64,
}

impl std::fmt::Debug for WireGuardSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints key material.
        f.debug_struct("WireGuardSuite")
            .field("session", &self.session())
            .finish_non_exhaustive()
    }
}

impl WireGuardSuite {
    /// A suite for the peer with `peer_public_key`, authenticating as `private_key`.
    /// `local_index` distinguishes this tunnel's sessions in the peer's logs (the pair id fits).
    pub fn new(private_key: [u8; 32], peer_public_key: [u8; 32], local_index: u32) -> Self {
        let private_key = StaticSecret::from(private_key);
        let public_key = PublicKey::from(&private_key);
        let rate_limiter = Arc::new(RateLimiter::new(&public_key, HANDSHAKE_RATE_LIMIT));
        let tunnel = Tunn::new(
            private_key,
            PublicKey::from(peer_public_key),
            None,
            Some(PERSISTENT_KEEPALIVE_SECS),
            local_index,
            Some(Arc::clone(&rate_limiter)),
        );
        WireGuardSuite {
            tunnel,
            rate_limiter,
            last_rate_limit_reset: Instant::now(),
            largest_inner: 0,
            rekeys: 0,
        }
    }

    fn can_encapsulate(&self, inner_len: usize, out: &[u8]) -> bool {
        out.len() >= MIN_CONTROL_BUFFER && out.len() >= inner_len + WIREGUARD_OVERHEAD
    }
}

impl Seal for WireGuardSuite {
    fn encapsulate(&mut self, inner: &[u8], out: &mut [u8]) -> Action {
        if !self.can_encapsulate(inner.len(), out) {
            return Action::Drop(SuiteError::BufferTooSmall);
        }
        self.largest_inner = self.largest_inner.max(inner.len());
        let base = out.as_ptr() as usize;
        let result = self.tunnel.encapsulate(inner, out);
        place(to_action(result, base), out)
    }
}

impl TunnelSuite for WireGuardSuite {
    /// boringtun's `Tunn` is one state for both directions: a WireGuard gateway seals on the
    /// thread that opens.
    type Sealer = NoSealer;

    fn split_sealer(&mut self) -> Option<NoSealer> {
        None
    }

    fn overhead(&self) -> usize {
        WIREGUARD_OVERHEAD
    }

    fn start(&mut self, out: &mut [u8]) -> Action {
        if out.len() < MIN_CONTROL_BUFFER {
            return Action::Drop(SuiteError::BufferTooSmall);
        }
        let base = out.as_ptr() as usize;
        let result = self.tunnel.format_handshake_initiation(out, false);
        place(to_action(result, base), out)
    }

    fn is_handshake(&self, datagram: &[u8]) -> bool {
        matches!(
            datagram.first(),
            Some(&(MESSAGE_HANDSHAKE_INITIATION | MESSAGE_HANDSHAKE_RESPONSE | MESSAGE_COOKIE_REPLY))
        )
    }

    fn decapsulate(&mut self, source: SocketAddr, datagram: &[u8], out: &mut [u8]) -> Decapsulated {
        let unauthenticated = |error| Decapsulated {
            action: Action::Drop(error),
            proof: Proof::None,
        };
        if datagram.is_empty() {
            return unauthenticated(SuiteError::Malformed);
        }
        if out.len() < datagram.len() || out.len() < MIN_CONTROL_BUFFER {
            return unauthenticated(SuiteError::BufferTooSmall);
        }
        let is_data = datagram.len() >= WIREGUARD_OVERHEAD && datagram[..4] == [MESSAGE_DATA, 0, 0, 0];
        // Read the clock only for handshakes, never per data packet.
        let is_handshake = matches!(datagram[0], MESSAGE_HANDSHAKE_INITIATION | MESSAGE_HANDSHAKE_RESPONSE);
        let rekeying = is_handshake && self.session().established;
        let base = out.as_ptr() as usize;
        let result = self.tunnel.decapsulate(Some(source.ip()), datagram, out);
        let action = match place(to_action(result, base), out) {
            // The only message `Tunn` answers without verifying it came from the peer.
            Action::SendToPeer { len } if out[0] == MESSAGE_COOKIE_REPLY => Action::ReplyToSender { len },
            // A data message that decrypted but does not hold an IP packet.
            Action::Drop(SuiteError::Malformed) if is_data => Action::Drop(SuiteError::InvalidInnerPacket),
            // `Tunn` cuts an IPv4 packet to its header's total length even when that is shorter
            // than the header itself (down to 0 bytes); that is no packet either.
            Action::Deliver { len, .. } if len < IPV4_MIN_HEADER_LEN => Action::Drop(SuiteError::InvalidInnerPacket),
            action => action,
        };
        let proof = match action {
            // Decrypted under a session key and inside the counter window: transport data, a
            // keepalive, or data that is no IP packet.
            Action::Deliver { .. } => Proof::Data,
            Action::Done | Action::Drop(SuiteError::InvalidInnerPacket) if is_data => Proof::Data,
            // A handshake answered; a restarted gateway answers a replayed initiation too.
            Action::SendToPeer { .. } => Proof::Control,
            // A processed cookie reply proves nothing about the sender.
            Action::Done => match datagram[0] {
                MESSAGE_COOKIE_REPLY => Proof::None,
                _ => Proof::Control,
            },
            Action::Drop(_) | Action::ReplyToSender { .. } => Proof::None,
        };
        if rekeying && matches!(action, Action::SendToPeer { .. }) {
            self.rekeys += 1;
        }
        Decapsulated { action, proof }
    }

    fn timers(&mut self, out: &mut [u8]) -> Action {
        if out.len() < MIN_CONTROL_BUFFER {
            return Action::Drop(SuiteError::BufferTooSmall);
        }
        if self.last_rate_limit_reset.elapsed() >= RATE_LIMIT_RESET_PERIOD {
            self.rate_limiter.reset_count();
            self.last_rate_limit_reset = Instant::now();
        }
        let base = out.as_ptr() as usize;
        let result = self.tunnel.update_timers(out);
        match place(to_action(result, base), out) {
            Action::Drop(SuiteError::SessionExpired) => self.start(out),
            action => action,
        }
    }

    fn drain(&mut self, out: &mut [u8]) -> Action {
        if !self.can_encapsulate(self.largest_inner, out) {
            return Action::Drop(SuiteError::BufferTooSmall);
        }
        let base = out.as_ptr() as usize;
        let result = self.tunnel.decapsulate(None, &[], out);
        place(to_action(result, base), out)
    }

    fn session(&self) -> SessionState {
        let age = self.tunnel.time_since_last_handshake();
        SessionState {
            established: age.is_some_and(|age| age < REJECT_AFTER),
            last_handshake_age: age,
            ike_sa_age: None,
            rekeys: self.rekeys,
            ike_rekeys: None,
        }
    }
}

/// An [`Action`] whose bytes `Tunn` wrote `offset` bytes into the caller's buffer.
struct Written {
    action: Action,
    offset: usize,
}

/// Turns a `TunnResult` whose slices point into a buffer starting at address `base` into an
/// [`Action`] and the offset of its bytes, ending the borrow of the buffer.
fn to_action(result: TunnResult<'_>, base: usize) -> Written {
    let (action, start) = match result {
        TunnResult::Done => (Action::Done, base),
        TunnResult::Err(error) => (Action::Drop(suite_error(error)), base),
        TunnResult::WriteToNetwork(packet) => (Action::SendToPeer { len: packet.len() }, packet.as_ptr() as usize),
        TunnResult::WriteToTunnelV4(packet, source) => (
            Action::Deliver {
                len: packet.len(),
                source: source.into(),
            },
            packet.as_ptr() as usize,
        ),
        TunnResult::WriteToTunnelV6(packet, source) => (
            Action::Deliver {
                len: packet.len(),
                source: source.into(),
            },
            packet.as_ptr() as usize,
        ),
    };
    Written {
        action,
        offset: start - base,
    }
}

/// Moves the written bytes to the start of `out` if `Tunn` put them elsewhere, so every
/// [`Action`] length refers to `out[..len]`.
fn place(written: Written, out: &mut [u8]) -> Action {
    if written.offset != 0 {
        if let Action::SendToPeer { len } | Action::Deliver { len, .. } = written.action {
            out.copy_within(written.offset..written.offset + len, 0);
        }
    }
    written.action
}

fn suite_error(error: WireGuardError) -> SuiteError {
    use WireGuardError as E;
    match error {
        E::DestinationBufferTooSmall => SuiteError::BufferTooSmall,
        E::IncorrectPacketLength | E::InvalidPacket | E::WrongPacketType => SuiteError::Malformed,
        E::WrongIndex | E::WrongKey | E::InvalidMac | E::InvalidAeadTag | E::InvalidTai64nTimestamp => {
            SuiteError::AuthenticationFailed
        }
        // A replayed initiation, or a data counter already seen.
        E::WrongTai64nTimestamp | E::DuplicateCounter => SuiteError::Replay,
        // A data counter left of the window (or, after decryption, seen meanwhile: a race a
        // single-threaded suite cannot have).
        E::InvalidCounter => SuiteError::TooOld,
        E::NoCurrentSession => SuiteError::NoSession,
        E::UnderLoad => SuiteError::UnderLoad,
        E::ConnectionExpired => SuiteError::SessionExpired,
        E::UnexpectedPacket | E::LockFailed => SuiteError::Protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const PEER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 51820);

    fn key(seed: u8) -> [u8; 32] {
        [seed; 32]
    }

    fn public(private: [u8; 32]) -> [u8; 32] {
        PublicKey::from(&StaticSecret::from(private)).to_bytes()
    }

    fn pair() -> (WireGuardSuite, WireGuardSuite) {
        let (a, b) = (key(1), key(2));
        (
            WireGuardSuite::new(a, public(b), 1),
            WireGuardSuite::new(b, public(a), 2),
        )
    }

    fn ipv4_packet(source: Ipv4Addr, len: usize) -> Vec<u8> {
        let mut packet = vec![0u8; len];
        packet[0] = 0x45;
        packet[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        packet[9] = 17;
        packet[12..16].copy_from_slice(&source.octets());
        packet[16..20].copy_from_slice(&[10, 2, 0, 1]);
        packet
    }

    /// Runs the handshake from `start` and returns both suites established.
    fn establish() -> (WireGuardSuite, WireGuardSuite) {
        let (mut a, mut b) = pair();
        let mut buf = [0u8; 2048];
        let mut reply = [0u8; 2048];
        let Action::SendToPeer { len } = a.start(&mut buf) else {
            panic!("no initiation")
        };
        assert_eq!(buf[0], 1, "handshake initiation");
        let got = b.decapsulate(PEER_ADDR, &buf[..len], &mut reply);
        let Action::SendToPeer { len } = got.action else {
            panic!("no response: {got:?}")
        };
        assert!(got.authenticated());
        assert_eq!(reply[0], 2, "handshake response");
        let got = a.decapsulate(PEER_ADDR, &reply[..len], &mut buf);
        let Action::SendToPeer { len } = got.action else {
            panic!("no keepalive: {got:?}")
        };
        assert_eq!(buf[0], 4, "keepalive is a data message");
        assert_eq!(b.decapsulate(PEER_ADDR, &buf[..len], &mut reply).action, Action::Done);
        assert!(a.session().established && b.session().established);
        (a, b)
    }

    #[test]
    fn encapsulated_packet_decapsulates_to_the_same_bytes() {
        let (mut a, mut b) = establish();
        let inner = ipv4_packet(Ipv4Addr::new(10, 1, 0, 7), 100);
        let mut wire = [0u8; 2048];
        let mut plain = [0u8; 2048];
        let Action::SendToPeer { len } = a.encapsulate(&inner, &mut wire) else {
            panic!()
        };
        assert_eq!(len, inner.len() + WIREGUARD_OVERHEAD);
        let got = b.decapsulate(PEER_ADDR, &wire[..len], &mut plain);
        assert!(got.authenticated());
        assert_eq!(
            got.action,
            Action::Deliver {
                len: inner.len(),
                source: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 7))
            }
        );
        assert_eq!(&plain[..inner.len()], &inner[..]);
        // The same datagram again is a replay.
        let again = b.decapsulate(PEER_ADDR, &wire[..len], &mut plain);
        assert_eq!(again.action, Action::Drop(SuiteError::Replay));
        assert!(!again.authenticated());
    }

    /// Transport data costs no heap allocation on either side once the session is up:
    /// encapsulated, decapsulated and replayed (refused), a thousand times over.
    #[test]
    fn transport_data_allocates_nothing() {
        let (mut a, mut b) = establish();
        let inner = ipv4_packet(Ipv4Addr::new(10, 1, 0, 7), 200);
        let mut wire = [0u8; 2048];
        let mut plain = [0u8; 2048];
        let (delivered, allocations) = braid_sys::allocations::allocations_during(|| {
            let mut delivered = 0;
            for _ in 0..1000 {
                let Action::SendToPeer { len } = a.encapsulate(&inner, &mut wire) else {
                    panic!("not encapsulated")
                };
                if let Action::Deliver { .. } = b.decapsulate(PEER_ADDR, &wire[..len], &mut plain).action {
                    delivered += 1;
                }
                let again = b.decapsulate(PEER_ADDR, &wire[..len], &mut plain);
                assert_eq!(again.action, Action::Drop(SuiteError::Replay));
            }
            delivered
        });
        assert_eq!(delivered, 1000);
        assert_eq!(allocations, 0, "1000 packets cost {allocations} heap allocations");
    }

    /// Found by the `gw_wireguard` fuzz target: an authentic data message whose inner IPv4
    /// header claims a total length of 0 was delivered as a 0-byte packet "from" 0.0.0.0.
    #[test]
    fn an_inner_ipv4_total_length_shorter_than_the_header_is_not_delivered() {
        let (mut a, mut b) = establish();
        for total_len in [0u16, 1, 19] {
            let mut inner = ipv4_packet(Ipv4Addr::new(10, 1, 0, 7), 46);
            inner[2..4].copy_from_slice(&total_len.to_be_bytes());
            let mut wire = [0u8; 2048];
            let mut plain = [0u8; 2048];
            let Action::SendToPeer { len } = a.encapsulate(&inner, &mut wire) else {
                panic!()
            };
            let got = b.decapsulate(PEER_ADDR, &wire[..len], &mut plain);
            assert_eq!(
                got.action,
                Action::Drop(SuiteError::InvalidInnerPacket),
                "total length {total_len}"
            );
            assert!(got.authenticated());
        }
    }

    #[test]
    fn packets_sent_before_the_session_are_queued_and_drained() {
        let (mut a, mut b) = pair();
        let inner = ipv4_packet(Ipv4Addr::new(10, 1, 0, 7), 60);
        let mut buf = [0u8; 2048];
        let mut reply = [0u8; 2048];
        let Action::SendToPeer { len } = a.encapsulate(&inner, &mut buf) else {
            panic!()
        };
        assert_eq!(buf[0], 1, "the first packet triggers a handshake and waits");
        let Action::SendToPeer { len } = b.decapsulate(PEER_ADDR, &buf[..len], &mut reply).action else {
            panic!()
        };
        assert_eq!(
            a.decapsulate(PEER_ADDR, &reply[..len], &mut buf).action,
            Action::SendToPeer { len: 32 }
        );
        let Action::SendToPeer { len } = a.drain(&mut buf) else {
            panic!("queued packet")
        };
        assert_eq!(a.drain(&mut reply), Action::Done);
        let got = b.decapsulate(PEER_ADDR, &buf[..len], &mut reply);
        assert!(matches!(got.action, Action::Deliver { len: 60, .. }));
    }

    #[test]
    fn forged_and_garbage_datagrams_are_typed_drops() {
        let (_, mut b) = establish();
        let mut out = [0u8; 2048];
        let cases: [(&[u8], SuiteError); 4] = [
            (&[], SuiteError::Malformed),
            (&[4, 0, 0], SuiteError::Malformed),
            (&[9; 100], SuiteError::Malformed),
            (&[1; 148], SuiteError::Malformed), // reserved bytes not zero
        ];
        for (datagram, error) in cases {
            let got = b.decapsulate(PEER_ADDR, datagram, &mut out);
            assert_eq!(got.action, Action::Drop(error), "{datagram:?}");
            assert!(!got.authenticated());
        }
        let mut forged_init = [0u8; 148];
        forged_init[0] = 1;
        let got = b.decapsulate(PEER_ADDR, &forged_init, &mut out);
        assert_eq!(got.action, Action::Drop(SuiteError::AuthenticationFailed));
        let mut forged_data = [0u8; 80];
        forged_data[0] = 4;
        let got = b.decapsulate(PEER_ADDR, &forged_data, &mut out);
        assert!(matches!(
            got.action,
            Action::Drop(SuiteError::NoSession | SuiteError::AuthenticationFailed)
        ));
        assert!(!got.authenticated());
    }

    #[test]
    fn short_buffers_are_refused_not_panics() {
        let (mut a, mut b) = establish();
        let inner = ipv4_packet(Ipv4Addr::new(10, 1, 0, 7), 1000);
        let mut small = [0u8; 1000];
        assert_eq!(
            a.encapsulate(&inner, &mut small),
            Action::Drop(SuiteError::BufferTooSmall)
        );
        assert_eq!(a.timers(&mut small[..100]), Action::Drop(SuiteError::BufferTooSmall));
        let mut wire = [0u8; 2048];
        let Action::SendToPeer { len } = a.encapsulate(&inner, &mut wire) else {
            panic!()
        };
        let got = b.decapsulate(PEER_ADDR, &wire[..len], &mut small);
        assert_eq!(got.action, Action::Drop(SuiteError::BufferTooSmall));
    }

    #[test]
    fn a_session_is_not_established_before_the_handshake() {
        let (a, _) = pair();
        assert_eq!(
            a.session(),
            SessionState {
                established: false,
                last_handshake_age: None,
                ike_sa_age: None,
                rekeys: 0,
                ike_rekeys: None,
            }
        );
        let (a, _) = establish();
        assert!(a.session().last_handshake_age.unwrap() < Duration::from_secs(5));
    }

    /// Runs one handshake from `initiator` to `responder`, both already holding a session.
    fn handshake(initiator: &mut WireGuardSuite, responder: &mut WireGuardSuite) {
        let (mut buf, mut reply) = ([0u8; 2048], [0u8; 2048]);
        let Action::SendToPeer { len } = initiator.start(&mut buf) else {
            panic!("no initiation")
        };
        let Action::SendToPeer { len } = responder.decapsulate(PEER_ADDR, &buf[..len], &mut reply).action else {
            panic!("no response")
        };
        let got = initiator.decapsulate(PEER_ADDR, &reply[..len], &mut buf);
        assert!(matches!(got.action, Action::SendToPeer { .. }), "{got:?}");
    }

    #[test]
    fn handshakes_over_a_live_session_count_as_rekeys_on_both_sides() {
        let (mut a, mut b) = establish();
        assert_eq!((a.session().rekeys, b.session().rekeys), (0, 0), "the first session");
        handshake(&mut a, &mut b);
        assert_eq!((a.session().rekeys, b.session().rekeys), (1, 1));
        handshake(&mut b, &mut a);
        assert_eq!((a.session().rekeys, b.session().rekeys), (2, 2));
        // A replayed initiation completes nothing.
        let mut init = [0u8; 2048];
        let Action::SendToPeer { len } = a.start(&mut init) else {
            panic!("no initiation")
        };
        let mut out = [0u8; 2048];
        assert!(matches!(
            b.decapsulate(PEER_ADDR, &init[..len], &mut out).action,
            Action::SendToPeer { .. }
        ));
        let replayed = b.decapsulate(PEER_ADDR, &init[..len], &mut out);
        assert_eq!(replayed.action, Action::Drop(SuiteError::Replay));
        assert_eq!(b.session().rekeys, 3);
    }

    #[test]
    fn only_transport_data_proves_data_and_handshakes_are_told_from_it() {
        let (mut a, mut b) = establish();
        let mut init = [0u8; 2048];
        let Action::SendToPeer { len } = a.start(&mut init) else {
            panic!("no initiation")
        };
        let captured = init[..len].to_vec();
        assert!(b.is_handshake(&captured));
        let mut out = [0u8; 2048];
        let got = b.decapsulate(PEER_ADDR, &captured, &mut out);
        assert!(matches!(got.action, Action::SendToPeer { .. }));
        assert_eq!(got.proof, Proof::Control, "an answered initiation is no data");
        let response = out[..len_of(got.action)].to_vec();
        assert!(a.is_handshake(&response));
        assert_eq!(a.decapsulate(PEER_ADDR, &response, &mut out).proof, Proof::Control);

        let inner = ipv4_packet(Ipv4Addr::new(10, 1, 0, 7), 60);
        let mut wire = [0u8; 2048];
        let Action::SendToPeer { len } = a.encapsulate(&inner, &mut wire) else {
            panic!()
        };
        assert!(!b.is_handshake(&wire[..len]));
        assert_eq!(b.decapsulate(PEER_ADDR, &wire[..len], &mut out).proof, Proof::Data);
        assert!(!b.is_handshake(&[]) && !b.is_handshake(&[9, 0, 0, 0]));
        assert!(b.is_handshake(&[3, 0, 0, 0]), "cookie replies are limited too");
    }

    #[test]
    fn an_initiation_replayed_after_a_restart_is_answered_but_proves_no_data() {
        let (mut a, mut b) = establish();
        let mut init = [0u8; 2048];
        let Action::SendToPeer { len } = a.start(&mut init) else {
            panic!("no initiation")
        };
        let captured = init[..len].to_vec();
        let mut out = [0u8; 2048];
        let got = b.decapsulate(PEER_ADDR, &captured, &mut out);
        let response = out[..len_of(got.action)].to_vec();
        a.decapsulate(PEER_ADDR, &response, &mut out);

        // B restarts: a new suite with the same keys, which has never seen the initiation.
        let mut restarted = WireGuardSuite::new(key(2), public(key(1)), 2);
        let elsewhere = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 7, 7)), 40000);
        let replayed = restarted.decapsulate(elsewhere, &captured, &mut out);
        assert!(
            matches!(replayed.action, Action::SendToPeer { .. }),
            "boringtun answers the replay: {replayed:?}"
        );
        assert_eq!(replayed.proof, Proof::Control, "which must not move the endpoint");

        // The real peer's next handshake and data do prove themselves.
        handshake(&mut a, &mut restarted);
        let inner = ipv4_packet(Ipv4Addr::new(10, 1, 0, 7), 60);
        let mut wire = [0u8; 2048];
        let Action::SendToPeer { len } = a.encapsulate(&inner, &mut wire) else {
            panic!()
        };
        let got = restarted.decapsulate(PEER_ADDR, &wire[..len], &mut out);
        assert!(matches!(got.action, Action::Deliver { .. }));
        assert_eq!(got.proof, Proof::Data);
        // Replayed data proves nothing.
        assert_eq!(
            restarted.decapsulate(elsewhere, &wire[..len], &mut out).proof,
            Proof::None
        );
    }

    fn len_of(action: Action) -> usize {
        match action {
            Action::SendToPeer { len } | Action::ReplyToSender { len } | Action::Deliver { len, .. } => len,
            other => panic!("nothing written: {other:?}"),
        }
    }

    #[test]
    fn counters_left_of_the_window_are_too_old_not_replays() {
        let (mut a, mut b) = establish();
        let inner = ipv4_packet(Ipv4Addr::new(10, 1, 0, 7), 60);
        let (mut wire, mut plain) = ([0u8; 2048], [0u8; 2048]);
        let Action::SendToPeer { len } = a.encapsulate(&inner, &mut wire) else {
            panic!()
        };
        let first = wire[..len].to_vec();
        // Move the receiver's window far past the first packet (boringtun keeps 1024 counters).
        for _ in 0..1100 {
            let Action::SendToPeer { len } = a.encapsulate(&inner, &mut wire) else {
                panic!()
            };
            assert!(matches!(
                b.decapsulate(PEER_ADDR, &wire[..len], &mut plain).action,
                Action::Deliver { .. }
            ));
        }
        let late = b.decapsulate(PEER_ADDR, &first, &mut plain);
        assert_eq!(late.action, Action::Drop(SuiteError::TooOld));
        assert!(!late.authenticated());
    }
}
