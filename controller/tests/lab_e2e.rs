//! The data path end to end, in a real two-site lab with three gateway pairs, for each tunnel
//! suite: TCP both ways with every byte verified, UDP flows never reordered, every pair used,
//! and a WAN capture that holds only the suite's own messages (WireGuard; or ESP in UDP, IKE
//! and NAT keepalives, with no ESP sequence number twice on one SA) and never the plaintext the
//! hosts sent. The IPsec gateways seal on a thread of their own (`ipsec.seal_thread`); the
//! other IPsec lab tests run them on one thread.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use braid_lab::demo::{bench_client, pair_tx_bytes, BenchServer};
use serde_json::Value;
use support::*;

const MARKER: &[u8] = b"BRAID-PLAINTEXT-MARKER-7f3a9c";

fn assert_tcp_run(run: &Value, streams: usize, what: &str) {
    assert_tcp_intact(run, streams, what);
    assert!(
        run["aggregate_mbps"].as_f64().unwrap_or(0.0) > 1.0,
        "{what}: no throughput: {run}"
    );
}

#[test]
fn wireguard_pairs_carry_verified_tcp_and_unreordered_udp_encrypted_on_the_wan() {
    if skip_without_lab("lab_e2e") {
        return;
    }
    let _one = one_lab_at_a_time();
    three_pairs_end_to_end(Lab::up_with("e2e", 3, Suite::WireGuard), Suite::WireGuard);
}

