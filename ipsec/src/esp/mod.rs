//! ESP (RFC 4303) security associations in tunnel mode: sealing and opening packets.
//!
//! Design: one [`OutboundSa`] and one [`InboundSa`] per direction of a CHILD SA, each owned by
//! the data thread that uses it, so neither needs a lock. The AEAD key is expanded once, in
//! `new`; sealing and opening work in the caller's buffers and never allocate. The only
//! cryptography is `ring`'s AEADs: AES-256-GCM with a 16-byte ICV (RFC 4106) and
//! ChaCha20-Poly1305 (RFC 7634). Every refusal is a typed [`EspError`], never a panic.
//!
//! Wire layout (RFC 4303 §2, RFC 4106 §3, RFC 7634 §3), which is the whole UDP payload on port
//! 4500 (RFC 3948 §2.1: no marker in front of ESP; the caller's socket adds the UDP header):
//!
//! ```text
//! SPI (4) | sequence number, low 32 bits (4) | IV (8)          <- ESP_HEADER_LEN = 16
//! ciphertext of: inner IP packet | padding 1, 2, 3… | pad length (1) | next header (1)
//! ICV (16)                                                       <- ESP_ICV_LEN
//! ```
//!
//! * Nonce: the 4-byte salt from KEYMAT, then the 8-byte IV (RFC 4106 §4, RFC 7634 §2). The IV
//!   is the packet's 64-bit sequence number, big-endian: unique per key by construction, since
//!   a sequence number is never reused (RFC 4303 §3.3.3).
//! * AAD: SPI ‖ sequence number (8 bytes), or with ESN SPI ‖ high 32 bits ‖ low 32 bits
//!   (12 bytes), though only the low half is sent (RFC 4106 §5, RFC 7634 §2.1, RFC 4304).
//! * Padding: the fewest bytes making the ciphertext a multiple of 4 (RFC 4303 §2.4; both AEADs
//!   are stream ciphers, so there is no block to fill). Receivers accept any length, but the
//!   bytes must be 1, 2, 3… (RFC 4303 §2.4; strongSwan's libipsec drops anything else).
//! * Next header: 4 for an IPv4 inner packet, 41 for IPv6, taken from the inner packet's version
//!   nibble when sealing and checked against it when opening. Nothing else is tunnel mode
//!   (59, the dummy packet, is dropped as RFC 4303 §2.6 allows).
//! * Sequence numbers start at 1 and never wrap: the last one is 2^32 - 1 without ESN and
//!   2^64 - 1 with ESN, after which sealing fails and the SA must already have been rekeyed.
//!
//! Opening follows RFC 4303 §3.4: SPI, anti-replay check ([`crate::replay`]) before spending
//! any time on decryption, decryption and ICV check, and only then marking the sequence number
//! as seen, so forgeries never move the window. A packet whose ICV verified but whose trailer is
//! wrong is still marked (it did come from the peer), then dropped. With ESN the high 32 bits
//! are inferred from the window (RFC 4303 Appendix A2.2, in [`esn`]).

mod esn;
mod inbound;
mod keys;
mod outbound;
#[cfg(test)]
mod tests;
mod wire;

pub use inbound::{InboundSa, Opened};
pub use keys::EspKeys;
pub use outbound::OutboundSa;
pub use wire::{spi_of, MAX_INNER_LEN, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6};

use crate::replay::ReplayError;

/// SPI, low 32 bits of the sequence number, and the 8-byte IV.
pub const ESP_HEADER_LEN: usize = 16;
/// The ICV both AEADs append (RFC 4106's 16-byte variant).
pub const ESP_ICV_LEN: usize = 16;
/// The most ESP adds to an inner packet: header, 3 bytes of padding, pad length, next header,
/// ICV. `inner.len() + ESP_MAX_OVERHEAD` is always enough room for [`OutboundSa::seal`].
pub const ESP_MAX_OVERHEAD: usize = ESP_HEADER_LEN + 3 + 2 + ESP_ICV_LEN;

/// The AEAD an SA uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EspCipher {
    /// AES-256 in GCM with a 16-byte ICV (RFC 4106; IKEv2 ENCR 20, key length 256).
    AesGcm256,
    /// ChaCha20-Poly1305 (RFC 7634; IKEv2 ENCR 28).
    ChaCha20Poly1305,
}

impl EspCipher {
    /// Key bytes at the start of each direction's KEYMAT.
    pub const KEY_LEN: usize = 32;
    /// Salt bytes following the key (RFC 4106 §8.1, RFC 7634 §2).
    pub const SALT_LEN: usize = 4;

    /// KEYMAT bytes per direction: the key, then the salt (36 for both ciphers).
    pub const fn keymat_len(self) -> usize {
        Self::KEY_LEN + Self::SALT_LEN
    }

    pub(crate) fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            EspCipher::AesGcm256 => &ring::aead::AES_256_GCM,
            EspCipher::ChaCha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
        }
    }
}

/// Why an SA refused to seal or open a packet. Each variant is a separately counted reason.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
pub enum EspError {
    /// Shorter than an ESP header, a pad length, a next header and an ICV.
    #[error("ESP packet too short")]
    Truncated,
    /// The ICV did not verify: not from the peer, damaged, or (with ESN) from a sequence-number
    /// epoch the window did not infer.
    #[error("ESP ICV did not verify")]
    AuthenticationFailed,
    /// A sequence number inside the window that was already received.
    #[error("replayed ESP sequence number")]
    Replayed,
    /// A sequence number left of the window, or 0.
    #[error("ESP sequence number left of the replay window")]
    TooOld,
    /// Authentic, but the pad length is longer than the packet or the padding is not 1, 2, 3…
    #[error("bad ESP padding")]
    BadPadding,
    /// Authentic, but the next header is neither 4 (IPv4) nor 41 (IPv6).
    #[error("ESP next header is not IPv4 or IPv6")]
    BadNextHeader,
    /// The SA has sent its last sequence number; it must be replaced by a rekeyed one.
    #[error("ESP sequence numbers exhausted")]
    SequenceExhausted,
    /// The caller's output buffer is too short for the result.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// Sealing: empty, over [`MAX_INNER_LEN`] bytes, or not IPv4/IPv6 by its version nibble.
    /// Opening: an authentic packet whose payload is empty or whose version nibble does not
    /// match its next header.
    #[error("inner packet is not a valid IPv4 or IPv6 packet")]
    InvalidInnerPacket,
    /// KEYMAT of the wrong length for the cipher.
    #[error("ESP key material has the wrong length")]
    BadKeyLength,
    /// The packet's SPI is not this SA's.
    #[error("ESP packet for another SPI")]
    WrongSpi,
}

impl From<ReplayError> for EspError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replayed => EspError::Replayed,
            ReplayError::TooOld => EspError::TooOld,
        }
    }
}
