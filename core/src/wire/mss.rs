//! TCP MSS clamping, so hosts behind a 1500-byte MTU never send segments the tunnel must drop.
//!
//! Design: only unfragmented TCP segments with SYN set (SYN and SYN-ACK) are touched. The
//! largest MSS that fits is `mtu - ip_header_len - 20`, where `ip_header_len` counts IPv4
//! options or the IPv6 header plus its extension headers. The options are walked twice over a
//! stack copy: first to validate all of them (a malformed option leaves the packet untouched
//! and is reported), then to lower every MSS option above the limit. The TCP checksum is patched
//! incrementally (RFC 1624); an MSS value at an odd offset straddles two checksum words, which
//! in ones' complement arithmetic is the same as the byte-swapped value at an even offset.

use super::checksum;
use super::ipv4::Ipv4Packet;
use super::ipv6::{Ipv6Packet, IPV6_HEADER_LEN};
use super::tcp::{option_kind, TcpOptions, TcpPacket, TCP_MIN_HEADER_LEN};
use super::{read_u16, write_u16, WireError};
use crate::flow::{proto, tcp_flags};

const MAX_OPTIONS_LEN: usize = 40;
const MSS_OPTION_LEN: usize = 4;
const TCP_CHECKSUM_OFFSET: usize = 16;

/// Lowers the MSS option of a SYN or SYN-ACK so that a full segment fits `mtu`. Returns whether
/// the packet changed. Packets that are not unfragmented TCP SYNs are left alone (`Ok(false)`);
/// malformed IP or TCP headers and options are errors, and the packet is left unmodified.
pub fn clamp_tcp_mss(packet: &mut [u8], mtu: u16) -> Result<bool, WireError> {
    let Some((ip_header_len, segment_end)) = locate_tcp_segment(packet)? else {
        return Ok(false);
    };
    let segment = &mut packet[ip_header_len..segment_end];
    let tcp = TcpPacket::new_checked(&*segment)?;
    if tcp.flags() & tcp_flags::SYN == 0 {
        return Ok(false);
    }
    let limit = usize::from(mtu).saturating_sub(ip_header_len + TCP_MIN_HEADER_LEN);
    let limit = u16::try_from(limit).unwrap_or(u16::MAX);

    let mut options = [0u8; MAX_OPTIONS_LEN];
    let options_len = tcp.options().len();
    options[..options_len].copy_from_slice(tcp.options());
    let options = &options[..options_len];
    for option in TcpOptions::new(options) {
        let option = option?;
        if option.kind == option_kind::MAX_SEGMENT_SIZE && option.data.len() + 2 != MSS_OPTION_LEN {
            return Err(WireError::BadTcpOption);
        }
    }

    let mut changed = false;
    for option in TcpOptions::new(options).flatten() {
        if option.kind != option_kind::MAX_SEGMENT_SIZE {
            continue;
        }
        let mss = read_u16(option.data, 0);
        if mss <= limit {
            continue;
        }
        let at = TCP_MIN_HEADER_LEN + option.offset + 2;
        write_u16(segment, at, limit);
        let straddles_words = at % 2 == 1;
        let (old, new) = if straddles_words {
            (mss.swap_bytes(), limit.swap_bytes())
        } else {
            (mss, limit)
        };
        let sum = checksum::update(read_u16(segment, TCP_CHECKSUM_OFFSET), old, new);
        write_u16(segment, TCP_CHECKSUM_OFFSET, sum);
        changed = true;
    }
    Ok(changed)
}

