//! IPv6 (RFC 8200) header view and extension header walk.
//!
//! ```text
//! |Version| Traffic Class |              Flow Label               |
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! |                 Source Address (16 bytes)                     |
//! |              Destination Address (16 bytes)                   |
//! ```
//!
//! [`walk_extension_headers`] follows the Next Header chain through hop-by-hop options (0,
//! only first), routing (43), destination options (60) — all `(len + 1) * 8` bytes —, the
//! fixed 8-byte fragment header (44) and AH (51, `(len + 2) * 4` bytes, RFC 4302), and stops at
//! anything else: a transport, ESP (50), no-next-header (59) or an unknown header. At a fragment
//! with a non-zero offset it stops too, because what follows is the middle of a datagram, not a
//! header. Every extension header is at least 8 bytes, so the walk is bounded by the payload.

use std::net::Ipv6Addr;

use super::{read_u16, read_u32, write_u16, write_u32, WireError};

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

/// Next Header values of the extension headers the walk understands.
pub mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AUTH: u8 = 51;
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DEST_OPTIONS: u8 = 60;
}

const FRAGMENT_HEADER_LEN: usize = 8;
const AUTH_MIN_LEN: usize = 12;

/// A view of an IPv6 packet.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without validation.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps untrusted bytes: version 6 and a Payload Length that fits the buffer (trailing
    /// bytes are ignored). Jumbograms (Payload Length 0 with a jumbo option) are not supported:
    /// their payload reads as empty.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Ipv6Packet { buffer };
        packet.check_header()?;
        if IPV6_HEADER_LEN + usize::from(packet.payload_len()) > packet.buffer.as_ref().len() {
            return Err(WireError::BadTotalLength);
        }
        Ok(packet)
    }

    /// Checks the fixed header is present and says version 6, ignoring Payload Length.
    pub fn check_header(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < IPV6_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::BadIpVersion);
        }
        Ok(())
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), 0) & 0x000F_FFFF
    }

    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 4)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[6]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[7]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.address_at(8))
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.address_at(24))
    }

    fn address_at(&self, at: usize) -> [u8; 16] {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[at..at + 16]);
        octets
    }

    /// Everything after the fixed header up to Payload Length, clamped to the buffer.
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = (IPV6_HEADER_LEN + usize::from(self.payload_len())).min(data.len());
        &data[IPV6_HEADER_LEN.min(end)..end]
    }

    /// Walks the extension headers of [`Ipv6Packet::payload`].
    pub fn extension_headers(&self) -> Result<ExtensionChain, WireError> {
        walk_extension_headers(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, the traffic class and the flow label (low 20 bits).
    pub fn set_version_class_label(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000F_FFFF);
        write_u32(self.buffer.as_mut(), 0, word);
    }

    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), 4, len);
    }

    pub fn set_next_header(&mut self, next_header: u8) {
        self.buffer.as_mut()[6] = next_header;
    }

    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[7] = hop_limit;
    }

    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[8..24].copy_from_slice(&addr.octets());
    }

    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[24..40].copy_from_slice(&addr.octets());
    }

    /// The payload, writable; same bounds as [`Ipv6Packet::payload`].
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let end = (IPV6_HEADER_LEN + usize::from(self.payload_len())).min(len);
        &mut self.buffer.as_mut()[IPV6_HEADER_LEN.min(end)..end]
    }
}

/// The fields of an IPv6 fragment header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FragmentHeader {
    /// Next Header of the fragmentable part (the same in every fragment of a datagram).
    pub next_header: u8,
    /// Fragment offset in bytes.
    pub offset: u16,
    pub more_fragments: bool,
    pub ident: u32,
}

/// Where the extension header chain ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ExtensionChain {
    /// The Next Header value that ended the walk: the transport protocol for a whole packet or
    /// first fragment, ESP, no-next-header, an unknown header, or, after a non-first fragment
    /// header, that header's Next Header.
    pub protocol: u8,
    /// Offset of that protocol's header from the start of the walked bytes (the IPv6 payload).
    pub offset: usize,
    /// The fragment header, if the chain has one.
    pub fragment: Option<FragmentHeader>,
}

