//! The IKEv2 message codec (RFC 7296 §3).
//!
//! Design: the IKE control path is not per-packet hot, so messages decode into owned values
//! ([`Payload`], [`Proposal`], [`TrafficSelector`]...) and encode from them into a `Vec<u8>`.
//! Untrusted bytes enter through [`parse_message`] (a whole datagram after the non-ESP marker)
//! or [`parse_payloads`] (the decrypted inside of an SK payload); both validate every length
//! field against the bytes they have and never panic, whatever the input.
//!
//! * [`Header`]: the 28-byte IKE header (§3.1).
//! * [`Payload`]: the payloads braid decodes (SA, KE, IDi/IDr, AUTH, Ni/Nr, N, D, TSi/TSr, V);
//!   any other type is kept raw as [`Payload::Unknown`] unless its critical bit is set (§3.2).
//! * [`parse_message`]: header + either plaintext payloads ([`Body::Plain`], IKE_SA_INIT) or
//!   the position of the SK payload ([`Body::Encrypted`], everything after IKE_SA_INIT), which
//!   the caller authenticates and decrypts before calling [`parse_payloads`] on the plaintext.
//! * [`encode_message`] builds an unencrypted message; [`encode_sk_prefix`] writes the header
//!   and SK generic header of an encrypted one, which are also the AEAD's associated data.
//!
//! Leniency, chosen for interop with strongSwan: the critical bit of payloads braid decodes is
//! ignored (§3.2); RESERVED fields are ignored on receipt (and kept where they are signed: the
//! ID payload); a transform with an attribute other than KEY_LENGTH is dropped from its
//! proposal (§3.3.6: the transform is unacceptable, its siblings are not); proposal numbers
//! must be ≥ 1 and non-decreasing, as strongSwan checks (a response echoes the chosen number,
//! so "first is 1" cannot be checked here).

mod header;
mod id;
mod notify;
mod payload;
mod proposal;
mod ts;

#[cfg(test)]
mod tests;

pub use header::Header;
pub use id::Identification;
pub use notify::{Delete, Notify};
pub use payload::{
    encode_message, encode_payloads, encode_sk_prefix, find_notify, parse_message, parse_payloads, try_encode_message,
    Body, EncryptedPart, Message, Payload,
};
pub use proposal::{Proposal, Transform};
pub use ts::TrafficSelector;

/// Length of the IKE header (§3.1).
pub const IKE_HEADER_LEN: usize = 28;
/// Length of a generic payload header (§3.2).
pub const GENERIC_HEADER_LEN: usize = 4;
/// The largest IKE message: the IKE header's length is a u32, but a UDP datagram ends here.
pub const MAX_IKE_MESSAGE: usize = 65535;
/// The most payloads one chain may hold; strongSwan's busiest message has about 15.
pub const MAX_PAYLOADS: usize = 64;
/// The version byte braid sends: major 2, minor 0. On receipt only the major version counts.
pub const IKE_VERSION: u8 = 0x20;
/// The critical bit in a generic payload header's flags byte (§3.2).
pub const CRITICAL: u8 = 0x80;

/// IKE header flag bits (§3.1).
pub mod flags {
    /// Set by the original initiator of the IKE SA (or of its last rekey).
    pub const INITIATOR: u8 = 0x08;
    /// "Version": the sender could speak a higher major version. Ignored on receipt.
    pub const VERSION: u8 = 0x10;
    /// Set on responses.
    pub const RESPONSE: u8 = 0x20;
}

/// Exchange types (§3.1).
pub mod exchange {
    pub const IKE_SA_INIT: u8 = 34;
    pub const IKE_AUTH: u8 = 35;
    pub const CREATE_CHILD_SA: u8 = 36;
    pub const INFORMATIONAL: u8 = 37;
}

