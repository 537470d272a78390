//! The byte-level pieces of an ESP packet: header, nonce, AAD and trailer.
//!
//! Design: pure functions on fixed-size arrays, so every index is checked at compile time and
//! nothing here can panic; the SAs only decide what goes where.

use ring::aead::Nonce;

use super::{EspCipher, EspError, ESP_HEADER_LEN};

/// Next header for an IPv4 inner packet (IP-in-IP).
pub const NEXT_HEADER_IPV4: u8 = 4;
/// Next header for an IPv6 inner packet.
pub const NEXT_HEADER_IPV6: u8 = 41;
/// The longest inner packet an SA seals: the largest IPv4 or (non-jumbo) IPv6 packet.
pub const MAX_INNER_LEN: usize = u16::MAX as usize;
/// Pad length and next header.
pub(super) const TRAILER_LEN: usize = 2;

/// The SPI of an ESP packet, for SA lookup; `None` if it is shorter than an ESP header.
pub fn spi_of(datagram: &[u8]) -> Option<u32> {
    datagram
        .first_chunk::<ESP_HEADER_LEN>()
        .map(|header| parse_header(header).0)
}

/// SPI, low 32 bits of the sequence number, IV.
pub(super) fn parse_header(header: &[u8; ESP_HEADER_LEN]) -> (u32, u32, [u8; 8]) {
    let [s0, s1, s2, s3, q0, q1, q2, q3, iv @ ..] = *header;
    (
        u32::from_be_bytes([s0, s1, s2, s3]),
        u32::from_be_bytes([q0, q1, q2, q3]),
        iv,
    )
}

/// Writes the header of the packet with sequence number `seq`, whose IV is `seq` itself.
pub(super) fn write_header(header: &mut [u8; ESP_HEADER_LEN], spi: u32, seq: u64) {
    let iv = seq.to_be_bytes();
    let [s0, s1, s2, s3] = spi.to_be_bytes();
    let [q0, q1, q2, q3] = low32(seq).to_be_bytes();
    *header = [
        s0, s1, s2, s3, q0, q1, q2, q3, iv[0], iv[1], iv[2], iv[3], iv[4], iv[5], iv[6], iv[7],
    ];
}

/// Salt ‖ IV (RFC 4106 §4, RFC 7634 §2).
pub(super) fn nonce(salt: &[u8; EspCipher::SALT_LEN], iv: [u8; 8]) -> Nonce {
    let [a, b, c, d] = *salt;
    let [i0, i1, i2, i3, i4, i5, i6, i7] = iv;
    Nonce::assume_unique_for_key([a, b, c, d, i0, i1, i2, i3, i4, i5, i6, i7])
}

/// The AAD of one packet, on the stack: 8 bytes, or 12 with ESN.
pub(super) struct AadBytes {
    bytes: [u8; 12],
    len: usize,
}

impl AsRef<[u8]> for AadBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// SPI ‖ seq (RFC 4106 §5.1), or SPI ‖ seq high ‖ seq low with ESN (§5.2, RFC 7634 §2.1).
pub(super) fn aad(spi: u32, seq: u64, esn: bool) -> AadBytes {
    let [s0, s1, s2, s3] = spi.to_be_bytes();
    let [h0, h1, h2, h3, l0, l1, l2, l3] = seq.to_be_bytes();
    if esn {
        AadBytes {
            bytes: [s0, s1, s2, s3, h0, h1, h2, h3, l0, l1, l2, l3],
            len: 12,
        }
    } else {
        AadBytes {
            bytes: [s0, s1, s2, s3, l0, l1, l2, l3, 0, 0, 0, 0],
            len: 8,
        }
    }
}

/// The next header for an inner packet, from its IP version nibble.
pub(super) fn next_header_for(inner: &[u8]) -> Result<u8, EspError> {
    match inner.first().map(|b| b >> 4) {
        Some(4) => Ok(NEXT_HEADER_IPV4),
        Some(6) => Ok(NEXT_HEADER_IPV6),
        _ => Err(EspError::InvalidInnerPacket),
    }
}

/// Padding bytes that make `payload_len` plus the trailer a multiple of 4.
pub(super) fn pad_len_for(payload_len: usize) -> usize {
    (4 - (payload_len + TRAILER_LEN) % 4) % 4
}

/// Fills `body[payload_len..]` with padding 1, 2, 3…, the pad length and the next header.
/// `body` is exactly `payload_len + pad_len_for(payload_len) + TRAILER_LEN` bytes.
pub(super) fn write_trailer(body: &mut [u8], payload_len: usize, next_header: u8) {
    let Some(trailer) = body.get_mut(payload_len..) else {
        return;
    };
    let Some((next, rest)) = trailer.split_last_mut() else {
        return;
    };
    let Some((pad_len, padding)) = rest.split_last_mut() else {
        return;
    };
    for (i, byte) in padding.iter_mut().enumerate() {
        *byte = (i + 1) as u8;
    }
    *pad_len = padding.len() as u8;
    *next = next_header;
}

