//! Gateways behind a 1:1 NAT, as on a cloud with elastic/external IPs: in a lab built with
//! `nat`, site a's gateways hold only private addresses (198.18.30.x, their `wan_listen`) and
//! are reached at public ones (198.19.0.x, their `wan`) that nftables in the WAN namespace
//! translates. The pairs come up and carry TCP both ways with every byte verified and
//! sequence-numbered UDP without loss or reordering; the peer gateways see only the suite's
//! own messages between public endpoints, never a private address.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use braid_lab::demo::{bench_client, pair_tx_bytes, BenchServer};
use support::*;

const PAIRS: u16 = 2;

/// The NAT's private side (`198.18.30.0/24`).
fn is_private(addr: Ipv4Addr) -> bool {
    addr.octets()[..3] == [198, 18, 30]
}

/// Whether `nft` is missing: loudly skipped here, a failure under CI (`.ci/run` installs
/// nftables).
fn skip_without_nft(test: &str) -> bool {
    if braid_lab::nat::check_nft().is_ok() {
        return false;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: nft (nftables) is missing under CI");
    }
    eprintln!("\n======== SKIPPED {test}: nft (nftables) is not installed, so the lab cannot build its NAT ========\n");
    true
}

#[test]
fn wireguard_pairs_work_with_one_site_behind_a_one_to_one_nat() {
    if skip_without_lab("lab_nat") || skip_without_nft("lab_nat") {
        return;
    }
    let _one = one_lab_at_a_time();
    behind_nat(Suite::WireGuard, "nat");
}

#[test]
fn ipsec_pairs_work_with_one_site_behind_a_one_to_one_nat() {
    if skip_without_lab("lab_nat") || skip_without_nft("lab_nat") {
        return;
    }
    let _one = one_lab_at_a_time();
    behind_nat(Suite::Ipsec, "nat-ip");
}

fn behind_nat(suite: Suite, name: &str) {
    let lab = Lab::up_nat(name, PAIRS, suite);
    let info = &lab.info;
    let bin = bin_dir();

    // Site a's gateways hold only their private address: their tunnels can only work through
    // the NAT. Site b's hold their public one.
    for pair in &info.pairs {
        let public = pair.a.wan.ip().to_string();
        let shown = ip_addresses(&pair.a.netns);
        let private = format!("198.18.30.{}/24", 10 + pair.id);
        assert!(shown.contains(&private), "gw a{} holds {private}: {shown}", pair.id);
        assert!(
            !shown.contains(&public),
            "gw a{} does not hold {public}: {shown}",
            pair.id
        );
        assert!(ip_addresses(&pair.b.netns).contains(&pair.b.wan.ip().to_string()));
    }

    // `braid check` shows what each NATed gateway binds and where its peer sends.
    let check = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["check", "-c"])
        .arg(&info.config)
        .output()
        .expect("run braid check");
    let check = String::from_utf8_lossy(&check.stdout);
    for pair in &info.pairs {
        let line = format!(
            "gateway a{}: peers send to {}, bound locally at 198.18.30.{}:{} (behind NAT)",
            pair.id,
            pair.a.wan,
            10 + pair.id,
            pair.a.wan.port()
        );
        assert!(check.contains(&line), "braid check shows {line:?}:\n{check}");
    }
    assert!(!check.contains("gateway b"), "site b is not behind the NAT:\n{check}");

    let _server = BenchServer::start(info, &bin);
    let forward = bench_client(info, &bin, &["-P", "8", "-t", "3"]).expect("forward TCP run");
    assert_tcp_intact(&forward, 8, "a→b through the NAT");
    let reverse = bench_client(info, &bin, &["-P", "8", "-t", "3", "--reverse"]).expect("reverse TCP run");
    assert_tcp_intact(&reverse, 8, "b→a through the NAT");
    for (id, bytes) in pair_tx_bytes(info, "a") {
        assert!(bytes > 100_000, "pair {id} carried only {bytes} bytes");
    }

    // Sequence-numbered UDP, while each site b gateway's WAN link (what a peer of the NAT
    // sees) is captured.
    let captures: Vec<(u16, Tcpdump)> = info
        .pairs
        .iter()
        .map(|pair| {
            let file = info.state_dir.join(format!("wan-b{}.pcap", pair.id));
            (pair.id, Tcpdump::start(&pair.b.netns, "wan", 0, "udp", &file))
        })
        .collect();
    let udp = bench_client(
        info,
        &bin,
        &["--udp", "--rate", "20M", "--size", "1000", "-P", "16", "-t", "3"],
    )
    .expect("UDP run");
    assert_udp_lossless(&udp, "UDP through the NAT");

    let port = braid_lab::topology::wan_port(suite);
    for (id, tcpdump) in captures {
        let cap = tcpdump.finish();
        let pair = info.pairs.iter().find(|p| p.id == id).expect("the pair");
        let (public_a, b) = (pair.a.wan, pair.b.wan);
        assert!(
            cap.udp.len() > 100,
            "pair {id}: the capture saw traffic ({} frames)",
            cap.udp.len()
        );
        for f in &cap.udp {
            assert!(
                !is_private(f.src) && !is_private(f.dst),
                "pair {id}: a private address reached the peer: {f:?}"
            );
            let ends = [
                SocketAddr::from((f.src, f.src_port)),
                SocketAddr::from((f.dst, f.dst_port)),
            ];
            assert!(
                ends == [public_a, b] || ends == [b, public_a],
                "pair {id}: only the public endpoint {public_a} and {b} talk: {f:?}"
            );
            assert_eq!((f.src_port, f.dst_port), (port, port));
        }
        if suite == Suite::WireGuard {
            assert!(
                cap.udp.iter().all(|f| is_wireguard_message(&f.payload)),
                "pair {id}: WireGuard only"
            );
        }
    }
}

/// `ip -4 addr` inside `netns`.
fn ip_addresses(netns: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", netns, "-4", "addr", "show"])
        .output()
        .expect("run ip addr");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
