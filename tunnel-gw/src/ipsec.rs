//! The IPsec suite: [`TunnelSuite`] over braid-ipsec's IKEv2 engine and ESP SAs.
//!
//! Design: everything shares the WAN socket, UDP port 4500 (RFC 3948): IKE behind the non-ESP
//! marker, ESP-in-UDP, and NAT keepalives, told apart by [`braid_ipsec::port::classify`]. The
//! IKE [`Engine`] is sans-IO; this suite is its driver on the data thread: it feeds it IKE
//! messages and the clock, sends what it queues, and applies its events to the ESP SAs it
//! owns — inbound SAs looked up by SPI (the current one plus, across a rekey, the next or the
//! lingering old one) and the one outbound SA it sends on. Per-packet work is a seal or an open
//! in the caller's buffer: no allocation, no lock, no clock read.
//!
//! The session is up while an outbound CHILD SA exists; its age is the age of that SA (it
//! resets at every rekey, as a WireGuard handshake age does). The engine is told of ESP from
//! the peer once per tick, so an active tunnel needs no liveness exchanges. An outbound SA
//! nearing the end of its sequence numbers asks the engine for a rekey long before it runs out.
//!
//! Sealing is the [`EspSealer`]'s: it owns the outbound SA it sends on, takes a new one from
//! the suite when IKE activates it (a channel, read once per round by [`Seal::sync`]) and
//! reports back what the suite's timers need (whether it sent, how many sequence numbers are
//! left) through two atomics. The suite keeps the sealer and syncs it itself until
//! [`TunnelSuite::split_sealer`] hands it to a thread of its own; the code is the same both
//! ways.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use braid_ipsec::esp::{EspError, InboundSa, OutboundSa, ESP_MAX_OVERHEAD};

/// The largest IKE datagram the gateway receives: RFC 7296's 3000 octets, with room to spare
/// for the non-ESP marker and larger messages.
pub const IKE_DATAGRAM_MAX: usize = 4096;
use braid_ipsec::ike::{Engine, Event, IkeConfig, IkeDrop, NewChild};
use braid_ipsec::port::{classify, Datagram, NAT_KEEPALIVE, NON_ESP_MARKER};

use crate::suite::{Action, Decapsulated, Proof, Seal, SessionState, SuiteError, TunnelSuite, MIN_CONTROL_BUFFER};

/// An outbound SA with fewer sequence numbers than this left is rekeyed (2^31 packets: at a
/// million packets a second, half an hour of margin).
const REKEY_REMAINING: u64 = 1 << 31;
/// With nothing sent for this long, a NAT keepalive keeps the path's mappings open.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// What the suite tells its sealer.
enum SealerUpdate {
    /// Seal with this SA from now on, in place of the one before.
    Activate(OutboundSa),
    /// Stop sealing with the SA of this SPI (deleted with no successor).
    Retire(u32),
}

/// What the sealer tells the suite, published once per round.
#[derive(Debug, Default)]
struct SealerReport {
    /// Whether the sealer sent anything since the suite last looked (keepalive timing).
    sent: AtomicBool,
    /// The SPI the sealer seals with in the high 32 bits, and its sequence numbers left
    /// (capped to `u32::MAX`) in the low 32; 0 when it has no SA (no SA has SPI 0).
    sealing: AtomicU64,
}

impl SealerReport {
    /// The SPI sealed with and its sequence numbers left (at most `u32::MAX`), if any.
    fn sealing(&self) -> Option<(u32, u64)> {
        let word = self.sealing.load(Ordering::Relaxed);
        (word != 0).then(|| ((word >> 32) as u32, word & u64::from(u32::MAX)))
    }
}

/// The sealing half of an [`IpsecSuite`]: ESP with the active outbound SA.
pub struct EspSealer {
    sa: Option<OutboundSa>,
    updates: mpsc::Receiver<SealerUpdate>,
    report: Arc<SealerReport>,
    sent: bool,
}

impl std::fmt::Debug for EspSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EspSealer")
            .field("spi", &self.sa.as_ref().map(OutboundSa::spi))
            .finish_non_exhaustive()
    }
}

