//! Two gateways on loopback, each wired to a fake demux socket, their WAN sockets joined by a
//! relay that records every datagram crossing the "WAN".
//!
//! Site A is 198.18.0.0/24 and fd00:a::/64, site B 198.19.0.0/24 and fd00:b::/64 (inner
//! addresses only: nothing is ever sent to them). Gateway A additionally believes it may send
//! from 203.0.113.0/24, which B does not accept: that is how a decrypted packet with a spoofed
//! inner source reaches B.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use braid_core::config::Prefix;
use braid_core::daemon::StopFlag;
use braid_core::keys::PrivateKey;
use braid_core::udp::poll_readable;
use braid_core::wire::geneve::{write_header, ETHERTYPE_IPV4, ETHERTYPE_IPV6, GENEVE_HEADER_LEN};
use braid_gw::counters::GatewayCounters;
use braid_gw::datapath::SharedSession;
use braid_gw::settings::GatewaySettings;

const PAIR: u16 = 7;
const MARKER: &[u8] = b"braid-plaintext-marker";
const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

fn prefix(text: &str) -> Prefix {
    text.parse().unwrap()
}

struct Gateway {
    lan: SocketAddr,
    wan: SocketAddr,
    counters: Arc<GatewayCounters>,
    session: Arc<SharedSession>,
    thread: JoinHandle<()>,
}

/// Copies datagrams between the two gateways' WAN sockets and records each one.
struct Relay {
    facing_a: UdpSocket,
    facing_b: UdpSocket,
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Relay {
    fn bind() -> Relay {
        Relay {
            facing_a: UdpSocket::bind(LOOPBACK).unwrap(),
            facing_b: UdpSocket::bind(LOOPBACK).unwrap(),
            captured: Arc::default(),
        }
    }

    fn spawn(self, gw_a: SocketAddr, gw_b: SocketAddr, stop: StopFlag) -> JoinHandle<()> {
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.is_stopped() {
                let ready = poll_readable([&self.facing_a, &self.facing_b], Duration::from_millis(50)).unwrap();
                for (ready, from, to, dst) in [
                    (ready[0], &self.facing_a, &self.facing_b, gw_b),
                    (ready[1], &self.facing_b, &self.facing_a, gw_a),
                ] {
                    if !ready {
                        continue;
                    }
                    let (len, _) = from.recv_from(&mut buf).unwrap();
                    self.captured.lock().unwrap().push(buf[..len].to_vec());
                    to.send_to(&buf[..len], dst).unwrap();
                }
            }
        })
    }
}

/// The cluster under test.
struct Lab {
    demux_a: UdpSocket,
    demux_b: UdpSocket,
    a: Gateway,
    b: Gateway,
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: StopFlag,
    relay: JoinHandle<()>,
}

impl Lab {
    fn start() -> Lab {
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
        let a = spawn_gateway(
            settings(&key_a, &key_b, a_claims, site_b.clone(), &demux_a, &relay.facing_a),
            &stop,
        );
        let b = spawn_gateway(
            settings(&key_b, &key_a, site_b, site_a, &demux_b, &relay.facing_b),
            &stop,
        );
        let captured = Arc::clone(&relay.captured);
        let relay = relay.spawn(a.wan, b.wan, stop.clone());
        let lab = Lab {
            demux_a,
            demux_b,
            a,
            b,
            captured,
            stop,
            relay,
        };
        wait_for("session up on both gateways", || {
            lab.a.session.get().established && lab.b.session.get().established
        });
        lab
    }

    fn stop(self) {
        self.stop.stop();
        self.a.thread.join().unwrap();
        self.b.thread.join().unwrap();
        self.relay.join().unwrap();
    }
}

fn settings(
    key: &PrivateKey,
    peer_key: &PrivateKey,
    local_prefixes: Vec<Prefix>,
    peer_prefixes: Vec<Prefix>,
    demux: &UdpSocket,
    relay: &UdpSocket,
) -> GatewaySettings {
    GatewaySettings {
        pair_id: PAIR,
        local_prefixes,
        peer_prefixes,
        lan_bind: LOOPBACK,
        demux: demux.local_addr().unwrap(),
        wan_bind: LOOPBACK,
        peer_endpoint: relay.local_addr().unwrap(),
        private_key: key.clone(),
        peer_public_key: peer_key.public_key(),
        mtu: 1420,
        batch_size: 16,
        socket_buffer_bytes: 1 << 20,
    }
}

