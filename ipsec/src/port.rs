//! What shares UDP port 4500 (RFC 3948 §2, RFC 7296 §2.23).
//!
//! Design: one classification, used by every receiver, so ESP, IKE and keepalives are told
//! apart in exactly one place. A datagram that starts with four zero bytes (the non-ESP
//! marker, a SPI no ESP SA may have) carries IKE after the marker; a lone 0xFF byte is a NAT
//! keepalive; anything else of at least an ESP header's length is ESP. Senders of IKE on this
//! port prepend [`NON_ESP_MARKER`].

/// The four zero bytes in front of an IKE message on port 4500.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// The UDP port ESP-in-UDP and IKE share.
pub const NAT_T_PORT: u16 = 4500;
/// A NAT keepalive: one byte, 0xFF (RFC 3948 §2.3).
pub const NAT_KEEPALIVE: [u8; 1] = [0xff];
/// The shortest ESP packet worth opening: SPI, sequence number, IV and ICV.
const ESP_MIN_LEN: usize = 4 + 4 + 8 + 16;

/// What one datagram on port 4500 is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Datagram<'a> {
    /// An IKE message (the marker already stripped).
    Ike(&'a [u8]),
    /// An ESP packet.
    Esp(&'a [u8]),
    /// A NAT keepalive: nothing to do.
    Keepalive,
    /// Nothing any of the three can be.
    Malformed,
}

/// Tells ESP, IKE and keepalives apart.
pub fn classify(datagram: &[u8]) -> Datagram<'_> {
    match datagram {
        [0xff] => Datagram::Keepalive,
        [0, 0, 0, 0, ike @ ..] => Datagram::Ike(ike),
        esp if esp.len() >= ESP_MIN_LEN => Datagram::Esp(esp),
        _ => Datagram::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_kind() {
        assert_eq!(classify(&[0xff]), Datagram::Keepalive);
        assert_eq!(classify(&[0, 0, 0, 0, 1, 2]), Datagram::Ike(&[1, 2]));
        assert_eq!(classify(&[0, 0, 0, 0]), Datagram::Ike(&[]));
        let esp = [1u8; 40];
        assert_eq!(classify(&esp), Datagram::Esp(&esp));
        assert_eq!(classify(&[]), Datagram::Malformed);
        assert_eq!(classify(&[1, 2, 3]), Datagram::Malformed);
        assert_eq!(classify(&[0xff, 0xff]), Datagram::Malformed);
    }
}
