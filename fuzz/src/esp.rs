//! ESP helpers for the `esp_open` target: fixed keys, a reference sealer and a trailer oracle.
//!
//! Input layout of `esp_open` (see `fuzz_targets/esp_open.rs`): the first byte is a
//! [`Setup`]: bit 0 the cipher, bit 1 ESN, bits 2–3 the mode, bits 4–5 the replay window.

use braid_ipsec::esp::{EspCipher, EspError, EspKeys, ESP_HEADER_LEN, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

/// The SPI of the fuzzed inbound SA (and of the matching outbound SA).
pub const SPI: u32 = 0x1bad_5eed;

/// The fixed 36 bytes of KEYMAT (32-byte key, 4-byte salt) both SAs are built from.
pub const KEYMAT: [u8; 36] = {
    let mut k = [0u8; 36];
    let mut i = 0;
    while i < 36 {
        k[i] = (i as u8).wrapping_mul(37).wrapping_add(11);
        i += 1;
    }
    k
};

/// How one `esp_open` input opens.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// The rest of the input is one datagram, opened as it is.
    Raw,
    /// Packets sealed by a real `OutboundSa`, delivered in a fuzzer-chosen order, some with
    /// one byte flipped.
    Sealed,
    /// Packets built by [`reference_seal`] with a fuzzer-chosen sequence number and with the
    /// padding, pad length and next header mutated before encryption: authentic packets with
    /// bad trailers.
    Crafted,
}

/// The first input byte, decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Setup {
    pub cipher: EspCipher,
    pub esn: bool,
    pub mode: Mode,
    pub window: u32,
}

impl Setup {
    pub fn from_byte(b: u8) -> Setup {
        Setup {
            cipher: if b & 1 == 0 {
                EspCipher::AesGcm256
            } else {
                EspCipher::ChaCha20Poly1305
            },
            esn: b & 2 != 0,
            mode: match (b >> 2) & 3 {
                0 => Mode::Raw,
                1 => Mode::Sealed,
                _ => Mode::Crafted,
            },
            window: [64, 128, 1024, 65536][usize::from((b >> 4) & 3)],
        }
    }

    /// The byte [`Setup::from_byte`] reads back as `self` (for writing seeds).
    pub fn to_byte(self) -> u8 {
        let mut b = 0;
        if self.cipher == EspCipher::ChaCha20Poly1305 {
            b |= 1;
        }
        if self.esn {
            b |= 2;
        }
        b |= match self.mode {
            Mode::Raw => 0,
            Mode::Sealed => 1,
            Mode::Crafted => 2,
        } << 2;
        b |= match self.window {
            64 => 0,
            128 => 1,
            1024 => 2,
            _ => 3,
        } << 4;
        b
    }
}

/// One direction's keys for `cipher`, from [`KEYMAT`].
pub fn keys(cipher: EspCipher) -> EspKeys {
    EspKeys::from_keymat(cipher, &KEYMAT).expect("36 bytes of KEYMAT")
}

/// Padding bytes making `payload_len` + 2 a multiple of 4 (what a conforming sender adds).
pub fn minimal_pad(payload_len: usize) -> usize {
    (4 - (payload_len + 2) % 4) % 4
}

/// The next header a sender writes for `inner`, from its version nibble (4 for anything that
/// is not IPv6: the oracle then expects a refusal).
pub fn next_header_for(inner: &[u8]) -> u8 {
    match inner.first().map(|b| b >> 4) {
        Some(6) => NEXT_HEADER_IPV6,
        _ => NEXT_HEADER_IPV4,
    }
}

/// `inner` ‖ padding 1, 2, …, `pad` ‖ pad length ‖ next header: an ESP plaintext.
pub fn plaintext(inner: &[u8], pad: u8, next_header: u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(inner.len() + usize::from(pad) + 2);
    p.extend_from_slice(inner);
    p.extend(1..=pad);
    p.push(pad);
    p.push(next_header);
    p
}

