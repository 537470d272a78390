//! Two engines over a simulated network, with a simulated clock (the quinn `Pair` style):
//! setup in both roles, rekeys under traffic, lost messages, restarts, wrong keys, floods.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::crypto::Secret;
use super::negotiate::selector_for_prefix;
use super::wire::{exchange, Identification};
use super::{Engine, Event, IkeConfig, NewChild, Transmit};
use crate::esp::{InboundSa, OutboundSa};
use crate::proposal::{default_esp_proposals, default_ike_proposals, EspProposal, IkeProposal};

const A: &str = "198.19.0.11:4500";
const B: &str = "198.19.0.111:4500";

fn config(local: &str, remote: &str, initiate: bool, preferred: bool) -> IkeConfig {
    let (local_addr, remote_addr): (SocketAddr, SocketAddr) = (local.parse().unwrap(), remote.parse().unwrap());
    let site = |addr: SocketAddr| {
        if addr == A.parse().unwrap() {
            "198.18.1.0"
        } else {
            "198.18.2.0"
        }
    };
    IkeConfig {
        local_addr,
        remote_addr,
        local_id: Identification::from_ip(local_addr.ip()),
        remote_id: Identification::from_ip(remote_addr.ip()),
        psk: Secret::new(b"correct horse battery staple".to_vec()),
        ike_proposals: default_ike_proposals(),
        esp_proposals: default_esp_proposals(),
        local_ts: vec![selector_for_prefix(site(local_addr).parse().unwrap(), 24)],
        remote_ts: vec![selector_for_prefix(site(remote_addr).parse().unwrap(), 24)],
        ike_lifetime: Duration::from_secs(4 * 3600),
        child_lifetime: Duration::from_secs(3600),
        liveness: Duration::from_secs(5),
        replay_window: 1024,
        initiate,
        preferred,
    }
}

/// One side's data path: the ESP SAs the engine's events installed.
#[derive(Default)]
struct DataPath {
    inbound: Vec<InboundSa>,
    outbound: Vec<OutboundSa>,
    active: Option<u32>,
    installed: usize,
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
                self.installed += 1;
            }
            Event::ActivateOutbound { outbound_spi } => {
                assert!(
                    self.outbound.iter().any(|o| o.spi() == outbound_spi),
                    "activating an unknown SA"
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

    fn seal(&mut self, inner: &[u8]) -> Option<Vec<u8>> {
        let spi = self.active?;
        let sa = self.outbound.iter_mut().find(|o| o.spi() == spi)?;
        let mut out = vec![0; inner.len() + 64];
        let len = sa.seal(inner, &mut out).ok()?;
        out.truncate(len);
        Some(out)
    }

    fn open(&mut self, datagram: &[u8]) -> bool {
        let spi = u32::from_be_bytes(datagram[..4].try_into().unwrap());
        let Some(sa) = self.inbound.iter_mut().find(|i| i.spi() == spi) else {
            return false;
        };
        let mut out = vec![0; datagram.len()];
        sa.open(datagram, &mut out).is_ok()
    }
}

/// A small IPv4 packet from `src`.
fn ipv4_packet(src: [u8; 4], marker: u8) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&[198, 18, 2, 1]);
    p.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, marker]);
    p
}

/// Decides per message whether the network delivers it: (sent by a?, message) -> deliver.
type Filter = Box<dyn FnMut(bool, &Transmit) -> bool>;

struct Pair {
    now: Instant,
    a: Engine,
    b: Engine,
    a_path: DataPath,
    b_path: DataPath,
    filter: Filter,
    delivered: Vec<(bool, Vec<u8>)>,
    /// Where b's messages seem to come from (B, until a NAT in front of b rebinds).
    b_from: SocketAddr,
    /// Where a sent each of its messages, and whether it was a request.
    a_sent: Vec<(SocketAddr, bool)>,
}

