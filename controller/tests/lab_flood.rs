//! A handshake flood at one gateway, in a real two-pair WireGuard lab: sequence-numbered UDP
//! flows cross the cluster while the WAN port of gateway b1 (which receives pair 1's data from
//! the WAN) takes WireGuard handshake initiations with a valid mac1 from 5,000 forged sources
//! for 10 s. Anyone can send those: mac1 needs only the gateway's public key, which the
//! cluster file publishes.
//!
//! The gateway must refuse the flood in its per-source and global handshake limits before
//! boringtun sees it, and keep forwarding: no pair goes down, no gateway restarts, the flows
//! lose less than 1 % and reorder nothing, and the gateway's handshake-limit drop counters
//! account for the flood. The forged sources lie in 198.18.200.0/21, inside the lab's
//! 198.18.0.0/15 and in none of its subnets; the flood leaves from the lab's WAN namespace.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use braid_core::config::ClusterConfig;
use braid_lab::demo::BenchServer;
use support::*;

/// The flooded gateway: site b's gateway of pair 1.
const SITE: &str = "b";
const PAIR: u16 = 1;
/// Distinct forged sources.
const SOURCES: u32 = 5_000;
/// Flood rate aimed at, datagrams per second; `BRAID_FLOOD_PPS` overrides it to measure.
const FLOOD_PPS: u64 = 50_000;
const FLOOD_FOR: Duration = Duration::from_secs(10);
/// The UDP load of the chaos tests, long enough to span the pair measurement and the flood.
const LOAD: &[&str] = &["--udp", "--rate", "40M", "--size", "1000", "-P", "16", "-t", "15"];
/// The largest share of datagrams a flow may lose.
const MAX_LOSS: f64 = 0.01;
/// The handshake-limit drop counters.
const LIMIT_DROPS: [&str; 3] = [
    "drop_handshake_source_rate",
    "drop_handshake_overflow_rate",
    "drop_handshake_global_rate",
];