/// Payload types (§3.2, RFC 7383 for SKF).
pub mod payload_type {
    pub const NONE: u8 = 0;
    pub const SA: u8 = 33;
    pub const KE: u8 = 34;
    pub const IDI: u8 = 35;
    pub const IDR: u8 = 36;
    pub const CERT: u8 = 37;
    pub const CERTREQ: u8 = 38;
    pub const AUTH: u8 = 39;
    pub const NONCE: u8 = 40;
    pub const NOTIFY: u8 = 41;
    pub const DELETE: u8 = 42;
    pub const VENDOR: u8 = 43;
    pub const TSI: u8 = 44;
    pub const TSR: u8 = 45;
    pub const SK: u8 = 46;
    pub const CP: u8 = 47;
    pub const EAP: u8 = 48;
    pub const SKF: u8 = 53;

    /// The payload's short name as in RFC 7296 §3.2 (e.g. "SA", "N", "TSi"), for logs.
    pub fn name(kind: u8) -> Option<&'static str> {
        Some(match kind {
            NONE => "NONE",
            SA => "SA",
            KE => "KE",
            IDI => "IDi",
            IDR => "IDr",
            CERT => "CERT",
            CERTREQ => "CERTREQ",
            AUTH => "AUTH",
            NONCE => "No",
            NOTIFY => "N",
            DELETE => "D",
            VENDOR => "V",
            TSI => "TSi",
            TSR => "TSr",
            SK => "SK",
            CP => "CP",
            EAP => "EAP",
            SKF => "SKF",
            _ => return None,
        })
    }
}

/// Notify message types (§3.10.1 and the IANA registry). Below 16384: errors; above: status.
pub mod notify_type {
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    pub const INVALID_IKE_SPI: u16 = 4;
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    pub const INVALID_SYNTAX: u16 = 7;
    pub const INVALID_MESSAGE_ID: u16 = 9;
    pub const INVALID_SPI: u16 = 11;
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    pub const AUTHENTICATION_FAILED: u16 = 24;
    pub const SINGLE_PAIR_REQUIRED: u16 = 34;
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    pub const INTERNAL_ADDRESS_FAILURE: u16 = 36;
    pub const FAILED_CP_REQUIRED: u16 = 37;
    pub const TS_UNACCEPTABLE: u16 = 38;
    pub const INVALID_SELECTORS: u16 = 39;
    pub const UNACCEPTABLE_ADDRESSES: u16 = 40;
    pub const UNEXPECTED_NAT_DETECTED: u16 = 41;
    pub const TEMPORARY_FAILURE: u16 = 43;
    pub const CHILD_SA_NOT_FOUND: u16 = 44;
    /// The first status type: any type below it is an error.
    pub const FIRST_STATUS: u16 = 16384;
    pub const INITIAL_CONTACT: u16 = 16384;
    pub const SET_WINDOW_SIZE: u16 = 16385;
    pub const ADDITIONAL_TS_POSSIBLE: u16 = 16386;
    pub const IPCOMP_SUPPORTED: u16 = 16387;
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    pub const COOKIE: u16 = 16390;
    pub const USE_TRANSPORT_MODE: u16 = 16391;
    pub const HTTP_CERT_LOOKUP_SUPPORTED: u16 = 16392;
    pub const REKEY_SA: u16 = 16393;
    pub const ESP_TFC_PADDING_NOT_SUPPORTED: u16 = 16394;
    pub const NON_FIRST_FRAGMENTS_ALSO: u16 = 16395;
    pub const MOBIKE_SUPPORTED: u16 = 16396;
    pub const ADDITIONAL_IP4_ADDRESS: u16 = 16397;
    pub const ADDITIONAL_IP6_ADDRESS: u16 = 16398;
    pub const NO_ADDITIONAL_ADDRESSES: u16 = 16399;
    pub const UPDATE_SA_ADDRESSES: u16 = 16400;
    pub const COOKIE2: u16 = 16401;
    pub const NO_NATS_ALLOWED: u16 = 16402;
    pub const MULTIPLE_AUTH_SUPPORTED: u16 = 16404;
    pub const ANOTHER_AUTH_FOLLOWS: u16 = 16405;
    pub const REDIRECT_SUPPORTED: u16 = 16406;
    pub const REDIRECT: u16 = 16407;
    pub const REDIRECTED_FROM: u16 = 16408;
    pub const EAP_ONLY_AUTHENTICATION: u16 = 16417;
    pub const CHILDLESS_IKEV2_SUPPORTED: u16 = 16418;
    pub const IKEV2_MESSAGE_ID_SYNC_SUPPORTED: u16 = 16420;
    pub const FRAGMENTATION_SUPPORTED: u16 = 16430;
    pub const SIGNATURE_HASH_ALGORITHMS: u16 = 16431;