impl Pair {
    fn new(a: IkeConfig, b: IkeConfig) -> Pair {
        let now = Instant::now();
        Pair {
            now,
            a: Engine::new(a, now).unwrap(),
            b: Engine::new(b, now).unwrap(),
            a_path: DataPath::default(),
            b_path: DataPath::default(),
            filter: Box::new(|_, _| true),
            delivered: Vec::new(),
            b_from: B.parse().unwrap(),
            a_sent: Vec::new(),
        }
    }

    /// The default pair: both initiate, a is preferred.
    fn default_pair() -> Pair {
        Pair::new(config(A, B, true, true), config(B, A, true, false))
    }

    /// Delivers messages (each send goes to the other engine) until both are quiet.
    fn drive(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(event) = self.a.poll_event() {
                self.a_path.apply(event);
            }
            while let Some(event) = self.b.poll_event() {
                self.b_path.apply(event);
            }
            if let Some(t) = self.a.poll_transmit() {
                moved = true;
                if (self.filter)(true, &t) {
                    // Every message of a's goes to b, wherever b seems to be.
                    assert!(t.to == B.parse().unwrap() || t.to == self.b_from, "{}", t.to);
                    let request = t.bytes.len() > 19 && t.bytes[19] & 0x20 == 0;
                    self.a_sent.push((t.to, request));
                    self.delivered.push((true, t.bytes.clone()));
                    let _ = self.b.handle(self.now, A.parse().unwrap(), &t.bytes);
                }
            }
            if let Some(t) = self.b.poll_transmit() {
                moved = true;
                if (self.filter)(false, &t) {
                    self.delivered.push((false, t.bytes.clone()));
                    let _ = self.a.handle(self.now, self.b_from, &t.bytes);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the engines never went quiet");
    }

    /// Lets `d` pass in steps of 100 ms, driving timers and the network.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(100);
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            self.drive();
        }
    }

    fn established(&self) -> bool {
        self.a_path.active.is_some() && self.b_path.active.is_some()
    }

    /// One packet each way; true if both opened.
    fn exchange_esp(&mut self, marker: u8) -> bool {
        let a_to_b = self.a_path.seal(&ipv4_packet([198, 18, 1, 2], marker));
        let b_to_a = self.b_path.seal(&ipv4_packet([198, 18, 2, 2], marker));
        let ok_b = a_to_b.is_some_and(|d| self.b_path.open(&d));
        let ok_a = b_to_a.is_some_and(|d| self.a_path.open(&d));
        if ok_b {
            self.b.peer_alive(self.now);
        }
        if ok_a {
            self.a.peer_alive(self.now);
        }
        ok_a && ok_b
    }

    /// Runs for `d` with a packet each way every 100 ms; returns how many failed to open.
    fn traffic_for(&mut self, d: Duration) -> usize {
        let mut failed = 0;
        let end = self.now + d;
        let mut marker = 0u8;
        while self.now < end {
            self.advance(Duration::from_millis(100));
            marker = marker.wrapping_add(1);
            if !self.exchange_esp(marker) {
                failed += 1;
            }
        }
        failed
    }

    fn exchanges_of(&self, kind: u8) -> usize {
        self.delivered
            .iter()
            .filter(|(_, m)| m.len() > 18 && m[18] == kind)
            .count()
    }
}

#[test]
fn both_sides_initiating_settle_on_one_ike_sa() {
    let mut pair = Pair::default_pair();
    pair.advance(Duration::from_millis(200));
    assert!(pair.established());
    assert!(pair.exchange_esp(1));
    assert_eq!(pair.a.stats().ike_setups, 1);
    assert_eq!(pair.b.stats().ike_setups, 1);
    assert_eq!(pair.a_path.installed, 1);
    assert_eq!(pair.b_path.installed, 1);
    assert_eq!(pair.exchanges_of(exchange::IKE_AUTH), 2, "one IKE_AUTH exchange");
}

#[test]
fn a_responder_only_side_answers() {
    for (a_initiates, b_initiates) in [(true, false), (false, true)] {
        let mut pair = Pair::new(config(A, B, a_initiates, true), config(B, A, b_initiates, false));
        pair.advance(Duration::from_millis(200));
        assert!(pair.established(), "a initiates {a_initiates}");
        assert!(pair.exchange_esp(1));
    }
}

