//! Two gateways on loopback (see [`support`]) for each suite: packets cross both ways
//! encrypted and intact, spoofed inner sources are dropped, garbage on every port is counted
//! and changes nothing.

mod support;

use std::net::{Ipv4Addr, UdpSocket};

use braid_core::wire::geneve::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use support::*;

#[test]
fn packets_cross_both_ways_encrypted_and_intact() {
    for suite in Suite::ALL {
        packets_cross_both_ways(Options::new(suite));
    }
}

#[test]
fn ipsec_gateways_sealing_on_threads_of_their_own_carry_both_ways_and_follow_a_roaming_peer() {
    let options = Options {
        seal_thread: true,
        ..Options::new(Suite::Ipsec)
    };
    packets_cross_both_ways(options);

    let lab = Lab::start_with(options);
    assert_eq!((lab.a.threads, lab.b.threads), (2, 2));
    let a_to_b = ipv4_udp(Ipv4Addr::new(198, 18, 0, 5), Ipv4Addr::new(198, 19, 0, 9), 1);
    assert_forwarded(&lab.demux_a, &lab.a, &lab.demux_b, &lab.b, ETHERTYPE_IPV4, &a_to_b);
    // B seems to move: its ESP reaches A from a new address, and A's datagrams to the old one
    // are lost from now on.
    lab.moved.store(true, std::sync::atomic::Ordering::Relaxed);
    let b_to_a = ipv4_udp(Ipv4Addr::new(198, 19, 0, 9), Ipv4Addr::new(198, 18, 0, 5), 2);
    assert_forwarded(&lab.demux_b, &lab.b, &lab.demux_a, &lab.a, ETHERTYPE_IPV4, &b_to_a);
    wait_for("A follows B to its new address", || {
        counter(&lab.a, "wan_endpoint_roamed") == 1
    });
    // A's sealing thread now sends to B's new address: only there does anything reach B.
    let a_to_b = ipv4_udp(Ipv4Addr::new(198, 18, 0, 5), Ipv4Addr::new(198, 19, 0, 9), 3);
    assert_forwarded(&lab.demux_a, &lab.a, &lab.demux_b, &lab.b, ETHERTYPE_IPV4, &a_to_b);
    assert_eq!(
        counter(&lab.a, "wan_endpoint_roamed"),
        1,
        "moved once, to {}",
        lab.moved_b
    );
    lab.stop();
}

fn packets_cross_both_ways(options: Options) {
    let suite = options.suite;
    let lab = Lab::start_with(options);
    let threads = if options.seal_thread { 2 } else { 1 };
    assert_eq!((lab.a.threads, lab.b.threads), (threads, threads), "{options:?}");
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

    assert_wan_carries_only(suite, &lab.captured.lock().unwrap());
    let counted = || (counter(&lab.a, "lan_rx_packets"), counter(&lab.b, "lan_tx_packets"));
    wait_for("42 packets counted each way", || counted() >= (42, 42));
    assert_eq!(counted(), (42, 42), "{suite:?}");
    assert_eq!(counter(&lab.a, "wan_endpoint_roamed"), 0);
    assert!(lab.a.session.get().last_handshake_age.is_some());
    lab.stop();
}

#[test]
fn decrypted_packet_with_spoofed_inner_source_is_dropped_and_counted() {
    for suite in Suite::ALL {
        spoofed_inner_source_is_dropped(suite);
    }
}