#[test]
fn handshake_flood_at_one_gateway_leaves_every_pair_up_and_its_flows_intact() {
    if skip_without_lab("lab_flood") {
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up_with("flood", 2, Suite::WireGuard);
    let info = &lab.info;
    wait_all_up(info, 1..=2, Duration::from_secs(30));
    let _server = BenchServer::start(info, &bin_dir()).expect("bench server");

    let config = ClusterConfig::load(&info.config).expect("the lab's cluster file");
    let target = config.gateway(SITE, PAIR).expect("gateway b1");
    let public = *target
        .public_key
        .expect("a WireGuard gateway has a public key")
        .as_bytes();
    let std::net::SocketAddr::V4(target_wan) = target.wan else {
        panic!("the lab's WAN is IPv4")
    };
    let packets: Vec<(SocketAddrV4, Vec<u8>)> = (0..SOURCES)
        .map(|n| {
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 200, 0)) + n);
            let port = 20_000 + (n % 40_000) as u16;
            (
                SocketAddrV4::new(src, port),
                forged_initiation(&public, n, u64::from(n) + 1).to_vec(),
            )
        })
        .collect();

    let start = status(info);
    let pids: Vec<(String, u16, Option<u32>)> = start
        .gateways
        .iter()
        .map(|g| (g.site.clone(), g.index, g.pid))
        .collect();

    let load = start_bench(info, LOAD);
    std::thread::sleep(Duration::from_millis(800));
    let rates = pair_packet_rates(info, "a", Duration::from_secs(2));
    let on_pair = rates
        .iter()
        .find(|&&(id, _)| id == PAIR)
        .map(|&(_, pps)| udp_flows_at(pps))
        .unwrap_or(0);
    eprintln!("UDP rates per pair: {rates:?}; flows on pair {PAIR}: {on_pair}");
    assert!(on_pair > 0, "pair {PAIR} carries some of the flows: {rates:?}");

    let c = |name: &str| counter(info, "gw", SITE, PAIR, name);
    let limit_drops = || LIMIT_DROPS.iter().map(|n| c(n)).sum::<u64>();
    let suite_drops = || counters_with_prefix(info, "drop_suite_");
    let before = (
        limit_drops(),
        c("wan_unauthenticated"),
        suite_drops(),
        c("wan_rx_packets"),
    );

    add_wan_address(info, Ipv4Addr::new(198, 19, 0, 250));
    let pps = std::env::var("BRAID_FLOOD_PPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FLOOD_PPS);
    let flood = in_netns(&info.wan.netns, move || {
        flood_forged_udp(&packets, target_wan, pps, FLOOD_FOR)
    });

    // Health throughout: every pair up and answering canaries, no gateway restarted.
    let mut unhealthy = Vec::new();
    let watch_started = Instant::now();
    while !flood.is_finished() {
        let s = status(info);
        if !braid_lab::controller::all_up(&s, 1..=2) {
            unhealthy.push(format!(
                "{:.1}s: pairs {:?}",
                watch_started.elapsed().as_secs_f64(),
                s.pairs
                    .iter()
                    .map(|p| (p.index, p.state.clone(), p.active, p.last_failure.clone()))
                    .collect::<Vec<_>>()
            ));
        }
        for g in &s.gateways {
            if g.restarts > 0 || !pids.contains(&(g.site.clone(), g.index, g.pid)) {
                unhealthy.push(format!("gateway {}{} restarted: {g:?}", g.site, g.index));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = flood.join().expect("the flood thread");
    let run = finish_bench(load);
    // The status files refresh every 500 ms.
    std::thread::sleep(Duration::from_millis(1200));
    let after = (
        limit_drops(),
        c("wan_unauthenticated"),
        suite_drops(),
        c("wan_rx_packets"),
    );

    let flows = udp_flows(&run);
    let lost: u64 = flows.iter().map(|f| f.lost).sum();
    let received: u64 = flows.iter().map(|f| f.received).sum();
    let refused = after.0 - before.0;
    let reached_suite = after.1 - before.1;
    let cookie_replies = reached_suite.saturating_sub(after.2 - before.2);
    eprintln!(
        "MEASURED flood: {} initiations in {:.1} s ({:.0}/s, {} send errors) from {SOURCES} sources; \
         gateway {SITE}{PAIR} received {} WAN datagrams, refused {refused} in the handshake limits \
         ({:?}), passed {reached_suite} to boringtun ({cookie_replies} answered with a cookie); \
         UDP: received {received}, lost {lost} ({:.3} %), largest gap {:.1} ms",
        report.sent,
        report.seconds,
        report.rate(),
        report.send_errors,
        after.3 - before.3,
        LIMIT_DROPS.iter().map(|n| (*n, c(n))).collect::<Vec<_>>(),
        100.0 * lost as f64 / (received + lost).max(1) as f64,
        flows.iter().map(|f| f.max_gap_ms).fold(0.0, f64::max),
    );
    eprintln!("drops: {:?}", braid_lab::demo::nonzero_drops(info));

    assert!(unhealthy.is_empty(), "unhealthy during the flood: {unhealthy:#?}");
    assert_eq!(flows.len(), 16, "flow count in {run}");
    for f in &flows {
        assert!(f.received > 0, "a flow received nothing: {f:?}");
        assert_eq!(
            (f.reordered, f.duplicates),
            (0, 0),
            "a flow reordered or duplicated: {f:?}"
        );
        let loss = f.lost as f64 / (f.received + f.lost) as f64;
        assert!(loss < MAX_LOSS, "a flow lost {:.2} %: {f:?}", 100.0 * loss);
    }
    assert!(
        report.sent >= pps * FLOOD_FOR.as_secs() / 2,
        "the flood ran at less than half its rate: {report:?}"
    );
    assert!(
        refused >= report.sent / 2,
        "the handshake limits refused {refused} of {} initiations",
        report.sent
    );
    assert!(
        cookie_replies > 0,
        "boringtun answered none with a cookie: was mac1 valid?"
    );
    // The refusals reach the controller's /metrics through the gateway's heartbeats.
    let series =
        format!("braid_gateway_handshake_limit_drops_total{{site=\"{SITE}\",pair=\"{PAIR}\",suite=\"wireguard\"}}");
    let exported = metric(&metrics_text(info), &series).unwrap_or(0.0);
    assert!(
        exported >= refused as f64 / 2.0,
        "/metrics shows {exported} for {series}, the gateway counted {refused}"
    );
}

/// The sum of the flooded gateway's counters whose names start with `prefix`.
fn counters_with_prefix(info: &braid_lab::LabInfo, prefix: &str) -> u64 {
    let p = info
        .processes
        .iter()
        .find(|p| p.role == "gw" && p.site == SITE && p.index == PAIR)
        .expect("the flooded gateway is in the lab");
    braid_lab::read_status(&p.status_file)
        .and_then(|s| {
            s["counters"].as_object().map(|all| {
                all.iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
        })
        .unwrap_or(0)
}

/// A flood of valid-mac1 initiations forging the peer gateway's own address (which anyone can
/// read in the cluster file) while that peer restarts and must handshake again. A per-source
/// limit on the peer's address would let the forger keep the pair down for as long as it
/// floods; the gateway instead passes the peer's address to boringtun, whose cookie defence
/// answers the flood, and the restarted peer gets in with a cookie.
#[test]
fn a_flood_forging_the_peer_gateways_address_does_not_keep_a_restarted_peer_out() {
    if skip_without_lab("lab_flood") {
        return;
    }
    const RATE: u64 = 20_000;
    const FOR: Duration = Duration::from_secs(12);
    let _one = one_lab_at_a_time();
    let lab = Lab::up_with("fpeer", 2, Suite::WireGuard);
    let info = &lab.info;
    wait_all_up(info, 1..=2, Duration::from_secs(30));

    let config = ClusterConfig::load(&info.config).expect("the lab's cluster file");
    let target = config.gateway(SITE, PAIR).expect("gateway b1");
    let public = *target.public_key.expect("a WireGuard public key").as_bytes();
    let peer = config.gateway("a", PAIR).expect("gateway a1");
    let (std::net::SocketAddr::V4(target_wan), std::net::SocketAddr::V4(peer_wan)) = (target.wan, peer.wan) else {
        panic!("the lab's WAN is IPv4")
    };
    let packets: Vec<(SocketAddrV4, Vec<u8>)> = (0..64u32)
        .map(|n| {
            let from = SocketAddrV4::new(*peer_wan.ip(), 30_000 + n as u16);
            (from, forged_initiation(&public, n, u64::from(n) + 7).to_vec())
        })
        .collect();
    add_wan_address(info, Ipv4Addr::new(198, 19, 0, 250));
    let flood = in_netns(&info.wan.netns, move || {
        flood_forged_udp(&packets, target_wan, RATE, FOR)
    });
    std::thread::sleep(Duration::from_millis(1500));

    let old = status(info)
        .gateways
        .iter()
        .find(|g| g.site == "a" && g.index == PAIR)
        .and_then(|g| g.pid)
        .expect("gateway a1 runs");
    signal(old, libc::SIGKILL);
    let killed = Instant::now();
    wait_status(info, Duration::from_secs(8), |s| {
        let restarted = s
            .gateways
            .iter()
            .any(|g| g.site == "a" && g.index == PAIR && g.pid.is_some_and(|p| p != old));
        (restarted && braid_lab::controller::all_up(s, 1..=2)).then_some(())
    });
    let back_after = killed.elapsed();
    let still_flooding = !flood.is_finished();
    let report = flood.join().expect("the flood thread");
    eprintln!(
        "MEASURED forged-peer flood: {} initiations in {:.1} s ({:.0}/s) from {peer_wan}'s address; \
         pair {PAIR} back {:.2} s after gateway a{PAIR} was killed",
        report.sent,
        report.seconds,
        report.rate(),
        back_after.as_secs_f64()
    );
    assert!(
        still_flooding,
        "the pair came back only after the flood: {back_after:?}"
    );
    assert!(
        report.sent >= RATE * FOR.as_secs() / 2,
        "the flood ran at less than half its rate: {report:?}"
    );
}