#[test]
fn every_suite_combination_establishes() {
    for ike in ["aes256gcm16-prfsha256-x25519", "chacha20poly1305-prfsha256-ecp256"] {
        for esp in ["aes256gcm16", "chacha20poly1305-esn"] {
            let ike: IkeProposal = ike.parse().unwrap();
            let esp: EspProposal = esp.parse().unwrap();
            let (mut a, mut b) = (config(A, B, true, true), config(B, A, false, false));
            a.ike_proposals = vec![ike];
            b.ike_proposals = vec![ike];
            a.esp_proposals = vec![esp];
            b.esp_proposals = vec![esp];
            let mut pair = Pair::new(a, b);
            pair.advance(Duration::from_millis(200));
            assert!(pair.exchange_esp(1), "{ike} / {esp}");
        }
    }
}

#[test]
fn invalid_ke_payload_makes_the_initiator_switch_groups() {
    let (mut a, mut b) = (config(A, B, true, true), config(B, A, false, false));
    a.ike_proposals = default_ike_proposals(); // x25519 first, P-256 second
    b.ike_proposals = vec!["aes256gcm16-prfsha256-ecp256".parse().unwrap()];
    let mut pair = Pair::new(a, b);
    pair.advance(Duration::from_millis(300));
    assert!(pair.exchange_esp(1));
    assert_eq!(pair.exchanges_of(exchange::IKE_SA_INIT), 4, "one refused, one accepted");
}

#[test]
fn lost_messages_are_retransmitted() {
    let mut pair = Pair::new(config(A, B, true, true), config(B, A, false, false));
    // Every message is lost the first time it is sent, requests and responses alike.
    let mut seen = std::collections::HashSet::new();
    pair.filter = Box::new(move |_, t| !seen.insert(t.bytes.clone()));
    pair.advance(Duration::from_secs(10));
    assert!(pair.established());
    assert!(pair.exchange_esp(1));
}

#[test]
fn a_wrong_psk_is_refused_and_counted() {
    let (a, mut b) = (config(A, B, true, true), config(B, A, false, false));
    b.psk = Secret::new(b"another key".to_vec());
    let mut pair = Pair::new(a, b);
    pair.advance(Duration::from_secs(2));
    assert!(!pair.established());
    assert!(pair.a_path.active.is_none() && pair.b_path.active.is_none());
    assert_eq!(pair.b.stats().auth_failures, 1);
    assert_eq!(
        pair.a.stats().auth_failures,
        1,
        "the initiator sees AUTHENTICATION_FAILED"
    );
}

#[test]
fn a_wrong_identity_is_refused() {
    let (a, mut b) = (config(A, B, true, true), config(B, A, false, false));
    b.remote_id = Identification::from_ip("198.19.0.99".parse::<IpAddr>().unwrap());
    let mut pair = Pair::new(a, b);
    pair.advance(Duration::from_secs(1));
    assert!(!pair.established());
    assert_eq!(pair.b.stats().auth_failures, 1);
}

#[test]
fn mismatched_proposals_are_refused_and_counted() {
    let (mut a, mut b) = (config(A, B, true, true), config(B, A, false, false));
    a.ike_proposals = vec!["chacha20poly1305-prfsha256-x25519".parse().unwrap()];
    b.ike_proposals = vec!["aes256gcm16-prfsha256-x25519".parse().unwrap()];
    let mut pair = Pair::new(a, b);
    pair.advance(Duration::from_secs(1));
    assert!(!pair.established());
    assert_eq!(pair.b.stats().negotiation_failures, 1);
    assert_eq!(pair.a.stats().negotiation_failures, 1);

    let (mut a, mut b) = (config(A, B, true, true), config(B, A, false, false));
    a.esp_proposals = vec!["chacha20poly1305".parse().unwrap()];
    b.esp_proposals = vec!["aes256gcm16".parse().unwrap()];
    let mut pair = Pair::new(a, b);
    pair.advance(Duration::from_secs(1));
    assert!(!pair.established(), "no CHILD SA without a common ESP proposal");
    assert!(pair.b.stats().negotiation_failures >= 1);
}