impl Seal for EspSealer {
    fn encapsulate(&mut self, inner: &[u8], out: &mut [u8]) -> Action {
        let Some(sa) = &mut self.sa else {
            return Action::Drop(SuiteError::NoSession);
        };
        match sa.seal(inner, out) {
            Ok(len) => {
                self.sent = true;
                Action::SendToPeer { len }
            }
            Err(EspError::BufferTooSmall) => Action::Drop(SuiteError::BufferTooSmall),
            Err(EspError::SequenceExhausted) => Action::Drop(SuiteError::SessionExpired),
            Err(_) => Action::Drop(SuiteError::InvalidInnerPacket),
        }
    }

    fn sync(&mut self) {
        while let Ok(update) = self.updates.try_recv() {
            match update {
                SealerUpdate::Activate(sa) => self.sa = Some(sa),
                SealerUpdate::Retire(spi) => {
                    if self.sa.as_ref().is_some_and(|sa| sa.spi() == spi) {
                        self.sa = None;
                    }
                }
            }
        }
        if std::mem::take(&mut self.sent) {
            self.report.sent.store(true, Ordering::Relaxed);
        }
        let sealing = self.sa.as_ref().map_or(0, |sa| {
            (u64::from(sa.spi()) << 32) | sa.remaining().min(u64::from(u32::MAX))
        });
        self.report.sealing.store(sealing, Ordering::Relaxed);
    }
}

/// An IPsec tunnel to one peer.
pub struct IpsecSuite {
    engine: Engine,
    inbound: Vec<InboundSa>,
    /// Outbound SAs installed but not sealed with yet (the next one, across a rekey).
    standby: Vec<OutboundSa>,
    /// The SPI of the outbound SA handed to the sealer.
    active: Option<u32>,
    active_since: Option<Instant>,
    esp_received: bool,
    /// Whether IKE sent anything since the last tick (ESP is the sealer's to report).
    sent: bool,
    last_sent: Instant,
    rekey_requested: bool,
    to_sealer: mpsc::Sender<SealerUpdate>,
    report: Arc<SealerReport>,
    /// The sealer, while this suite seals on its own thread (until it is split off).
    sealer: Option<EspSealer>,
}

impl std::fmt::Debug for IpsecSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpsecSuite")
            .field("session", &self.session())
            .field("inbound_sas", &self.inbound.len())
            .field("split", &self.sealer.is_none())
            .finish_non_exhaustive()
    }
}

impl IpsecSuite {
    /// A suite for the peer in `config`. Fails only if the system's random number generator
    /// does.
    pub fn new(config: IkeConfig) -> std::io::Result<Self> {
        let now = Instant::now();
        let engine = Engine::new(config, now).map_err(std::io::Error::other)?;
        let (to_sealer, updates) = mpsc::channel();
        let report = Arc::<SealerReport>::default();
        Ok(IpsecSuite {
            engine,
            inbound: Vec::new(),
            standby: Vec::new(),
            active: None,
            active_since: None,
            esp_received: false,
            sent: false,
            last_sent: now,
            rekey_requested: false,
            to_sealer,
            sealer: Some(EspSealer {
                sa: None,
                updates,
                report: Arc::clone(&report),
                sent: false,
            }),
            report,
        })
    }

