//! An underlay that reorders (seed 003: EC2 moved one UDP packet past ~2,000 others) against
//! each suite's anti-replay window, between two real gateways on loopback.
//!
//! The relay holds back every 1,000th data packet from A and releases it after 2,000 later
//! ones. IPsec with braid's default window (8,192) delivers every packet; with a 1,024-packet
//! window the late ones are dropped and counted as too old, never as replays. WireGuard
//! (boringtun's fixed 1,024-packet window) drops them too, counted by the suite.

mod support;

use std::collections::HashSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use braid_core::wire::geneve::ETHERTYPE_IPV4;
use support::*;

const PACKETS: u32 = 12_000;
const REORDER: Reorder = Reorder {
    every: 1_000,
    overtaken_by: 2_000,
    until: 9_500,
};

/// What crossed: packets delivered to B's demux, and B's replay counters.
#[derive(Debug)]
struct Outcome {
    delivered: usize,
    held: usize,
    replayed: u64,
    too_old: u64,
}

fn run(options: Options) -> Outcome {
    let lab = Lab::start_with(options);
    let receiver_socket = lab.demux_b.try_clone().unwrap();
    let receiver = thread::spawn(move || count_arrivals(&receiver_socket));
    let (src, dst) = (Ipv4Addr::new(198, 18, 0, 5), Ipv4Addr::new(198, 19, 0, 9));
    for seq in 0..PACKETS {
        let inner = ipv4_udp_payload(src, dst, &seq.to_be_bytes());
        lab.demux_a
            .send_to(&geneve(PAIR, ETHERTYPE_IPV4, &inner), lab.a.lan)
            .unwrap();
        if seq % 100 == 99 {
            // 20k packets a second: well inside what two gateways on two cores carry.
            thread::sleep(Duration::from_millis(5));
        }
    }
    let delivered = receiver.join().unwrap();
    let outcome = Outcome {
        delivered,
        held: *lab.held.lock().unwrap(),
        replayed: counter(&lab.b, "drop_suite_replay"),
        too_old: counter(&lab.b, "drop_suite_too_old"),
    };
    lab.stop();
    eprintln!("{:?} window {}: {outcome:?}", options.suite, options.replay_window);
    outcome
}

/// Distinct sequence numbers arriving at a fake demux until it has been idle for a second.
fn count_arrivals(demux: &UdpSocket) -> usize {
    let mut seen = HashSet::new();
    let mut buf = [0u8; 2048];
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(1) {
        if let Ok((len, _)) = demux.recv_from(&mut buf) {
            // GENEVE 8 + IPv4 20 + UDP 8, then the sequence number.
            if len >= 40 {
                seen.insert(u32::from_be_bytes(buf[36..40].try_into().unwrap()));
            }
            last = Instant::now();
        }
    }
    seen.len()
}

fn reordered(suite: Suite, replay_window: u32) -> Options {
    Options {
        suite,
        replay_window,
        reorder: Some(REORDER),
        seal_thread: false,
    }
}

#[test]
fn ipsec_default_window_delivers_packets_overtaken_by_2000() {
    let out = run(reordered(Suite::Ipsec, braid_ipsec::replay::DEFAULT_REPLAY_WINDOW));
    assert_eq!(out.held, 9, "the relay reordered 9 packets");
    assert_eq!(out.delivered, PACKETS as usize, "every packet delivered: {out:?}");
    assert_eq!((out.too_old, out.replayed), (0, 0));
}

#[test]
fn ipsec_small_window_counts_late_packets_as_too_old() {
    let out = run(reordered(Suite::Ipsec, 1024));
    assert_eq!(out.held, 9);
    assert_eq!(out.too_old, 9, "each late packet counted as too old: {out:?}");
    assert_eq!(out.replayed, 0, "a late packet is not a replay");
    assert_eq!(out.delivered, PACKETS as usize - 9);
}

#[test]
fn wireguard_fixed_window_drops_packets_overtaken_by_2000() {
    let out = run(reordered(Suite::WireGuard, 0));
    assert_eq!(out.held, 9);
    assert_eq!(
        out.replayed + out.too_old,
        9,
        "boringtun drops every late packet: {out:?}"
    );
    assert_eq!(out.delivered, PACKETS as usize - 9);
}