#[test]
fn disjoint_traffic_selectors_are_refused() {
    let (a, mut b) = (config(A, B, true, true), config(B, A, false, false));
    b.remote_ts = vec![selector_for_prefix("198.18.99.0".parse().unwrap(), 24)];
    let mut pair = Pair::new(a, b);
    pair.advance(Duration::from_secs(1));
    assert!(!pair.established());
    assert!(pair.b.stats().negotiation_failures >= 1);
}

#[test]
fn child_sas_rekey_under_traffic_without_loss() {
    let (mut a, mut b) = (config(A, B, true, true), config(B, A, true, false));
    a.child_lifetime = Duration::from_secs(10);
    b.child_lifetime = Duration::from_secs(10);
    let mut pair = Pair::new(a, b);
    pair.advance(Duration::from_millis(200));
    let first = pair.a_path.active;
    let failed = pair.traffic_for(Duration::from_secs(60));
    assert_eq!(failed, 0, "no packet lost across rekeys");
    let rekeys = pair.a.stats().child_rekeys;
    assert!(rekeys >= 5, "rekeyed {rekeys} times in 60 s with a 10 s lifetime");
    assert_ne!(pair.a_path.active, first);
    assert!(pair.a_path.inbound.len() <= 2, "old SAs are removed after lingering");
    assert_eq!(pair.a.stats().ike_setups, 1, "no new IKE SA was needed");
}

#[test]
fn ike_sa_rekeys_under_traffic_without_loss() {
    let (mut a, mut b) = (config(A, B, true, true), config(B, A, true, false));
    a.ike_lifetime = Duration::from_secs(20);
    b.ike_lifetime = Duration::from_secs(20);
    a.child_lifetime = Duration::from_secs(7);
    b.child_lifetime = Duration::from_secs(7);
    let mut pair = Pair::new(a, b);
    pair.advance(Duration::from_millis(200));
    let failed = pair.traffic_for(Duration::from_secs(90));
    assert_eq!(failed, 0);
    assert!(pair.a.stats().ike_rekeys + pair.b.stats().ike_rekeys >= 4);
    assert!(pair.a.stats().child_rekeys >= 8);
    assert_eq!(pair.a.ike_sa_count(), 1, "retired IKE SAs are gone");
    assert_eq!(pair.b.ike_sa_count(), 1);
    assert_eq!(pair.a.stats().ike_setups, 1);
}

#[test]
fn the_non_preferred_side_rekeys_when_the_preferred_side_does_not() {
    // Only b's lifetimes are short: b starts every rekey, a answers.
    let (a, mut b) = (config(A, B, true, true), config(B, A, true, false));
    b.child_lifetime = Duration::from_secs(10);
    b.ike_lifetime = Duration::from_secs(30);
    let mut pair = Pair::new(a, b);
    pair.advance(Duration::from_millis(200));
    assert_eq!(pair.traffic_for(Duration::from_secs(70)), 0);
    assert!(pair.b.stats().child_rekeys >= 3);
    assert!(pair.b.stats().ike_rekeys >= 2);
}

#[test]
fn a_restarted_peer_is_recovered_from_at_once() {
    for restart_a in [false, true] {
        let mut pair = Pair::default_pair();
        pair.advance(Duration::from_millis(200));
        assert!(pair.exchange_esp(1));
        // The restarted side comes back with no state at all.
        if restart_a {
            pair.a = Engine::new(config(A, B, true, true), pair.now).unwrap();
            pair.a_path = DataPath::default();
        } else {
            pair.b = Engine::new(config(B, A, true, false), pair.now).unwrap();
            pair.b_path = DataPath::default();
        }
        pair.advance(Duration::from_millis(200));
        assert!(pair.exchange_esp(2), "restart of a: {restart_a}");
        assert_eq!(pair.a_path.inbound.len().min(pair.b_path.inbound.len()), 1);
        // The old SAs are forgotten, not kept forever.
        pair.advance(Duration::from_secs(5));
        assert_eq!(pair.a_path.inbound.len(), 1);
        assert_eq!(pair.b_path.inbound.len(), 1);
    }
}