    /// The IKE engine, for status.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn apply_events(&mut self, now: Instant) {
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::ChildInstalled(child) => {
                    let NewChild {
                        inbound,
                        outbound,
                        activate,
                    } = *child;
                    self.inbound.push(inbound);
                    if activate {
                        self.activate(outbound, now);
                    } else {
                        self.standby.push(outbound);
                    }
                }
                Event::ActivateOutbound { outbound_spi } => {
                    if let Some(i) = self.standby.iter().position(|o| o.spi() == outbound_spi) {
                        let outbound = self.standby.swap_remove(i);
                        self.activate(outbound, now);
                    }
                }
                Event::ChildRemoved {
                    inbound_spi,
                    outbound_spi,
                } => {
                    self.inbound.retain(|sa| sa.spi() != inbound_spi);
                    self.standby.retain(|sa| sa.spi() != outbound_spi);
                    if self.active == Some(outbound_spi) {
                        self.active = None;
                        self.active_since = None;
                        self.tell_sealer(SealerUpdate::Retire(outbound_spi));
                    }
                }
            }
        }
        self.sync_own_sealer();
    }

    fn activate(&mut self, outbound: OutboundSa, now: Instant) {
        self.active = Some(outbound.spi());
        self.active_since = Some(now);
        self.rekey_requested = false;
        self.tell_sealer(SealerUpdate::Activate(outbound));
    }

    /// A sealer that has exited (its thread ended) needs no more keys.
    fn tell_sealer(&self, update: SealerUpdate) {
        let _ = self.to_sealer.send(update);
    }

    /// Brings the sealer this suite still owns up to date (nothing once it is split off).
    fn sync_own_sealer(&mut self) {
        if let Some(sealer) = &mut self.sealer {
            sealer.sync();
        }
    }

    /// Writes the engine's next message (behind the non-ESP marker) to `out`.
    fn next_transmit(&mut self, out: &mut [u8], reply_to: Option<SocketAddr>) -> Action {
        let Some(transmit) = self.engine.poll_transmit() else {
            return Action::Done;
        };
        let len = NON_ESP_MARKER.len() + transmit.bytes.len();
        if out.len() < len {
            tracing::warn!(
                len,
                room = out.len(),
                "IKE message larger than the send buffer; dropped"
            );
            return Action::Drop(SuiteError::BufferTooSmall);
        }
        out[..NON_ESP_MARKER.len()].copy_from_slice(&NON_ESP_MARKER);
        out[NON_ESP_MARKER.len()..len].copy_from_slice(&transmit.bytes);
        self.sent = true;
        if reply_to == Some(transmit.to) {
            Action::ReplyToSender { len }
        } else {
            Action::SendToPeer { len }
        }
    }

    fn open_esp(&mut self, datagram: &[u8], out: &mut [u8]) -> Decapsulated {
        let spi = u32::from_be_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]);
        let Some(sa) = self.inbound.iter_mut().find(|sa| sa.spi() == spi) else {
            return unauthenticated(SuiteError::NoSession);
        };
        match sa.open(datagram, out) {
            Ok(opened) => {
                self.esp_received = true;
                let action = match inner_source(&out[..opened.len]) {
                    Some(source) => Action::Deliver {
                        len: opened.len,
                        source,
                    },
                    None => Action::Drop(SuiteError::InvalidInnerPacket),
                };
                // The SA checked the ICV and the replay window before opening it.
                Decapsulated {
                    action,
                    proof: Proof::Data,
                }
            }
            Err(error) => unauthenticated(match error {
                EspError::Replayed => SuiteError::Replay,
                EspError::TooOld => SuiteError::TooOld,
                EspError::AuthenticationFailed => SuiteError::AuthenticationFailed,
                EspError::BufferTooSmall => SuiteError::BufferTooSmall,
                EspError::BadNextHeader | EspError::InvalidInnerPacket => SuiteError::InvalidInnerPacket,
                _ => SuiteError::Malformed,
            }),
        }
    }
}

fn unauthenticated(error: SuiteError) -> Decapsulated {
    Decapsulated {
        action: Action::Drop(error),
        proof: Proof::None,
    }
}

/// The source address of an inner IPv4 or IPv6 packet (ESP already checked its length).
fn inner_source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

impl Seal for IpsecSuite {
    fn encapsulate(&mut self, inner: &[u8], out: &mut [u8]) -> Action {
        match &mut self.sealer {
            Some(sealer) => sealer.encapsulate(inner, out),
            None => Action::Drop(SuiteError::Protocol),
        }
    }
}

impl TunnelSuite for IpsecSuite {
    type Sealer = EspSealer;

    fn split_sealer(&mut self) -> Option<EspSealer> {
        self.sealer.take()
    }

    fn overhead(&self) -> usize {
        ESP_MAX_OVERHEAD
    }

    /// IKE messages of up to 3000 bytes SHOULD be accepted (RFC 7296 §2): a peer's KE of a
    /// large MODP group, many proposals or CERTREQs exceed a small MTU's datagram.
    fn largest_control_datagram(&self) -> usize {
        IKE_DATAGRAM_MAX
    }

    fn start(&mut self, out: &mut [u8]) -> Action {
        let now = Instant::now();
        self.engine.handle_timeout(now);
        self.apply_events(now);
        self.next_transmit(out, None)
    }

    fn is_handshake(&self, datagram: &[u8]) -> bool {
        matches!(classify(datagram), Datagram::Ike(_))
    }

