//! Writes the seed corpora of the braid (non-IPsec) targets: `cargo run --release --bin
//! braid_seeds` (from `fuzz/`; an optional argument names the corpus root instead of
//! `corpus/`). `seeds` writes those of the braid-ipsec targets.
//!
//! Every seed is a valid input in the target's format, so the fuzzer starts deep: TCP SYNs
//! with MSS options over IPv4 (with and without IP options) and IPv6, ICMP errors, fragments;
//! GENEVE datagrams (with options) carrying canary probes from the peer, replies to the
//! probes the target's canary sent, echo replies, and ordinary packets; TSO super-packets and
//! batches of consecutive TCP segments of several flows; control datagrams sealed with the
//! target's key; the example cluster files and their `to_yaml` forms; scripts for the gateway
//! targets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use braid_core::config::ClusterConfig;
use braid_core::control::{seal, Body, DaemonId, Header, Heartbeat, Membership, PairReport};
use braid_demux::canary::{Canary, Inbound};
use braid_demux::offload::{GsoType, VnetHeader, VNET_HEADER_LEN};
use braid_fuzz::control::keyring;
use braid_fuzz::corpus::Corpus;
use braid_fuzz::packet::{ipv4, ipv6, udp, Tcp, ACK, ICMP, ICMPV6, PSH, SYN, TCP, UDP};

const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const B4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
/// The `geneve_inbound` target's canary addresses and probe time.
const LOCAL4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
const PEER4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0xfe);
const SENT_MS: u64 = 1_000_000;

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("corpus"), PathBuf::from);
    let packets = sample_packets();

    let mut classify = Corpus::new(&root, "classify", 4096);
    for p in &packets {
        for (mode, mtu) in [(0u8, 1500u16), (1, 1280), (1, 576), (0, 9000), (1, 60)] {
            classify.add([&[mode][..], &mtu.to_le_bytes(), p].concat());
        }
    }
    classify.write()?;

    let mut geneve = Corpus::new(&root, "geneve_inbound", 4096);
    geneve_seeds(&mut geneve, &packets);
    geneve.write()?;

    let mut segment = Corpus::new(&root, "offload_segment", 4096);
    let mut coalesce = Corpus::new(&root, "offload_coalesce", 4096);
    offload_seeds(&mut segment, &mut coalesce);
    segment.write()?;
    coalesce.write()?;

    let mut control = Corpus::new(&root, "control_envelope", 4096);
    control_seeds(&mut control);
    control.write()?;

    let mut yaml = Corpus::new(&root, "cluster_yaml", 8192);
    yaml_seeds(&mut yaml)?;
    yaml.write()?;

    for target in ["gw_wireguard", "gw_ipsec"] {
        let mut gw = Corpus::new(&root, target, 4096);
        gw_seeds(&mut gw, &packets);
        gw.write()?;
    }
    Ok(())
}

fn tcp(flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    Tcp {
        src_port: 50000,
        dst_port: 443,
        seq: 0x0102_0304,
        ack: 0x0a0b_0c0d,
        flags,
        window: 65535,
        options,
        payload,
    }
    .bytes()
}

/// Packets of every shape the classifier and the clamp tell apart.
fn sample_packets() -> Vec<Vec<u8>> {
    let mss = [2, 4, 0x05, 0xb4];
    let syn_options = [2, 4, 0x23, 0x28, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0];
    let odd_mss = [1, 2, 4, 0xff, 0xff, 0, 0, 0];
    let two_mss = [2, 4, 0x40, 0, 2, 4, 0x20, 0];
    let ip_options = [0x94, 4, 0, 0];
    let mut out = Vec::new();
    for options in [&mss[..], &syn_options, &odd_mss, &two_mss, &[]] {
        for flags in [SYN, SYN | ACK, ACK] {
            let seg = tcp(flags, options, b"");
            out.push(ipv4(A4, B4, TCP, &[], &seg));
            out.push(ipv4(A4, B4, TCP, &ip_options, &seg));
            out.push(ipv6(A6, B6, TCP, &seg));
        }
    }
    let data = tcp(ACK | PSH, &[], b"hello, world");
    out.push(ipv4(A4, B4, TCP, &[], &data));
    out.push(ipv4(A4, B4, UDP, &[], &udp(5353, 53, b"query")));
    out.push(ipv6(A6, B6, UDP, &udp(5353, 53, b"query")));
    // IPv6 hop-by-hop then TCP SYN, and a first fragment.
    let syn = tcp(SYN, &mss, b"");
    out.push(ipv6(A6, B6, 0, &[[TCP, 0, 1, 4, 0, 0, 0, 0].as_slice(), &syn].concat()));
    out.push(ipv6(
        A6,
        B6,
        44,
        &[[TCP, 0, 0, 1, 0, 0, 0, 9].as_slice(), &syn].concat(),
    ));
    out.push(ipv6(A6, B6, 44, &[TCP, 0, 0, 0, 0, 0, 0, 9]));
    let mut first = ipv4(A4, B4, UDP, &[], &udp(1, 2, &[0; 16]));
    first[6] = 0x20; // MF
    out.push(first);
    let mut later = ipv4(A4, B4, UDP, &[], &[0; 16]);
    later[6] = 0x00;
    later[7] = 0x02;
    out.push(later);
    // Echo and errors quoting a flow.
    let quoted = ipv4(B4, A4, UDP, &[], &udp(53, 5353, b"answer"));
    out.push(ipv4(
        A4,
        B4,
        ICMP,
        &[],
        &[[3, 1, 0, 0, 0, 0, 0, 0].as_slice(), &quoted[..28]].concat(),
    ));
    out.push(ipv4(A4, B4, ICMP, &[], &[8, 0, 0, 0, 0, 7, 0, 1]));
    let quoted6 = ipv6(B6, A6, TCP, &syn);
    out.push(ipv6(
        A6,
        B6,
        ICMPV6,
        &[[2, 0, 0, 0, 0, 0, 5, 0].as_slice(), &quoted6[..48]].concat(),
    ));
    out.push(ipv6(A6, B6, ICMPV6, &[128, 0, 0, 0, 0, 7, 0, 1]));
    out
}

