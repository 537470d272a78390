//! The `gw_wireguard` and `gw_ipsec` targets: two real gateway suites of one pair (`a`
//! initiates) joined by a simulated WAN, and the script the fuzzer writes against `b`'s
//! `TunnelSuite::decapsulate`.
//!
//! Design: fuzzer bytes cannot complete a handshake (it is keyed by fresh Diffie-Hellman
//! secrets), so the pair is established once per process and kept in a thread-local, and each
//! input is a script of operations on it: inject arbitrary bytes into either suite from one of
//! several sources (the peer's own address among them), send an inner packet from `a` to `b`
//! intact, with a flipped byte, truncated or twice, hand `a`'s LAN policy
//! (`braid_gw::datapath::Policy::accept_from_lan`) a GENEVE datagram and send what it accepts
//! through the tunnel, or let the timers run. Both suites read the
//! real clock, so rekeys happen during long runs and an input is not fully reproducible; the
//! pair is re-established whenever an input finds it down.
//!
//! Checks on every `decapsulate`: any length reported fits the output buffer; `Deliver` comes
//! only with `authenticated`, is no longer than the datagram and names the inner header's
//! source; an authenticated drop is only `InvalidInnerPacket`. Bytes the fuzzer made up are
//! never delivered nor authenticated. An intact packet from `a` authenticates and, if
//! delivered, is what `a` sent; a modified or replayed one is never delivered. What the LAN
//! policy accepts came from the demux, is acceptable GENEVE (checked independently) of pair 1,
//! not OAM, and carries a packet of the protocol it names, within the MTU, from the local site.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use braid_core::keys::PrivateKey;
use braid_gw::datapath::Policy;
use braid_gw::ipsec::IpsecSuite;
use braid_gw::settings::{GatewaySettings, TunnelSettings};
use braid_gw::suite::{Action, Decapsulated, SuiteError, TunnelSuite};
use braid_gw::wireguard::WireGuardSuite;

use crate::engine::{config, A, B};
use crate::packet::geneve_accepts;
use crate::Bytes;

/// Operations per input.
const MAX_OPS: usize = 64;
/// Messages exchanged per pump before giving up (a loop would be a bug elsewhere).
const MAX_PUMP: usize = 64;
const BUFFER: usize = 4096;
/// Gateway `a`'s site demux (the only accepted LAN source) and inner MTU.
const DEMUX: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 10, 1)), 6081);
const MTU: usize = 1420;

/// Which gateway.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn addr(self) -> SocketAddr {
        match self {
            Side::A => A,
            Side::B => B,
        }
    }
}

/// A suite as the target drives it, plus how to tell its data messages from control ones.
pub trait Suite: TunnelSuite + Sized {
    fn pair() -> (Self, Self);
    fn is_data(datagram: &[u8]) -> bool;
}

impl Suite for WireGuardSuite {
    fn pair() -> (Self, Self) {
        let key_a = PrivateKey::from_base64("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAUE=").expect("fixed key");
        let key_b = PrivateKey::from_base64("AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAkI=").expect("fixed key");
        let a = WireGuardSuite::new(*key_a.as_bytes(), *key_b.public_key().as_bytes(), 1);
        let b = WireGuardSuite::new(*key_b.as_bytes(), *key_a.public_key().as_bytes(), 2);
        (a, b)
    }

    fn is_data(datagram: &[u8]) -> bool {
        datagram.first() == Some(&4)
    }
}

impl Suite for IpsecSuite {
    fn pair() -> (Self, Self) {
        // Lifetimes longer than any run: a rekey racing a data packet is the `ike_engine`
        // target's business, not this one's.
        let long = |mut c: braid_ipsec::ike::IkeConfig| {
            c.ike_lifetime = std::time::Duration::from_secs(86_400);
            c.child_lifetime = std::time::Duration::from_secs(86_400);
            c
        };
        let a = IpsecSuite::new(long(config(A, B, true, true))).expect("system RNG");
        let b = IpsecSuite::new(long(config(B, A, false, false))).expect("system RNG");
        (a, b)
    }

    fn is_data(datagram: &[u8]) -> bool {
        datagram.len() > 4 && datagram[..4] != [0; 4]
    }
}

/// Two suites of one pair, `a`'s LAN policy, and the datagrams in flight between them.
pub struct Pair<S> {
    a: S,
    b: S,
    lan: Policy,
    in_flight: VecDeque<(Side, Vec<u8>)>,
    out: Vec<u8>,
}

thread_local! {
    static WIREGUARD: RefCell<Option<Pair<WireGuardSuite>>> = const { RefCell::new(None) };
    static IPSEC: RefCell<Option<Pair<IpsecSuite>>> = const { RefCell::new(None) };
}

/// Runs `script` on this thread's WireGuard pair.
pub fn run_wireguard(script: &[u8]) {
    WIREGUARD.with(|p| p.borrow_mut().get_or_insert_with(Pair::new).run(script));
}