impl ExtensionChain {
    /// Whether the chain stopped at a fragment with a non-zero offset (no transport header).
    pub fn is_later_fragment(&self) -> bool {
        self.fragment.is_some_and(|f| f.offset != 0)
    }
}

/// Walks the extension headers in `payload`, starting with Next Header `first`.
///
/// Errors with [`WireError::BadExtensionHeader`] when a header runs past `payload`, a
/// hop-by-hop header is not first, a second fragment header appears or an AH is shorter than
/// its 12-byte minimum.
pub fn walk_extension_headers(first: u8, payload: &[u8]) -> Result<ExtensionChain, WireError> {
    let mut chain = ExtensionChain {
        protocol: first,
        offset: 0,
        fragment: None,
    };
    loop {
        let kind = chain.protocol;
        let header_len = match kind {
            ext::HOP_BY_HOP if chain.offset != 0 => return Err(WireError::BadExtensionHeader),
            ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTIONS => {
                (usize::from(length_byte(payload, chain.offset)?) + 1) * 8
            }
            ext::AUTH => (usize::from(length_byte(payload, chain.offset)?) + 2) * 4,
            ext::FRAGMENT if chain.fragment.is_some() => return Err(WireError::BadExtensionHeader),
            ext::FRAGMENT => FRAGMENT_HEADER_LEN,
            _ => return Ok(chain),
        };
        if kind == ext::AUTH && header_len < AUTH_MIN_LEN {
            return Err(WireError::BadExtensionHeader);
        }
        let header = payload
            .get(chain.offset..chain.offset + header_len)
            .ok_or(WireError::BadExtensionHeader)?;
        chain.offset += header_len;
        chain.protocol = header[0];
        if kind == ext::FRAGMENT {
            let fragment = FragmentHeader {
                next_header: header[0],
                offset: read_u16(header, 2) & !0x7,
                more_fragments: header[3] & 0x1 != 0,
                ident: read_u32(header, 4),
            };
            chain.fragment = Some(fragment);
            if fragment.offset != 0 {
                return Ok(chain);
            }
        }
    }
}

