//! The `ike_engine` harness: two real IKE engines over a network the fuzzer runs.
//!
//! Fuzzer-chosen bytes alone cannot get past IKE_SA_INIT: every later message is encrypted
//! under keys from a fresh Diffie-Hellman exchange and random SPIs. So an input is a script:
//! the first byte picks the two configurations ([`configs`]); every following operation
//! ([`Op`]) either moves the messages the engines send each other (deliver, drop, replay,
//! flip a byte, truncate), feeds an engine fuzzer bytes (raw, or behind the SPIs of the live
//! IKE SA so they reach the encrypted-message checks), lets time pass (`handle_timeout`:
//! retransmissions, liveness, rekeys, timeouts), or pokes the data-path hooks (`rekey_child`,
//! `peer_alive`, a restart, ESP through the installed SAs). After every operation both
//! engines' `poll_transmit` and `poll_event` are drained.
//!
//! Engine `a` is the configured initiator (and the preferred side); `b` answers (and, by
//! setup bit 4, initiates too).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use braid_ipsec::esp::{InboundSa, OutboundSa};
use braid_ipsec::ike::crypto::Secret;
use braid_ipsec::ike::negotiate::selector_for_prefix;
use braid_ipsec::ike::wire::{Identification, IKE_HEADER_LEN};
use braid_ipsec::ike::{Engine, Event, IkeConfig, NewChild};
use braid_ipsec::proposal::{default_esp_proposals, default_ike_proposals};

use crate::Bytes;

/// Engine `a`'s IKE endpoint.
pub const A: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 11)), 4500);
/// Engine `b`'s IKE endpoint.
pub const B: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 111)), 4500);
/// Operations run per input, at most.
pub const MAX_OPS: usize = 256;
/// Messages queued per direction, at most (the oldest are lost beyond).
const MAX_QUEUED: usize = 32;
/// Injected messages are at most this long.
const MAX_INJECT: usize = 2048;

/// One side's IKE configuration, as in `ipsec/src/ike/tests.rs`, with short lifetimes so that
/// a few `Tick`s reach liveness checks, CHILD and IKE rekeys.
pub fn config(local: SocketAddr, remote: SocketAddr, initiate: bool, preferred: bool) -> IkeConfig {
    let site = |addr: SocketAddr| -> IpAddr {
        if addr == A {
            Ipv4Addr::new(198, 18, 1, 0).into()
        } else {
            Ipv4Addr::new(198, 18, 2, 0).into()
        }
    };
    IkeConfig {
        local_addr: local,
        remote_addr: remote,
        local_id: Identification::from_ip(local.ip()),
        remote_id: Identification::from_ip(remote.ip()),
        psk: Secret::new(b"correct horse battery staple".to_vec()),
        ike_proposals: default_ike_proposals(),
        esp_proposals: default_esp_proposals(),
        local_ts: vec![selector_for_prefix(site(local), 24)],
        remote_ts: vec![selector_for_prefix(site(remote), 24)],
        ike_lifetime: Duration::from_secs(60),
        child_lifetime: Duration::from_secs(20),
        liveness: Duration::from_secs(5),
        replay_window: 1024,
        initiate,
        preferred,
    }
}