/// Runs `script` on this thread's IPsec pair.
pub fn run_ipsec(script: &[u8]) {
    IPSEC.with(|p| p.borrow_mut().get_or_insert_with(Pair::new).run(script));
}

/// Sources an injected datagram may claim: the peer itself, the peer on another port, a
/// stranger, an IPv6 stranger.
fn source(pick: u8) -> SocketAddr {
    match pick % 4 {
        0 => A,
        1 => SocketAddr::new(A.ip(), 51820),
        2 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 4500),
        _ => SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)), 4500),
    }
}

impl<S: Suite> Pair<S> {
    fn new() -> Self {
        let (a, b) = S::pair();
        Pair {
            a,
            b,
            lan: Policy::new(lan_settings()),
            in_flight: VecDeque::new(),
            out: vec![0; BUFFER],
        }
    }

    fn suite(&mut self, side: Side) -> &mut S {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn established(&self) -> bool {
        self.a.session().established && self.b.session().established
    }

    /// Puts what `side` was told to send on the wire, then drains its queue.
    fn route(&mut self, side: Side, action: Action) {
        if let Action::SendToPeer { len } | Action::ReplyToSender { len } = action {
            assert!(len <= self.out.len());
            self.in_flight.push_back((side.other(), self.out[..len].to_vec()));
            for _ in 0..MAX_PUMP {
                let mut out = std::mem::take(&mut self.out);
                let action = self.suite(side).drain(&mut out);
                self.out = out;
                match action {
                    Action::SendToPeer { len } => self.in_flight.push_back((side.other(), self.out[..len].to_vec())),
                    _ => break,
                }
            }
        }
    }

    /// Delivers what is in flight until the wire is quiet.
    fn pump(&mut self) {
        for _ in 0..MAX_PUMP {
            let Some((to, datagram)) = self.in_flight.pop_front() else {
                return;
            };
            let d = self.decapsulate(to, to.other().addr(), &datagram);
            self.route(to, d.action);
        }
        self.in_flight.clear();
    }

    fn decapsulate(&mut self, to: Side, from: SocketAddr, datagram: &[u8]) -> Decapsulated {
        let mut out = std::mem::take(&mut self.out);
        let d = self.suite(to).decapsulate(from, datagram, &mut out);
        check(&d, datagram, &out);
        self.out = out;
        d
    }

    fn tick(&mut self) {
        for side in [Side::A, Side::B] {
            let mut out = std::mem::take(&mut self.out);
            let action = self.suite(side).timers(&mut out);
            self.out = out;
            self.route(side, action);
        }
        self.pump();
    }

    fn establish(&mut self) {
        if self.established() {
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        let action = self.a.start(&mut out);
        self.out = out;
        self.route(Side::A, action);
        for _ in 0..8 {
            self.pump();
            if self.established() {
                return;
            }
            self.tick();
        }
    }

    fn run(&mut self, script: &[u8]) {
        self.establish();
        let mut input = Bytes::new(script);
        for _ in 0..MAX_OPS {
            if input.is_empty() {
                break;
            }
            match input.u8() % 5 {
                0 | 1 => {
                    let to = if input.u8() & 1 == 0 { Side::B } else { Side::A };
                    let from = source(input.u8());
                    let bytes = input.bytes(2048).to_vec();
                    let d = self.decapsulate(to, from, &bytes);
                    assert!(!d.authenticated(), "made-up bytes authenticated: {d:?}");
                    assert!(!matches!(d.action, Action::Deliver { .. }), "made-up bytes delivered");
                    if matches!(d.action, Action::SendToPeer { .. }) {
                        self.route(to, d.action);
                        self.pump();
                    }
                }
                2 => {
                    let how = input.u8();
                    let at = usize::from(input.u16());
                    let inner = input.bytes(1400).to_vec();
                    self.send_data(&inner, how, at);
                }
                3 => {
                    let from = if input.u8() & 1 == 0 { DEMUX } else { source(input.u8()) };
                    let datagram = input.bytes(2048).to_vec();
                    if let Some(inner) = self.accept_from_lan(&datagram, from) {
                        self.send_data(&inner, 0, 0);
                    }
                }
                _ => self.tick(),
            }
        }
        self.pump();
    }

    /// `a`'s GENEVE acceptance of a datagram from its LAN, checked independently; returns the
    /// inner packet it lets into the tunnel.
    fn accept_from_lan(&self, datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        let inner = self.lan.accept_from_lan(datagram, from).ok()?;
        assert_eq!(from, DEMUX, "accepted GENEVE from a stranger");
        assert!(geneve_accepts(datagram));
        assert_eq!(datagram[1] & 0x80, 0, "accepted an OAM packet");
        assert_eq!(datagram[4..7], [0, 0, 1], "accepted another pair's VNI");
        let header_len = 8 + usize::from(datagram[0] & 0x3f) * 4;
        assert_eq!(inner, &datagram[header_len..]);
        assert!(inner.len() <= MTU);
        let local = match (u16::from_be_bytes([datagram[2], datagram[3]]), inner[0] >> 4) {
            (0x0800, 4) => inner.len() >= 20 && inner[12..15] == [198, 18, 1],
            (0x86dd, 6) => inner.len() >= 40 && inner[8..14] == [0x20, 0x01, 0x0d, 0xb8, 0, 1],
            _ => false,
        };
        assert!(
            local,
            "accepted an inner packet that is not from the local site: {inner:02x?}"
        );
        Some(inner.to_vec())
    }

    /// `a` protects `inner`; `b` gets it intact (`how` 0 or 1), with byte `at` flipped (2),
    /// cut to `at` bytes (3) or twice (4+).
    fn send_data(&mut self, inner: &[u8], how: u8, at: usize) {
        let was_up = self.established();
        let mut out = std::mem::take(&mut self.out);
        let action = self.a.encapsulate(inner, &mut out);
        self.out = out;
        let Action::SendToPeer { len } = action else {
            return;
        };
        let datagram = self.out[..len].to_vec();
        if !was_up || !S::is_data(&datagram) {
            // A handshake came out instead (session down or being rekeyed).
            self.route(Side::A, action);
            self.pump();
            return;
        }
        let mut sent = datagram.clone();
        let modified = match how % 5 {
            2 => {
                let i = at % sent.len();
                sent[i] ^= 0x80 | (at >> 8) as u8;
                true
            }
            3 => {
                sent.truncate(at % sent.len());
                !sent.is_empty()
            }
            _ => false,
        };
        if sent.is_empty() {
            return;
        }
        let d = self.decapsulate(Side::B, A, &sent);
        if modified {
            assert!(!d.authenticated(), "a modified packet authenticated: {d:?}");
            assert!(
                !matches!(d.action, Action::Deliver { .. }),
                "a modified packet was delivered"
            );
            return;
        }
        assert!(
            d.authenticated(),
            "an intact packet from the peer did not authenticate: {d:?}"
        );
        if let Action::Deliver { len, .. } = d.action {
            assert_eq!(
                &self.out[..len],
                &inner[..len],
                "delivered bytes differ from those sent"
            );
        }
        if how % 5 == 4 {
            let again = self.decapsulate(Side::B, A, &sent);
            assert!(
                !matches!(again.action, Action::Deliver { .. }),
                "a replayed packet was delivered"
            );
            assert!(
                matches!(again.action, Action::Drop(SuiteError::Replay)),
                "replay: {again:?}"
            );
        }
    }
}

/// Gateway `a`'s settings as its LAN policy reads them (pair 1, site 198.18.1.0/24 and
/// 2001:db8:1::/48); the sockets are never bound.
fn lan_settings() -> GatewaySettings {
    let key = PrivateKey::from_base64("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAUE=").expect("fixed key");
    let peer_public_key = key.public_key();
    let prefix = |p: &str| p.parse().expect("fixed prefix");
    GatewaySettings {
        pair_id: 1,
        local_prefixes: vec![prefix("198.18.1.0/24"), prefix("2001:db8:1::/48")],
        peer_prefixes: vec![prefix("198.18.2.0/24"), prefix("2001:db8:2::/48")],
        lan_bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 10, 11)), 6081),
        demux: DEMUX,
        wan_bind: A,
        peer_endpoint: B,
        tunnel: TunnelSettings::WireGuard {
            private_key: key,
            peer_public_key,
        },
        mtu: MTU,
        batch_size: 32,
        socket_buffer_bytes: 0,
        seal_thread: false,
    }
}

/// What every `decapsulate` result must satisfy.
fn check(d: &Decapsulated, datagram: &[u8], out: &[u8]) {
    match d.action {
        Action::SendToPeer { len } | Action::ReplyToSender { len } => assert!(len <= out.len()),
        Action::Deliver { len, source } => {
            assert!(d.authenticated(), "delivered without authentication");
            assert!(
                len <= datagram.len(),
                "delivered {len} bytes from a {}-byte datagram",
                datagram.len()
            );
            let packet = &out[..len];
            let header_source: IpAddr = match packet.first().map(|b| b >> 4) {
                Some(4) => <[u8; 4]>::try_from(packet.get(12..16).expect("short IPv4"))
                    .unwrap()
                    .into(),
                Some(6) => <[u8; 16]>::try_from(packet.get(8..24).expect("short IPv6"))
                    .unwrap()
                    .into(),
                _ => panic!("delivered a non-IP packet: {d:?} {packet:02x?}"),
            };
            assert_eq!(source, header_source);
        }
        Action::Drop(error) => {
            if d.authenticated() {
                assert_eq!(error, SuiteError::InvalidInnerPacket);
            }
        }
        Action::Done => {}
    }
}
