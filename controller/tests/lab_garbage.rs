//! Malformed input on every socket and on the TUN, in a running lab: each is a counted drop,
//! no daemon dies, and traffic still flows afterwards. Also forged input that is well formed: a
//! host on the gateway LAN sending GENEVE with a gateway's address and the right VNI, around an
//! inner packet with a spoofed source or destination, is dropped and counted by the demux and
//! never reaches the site's hosts, while the same datagram with a genuine peer-site source does.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use braid_lab::topology::Topology;
use support::*;

/// A GENEVE header: version 0, no options, the given VNI and protocol type.
fn geneve(vni: u32, protocol: u16, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, (protocol >> 8) as u8, protocol as u8];
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v.extend_from_slice(inner);
    v
}

/// A well-formed IPv4/UDP packet (header checksum set, UDP checksum zero).
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let total = (28 + payload.len()) as u16;
    let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = p
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

#[test]
fn garbage_everywhere_is_counted_and_traffic_survives() {
    if skip_without_lab("lab_garbage") {
        return;
    }
    let lab = Lab::up("garbage", 2);
    let info = lab.info.clone();
    let topo = Topology::new("garbage", 2).unwrap();
    let demux_a = SocketAddrV4::new(topo.site("a").lan, 6081);
    let gw_a1_lan = SocketAddrV4::new(topo.gateway_lan("a", 1), 6081);
    let gw_a1_wan = SocketAddrV4::new(topo.gateway_wan("a", 1), 51820);

    // The TUN: packets the kernel forwards but braid cannot steer.
    let (ha, hb) = (topo.site("a").host, topo.site("b").host);
    in_netns(&info.hosts.a.netns, move || {
        // IPv4 claiming UDP with only 4 bytes of UDP header.
        let mut truncated = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
        truncated.extend_from_slice(&ha.octets());
        truncated.extend_from_slice(&hb.octets());
        truncated.extend_from_slice(&[0x12, 0x34, 0x00, 0x35]);
        // A later fragment (offset 185 × 8) whose first fragment never comes.
        let mut orphan = vec![0x45, 0, 0, 0, 0xbe, 0xef, 0x00, 0xb9, 64, 17, 0, 0];
        orphan.extend_from_slice(&ha.octets());
        orphan.extend_from_slice(&hb.octets());
        orphan.extend_from_slice(&[0xaa; 64]);
        for _ in 0..5 {
            send_raw_ipv4(&truncated, hb);
            send_raw_ipv4(&orphan, hb);
        }
    })
    .join()
    .unwrap();

    // The demux's GENEVE socket: from a stranger, and forged from gateway a1 with bad contents.
    in_netns(&topo.gateway_ns("a", 1), move || {
        let stranger = UdpSocket::bind((*gw_a1_lan.ip(), 7777)).unwrap();
        stranger.send_to(b"not geneve at all", demux_a).unwrap();
        send_forged_udp(gw_a1_lan, demux_a, &[0xc0, 0, 0x08, 0]); // version 3, truncated
        send_forged_udp(gw_a1_lan, demux_a, &geneve(2, 0x0800, &[0x45; 40])); // pair 2's VNI from gateway 1
        send_forged_udp(gw_a1_lan, demux_a, &geneve(1, 0x0800, &[0x45, 0, 0])); // truncated inner packet
    })
    .join()
    .unwrap();

    // Gateway a1's LAN socket: from a stranger and forged from the demux with a bad header.
    in_netns(&topo.demux_ns("a"), move || {
        let stranger = UdpSocket::bind((*demux_a.ip(), 9999)).unwrap();
        stranger.send_to(&[0xff; 100], gw_a1_lan).unwrap();
        send_forged_udp(demux_a, gw_a1_lan, &[0x40, 0, 0x08, 0, 0, 0, 1, 0]); // version 1
        send_forged_udp(demux_a, gw_a1_lan, &geneve(9, 0x0800, &[0x45; 40])); // wrong VNI
    })
    .join()
    .unwrap();

    // Gateway a1's WireGuard port: garbage and WireGuard-shaped garbage from the peer's address.
    let peer_wan = topo.gateway_wan("b", 1);
    in_netns(&topo.gateway_ns("b", 1), move || {
        let sock = UdpSocket::bind((peer_wan, 7000)).unwrap();
        sock.send_to(&[0u8; 3], gw_a1_wan).unwrap();
        sock.send_to(
            &[
                4, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9,
            ],
            gw_a1_wan,
        )
        .unwrap();
        let mut fake_init = vec![1u8, 0, 0, 0];
        fake_init.extend_from_slice(&[0x5a; 144]);
        sock.send_to(&fake_init, gw_a1_wan).unwrap();
    })
    .join()
    .unwrap();

    let c = |role: &str, site: &str, index: u16, name: &str| counter(&info, role, site, index, name);
    eventually("demux a counts the TUN garbage", || {
        c("demux", "a", 0, "drop_truncated_tun") + c("demux", "a", 0, "drop_bad_udp_length_tun") >= 5
            // Orphan later fragments are not dropped: they go by their addresses.
            && c("demux", "a", 0, "fragment_cache_misses") >= 5
    });
    eventually("demux a counts the GENEVE garbage", || {
        c("demux", "a", 0, "drop_unknown_gateway") >= 1
            && c("demux", "a", 0, "drop_geneve_bad_version_lan") + c("demux", "a", 0, "drop_truncated_lan") >= 2
            && c("demux", "a", 0, "drop_vni_mismatch") >= 1
    });
    eventually("gateway a1 counts the LAN garbage", || {
        c("gw", "a", 1, "drop_lan_unknown_source") >= 1
            && c("gw", "a", 1, "drop_geneve_bad_version") >= 1
            && c("gw", "a", 1, "drop_lan_wrong_vni") >= 1
    });
    eventually("gateway a1 counts the WAN garbage", || {
        let suite: u64 = ["drop_wan_truncated", "wan_unauthenticated"]
            .iter()
            .map(|n| c("gw", "a", 1, n))
            .sum();
        suite >= 3
    });

    // Well-formed GENEVE forged from gateway a1's address with pair 1's VNI: only the datagram
    // whose inner packet comes from site b to site a may reach host a.
    let spoof_port = 7200;
    let listening = in_netns(&info.hosts.a.netns, move || {
        let sock = UdpSocket::bind((ha, spoof_port)).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            got.push((buf[..n].to_vec(), from));
        }
        got
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let lan_host = Ipv4Addr::new(198, 18, 1, 77);
    let outsider = Ipv4Addr::new(203, 0, 113, 9);
    let off_site = Ipv4Addr::new(198, 18, 10, 99);
    in_netns(&topo.gateway_ns("a", 1), move || {
        let forge = |src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]| {
            let inner = ipv4_udp(src, dst, 5555, spoof_port, payload);
            send_forged_udp(gw_a1_lan, demux_a, &geneve(1, 0x0800, &inner));
        };
        forge(lan_host, ha, b"spoofed local source");
        forge(outsider, ha, b"spoofed outside source");
        forge(hb, off_site, b"spoofed destination");
        forge(hb, ha, b"genuine");
    })
    .join()
    .unwrap();
    eventually("demux a counts the spoofed inner addresses", || {
        c("demux", "a", 0, "drop_src_not_peer_site") >= 2 && c("demux", "a", 0, "drop_dst_not_local_site") >= 1
    });
    let got = listening.join().unwrap();
    let payloads: Vec<&[u8]> = got.iter().map(|(p, _)| p.as_slice()).collect();
    assert_eq!(
        payloads,
        vec![&b"genuine"[..]],
        "only the genuine datagram reaches host a"
    );

    // Every daemon is alive and traffic still crosses both pairs.
    for p in &info.processes {
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(p.pid as i32, 0) };
        assert_eq!(alive, 0, "{} {}{} died", p.role, p.site, p.index);
    }
    let b_addr: Ipv4Addr = info.hosts.b.addr;
    let received = in_netns(&info.hosts.b.netns, move || {
        let sock = UdpSocket::bind((b_addr, 7100)).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut n = 0;
        let mut buf = [0u8; 64];
        while sock.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let a_addr = info.hosts.a.addr;
    in_netns(&info.hosts.a.netns, move || {
        for port in 0..64u16 {
            UdpSocket::bind((a_addr, 41000 + port))
                .unwrap()
                .send_to(b"still alive", (b_addr, 7100))
                .unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(received.join().unwrap(), 64, "traffic flows after the garbage");
}
