//! Payload chains and whole messages (RFC 7296 §3.2, §3.14).
//!
//! ```text
//! Generic payload header:  | Next Payload |C|  RESERVED  |       Payload Length (2)       |
//! ```

use super::proposal::{encode_sa, parse_sa};
use super::{
    patch_len, payload_type, Delete, Header, Identification, Notify, Proposal, Reader, TrafficSelector, WireError,
    CRITICAL, GENERIC_HEADER_LEN, IKE_HEADER_LEN, MAX_IKE_MESSAGE, MAX_PAYLOADS,
};

/// The shortest and longest nonce (§2.10, §3.9).
const NONCE_LEN: std::ops::RangeInclusive<usize> = 16..=256;

/// One decoded payload (body only: the generic header is implied by the chain).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Payload {
    /// SA (33): proposals in order.
    Sa(Vec<Proposal>),
    /// KE (34): Diffie-Hellman group and public value.
    Ke { group: u16, data: Vec<u8> },
    /// IDi (35).
    IdI(Identification),
    /// IDr (36).
    IdR(Identification),
    /// AUTH (39): method (2 = PSK) and the authentication data.
    Auth { method: u8, data: Vec<u8> },
    /// Ni/Nr (40): 16 to 256 bytes on receipt.
    Nonce(Vec<u8>),
    /// N (41).
    Notify(Notify),
    /// D (42).
    Delete(Delete),
    /// TSi (44).
    TsI(Vec<TrafficSelector>),
    /// TSr (45).
    TsR(Vec<TrafficSelector>),
    /// V (43): the vendor ID bytes.
    Vendor(Vec<u8>),
    /// Any other payload type (CERTREQ, CP, EAP...) kept as raw body: ignorable unless critical.
    /// Parsing never yields `critical: true` (that is [`WireError::UnsupportedCritical`]);
    /// encoding sets the critical bit if it is true.
    Unknown { kind: u8, critical: bool, body: Vec<u8> },
}

impl Payload {
    /// The payload type code.
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Sa(_) => payload_type::SA,
            Payload::Ke { .. } => payload_type::KE,
            Payload::IdI(_) => payload_type::IDI,
            Payload::IdR(_) => payload_type::IDR,
            Payload::Auth { .. } => payload_type::AUTH,
            Payload::Nonce(_) => payload_type::NONCE,
            Payload::Notify(_) => payload_type::NOTIFY,
            Payload::Delete(_) => payload_type::DELETE,
            Payload::TsI(_) => payload_type::TSI,
            Payload::TsR(_) => payload_type::TSR,
            Payload::Vendor(_) => payload_type::VENDOR,
            Payload::Unknown { kind, .. } => *kind,
        }
    }

    /// Appends the body (without generic header) to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Sa(proposals) => encode_sa(proposals, out),
            Payload::Ke { group, data } => {
                out.extend_from_slice(&group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(data);
            }
            Payload::IdI(id) | Payload::IdR(id) => id.encode(out),
            Payload::Auth { method, data } => {
                out.extend_from_slice(&[*method, 0, 0, 0]);
                out.extend_from_slice(data);
            }
            Payload::Nonce(data) | Payload::Vendor(data) | Payload::Unknown { body: data, .. } => {
                out.extend_from_slice(data)
            }
            Payload::Notify(n) => n.encode(out),
            Payload::Delete(d) => d.encode(out),
            Payload::TsI(tss) | Payload::TsR(tss) => TrafficSelector::encode_payload(tss, out),
        }
    }

    /// The body bytes (what [`Payload::encode_body`] appends).
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_body(&mut out);
        out
    }

    /// The notify inside, if this is one.
    pub fn as_notify(&self) -> Option<&Notify> {
        match self {
            Payload::Notify(n) => Some(n),
            _ => None,
        }
    }

    /// Decodes a body of type `kind`. SK is refused ([`WireError::Nested`]); a type braid
    /// does not decode is kept raw unless critical.
    fn parse(kind: u8, critical: bool, body: &[u8]) -> Result<Payload, WireError> {
        Ok(match kind {
            payload_type::SA => Payload::Sa(parse_sa(body)?),
            payload_type::KE => {
                let mut r = Reader::new(body, WireError::BadLength);
                let group = r.u16()?;
                r.u16()?;
                Payload::Ke {
                    group,
                    data: r.rest().to_vec(),
                }
            }
            payload_type::IDI => Payload::IdI(Identification::parse(body)?),
            payload_type::IDR => Payload::IdR(Identification::parse(body)?),
            payload_type::AUTH => {
                let mut r = Reader::new(body, WireError::BadLength);
                let method = r.u8()?;
                r.take(3)?;
                Payload::Auth {
                    method,
                    data: r.rest().to_vec(),
                }
            }
            payload_type::NONCE => {
                if !NONCE_LEN.contains(&body.len()) {
                    return Err(WireError::BadLength);
                }
                Payload::Nonce(body.to_vec())
            }
            payload_type::NOTIFY => Payload::Notify(Notify::parse(body)?),
            payload_type::DELETE => Payload::Delete(Delete::parse(body)?),
            payload_type::TSI => Payload::TsI(TrafficSelector::parse_payload(body)?),
            payload_type::TSR => Payload::TsR(TrafficSelector::parse_payload(body)?),
            payload_type::VENDOR => Payload::Vendor(body.to_vec()),
            payload_type::SK => return Err(WireError::Nested),
            _ if critical => return Err(WireError::UnsupportedCritical(kind)),
            _ => Payload::Unknown {
                kind,
                critical: false,
                body: body.to_vec(),
            },
        })
    }
}