fn spawn_gateway(settings: GatewaySettings, stop: &StopFlag) -> Gateway {
    let datapath = braid_gw::bind_wireguard(settings).unwrap();
    let stop = stop.clone();
    Gateway {
        lan: datapath.lan_addr().unwrap(),
        wan: datapath.wan_addr().unwrap(),
        counters: datapath.counters(),
        session: datapath.session(),
        thread: thread::spawn(move || datapath.run(&stop).unwrap()),
    }
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn counter(gateway: &Gateway, name: &str) -> u64 {
    gateway
        .counters
        .get_by_name(name)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// An IPv4/UDP packet from `src` to `dst` whose payload carries [`MARKER`] and `tag`.
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, tag: u8) -> Vec<u8> {
    let payload: Vec<u8> = MARKER.iter().copied().chain([tag; 40]).collect();
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
    packet[28..].copy_from_slice(&payload);
    packet
}

/// An IPv6/UDP packet from `src` to `dst` carrying [`MARKER`].
fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
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

fn geneve(vni: u16, protocol: u16, inner: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0u8; GENEVE_HEADER_LEN + inner.len()];
    write_header(&mut datagram, u32::from(vni), protocol);
    datagram[GENEVE_HEADER_LEN..].copy_from_slice(inner);
    datagram
}

/// Receives at a fake demux until a datagram arrives or the timeout passes.
fn receive(demux: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
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
fn assert_forwarded(from: &UdpSocket, via: &Gateway, to: &UdpSocket, out_of: &Gateway, protocol: u16, inner: &[u8]) {
    from.send_to(&geneve(PAIR, protocol, inner), via.lan).unwrap();
    let (datagram, source) = receive(to).expect("packet did not come out at the far demux");
    assert_eq!(source, out_of.lan, "GENEVE comes from the far gateway's LAN socket");
    assert_eq!(
        datagram,
        geneve(PAIR, protocol, inner),
        "GENEVE header (VNI, type) and inner packet intact"
    );
}

fn assert_wan_carries_only_wireguard(captured: &[Vec<u8>]) {
    assert!(!captured.is_empty());
    for datagram in captured {
        assert!((1..=4).contains(&datagram[0]), "message type {}", datagram[0]);
        assert_eq!(&datagram[1..4], &[0, 0, 0], "reserved bytes");
        assert!(
            !datagram.windows(MARKER.len()).any(|w| w == MARKER),
            "plaintext visible on the WAN"
        );
    }
}

#[test]
fn packets_cross_both_ways_encrypted_and_intact() {
    let lab = Lab::start();
    let a_to_b = ipv4_udp(Ipv4Addr::new(198, 18, 0, 5), Ipv4Addr::new(198, 19, 0, 9), 1);
    assert_forwarded(&lab.demux_a, &lab.a, &lab.demux_b, &lab.b, ETHERTYPE_IPV4, &a_to_b);
    let b_to_a = ipv4_udp(Ipv4Addr::new(198, 19, 0, 9), Ipv4Addr::new(198, 18, 0, 5), 2);
    assert_forwarded(&lab.demux_b, &lab.b, &lab.demux_a, &lab.a, ETHERTYPE_IPV4, &b_to_a);
    let v6 = ipv6_udp("fd00:a::5".parse().unwrap(), "fd00:b::9".parse().unwrap());
    assert_forwarded(&lab.demux_a, &lab.a, &lab.demux_b, &lab.b, ETHERTYPE_IPV6, &v6);

    // A burst larger than one batch arrives complete.
    for tag in 0..40u8 {
        lab.demux_a
            .send_to(
                &geneve(
                    PAIR,
                    ETHERTYPE_IPV4,
                    &ipv4_udp(Ipv4Addr::new(198, 18, 0, 5), Ipv4Addr::new(198, 19, 0, 9), tag),
                ),
                lab.a.lan,
            )
            .unwrap();
    }
    let mut tags: Vec<u8> = (0..40)
        .filter_map(|_| receive(&lab.demux_b))
        .map(|(d, _)| *d.last().unwrap())
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..40).collect::<Vec<u8>>());

    assert_wan_carries_only_wireguard(&lab.captured.lock().unwrap());
    assert_eq!(counter(&lab.a, "lan_rx_packets"), 42);
    assert_eq!(counter(&lab.b, "lan_tx_packets"), 42);
    assert_eq!(counter(&lab.a, "wan_endpoint_roamed"), 0);
    assert!(lab.a.session.get().last_handshake_age.is_some());
    lab.stop();
}