#[test]
fn a_dead_peer_is_detected_and_its_sas_removed() {
    let mut pair = Pair::default_pair();
    pair.advance(Duration::from_millis(200));
    assert!(pair.exchange_esp(1));
    pair.filter = Box::new(|from_a, _| from_a);
    pair.advance(Duration::from_secs(30));
    assert!(pair.a_path.active.is_none(), "a gave up on b");
    assert!(pair.a.stats().peer_timeouts >= 1);
    // b comes back: a is initiating again and everything recovers.
    pair.filter = Box::new(|_, _| true);
    pair.advance(Duration::from_secs(6));
    assert!(pair.exchange_esp(2));
}

#[test]
fn liveness_checks_keep_an_idle_sa_and_cost_one_exchange_per_interval() {
    let mut pair = Pair::default_pair();
    pair.advance(Duration::from_millis(200));
    let before = pair.exchanges_of(exchange::INFORMATIONAL);
    pair.advance(Duration::from_secs(30));
    let checks = pair.exchanges_of(exchange::INFORMATIONAL) - before;
    assert!((6..=24).contains(&checks), "{checks} INFORMATIONAL messages in 30 s");
    assert!(pair.exchange_esp(1));
}

#[test]
fn an_init_flood_gets_cookies_and_the_real_peer_still_gets_in() {
    let mut pair = Pair::new(config(A, B, true, true), config(B, A, false, false));
    // Flood b with IKE_SA_INITs from many sources, as a copy of a's first message.
    pair.a.handle_timeout(pair.now);
    let first = pair.a.poll_transmit().unwrap();
    for i in 0..200u32 {
        let from: SocketAddr = format!("198.18.200.{}:4500", i % 250).parse().unwrap();
        let mut forged = first.bytes.clone();
        forged[..8].copy_from_slice(&u64::from(i + 1).to_be_bytes());
        let _ = pair.b.handle(pair.now, from, &forged);
    }
    assert!(pair.b.stats().cookies_sent > 150);
    assert!(
        pair.b.ike_sa_count() <= super::engine::MAX_HALF_OPEN,
        "half-open state is bounded"
    );
    while pair.b.poll_transmit().is_some() {}
    // a retransmits its request; b demands a cookie; a retries with it and gets in.
    pair.advance(Duration::from_secs(3));
    assert!(pair.established());
    assert!(pair.exchange_esp(1));
}

#[test]
fn garbage_never_panics_or_changes_state() {
    let mut pair = Pair::default_pair();
    pair.advance(Duration::from_millis(200));
    let messages: Vec<Vec<u8>> = pair.delivered.iter().map(|(_, m)| m.clone()).collect();
    let from: SocketAddr = B.parse().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for m in &messages {
        for cut in 0..m.len() {
            let _ = pair.a.handle(pair.now, from, &m[..cut]);
        }
        for i in 0..m.len() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bad = m.clone();
            bad[i] ^= (seed as u8) | 1;
            let _ = pair.a.handle(pair.now, from, &bad);
        }
    }
    while let Some(event) = pair.a.poll_event() {
        pair.a_path.apply(event);
    }
    while pair.a.poll_transmit().is_some() {}
    assert!(pair.exchange_esp(7), "the SA survived the garbage");
    assert_eq!(pair.a.stats().ike_setups, 1);
}

/// An IKE_SA_INIT request as a forger would send it: a copy of a real first message with an
/// SPI of its own.
fn forged_init(template: &[u8], spi: u64) -> Vec<u8> {
    let mut forged = template.to_vec();
    forged[..8].copy_from_slice(&spi.to_be_bytes());
    forged
}