/// The IP header length (with IPv6 extension headers) and the end of the TCP segment, or `None`
/// if the packet is not an unfragmented TCP segment.
fn locate_tcp_segment(packet: &[u8]) -> Result<Option<(usize, usize)>, WireError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(packet)?;
            if ip.protocol() != proto::TCP || ip.is_fragment() {
                return Ok(None);
            }
            Ok(Some((ip.header_len(), usize::from(ip.total_len()))))
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(packet)?;
            let chain = ip.extension_headers()?;
            let fragmented = chain.fragment.is_some_and(|f| f.offset != 0 || f.more_fragments);
            if chain.protocol != proto::TCP || fragmented {
                return Ok(None);
            }
            let end = IPV6_HEADER_LEN + usize::from(ip.payload_len());
            Ok(Some((IPV6_HEADER_LEN + chain.offset, end)))
        }
        Some(_) => Err(WireError::BadIpVersion),
        None => Err(WireError::Truncated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv6::ext;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
    const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2);

    const MSS_1460: [u8; 4] = [2, 4, 0x05, 0xB4];

    fn tcp_segment(options: &[u8], flags: u8) -> Vec<u8> {
        let header_len = TCP_MIN_HEADER_LEN + options.len();
        let mut seg = vec![0u8; header_len + 3];
        let mut t = TcpPacket::new_unchecked(&mut seg[..]);
        t.set_src_port(50000);
        t.set_dst_port(443);
        t.set_seq_number(0x0102_0304);
        t.set_header_len(header_len);
        t.set_flags(flags);
        t.set_window(65535);
        t.options_mut().copy_from_slice(options);
        t.payload_mut().copy_from_slice(b"odd");
        seg
    }

    /// An IPv4 packet with `ip_options` and a TCP segment with `options`, checksums filled.
    fn v4(ip_options: &[u8], options: &[u8], flags: u8) -> Vec<u8> {
        let seg = tcp_segment(options, flags);
        let header_len = 20 + ip_options.len();
        let mut pkt = vec![0u8; header_len + seg.len()];
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        ip.set_version_and_header_len(header_len);
        ip.set_total_len((header_len + seg.len()) as u16);
        ip.set_ttl(64);
        ip.set_protocol(proto::TCP);
        ip.set_src_addr(A4);
        ip.set_dst_addr(B4);
        pkt[20..header_len].copy_from_slice(ip_options);
        pkt[header_len..].copy_from_slice(&seg);
        Ipv4Packet::new_unchecked(&mut pkt[..]).fill_checksum();
        store_tcp_checksum(&mut pkt, header_len);
        pkt
    }

    /// An IPv6 packet with extension headers `ext_headers` (first Next Header `first`).
    fn v6(first: u8, ext_headers: &[u8], options: &[u8], flags: u8) -> Vec<u8> {
        let seg = tcp_segment(options, flags);
        let rest = [ext_headers, &seg].concat();
        let mut pkt = vec![0u8; 40 + rest.len()];
        let mut ip = Ipv6Packet::new_unchecked(&mut pkt[..]);
        ip.set_version_class_label(0, 0);
        ip.set_payload_len(rest.len() as u16);
        ip.set_next_header(first);
        ip.set_hop_limit(64);
        ip.set_src_addr(A6);
        ip.set_dst_addr(B6);
        ip.payload_mut().copy_from_slice(&rest);
        store_tcp_checksum(&mut pkt, 40 + ext_headers.len());
        pkt
    }

    /// The TCP checksum of the segment from `start` to the end of `pkt`, computed from scratch
    /// with the packet's own addresses.
    fn tcp_checksum_from_scratch(pkt: &[u8], start: usize) -> u16 {
        let len = pkt.len() - start;
        let pseudo = if pkt[0] >> 4 == 4 {
            let ip = Ipv4Packet::new_unchecked(pkt);
            checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), proto::TCP, len as u16)
        } else {
            let ip = Ipv6Packet::new_unchecked(pkt);
            checksum::pseudo_header_v6(ip.src_addr(), ip.dst_addr(), proto::TCP, len as u32)
        };
        let mut segment = pkt[start..].to_vec();
        TcpPacket::new_unchecked(&mut segment[..]).fill_checksum(pseudo);
        TcpPacket::new_unchecked(&segment[..]).checksum()
    }

    fn store_tcp_checksum(pkt: &mut [u8], start: usize) {
        let sum = tcp_checksum_from_scratch(pkt, start);
        write_u16(pkt, start + TCP_CHECKSUM_OFFSET, sum);
    }

    /// Whether the stored TCP checksum equals a full recomputation.
    fn tcp_checksum_is_exact(pkt: &[u8]) -> bool {
        let (start, end) = locate_tcp_segment(pkt).unwrap().unwrap();
        let stored = read_u16(pkt, start + TCP_CHECKSUM_OFFSET);
        stored == tcp_checksum_from_scratch(&pkt[..end], start)
    }

    fn assert_checksum_recomputes(pkt: &[u8]) {
        assert!(
            tcp_checksum_is_exact(pkt),
            "patched checksum differs from a recomputation"
        );
    }

    fn mss_values(pkt: &[u8]) -> Vec<u16> {
        let (start, end) = locate_tcp_segment(pkt).unwrap().unwrap();
        let tcp = TcpPacket::new_checked(&pkt[start..end]).unwrap();
        tcp.option_iter()
            .flatten()
            .filter(|o| o.kind == option_kind::MAX_SEGMENT_SIZE)
            .map(|o| read_u16(o.data, 0))
            .collect()
    }

    #[test]
    fn clamps_a_syn_and_patches_the_checksum() {
        let mut pkt = v4(&[], &MSS_1460, tcp_flags::SYN);
        assert_eq!(clamp_tcp_mss(&mut pkt, 1420), Ok(true));
        assert_eq!(mss_values(&pkt), vec![1380]);
        assert_checksum_recomputes(&pkt);
        assert!(Ipv4Packet::new_checked(&pkt[..]).unwrap().verify_checksum());
        assert_eq!(clamp_tcp_mss(&mut pkt, 1420), Ok(false), "already clamped");
    }

    #[test]
    fn clamps_an_mss_at_an_odd_offset() {
        let options = [1, 2, 4, 0x23, 0x45, 1, 1, 0];
        for mtu in [1280, 1300, 1420, 1500, 9000] {
            let mut pkt = v4(&[], &options, tcp_flags::SYN | tcp_flags::ACK);
            assert_eq!(clamp_tcp_mss(&mut pkt, mtu), Ok(true), "mtu {mtu}");
            assert_eq!(mss_values(&pkt), vec![mtu - 40]);
            assert_checksum_recomputes(&pkt);
        }
    }

    #[test]
    fn counts_ipv4_options_and_ipv6_extension_headers() {
        let mut with_options = v4(&[1, 1, 1, 0], &MSS_1460, tcp_flags::SYN);
        assert_eq!(clamp_tcp_mss(&mut with_options, 1400), Ok(true));
        assert_eq!(mss_values(&with_options), vec![1400 - 24 - 20]);
        assert_checksum_recomputes(&with_options);

        let dest_opts = [proto::TCP, 0, 1, 4, 0, 0, 0, 0];
        let mut v6_pkt = v6(ext::DEST_OPTIONS, &dest_opts, &MSS_1460, tcp_flags::SYN);
        assert_eq!(clamp_tcp_mss(&mut v6_pkt, 1420), Ok(true));
        assert_eq!(mss_values(&v6_pkt), vec![1420 - 48 - 20]);
        assert_checksum_recomputes(&v6_pkt);
    }

    #[test]
    fn clamps_every_mss_option() {
        let options = [2, 4, 0x05, 0xB4, 1, 2, 4, 0x23, 0x28, 0, 0, 0];
        let mut pkt = v4(&[], &options, tcp_flags::SYN);
        assert_eq!(clamp_tcp_mss(&mut pkt, 1000), Ok(true));
        assert_eq!(mss_values(&pkt), vec![960, 960]);
        assert_checksum_recomputes(&pkt);
    }

    #[test]
    fn leaves_other_packets_alone() {
        let cases = [
            (v4(&[], &MSS_1460, tcp_flags::ACK), "no SYN"),
            (v4(&[], &[2, 4, 0x01, 0x00], tcp_flags::SYN), "MSS already small"),
            (v4(&[], &[1, 1, 1, 1], tcp_flags::SYN), "no MSS option"),
            (
                v6(proto::TCP, &[], &[0, 2, 4, 0xFF], tcp_flags::SYN),
                "MSS after End of List",
            ),
        ];
        for (mut pkt, why) in cases {
            let before = pkt.clone();
            assert_eq!(clamp_tcp_mss(&mut pkt, 1420), Ok(false), "{why}");
            assert_eq!(pkt, before, "{why}");
        }
    }

    #[test]
    fn leaves_fragments_and_other_protocols_alone() {
        let mut fragment = v4(&[], &MSS_1460, tcp_flags::SYN);
        fragment[6] = 0x20; // MF
        Ipv4Packet::new_unchecked(&mut fragment[..]).fill_checksum();
        let mut udp = v4(&[], &MSS_1460, tcp_flags::SYN);
        udp[9] = proto::UDP;
        let first_fragment_header = [proto::TCP, 0, 0, 1, 0, 0, 0, 9];
        let mut v6_fragment = v6(ext::FRAGMENT, &first_fragment_header, &MSS_1460, tcp_flags::SYN);
        for pkt in [&mut fragment, &mut udp, &mut v6_fragment] {
            let before = pkt.clone();
            assert_eq!(clamp_tcp_mss(pkt, 1420), Ok(false));
            assert_eq!(*pkt, before);
        }
        let atomic_fragment_header = [proto::TCP, 0, 0, 0, 0, 0, 0, 9];
        let mut atomic = v6(ext::FRAGMENT, &atomic_fragment_header, &MSS_1460, tcp_flags::SYN);
        assert_eq!(
            clamp_tcp_mss(&mut atomic, 1420),
            Ok(true),
            "an atomic fragment is whole"
        );
        assert_checksum_recomputes(&atomic);
    }

    #[test]
    fn malformed_options_are_errors_and_change_nothing() {
        let cases: [&[u8]; 4] = [
            &[2, 4, 0x05, 0xB4, 8, 10, 0, 0], // timestamp runs past the header
            &[2, 4, 0x05, 0xB4, 3, 1, 0, 0],  // length below 2
            &[2, 3, 0x05, 0, 0, 0, 0, 0],     // MSS with the wrong length
            &[1, 1, 1, 2],                    // MSS header cut off by the header end
        ];
        for options in cases {
            let mut pkt = v4(&[], options, tcp_flags::SYN);
            let before = pkt.clone();
            assert_eq!(
                clamp_tcp_mss(&mut pkt, 1420),
                Err(WireError::BadTcpOption),
                "{options:?}"
            );
            assert_eq!(pkt, before);
        }
    }

    #[test]
    fn every_truncation_is_an_error_and_never_panics() {
        for pkt in [
            v4(&[], &MSS_1460, tcp_flags::SYN),
            v6(proto::TCP, &[], &MSS_1460, tcp_flags::SYN),
        ] {
            for len in 0..pkt.len() {
                let mut cut = pkt[..len].to_vec();
                assert!(clamp_tcp_mss(&mut cut, 1420).is_err(), "len {len}");
            }
        }
    }

    #[test]
    fn never_panics_on_mutated_syns() {
        let mut state = 0xC0FF_EE00_1234_5678_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let samples = [
            v4(&[1, 1, 1, 0], &[2, 4, 0x05, 0xB4, 1, 3, 3, 7], tcp_flags::SYN),
            v6(proto::TCP, &[], &[1, 2, 4, 0x23, 0x45, 0, 0, 0], tcp_flags::SYN),
        ];
        let mut verified_clamps = 0;
        for round in 0..100_000 {
            let mut pkt = samples[round % 2].clone();
            for _ in 0..2 {
                let at = (next() as usize) % pkt.len();
                pkt[at] = next() as u8;
            }
            let mtu = (next() % 1600) as u16;
            let was_exact = match locate_tcp_segment(&pkt) {
                Ok(Some((start, end))) => {
                    TcpPacket::new_checked(&pkt[start..end]).is_ok() && tcp_checksum_is_exact(&pkt)
                }
                _ => false,
            };
            if clamp_tcp_mss(&mut pkt, mtu) == Ok(true) && was_exact {
                assert_checksum_recomputes(&pkt);
                verified_clamps += 1;
            }
        }
        assert!(verified_clamps > 1000, "only {verified_clamps} clamps checked");
    }
}