fn geneve_header(pair: u16, ethertype: u16, options: &[u8]) -> Vec<u8> {
    let mut h = vec![(options.len() / 4) as u8, 0];
    h.extend_from_slice(&ethertype.to_be_bytes());
    h.extend_from_slice(&[0, (pair >> 8) as u8, pair as u8, 0]);
    h.extend_from_slice(options);
    h
}

/// A `geneve_inbound` input: mode, pair, clock, GENEVE header, inner packet.
fn geneve_input(mode: u8, pair: u16, clock: u16, options: &[u8], inner: &[u8]) -> Vec<u8> {
    let ethertype = if inner.first().map(|b| b >> 4) == Some(6) {
        0x86dd
    } else {
        0x0800
    };
    [
        &[mode][..],
        &pair.to_le_bytes(),
        &clock.to_le_bytes(),
        &geneve_header(pair, ethertype, options),
        inner,
    ]
    .concat()
}

fn geneve_seeds(corpus: &mut Corpus, packets: &[Vec<u8>]) {
    let option = [0x01, 0x08, 0x01, 0x01, 0xde, 0xad, 0xbe, 0xef];
    for p in packets {
        corpus.add(geneve_input(0, 1, 5, &[], p));
        corpus.add(geneve_input(4, 2, 5, &option, p));
    }
    let pairs = [1u16, 2, 3];
    for v6 in [false, true] {
        let (local, peer): (IpAddr, IpAddr) = if v6 {
            (LOCAL6.into(), PEER6.into())
        } else {
            (LOCAL4.into(), PEER4.into())
        };
        let family = if v6 { 2 } else { 0 };
        let mut buf = [0u8; 128];
        for &pair in &pairs {
            // A probe from the peer demux, which the target answers.
            let len = Canary::new(peer, local, &pairs).probe(pair, SENT_MS - 7, &mut buf);
            corpus.add(geneve_input(family, pair, 20, &[], &buf[..len]));
            // The peer's reply to the target's own probe (seq 0 of that pair).
            let len = Canary::new(local, peer, &pairs).probe(pair, SENT_MS, &mut buf);
            let mut reply = [0u8; 128];
            let Inbound::Reply { len } =
                Canary::new(peer, local, &pairs).inbound(&buf[..len], pair, SENT_MS, SENT_MS * 1000, &mut reply)
            else {
                panic!("the peer answers a probe")
            };
            corpus.add(geneve_input(family, pair, 20, &[], &reply[..len]));
            corpus.add(geneve_input(family, pair, 2000, &option, &reply[..len]));
            // An external site's echo reply to the target's echo probe.
            let len = Canary::new_echo(local, peer, &pairs).probe(pair, SENT_MS, &mut buf);
            corpus.add(geneve_input(family | 1, pair, 20, &[], &echo_reply(&buf[..len])));
        }
    }
}

/// The echo reply a host sends to an echo request: addresses swapped, type changed.
fn echo_reply(request: &[u8]) -> Vec<u8> {
    let mut r = request.to_vec();
    if r[0] >> 4 == 4 {
        let (src, dst) = (r[12..16].to_vec(), r[16..20].to_vec());
        r[12..16].copy_from_slice(&dst);
        r[16..20].copy_from_slice(&src);
        let ihl = usize::from(r[0] & 0x0f) * 4;
        r[ihl] = 0;
    } else {
        let (src, dst) = (r[8..24].to_vec(), r[24..40].to_vec());
        r[8..24].copy_from_slice(&dst);
        r[24..40].copy_from_slice(&src);
        r[40] = 129;
    }
    r
}

