//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) header view.
//!
//! ```text
//! |     Type      |     Code      |          Checksum             |
//! |     Identifier (echo) / unused / MTU / pointer                |
//! |     Echo data, or the quoted packet of an error message        |
//! ```
//!
//! Both versions share this layout, so one view serves both; [`icmpv4_message`] and
//! [`icmpv6_message`] sort a type into echo, error (which quotes the offending packet after the
//! 8-byte header) or other. The ICMPv4 checksum covers the message only; the ICMPv6 checksum
//! adds the IPv6 pseudo-header, passed in as a partial sum (0 for ICMPv4).

use super::{checksum, read_u16, write_u16, WireError};

/// Length of the ICMP header (type, code, checksum and the 4-byte rest of header).
pub const ICMP_HEADER_LEN: usize = 8;

/// ICMPv4 message types braid distinguishes.
pub mod icmpv4_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// ICMPv6 message types braid distinguishes.
pub mod icmpv6_type {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
}

/// What an ICMP message type means for steering.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IcmpMessage {
    /// Echo request or reply: the identifier names the flow.
    Echo,
    /// An error that quotes the packet it is about.
    Error,
    /// Anything else (router/neighbor discovery, timestamps, ...).
    Other,
}

/// Sorts an ICMPv4 type.
pub fn icmpv4_message(msg_type: u8) -> IcmpMessage {
    use icmpv4_type::*;
    match msg_type {
        ECHO_REQUEST | ECHO_REPLY => IcmpMessage::Echo,
        DEST_UNREACHABLE | TIME_EXCEEDED | PARAMETER_PROBLEM => IcmpMessage::Error,
        _ => IcmpMessage::Other,
    }
}

/// Sorts an ICMPv6 type.
pub fn icmpv6_message(msg_type: u8) -> IcmpMessage {
    use icmpv6_type::*;
    match msg_type {
        ECHO_REQUEST | ECHO_REPLY => IcmpMessage::Echo,
        DEST_UNREACHABLE | PACKET_TOO_BIG | TIME_EXCEEDED | PARAMETER_PROBLEM => IcmpMessage::Error,
        _ => IcmpMessage::Other,
    }
}

/// A view of an ICMPv4 or ICMPv6 message.
#[derive(Clone, Copy, Debug)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps a buffer without validation.
    pub fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wraps untrusted bytes: the 8-byte header is present.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < ICMP_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(IcmpPacket { buffer })
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }

    /// The echo identifier (meaningful for echo messages).
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 4)
    }

    /// The echo sequence number (meaningful for echo messages).
    pub fn echo_seq(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 6)
    }

    /// Everything after the 8-byte header: echo data, or the quoted packet of an error.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(ICMP_HEADER_LEN..).unwrap_or(&[])
    }

    /// Whether the checksum is valid, given the pseudo-header sum (0 for ICMPv4).
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        checksum::finish(checksum::accumulate(pseudo_header, self.buffer.as_ref())) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    pub fn set_msg_type(&mut self, msg_type: u8) {
        self.buffer.as_mut()[0] = msg_type;
    }

    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[1] = code;
    }

    pub fn set_echo_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), 4, ident);
    }

    pub fn set_echo_seq(&mut self, seq: u16) {
        write_u16(self.buffer.as_mut(), 6, seq);
    }

    /// Everything after the 8-byte header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(ICMP_HEADER_LEN..).unwrap_or(&mut [])
    }

    /// Computes and stores the checksum, given the pseudo-header sum (0 for ICMPv4).
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        write_u16(self.buffer.as_mut(), 2, 0);
        let sum = checksum::finish(checksum::accumulate(pseudo_header, self.buffer.as_ref()));
        write_u16(self.buffer.as_mut(), 2, sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ping` echo request, id 0x1A2B, seq 1, data "abcd", checksum 0x190D.
    const ECHO_REQUEST: [u8; 12] = [0x08, 0x00, 0x19, 0x0D, 0x1A, 0x2B, 0x00, 0x01, b'a', b'b', b'c', b'd'];

    #[test]
    fn deconstructs_an_echo_request() {
        let p = IcmpPacket::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!((p.msg_type(), p.code(), p.checksum()), (8, 0, 0x190D));
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1A2B, 1));
        assert_eq!(p.payload(), b"abcd");
        assert!(p.verify_checksum(0));
        assert_eq!(icmpv4_message(p.msg_type()), IcmpMessage::Echo);
    }

    #[test]
    fn constructs_then_parses() {
        let mut buf = [0u8; 12];
        let mut p = IcmpPacket::new_unchecked(&mut buf[..]);
        p.set_msg_type(icmpv6_type::ECHO_REPLY);
        p.set_code(0);
        p.set_echo_ident(77);
        p.set_echo_seq(9);
        p.payload_mut().copy_from_slice(b"pong");
        p.fill_checksum(12345);
        let p = IcmpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(12345));
        assert!(!p.verify_checksum(0));
        assert_eq!((p.echo_ident(), p.echo_seq()), (77, 9));
        assert_eq!(p.payload(), b"pong");
    }

    #[test]
    fn every_truncation_of_the_header_is_rejected() {
        for len in 0..ICMP_HEADER_LEN {
            assert_eq!(
                IcmpPacket::new_checked(&ECHO_REQUEST[..len]).unwrap_err(),
                WireError::Truncated
            );
        }
        assert!(IcmpPacket::new_checked(&ECHO_REQUEST[..8])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn sorts_message_types() {
        use IcmpMessage::*;
        let v4 = [
            (0, Echo),
            (3, Error),
            (5, Other),
            (8, Echo),
            (11, Error),
            (12, Error),
            (13, Other),
        ];
        for (t, kind) in v4 {
            assert_eq!(icmpv4_message(t), kind, "ICMPv4 type {t}");
        }
        let v6 = [
            (1, Error),
            (2, Error),
            (3, Error),
            (4, Error),
            (128, Echo),
            (129, Echo),
            (135, Other),
        ];
        for (t, kind) in v6 {
            assert_eq!(icmpv6_message(t), kind, "ICMPv6 type {t}");
        }
    }
}
