//! Independent IP/TCP helpers the packet targets check braid against: an RFC 1071 checksum,
//! pseudo-headers, the TCP segment of a plain packet, an option walker, RFC 8926 GENEVE
//! acceptance, and builders for the seed corpora.
//!
//! Design: nothing here calls `braid_core::wire`; a target that asserts "the checksum is
//! still valid" must not ask the code under test. Only the simplest layouts are located
//! (IPv4 with any header length, IPv6 whose next header is TCP or UDP directly); anything else
//! is `None` and the caller checks less.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// The 16-bit ones' complement sum of `data` added to `sum` (RFC 1071), not yet folded.
pub fn sum(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a sum to 16 bits.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Where the transport segment of a packet lies and its pseudo-header sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub version: u8,
    pub proto: u8,
    /// Offset of the transport header (the IP header length).
    pub start: usize,
    /// End of the segment (the IP total length).
    pub end: usize,
    pub pseudo: u64,
}

impl Segment {
    /// The segment of an unfragmented IPv4 packet (any header length) or of an IPv6 packet
    /// without extension headers; `None` for anything else or inconsistent lengths.
    pub fn locate(packet: &[u8]) -> Option<Segment> {
        match packet.first()? >> 4 {
            4 => {
                let start = usize::from(packet[0] & 0x0f) * 4;
                let end = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
                let fragment = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x3fff;
                if start < 20 || end < start || end > packet.len() || fragment != 0 {
                    return None;
                }
                let proto = packet[9];
                let pseudo = sum(0, &packet[12..20]) + u64::from(proto) + (end - start) as u64;
                Some(Segment {
                    version: 4,
                    proto,
                    start,
                    end,
                    pseudo,
                })
            }
            6 => {
                let end = 40 + usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]));
                if packet.len() < 40 || end > packet.len() {
                    return None;
                }
                let proto = packet[6];
                let pseudo = sum(0, &packet[8..40]) + u64::from(proto) + (end - 40) as u64;
                Some(Segment {
                    version: 6,
                    proto,
                    start: 40,
                    end,
                    pseudo,
                })
            }
            _ => None,
        }
    }

    /// The segment's bytes.
    pub fn bytes<'p>(&self, packet: &'p [u8]) -> &'p [u8] {
        &packet[self.start..self.end]
    }

    /// Whether the transport checksum (TCP or UDP; an all-zero UDP IPv4 checksum counts) holds.
    pub fn checksum_ok(&self, packet: &[u8]) -> bool {
        fold(sum(self.pseudo, self.bytes(packet))) == 0xffff
    }

    /// Offset of the transport checksum field, if the segment holds it.
    fn checksum_at(&self) -> Option<usize> {
        let at = self.start
            + match self.proto {
                TCP => 16,
                UDP => 6,
                _ => return None,
            };
        (at + 2 <= self.end).then_some(at)
    }

    /// Writes the correct transport checksum; false if there is no field to write.
    pub fn fill_checksum(&self, packet: &mut [u8]) -> bool {
        let Some(at) = self.checksum_at() else {
            return false;
        };
        packet[at..at + 2].fill(0);
        let value = !fold(sum(self.pseudo, self.bytes(packet)));
        packet[at..at + 2].copy_from_slice(&value.to_be_bytes());
        true
    }

    /// The TCP header length from the data offset, if it fits the segment.
    pub fn tcp_header_len(&self, packet: &[u8]) -> Option<usize> {
        if self.proto != TCP || self.end - self.start < 20 {
            return None;
        }
        let len = usize::from(packet[self.start + 12] >> 4) * 4;
        (len >= 20 && self.start + len <= self.end).then_some(len)
    }

    /// The TCP payload, if the header fits.
    pub fn tcp_payload<'p>(&self, packet: &'p [u8]) -> Option<&'p [u8]> {
        Some(&packet[self.start + self.tcp_header_len(packet)?..self.end])
    }
}

