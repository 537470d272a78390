//! The SA payload body: proposals, transforms and transform attributes (RFC 7296 §3.3).
//!
//! ```text
//! Proposal:  | 0 (last) or 2 | RESERVED | Proposal Length (2) |
//!            | Proposal Num  | Protocol ID | SPI Size | # of Transforms | SPI ~ | Transforms ~ |
//! Transform: | 0 (last) or 3 | RESERVED | Transform Length (2) |
//!            | Transform Type | RESERVED | Transform ID (2) | Transform Attributes ~ |
//! Attribute: | A | Attribute Type (15 bits) | Attribute Length or Value (2) | [Value ~] |
//! ```

use super::{protocol, transform, Reader, WireError};

const LAST: u8 = 0;
const MORE_PROPOSALS: u8 = 2;
const MORE_TRANSFORMS: u8 = 3;
const PROPOSAL_HEADER_LEN: usize = 8;
const TRANSFORM_HEADER_LEN: usize = 8;

/// One transform: type, ID and the KEY_LENGTH attribute (bits) if it had one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transform {
    pub kind: u8,
    pub id: u16,
    pub key_length: Option<u16>,
}

impl Transform {
    /// A transform without attributes.
    pub fn new(kind: u8, id: u16) -> Self {
        Transform {
            kind,
            id,
            key_length: None,
        }
    }

    /// A transform with a KEY_LENGTH attribute (e.g. AES-GCM-16 with 256).
    pub fn with_key_length(kind: u8, id: u16, bits: u16) -> Self {
        Transform {
            kind,
            id,
            key_length: Some(bits),
        }
    }

    fn encode(&self, last: bool, out: &mut Vec<u8>) {
        let len = TRANSFORM_HEADER_LEN + if self.key_length.is_some() { 4 } else { 0 };
        out.extend_from_slice(&[if last { LAST } else { MORE_TRANSFORMS }, 0]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&[self.kind, 0]);
        out.extend_from_slice(&self.id.to_be_bytes());
        if let Some(bits) = self.key_length {
            out.extend_from_slice(&(transform::ATTR_FORMAT_TV | transform::ATTR_KEY_LENGTH).to_be_bytes());
            out.extend_from_slice(&bits.to_be_bytes());
        }
    }
}

/// One proposal of an SA payload. `spi` is empty for an IKE SA's first negotiation, 8 bytes
/// for an IKE rekey, 4 bytes (the sender's inbound SPI) for ESP/AH.
///
/// On parse, `transforms` holds the transforms in wire order minus any of the five RFC 7296
/// types (ENCR, PRF, INTEG, DH, ESN) carrying an attribute other than one TV KEY_LENGTH:
/// such a transform is unacceptable (§3.3.6), its siblings of the same type are not, and if
/// it was the only one of its type the proposal now lacks that type and matches nothing.
/// Transforms of other types are always kept, so that a proposal using a type braid does not
/// know stays unacceptable.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Proposal {
    pub number: u8,
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

impl Proposal {
    /// The first transform of type `kind`, if any.
    pub fn transform(&self, kind: u8) -> Option<&Transform> {
        self.transforms.iter().find(|t| t.kind == kind)
    }

    /// The SPI as a u32 when it is 4 bytes long (ESP/AH).
    pub fn spi_u32(&self) -> Option<u32> {
        <[u8; 4]>::try_from(self.spi.as_slice()).ok().map(u32::from_be_bytes)
    }

    /// The SPI as a u64 when it is 8 bytes long (IKE rekey).
    pub fn spi_u64(&self) -> Option<u64> {
        <[u8; 8]>::try_from(self.spi.as_slice()).ok().map(u64::from_be_bytes)
    }

    fn encode(&self, last: bool, out: &mut Vec<u8>) {
        debug_assert!(
            self.spi.len() <= 255 && self.transforms.len() <= 255,
            "proposal too large"
        );
        let start = out.len();
        out.extend_from_slice(&[if last { LAST } else { MORE_PROPOSALS }, 0, 0, 0]);
        out.extend_from_slice(&[
            self.number,
            self.protocol,
            self.spi.len() as u8,
            self.transforms.len() as u8,
        ]);
        out.extend_from_slice(&self.spi);
        for (i, t) in self.transforms.iter().enumerate() {
            t.encode(i + 1 == self.transforms.len(), out);
        }
        let len = out.len() - start;
        super::patch_len(out, start + 2, len);
    }
}

/// Appends an SA payload body: the proposals chained with "more" (2) / "last" (0).
pub(crate) fn encode_sa(proposals: &[Proposal], out: &mut Vec<u8>) {
    for (i, p) in proposals.iter().enumerate() {
        p.encode(i + 1 == proposals.len(), out);
    }
}