/// The first notify of type `kind` in a chain.
pub fn find_notify(payloads: &[Payload], kind: u16) -> Option<&Notify> {
    payloads.iter().filter_map(Payload::as_notify).find(|n| n.kind == kind)
}

/// Encodes a payload chain: returns the type of the first payload (for the header or SK's
/// next-payload field; 0 if `payloads` is empty); appends generic headers (critical bit
/// clear except on an `Unknown { critical: true }`, RESERVED 0) + bodies to `out`.
pub fn encode_payloads(payloads: &[Payload], out: &mut Vec<u8>) -> u8 {
    for (i, payload) in payloads.iter().enumerate() {
        let next = payloads.get(i + 1).map_or(payload_type::NONE, Payload::kind);
        let flags = match payload {
            Payload::Unknown { critical: true, .. } => CRITICAL,
            _ => 0,
        };
        let start = out.len();
        out.extend_from_slice(&[next, flags, 0, 0]);
        payload.encode_body(out);
        let len = out.len() - start;
        patch_len(out, start + 2, len);
    }
    payloads.first().map_or(payload_type::NONE, Payload::kind)
}

/// Parses a payload chain starting with type `first` from `bytes` (which must be consumed
/// exactly; `first` = 0 needs empty `bytes`). An unknown payload with the critical bit set
/// → `Err(UnsupportedCritical(kind))`. At most [`MAX_PAYLOADS`]. SK (46) is not allowed
/// inside a chain parsed by this fn (`Err(Nested)`).
///
/// The whole chain's structure (generic headers, lengths, count) is checked before any body
/// is decoded, so a lying length is reported as such rather than as a bad body.
pub fn parse_payloads(first: u8, bytes: &[u8]) -> Result<Vec<Payload>, WireError> {
    let mut raw = Vec::new();
    let mut next = first;
    let mut rest = bytes;
    while next != payload_type::NONE {
        if raw.len() == MAX_PAYLOADS {
            return Err(WireError::TooManyPayloads);
        }
        if next == payload_type::SK {
            return Err(WireError::Nested);
        }
        let mut r = Reader::new(rest, WireError::Truncated);
        let following = r.u8()?;
        let critical = r.u8()? & CRITICAL != 0;
        let len = usize::from(r.u16()?);
        if len < GENERIC_HEADER_LEN || len > rest.len() {
            return Err(WireError::BadLength);
        }
        let (this, tail) = rest.split_at(len);
        raw.push((next, critical, &this[GENERIC_HEADER_LEN..]));
        next = following;
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(WireError::BadLength);
    }
    raw.into_iter()
        .map(|(kind, critical, body)| Payload::parse(kind, critical, body))
        .collect()
}

/// A whole message as received.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Body {
    /// No SK payload: the decoded payloads (IKE_SA_INIT; or something to refuse later).
    Plain(Vec<Payload>),
    /// An SK payload, to authenticate and decrypt before [`parse_payloads`].
    Encrypted(EncryptedPart),
}

