//! What the kernel does with a UDP super-packet the demux writes to its TUN: the reference the
//! coalescer's tests and the fuzzer check its writes against. Not on the data path (the kernel
//! does this there), so it allocates and panics freely: a panic is a write the kernel would
//! take differently from what the demux meant.

use std::net::{Ipv4Addr, Ipv6Addr};

use braid_core::wire::checksum;

use super::vnet::{FLAG_NEEDS_CSUM, VNET_HEADER_LEN};

/// A UDP checksum over `udp` with pseudo-header sum `pseudo`, 0 sent as 0xFFFF (RFC 768).
pub fn udp_checksum(pseudo: u64, udp: &[u8]) -> u16 {
    match checksum::finish(checksum::accumulate(pseudo, udp)) {
        0 => 0xFFFF,
        sum => sum,
    }
}

/// What the kernel does with a `VIRTIO_NET_HDR_GSO_UDP_L4` write: checks the partial
/// checksum it was given, then cuts the payload into `gso_size` pieces behind copies of
/// the headers (IPv4 identifications counted up from the first), each checksummed.
pub fn split_udp_super_packet(buf: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(buf[0], FLAG_NEEDS_CSUM);
    assert_eq!(buf[1], 5, "GSO_UDP_L4");
    let field = |at: usize| usize::from(u16::from_ne_bytes([buf[at], buf[at + 1]]));
    let (hdr_len, gso_size, csum_start, csum_offset) = (field(2), field(4), field(6), field(8));
    let packet = &buf[VNET_HEADER_LEN..];
    let v4 = packet[0] >> 4 == 4;
    let t = if v4 { 20 } else { 40 };
    assert_eq!((csum_start, csum_offset, hdr_len), (t, 6, t + 8));
    assert_eq!(
        usize::from(u16::from_be_bytes([packet[t + 4], packet[t + 5]])),
        packet.len() - t
    );
    let pseudo_of = |p: &[u8], len: usize| {
        if v4 {
            let a = |r: std::ops::Range<usize>| Ipv4Addr::from(<[u8; 4]>::try_from(&p[r]).unwrap());
            checksum::pseudo_header_v4(a(12..16), a(16..20), 17, len as u16)
        } else {
            let a = |r: std::ops::Range<usize>| Ipv6Addr::from(<[u8; 16]>::try_from(&p[r]).unwrap());
            checksum::pseudo_header_v6(a(8..24), a(24..40), 17, len as u32)
        }
    };
    // The partial checksum is the pseudo-header sum of the whole super-packet.
    let seeded = u16::from_be_bytes([packet[t + 6], packet[t + 7]]);
    assert_eq!(seeded, checksum::fold(pseudo_of(packet, packet.len() - t)));
    let payload = &packet[hdr_len..];
    let first_id = u16::from_be_bytes([packet[4], packet[5]]);
    payload
        .chunks(gso_size)
        .enumerate()
        .map(|(i, chunk)| {
            let mut seg = packet[..hdr_len].to_vec();
            seg.extend_from_slice(chunk);
            let len = seg.len();
            if v4 {
                seg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                seg[4..6].copy_from_slice(&first_id.wrapping_add(i as u16).to_be_bytes());
                seg[10..12].fill(0);
                let sum = checksum::checksum(&seg[..20]);
                seg[10..12].copy_from_slice(&sum.to_be_bytes());
            } else {
                seg[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            }
            seg[t + 4..t + 6].copy_from_slice(&((len - t) as u16).to_be_bytes());
            seg[t + 6..t + 8].fill(0);
            let sum = udp_checksum(pseudo_of(&seg, len - t), &seg[t..]);
            seg[t + 6..t + 8].copy_from_slice(&sum.to_be_bytes());
            seg
        })
        .collect()
}
