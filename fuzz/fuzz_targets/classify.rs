//! `braid_core::wire::classify` and `clamp_tcp_mss` on any packet, as both data-path
//! directions run them on what the TUN or a gateway hands in.
//!
//! Input: a mode byte (bit 0: first fill in the correct TCP/UDP checksum, so the clamp's
//! incremental update meets valid sums), the MTU (u16 LE), then the packet.
//!
//! Checks, against the independent helpers of `braid_fuzz::packet`:
//! * classify: an accepted packet's IP lengths lie inside the buffer; addresses, protocol and
//!   ports come from where the headers put them (for TCP and UDP of a plain packet); TCP flags
//!   only for TCP; a later fragment names the header's addresses;
//! * the clamp: an error or "unchanged" leaves every byte as it was; a change keeps the length,
//!   touches only the TCP header, only lowers MSS values (to exactly the limit), keeps a valid
//!   checksum valid (and an invalid one invalid), does not change what classify says, and a
//!   second clamp changes nothing; after any `Ok` no well-formed MSS option exceeds the limit.

#![no_main]

use std::net::IpAddr;

use braid_core::flow::{Classified, FiveTuple};
use braid_core::wire::{clamp_tcp_mss, classify};
use braid_fuzz::packet::{mss_options, Segment, SYN, TCP, UDP};
use braid_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let mode = input.u8();
    let mtu = input.u16();
    let mut packet = input.rest().to_vec();
    let segment = Segment::locate(&packet);
    if mode & 1 != 0 {
        if let Some(s) = segment {
            s.fill_checksum(&mut packet);
        }
    }

    let class = classify(&packet);
    if let Ok(class) = &class {
        check_class(&packet, segment, class);
    }

    let before = packet.clone();
    let result = clamp_tcp_mss(&mut packet, mtu);
    if !matches!(result, Ok(true)) {
        assert_eq!(packet, before, "{result:?} but the packet changed");
    }
    let Ok(changed) = result else { return };
    // Only where the segment is plainly located can the limit be known independently.
    let Some(s) = segment.filter(|s| s.proto == TCP) else {
        if changed {
            assert_eq!(packet.len(), before.len());
            assert_eq!(classify(&packet), class);
        }
        return;
    };
    let limit = u16::try_from(usize::from(mtu).saturating_sub(s.start + 20)).unwrap_or(u16::MAX);
    let tcp_len = s.tcp_header_len(&packet);
    if let Some(len) = tcp_len {
        if packet[s.start + 13] & SYN != 0 {
            if let Some(found) = mss_options(&packet[s.start + 20..s.start + len]) {
                for (at, mss) in found {
                    assert!(mss <= limit, "MSS {mss} at option offset {at} left above {limit}");
                }
            }
        }
    }
    if !changed {
        return;
    }
    assert_eq!(packet.len(), before.len());
    let len = tcp_len.expect("a clamped segment has a TCP header");
    let options_at = s.start + 20;
    let old = mss_options(&before[options_at..s.start + len]).expect("clamped options are well formed");
    let new = mss_options(&packet[options_at..s.start + len]).expect("clamping keeps options well formed");
    assert_eq!(old.len(), new.len());
    for ((at, was), (at2, now)) in old.iter().zip(&new) {
        assert_eq!(at, at2);
        assert!(now <= was, "MSS raised from {was} to {now}");
        assert!(now == was || *now == limit, "MSS {was} clamped to {now}, limit {limit}");
    }
    for (i, (a, b)) in before.iter().zip(&packet).enumerate() {
        let in_checksum = (s.start + 16..s.start + 18).contains(&i);
        let in_mss = new
            .iter()
            .any(|(at, _)| (options_at + at + 2..options_at + at + 4).contains(&i));
        assert!(
            a == b || in_checksum || in_mss,
            "byte {i} changed outside MSS and checksum"
        );
    }
    assert_eq!(
        s.checksum_ok(&packet),
        s.checksum_ok(&before),
        "checksum validity changed"
    );
    assert_eq!(classify(&packet), class);
    let again = packet.clone();
    assert_eq!(clamp_tcp_mss(&mut packet, mtu), Ok(false));
    assert_eq!(packet, again);
});

/// What an accepted packet's classification must agree with.
fn check_class(packet: &[u8], segment: Option<Segment>, class: &Classified) {
    let (src, dst) = header_addrs(packet);
    let (tuple, flags) = match *class {
        Classified::Whole { tuple, tcp_flags } => (tuple, tcp_flags),
        Classified::FirstFragment { tuple, frag, tcp_flags } => {
            assert_eq!((frag.src, frag.dst), (src, dst));
            (tuple, tcp_flags)
        }
        Classified::LaterFragment { frag } => {
            assert_eq!((frag.src, frag.dst), (src, dst));
            return;
        }
    };
    if flags != 0 {
        assert_eq!(tuple.proto, TCP, "TCP flags on {tuple:?}");
    }
    let Some(s) = segment else { return };
    if s.proto == TCP || s.proto == UDP {
        assert_eq!(tuple, plain_tuple(packet, s, src, dst));
        if s.proto == TCP {
            assert_eq!(flags, packet[s.start + 13]);
        }
    }
}

fn header_addrs(packet: &[u8]) -> (IpAddr, IpAddr) {
    if packet[0] >> 4 == 4 {
        assert!(packet.len() >= 20);
        let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        let header = usize::from(packet[0] & 0x0f) * 4;
        assert!(20 <= header && header <= total && total <= packet.len());
        let a: [u8; 4] = packet[12..16].try_into().unwrap();
        let b: [u8; 4] = packet[16..20].try_into().unwrap();
        (a.into(), b.into())
    } else {
        assert!(packet.len() >= 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]])));
        let a: [u8; 16] = packet[8..24].try_into().unwrap();
        let b: [u8; 16] = packet[24..40].try_into().unwrap();
        (a.into(), b.into())
    }
}

fn plain_tuple(packet: &[u8], s: Segment, src: IpAddr, dst: IpAddr) -> FiveTuple {
    let port = |at: usize| u16::from_be_bytes([packet[s.start + at], packet[s.start + at + 1]]);
    FiveTuple {
        src,
        dst,
        src_port: port(0),
        dst_port: port(2),
        proto: s.proto,
    }
}
