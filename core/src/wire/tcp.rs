//! TCP (RFC 9293) header view and option walk.
//!
//! ```text
//! |          Source Port          |       Destination Port        |
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! | Offset| Rsrvd |     Flags     |            Window             |
//! |           Checksum            |         Urgent Pointer        |
//! |                    Options (Offset > 5)                       |
//! ```
//!
//! [`TcpOptions`] walks the options area robustly: End of Option List stops it, No-Operation is
//! one byte, every other option must have a length of at least 2 that stays inside the header;
//! anything else is [`WireError::BadTcpOption`] and ends the walk.

use super::{checksum, read_u16, read_u32, write_u16, write_u32, WireError};

/// Length of a TCP header without options.
pub const TCP_MIN_HEADER_LEN: usize = 20;

/// TCP option kinds braid looks at.
pub mod option_kind {
    pub const END_OF_LIST: u8 = 0;
    pub const NO_OPERATION: u8 = 1;
    pub const MAX_SEGMENT_SIZE: u8 = 2;
}

/// A view of a TCP segment.
#[derive(Clone, Copy, Debug)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without validation.
    pub fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps untrusted bytes: the fixed header is present and the data offset is at least 5
    /// words and inside the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = TcpPacket { buffer };
        let len = packet.buffer.as_ref().len();
        if len < TCP_MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = packet.header_len();
        if header_len < TCP_MIN_HEADER_LEN || header_len > len {
            return Err(WireError::BadTcpHeader);
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

    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), 4)
    }

    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), 8)
    }

    /// Header length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[12] >> 4) * 4
    }

    /// The flag bits (byte 13; see [`crate::flow::tcp_flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[13]
    }

    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 14)
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 16)
    }

    pub fn urgent_pointer(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 18)
    }

    /// The options area (empty if the data offset lies).
    pub fn options(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(TCP_MIN_HEADER_LEN..self.header_len())
            .unwrap_or(&[])
    }

    /// The options, walked.
    pub fn option_iter(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options())
    }

    /// The segment data after the header (empty if the data offset lies).
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }

    /// Whether the checksum is valid, given the pseudo-header partial sum (see
    /// [`checksum::pseudo_header_v4`] / [`checksum::pseudo_header_v6`]).
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        checksum::finish(checksum::accumulate(pseudo_header, self.buffer.as_ref())) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), 0, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), 2, port);
    }

    pub fn set_seq_number(&mut self, seq: u32) {
        write_u32(self.buffer.as_mut(), 4, seq);
    }

    pub fn set_ack_number(&mut self, ack: u32) {
        write_u32(self.buffer.as_mut(), 8, ack);
    }

    /// Sets the header length in bytes (a multiple of 4, 20..=60); clears the reserved bits.
    pub fn set_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[12] = ((header_len / 4) as u8) << 4;
    }

    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[13] = flags;
    }

    pub fn set_window(&mut self, window: u16) {
        write_u16(self.buffer.as_mut(), 14, window);
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), 16, checksum);
    }

    pub fn set_urgent_pointer(&mut self, pointer: u16) {
        write_u16(self.buffer.as_mut(), 18, pointer);
    }

    /// The options area, writable (empty if the data offset lies).
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        self.buffer.as_mut().get_mut(TCP_MIN_HEADER_LEN..end).unwrap_or(&mut [])
    }

    /// The segment data, writable (empty if the data offset lies).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or(&mut [])
    }

    /// Computes and stores the checksum over the whole buffer, given the pseudo-header sum.
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let sum = checksum::finish(checksum::accumulate(pseudo_header, self.buffer.as_ref()));
        self.set_checksum(sum);
    }
}

/// One TCP option: its kind, where it starts in the options area, and its data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TcpOption<'a> {
    pub kind: u8,
    /// Offset of the kind byte from the start of the options area.
    pub offset: usize,
    /// The bytes after kind and length (empty for No-Operation).
    pub data: &'a [u8],
}

/// Iterator over the options area; yields one error and then stops on a malformed option.
#[derive(Clone, Debug)]
pub struct TcpOptions<'a> {
    options: &'a [u8],
    at: usize,
}