fn spoofed_inner_source_is_dropped(suite: Suite) {
    let lab = Lab::start(suite);
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
    let lab = Lab::start(Suite::WireGuard);
    let good = ipv4_udp(Ipv4Addr::new(198, 18, 0, 5), Ipv4Addr::new(198, 19, 0, 9), 4);
    let stranger = UdpSocket::bind(STRANGER).unwrap();

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
    // Longer than any WireGuard datagram of this MTU: truncated; handshake-shaped datagrams
    // past the stranger's rate limit are refused before the suite; the rest fails
    // authentication.
    let refused = || {
        [
            "wan_unauthenticated",
            "drop_wan_truncated",
            "drop_handshake_source_rate",
        ]
        .iter()
        .map(|name| counter(&lab.a, name))
        .sum::<u64>()
    };
    wait_for("all WAN garbage refused", || refused() == 600);
    assert!(
        counter(&lab.a, "drop_handshake_source_rate") > 0,
        "one stranger, many handshakes"
    );
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
                && !name.starts_with("drop_handshake")
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

#[test]
fn garbage_on_the_ipsec_port_is_counted_and_traffic_still_flows() {
    let lab = Lab::start(Suite::Ipsec);
    let good = ipv4_udp(Ipv4Addr::new(198, 18, 0, 5), Ipv4Addr::new(198, 19, 0, 9), 4);
    assert_forwarded(&lab.demux_a, &lab.a, &lab.demux_b, &lab.b, ETHERTYPE_IPV4, &good);
    let real_esp = lab
        .captured
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|d| d.len() > 40 && d[..4] != [0, 0, 0, 0])
        .cloned()
        .expect("an ESP packet crossed the WAN");
    let stranger = UdpSocket::bind(STRANGER).unwrap();
    let send = |d: &[u8]| stranger.send_to(d, lab.b.wan).unwrap();
    let drops = |name: &str| counter(&lab.b, name);
    let before = |name: &str| drops(name);

    // ESP: truncated, unknown SPI, bad ICV, and a replay of a real packet.
    let malformed = before("drop_suite_malformed");
    send(&real_esp[..20]);
    wait_for("truncated ESP", || drops("drop_suite_malformed") == malformed + 1);
    let no_session = before("drop_suite_no_session");
    let mut unknown_spi = real_esp.clone();
    unknown_spi[..4].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    send(&unknown_spi);
    wait_for("unknown SPI", || drops("drop_suite_no_session") == no_session + 1);
    let auth = before("drop_suite_authentication_failed");
    // A fresh sequence number (a seen one is refused as a replay before any decryption).
    let mut bad_icv = real_esp.clone();
    let fresh = u32::from_be_bytes(bad_icv[4..8].try_into().unwrap()) + 1000;
    bad_icv[4..8].copy_from_slice(&fresh.to_be_bytes());
    let last = bad_icv.len() - 1;
    bad_icv[last] ^= 0x55;
    send(&bad_icv);
    wait_for("bad ICV", || drops("drop_suite_authentication_failed") == auth + 1);
    let replay = before("drop_suite_replay");
    send(&real_esp);
    wait_for("replayed ESP", || drops("drop_suite_replay") == replay + 1);

    // IKE behind the non-ESP marker: garbage, a header whose length lies, an oversized
    // payload length, and a well-formed message for an IKE SA that does not exist.
    let malformed = before("drop_suite_malformed");
    let mut lying = vec![0u8; 4];
    lying.extend_from_slice(&[
        1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, 33, 0x20, 34, 0x08, 0, 0, 0, 0,
    ]);
    lying.extend_from_slice(&9999u32.to_be_bytes());
    let mut oversized = lying.clone();
    oversized[4 + 24..4 + 28].copy_from_slice(&40u32.to_be_bytes());
    oversized.extend_from_slice(&[0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    for d in [&[0u8, 0, 0, 0, 0xde, 0xad][..], &lying, &oversized] {
        send(d);
    }
    wait_for("malformed IKE", || drops("drop_suite_malformed") == malformed + 3);
    let no_session = before("drop_suite_no_session");
    let mut stray = oversized.clone();
    stray[4 + 16] = 46; // SK
    stray[4 + 18] = 37; // INFORMATIONAL
    stray[4 + 8..4 + 16].copy_from_slice(&7u64.to_be_bytes());
    stray.truncate(4 + 28);
    stray.extend_from_slice(&[0, 0, 0, 29]);
    stray.extend_from_slice(&[0u8; 25]);
    let len = (stray.len() - 4) as u32;
    stray[4 + 24..4 + 28].copy_from_slice(&len.to_be_bytes());
    send(&stray);
    wait_for("IKE for no SA", || drops("drop_suite_no_session") == no_session + 1);
    // The same at 3000 bytes, longer than any ESP datagram of this MTU: IKE messages that
    // long are read whole (RFC 7296 §2), not cut and counted as truncated.
    let truncated = before("drop_wan_truncated");
    let mut long = stray[..4 + 28].to_vec();
    let sk_len = 3000 - long.len();
    long.extend_from_slice(&[0, 0]);
    long.extend_from_slice(&(sk_len as u16).to_be_bytes());
    long.resize(3000, 0);
    let len = (long.len() - 4) as u32;
    long[4 + 24..4 + 28].copy_from_slice(&len.to_be_bytes());
    send(&long);
    wait_for("a 3000-byte IKE message for no SA", || {
        drops("drop_suite_no_session") == no_session + 2
    });
    assert_eq!(drops("drop_wan_truncated"), truncated);

    assert_eq!(
        counter(&lab.b, "wan_endpoint_roamed"),
        0,
        "garbage never moves the peer endpoint"
    );
    assert_eq!(counter(&lab.b, "lan_tx_packets"), 1, "no garbage got through");
    assert_forwarded(&lab.demux_a, &lab.a, &lab.demux_b, &lab.b, ETHERTYPE_IPV4, &good);
    let back = ipv4_udp(Ipv4Addr::new(198, 19, 0, 9), Ipv4Addr::new(198, 18, 0, 5), 5);
    assert_forwarded(&lab.demux_b, &lab.b, &lab.demux_a, &lab.a, ETHERTYPE_IPV4, &back);
    lab.stop();
}

#[test]
fn replayed_handshakes_and_data_from_elsewhere_do_not_move_the_peer_endpoint() {
    let lab = Lab::start(Suite::WireGuard);
    let good = ipv4_udp(Ipv4Addr::new(198, 18, 0, 5), Ipv4Addr::new(198, 19, 0, 9), 6);
    assert_forwarded(&lab.demux_a, &lab.a, &lab.demux_b, &lab.b, ETHERTYPE_IPV4, &good);
    let captured = lab.captured.lock().unwrap().clone();
    let initiation = captured
        .iter()
        .find(|d| d[0] == 1)
        .expect("a captured initiation")
        .clone();
    let data = captured
        .iter()
        .rev()
        .find(|d| d[0] == 4 && d.len() > 32)
        .expect("captured data")
        .clone();

    // From a new address: a replayed initiation and replayed data. Neither may move B's idea
    // of where A is. (A restarted B would answer the initiation: the suite's unit tests show
    // that answer is no proof of data, so it cannot move the endpoint either.)
    let elsewhere = UdpSocket::bind(LOOPBACK).unwrap();
    let unauthenticated = counter(&lab.b, "wan_unauthenticated");
    for d in [&initiation, &data] {
        elsewhere.send_to(d, lab.b.wan).unwrap();
    }
    wait_for("B refuses both replays", || {
        counter(&lab.b, "wan_unauthenticated") == unauthenticated + 2
    });
    assert_eq!(counter(&lab.b, "wan_endpoint_roamed"), 0);

    // Traffic from B still reaches A through the relay, not the replayer.
    let back = ipv4_udp(Ipv4Addr::new(198, 19, 0, 9), Ipv4Addr::new(198, 18, 0, 5), 7);
    assert_forwarded(&lab.demux_b, &lab.b, &lab.demux_a, &lab.a, ETHERTYPE_IPV4, &back);
    elsewhere.set_nonblocking(true).unwrap();
    assert!(
        elsewhere.recv_from(&mut [0u8; 2048]).is_err(),
        "nothing was sent to the replayer"
    );
    lab.stop();
}