fn vnet(gso_type: GsoType, gso_size: u16, csum_start: u16) -> [u8; VNET_HEADER_LEN] {
    let mut out = [0u8; VNET_HEADER_LEN];
    VnetHeader {
        flags: 1,
        gso_type,
        hdr_len: 0,
        gso_size,
        csum_start,
        csum_offset: 16,
    }
    .write(&mut out);
    out
}

fn offload_seeds(segment: &mut Corpus, coalesce: &mut Corpus) {
    let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let timestamps = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    for options in [&[][..], &timestamps] {
        for (len, gso) in [(3000, 1448), (1000, 500), (700, 100), (1, 1), (0, 1448), (2896, 1448)] {
            let seg = Tcp {
                src_port: 443,
                dst_port: 50000,
                seq: 0xffff_f000,
                ack: 77,
                flags: ACK | PSH,
                window: 512,
                options,
                payload: &payload[..len],
            }
            .bytes();
            let v4 = ipv4(A4, B4, TCP, &[], &seg);
            let v6 = ipv6(A6, B6, TCP, &seg);
            for short in [0u8, 1] {
                segment.add([&vnet(GsoType::TcpV4, gso, 20)[..], &[short], &v4].concat());
                segment.add([&vnet(GsoType::TcpV6, gso, 40)[..], &[short], &v6].concat());
            }
            segment.add([&vnet(GsoType::None, 0, 20)[..], &[0], &v4].concat());
        }
    }
    // Batches: consecutive segments of two flows interleaved, a retransmission, a lone SYN.
    for mss in [100usize, 250] {
        let mut batch = vec![1u8];
        let mut push = |p: &[u8]| {
            batch.extend_from_slice(&(p.len() as u16).to_le_bytes());
            batch.extend_from_slice(p);
        };
        for i in 0..6usize {
            for (flow, v6) in [(0u16, false), (1, true)] {
                let last = i == 5;
                let seg = Tcp {
                    src_port: 443 + flow,
                    dst_port: 50000,
                    seq: 1000 + (i * mss) as u32,
                    ack: 9,
                    flags: if last { ACK | PSH } else { ACK },
                    window: 300,
                    options: &[],
                    payload: &payload[i * mss..(i + 1) * mss - usize::from(last)],
                }
                .bytes();
                push(&if v6 {
                    ipv6(A6, B6, TCP, &seg)
                } else {
                    ipv4(A4, B4, TCP, &[], &seg)
                });
            }
            if i == 3 {
                push(&ipv4(A4, B4, TCP, &[], &tcp(SYN, &[2, 4, 5, 0xb4], b"")));
            }
        }
        coalesce.add(batch.clone());
        batch[0] = 0;
        coalesce.add(batch);
    }
    // UDP merging on (mode bit 1): runs of one flow's datagrams, IPv4 and IPv6, the last of a
    // run shorter, a datagram of another flow in between.
    for size in [200usize, 1200] {
        let mut batch = vec![3u8];
        let mut push = |p: &[u8]| {
            batch.extend_from_slice(&(p.len() as u16).to_le_bytes());
            batch.extend_from_slice(p);
        };
        for v6 in [false, true] {
            for i in 0..5usize {
                let len = if i == 4 { size / 2 } else { size };
                let datagram = udp(5000, 5201, &payload[i * 7..i * 7 + len]);
                push(&if v6 {
                    ipv6(A6, B6, UDP, &datagram)
                } else {
                    ipv4(A4, B4, UDP, &[], &datagram)
                });
                if i == 2 && !v6 {
                    push(&ipv4(A4, B4, UDP, &[], &udp(5001, 5201, &payload[..size])));
                }
            }
        }
        coalesce.add(batch);
    }
}

