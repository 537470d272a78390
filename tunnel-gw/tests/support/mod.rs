//! Two gateways on loopback, each wired to a fake demux socket, their WAN sockets joined by a
//! relay that records every datagram crossing the "WAN" and can reorder them, for either
//! tunnel suite.
//!
//! Site A is 198.18.0.0/24 and fd00:a::/64, site B 198.19.0.0/24 and fd00:b::/64 (inner
//! addresses only: nothing is ever sent to them). Gateway A additionally believes it may send
//! from 203.0.113.0/24, which B does not accept: that is how a decrypted packet with a spoofed
//! inner source reaches B.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use braid_core::config::Prefix;
pub use braid_core::config::Suite;
use braid_core::daemon::StopFlag;
use braid_core::keys::PrivateKey;
use braid_core::udp::poll_readable;
use braid_core::wire::geneve::{write_header, GENEVE_HEADER_LEN};
use braid_gw::counters::GatewayCounters;
use braid_gw::datapath::SharedSession;
use braid_gw::settings::{GatewaySettings, TunnelSettings};
use braid_gw::Gateway as BoundGateway;
use braid_ipsec::ike::crypto::Secret;
use braid_ipsec::ike::negotiate::selector_for_prefix;
use braid_ipsec::ike::wire::Identification;
use braid_ipsec::ike::IkeConfig;
use braid_ipsec::proposal::{default_esp_proposals, default_ike_proposals};

pub const PAIR: u16 = 7;
pub const MARKER: &[u8] = b"braid-plaintext-marker";
pub const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
/// Where a stranger sends from: another loopback address than the gateways' (a gateway admits
/// its peer's address to its handshake suite unlimited, so a stranger must not share it).
pub const STRANGER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0);

pub fn prefix(text: &str) -> Prefix {
    text.parse().unwrap()
}

pub struct Gateway {
    pub lan: SocketAddr,
    pub wan: SocketAddr,
    pub counters: GatewayCounters,
    pub session: Arc<SharedSession>,
    /// Data threads the gateway runs (2 when it seals on a thread of its own).
    pub threads: usize,
    thread: JoinHandle<()>,
}

/// Reordering on the relay, A to B, data messages only: every `every`-th data message among
/// the first `until` is held back and released after `overtaken_by` later ones have been
/// forwarded.
#[derive(Clone, Copy, Debug)]
pub struct Reorder {
    pub every: usize,
    pub overtaken_by: usize,
    pub until: usize,
}

/// Whether a WAN datagram carries tunnel data (not a handshake, IKE or keepalive).
fn is_data(suite: Suite, datagram: &[u8]) -> bool {
    match suite {
        Suite::WireGuard => datagram.first() == Some(&4),
        Suite::Ipsec => datagram.len() > 4 && datagram[..4] != [0, 0, 0, 0],
    }
}

/// Copies datagrams between the two gateways' WAN sockets and records each one.
///
/// Once `moved` is raised, B seems to roam: what B sends reaches A from a second socket (a
/// new address for B, as after a NAT rebinding), what A sends there reaches B, and what A
/// still sends to B's old address is lost (the old NAT mapping is gone).
struct Relay {
    facing_a: UdpSocket,
    facing_a_moved: UdpSocket,
    facing_b: UdpSocket,
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    held: Arc<Mutex<usize>>,
    moved: Arc<AtomicBool>,
}

impl Relay {
    fn bind() -> Relay {
        Relay {
            facing_a: UdpSocket::bind(LOOPBACK).unwrap(),
            facing_a_moved: UdpSocket::bind(LOOPBACK).unwrap(),
            facing_b: UdpSocket::bind(LOOPBACK).unwrap(),
            captured: Arc::default(),
            held: Arc::default(),
            moved: Arc::default(),
        }
    }