    /// Whether `kind` is an error type (< 16384); unknown errors still mean failure (§3.10.1).
    pub fn is_error(kind: u16) -> bool {
        kind < FIRST_STATUS
    }

    /// The registry name of a notify type, for logs.
    pub fn name(kind: u16) -> Option<&'static str> {
        Some(match kind {
            UNSUPPORTED_CRITICAL_PAYLOAD => "UNSUPPORTED_CRITICAL_PAYLOAD",
            INVALID_IKE_SPI => "INVALID_IKE_SPI",
            INVALID_MAJOR_VERSION => "INVALID_MAJOR_VERSION",
            INVALID_SYNTAX => "INVALID_SYNTAX",
            INVALID_MESSAGE_ID => "INVALID_MESSAGE_ID",
            INVALID_SPI => "INVALID_SPI",
            NO_PROPOSAL_CHOSEN => "NO_PROPOSAL_CHOSEN",
            INVALID_KE_PAYLOAD => "INVALID_KE_PAYLOAD",
            AUTHENTICATION_FAILED => "AUTHENTICATION_FAILED",
            SINGLE_PAIR_REQUIRED => "SINGLE_PAIR_REQUIRED",
            NO_ADDITIONAL_SAS => "NO_ADDITIONAL_SAS",
            INTERNAL_ADDRESS_FAILURE => "INTERNAL_ADDRESS_FAILURE",
            FAILED_CP_REQUIRED => "FAILED_CP_REQUIRED",
            TS_UNACCEPTABLE => "TS_UNACCEPTABLE",
            INVALID_SELECTORS => "INVALID_SELECTORS",
            UNACCEPTABLE_ADDRESSES => "UNACCEPTABLE_ADDRESSES",
            UNEXPECTED_NAT_DETECTED => "UNEXPECTED_NAT_DETECTED",
            TEMPORARY_FAILURE => "TEMPORARY_FAILURE",
            CHILD_SA_NOT_FOUND => "CHILD_SA_NOT_FOUND",
            INITIAL_CONTACT => "INITIAL_CONTACT",
            SET_WINDOW_SIZE => "SET_WINDOW_SIZE",
            ADDITIONAL_TS_POSSIBLE => "ADDITIONAL_TS_POSSIBLE",
            IPCOMP_SUPPORTED => "IPCOMP_SUPPORTED",
            NAT_DETECTION_SOURCE_IP => "NAT_DETECTION_SOURCE_IP",
            NAT_DETECTION_DESTINATION_IP => "NAT_DETECTION_DESTINATION_IP",
            COOKIE => "COOKIE",
            USE_TRANSPORT_MODE => "USE_TRANSPORT_MODE",
            HTTP_CERT_LOOKUP_SUPPORTED => "HTTP_CERT_LOOKUP_SUPPORTED",
            REKEY_SA => "REKEY_SA",
            ESP_TFC_PADDING_NOT_SUPPORTED => "ESP_TFC_PADDING_NOT_SUPPORTED",
            NON_FIRST_FRAGMENTS_ALSO => "NON_FIRST_FRAGMENTS_ALSO",
            MOBIKE_SUPPORTED => "MOBIKE_SUPPORTED",
            ADDITIONAL_IP4_ADDRESS => "ADDITIONAL_IP4_ADDRESS",
            ADDITIONAL_IP6_ADDRESS => "ADDITIONAL_IP6_ADDRESS",
            NO_ADDITIONAL_ADDRESSES => "NO_ADDITIONAL_ADDRESSES",
            UPDATE_SA_ADDRESSES => "UPDATE_SA_ADDRESSES",
            COOKIE2 => "COOKIE2",
            NO_NATS_ALLOWED => "NO_NATS_ALLOWED",
            MULTIPLE_AUTH_SUPPORTED => "MULTIPLE_AUTH_SUPPORTED",
            ANOTHER_AUTH_FOLLOWS => "ANOTHER_AUTH_FOLLOWS",
            REDIRECT_SUPPORTED => "REDIRECT_SUPPORTED",
            REDIRECT => "REDIRECT",
            REDIRECTED_FROM => "REDIRECTED_FROM",
            EAP_ONLY_AUTHENTICATION => "EAP_ONLY_AUTHENTICATION",
            CHILDLESS_IKEV2_SUPPORTED => "CHILDLESS_IKEV2_SUPPORTED",
            IKEV2_MESSAGE_ID_SYNC_SUPPORTED => "IKEV2_MESSAGE_ID_SYNC_SUPPORTED",
            FRAGMENTATION_SUPPORTED => "FRAGMENTATION_SUPPORTED",
            SIGNATURE_HASH_ALGORITHMS => "SIGNATURE_HASH_ALGORITHMS",
            _ => return None,
        })
    }
}

