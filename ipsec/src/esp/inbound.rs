//! The receiving half of a CHILD SA.
//!
//! Design: an expanded AEAD key and an RFC 6479 replay window, allocated once in `new`.
//! Opening runs the RFC 4303 §3.4 checks from cheapest to dearest (length, SPI, replay, then
//! the AEAD) so junk and replays cost no decryption; it copies the ciphertext to the front of
//! the caller's buffer and decrypts it there, so the inner packet lands at `out[..len]` with
//! one copy and one AEAD pass. Only an authentic packet marks the window.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Tag};

use super::wire::{self, TRAILER_LEN};
use super::{esn, EspCipher, EspError, EspKeys, ESP_HEADER_LEN, ESP_ICV_LEN};
use crate::replay::ReplayWindow;

/// The furthest ahead of the window's highest sequence number an ESN packet is believed to be
/// (2^31): beyond it, the block guess of RFC 4303 A2.2 is taken to be wrong, the packet late.
const MAX_PLAUSIBLE_JUMP: u64 = 1 << 31;

/// One opened packet: the inner packet is `out[..len]`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Opened {
    /// Length of the inner IP packet at the start of `out`.
    pub len: usize,
    /// 4 (IPv4) or 41 (IPv6), matching the inner packet's version nibble.
    pub next_header: u8,
    /// The packet's full sequence number (the high half inferred with ESN).
    pub seq: u64,
}

/// The receiving half of an ESP SA: SPI, key and anti-replay window.
pub struct InboundSa {
    spi: u32,
    cipher: EspCipher,
    esn: bool,
    /// Boxed: ring's expanded key is over 500 bytes, and SAs are moved around (handed from
    /// IKE to the data path) far more cheaply without it inline.
    key: Box<LessSafeKey>,
    salt: [u8; EspCipher::SALT_LEN],
    replay: ReplayWindow,
    packets: u64,
    bytes: u64,
}

impl InboundSa {
    /// An SA receiving on our own `spi`, with 64-bit extended sequence numbers if `esn` was
    /// negotiated, and a replay window of at least `replay_window` packets (see
    /// [`ReplayWindow::new`] for the rounding). `keys` is consumed and wiped; the AEAD key is
    /// expanded here, once, for `cipher`.
    pub fn new(spi: u32, cipher: EspCipher, keys: EspKeys, esn: bool, replay_window: u32) -> Self {
        let (key, salt) = keys.expand(cipher);
        Self {
            spi,
            cipher,
            esn,
            key: Box::new(key),
            salt,
            replay: ReplayWindow::new(replay_window),
            packets: 0,
            bytes: 0,
        }
    }

    /// The SPI this SA receives on.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Packets opened and delivered so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Inner-packet bytes delivered so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The anti-replay window (its highest sequence number and size).
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    /// Opens one ESP packet (the whole UDP payload) into `out`: on success the inner packet is
    /// `out[..len]`. `out` needs `datagram.len() - ESP_HEADER_LEN - ESP_ICV_LEN` bytes, so
    /// `datagram.len()` always suffices. On an error before the ICV check the window is
    /// untouched; after it (bad trailer) the sequence number is marked as seen, since the
    /// packet is authentic. On error `out`'s contents are unspecified.
    pub fn open(&mut self, datagram: &[u8], out: &mut [u8]) -> Result<Opened, EspError> {
        let (header, rest) = datagram
            .split_first_chunk::<ESP_HEADER_LEN>()
            .ok_or(EspError::Truncated)?;
        let (ciphertext, icv) = rest.split_last_chunk::<ESP_ICV_LEN>().ok_or(EspError::Truncated)?;
        if ciphertext.len() < TRAILER_LEN {
            return Err(EspError::Truncated);
        }
        let (spi, seq_low, iv) = wire::parse_header(header);
        if spi != self.spi {
            return Err(EspError::WrongSpi);
        }
        let plaintext = out.get_mut(..ciphertext.len()).ok_or(EspError::BufferTooSmall)?;
        let seq = if self.esn {
            let seq = esn::infer(seq_low, self.replay.highest(), self.replay.window()).ok_or(EspError::TooOld)?;
            // RFC 4303 A2.2 reads a low half just left of the window as the next 2^32 block,
            // which only a peer that sent billions of packets we never saw could mean. Such a
            // jump is a late packet in practice: report it as too old without decrypting.
            if seq > self.replay.highest().saturating_add(MAX_PLAUSIBLE_JUMP) {
                return Err(EspError::TooOld);
            }
            seq
        } else {
            u64::from(seq_low)
        };
        self.replay.check(seq)?;

        plaintext.copy_from_slice(ciphertext);
        let nonce = wire::nonce(&self.salt, iv);
        let aad = Aad::from(wire::aad(spi, seq, self.esn));
        self.key
            .open_in_place_separate_tag(nonce, aad, Tag::from(*icv), plaintext, 0..)
            .map_err(|_| EspError::AuthenticationFailed)?;
        self.replay.accept(seq)?;

        let (len, next_header) = wire::parse_trailer(plaintext)?;
        self.packets += 1;
        self.bytes += len as u64;
        Ok(Opened { len, next_header, seq })
    }

    /// Test hook: mark `seq` as received without a packet, to place the window.
    #[cfg(test)]
    pub(crate) fn mark(&mut self, seq: u64) {
        self.replay.accept(seq).expect("test marks a fresh sequence number");
    }
}

impl fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundSa")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .field("esn", &self.esn)
            .field("replay", &self.replay)
            .field("packets", &self.packets)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}