/// Seals `plaintext` (payload and trailer as given) into an ESP packet with sequence number
/// `seq`, written from RFC 4303 §2, RFC 4106 §4–5 and RFC 7634 §2 independently of
/// braid-ipsec: SPI ‖ low 32 bits of `seq` ‖ IV (= `seq`, big-endian) ‖ ciphertext ‖ ICV, with
/// nonce = salt ‖ IV and AAD = SPI ‖ seq (8 bytes) or, with ESN, SPI ‖ high ‖ low (12 bytes).
pub fn reference_seal(cipher: EspCipher, esn: bool, spi: u32, seq: u64, plaintext: &[u8]) -> Vec<u8> {
    let algorithm = match cipher {
        EspCipher::AesGcm256 => &AES_256_GCM,
        EspCipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
    };
    let key = LessSafeKey::new(UnboundKey::new(algorithm, &KEYMAT[..32]).expect("32-byte key"));
    let iv = seq.to_be_bytes();
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&KEYMAT[32..]);
    nonce[4..].copy_from_slice(&iv);
    let mut aad = spi.to_be_bytes().to_vec();
    if esn {
        aad.extend_from_slice(&((seq >> 32) as u32).to_be_bytes());
    }
    aad.extend_from_slice(&(seq as u32).to_be_bytes());

    let mut packet = Vec::with_capacity(ESP_HEADER_LEN + plaintext.len() + 16);
    packet.extend_from_slice(&spi.to_be_bytes());
    packet.extend_from_slice(&(seq as u32).to_be_bytes());
    packet.extend_from_slice(&iv);
    let mut body = plaintext.to_vec();
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut body)
        .expect("small ESP plaintext");
    packet.extend_from_slice(&body);
    packet.extend_from_slice(tag.as_ref());
    packet
}

/// What RFC 4303 §2.4–2.6 (and braid's tunnel mode) make of a decrypted plaintext: the inner
/// packet's length and next header, or the refusal. Padding must read 1, 2, 3…; the pad
/// length must fit; the next header must be 4 or 41 and agree with a non-empty inner packet's
/// version nibble. When several things are wrong the RFC does not say which to report, so
/// callers compare only `Ok` against `Err`.
pub fn expected_trailer(plaintext: &[u8]) -> Result<(usize, u8), EspError> {
    let n = plaintext.len();
    if n < 2 {
        return Err(EspError::Truncated);
    }
    let next_header = plaintext[n - 1];
    let pad = usize::from(plaintext[n - 2]);
    if pad > n - 2 {
        return Err(EspError::BadPadding);
    }
    let payload_len = n - 2 - pad;
    for (i, &b) in plaintext[payload_len..n - 2].iter().enumerate() {
        if usize::from(b) != i + 1 {
            return Err(EspError::BadPadding);
        }
    }
    let version = match next_header {
        NEXT_HEADER_IPV4 => 4,
        NEXT_HEADER_IPV6 => 6,
        _ => return Err(EspError::BadNextHeader),
    };
    match plaintext.first() {
        Some(b) if payload_len > 0 && b >> 4 == version => Ok((payload_len, next_header)),
        _ => Err(EspError::InvalidInnerPacket),
    }
}

/// A small IPv4 (UDP) packet of `len` bytes (at least 20), for seeds.
pub fn ipv4_packet(len: usize, marker: u8) -> Vec<u8> {
    let len = len.max(20);
    let mut p = vec![0x45, 0, (len >> 8) as u8, len as u8, 0, 0, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&[198, 18, 1, 2, 198, 18, 2, 1]);
    p.resize(len, marker);
    p
}

/// A small IPv6 (UDP) packet of `len` bytes (at least 40), for seeds.
pub fn ipv6_packet(len: usize, marker: u8) -> Vec<u8> {
    let len = len.max(40);
    let payload = len - 40;
    let mut p = vec![0x60, 0, 0, 0, (payload >> 8) as u8, payload as u8, 17, 64];
    p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.resize(len, marker);
    p
}