impl<'a> TcpOptions<'a> {
    pub fn new(options: &'a [u8]) -> Self {
        TcpOptions { options, at: 0 }
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.at;
        let kind = *self.options.get(offset)?;
        match kind {
            option_kind::END_OF_LIST => {
                self.at = self.options.len();
                None
            }
            option_kind::NO_OPERATION => {
                self.at += 1;
                Some(Ok(TcpOption {
                    kind,
                    offset,
                    data: &[],
                }))
            }
            _ => {
                let option = self
                    .options
                    .get(offset + 1)
                    .map(|&len| usize::from(len))
                    .filter(|&len| len >= 2)
                    .and_then(|len| self.options.get(offset..offset + len));
                match option {
                    Some(bytes) => {
                        self.at += bytes.len();
                        Some(Ok(TcpOption {
                            kind,
                            offset,
                            data: &bytes[2..],
                        }))
                    }
                    None => {
                        self.at = self.options.len();
                        Some(Err(WireError::BadTcpOption))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tcp_flags;
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// A Linux SYN, 10.0.0.1:40000 → 10.0.0.2:80: MSS 1460, SACK permitted, timestamps,
    /// NOP, window scale 7; checksum 0x31CC over the pseudo-header.
    const SYN: [u8; 40] = [
        0x9C, 0x40, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0xA0, 0x02, 0xFA, 0xF0, 0x31, 0xCC,
        0x00, 0x00, // header
        0x02, 0x04, 0x05, 0xB4, 0x04, 0x02, 0x08, 0x0A, 0x00, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03,
        0x03, 0x07, // options
    ];

    fn pseudo() -> u64 {
        checksum::pseudo_header_v4(SRC, DST, 6, SYN.len() as u16)
    }

    #[test]
    fn deconstructs_a_syn() {
        let p = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 80));
        assert_eq!((p.seq_number(), p.ack_number()), (0x12345678, 0));
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), tcp_flags::SYN);
        assert_eq!((p.window(), p.checksum(), p.urgent_pointer()), (64240, 0x31CC, 0));
        assert!(p.verify_checksum(pseudo()));
        assert!(p.payload().is_empty());
        let kinds: Vec<(u8, usize, &[u8])> = p
            .option_iter()
            .map(|o| o.unwrap())
            .map(|o| (o.kind, o.offset, o.data))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (2, 0, &[0x05, 0xB4][..]),
                (4, 4, &[][..]),
                (8, 6, &[0, 1, 2, 3, 0, 0, 0, 0][..]),
                (1, 16, &[][..]),
                (3, 17, &[7][..]),
            ]
        );
    }

    #[test]
    fn constructs_then_parses() {
        let mut buf = [0u8; 28];
        let mut p = TcpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_seq_number(3);
        p.set_ack_number(4);
        p.set_header_len(24);
        p.set_flags(tcp_flags::ACK | tcp_flags::FIN);
        p.set_window(5);
        p.set_urgent_pointer(6);
        p.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        p.payload_mut().copy_from_slice(b"data");
        let pseudo = checksum::pseudo_header_v4(SRC, DST, 6, 28);
        p.fill_checksum(pseudo);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(pseudo));
        assert_eq!(
            (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()),
            (1, 2, 3, 4)
        );
        assert_eq!((p.flags(), p.window(), p.urgent_pointer()), (0x11, 5, 6));
        assert_eq!(p.option_iter().count(), 3, "three NOPs, then End of List");
        assert_eq!(p.payload(), b"data");
    }

    #[test]
    fn every_truncation_is_rejected() {
        for len in 0..SYN.len() {
            assert!(TcpPacket::new_checked(&SYN[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn rejects_bad_data_offsets() {
        for offset_byte in [0x00, 0x40, 0xB0, 0xF0] {
            let mut buf = SYN;
            buf[12] = offset_byte;
            assert_eq!(TcpPacket::new_checked(&buf[..]).unwrap_err(), WireError::BadTcpHeader);
        }
    }

    #[test]
    fn option_walk_rejects_overruns_and_short_lengths() {
        fn walk(opts: &[u8]) -> Vec<Result<TcpOption<'_>, WireError>> {
            TcpOptions::new(opts).collect()
        }
        assert_eq!(walk(&[2, 4, 5]), vec![Err(WireError::BadTcpOption)]);
        assert_eq!(walk(&[2]), vec![Err(WireError::BadTcpOption)]);
        assert_eq!(walk(&[1, 8, 1]).last(), Some(&Err(WireError::BadTcpOption)));
        assert_eq!(walk(&[8, 0, 1, 1]), vec![Err(WireError::BadTcpOption)]);
        assert_eq!(walk(&[8, 1, 1, 1]), vec![Err(WireError::BadTcpOption)]);
        assert_eq!(walk(&[0, 2, 200]), vec![], "nothing is read after End of List");
        assert_eq!(walk(&[]), vec![]);
    }

    #[test]
    fn option_walk_never_panics_on_any_short_input() {
        let mut state = 0x2545_F491_u32;
        let mut opts = [0u8; 40];
        for _ in 0..20_000 {
            for b in opts.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *b = (state % 12) as u8; // small kinds and lengths hit every branch
            }
            let len = (state >> 8) as usize % 41;
            for option in TcpOptions::new(&opts[..len]).flatten() {
                assert!(option.offset + 2 + option.data.len() <= len || option.kind == 1);
            }
        }
    }
}