/// Parses an SA payload body: at least one proposal; each proposal's Length covers its
/// header, SPI and transforms exactly; the "last" markers agree with where the body ends;
/// proposal numbers are ≥ 1 and non-decreasing; the SPI size is 4 for AH/ESP and 0 or 8 for
/// IKE (as strongSwan's proposal_substructure verifies).
pub(crate) fn parse_sa(body: &[u8]) -> Result<Vec<Proposal>, WireError> {
    let mut rest = body;
    let mut proposals = Vec::new();
    let mut min_number = 1;
    loop {
        let mut r = Reader::new(rest, WireError::BadProposal);
        let marker = r.u8()?;
        r.u8()?;
        let len = usize::from(r.u16()?);
        if len < PROPOSAL_HEADER_LEN || len > rest.len() {
            return Err(WireError::BadProposal);
        }
        let (this, next) = rest.split_at(len);
        rest = next;
        match (marker, rest.is_empty()) {
            (LAST, true) | (MORE_PROPOSALS, false) => {}
            _ => return Err(WireError::BadProposal),
        }
        let proposal = parse_proposal(this, min_number)?;
        min_number = proposal.number;
        proposals.push(proposal);
        if rest.is_empty() {
            return Ok(proposals);
        }
    }
}

/// Parses one proposal substructure (its header included, exactly `bytes`).
fn parse_proposal(bytes: &[u8], min_number: u8) -> Result<Proposal, WireError> {
    let mut r = Reader::new(bytes, WireError::BadProposal);
    r.take(4)?; // marker, reserved, length: checked by the caller
    let number = r.u8()?;
    let protocol = r.u8()?;
    let spi_size = r.u8()?;
    let count = r.u8()?;
    if number == 0 || number < min_number {
        return Err(WireError::BadProposal);
    }
    let spi_ok = match protocol {
        protocol::AH | protocol::ESP => spi_size == 4,
        protocol::IKE => spi_size == 0 || spi_size == 8,
        _ => true,
    };
    if !spi_ok {
        return Err(WireError::BadProposal);
    }
    let spi = r.take(usize::from(spi_size))?.to_vec();
    let transforms = parse_transforms(r.rest(), count)?;
    Ok(Proposal {
        number,
        protocol,
        spi,
        transforms,
    })
}

/// Parses the transform chain of a proposal: exactly `count` transforms filling `bytes`.
fn parse_transforms(bytes: &[u8], count: u8) -> Result<Vec<Transform>, WireError> {
    let mut rest = bytes;
    let mut transforms = Vec::new();
    let mut seen = 0usize;
    while !rest.is_empty() {
        let mut r = Reader::new(rest, WireError::BadTransform);
        let marker = r.u8()?;
        r.u8()?;
        let len = usize::from(r.u16()?);
        if len < TRANSFORM_HEADER_LEN || len > rest.len() {
            return Err(WireError::BadTransform);
        }
        let (this, next) = rest.split_at(len);
        rest = next;
        seen += 1;
        match (marker, rest.is_empty()) {
            (LAST, true) | (MORE_TRANSFORMS, false) => {}
            _ => return Err(WireError::BadTransform),
        }
        let mut r = Reader::new(&this[4..], WireError::BadTransform);
        let kind = r.u8()?;
        r.u8()?;
        let id = r.u16()?;
        let attributes = parse_attributes(r.rest())?;
        let known_type = (transform::ENCR..=transform::ESN).contains(&kind);
        match attributes {
            Attributes::Understood(key_length) => transforms.push(Transform { kind, id, key_length }),
            Attributes::Unrecognized { key_length } if !known_type => {
                transforms.push(Transform { kind, id, key_length })
            }
            Attributes::Unrecognized { .. } => {} // unacceptable transform: dropped (§3.3.6)
        }
    }
    if seen != usize::from(count) {
        return Err(WireError::BadProposal);
    }
    Ok(transforms)
}

enum Attributes {
    /// None, or exactly one TV KEY_LENGTH.
    Understood(Option<u16>),
    /// Anything else: other types, TLV format, repeated KEY_LENGTH.
    Unrecognized { key_length: Option<u16> },
}

/// Walks a transform's attributes: each must fit (TV: 4 bytes; TLV: 4 + its length).
fn parse_attributes(bytes: &[u8]) -> Result<Attributes, WireError> {
    let mut r = Reader::new(bytes, WireError::BadTransform);
    let mut key_length = None;
    let mut unrecognized = false;
    while !r.is_empty() {
        let type_field = r.u16()?;
        let value = r.u16()?;
        if type_field & transform::ATTR_FORMAT_TV == 0 {
            r.take(usize::from(value))?;
            unrecognized = true;
        } else if type_field & !transform::ATTR_FORMAT_TV == transform::ATTR_KEY_LENGTH && key_length.is_none() {
            key_length = Some(value);
        } else {
            unrecognized = true;
        }
    }
    Ok(if unrecognized {
        Attributes::Unrecognized { key_length }
    } else {
        Attributes::Understood(key_length)
    })
}