    fn decapsulate(&mut self, source: SocketAddr, datagram: &[u8], out: &mut [u8]) -> Decapsulated {
        if out.len() < MIN_CONTROL_BUFFER || out.len() < datagram.len() {
            return unauthenticated(SuiteError::BufferTooSmall);
        }
        match classify(datagram) {
            Datagram::Esp(esp) => self.open_esp(esp, out),
            Datagram::Keepalive => Decapsulated {
                action: Action::Done,
                proof: Proof::None,
            },
            Datagram::Malformed => unauthenticated(SuiteError::Malformed),
            Datagram::Ike(message) => {
                let now = Instant::now();
                let result = self.engine.handle(now, source, message);
                self.apply_events(now);
                if let Err(drop) = result {
                    tracing::debug!(from = %source, "IKE message dropped: {drop}");
                    return unauthenticated(match drop {
                        IkeDrop::Wire(_) | IkeDrop::Malformed => SuiteError::Malformed,
                        IkeDrop::Decrypt => SuiteError::AuthenticationFailed,
                        IkeDrop::UnknownSpi => SuiteError::NoSession,
                        IkeDrop::Overloaded => SuiteError::UnderLoad,
                        IkeDrop::MessageId | IkeDrop::Unexpected => SuiteError::Protocol,
                    });
                }
                // Answered to its source; IKE never moves the ESP endpoint (an IKE_SA_INIT
                // proves nothing, and the engine keeps its own idea of the peer's address).
                Decapsulated {
                    action: self.next_transmit(out, Some(source)),
                    proof: Proof::None,
                }
            }
        }
    }

    fn timers(&mut self, out: &mut [u8]) -> Action {
        let now = Instant::now();
        if std::mem::take(&mut self.esp_received) {
            self.engine.peer_alive(now);
        }
        self.sync_own_sealer();
        if std::mem::take(&mut self.sent) | self.report.sent.swap(false, Ordering::Relaxed) {
            self.last_sent = now;
        }
        // The sealer's figures count only once it seals with the SA this suite activated last.
        if let (Some(active), Some((sealing, remaining))) = (self.active, self.report.sealing()) {
            if sealing == active && remaining < REKEY_REMAINING && !self.rekey_requested {
                self.rekey_requested = true;
                self.engine.rekey_child(active, now);
            }
        }
        self.engine.handle_timeout(now);
        self.apply_events(now);
        match self.next_transmit(out, None) {
            Action::Done if self.active.is_some() && now - self.last_sent >= KEEPALIVE_INTERVAL => {
                if out.is_empty() {
                    return Action::Drop(SuiteError::BufferTooSmall);
                }
                out[0] = NAT_KEEPALIVE[0];
                self.last_sent = now;
                Action::SendToPeer { len: 1 }
            }
            action => action,
        }
    }

    fn drain(&mut self, out: &mut [u8]) -> Action {
        self.next_transmit(out, None)
    }

