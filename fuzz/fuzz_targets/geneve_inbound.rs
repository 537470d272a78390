//! The demux's acceptance of a GENEVE datagram from a gateway, in the order
//! `demux/src/datapath/inbound.rs` (`accept_inbound`) runs it: `GenevePacket::new_checked`, the
//! VNI against the sending gateway's pair, `Canary::inbound` on the inner packet (a probe is
//! answered, a reply recorded), then `classify` and `clamp_tcp_mss` for what goes to the TUN.
//!
//! Input: a mode byte (bit 0: echo canaries for an external peer site; bit 1: IPv6 canary
//! addresses; bit 2: fill in the inner TCP/UDP checksum), the sending gateway's pair (u16 LE),
//! the clock (u16 LE, ms after the probes below were sent), then the datagram. Before it
//! arrives the canary has sent one probe on each of pairs 1–3, so seeds replying to them reach
//! the matching code.
//!
//! Checks: GENEVE acceptance agrees exactly with an independent reading of RFC 8926 (version
//! 0, no C bit, options inside the datagram tiling it exactly, none critical), and the
//! accessors read the fields where the RFC puts them; a canary reply written for a probe fits
//! the output, is a well-formed IP/UDP packet with valid checksums that classifies as UDP
//! between the canary addresses on the canary port, and the peer's canary consumes it; per-pair
//! results never count more answers than probes; the clamp keeps the inner length.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use braid_core::flow::Classified;
use braid_core::wire::geneve::GenevePacket;
use braid_core::wire::{clamp_tcp_mss, classify};
use braid_demux::canary::{Canary, Inbound, CANARY_PORT};
use braid_fuzz::packet::{geneve_accepts, ipv4_header_ok, Segment, UDP};
use braid_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

const PAIRS: [u16; 3] = [1, 2, 3];
const SENT_MS: u64 = 1_000_000;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let mode = input.u8();
    let from = input.u16();
    let now_ms = SENT_MS + u64::from(input.u16());
    let mut datagram = input.rest().to_vec();

    let geneve = GenevePacket::new_checked(&datagram[..]);
    assert_eq!(geneve.is_ok(), geneve_accepts(&datagram), "{:?}", geneve.err());
    let Ok(geneve) = geneve else { return };
    let header_len = geneve.header_len();
    assert_eq!(header_len, 8 + usize::from(datagram[0] & 0x3f) * 4);
    assert!(header_len <= datagram.len());
    assert_eq!(geneve.payload(), &datagram[header_len..]);
    assert_eq!(
        geneve.vni(),
        u32::from_be_bytes([0, datagram[4], datagram[5], datagram[6]])
    );
    if geneve.vni() != u32::from(from) {
        return;
    }
    let inner = &mut datagram[header_len..];
    if mode & 4 != 0 {
        if let Some(s) = Segment::locate(inner) {
            s.fill_checksum(inner);
        }
    }

    let (local, peer) = addresses(mode & 2 != 0);
    let mut canary = if mode & 1 != 0 {
        Canary::new_echo(local, peer, &PAIRS)
    } else {
        Canary::new(local, peer, &PAIRS)
    };
    let mut probe = [0u8; 128];
    for pair in PAIRS {
        assert!(canary.probe(pair, SENT_MS, &mut probe) > 0);
    }
    let mut reply = [0u8; 128];
    let verdict = canary.inbound(inner, from, now_ms, now_ms * 1000, &mut reply);
    for (pair, results) in canary.pairs() {
        assert!(
            results.answered + results.lost <= results.sent,
            "pair {pair}: {results:?}"
        );
    }
    match verdict {
        Inbound::Consumed => return,
        Inbound::Reply { len } => {
            assert!(mode & 1 == 0, "an echo canary never answers");
            check_reply(&reply[..len], local, peer, from);
            return;
        }
        Inbound::NotCanary => {}
    }
    let Ok(class) = classify(inner) else { return };
    let len = inner.len();
    let _ = clamp_tcp_mss(inner, 1500);
    assert_eq!(inner.len(), len);
    if let Ok(after) = classify(inner) {
        assert_eq!(after, class);
    }
});

/// The canary addresses of this site and the peer site.
fn addresses(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0xfe).into(),
        )
    } else {
        (
            Ipv4Addr::new(198, 18, 1, 254).into(),
            Ipv4Addr::new(198, 18, 2, 254).into(),
        )
    }
}

/// A reply the demux sends back through pair `from`.
fn check_reply(reply: &[u8], local: IpAddr, peer: IpAddr, from: u16) {
    let s = Segment::locate(reply).expect("a canary reply is a plain IP packet");
    assert_eq!(s.end, reply.len());
    assert_eq!(s.proto, UDP);
    if s.version == 4 {
        assert!(ipv4_header_ok(reply));
    }
    assert!(s.checksum_ok(reply), "canary reply UDP checksum");
    match classify(reply) {
        Ok(Classified::Whole { tuple, .. }) => {
            assert_eq!((tuple.src, tuple.dst), (local, peer));
            assert_eq!(
                (tuple.src_port, tuple.dst_port, tuple.proto),
                (CANARY_PORT, CANARY_PORT, UDP)
            );
        }
        other => panic!("canary reply classifies as {other:?}"),
    }
    let mut remote = Canary::new(peer, local, &PAIRS);
    let mut out = [0u8; 128];
    assert_eq!(
        remote.inbound(reply, from, SENT_MS, SENT_MS * 1000, &mut out),
        Inbound::Consumed
    );
}