/// The configurations of `a` and `b` for a setup byte:
///
/// * bits 0–1, IKE suites: both default; `b` P-256 only (INVALID_KE_PAYLOAD retry); both
///   ChaCha20/x25519; disjoint (NO_PROPOSAL_CHOSEN).
/// * bits 2–3, ESP suites: both default (ESN either); both AES-GCM without ESN; both
///   ChaCha20 with ESN; disjoint.
/// * bit 4: `b` initiates too (simultaneous IKE_SA_INIT).
/// * bit 5: `b` has another PSK (AUTHENTICATION_FAILED).
/// * bit 6: `b` allows only half of `a`'s site (traffic selector narrowing).
/// * bit 7: `b` expects another identity for `a`.
pub fn configs(setup: u8) -> (IkeConfig, IkeConfig) {
    let mut a = config(A, B, true, true);
    let mut b = config(B, A, setup & 0x10 != 0, false);
    let p = |s: &str| s.parse().expect("built-in proposal");
    match setup & 3 {
        0 => {}
        1 => b.ike_proposals = vec![p("aes256gcm16-prfsha256-ecp256")],
        2 => {
            a.ike_proposals = vec![p("chacha20poly1305-prfsha256-x25519")];
            b.ike_proposals = a.ike_proposals.clone();
        }
        _ => {
            a.ike_proposals = vec![p("chacha20poly1305-prfsha256-x25519")];
            b.ike_proposals = vec![p("aes256gcm16-prfsha256-x25519")];
        }
    }
    let e = |s: &str| s.parse().expect("built-in proposal");
    match (setup >> 2) & 3 {
        0 => {}
        1 => {
            a.esp_proposals = vec![e("aes256gcm16")];
            b.esp_proposals = a.esp_proposals.clone();
        }
        2 => {
            a.esp_proposals = vec![e("chacha20poly1305-esn")];
            b.esp_proposals = a.esp_proposals.clone();
        }
        _ => {
            a.esp_proposals = vec![e("chacha20poly1305")];
            b.esp_proposals = vec![e("aes256gcm16")];
        }
    }
    if setup & 0x20 != 0 {
        b.psk = Secret::new(b"another key".to_vec());
    }
    if setup & 0x40 != 0 {
        b.remote_ts = vec![selector_for_prefix(Ipv4Addr::new(198, 18, 1, 0).into(), 25)];
    }
    if setup & 0x80 != 0 {
        b.remote_id = Identification::from_ip(Ipv4Addr::new(198, 19, 0, 99).into());
    }
    (a, b)
}

/// One step of a script. `to_a`: the message goes to engine `a` (else to `b`); `on_a`: the
/// call is made on engine `a`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Op {
    /// Deliver the oldest queued message.
    Deliver { to_a: bool },
    /// Lose the oldest queued message.
    Drop { to_a: bool },
    /// Deliver the oldest queued message and keep it queued (a duplicate).
    Replay { to_a: bool },
    /// Deliver the oldest queued message with the byte at `pos` (modulo its length) XORed
    /// with `xor`.
    Mutate { to_a: bool, pos: u16, xor: u8 },
    /// Deliver the first `len` (modulo its length) bytes of the oldest queued message.
    Truncate { to_a: bool, len: u16 },
    /// Deliver everything both ways until both engines are quiet.
    Pump,
    /// Let `(steps + 1) × 100 ms` pass, then call `handle_timeout` on both engines.
    Tick { steps: u8 },
    /// Hand an engine fuzzer bytes, from an address picked by `from`.
    Inject { to_a: bool, from: u8, bytes: Vec<u8> },
    /// Hand an engine a message whose IKE SPIs are those of the last message queued for it
    /// (so it reaches SA lookup, message-ID and decryption checks), with these header fields,
    /// a correct length, and `body` after the header.
    InjectOnSa {
        to_a: bool,
        next_payload: u8,
        exchange: u8,
        flags: u8,
        message_id: u32,
        body: Vec<u8>,
    },
    /// `rekey_child` for the CHILD SA the engine sends on.
    RekeyChild { on_a: bool },
    /// `peer_alive`.
    PeerAlive { on_a: bool },
    /// Replace the engine by a new one (a restarted peer), forgetting its ESP SAs.
    Restart { on_a: bool },
    /// Seal a packet on the engine's active outbound SA and open it at the peer.
    Esp { on_a: bool, len: u8 },
}

const OPS: u8 = 13;