#[test]
fn a_forged_ike_sa_init_cannot_cancel_our_initiation() {
    // a initiates and is not the preferred side; b only answers.
    let mut pair = Pair::new(config(A, B, true, false), config(B, A, false, true));
    pair.a.handle_timeout(pair.now);
    let first = pair.a.poll_transmit().unwrap();
    // A forger, even one using b's own address, sends a an IKE_SA_INIT before b answers.
    let _ = pair
        .a
        .handle(pair.now, B.parse().unwrap(), &forged_init(&first.bytes, 0xf0f0));
    assert_eq!(pair.a.ike_sa_count(), 0, "no half-open SA without a cookie");
    assert_eq!(pair.a.stats().cookies_sent, 1);
    // b's answer to the retransmitted request sets the SA up: a's attempt was not abandoned.
    pair.advance(Duration::from_secs(2));
    assert!(pair.established());
    assert!(pair.exchange_esp(1));
}

#[test]
fn a_half_open_sa_does_not_hold_initiation_back() {
    let mut pair = Pair::new(config(A, B, true, true), config(B, A, false, false));
    // Before a's first attempt, a stranger's IKE_SA_INIT leaves a half-open SA at a.
    let template = {
        let mut b_side = Engine::new(config(B, A, true, false), pair.now).unwrap();
        b_side.handle_timeout(pair.now);
        b_side.poll_transmit().unwrap().bytes
    };
    let stranger: SocketAddr = "198.18.200.7:4500".parse().unwrap();
    let _ = pair.a.handle(pair.now, stranger, &forged_init(&template, 0x0bad));
    assert_eq!(pair.a.ike_sa_count(), 1, "the stranger's half-open SA");
    while pair.a.poll_transmit().is_some() {}
    // a initiates all the same, well before the half-open SA would time out.
    pair.advance(Duration::from_secs(1));
    assert!(pair.established());
    assert!(pair.exchange_esp(1));
}

#[test]
fn our_nat_detection_always_shows_a_nat_so_the_peer_encapsulates_esp() {
    use super::crypto::nat_detection_hash;
    use super::engine::Payloads;
    use super::wire::{notify_type, parse_message, Body};
    let mut pair = Pair::default_pair();
    pair.a.handle_timeout(pair.now);
    let request = pair.a.poll_transmit().unwrap().bytes;
    let message = parse_message(&request).unwrap();
    let Body::Plain(payloads) = message.body else {
        panic!("IKE_SA_INIT is not encrypted")
    };
    let spi_i = message.header.spi_i;
    let source = payloads.notify(notify_type::NAT_DETECTION_SOURCE_IP).unwrap();
    let destination = payloads.notify(notify_type::NAT_DETECTION_DESTINATION_IP).unwrap();
    assert_ne!(
        source.data,
        nat_detection_hash(spi_i, 0, A.parse().unwrap()),
        "never our real source"
    );
    assert_eq!(destination.data, nat_detection_hash(spi_i, 0, B.parse().unwrap()));
    // Both sides see a NAT and still set up (the request above was taken off the wire, so
    // a's retransmission or b's own request does it).
    pair.advance(Duration::from_secs(3));
    assert!(pair.established());
}

fn esp(proposals: &[&str]) -> Vec<EspProposal> {
    proposals.iter().map(|p| p.parse().unwrap()).collect()
}

/// CHILD SA rekeys with a DH exchange (PFS), as cloud VPN gateways require: a request with no
/// KE or an answer with none is refused, so every counted rekey here ran one.
#[test]
fn child_sas_rekey_with_pfs_and_settle_on_the_group_the_responder_wants() {
    for (a_esp, b_esp) in [
        (
            &["aes256gcm16-ecp256-esn-noesn"][..],
            &["aes256gcm16-ecp256-esn-noesn"][..],
        ),
        // a sends an X25519 KE first; b wants ECP-256 (INVALID_KE_PAYLOAD) and a switches.
        (
            &["aes256gcm16-x25519-esn-noesn", "aes256gcm16-ecp256-esn-noesn"][..],
            &["aes256gcm16-ecp256-esn-noesn"][..],
        ),
    ] {
        let (mut a, mut b) = (config(A, B, true, true), config(B, A, true, false));
        (a.esp_proposals, b.esp_proposals) = (esp(a_esp), esp(b_esp));
        a.child_lifetime = Duration::from_secs(10);
        b.child_lifetime = Duration::from_secs(10);
        let mut pair = Pair::new(a, b);
        pair.advance(Duration::from_millis(200));
        assert!(pair.established(), "{a_esp:?} / {b_esp:?}");
        let failed = pair.traffic_for(Duration::from_secs(60));
        assert_eq!(failed, 0, "no packet lost across PFS rekeys: {a_esp:?} / {b_esp:?}");
        let rekeys = pair.a.stats().child_rekeys;
        assert!(rekeys >= 5, "rekeyed {rekeys} times in 60 s: {a_esp:?} / {b_esp:?}");
        assert_eq!(pair.a.stats().ike_setups, 1);
    }
}