/// The Hdr Ext Len byte of the header at `offset`.
fn length_byte(payload: &[u8], offset: usize) -> Result<u8, WireError> {
    payload.get(offset + 1).copied().ok_or(WireError::BadExtensionHeader)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fd00::1 → fd00::2, traffic class 0x2E, flow label 0xBEEF1, hop limit 64, then a chain:
    /// hop-by-hop (8 bytes, PadN) → destination options (16) → fragment (offset 0, M clear,
    /// id 0xCAFEF00D) → AH (16 bytes: len 2) → UDP (8 bytes, 1000 → 2000).
    fn chained_packet() -> [u8; 96] {
        let mut p = [0u8; 96];
        p[..8].copy_from_slice(&[0x62, 0xEB, 0xEE, 0xF1, 0x00, 56, ext::HOP_BY_HOP, 64]);
        p[8] = 0xFD;
        p[23] = 1;
        p[24] = 0xFD;
        p[39] = 2;
        p[40..48].copy_from_slice(&[ext::DEST_OPTIONS, 0, 1, 4, 0, 0, 0, 0]);
        p[48..64].copy_from_slice(&[ext::FRAGMENT, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p[64..72].copy_from_slice(&[ext::AUTH, 0, 0x00, 0x00, 0xCA, 0xFE, 0xF0, 0x0D]);
        p[72..88].copy_from_slice(&[17, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 0xA, 0xB, 0xC, 0xD]);
        p[88..96].copy_from_slice(&[0x03, 0xE8, 0x07, 0xD0, 0x00, 0x08, 0x00, 0x00]);
        p
    }

    #[test]
    fn deconstructs_header_fields() {
        let buf = chained_packet();
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x2E);
        assert_eq!(p.flow_label(), 0xBEEF1);
        assert_eq!(p.payload_len(), 56);
        assert_eq!(p.next_header(), ext::HOP_BY_HOP);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &buf[40..96]);
    }

    #[test]
    fn walks_every_extension_header_kind() {
        let buf = chained_packet();
        let chain = Ipv6Packet::new_checked(&buf[..]).unwrap().extension_headers().unwrap();
        assert_eq!(chain.protocol, 17);
        assert_eq!(chain.offset, 48, "8 + 16 + 8 + 16 bytes of extension headers");
        let frag = chain.fragment.unwrap();
        assert_eq!(
            frag,
            FragmentHeader {
                next_header: ext::AUTH,
                offset: 0,
                more_fragments: false,
                ident: 0xCAFEF00D
            }
        );
        assert!(!chain.is_later_fragment());
    }

    #[test]
    fn stops_after_a_later_fragment_header() {
        let mut buf = chained_packet();
        buf[66..68].copy_from_slice(&((1448u16) | 1).to_be_bytes()); // offset 1448, M set
        let chain = Ipv6Packet::new_checked(&buf[..]).unwrap().extension_headers().unwrap();
        assert_eq!(chain.protocol, ext::AUTH);
        assert_eq!(chain.offset, 32);
        assert!(chain.is_later_fragment());
        assert_eq!(chain.fragment.map(|f| (f.offset, f.more_fragments)), Some((1448, true)));
    }

    #[test]
    fn stops_at_esp_and_no_next_header() {
        for stop in [ext::ESP, ext::NO_NEXT_HEADER, 6, 17, 58, 253] {
            let chain = walk_extension_headers(stop, &[]).unwrap();
            assert_eq!((chain.protocol, chain.offset, chain.fragment), (stop, 0, None));
        }
    }

    #[test]
    fn constructs_then_parses() {
        let mut buf = [0u8; 48];
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        p.set_version_class_label(0xFF, 0xFFFF_FFFF);
        p.set_payload_len(8);
        p.set_next_header(ext::NO_NEXT_HEADER);
        p.set_hop_limit(1);
        p.set_src_addr(Ipv6Addr::LOCALHOST);
        p.set_dst_addr("2001:db8::7".parse().unwrap());
        p.payload_mut().fill(7);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0xFF, 0xF_FFFF));
        assert_eq!((p.next_header(), p.hop_limit()), (ext::NO_NEXT_HEADER, 1));
        assert_eq!(p.src_addr(), Ipv6Addr::LOCALHOST);
        assert_eq!(p.dst_addr(), "2001:db8::7".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &[7; 8]);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let buf = chained_packet();
        for len in 0..buf.len() {
            assert!(Ipv6Packet::new_checked(&buf[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn every_truncated_chain_is_rejected() {
        let buf = chained_packet();
        for len in 0..48 {
            let walked = walk_extension_headers(ext::HOP_BY_HOP, &buf[40..40 + len]);
            assert_eq!(walked, Err(WireError::BadExtensionHeader), "len {len}");
        }
    }

    #[test]
    fn rejects_bad_version_and_length() {
        let mut buf = chained_packet();
        buf[0] = 0x42;
        assert_eq!(Ipv6Packet::new_checked(&buf[..]).unwrap_err(), WireError::BadIpVersion);
        let mut buf = chained_packet();
        buf[5] = 57;
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::BadTotalLength
        );
    }

    #[test]
    fn rejects_misplaced_repeated_or_short_headers() {
        let walk = |edit: fn(&mut [u8; 96])| {
            let mut buf = chained_packet();
            edit(&mut buf);
            Ipv6Packet::new_checked(&buf[..]).unwrap().extension_headers()
        };
        let bad = Err(WireError::BadExtensionHeader);
        assert_eq!(walk(|b| b[40] = ext::HOP_BY_HOP), bad, "hop-by-hop not first");
        assert_eq!(walk(|b| b[64] = ext::FRAGMENT), bad, "second fragment header");
        assert_eq!(walk(|b| b[73] = 0), bad, "AH below its 12-byte minimum");
        assert_eq!(walk(|b| b[41] = 200), bad, "destination options past the payload");
    }
}