impl Op {
    /// Decodes one operation (every byte string decodes to something).
    pub fn decode(r: &mut Bytes<'_>) -> Op {
        let code = r.u8();
        let side = code & 0x80 != 0;
        match (code & 0x7f) % OPS {
            0 => Op::Deliver { to_a: side },
            1 => Op::Drop { to_a: side },
            2 => Op::Replay { to_a: side },
            3 => Op::Mutate {
                to_a: side,
                pos: r.u16(),
                xor: r.u8(),
            },
            4 => Op::Truncate {
                to_a: side,
                len: r.u16(),
            },
            5 => Op::Pump,
            6 => Op::Tick { steps: r.u8() },
            7 => Op::Inject {
                to_a: side,
                from: r.u8(),
                bytes: r.bytes(MAX_INJECT).to_vec(),
            },
            8 => Op::InjectOnSa {
                to_a: side,
                next_payload: r.u8(),
                exchange: r.u8(),
                flags: r.u8(),
                message_id: r.u32(),
                body: r.bytes(MAX_INJECT).to_vec(),
            },
            9 => Op::RekeyChild { on_a: side },
            10 => Op::PeerAlive { on_a: side },
            11 => Op::Restart { on_a: side },
            _ => Op::Esp {
                on_a: side,
                len: r.u8(),
            },
        }
    }

    /// Appends the bytes [`Op::decode`] reads back as `self`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let code = |n: u8, side: bool| n | if side { 0x80 } else { 0 };
        let bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(b);
        };
        match self {
            Op::Deliver { to_a } => out.push(code(0, *to_a)),
            Op::Drop { to_a } => out.push(code(1, *to_a)),
            Op::Replay { to_a } => out.push(code(2, *to_a)),
            Op::Mutate { to_a, pos, xor } => {
                out.push(code(3, *to_a));
                out.extend_from_slice(&pos.to_le_bytes());
                out.push(*xor);
            }
            Op::Truncate { to_a, len } => {
                out.push(code(4, *to_a));
                out.extend_from_slice(&len.to_le_bytes());
            }
            Op::Pump => out.push(5),
            Op::Tick { steps } => out.extend_from_slice(&[6, *steps]),
            Op::Inject { to_a, from, bytes: b } => {
                out.extend_from_slice(&[code(7, *to_a), *from]);
                bytes(out, b);
            }
            Op::InjectOnSa {
                to_a,
                next_payload,
                exchange,
                flags,
                message_id,
                body,
            } => {
                out.extend_from_slice(&[code(8, *to_a), *next_payload, *exchange, *flags]);
                out.extend_from_slice(&message_id.to_le_bytes());
                bytes(out, body);
            }
            Op::RekeyChild { on_a } => out.push(code(9, *on_a)),
            Op::PeerAlive { on_a } => out.push(code(10, *on_a)),
            Op::Restart { on_a } => out.push(code(11, *on_a)),
            Op::Esp { on_a, len } => out.extend_from_slice(&[code(12, *on_a), *len]),
        }
    }
}

