//! The sending half of a CHILD SA.
//!
//! Design: a sequence counter and an expanded AEAD key. Sealing writes the header, copies the
//! inner packet behind it, appends the trailer and encrypts that in place, then appends the
//! ICV: one copy and one AEAD pass, in the caller's buffer. A sequence number is spent only
//! when a packet is actually sealed, and the last one is never exceeded.

use std::fmt;

use ring::aead::{Aad, LessSafeKey};

use super::wire::{self, TRAILER_LEN};
use super::{EspCipher, EspError, EspKeys, ESP_HEADER_LEN, ESP_ICV_LEN};

/// The sending half of an ESP SA: SPI, key, and sequence counter.
pub struct OutboundSa {
    spi: u32,
    cipher: EspCipher,
    esn: bool,
    /// Boxed: ring's expanded key is over 500 bytes, and SAs are moved around (handed from
    /// IKE to the data path) far more cheaply without it inline.
    key: Box<LessSafeKey>,
    salt: [u8; EspCipher::SALT_LEN],
    /// The last sequence number used; 0 before the first packet.
    last_seq: u64,
    /// The last sequence number this SA may use: 2^32 - 1, or 2^64 - 1 with ESN.
    max_seq: u64,
    packets: u64,
    bytes: u64,
}

impl OutboundSa {
    /// An SA sending to the peer's `spi` (the SPI the peer chose for its inbound SA), with
    /// 64-bit extended sequence numbers if `esn` was negotiated. `keys` is consumed and wiped;
    /// the AEAD key is expanded here, once, for `cipher`.
    pub fn new(spi: u32, cipher: EspCipher, keys: EspKeys, esn: bool) -> Self {
        let (key, salt) = keys.expand(cipher);
        let max_seq = if esn { u64::MAX } else { u64::from(u32::MAX) };
        Self {
            spi,
            cipher,
            esn,
            key: Box::new(key),
            salt,
            last_seq: 0,
            max_seq,
            packets: 0,
            bytes: 0,
        }
    }

    /// The SPI written into every packet.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Packets sealed so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Inner-packet bytes sealed so far (what IKE byte lifetimes count).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The sequence number the next packet will carry. Once the SA is exhausted this is one
    /// past the last (saturating at 2^64 - 1 with ESN); [`OutboundSa::remaining`] tells.
    pub fn next_seq(&self) -> u64 {
        self.last_seq.saturating_add(1)
    }

    /// Packets this SA can still seal before [`EspError::SequenceExhausted`]: the number to
    /// rekey on well before it reaches 0.
    pub fn remaining(&self) -> u64 {
        self.max_seq - self.last_seq
    }

    /// Seals one inner IP packet into `out[..len]` and returns `len`. `out` must hold the
    /// packet; `inner.len() + ESP_MAX_OVERHEAD` bytes always do. On any error nothing was
    /// spent: the sequence number is still free and the counters unchanged.
    pub fn seal(&mut self, inner: &[u8], out: &mut [u8]) -> Result<usize, EspError> {
        let next_header = wire::next_header_for(inner)?;
        if inner.len() > wire::MAX_INNER_LEN {
            return Err(EspError::InvalidInnerPacket);
        }
        let body_len = inner.len() + wire::pad_len_for(inner.len()) + TRAILER_LEN;
        let len = self.seal_with(out, body_len, |body| {
            if let Some(payload) = body.get_mut(..inner.len()) {
                payload.copy_from_slice(inner);
            }
            wire::write_trailer(body, inner.len(), next_header);
        })?;
        self.bytes += inner.len() as u64;
        Ok(len)
    }

    /// Seals a packet whose `body_len`-byte plaintext (payload and trailer) `fill` writes.
    fn seal_with(&mut self, out: &mut [u8], body_len: usize, fill: impl FnOnce(&mut [u8])) -> Result<usize, EspError> {
        let seq = self
            .last_seq
            .checked_add(1)
            .filter(|&seq| seq <= self.max_seq)
            .ok_or(EspError::SequenceExhausted)?;
        let len = ESP_HEADER_LEN + body_len + ESP_ICV_LEN;
        let packet = out.get_mut(..len).ok_or(EspError::BufferTooSmall)?;
        let (header, rest) = packet
            .split_first_chunk_mut::<ESP_HEADER_LEN>()
            .ok_or(EspError::BufferTooSmall)?;
        let (body, icv) = rest
            .split_last_chunk_mut::<ESP_ICV_LEN>()
            .ok_or(EspError::BufferTooSmall)?;
        wire::write_header(header, self.spi, seq);
        fill(body);
        let nonce = wire::nonce(&self.salt, seq.to_be_bytes());
        let aad = Aad::from(wire::aad(self.spi, seq, self.esn));
        // ring refuses only inputs beyond 2^36 bytes (GCM) or 2^38 (ChaCha20), far above
        // MAX_INNER_LEN; map it anyway rather than panic.
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, aad, body)
            .map_err(|_| EspError::InvalidInnerPacket)?;
        icv.copy_from_slice(tag.as_ref());
        self.last_seq = seq;
        self.packets += 1;
        Ok(len)
    }

    /// Test hook: seal an arbitrary plaintext (payload and trailer as given), to craft
    /// authentic packets with broken trailers.
    #[cfg(test)]
    pub(crate) fn seal_plaintext(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, EspError> {
        self.seal_with(out, plaintext.len(), |body| body.copy_from_slice(plaintext))
    }

    /// Test hook: make `next` the next sequence number (as if `next - 1` packets were sent).
    #[cfg(test)]
    pub(crate) fn skip_to(&mut self, next: u64) {
        self.last_seq = next - 1;
    }
}

impl fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundSa")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .field("esn", &self.esn)
            .field("next_seq", &self.next_seq())
            .field("packets", &self.packets)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}
