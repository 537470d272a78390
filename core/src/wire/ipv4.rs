//! IPv4 (RFC 791) header view.
//!
//! ```text
//! |Version|  IHL  |    DSCP/ECN   |          Total Length         |
//! |         Identification        |Flags|     Fragment Offset     |
//! |      TTL      |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! |                    Options (IHL > 5)                          |
//! ```
//!
//! [`Ipv4Packet::new_checked`] accepts a buffer longer than Total Length (trailing bytes, e.g.
//! link padding, are ignored by [`Ipv4Packet::payload`]) but never a shorter one.
//! [`Ipv4Packet::check_header`] validates only the header itself, for the truncated copy of a
//! packet quoted inside an ICMP error, whose Total Length describes the original.

use std::net::Ipv4Addr;

use super::{checksum, read_u16, write_u16, WireError};

/// Length of an IPv4 header without options.
pub const IPV4_MIN_HEADER_LEN: usize = 20;

const FLAG_DONT_FRAGMENT: u16 = 0x4000;
const FLAG_MORE_FRAGMENTS: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1FFF;

/// A view of an IPv4 packet.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without validation.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps untrusted bytes: a valid header and a Total Length that covers the header and fits
    /// the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Ipv4Packet { buffer };
        packet.check_header()?;
        let total = usize::from(packet.total_len());
        if total < packet.header_len() || total > packet.buffer.as_ref().len() {
            return Err(WireError::BadTotalLength);
        }
        Ok(packet)
    }

    /// Checks version 4 and an IHL of at least 5 words that fits the buffer, ignoring Total
    /// Length.
    pub fn check_header(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < IPV4_MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::BadIpVersion);
        }
        let header_len = self.header_len();
        if header_len < IPV4_MIN_HEADER_LEN || header_len > data.len() {
            return Err(WireError::BadHeaderLength);
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

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x0F) * 4
    }

    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }

    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 4)
    }

    fn flags_and_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 6)
    }

    pub fn dont_fragment(&self) -> bool {
        self.flags_and_offset() & FLAG_DONT_FRAGMENT != 0
    }

    pub fn more_fragments(&self) -> bool {
        self.flags_and_offset() & FLAG_MORE_FRAGMENTS != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.flags_and_offset() & OFFSET_MASK) << 3
    }

    /// Whether this packet is one fragment of a larger datagram.
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.frag_offset() != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[8]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[9]
    }

    pub fn header_checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 10)
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        Ipv4Addr::new(d[12], d[13], d[14], d[15])
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        Ipv4Addr::new(d[16], d[17], d[18], d[19])
    }

    /// Whether the header checksum is valid (requires a checked header).
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }

    /// The payload: from the end of the header to Total Length, clamped to the buffer (so a
    /// quoted, truncated packet yields what is present).
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = usize::from(self.total_len()).min(data.len());
        let start = self.header_len().min(end);
        &data[start..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4, 20..=60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[0] = 0x40 | ((header_len / 4) as u8 & 0x0F);
    }

    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[1] = value;
    }

    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), 2, len);
    }

    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), 4, ident);
    }

    /// Sets the DF and MF flags and the fragment offset in bytes (a multiple of 8).
    pub fn set_fragment(&mut self, dont_fragment: bool, more_fragments: bool, offset: u16) {
        let mut value = (offset >> 3) & OFFSET_MASK;
        if dont_fragment {
            value |= FLAG_DONT_FRAGMENT;
        }
        if more_fragments {
            value |= FLAG_MORE_FRAGMENTS;
        }
        write_u16(self.buffer.as_mut(), 6, value);
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[8] = ttl;
    }

    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[9] = protocol;
    }

    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[12..16].copy_from_slice(&addr.octets());
    }

    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[16..20].copy_from_slice(&addr.octets());
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        write_u16(self.buffer.as_mut(), 10, 0);
        let sum = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        write_u16(self.buffer.as_mut(), 10, sum);
    }

    /// The payload, writable; same bounds as [`Ipv4Packet::payload`].
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.total_len()).min(len);
        let start = self.header_len().min(end);
        &mut self.buffer.as_mut()[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 192.168.0.1 → 192.168.0.199, UDP, total length 28, checksum 0x9C72; 4 trailing pad bytes.
    const UDP_PACKET: [u8; 32] = [
        0x45, 0x00, 0x00, 0x1C, 0x1C, 0x46, 0x40, 0x00, 0x40, 0x11, 0x9C, 0x72, 0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8,
        0x00, 0xC7, // header
        0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00, // UDP 12345 → 53
        0xEE, 0xEE, 0xEE, 0xEE, // padding after total length
    ];

    #[test]
    fn deconstructs_a_capture() {
        let p = Ipv4Packet::new_checked(&UDP_PACKET[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1C46);
        assert!(p.dont_fragment());
        assert!(!p.more_fragments());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &UDP_PACKET[20..28], "padding is not payload");
    }

    #[test]
    fn constructs_then_parses() {
        let mut buf = [0u8; 32];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(24);
        p.set_dscp_ecn(0xB8);
        p.set_total_len(32);
        p.set_ident(0xBEEF);
        p.set_fragment(false, true, 1480);
        p.set_ttl(3);
        p.set_protocol(6);
        p.set_src_addr(Ipv4Addr::new(198, 18, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(198, 19, 0, 1));
        p.payload_mut().fill(0xAA);
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.header_len(), p.dscp_ecn(), p.ident()), (24, 0xB8, 0xBEEF));
        assert!(p.more_fragments() && !p.dont_fragment() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        assert_eq!((p.ttl(), p.protocol()), (3, 6));
        assert_eq!(p.src_addr(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(p.payload(), &[0xAA; 8]);
    }

    #[test]
    fn every_truncation_is_rejected() {
        for len in 0..28 {
            assert!(Ipv4Packet::new_checked(&UDP_PACKET[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn rejects_bad_version_and_lengths() {
        let check = |edit: fn(&mut [u8; 32])| {
            let mut buf = UDP_PACKET;
            edit(&mut buf);
            Ipv4Packet::new_checked(&buf[..]).unwrap_err()
        };
        assert_eq!(check(|b| b[0] = 0x65), WireError::BadIpVersion);
        assert_eq!(check(|b| b[0] = 0x44), WireError::BadHeaderLength);
        assert_eq!(check(|b| b[0] = 0x4F), WireError::BadHeaderLength);
        assert_eq!(check(|b| b[3] = 19), WireError::BadTotalLength);
        assert_eq!(check(|b| b[3] = 33), WireError::BadTotalLength);
    }

    #[test]
    fn header_check_tolerates_a_truncated_quote() {
        let p = Ipv4Packet::new_unchecked(&UDP_PACKET[..24]);
        assert!(p.check_header().is_ok());
        assert_eq!(p.payload(), &UDP_PACKET[20..24]);
        let mut lying = UDP_PACKET;
        lying[3] = 4; // total length inside the header: payload is empty, never a panic
        assert_eq!(Ipv4Packet::new_unchecked(&lying[..]).payload(), &[] as &[u8]);
    }
}