#[test]
fn a_rekey_without_the_pfs_the_responder_requires_is_refused() {
    let (mut a, mut b) = (config(A, B, true, true), config(B, A, false, false));
    (a.esp_proposals, b.esp_proposals) = (esp(&["aes256gcm16"]), esp(&["aes256gcm16-ecp256"]));
    a.child_lifetime = Duration::from_secs(10);
    b.child_lifetime = Duration::from_secs(3600);
    let mut pair = Pair::new(a, b);
    pair.advance(Duration::from_millis(200));
    assert!(
        pair.established(),
        "IKE_AUTH carries no KE: the first CHILD SA comes up"
    );
    let first = pair.a_path.active;
    pair.advance(Duration::from_secs(20));
    assert_eq!(pair.a.stats().child_rekeys, 0, "every attempt refused");
    assert_eq!(pair.a_path.active, first);
    assert!(pair.b.stats().negotiation_failures >= 1);
}

/// A peer that deletes its only CHILD SA without replacing it (by hand, an idle timeout, a
/// hard lifetime after failed rekeys) leaves the IKE SA up with nothing to send on: a new
/// CHILD SA is made, whichever side deleted, and traffic flows again.
#[test]
fn a_child_sa_deleted_without_a_replacement_is_made_again() {
    for a_deletes in [true, false] {
        let mut pair = Pair::default_pair();
        pair.advance(Duration::from_millis(200));
        assert!(pair.exchange_esp(1));
        let now = pair.now;
        if a_deletes {
            let inbound = pair.a_path.inbound[0].spi();
            pair.a.delete_child(inbound, now);
        } else {
            let inbound = pair.b_path.inbound[0].spi();
            pair.b.delete_child(inbound, now);
        }
        pair.drive();
        pair.advance(Duration::from_secs(8));
        assert!(pair.exchange_esp(2), "a deletes: {a_deletes}");
        assert_eq!(
            (pair.a_path.installed, pair.b_path.installed),
            (2, 2),
            "a deletes: {a_deletes}"
        );
        assert_eq!((pair.a_path.inbound.len(), pair.b_path.inbound.len()), (1, 1));
        assert_eq!(pair.a.stats().ike_setups, 1, "the IKE SA stayed");
        // And it stays at one CHILD SA.
        pair.advance(Duration::from_secs(10));
        assert_eq!((pair.a_path.installed, pair.b_path.installed), (2, 2));
    }
}

/// A NAT in front of b rebinds while the tunnel idles: b's next authenticated IKE message
/// comes from a new port, and a's own requests (liveness checks, rekeys) follow it there
/// (RFC 7296 §2.23) instead of going to the stale binding until the SA dies.
#[test]
fn ike_requests_follow_the_peer_to_a_new_address() {
    let mut pair = Pair::default_pair();
    pair.advance(Duration::from_millis(200));
    assert!(pair.exchange_esp(1));
    pair.b_from = "198.19.0.111:40123".parse().unwrap();
    pair.a_sent.clear();
    pair.advance(Duration::from_secs(16));
    let requests: Vec<SocketAddr> = pair.a_sent.iter().filter(|(_, r)| *r).map(|(to, _)| *to).collect();
    assert!(requests.len() >= 2, "liveness checks: {requests:?}");
    assert_eq!(requests.last(), Some(&pair.b_from), "{requests:?}");
    assert!(pair.exchange_esp(2));
    assert_eq!(pair.a.stats().ike_setups, 1, "the same IKE SA throughout");
}