#[test]
fn decrypted_packet_with_spoofed_inner_source_is_dropped_and_counted() {
    let lab = Lab::start();
    let spoofed = ipv4_udp(Ipv4Addr::new(203, 0, 113, 5), Ipv4Addr::new(198, 19, 0, 9), 3);
    lab.demux_a
        .send_to(&geneve(PAIR, ETHERTYPE_IPV4, &spoofed), lab.a.lan)
        .unwrap();
    wait_for("B drops the spoofed packet", || {
        counter(&lab.b, "drop_inner_src_not_peer_site") == 1
    });
    assert_eq!(counter(&lab.a, "drop_inner_src_not_local_site"), 0, "A let it through");
    assert!(receive(&lab.demux_b).is_none(), "nothing delivered to B's demux");
    assert_eq!(counter(&lab.b, "lan_tx_packets"), 0);
    lab.stop();
}

/// A small deterministic generator for garbage bytes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = 1 + self.next() as usize % max_len;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn garbage_is_counted_and_traffic_still_flows() {
    let lab = Lab::start();
    let good = ipv4_udp(Ipv4Addr::new(198, 18, 0, 5), Ipv4Addr::new(198, 19, 0, 9), 4);
    let stranger = UdpSocket::bind(LOOPBACK).unwrap();

    // LAN side, each case with its own counter.
    let lan_cases: [(Vec<u8>, &str); 6] = [
        (geneve(PAIR, ETHERTYPE_IPV4, &good)[..5].to_vec(), "drop_truncated"),
        (geneve(PAIR + 1, ETHERTYPE_IPV4, &good), "drop_lan_wrong_vni"),
        (geneve(PAIR, 0x0806, &good), "drop_geneve_unknown_protocol"),
        (geneve(PAIR, ETHERTYPE_IPV6, &good), "drop_bad_ip_version"),
        (geneve(PAIR, ETHERTYPE_IPV4, &good[..30]), "drop_bad_total_length"),
        (
            geneve(
                PAIR,
                ETHERTYPE_IPV4,
                &ipv4_udp(Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 19, 0, 9), 0),
            ),
            "drop_inner_src_not_local_site",
        ),
    ];
    for (datagram, reason) in &lan_cases {
        lab.demux_a.send_to(datagram, lab.a.lan).unwrap();
        wait_for(reason, || counter(&lab.a, reason) == 1);
    }
    stranger
        .send_to(&geneve(PAIR, ETHERTYPE_IPV4, &good), lab.a.lan)
        .unwrap();
    wait_for("unknown LAN source", || counter(&lab.a, "drop_lan_unknown_source") == 1);

    // Random bytes from the demux on the LAN port, from a stranger on the WAN port.
    let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
    let before_wan = counter(&lab.a, "wan_rx_packets");
    for _ in 0..300 {
        lab.demux_a.send_to(&random.bytes(1600), lab.a.lan).unwrap();
        stranger.send_to(&random.bytes(1600), lab.a.wan).unwrap();
        let mut wireguard_shaped = random.bytes(200);
        wireguard_shaped[0] = 1 + (random.next() % 4) as u8;
        let reserved_end = wireguard_shaped.len().min(4);
        wireguard_shaped[1..reserved_end].fill(0);
        stranger.send_to(&wireguard_shaped, lab.a.wan).unwrap();
    }
    wait_for("all garbage received", || {
        counter(&lab.a, "wan_rx_packets") >= before_wan + 600
    });
    // Longer than any WireGuard datagram of this MTU: truncated; the rest fails authentication.
    wait_for("all WAN garbage refused", || {
        counter(&lab.a, "wan_unauthenticated") + counter(&lab.a, "drop_wan_truncated") == 600
    });
    assert!(counter(&lab.a, "drop_wan_truncated") > 0);
    assert_eq!(
        counter(&lab.a, "wan_endpoint_roamed"),
        0,
        "garbage never moves the peer endpoint"
    );
    assert_eq!(counter(&lab.b, "lan_tx_packets"), 0, "no garbage got through");

    // Every LAN datagram was dropped under some reason.
    let lan_received = counter(&lab.a, "lan_rx_packets");
    let json = lab.a.counters.to_json();
    let lan_dropped: u64 = json
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| {
            name.starts_with("drop_")
                && !name.starts_with("drop_wan")
                && !name.starts_with("drop_suite")
                && name.as_str() != "drop_inner_src_not_peer_site"
        })
        .map(|(_, value)| value.as_u64().unwrap())
        .sum();
    assert_eq!(lan_dropped, lan_received);

    // And the pair still works both ways.
    assert_forwarded(&lab.demux_a, &lab.a, &lab.demux_b, &lab.b, ETHERTYPE_IPV4, &good);
    let back = ipv4_udp(Ipv4Addr::new(198, 19, 0, 9), Ipv4Addr::new(198, 18, 0, 5), 5);
    assert_forwarded(&lab.demux_b, &lab.b, &lab.demux_a, &lab.a, ETHERTYPE_IPV4, &back);
    lab.stop();
}
