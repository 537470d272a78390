//! UDP (RFC 768) header view.
//!
//! ```text
//! |          Source Port          |       Destination Port        |
//! |            Length             |           Checksum            |
//! ```
//!
//! [`UdpPacket::new_checked`] requires the Length field to cover the header and fit the buffer;
//! bytes after Length are ignored by [`UdpPacket::payload`].

use super::{checksum, read_u16, write_u16, WireError};

/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = 8;

/// A view of a UDP datagram.
#[derive(Clone, Copy, Debug)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without validation.
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps untrusted bytes: the header is present and 8 ≤ Length ≤ buffer length.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = UdpPacket { buffer };
        let len = packet.buffer.as_ref().len();
        if len < UDP_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let declared = usize::from(packet.len());
        if declared < UDP_HEADER_LEN || declared > len {
            return Err(WireError::BadUdpLength);
        }
        Ok(packet)
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }

    /// The Length field: header plus data, in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 4)
    }

    /// The checksum field (0 means "not computed" over IPv4).
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 6)
    }

    /// The data from the header to Length, clamped to the buffer.
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = usize::from(self.len()).min(data.len());
        &data[UDP_HEADER_LEN.min(end)..end]
    }

    /// Whether the checksum is valid (or absent), given the pseudo-header partial sum.
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        let datagram = &self.buffer.as_ref()[..usize::from(self.len())];
        self.checksum() == 0 || checksum::finish(checksum::accumulate(pseudo_header, datagram)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), 0, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), 2, port);
    }

    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), 4, len);
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), 6, checksum);
    }

    /// The data, writable; same bounds as [`UdpPacket::payload`].
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.len()).min(len);
        &mut self.buffer.as_mut()[UDP_HEADER_LEN.min(end)..end]
    }

    /// Computes and stores the checksum over Length bytes, given the pseudo-header sum. A
    /// computed 0 is sent as 0xFFFF, since 0 means "no checksum".
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let end = usize::from(self.len()).min(self.buffer.as_ref().len());
        let sum = checksum::finish(checksum::accumulate(pseudo_header, &self.buffer.as_ref()[..end]));
        self.set_checksum(if sum == 0 { 0xFFFF } else { sum });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 199);

    /// A DNS-port datagram 12345 → 53 carrying "hi", checksum 0xE4E9; one trailing pad byte.
    const DATAGRAM: [u8; 11] = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0A, 0xE4, 0xE9, b'h', b'i', 0xEE];

    fn pseudo() -> u64 {
        checksum::pseudo_header_v4(SRC, DST, 17, 10)
    }

    #[test]
    fn deconstructs_a_capture() {
        let p = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.len(), p.checksum()),
            (12345, 53, 10, 0xE4E9)
        );
        assert_eq!(p.payload(), b"hi");
        assert!(p.verify_checksum(pseudo()));
    }

    #[test]
    fn constructs_then_parses() {
        let mut buf = [0u8; 12];
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(6081);
        p.set_dst_port(6082);
        p.set_len(12);
        p.payload_mut().copy_from_slice(b"ping");
        p.fill_checksum(pseudo());
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (6081, 6082));
        assert_ne!(p.checksum(), 0);
        assert!(p.verify_checksum(pseudo()));
        assert_eq!(p.payload(), b"ping");
    }

    #[test]
    fn every_truncation_is_rejected() {
        for len in 0..10 {
            assert!(UdpPacket::new_checked(&DATAGRAM[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn rejects_bad_lengths() {
        for declared in [0u8, 7, 12] {
            let mut buf = DATAGRAM;
            buf[5] = declared;
            assert_eq!(UdpPacket::new_checked(&buf[..]).unwrap_err(), WireError::BadUdpLength);
        }
    }
}