/// Transform types, the transform IDs braid uses, and attribute types (§3.3.2, §3.3.5).
pub mod transform {
    /// Transform type 1: encryption algorithm.
    pub const ENCR: u8 = 1;
    /// Transform type 2: pseudorandom function.
    pub const PRF: u8 = 2;
    /// Transform type 3: integrity algorithm (absent with AEAD ciphers).
    pub const INTEG: u8 = 3;
    /// Transform type 4: Diffie-Hellman group (key exchange method).
    pub const DH: u8 = 4;
    /// Transform type 5: extended sequence numbers.
    pub const ESN: u8 = 5;

    /// AES-GCM with a 16-octet ICV (RFC 5282); needs a KEY_LENGTH attribute.
    pub const ENCR_AES_GCM_16: u16 = 20;
    /// ChaCha20-Poly1305 (RFC 7634); no KEY_LENGTH attribute.
    pub const ENCR_CHACHA20_POLY1305: u16 = 28;
    pub const PRF_HMAC_SHA2_256: u16 = 5;
    pub const PRF_HMAC_SHA2_384: u16 = 6;
    pub const PRF_HMAC_SHA2_512: u16 = 7;
    /// 256-bit random ECP group (RFC 5903).
    pub const DH_P256: u16 = 19;
    /// 384-bit random ECP group (RFC 5903).
    pub const DH_P384: u16 = 20;
    /// Curve25519 (RFC 8031).
    pub const DH_CURVE25519: u16 = 31;
    pub const ESN_NONE: u16 = 0;
    pub const ESN_ON: u16 = 1;

    /// The only transform attribute of IKEv2: key length in bits, TV format.
    pub const ATTR_KEY_LENGTH: u16 = 14;
    /// The attribute format bit: set = TV (2-byte value in place of the length).
    pub const ATTR_FORMAT_TV: u16 = 0x8000;
}

/// Security protocol IDs (§3.3.1).
pub mod protocol {
    pub const IKE: u8 = 1;
    pub const AH: u8 = 2;
    pub const ESP: u8 = 3;
}