fn control_seeds(corpus: &mut Corpus) {
    let keys = keyring();
    let mut heartbeat = Heartbeat::new(DaemonId::gateway("a", 3));
    heartbeat.pid = 4242;
    heartbeat.session_established = Some(true);
    heartbeat.suite = Some("ipsec".into());
    heartbeat.rekeys = Some(2);
    heartbeat.pairs = vec![PairReport::default()];
    let bodies = [
        Body::Heartbeat(Box::new(heartbeat)),
        Body::Heartbeat(Box::new(Heartbeat::new(DaemonId::demux("b")))),
        Body::Membership(Membership {
            term: 3,
            epoch: 7,
            active: vec![1, 2, 3],
            serving: vec![1, 3],
            probing: vec![2],
            gateways: Vec::new(),
        }),
        Body::MembershipAck { epoch: 7, term: 3 },
        Body::Hello,
    ];
    for (i, body) in bodies.iter().enumerate() {
        let sender = if i == 0 {
            DaemonId::gateway("a", 1)
        } else {
            DaemonId::demux("a")
        };
        let header = Header {
            incarnation: 0x1234_5678_9abc_def0 + i as u64,
            seq: i as u64,
            echo: if i % 2 == 0 { 0 } else { 0xfeed },
            sender: sender.clone(),
        };
        // Sealed as the daemon would send it to the controller.
        let daemon = braid_core::control::Keyring::daemon(
            sender.clone(),
            &braid_core::keys::ClusterSecret::from_base64(braid_fuzz::control::SECRET)
                .expect("fixed secret")
                .role_key(&sender.wire_name()),
        );
        let key = daemon
            .sealing_key(&DaemonId::controller())
            .expect("a daemon seals to the controller");
        let sealed = seal(key, &header, body).expect("small body");
        debug_assert!(keys.opening_key(&sender).is_some());
        // Signed by the target (mode 1: the tag is left off) and as sent (mode 0).
        corpus.add([&[1u8, 0, 0][..], &sealed[..sealed.len() - 32]].concat());
        corpus.add([&[0u8, 0, 0][..], &sealed].concat());
    }
}

fn yaml_seeds(corpus: &mut Corpus) -> std::io::Result<()> {
    let path = Path::new("/nonexistent/braid-fuzz/cluster.yaml");
    for example in ["two-site.yaml", "ipsec-two-site.yaml", "ipsec-external-site.yaml"] {
        let text = std::fs::read_to_string(Path::new("../examples").join(example))?;
        let config = ClusterConfig::from_yaml_str(&text, path).expect("the examples validate");
        corpus.add(config.to_yaml().into_bytes());
        let stripped: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| format!("{}\n", l.split(" # ").next().unwrap_or(l)))
            .collect();
        corpus.add(stripped.into_bytes());
    }
    Ok(())
}

/// Scripts for `braid_fuzz::gw`: inject, send data every way, GENEVE from the LAN, tick.
fn gw_seeds(corpus: &mut Corpus, packets: &[Vec<u8>]) {
    let inject =
        |to: u8, from: u8, bytes: &[u8]| [&[0u8, to, from][..], &(bytes.len() as u16).to_le_bytes(), bytes].concat();
    let data = |how: u8, at: u16, inner: &[u8]| {
        [
            &[2u8, how][..],
            &at.to_le_bytes(),
            &(inner.len() as u16).to_le_bytes(),
            inner,
        ]
        .concat()
    };
    let inner = ipv4(A4, B4, UDP, &[], &udp(5353, 53, b"through the tunnel"));
    let inner6 = ipv6(A6, B6, TCP, &tcp(ACK, &[], b"six"));
    // GENEVE from the demux to gateway `a` (pair 1), with and without an option.
    let lan = |options: &[u8], inner: &[u8]| {
        let ethertype = if inner[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        let datagram = [geneve_header(1, ethertype, options), inner.to_vec()].concat();
        [&[3u8, 0][..], &(datagram.len() as u16).to_le_bytes(), &datagram].concat()
    };
    let option = [0x01, 0x08, 0x01, 0x01, 0xde, 0xad, 0xbe, 0xef];
    corpus.add([lan(&[], &inner), lan(&option, &inner6), vec![4], lan(&[], &inner6)].concat());
    let mut all = Vec::new();
    for how in 0..5u8 {
        for at in [0u16, 3, 17, 40, 0x1234] {
            let script = [data(how, at, &inner), data(how, at, &inner6)].concat();
            all.extend_from_slice(&script);
            corpus.add(script);
        }
    }
    for (i, p) in packets.iter().enumerate().take(12) {
        corpus.add([data(0, 0, p), inject(i as u8 & 1, i as u8, p)].concat());
    }
    // Messages of each protocol's framing: WireGuard types 1–4, a keepalive, the non-ESP
    // marker before an IKE header, an ESP header.
    let mut wg = vec![1u8, 0, 0, 0];
    wg.resize(148, 0x11);
    let mut ike = vec![0u8; 4 + 28];
    ike[4 + 17] = 0x20;
    ike[4 + 18] = 34;
    ike[4 + 19] = 0x08;
    ike[4 + 27] = 28;
    for (i, m) in [
        wg,
        ike,
        vec![0xff],
        vec![
            0, 0, 0, 1, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
        ],
    ]
    .iter()
    .enumerate()
    {
        corpus.add([inject(0, i as u8, m), vec![4], data(0, 0, &inner)].concat());
    }
    corpus.add([all, vec![4, 4]].concat());
}