#[test]
fn ipsec_pairs_carry_verified_tcp_and_unreordered_udp_encrypted_on_the_wan() {
    if skip_without_lab("lab_e2e") {
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up_ipsec_sealing("e2e-ipsec", 3);
    for gw in lab.info.processes.iter().filter(|p| p.role == "gw") {
        let status = braid_lab::read_status(&gw.status_file)
            .unwrap_or_else(|| panic!("gateway {}{} wrote no status", gw.site, gw.index));
        assert_eq!(
            status["data_threads"], 2,
            "gateway {}{} seals on a thread of its own",
            gw.site, gw.index
        );
    }
    three_pairs_end_to_end(lab, Suite::Ipsec);
}

fn three_pairs_end_to_end(lab: Lab, suite: Suite) {
    let info = &lab.info;
    let bin = bin_dir();
    let _server = BenchServer::start(info, &bin);

    // 16 TCP streams each way, every byte verified by the receiver.
    let forward = bench_client(info, &bin, &["-P", "16", "-t", "3"]).expect("forward TCP run");
    assert_tcp_run(&forward, 16, "a→b");
    let reverse = bench_client(info, &bin, &["-P", "16", "-t", "3", "--reverse"]).expect("reverse TCP run");
    assert_tcp_run(&reverse, 16, "b→a");

    // Every pair carried data.
    let tx = pair_tx_bytes(info, "a");
    assert_eq!(tx.len(), 3, "demux a reports three pairs: {tx:?}");
    for (id, bytes) in &tx {
        assert!(*bytes > 100_000, "pair {id} carried only {bytes} bytes");
    }

    // Capture the WAN while UDP flows and a plaintext marker cross it.
    let tcpdump = Tcpdump::start(
        &info.wan.netns,
        &info.wan.interface,
        0,
        "",
        &info.state_dir.join("wan.pcap"),
    );

    let b_addr = info.hosts.b.addr;
    let receiver = in_netns(&info.hosts.b.netns, move || {
        let sock = UdpSocket::bind((b_addr, 7001)).expect("bind marker receiver");
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut got = 0;
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if contains(&buf[..n], MARKER) {
                got += 1;
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    let a_addr = info.hosts.a.addr;
    in_netns(&info.hosts.a.netns, move || {
        for port in 0..32u16 {
            let sock = UdpSocket::bind((a_addr, 40000 + port)).unwrap();
            let dst: SocketAddr = (b_addr, 7001).into();
            let mut msg = MARKER.to_vec();
            msg.extend_from_slice(&[0x55; 200]);
            sock.send_to(&msg, dst).unwrap();
        }
    })
    .join()
    .unwrap();
    let udp = bench_client(
        info,
        &bin,
        &["--udp", "--rate", "20M", "--size", "1000", "-P", "8", "-t", "3"],
    )
    .expect("UDP run");
    let marker_received = receiver.join().unwrap();
    let cap = tcpdump.finish();

    assert_eq!(marker_received, 32, "every marker datagram reached host b");
    let flows = udp["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("no UDP flows in {udp}"));
    assert_eq!(flows.len(), 8);
    for f in flows {
        assert!(
            f["received"].as_u64().unwrap_or(0) > 0,
            "UDP flow received nothing: {f}"
        );
        assert_eq!(f["reordered"].as_u64(), Some(0), "UDP flow reordered: {f}");
        assert_eq!(f["duplicates"].as_u64(), Some(0), "UDP flow duplicated: {f}");
        assert_eq!(f["lost"].as_u64(), Some(0), "UDP flow lost datagrams at 20 Mbit/s: {f}");
    }

    assert!(
        cap.udp.len() > 1000,
        "the capture saw the traffic ({} UDP frames)",
        cap.udp.len()
    );
    assert_eq!(cap.other_ipv4, 0, "only UDP crosses the WAN");
    let data_messages = match suite {
        Suite::WireGuard => check_wireguard_wan(&cap),
        Suite::Ipsec => check_ipsec_wan(&cap),
    };
    assert!(data_messages > 1000, "{suite} data messages seen: {data_messages}");
    assert!(!contains(&cap.raw, MARKER), "the plaintext marker appeared on the WAN");
}

/// Every WAN datagram is a WireGuard message between WireGuard ports; returns the data messages.
fn check_wireguard_wan(cap: &Capture) -> usize {
    let mut data_messages = 0;
    for f in &cap.udp {
        assert!(
            f.src_port == 51820 && f.dst_port == 51820,
            "WAN UDP between WireGuard ports only: {f:?}"
        );
        assert!(
            is_wireguard_message(&f.payload),
            "not a WireGuard message: {:?}",
            &f.payload[..f.payload.len().min(16)]
        );
        if f.payload[0] == 4 {
            data_messages += 1;
        }
    }
    data_messages
}

/// Every WAN datagram is ESP in UDP, IKE behind the non-ESP marker, or a NAT keepalive, all
/// on port 4500 (RFC 3948); no ESP sequence number appears twice on one SA (a nonce reused
/// under one key would break AES-GCM). Returns the ESP packets.
fn check_ipsec_wan(cap: &Capture) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut esp = 0;
    for f in &cap.udp {
        assert!(
            f.src_port == 4500 && f.dst_port == 4500,
            "WAN UDP on the IPsec NAT-T port only: {f:?}"
        );
        let p = &f.payload;
        if p.as_slice() == [0xff] {
            continue;
        }
        if p.len() >= 4 + 28 && p[..4] == [0, 0, 0, 0] {
            assert_eq!(
                p[4 + 17],
                0x20,
                "IKEv2 version in an IKE message: {:?}",
                &p[..p.len().min(32)]
            );
            continue;
        }
        // ESP: SPI, sequence number, 8-byte IV, at least a 4-byte trailer, 16-byte ICV.
        assert!(p.len() >= 4 + 4 + 8 + 4 + 16, "not ESP: {:?}", &p[..p.len().min(16)]);
        let spi = u32::from_be_bytes(p[..4].try_into().unwrap());
        let seq = u32::from_be_bytes(p[4..8].try_into().unwrap());
        assert!(spi > 255, "reserved SPI {spi}");
        assert!(
            seen.insert((f.src, spi, seq)),
            "ESP sequence number {seq} twice on SPI {spi:08x}"
        );
        esp += 1;
    }
    esp
}
