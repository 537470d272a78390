//! The processor, packet by packet: two threads of site a (and, for canaries, of site b)
//! sharing one snapshot, fed hand-built packets with time passed in.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use braid_core::flow::{tcp_flags, PairId};
use braid_core::wire::geneve;

use super::*;
use crate::canary::Canary;
use crate::datapath::{c, GatewayMap, SnapshotCell};
use crate::offload::testutil::{tcp_v4_between, verify_tcp_packet, TcpSpec};
use crate::steer::{
    FlowHasher, FragmentTable, IdleTimeouts, MaglevTable, DEFAULT_FRAGMENT_CAPACITY, DEFAULT_FRAGMENT_TTL_MS,
    DEFAULT_TABLE_SIZE,
};

const T0: u64 = 10_000;
const HOST_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const HOST_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn gateway(site: u8, pair: PairId) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, site, 10 + pair as u8)), 6081)
}

/// A site's data threads, all steering by `cell`'s snapshot.
struct Site {
    cell: SnapshotCell,
    threads: Vec<Processor>,
}

/// Site `site` (1 = a, 2 = b) with pairs `pairs` and `n` data threads.
fn site(site: u8, pairs: &[PairId], n: usize) -> Site {
    let peer = 3 - site;
    let prefix = |s: u8| format!("198.18.{s}.0/24").parse().unwrap();
    let canary = |s: u8| ip(&format!("198.18.{s}.1"));
    let rules = Arc::new(Rules {
        local_prefixes: vec![prefix(site)],
        inbound_filter: InboundFilter::new(vec![prefix(site)], vec![prefix(peer)], canary(peer), canary(site)),
        mtu: 1400,
    });
    let gateways = GatewayMap::new(pairs.iter().map(|&p| (p, gateway(site, p))).collect());
    let cell = SnapshotCell::new(MaglevTable::build(pairs, DEFAULT_TABLE_SIZE).unwrap(), gateways);
    let fragments = Arc::new(Mutex::new(FragmentTable::new(
        DEFAULT_FRAGMENT_CAPACITY,
        DEFAULT_FRAGMENT_TTL_MS,
    )));
    let threads = (0..n)
        .map(|id| {
            let steering = Steering::with_fragments(
                FlowHasher::from_secret(&[7; 32]),
                4096,
                IdleTimeouts::default(),
                fragments.clone(),
            );
            Processor::new(
                id,
                n,
                rules.clone(),
                Arc::new(DemuxStats::new()),
                steering,
                Canary::new(canary(site), canary(peer), pairs),
                cell.load(),
            )
        })
        .collect();
    Site { cell, threads }
}

fn tcp(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    let spec = TcpSpec {
        src_port,
        dst_port,
        flags,
        payload: vec![0xab; 100],
        ..TcpSpec::default()
    };
    tcp_v4_between(&spec, src, dst)
}

/// Flow `n` of host a → host b, as a's TUN delivers it.
fn outgoing(n: u16) -> Vec<u8> {
    tcp(HOST_A, HOST_B, 40_000 + n, 5201, tcp_flags::ACK)
}

/// The reply of flow `n` (host b → host a), as a's gateway of `pair` delivers it in GENEVE.
fn returning(n: u16, pair: PairId) -> Vec<u8> {
    in_geneve(pair, &tcp(HOST_B, HOST_A, 5201, 40_000 + n, tcp_flags::ACK))
}

fn in_geneve(pair: PairId, inner: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0u8; HEADROOM];
    geneve::write_header(&mut datagram, u32::from(pair), geneve::ETHERTYPE_IPV4);
    datagram.extend_from_slice(inner);
    datagram
}

fn counter(p: &Processor, index: usize) -> u64 {
    p.stats().counters.get(index)
}

/// Every thread's verdict on an outgoing packet.
fn outbound_everywhere(site: &mut Site, packet: &[u8]) -> Vec<OutboundVerdict> {
    site.threads
        .iter_mut()
        .map(|p| p.outbound(&mut packet.to_vec(), true, T0))
        .collect()
}