/// Whether an IPv4 header checksum holds.
pub fn ipv4_header_ok(packet: &[u8]) -> bool {
    let len = usize::from(packet[0] & 0x0f) * 4;
    packet.len() >= len && fold(sum(0, &packet[..len])) == 0xffff
}

/// The (offset in the options, value) of every well-formed MSS option (kind 2, length 4) of
/// a TCP options block, walking as RFC 9293 §3.1 says: EOL ends, NOP is one byte, every other
/// kind has a length byte of at least 2. `None` if the options are malformed.
pub fn mss_options(options: &[u8]) -> Option<Vec<(usize, u16)>> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < options.len() {
        match options[at] {
            0 => break,
            1 => at += 1,
            kind => {
                let len = usize::from(*options.get(at + 1)?);
                if len < 2 || at + len > options.len() {
                    return None;
                }
                if kind == 2 {
                    if len != 4 {
                        return None;
                    }
                    found.push((at, u16::from_be_bytes([options[at + 2], options[at + 3]])));
                }
                at += len;
            }
        }
    }
    Some(found)
}

/// What a TCP segment of a seed packet carries.
#[derive(Clone, Debug)]
pub struct Tcp<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: &'a [u8],
    pub payload: &'a [u8],
}

impl Tcp<'_> {
    pub fn bytes(&self) -> Vec<u8> {
        let header_len = 20 + self.options.len();
        let mut seg = Vec::with_capacity(header_len + self.payload.len());
        seg.extend_from_slice(&self.src_port.to_be_bytes());
        seg.extend_from_slice(&self.dst_port.to_be_bytes());
        seg.extend_from_slice(&self.seq.to_be_bytes());
        seg.extend_from_slice(&self.ack.to_be_bytes());
        seg.push(((header_len / 4) as u8) << 4);
        seg.push(self.flags);
        seg.extend_from_slice(&self.window.to_be_bytes());
        seg.extend_from_slice(&[0; 4]);
        seg.extend_from_slice(self.options);
        seg.extend_from_slice(self.payload);
        seg
    }
}

/// A UDP datagram with `payload` (checksum left zero; [`Segment::fill_checksum`] fills it).
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&src_port.to_be_bytes());
    d.extend_from_slice(&dst_port.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// An IPv4 packet (DF set, TTL 64, header checksum filled) around `l4`, with its transport
/// checksum filled.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ip_options: &[u8], l4: &[u8]) -> Vec<u8> {
    let header_len = 20 + ip_options.len();
    let total = header_len + l4.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x40 | (header_len / 4) as u8;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p.extend_from_slice(ip_options);
    let check = !fold(sum(0, &p));
    p[10..12].copy_from_slice(&check.to_be_bytes());
    p.extend_from_slice(l4);
    if let Some(segment) = Segment::locate(&p) {
        segment.fill_checksum(&mut p);
    }
    p
}

/// An IPv6 packet around `rest` (which starts with `next_header`'s header), with the transport
/// checksum filled when `next_header` is TCP or UDP.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(rest.len() as u16).to_be_bytes());
    p[6] = next_header;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p.extend_from_slice(rest);
    if let Some(segment) = Segment::locate(&p) {
        segment.fill_checksum(&mut p);
    }
    p
}

/// Whether a GENEVE datagram is acceptable by RFC 8926 §3.4–3.5 to an endpoint that
/// understands no option: version 0, no C bit, options inside the datagram and tiling their
/// length exactly, none critical.
pub fn geneve_accepts(d: &[u8]) -> bool {
    if d.len() < 8 || d[0] >> 6 != 0 || d[1] & 0x40 != 0 {
        return false;
    }
    let end = 8 + usize::from(d[0] & 0x3f) * 4;
    if end > d.len() {
        return false;
    }
    let mut at = 8;
    while at < end {
        if at + 4 > end || d[at + 2] & 0x80 != 0 {
            return false;
        }
        at += 4 + usize::from(d[at + 3] & 0x1f) * 4;
    }
    at == end
}
