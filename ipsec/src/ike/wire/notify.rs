//! Notify (RFC 7296 §3.10) and Delete (§3.11) payload bodies.
//!
//! ```text
//! Notify:  | Protocol ID | SPI Size | Notify Message Type (2) | SPI ~ | Notification Data ~ |
//! Delete:  | Protocol ID | SPI Size | Num of SPIs (2)         | SPIs ~                      |
//! ```

use super::{notify_type, protocol, Reader, WireError};

/// A notify payload body. `protocol` is 0 and `spi` empty unless the notification concerns
/// a specific SA (e.g. REKEY_SA: protocol 3, the 4-byte ESP SPI).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Notify {
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub kind: u16,
    pub data: Vec<u8>,
}

impl Notify {
    /// A notification about no particular SA: protocol 0, no SPI.
    pub fn new(kind: u16, data: Vec<u8>) -> Self {
        Notify {
            protocol: 0,
            spi: Vec::new(),
            kind,
            data,
        }
    }

    /// Whether this is an error notification (type < 16384).
    pub fn is_error(&self) -> bool {
        notify_type::is_error(self.kind)
    }

    /// Parses a body: the SPI must fit (the SPI size is not checked against the protocol;
    /// that is the exchange's business). Any protocol ID is kept.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, WireError::BadNotify);
        let protocol = r.u8()?;
        let spi_size = r.u8()?;
        let kind = r.u16()?;
        let spi = r.take(usize::from(spi_size))?.to_vec();
        Ok(Notify {
            protocol,
            spi,
            kind,
            data: r.rest().to_vec(),
        })
    }

    /// Appends the body. An SPI over 255 bytes is a caller bug (its size is one byte).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.spi.len() <= 255, "notify SPI too long");
        out.push(self.protocol);
        out.push(u8::try_from(self.spi.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(&self.spi);
        out.extend_from_slice(&self.data);
    }
}

/// A delete payload body. For the IKE SA: protocol 1, `spi_size` 0, no SPIs (the SA is the
/// one the message travels on). For CHILD SAs: protocol 3 (or 2), `spi_size` 4, and the
/// sender's inbound SPIs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Delete {
    pub protocol: u8,
    pub spi_size: u8,
    pub spis: Vec<Vec<u8>>,
}

impl Delete {
    /// Deletes the IKE SA the message travels on.
    pub fn ike() -> Self {
        Delete {
            protocol: protocol::IKE,
            spi_size: 0,
            spis: Vec::new(),
        }
    }

    /// Deletes ESP SAs, named by the sender's inbound SPIs.
    pub fn esp(spis: &[u32]) -> Self {
        Delete {
            protocol: protocol::ESP,
            spi_size: 4,
            spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
        }
    }

    /// The SPIs as u32 when they are 4 bytes long (AH/ESP), in order; others are skipped.
    pub fn spis_u32(&self) -> impl Iterator<Item = u32> + '_ {
        self.spis
            .iter()
            .filter_map(|s| <[u8; 4]>::try_from(s.as_slice()).ok().map(u32::from_be_bytes))
    }

    /// Parses a body as strongSwan verifies it: protocol 1 needs SPI size 0 (a nonzero SPI
    /// count is then tolerated and yields no SPIs), protocols 2 and 3 need SPI size 4, other
    /// protocols are refused; the SPIs must fill the rest of the body exactly.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, WireError::BadDelete);
        let protocol = r.u8()?;
        let spi_size = r.u8()?;
        let count = r.u16()?;
        match (protocol, spi_size) {
            (protocol::IKE, 0) => {
                if !r.is_empty() {
                    return Err(WireError::BadDelete);
                }
                return Ok(Delete::ike());
            }
            (protocol::AH | protocol::ESP, 4) => {}
            _ => return Err(WireError::BadDelete),
        }
        if r.remaining() != usize::from(count) * usize::from(spi_size) {
            return Err(WireError::BadDelete);
        }
        let spis = (0..count)
            .map(|_| r.take(usize::from(spi_size)).map(<[u8]>::to_vec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Delete {
            protocol,
            spi_size,
            spis,
        })
    }

    /// Appends the body. SPIs whose length differs from `spi_size` are a caller bug.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(
            self.spis.iter().all(|s| s.len() == usize::from(self.spi_size)),
            "delete SPI length differs from spi_size"
        );
        debug_assert!(self.spis.len() <= usize::from(u16::MAX), "too many SPIs");
        out.push(self.protocol);
        out.push(self.spi_size);
        out.extend_from_slice(&u16::try_from(self.spis.len()).unwrap_or(u16::MAX).to_be_bytes());
        for spi in &self.spis {
            out.extend_from_slice(spi);
        }
    }
}