    fn session(&self) -> SessionState {
        let now = Instant::now();
        let stats = self.engine.stats();
        SessionState {
            established: self.active.is_some(),
            last_handshake_age: self.active_since.map(|t| now.saturating_duration_since(t)),
            ike_sa_age: stats.ike_established.map(|t| now.saturating_duration_since(t)),
            rekeys: stats.child_rekeys,
            ike_rekeys: Some(stats.ike_rekeys),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use braid_ipsec::ike::crypto::Secret;
    use braid_ipsec::ike::negotiate::selector_for_prefix;
    use braid_ipsec::ike::wire::Identification;
    use braid_ipsec::proposal::{default_esp_proposals, default_ike_proposals};

    use super::*;

    const ADDRS: [&str; 2] = ["198.19.0.11:4500", "198.19.0.111:4500"];
    const SITES: [&str; 2] = ["198.18.1.0", "198.18.2.0"];

    /// Gateway `me` (0 or 1) of a pair; 0 initiates.
    fn suite(me: usize) -> IpsecSuite {
        let (local, remote) = (me, 1 - me);
        let addr = |i: usize| ADDRS[i].parse::<SocketAddr>().unwrap();
        IpsecSuite::new(IkeConfig {
            local_addr: addr(local),
            remote_addr: addr(remote),
            local_id: Identification::from_ip(addr(local).ip()),
            remote_id: Identification::from_ip(addr(remote).ip()),
            psk: Secret::new(b"correct horse battery staple".to_vec()),
            ike_proposals: default_ike_proposals(),
            esp_proposals: default_esp_proposals(),
            local_ts: vec![selector_for_prefix(SITES[local].parse().unwrap(), 24)],
            remote_ts: vec![selector_for_prefix(SITES[remote].parse().unwrap(), 24)],
            ike_lifetime: Duration::from_secs(4 * 3600),
            child_lifetime: Duration::from_secs(3600),
            liveness: Duration::from_secs(5),
            replay_window: 1024,
            initiate: me == 0,
            preferred: me == 0,
        })
        .unwrap()
    }

    /// Delivers `first`, sent by gateway `from`, and every answer it provokes, until both
    /// gateways are quiet.
    fn exchange(pair: &mut [IpsecSuite; 2], from: usize, first: Action, sent: &[u8]) {
        let mut in_flight = VecDeque::new();
        if let Action::SendToPeer { len } = first {
            in_flight.push_back((1 - from, sent[..len].to_vec()));
        }
        let mut out = [0u8; 4096];
        while let Some((to, datagram)) = in_flight.pop_front() {
            let source = ADDRS[1 - to].parse().unwrap();
            let mut action = pair[to].decapsulate(source, &datagram, &mut out).action;
            while let Action::SendToPeer { len } | Action::ReplyToSender { len } = action {
                in_flight.push_back((1 - to, out[..len].to_vec()));
                action = pair[to].drain(&mut out);
            }
        }
    }

    #[test]
    fn only_esp_that_opens_proves_data_and_only_ike_is_a_handshake() {
        let mut pair = [suite(0), suite(1)];
        let mut out = [0u8; 4096];
        let start = pair[0].start(&mut out);
        assert!(pair[0].is_handshake(&out[..len_of(start)]), "IKE_SA_INIT");
        exchange(&mut pair, 0, start, &out);

        let Action::SendToPeer { len } = pair[0].encapsulate(&inner_packet(), &mut out) else {
            panic!("no ESP")
        };
        let esp = out[..len].to_vec();
        assert!(!pair[1].is_handshake(&esp), "ESP is never rate-limited");
        assert!(!pair[1].is_handshake(&NAT_KEEPALIVE));
        let elsewhere: SocketAddr = "198.18.7.7:4500".parse().unwrap();
        let got = pair[1].decapsulate(elsewhere, &esp, &mut out);
        assert!(matches!(got.action, Action::Deliver { len: 60, .. }), "{got:?}");
        assert_eq!(got.proof, Proof::Data);
        let replayed = pair[1].decapsulate(elsewhere, &esp, &mut out);
        assert_eq!(
            (replayed.action, replayed.proof),
            (Action::Drop(SuiteError::Replay), Proof::None),
            "a replay proves nothing"
        );
    }

    /// Transport data costs no heap allocation on either side once IKE has installed the SAs:
    /// sealed, opened, replayed (refused) and keepalives, a thousand times over.
    #[test]
    fn esp_transport_allocates_nothing() {
        let mut pair = [suite(0), suite(1)];
        let mut out = [0u8; 4096];
        let mut plain = [0u8; 4096];
        let start = pair[0].start(&mut out);
        exchange(&mut pair, 0, start, &out);
        let from = [ADDRS[0].parse().unwrap(), ADDRS[1].parse().unwrap()];
        let inner = inner_packet();
        let (delivered, allocations) = braid_sys::allocations::allocations_during(|| {
            let mut delivered = 0;
            for _ in 0..1000 {
                let Action::SendToPeer { len } = pair[0].encapsulate(&inner, &mut out) else {
                    panic!("no ESP")
                };
                if let Action::Deliver { .. } = pair[1].decapsulate(from[0], &out[..len], &mut plain).action {
                    delivered += 1;
                }
                let replayed = pair[1].decapsulate(from[0], &out[..len], &mut plain);
                assert_eq!(replayed.action, Action::Drop(SuiteError::Replay));
                assert!(!pair[1].is_handshake(&NAT_KEEPALIVE));
            }
            delivered
        });
        assert_eq!(delivered, 1000);
        assert_eq!(allocations, 0, "1000 ESP packets cost {allocations} heap allocations");
    }

    /// An inner IPv4 packet from site 0 to site 1.
    fn inner_packet() -> [u8; 60] {
        let mut inner = [0u8; 60];
        inner[0] = 0x45;
        inner[2..4].copy_from_slice(&60u16.to_be_bytes());
        inner[9] = 17;
        inner[12..16].copy_from_slice(&[198, 18, 1, 5]);
        inner[16..20].copy_from_slice(&[198, 18, 2, 9]);
        inner
    }

    /// The SPI an ESP datagram was sealed with.
    fn spi_of(action: Action, out: &[u8]) -> u32 {
        u32::from_be_bytes(out[..len_of(action)][..4].try_into().unwrap())
    }

    #[test]
    fn a_split_sealer_takes_up_new_keys_at_its_next_sync() {
        let mut pair = [suite(0), suite(1)];
        let mut sealer = pair[0].split_sealer().expect("IPsec splits");
        assert!(pair[0].split_sealer().is_none(), "only once");
        let mut out = [0u8; 4096];
        let inner = inner_packet();
        assert_eq!(
            pair[0].encapsulate(&inner, &mut out),
            Action::Drop(SuiteError::Protocol),
            "a split suite no longer seals"
        );

        let start = pair[0].start(&mut out);
        exchange(&mut pair, 0, start, &out);
        assert!(pair[0].session().established);
        assert_eq!(
            sealer.encapsulate(&inner, &mut out),
            Action::Drop(SuiteError::NoSession),
            "the new SA reaches the sealer at its next sync, not before"
        );
        sealer.sync();
        let sealed = sealer.encapsulate(&inner, &mut out);
        let first_spi = spi_of(sealed, &out);
        assert_eq!(Some(first_spi), pair[0].active);
        let esp = out[..len_of(sealed)].to_vec();
        let got = pair[1].decapsulate(ADDRS[0].parse().unwrap(), &esp, &mut out);
        assert!(matches!(got.action, Action::Deliver { len: 60, .. }), "{got:?}");

        // A CHILD SA rekey: the old SA seals until the sealer syncs, then the new one.
        pair[0].engine.rekey_child(first_spi, Instant::now());
        let rekey = pair[0].timers(&mut out);
        exchange(&mut pair, 0, rekey, &out);
        let new_spi = pair[0].active.unwrap();
        assert_ne!(new_spi, first_spi);
        let sealed = sealer.encapsulate(&inner, &mut out);
        assert_eq!(spi_of(sealed, &out), first_spi, "not synced yet");
        sealer.sync();
        let sealed = sealer.encapsulate(&inner, &mut out);
        assert_eq!(spi_of(sealed, &out), new_spi);
        let esp = out[..len_of(sealed)].to_vec();
        let got = pair[1].decapsulate(ADDRS[0].parse().unwrap(), &esp, &mut out);
        assert!(matches!(got.action, Action::Deliver { len: 60, .. }), "{got:?}");

        // The sealer reports what it seals with and what it sent, for the suite's timers.
        assert_eq!(
            pair[0].report.sealing().map(|(spi, _)| spi),
            Some(new_spi),
            "published at sync"
        );
        assert!(pair[0].report.sent.load(Ordering::Relaxed));
    }

    fn len_of(action: Action) -> usize {
        match action {
            Action::SendToPeer { len } | Action::ReplyToSender { len } => len,
            other => panic!("nothing to send: {other:?}"),
        }
    }

    #[test]
    fn session_reports_sa_ages_and_rekeys() {
        let mut pair = [suite(0), suite(1)];
        let before = pair[0].session();
        assert_eq!(
            (before.established, before.last_handshake_age, before.ike_sa_age),
            (false, None, None)
        );
        assert_eq!((before.rekeys, before.ike_rekeys), (0, Some(0)));

        let mut out = [0u8; 4096];
        let start = pair[0].start(&mut out);
        exchange(&mut pair, 0, start, &out);
        for gateway in &pair {
            let session = gateway.session();
            assert!(session.established, "{session:?}");
            assert!(session.last_handshake_age.unwrap() < Duration::from_secs(5));
            assert!(session.ike_sa_age.unwrap() < Duration::from_secs(5));
            assert_eq!((session.rekeys, session.ike_rekeys), (0, Some(0)), "the first SAs");
        }

        let spi = pair[0].active.unwrap();
        pair[0].engine.rekey_child(spi, Instant::now());
        let rekey = pair[0].timers(&mut out);
        exchange(&mut pair, 0, rekey, &out);
        for gateway in &pair {
            let session = gateway.session();
            assert!(session.established);
            assert_eq!((session.rekeys, session.ike_rekeys), (1, Some(0)), "one CHILD SA rekey");
        }
    }
}
