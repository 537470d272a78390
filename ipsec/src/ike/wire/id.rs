//! The Identification payload body (RFC 7296 §3.5).
//!
//! ```text
//! |   ID Type     |                 RESERVED                      |
//! ~                   Identification Data                         ~
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{id_type, WireError};

/// An IDi or IDr payload body. `reserved` is kept as received because AUTH signs it (§2.15).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Identification {
    pub id_type: u8,
    pub reserved: [u8; 3],
    pub data: Vec<u8>,
}

impl Identification {
    /// ID_IPV4_ADDR.
    pub fn ipv4(addr: Ipv4Addr) -> Self {
        Identification {
            id_type: id_type::IPV4_ADDR,
            reserved: [0; 3],
            data: addr.octets().to_vec(),
        }
    }

    /// ID_IPV6_ADDR.
    pub fn ipv6(addr: Ipv6Addr) -> Self {
        Identification {
            id_type: id_type::IPV6_ADDR,
            reserved: [0; 3],
            data: addr.octets().to_vec(),
        }
    }

    /// ID_IPV4_ADDR or ID_IPV6_ADDR (an IPv4-mapped IPv6 address stays IPv6).
    pub fn from_ip(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Identification::ipv4(a),
            IpAddr::V6(a) => Identification::ipv6(a),
        }
    }

    /// ID_FQDN (no terminator, §3.5).
    pub fn fqdn(name: &str) -> Self {
        Identification {
            id_type: id_type::FQDN,
            reserved: [0; 3],
            data: name.as_bytes().to_vec(),
        }
    }

    /// ID_RFC822_ADDR.
    pub fn rfc822(addr: &str) -> Self {
        Identification {
            id_type: id_type::RFC822_ADDR,
            reserved: [0; 3],
            data: addr.as_bytes().to_vec(),
        }
    }

    /// ID_KEY_ID: opaque bytes.
    pub fn key_id(id: &[u8]) -> Self {
        Identification {
            id_type: id_type::KEY_ID,
            reserved: [0; 3],
            data: id.to_vec(),
        }
    }

    /// Parses a payload body: at least the 4-byte type + RESERVED; an address type must carry
    /// exactly 4 (IPv4) or 16 (IPv6) bytes. Other types are kept opaque.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, WireError> {
        let [id_type, r0, r1, r2, data @ ..] = body else {
            return Err(WireError::BadIdentification);
        };
        let ok = match *id_type {
            id_type::IPV4_ADDR => data.len() == 4,
            id_type::IPV6_ADDR => data.len() == 16,
            _ => true,
        };
        if !ok {
            return Err(WireError::BadIdentification);
        }
        Ok(Identification {
            id_type: *id_type,
            reserved: [*r0, *r1, *r2],
            data: data.to_vec(),
        })
    }

    /// Appends the payload body: type ‖ reserved ‖ data.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.id_type);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&self.data);
    }

    /// type ‖ reserved ‖ data: the payload minus its generic header, the bytes AUTH signs
    /// (RFC 7296 §2.15: RestOfInitIDPayload / RestOfRespIDPayload).
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.data.len());
        self.encode(&mut out);
        out
    }

    /// The address of an ID_IPV4_ADDR / ID_IPV6_ADDR of the right length.
    pub fn to_ip(&self) -> Option<IpAddr> {
        match self.id_type {
            id_type::IPV4_ADDR => <[u8; 4]>::try_from(self.data.as_slice()).ok().map(IpAddr::from),
            id_type::IPV6_ADDR => <[u8; 16]>::try_from(self.data.as_slice()).ok().map(IpAddr::from),
            _ => None,
        }
    }

    /// Whether both name the same identity: type and data equal, RESERVED not compared.
    pub fn matches(&self, other: &Identification) -> bool {
        self.id_type == other.id_type && self.data == other.data
    }
}

/// "198.18.0.1", "2001:db8::1", "fqdn:gw.example", "email:a@b.example", "keyid:0a1b",
/// or "id-type-N:hex" for others. Non-printable bytes of text IDs show as `\xNN`, so a peer
/// cannot forge log lines.
impl fmt::Display for Identification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.to_ip() {
            return write!(f, "{ip}");
        }
        match self.id_type {
            id_type::FQDN => {
                f.write_str("fqdn:")?;
                write_text(f, &self.data)
            }
            id_type::RFC822_ADDR => {
                f.write_str("email:")?;
                write_text(f, &self.data)
            }
            id_type::KEY_ID => {
                f.write_str("keyid:")?;
                write_hex(f, &self.data)
            }
            other => {
                write!(f, "id-type-{other}:")?;
                write_hex(f, &self.data)
            }
        }
    }
}

fn write_text(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for &b in bytes {
        if b.is_ascii_graphic() {
            write!(f, "{}", char::from(b))?;
        } else {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}