/// A whole input: the setup byte, then the operations.
pub fn encode_script(setup: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![setup];
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// One side's data path: the ESP SAs its engine's events installed, as in the crate's tests.
#[derive(Default)]
struct DataPath {
    inbound: Vec<InboundSa>,
    outbound: Vec<OutboundSa>,
    active: Option<u32>,
}

impl DataPath {
    fn apply(&mut self, event: Event) {
        match event {
            Event::ChildInstalled(child) => {
                let NewChild {
                    inbound,
                    outbound,
                    activate,
                } = *child;
                if activate {
                    self.active = Some(outbound.spi());
                }
                self.inbound.push(inbound);
                self.outbound.push(outbound);
            }
            Event::ActivateOutbound { outbound_spi } => {
                // The engine may only switch to a CHILD SA it installed and has not removed.
                assert!(
                    self.outbound.iter().any(|o| o.spi() == outbound_spi),
                    "ActivateOutbound for SPI {outbound_spi:08x}, which is not installed"
                );
                self.active = Some(outbound_spi);
            }
            Event::ChildRemoved {
                inbound_spi,
                outbound_spi,
            } => {
                self.inbound.retain(|i| i.spi() != inbound_spi);
                self.outbound.retain(|o| o.spi() != outbound_spi);
                if self.active == Some(outbound_spi) {
                    self.active = None;
                }
            }
        }
    }
}

/// Two engines, their data paths and the network between them.
pub struct Sim {
    setup: u8,
    pub now: Instant,
    pub a: Engine,
    pub b: Engine,
    a_path: DataPath,
    b_path: DataPath,
    to_a: VecDeque<Vec<u8>>,
    to_b: VecDeque<Vec<u8>>,
    /// The IKE SPIs of the last message queued for `a` / for `b`.
    spis_to_a: [u8; 16],
    spis_to_b: [u8; 16],
    /// With recording on: every message an engine sent to the other, `true` if to `a`.
    pub log: Option<Vec<(bool, Vec<u8>)>>,
}

impl Sim {
    pub fn new(setup: u8, now: Instant, record: bool) -> Sim {
        let (a, b) = configs(setup);
        Sim {
            setup,
            now,
            a: Engine::new(a, now).expect("engine a"),
            b: Engine::new(b, now).expect("engine b"),
            a_path: DataPath::default(),
            b_path: DataPath::default(),
            to_a: VecDeque::new(),
            to_b: VecDeque::new(),
            spis_to_a: [0; 16],
            spis_to_b: [0; 16],
            log: record.then(Vec::new),
        }
    }

    /// Runs a whole input (setup byte already consumed by [`Sim::new`]'s caller).
    pub fn run_script(&mut self, r: &mut Bytes<'_>) {
        // Let the initiator(s) start, as the gateway does right after creating the engines.
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.collect();
        for _ in 0..MAX_OPS {
            if r.is_empty() {
                break;
            }
            let op = Op::decode(r);
            self.apply(&op);
        }
    }

    /// Whether both data paths have an active outbound SA.
    pub fn established(&self) -> bool {
        self.a_path.active.is_some() && self.b_path.active.is_some()
    }

    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Deliver { to_a } => {
                if let Some(m) = self.queue(to_a).pop_front() {
                    self.deliver(to_a, &m);
                }
            }
            Op::Drop { to_a } => {
                self.queue(to_a).pop_front();
            }
            Op::Replay { to_a } => {
                if let Some(m) = self.queue(to_a).front().cloned() {
                    self.deliver(to_a, &m);
                }
            }
            Op::Mutate { to_a, pos, xor } => {
                if let Some(mut m) = self.queue(to_a).pop_front() {
                    if !m.is_empty() {
                        let i = usize::from(pos) % m.len();
                        m[i] ^= xor;
                    }
                    self.deliver(to_a, &m);
                }
            }
            Op::Truncate { to_a, len } => {
                if let Some(m) = self.queue(to_a).pop_front() {
                    let n = usize::from(len) % (m.len() + 1);
                    self.deliver(to_a, &m[..n]);
                }
            }
            Op::Pump => self.pump(),
            Op::Tick { steps } => {
                self.now += Duration::from_millis(100) * (u32::from(steps) + 1);
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
            }
            Op::Inject { to_a, from, ref bytes } => {
                let peer = if to_a { B } else { A };
                let from = match from % 4 {
                    0 => peer,
                    1 => SocketAddr::new(peer.ip(), 500),
                    2 => SocketAddr::new(Ipv4Addr::new(198, 18, 200, from).into(), 4500),
                    _ => SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, from.into()).into(), 4500),
                };
                let now = self.now;
                let _ = self.engine(to_a).handle(now, from, bytes);
            }
            Op::InjectOnSa {
                to_a,
                next_payload,
                exchange,
                flags,
                message_id,
                ref body,
            } => {
                let mut m = Vec::with_capacity(IKE_HEADER_LEN + body.len());
                m.extend_from_slice(if to_a { &self.spis_to_a } else { &self.spis_to_b });
                m.extend_from_slice(&[next_payload, 0x20, exchange, flags]);
                m.extend_from_slice(&message_id.to_be_bytes());
                m.extend_from_slice(&((IKE_HEADER_LEN + body.len()) as u32).to_be_bytes());
                m.extend_from_slice(body);
                let from = if to_a { B } else { A };
                let now = self.now;
                let _ = self.engine(to_a).handle(now, from, &m);
            }
            Op::RekeyChild { on_a } => {
                let spi = if on_a { self.a_path.active } else { self.b_path.active };
                if let Some(spi) = spi {
                    let now = self.now;
                    self.engine(on_a).rekey_child(spi, now);
                }
            }
            Op::PeerAlive { on_a } => {
                let now = self.now;
                self.engine(on_a).peer_alive(now);
            }
            Op::Restart { on_a } => {
                let (a, b) = configs(self.setup);
                if on_a {
                    self.a = Engine::new(a, self.now).expect("engine a");
                    self.a_path = DataPath::default();
                } else {
                    self.b = Engine::new(b, self.now).expect("engine b");
                    self.b_path = DataPath::default();
                }
            }
            Op::Esp { on_a, len } => self.esp(on_a, len),
        }
        self.collect();
        // Cheap accessors, so they run on every state the fuzzer reaches.
        let _ = (self.a.next_timeout(), self.b.next_timeout());
        let _ = (
            self.a.stats(),
            self.b.stats(),
            self.a.is_established(),
            self.b.ike_sa_count(),
        );
    }

    fn engine(&mut self, a: bool) -> &mut Engine {
        if a {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    fn queue(&mut self, to_a: bool) -> &mut VecDeque<Vec<u8>> {
        if to_a {
            &mut self.to_a
        } else {
            &mut self.to_b
        }
    }

    fn deliver(&mut self, to_a: bool, m: &[u8]) {
        let from = if to_a { B } else { A };
        let now = self.now;
        let _ = self.engine(to_a).handle(now, from, m);
        self.collect();
    }

    /// Delivers everything both ways until both engines are quiet (bounded).
    fn pump(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            for to_a in [false, true] {
                if let Some(m) = self.queue(to_a).pop_front() {
                    moved = true;
                    self.deliver(to_a, &m);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Drains both engines: messages for the other engine are queued (others, e.g. answers
    /// to injected messages from elsewhere, are lost), events go to the data paths.
    fn collect(&mut self) {
        while let Some(event) = self.a.poll_event() {
            self.a_path.apply(event);
        }
        while let Some(event) = self.b.poll_event() {
            self.b_path.apply(event);
        }
        while let Some(t) = self.a.poll_transmit() {
            if t.to == B {
                self.push(false, t.bytes);
            }
        }
        while let Some(t) = self.b.poll_transmit() {
            if t.to == A {
                self.push(true, t.bytes);
            }
        }
    }

    fn push(&mut self, to_a: bool, m: Vec<u8>) {
        if m.len() >= 16 {
            let spis = if to_a { &mut self.spis_to_a } else { &mut self.spis_to_b };
            spis.copy_from_slice(&m[..16]);
        }
        if let Some(log) = self.log.as_mut() {
            log.push((to_a, m.clone()));
        }
        let q = self.queue(to_a);
        if q.len() == MAX_QUEUED {
            q.pop_front();
        }
        q.push_back(m);
    }

    /// Seals a small IPv4 packet on `on_a`'s active SA and opens it at the peer.
    fn esp(&mut self, on_a: bool, len: u8) {
        let (from, to) = if on_a {
            (&mut self.a_path, &mut self.b_path)
        } else {
            (&mut self.b_path, &mut self.a_path)
        };
        let Some(spi) = from.active else { return };
        let Some(sa) = from.outbound.iter_mut().find(|o| o.spi() == spi) else {
            return;
        };
        let inner = crate::esp::ipv4_packet(20 + usize::from(len), len);
        let mut packet = vec![0; inner.len() + braid_ipsec::esp::ESP_MAX_OVERHEAD];
        let Ok(n) = sa.seal(&inner, &mut packet) else { return };
        packet.truncate(n);
        let mut out = vec![0; packet.len()];
        let opened = to
            .inbound
            .iter_mut()
            .find(|i| i.spi() == spi)
            .map(|i| i.open(&packet, &mut out));
        if let Some(Ok(o)) = opened {
            assert_eq!(
                &out[..o.len],
                &inner[..],
                "ESP between the engines' SAs changed the packet"
            );
            let now = self.now;
            self.engine(!on_a).peer_alive(now);
        }
    }
}