    fn spawn(
        self,
        gw_a: SocketAddr,
        gw_b: SocketAddr,
        suite: Suite,
        reorder: Option<Reorder>,
        stop: StopFlag,
    ) -> JoinHandle<()> {
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut data_from_a = 0usize;
            // Held datagrams and the count of later data messages after which each goes.
            let mut held: Vec<(usize, Vec<u8>)> = Vec::new();
            while !stop.is_stopped() {
                let sockets = [&self.facing_a, &self.facing_b, &self.facing_a_moved];
                let ready = poll_readable(sockets, Duration::from_millis(50)).unwrap();
                if ready[1] {
                    let (len, _) = self.facing_b.recv_from(&mut buf).unwrap();
                    self.captured.lock().unwrap().push(buf[..len].to_vec());
                    let towards_a = if self.moved.load(Ordering::Relaxed) {
                        &self.facing_a_moved
                    } else {
                        &self.facing_a
                    };
                    towards_a.send_to(&buf[..len], gw_a).unwrap();
                }
                let from_a = match ready {
                    [true, _, _] => &self.facing_a,
                    [_, _, true] => &self.facing_a_moved,
                    _ => continue,
                };
                let (len, _) = from_a.recv_from(&mut buf).unwrap();
                if self.moved.load(Ordering::Relaxed) && std::ptr::eq(from_a, &self.facing_a) {
                    continue;
                }
                let datagram = buf[..len].to_vec();
                self.captured.lock().unwrap().push(datagram.clone());
                if let (Some(r), true) = (reorder, is_data(suite, &datagram)) {
                    data_from_a += 1;
                    if data_from_a.is_multiple_of(r.every) && data_from_a <= r.until {
                        held.push((data_from_a + r.overtaken_by, datagram));
                        *self.held.lock().unwrap() += 1;
                        continue;
                    }
                }
                self.facing_b.send_to(&datagram, gw_b).unwrap();
                while let Some(pos) = held.iter().position(|(at, _)| *at <= data_from_a) {
                    let (_, late) = held.remove(pos);
                    self.facing_b.send_to(&late, gw_b).unwrap();
                }
            }
        })
    }
}

/// How to build the cluster under test.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub suite: Suite,
    /// IPsec only: the anti-replay window of every inbound SA.
    pub replay_window: u32,
    pub reorder: Option<Reorder>,
    /// Both gateways seal on a thread of their own (IPsec only).
    pub seal_thread: bool,
}

impl Options {
    pub fn new(suite: Suite) -> Options {
        Options {
            suite,
            replay_window: braid_ipsec::replay::DEFAULT_REPLAY_WINDOW,
            reorder: None,
            seal_thread: false,
        }
    }
}

/// The cluster under test.
pub struct Lab {
    pub demux_a: UdpSocket,
    pub demux_b: UdpSocket,
    pub a: Gateway,
    pub b: Gateway,
    pub captured: Arc<Mutex<Vec<Vec<u8>>>>,
    /// How many datagrams the relay held back to reorder them.
    pub held: Arc<Mutex<usize>>,
    /// Raise to make B seem to roam (see [`Relay`]); `moved_b` is where A then sees B.
    pub moved: Arc<AtomicBool>,
    pub moved_b: SocketAddr,
    stop: StopFlag,
    relay: JoinHandle<()>,
}

impl Lab {
    pub fn start(suite: Suite) -> Lab {
        Lab::start_with(Options::new(suite))
    }