#[test]
fn every_flow_has_one_owner_and_the_other_threads_hand_it_over_untouched() {
    let mut a = site(1, &[1, 2], 2);
    let mut owned = [0usize; 2];
    for n in 0..64 {
        let verdicts = outbound_everywhere(&mut a, &outgoing(n));
        let forwarded: Vec<usize> = (0..2)
            .filter(|&t| matches!(verdicts[t], OutboundVerdict::Forward(_)))
            .collect();
        assert_eq!(forwarded.len(), 1, "flow {n}: {verdicts:?}");
        let owner = forwarded[0];
        owned[owner] += 1;
        assert_eq!(verdicts[1 - owner], OutboundVerdict::HandOff(owner), "flow {n}");
    }
    assert!(owned.iter().all(|&n| n >= 16), "both threads own flows: {owned:?}");
    for p in &mut a.threads {
        p.publish_counts();
    }
    let live: Vec<u64> = a
        .threads
        .iter()
        .map(|p| p.stats().live_flows.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    assert_eq!(live, owned.map(|n| n as u64), "only owners pinned anything");
    for p in &a.threads {
        // 4096 flows asked for: 342 buckets of 16 slots, 3/4 of them.
        let capacity = p.stats().flow_capacity.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(capacity, 4104, "each thread reports its table's size");
    }
    assert_eq!(counter(&a.threads[0], c::DROP_SRC_NOT_LOCAL), 0);
}

#[test]
fn a_flow_learnt_from_a_pair_goes_back_through_it_even_when_handed_over() {
    let mut a = site(1, &[1, 2], 2);
    // Flows Maglev sends through pair 1, whose replies then arrive through pair 2 (the other
    // site chose it): both directions must follow pair 2.
    let mut checked = 0;
    for n in 0..64 {
        let mut fresh = site(1, &[1, 2], 1);
        let OutboundVerdict::Forward(route) = fresh.threads[0].outbound(&mut outgoing(n), true, T0) else {
            panic!("flow {n} not forwarded");
        };
        if route.pair != 1 {
            continue;
        }
        // The reply reaches thread 0 (the kernel's choice); thread 0 hands it over if it is
        // not the owner, and the owner learns it.
        let mut datagram = returning(n, 2);
        let mut reply = [0u8; 256];
        let inner = match a.threads[0].inbound(&mut datagram, gateway(1, 2), T0, 0, true, &mut reply) {
            InboundVerdict::Deliver { inner_at } => {
                assert_eq!(inner_at, HEADROOM);
                None
            }
            InboundVerdict::HandOff {
                owner,
                pair,
                inner_at,
                claimed,
            } => {
                assert_eq!((owner, pair, inner_at), (1, 2, HEADROOM));
                assert_eq!(
                    a.threads[1].claim(&datagram[inner_at..], false).mine(),
                    Some(claimed),
                    "flow {n}: the owner would have learnt the same of these bytes"
                );
                Some((datagram[inner_at..].to_vec(), claimed))
            }
            other => panic!("flow {n}: {other:?}"),
        };
        let owner = if let Some((mut inner, claimed)) = inner {
            let verdict = a.threads[1].inbound_inner(&mut inner, &claimed, 2, T0, 0, &mut reply);
            assert_eq!(verdict, InboundVerdict::Deliver { inner_at: 0 });
            1
        } else {
            0
        };
        let verdicts = outbound_everywhere(&mut a, &outgoing(n));
        match verdicts[owner] {
            OutboundVerdict::Forward(route) => {
                assert_eq!(route.pair, 2, "flow {n} follows the pair it came back on");
                assert_eq!(route.addr, gateway(1, 2));
            }
            other => panic!("flow {n} at its owner: {other:?}"),
        }
        assert_eq!(verdicts[1 - owner], OutboundVerdict::HandOff(owner));
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} flows checked");
}

#[test]
fn what_is_refused_is_counted_and_never_forwarded() {
    let mut a = site(1, &[1, 2], 1);
    let p = &mut a.threads[0];
    let mut reply = [0u8; 256];
    // From outside the site's prefixes.
    let spoofed = tcp(Ipv4Addr::new(198, 18, 9, 9), HOST_B, 1, 2, tcp_flags::ACK);
    assert_eq!(p.outbound(&mut spoofed.clone(), true, T0), OutboundVerdict::Dropped);
    assert_eq!(counter(p, c::DROP_SRC_NOT_LOCAL), 1);
    // Not an IP packet.
    assert_eq!(p.outbound(&mut [0x45, 0, 0], true, T0), OutboundVerdict::Dropped);
    assert_eq!(p.stats().tun_wire.snapshot().iter().map(|(_, n)| n).sum::<u64>(), 1);
    // GENEVE from an address that is no gateway of this site.
    let mut datagram = returning(1, 1);
    let stranger: SocketAddr = "198.18.1.99:6081".parse().unwrap();
    assert_eq!(
        p.inbound(&mut datagram, stranger, T0, 0, true, &mut reply),
        InboundVerdict::Consumed
    );
    assert_eq!(counter(p, c::DROP_UNKNOWN_GATEWAY), 1);
    // Pair 2's gateway sending pair 1's VNI.
    assert_eq!(
        p.inbound(&mut returning(1, 1), gateway(1, 2), T0, 0, true, &mut reply),
        InboundVerdict::Consumed
    );
    assert_eq!(counter(p, c::DROP_VNI_MISMATCH), 1);
    // A control (OAM) packet, and Ethernet inside: GENEVE braid does not carry.
    let mut oam = returning(1, 1);
    oam[1] |= 0x80;
    assert_eq!(
        p.inbound(&mut oam, gateway(1, 1), T0, 0, true, &mut reply),
        InboundVerdict::Consumed
    );
    assert_eq!(counter(p, c::DROP_GENEVE_OAM), 1);
    let mut ethernet = returning(1, 1);
    ethernet[2..4].copy_from_slice(&0x6558u16.to_be_bytes());
    assert_eq!(
        p.inbound(&mut ethernet, gateway(1, 1), T0, 0, true, &mut reply),
        InboundVerdict::Consumed
    );
    assert_eq!(p.stats().lan_wire.snapshot().iter().map(|(_, n)| n).sum::<u64>(), 1);
    // An inner packet claiming to come from this site.
    let inward_spoof = in_geneve(1, &tcp(HOST_A, HOST_A, 1, 2, tcp_flags::ACK));
    assert_eq!(
        p.inbound(&mut inward_spoof.clone(), gateway(1, 1), T0, 0, true, &mut reply),
        InboundVerdict::Consumed
    );
    assert_eq!(counter(p, c::DROP_SRC_NOT_PEER), 1);
    p.publish_counts();
    assert_eq!(
        p.stats().live_flows.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing refused was pinned or learnt"
    );
    assert_eq!(
        p.stats().pair(1).rx_packets.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn a_syn_is_clamped_to_the_tunnel_mtu_on_the_way_out() {
    let mut a = site(1, &[1], 1);
    let spec = TcpSpec {
        flags: tcp_flags::SYN,
        options: vec![2, 4, 0x05, 0xb4], // MSS 1460
        ..TcpSpec::default()
    };
    let mut syn = tcp_v4_between(&spec, HOST_A, HOST_B);
    let p = &mut a.threads[0];
    assert!(matches!(p.outbound(&mut syn, true, T0), OutboundVerdict::Forward(_)));
    verify_tcp_packet(&syn);
    let mss = u16::from_be_bytes([syn[20 + 22], syn[20 + 23]]);
    assert_eq!(mss, 1400 - 40);
    assert_eq!(counter(p, c::MSS_CLAMPED), 1);
}

#[test]
fn canaries_are_probed_by_the_owner_of_their_flow_and_answered_through_the_same_pair() {
    let mut a = site(1, &[1, 2], 2);
    let mut b = site(2, &[1, 2], 2);
    for pair in [1, 2] {
        let mut probes = Vec::new();
        for (t, p) in a.threads.iter_mut().enumerate() {
            let mut out = [0u8; 256];
            if let Some((len, to)) = p.probe(pair, T0, &mut out) {
                assert_eq!(to, gateway(1, pair));
                probes.push((t, out[..len].to_vec()));
            }
        }
        assert_eq!(probes.len(), 1, "pair {pair}: exactly one thread probes it");
        let (prober, probe) = probes.pop().unwrap();
        // The probe crosses the pair and reaches site b's thread 0 from b's gateway of `pair`.
        let mut reply = [0u8; 256];
        let mut datagram = probe.clone();
        let reply_len = match b.threads[0].inbound(&mut datagram, gateway(2, pair), T0, 0, true, &mut reply) {
            InboundVerdict::Reply { len } => len,
            InboundVerdict::HandOff {
                owner,
                pair: via,
                inner_at,
                claimed,
            } => {
                assert_eq!((owner, via), (1, pair));
                let mut inner = datagram[inner_at..].to_vec();
                match b.threads[1].inbound_inner(&mut inner, &claimed, pair, T0, 0, &mut reply) {
                    InboundVerdict::Reply { len } => len,
                    other => panic!("pair {pair}: {other:?}"),
                }
            }
            other => panic!("pair {pair}: {other:?}"),
        };
        let answer = &mut reply[..reply_len];
        let vni = geneve::GenevePacket::new_checked(&*answer).unwrap().vni();
        assert_eq!(vni, u32::from(pair), "answered through the pair it came on");
        // The answer comes back to the prober (it owns the flow both ways).
        let mut sink = [0u8; 256];
        let verdict = a.threads[prober].inbound(answer, gateway(1, pair), T0 + 3, 3_000, true, &mut sink);
        assert_eq!(verdict, InboundVerdict::Consumed);
        let results = a.threads[prober].canary.pair(pair).copied().unwrap();
        assert_eq!((results.sent, results.answered, results.lost), (1, 1, 0));
    }
}

#[test]
fn a_new_snapshot_keeps_pinned_flows_and_steers_new_flows_by_it() {
    let mut a = site(1, &[1], 2);
    for n in 0..64 {
        let verdicts = outbound_everywhere(&mut a, &outgoing(n));
        assert!(verdicts.contains(&OutboundVerdict::Forward(Route {
            addr: gateway(1, 1),
            pair: 1,
            ethertype: geneve::ETHERTYPE_IPV4,
            clamp: false,
        })));
    }
    a.cell.install(
        5,
        MaglevTable::build(&[1, 2], DEFAULT_TABLE_SIZE).unwrap(),
        &std::collections::BTreeSet::from([1, 2]),
        &[(2, gateway(1, 2))],
    );
    let snapshot = a.cell.load();
    for p in &mut a.threads {
        p.adopt(snapshot.clone());
    }
    let mut new_on_two = 0;
    for n in 0..64 {
        for v in outbound_everywhere(&mut a, &outgoing(n)) {
            if let OutboundVerdict::Forward(route) = v {
                assert_eq!(route.pair, 1, "pinned flow {n} stays put");
            }
        }
        for v in outbound_everywhere(&mut a, &outgoing(1000 + n)) {
            if let OutboundVerdict::Forward(route) = v {
                new_on_two += usize::from(route.pair == 2);
            }
        }
    }
    assert!(new_on_two >= 16, "new flows use the new pair: {new_on_two} of 64");
}

#[path = "processor_alloc_tests.rs"]
mod allocations;
