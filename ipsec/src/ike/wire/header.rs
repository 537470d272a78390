//! The IKE header (RFC 7296 §3.1).
//!
//! ```text
//! |                       IKE SA Initiator's SPI                  |
//! |                       IKE SA Responder's SPI                  |
//! |  Next Payload | MjVer | MnVer | Exchange Type |     Flags     |
//! |                          Message ID                           |
//! |                            Length                             |
//! ```

use super::{flags, Reader, WireError, IKE_HEADER_LEN, IKE_VERSION, MAX_IKE_MESSAGE};

/// A decoded IKE header. The version byte is implied (braid sends 2.0); the V flag and the
/// reserved flag bits are dropped on receipt and sent as 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    /// Type of the first payload (for an encrypted message: SK).
    pub next_payload: u8,
    pub exchange: u8,
    /// Flag I (0x08): the sender is the original initiator of the IKE SA (or of its last rekey).
    pub initiator: bool,
    /// Flag R (0x20): this message is a response.
    pub response: bool,
    pub message_id: u32,
    /// Total message length, header included.
    pub length: u32,
}

impl Header {
    /// Parses the header of a whole message: `bytes` is at least 28 bytes and at most
    /// [`MAX_IKE_MESSAGE`], the major version is 2 (any minor), and the Length field equals
    /// `bytes.len()`.
    pub fn parse(bytes: &[u8]) -> Result<Header, WireError> {
        let header = Header::peek(bytes)?;
        if bytes.len() > MAX_IKE_MESSAGE {
            return Err(WireError::TooLong);
        }
        if usize::try_from(header.length).ok() != Some(bytes.len()) {
            return Err(WireError::BadLength);
        }
        Ok(header)
    }

    /// Reads the first 28 bytes of `bytes` checking only the major version: for looking at
    /// the SPIs of something that may not parse (e.g. to answer INVALID_MAJOR_VERSION or to
    /// route a datagram to its SA). The Length field is returned as it is.
    pub fn peek(bytes: &[u8]) -> Result<Header, WireError> {
        if bytes.len() < IKE_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let mut r = Reader::new(bytes, WireError::Truncated);
        let spi_i = r.u64()?;
        let spi_r = r.u64()?;
        let next_payload = r.u8()?;
        let version = r.u8()?;
        let exchange = r.u8()?;
        let flag_bits = r.u8()?;
        let message_id = r.u32()?;
        let length = r.u32()?;
        if version >> 4 != IKE_VERSION >> 4 {
            return Err(WireError::BadVersion);
        }
        Ok(Header {
            spi_i,
            spi_r,
            next_payload,
            exchange,
            initiator: flag_bits & flags::INITIATOR != 0,
            response: flag_bits & flags::RESPONSE != 0,
            message_id,
            length,
        })
    }

    /// The flags byte as sent: I and R only.
    pub fn flags(&self) -> u8 {
        let mut f = 0;
        if self.initiator {
            f |= flags::INITIATOR;
        }
        if self.response {
            f |= flags::RESPONSE;
        }
        f
    }

    /// Appends the 28 header bytes, fields as they are (version 2.0).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.extend_from_slice(&[self.next_payload, IKE_VERSION, self.exchange, self.flags()]);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }

    /// The 28 header bytes.
    pub fn to_bytes(&self) -> [u8; IKE_HEADER_LEN] {
        let mut out = Vec::with_capacity(IKE_HEADER_LEN);
        self.write(&mut out);
        let mut bytes = [0u8; IKE_HEADER_LEN];
        bytes.copy_from_slice(&out);
        bytes
    }
}