    pub fn start_with(options: Options) -> Lab {
        let demux_a = UdpSocket::bind(LOOPBACK).unwrap();
        let demux_b = UdpSocket::bind(LOOPBACK).unwrap();
        for demux in [&demux_a, &demux_b] {
            demux.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        }
        let relay = Relay::bind();
        let (key_a, key_b) = (PrivateKey::generate(), PrivateKey::generate());
        let site_a = vec![prefix("198.18.0.0/24"), prefix("fd00:a::/64")];
        let site_b = vec![prefix("198.19.0.0/24"), prefix("fd00:b::/64")];
        let mut a_claims = site_a.clone();
        a_claims.push(prefix("203.0.113.0/24"));
        let stop = StopFlag::new();
        let tunnel_a = tunnel(&options, &key_a, &key_b, &site_a, &site_b, &relay.facing_a, true);
        let tunnel_b = tunnel(&options, &key_b, &key_a, &site_b, &site_a, &relay.facing_b, false);
        let a = spawn_gateway(
            settings(
                tunnel_a,
                a_claims,
                site_b.clone(),
                &demux_a,
                &relay.facing_a,
                options.seal_thread,
            ),
            &stop,
        );
        let b = spawn_gateway(
            settings(tunnel_b, site_b, site_a, &demux_b, &relay.facing_b, options.seal_thread),
            &stop,
        );
        let captured = Arc::clone(&relay.captured);
        let held = Arc::clone(&relay.held);
        let moved = Arc::clone(&relay.moved);
        let moved_b = relay.facing_a_moved.local_addr().unwrap();
        let relay = relay.spawn(a.wan, b.wan, options.suite, options.reorder, stop.clone());
        let lab = Lab {
            demux_a,
            demux_b,
            a,
            b,
            captured,
            held,
            moved,
            moved_b,
            stop,
            relay,
        };
        wait_for("session up on both gateways", || {
            lab.a.session.get().established && lab.b.session.get().established
        });
        lab
    }

    pub fn stop(self) {
        self.stop.stop();
        self.a.thread.join().unwrap();
        self.b.thread.join().unwrap();
        self.relay.join().unwrap();
    }
}

/// The tunnel settings of one side: `preferred` is site A.
fn tunnel(
    options: &Options,
    key: &PrivateKey,
    peer_key: &PrivateKey,
    local: &[Prefix],
    peer: &[Prefix],
    relay: &UdpSocket,
    preferred: bool,
) -> TunnelSettings {
    match options.suite {
        Suite::WireGuard => TunnelSettings::WireGuard {
            private_key: key.clone(),
            peer_public_key: peer_key.public_key(),
        },
        Suite::Ipsec => {
            let id = Identification::from_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let selectors = |p: &[Prefix]| p.iter().map(|p| selector_for_prefix(p.addr, p.len)).collect();
            TunnelSettings::Ipsec(Box::new(IkeConfig {
                local_addr: LOOPBACK,
                remote_addr: relay.local_addr().unwrap(),
                local_id: id.clone(),
                remote_id: id,
                psk: Secret::new(b"two gateways on loopback".to_vec()),
                ike_proposals: default_ike_proposals(),
                esp_proposals: default_esp_proposals(),
                local_ts: selectors(local),
                remote_ts: selectors(peer),
                ike_lifetime: Duration::from_secs(4 * 3600),
                child_lifetime: Duration::from_secs(3600),
                liveness: Duration::from_secs(5),
                replay_window: options.replay_window,
                initiate: true,
                preferred,
            }))
        }
    }
}

fn settings(
    tunnel: TunnelSettings,
    local_prefixes: Vec<Prefix>,
    peer_prefixes: Vec<Prefix>,
    demux: &UdpSocket,
    relay: &UdpSocket,
    seal_thread: bool,
) -> GatewaySettings {
    GatewaySettings {
        pair_id: PAIR,
        local_prefixes,
        peer_prefixes,
        lan_bind: LOOPBACK,
        demux: demux.local_addr().unwrap(),
        wan_bind: LOOPBACK,
        peer_endpoint: relay.local_addr().unwrap(),
        tunnel,
        mtu: 1420,
        batch_size: 16,
        socket_buffer_bytes: 4 << 20,
        seal_thread,
    }
}

fn spawn_gateway(settings: GatewaySettings, stop: &StopFlag) -> Gateway {
    let stop = stop.clone();
    macro_rules! spawn {
        ($datapath:expr) => {{
            let datapath = $datapath;
            Gateway {
                lan: datapath.lan_addr().unwrap(),
                wan: datapath.wan_addr().unwrap(),
                counters: datapath.counters(),
                session: datapath.session(),
                threads: datapath.threads(),
                thread: thread::spawn(move || datapath.run(&stop).unwrap()),
            }
        }};
    }
    match braid_gw::bind(settings).unwrap() {
        BoundGateway::WireGuard(datapath) => spawn!(*datapath),
        BoundGateway::Ipsec(datapath) => spawn!(*datapath),
    }
}

pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