/// Checks a decrypted ESP payload's trailer (RFC 4303 §2.4–2.6) and returns the inner packet's
/// length and next header.
pub(super) fn parse_trailer(plaintext: &[u8]) -> Result<(usize, u8), EspError> {
    let (&next_header, rest) = plaintext.split_last().ok_or(EspError::Truncated)?;
    let (&pad_len, rest) = rest.split_last().ok_or(EspError::Truncated)?;
    let payload_len = rest
        .len()
        .checked_sub(usize::from(pad_len))
        .ok_or(EspError::BadPadding)?;
    let (payload, padding) = rest.split_at(payload_len);
    if !padding.iter().enumerate().all(|(i, &b)| usize::from(b) == i + 1) {
        return Err(EspError::BadPadding);
    }
    let version = match next_header {
        NEXT_HEADER_IPV4 => 4,
        NEXT_HEADER_IPV6 => 6,
        _ => return Err(EspError::BadNextHeader),
    };
    match payload.first() {
        Some(b) if b >> 4 == version => Ok((payload_len, next_header)),
        _ => Err(EspError::InvalidInnerPacket),
    }
}

/// The low 32 bits of a sequence number: the part on the wire.
pub(super) fn low32(seq: u64) -> u32 {
    (seq & 0xffff_ffff) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_aligns_to_four() {
        for len in 0..64 {
            let pad = pad_len_for(len);
            assert!(pad <= 3);
            assert_eq!((len + pad + TRAILER_LEN) % 4, 0, "len {len}");
        }
    }

    #[test]
    fn trailer_round_trips() {
        for len in 1..40 {
            let total = len + pad_len_for(len) + TRAILER_LEN;
            let mut body = [0x45u8; 64];
            let body = &mut body[..total];
            write_trailer(body, len, NEXT_HEADER_IPV4);
            assert_eq!(parse_trailer(body), Ok((len, NEXT_HEADER_IPV4)));
        }
    }

    #[test]
    fn trailer_checks() {
        assert_eq!(parse_trailer(&[]), Err(EspError::Truncated));
        assert_eq!(parse_trailer(&[4]), Err(EspError::Truncated));
        assert_eq!(parse_trailer(&[0, 4]), Err(EspError::InvalidInnerPacket));
        assert_eq!(parse_trailer(&[0x45, 0, 4]), Ok((1, 4)));
        assert_eq!(parse_trailer(&[0x60, 0, 41]), Ok((1, 41)));
        assert_eq!(parse_trailer(&[0x60, 0, 4]), Err(EspError::InvalidInnerPacket));
        assert_eq!(parse_trailer(&[0x45, 0, 59]), Err(EspError::BadNextHeader));
        assert_eq!(parse_trailer(&[0x45, 1, 2, 2, 4]), Ok((1, 4)));
        assert_eq!(parse_trailer(&[0x45, 1, 3, 2, 4]), Err(EspError::BadPadding));
        assert_eq!(parse_trailer(&[0x45, 0, 2, 2, 4]), Err(EspError::BadPadding));
        assert_eq!(parse_trailer(&[1, 2, 2, 4]), Err(EspError::InvalidInnerPacket));
        assert_eq!(parse_trailer(&[1, 2, 3, 4]), Err(EspError::BadPadding));
        assert_eq!(parse_trailer(&[0x45, 255, 4]), Err(EspError::BadPadding));
        // The longest padding there is: 255 bytes, all in order.
        let mut long = [0u8; 258];
        long[0] = 0x45;
        for i in 0..255 {
            long[1 + i] = (i + 1) as u8;
        }
        long[256] = 255;
        long[257] = 4;
        assert_eq!(parse_trailer(&long), Ok((1, 4)));
    }

    #[test]
    fn header_and_aad_layout() {
        let mut header = [0u8; ESP_HEADER_LEN];
        write_header(&mut header, 0x0102_0304, 0x1122_3344_5566_7788);
        assert_eq!(
            header,
            [1, 2, 3, 4, 0x55, 0x66, 0x77, 0x88, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(
            parse_header(&header),
            (
                0x0102_0304,
                0x5566_7788,
                [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
            )
        );
        assert_eq!(spi_of(&header), Some(0x0102_0304));
        assert_eq!(spi_of(&header[..15]), None);
        assert_eq!(
            aad(0x0102_0304, 0x1122_3344_5566_7788, false).as_ref(),
            [1, 2, 3, 4, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(
            aad(0x0102_0304, 0x1122_3344_5566_7788, true).as_ref(),
            [1, 2, 3, 4, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
    }

    #[test]
    fn next_header_from_version_nibble() {
        assert_eq!(next_header_for(&[0x45]), Ok(NEXT_HEADER_IPV4));
        assert_eq!(next_header_for(&[0x60]), Ok(NEXT_HEADER_IPV6));
        for bad in [&[][..], &[0x00], &[0x50], &[0xff]] {
            assert_eq!(next_header_for(bad), Err(EspError::InvalidInnerPacket));
        }
    }
}