/// Identification types (§3.5).
pub mod id_type {
    pub const IPV4_ADDR: u8 = 1;
    pub const FQDN: u8 = 2;
    pub const RFC822_ADDR: u8 = 3;
    pub const IPV6_ADDR: u8 = 5;
    pub const DER_ASN1_DN: u8 = 9;
    pub const DER_ASN1_GN: u8 = 10;
    pub const KEY_ID: u8 = 11;
}

/// Authentication methods (§3.8).
pub mod auth_method {
    pub const RSA_SIGNATURE: u8 = 1;
    /// Shared Key Message Integrity Code: the PSK method.
    pub const SHARED_KEY_MIC: u8 = 2;
    pub const DSS_SIGNATURE: u8 = 3;
    /// RFC 7427.
    pub const DIGITAL_SIGNATURE: u8 = 14;
}

/// Traffic selector types (§3.13.1).
pub mod ts_type {
    pub const IPV4_ADDR_RANGE: u8 = 7;
    pub const IPV6_ADDR_RANGE: u8 = 8;
}

/// Why bytes are not a well-formed IKEv2 message (or payload chain).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes end before a fixed-size header does.
    #[error("IKE message truncated")]
    Truncated,
    /// A length field disagrees with the bytes: the IKE header's, a payload's (below 4, past
    /// the end, not ending the chain exactly), or a fixed-size payload body's.
    #[error("bad IKE length field")]
    BadLength,
    /// The major version is not 2.
    #[error("unsupported IKE major version")]
    BadVersion,
    /// More than [`MAX_PAYLOADS`] payloads in one chain.
    #[error("too many IKE payloads")]
    TooManyPayloads,
    /// A payload braid does not understand, with the critical bit set (§3.2).
    #[error("unsupported critical IKE payload {0}")]
    UnsupportedCritical(u8),
    /// An SK payload inside a chain that is already the inside of one.
    #[error("nested SK payload")]
    Nested,
    /// Plaintext payloads before an SK payload.
    #[error("unencrypted payloads before SK")]
    UnencryptedPayloads,
    /// A malformed SA payload or proposal substructure.
    #[error("bad IKE proposal")]
    BadProposal,
    /// A malformed transform substructure or attribute.
    #[error("bad IKE transform")]
    BadTransform,
    /// A malformed TS payload or traffic selector.
    #[error("bad traffic selector")]
    BadTrafficSelector,
    /// A malformed ID payload.
    #[error("bad IKE identification")]
    BadIdentification,
    /// A malformed notify payload.
    #[error("bad IKE notify")]
    BadNotify,
    /// A malformed delete payload.
    #[error("bad IKE delete")]
    BadDelete,
    /// A message beyond [`MAX_IKE_MESSAGE`] or a payload beyond 65535 bytes.
    #[error("IKE message too long")]
    TooLong,
}

impl WireError {
    /// The notify type a responder answers a request failing so with (§2.21.1, §3.10.1):
    /// INVALID_MAJOR_VERSION, UNSUPPORTED_CRITICAL_PAYLOAD (data: the payload type, one byte)
    /// or INVALID_SYNTAX.
    pub fn notify_type(&self) -> u16 {
        match self {
            WireError::BadVersion => notify_type::INVALID_MAJOR_VERSION,
            WireError::UnsupportedCritical(_) => notify_type::UNSUPPORTED_CRITICAL_PAYLOAD,
            _ => notify_type::INVALID_SYNTAX,
        }
    }
}

/// A bounds-checked big-endian cursor; every underflow yields the error it was made with.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    err: WireError,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], err: WireError) -> Self {
        Reader { buf, err }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(self.err);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Consumes and returns everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Overwrites the big-endian u16 at `at` (a length placeholder written earlier). Lengths that
/// do not fit are a caller bug ([`try_encode_message`] checks them): saturated in release.
pub(crate) fn patch_len(out: &mut [u8], at: usize, len: usize) {
    debug_assert!(len <= usize::from(u16::MAX), "IKE length {len} does not fit 16 bits");
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    out[at..at + 2].copy_from_slice(&len.to_be_bytes());
}