/// The SK payload of a message (RFC 7296 §3.14): everything after the plaintext payloads
/// that precede it (for [`parse_message`], none). The AEAD's associated data is
/// `message[..body_offset]`; IV ‖ ciphertext ‖ ICV is `message[body_offset..]`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EncryptedPart {
    /// SK's next-payload field: the type of the first payload inside.
    pub first_inner: u8,
    /// Offset of SK's generic header in the message.
    pub sk_offset: usize,
    /// Offset of IV/ciphertext: `sk_offset + 4`.
    pub body_offset: usize,
}

/// A parsed message: header and body.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message {
    pub header: Header,
    pub body: Body,
}

/// Parses header + plaintext payloads. If an SK payload is met it must be the first and last
/// payload (its length must reach exactly the end of the message; plaintext payloads before
/// it → `Err(UnencryptedPayloads)`) and [`Body::Encrypted`] is returned; its contents are not
/// looked at. The non-ESP marker is not part of `bytes` (the caller strips it).
pub fn parse_message(bytes: &[u8]) -> Result<Message, WireError> {
    let header = Header::parse(bytes)?;
    let payloads = &bytes[IKE_HEADER_LEN..];
    if header.next_payload == payload_type::SK {
        let mut r = Reader::new(payloads, WireError::Truncated);
        let first_inner = r.u8()?;
        r.u8()?; // critical bit: SK is understood, so ignored
        let len = usize::from(r.u16()?);
        if len < GENERIC_HEADER_LEN || len != payloads.len() {
            return Err(WireError::BadLength);
        }
        let part = EncryptedPart {
            first_inner,
            sk_offset: IKE_HEADER_LEN,
            body_offset: IKE_HEADER_LEN + GENERIC_HEADER_LEN,
        };
        return Ok(Message {
            header,
            body: Body::Encrypted(part),
        });
    }
    match parse_payloads(header.next_payload, payloads) {
        Ok(payloads) => Ok(Message {
            header,
            body: Body::Plain(payloads),
        }),
        Err(WireError::Nested) => Err(WireError::UnencryptedPayloads),
        Err(e) => Err(e),
    }
}

/// Builds an unencrypted message: header (length and next_payload filled in by this fn) +
/// payloads. A message over [`MAX_IKE_MESSAGE`] is a caller bug; see [`try_encode_message`].
pub fn encode_message(header: Header, payloads: &[Payload]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    header.write(&mut out);
    let first = encode_payloads(payloads, &mut out);
    debug_assert!(out.len() <= MAX_IKE_MESSAGE, "IKE message of {} bytes", out.len());
    out[16] = first;
    let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out[24..28].copy_from_slice(&len.to_be_bytes());
    out
}

/// [`encode_message`], refusing ([`WireError::TooLong`]) a message over
/// [`MAX_IKE_MESSAGE`] or a payload over 65535 bytes instead of writing a wrong length.
pub fn try_encode_message(header: Header, payloads: &[Payload]) -> Result<Vec<u8>, WireError> {
    let mut total = IKE_HEADER_LEN;
    for payload in payloads {
        let len = GENERIC_HEADER_LEN + payload.body().len();
        if len > usize::from(u16::MAX) {
            return Err(WireError::TooLong);
        }
        total += len;
    }
    if total > MAX_IKE_MESSAGE {
        return Err(WireError::TooLong);
    }
    Ok(encode_message(header, payloads))
}

/// Writes the start of an encrypted message: the IKE header (next payload SK, length
/// 28 + 4 + `sk_body_len`) and SK's generic header (next payload `first_inner`, length
/// 4 + `sk_body_len`), where `sk_body_len` = IV + ciphertext (padding and pad length
/// included) + ICV. These 32 bytes are the AEAD's associated data (RFC 5282 §5); append
/// IV ‖ ciphertext ‖ ICV after them. The header's own `next_payload` and `length` are ignored.
pub fn encode_sk_prefix(header: Header, first_inner: u8, sk_body_len: usize, out: &mut Vec<u8>) {
    let sk_len = GENERIC_HEADER_LEN + sk_body_len;
    debug_assert!(IKE_HEADER_LEN + sk_len <= MAX_IKE_MESSAGE, "IKE message too long");
    let header = Header {
        next_payload: payload_type::SK,
        length: u32::try_from(IKE_HEADER_LEN + sk_len).unwrap_or(u32::MAX),
        ..header
    };
    header.write(out);
    let start = out.len();
    out.extend_from_slice(&[first_inner, 0, 0, 0]);
    patch_len(out, start + 2, sk_len);
}
