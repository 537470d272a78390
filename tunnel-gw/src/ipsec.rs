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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use braid_ipsec::esp::{EspError, InboundSa, OutboundSa, ESP_MAX_OVERHEAD};
use braid_ipsec::ike::{Engine, Event, IkeConfig, IkeDrop, NewChild};
use braid_ipsec::port::{classify, Datagram, NAT_KEEPALIVE, NON_ESP_MARKER};

use crate::suite::{Action, Decapsulated, Proof, SessionState, SuiteError, TunnelSuite, MIN_CONTROL_BUFFER};

/// An outbound SA with fewer sequence numbers than this left is rekeyed (2^31 packets: at a
/// million packets a second, half an hour of margin).
const REKEY_REMAINING: u64 = 1 << 31;
/// With nothing sent for this long, a NAT keepalive keeps the path's mappings open.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// An IPsec tunnel to one peer.
pub struct IpsecSuite {
    engine: Engine,
    inbound: Vec<InboundSa>,
    outbound: Vec<OutboundSa>,
    /// Index into `outbound` of the SA we send on.
    active: Option<usize>,
    active_since: Option<Instant>,
    esp_received: bool,
    sent: bool,
    last_sent: Instant,
    rekey_requested: bool,
}

impl std::fmt::Debug for IpsecSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpsecSuite")
            .field("session", &self.session())
            .field("inbound_sas", &self.inbound.len())
            .finish_non_exhaustive()
    }
}

impl IpsecSuite {
    /// A suite for the peer in `config`. Fails only if the system's random number generator
    /// does.
    pub fn new(config: IkeConfig) -> std::io::Result<Self> {
        let now = Instant::now();
        let engine = Engine::new(config, now).map_err(std::io::Error::other)?;
        Ok(IpsecSuite {
            engine,
            inbound: Vec::new(),
            outbound: Vec::new(),
            active: None,
            active_since: None,
            esp_received: false,
            sent: false,
            last_sent: now,
            rekey_requested: false,
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
                    self.outbound.push(outbound);
                    if activate {
                        self.activate(self.outbound.len() - 1, now);
                    }
                }
                Event::ActivateOutbound { outbound_spi } => {
                    if let Some(i) = self.outbound.iter().position(|o| o.spi() == outbound_spi) {
                        self.activate(i, now);
                    }
                }
                Event::ChildRemoved {
                    inbound_spi,
                    outbound_spi,
                } => {
                    self.inbound.retain(|sa| sa.spi() != inbound_spi);
                    let active_spi = self.active.map(|i| self.outbound[i].spi());
                    self.outbound.retain(|sa| sa.spi() != outbound_spi);
                    self.active = active_spi.and_then(|spi| self.outbound.iter().position(|o| o.spi() == spi));
                    if self.active.is_none() {
                        self.active_since = None;
                    }
                }
            }
        }
    }

    fn activate(&mut self, index: usize, now: Instant) {
        self.active = Some(index);
        self.active_since = Some(now);
        self.rekey_requested = false;
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

impl TunnelSuite for IpsecSuite {
    fn overhead(&self) -> usize {
        ESP_MAX_OVERHEAD
    }

    fn start(&mut self, out: &mut [u8]) -> Action {
        let now = Instant::now();
        self.engine.handle_timeout(now);
        self.apply_events(now);
        self.next_transmit(out, None)
    }

    fn encapsulate(&mut self, inner: &[u8], out: &mut [u8]) -> Action {
        let Some(index) = self.active else {
            return Action::Drop(SuiteError::NoSession);
        };
        let sa = &mut self.outbound[index];
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
        if std::mem::take(&mut self.sent) {
            self.last_sent = now;
        }
        if let Some(index) = self.active {
            let sa = &self.outbound[index];
            if sa.remaining() < REKEY_REMAINING && !self.rekey_requested {
                self.rekey_requested = true;
                self.engine.rekey_child(sa.spi(), now);
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

        let mut inner = [0u8; 60];
        inner[0] = 0x45;
        inner[2..4].copy_from_slice(&60u16.to_be_bytes());
        inner[9] = 17;
        inner[12..16].copy_from_slice(&[198, 18, 1, 5]);
        inner[16..20].copy_from_slice(&[198, 18, 2, 9]);
        let Action::SendToPeer { len } = pair[0].encapsulate(&inner, &mut out) else {
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

        let spi = pair[0].outbound[pair[0].active.unwrap()].spi();
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