pub fn counter(gateway: &Gateway, name: &str) -> u64 {
    gateway
        .counters
        .get_by_name(name)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// An IPv4/UDP packet from `src` to `dst` whose payload carries [`MARKER`] and `tag`.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, tag: u8) -> Vec<u8> {
    let payload: Vec<u8> = MARKER.iter().copied().chain([tag; 40]).collect();
    ipv4_udp_payload(src, dst, &payload)
}

/// An IPv4/UDP packet from `src` to `dst` with `payload`.
pub fn ipv4_udp_payload(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut packet = vec![0u8; total];
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    packet[8] = 64;
    packet[9] = 17;
    packet[12..16].copy_from_slice(&src.octets());
    packet[16..20].copy_from_slice(&dst.octets());
    let checksum = !ones_complement_sum(&packet[..20]);
    packet[10..12].copy_from_slice(&checksum.to_be_bytes());
    packet[20..22].copy_from_slice(&40000u16.to_be_bytes());
    packet[22..24].copy_from_slice(&5201u16.to_be_bytes());
    packet[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    packet[28..].copy_from_slice(payload);
    packet
}

/// An IPv6/UDP packet from `src` to `dst` carrying [`MARKER`].
pub fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let payload: Vec<u8> = MARKER.iter().copied().chain([6u8; 20]).collect();
    let udp_len = 8 + payload.len();
    let mut packet = vec![0u8; 40 + udp_len];
    packet[0] = 0x60;
    packet[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    packet[6] = 17;
    packet[7] = 64;
    packet[8..24].copy_from_slice(&src.octets());
    packet[24..40].copy_from_slice(&dst.octets());
    packet[44..46].copy_from_slice(&(udp_len as u16).to_be_bytes());
    packet[48..].copy_from_slice(&payload);
    packet
}

fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

pub fn geneve(vni: u16, protocol: u16, inner: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0u8; GENEVE_HEADER_LEN + inner.len()];
    write_header(&mut datagram, u32::from(vni), protocol);
    datagram[GENEVE_HEADER_LEN..].copy_from_slice(inner);
    datagram
}

/// Receives at a fake demux until a datagram arrives or the timeout passes.
pub fn receive(demux: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok((len, from)) = demux.recv_from(&mut buf) {
            return Some((buf[..len].to_vec(), from));
        }
    }
    None
}

/// Sends `inner` through the cluster from `from` to `to` and checks it arrives intact.
pub fn assert_forwarded(
    from: &UdpSocket,
    via: &Gateway,
    to: &UdpSocket,
    out_of: &Gateway,
    protocol: u16,
    inner: &[u8],
) {
    from.send_to(&geneve(PAIR, protocol, inner), via.lan).unwrap();
    let (datagram, source) = receive(to).expect("packet did not come out at the far demux");
    assert_eq!(source, out_of.lan, "GENEVE comes from the far gateway's LAN socket");
    assert_eq!(
        datagram,
        geneve(PAIR, protocol, inner),
        "GENEVE header (VNI, type) and inner packet intact"
    );
}

/// Every WAN datagram is the suite's own kind, and the plaintext marker never shows.
pub fn assert_wan_carries_only(suite: Suite, captured: &[Vec<u8>]) {
    assert!(!captured.is_empty());
    for datagram in captured {
        match suite {
            Suite::WireGuard => {
                assert!((1..=4).contains(&datagram[0]), "message type {}", datagram[0]);
                assert_eq!(&datagram[1..4], &[0, 0, 0], "reserved bytes");
            }
            Suite::Ipsec => {
                let ike = datagram.len() > 4 + 28 && datagram[..4] == [0, 0, 0, 0] && datagram[4 + 17] == 0x20;
                let esp = datagram.len() >= 4 + 4 + 8 + 4 + 16 && datagram[..4] != [0, 0, 0, 0];
                assert!(
                    ike || esp || datagram.as_slice() == [0xff],
                    "not IKE, ESP or a keepalive: {datagram:?}"
                );
            }
        }
        assert!(
            !datagram.windows(MARKER.len()).any(|w| w == MARKER),
            "plaintext visible on the WAN"
        );
    }
}
