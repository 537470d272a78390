//! IP prefixes (CIDR blocks) such as `198.18.1.0/24` or `2001:db8::/32`.
//!
//! A [`Prefix`] is canonical: its host bits are zero, so two prefixes are equal exactly when
//! they cover the same addresses. [`Prefix::contains`] is a mask and a compare, cheap enough for
//! the data path.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 prefix with zero host bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

/// Why text is not a prefix.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum PrefixError {
    #[error("expected an IP prefix like 198.18.1.0/24 or 2001:db8::/32, got {0:?}")]
    Syntax(String),
    #[error("prefix length {len} is longer than the {max} bits of the address")]
    LengthTooLong { len: u32, max: u8 },
    #[error("{given} has host bits set; the prefix is {canonical}")]
    HostBitsSet { given: String, canonical: Prefix },
}

impl Prefix {
    /// The prefix of length `len` at `addr`; fails if `len` is too long or host bits are set.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = max_len(addr);
        if len > max {
            return Err(PrefixError::LengthTooLong { len: len.into(), max });
        }
        let canonical = Prefix {
            addr: mask(addr, len),
            len,
        };
        if canonical.addr != addr {
            return Err(PrefixError::HostBitsSet {
                given: format!("{addr}/{len}"),
                canonical,
            });
        }
        Ok(canonical)
    }

    /// Whether `addr` lies inside this prefix (never, across address families).
    #[inline]
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4() && mask(addr, self.len) == self.addr
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, other: &Prefix) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with every bit after the first `len` cleared.
#[inline]
fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(text: &str) -> Result<Self, PrefixError> {
        let syntax = || PrefixError::Syntax(text.to_string());
        let (addr, len) = text.split_once('/').ok_or_else(syntax)?;
        let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        // All digits, so parsing fails only by overflow.
        let len: u32 = len.parse().unwrap_or(u32::MAX);
        let max = max_len(addr);
        match u8::try_from(len) {
            Ok(len) if len <= max => Prefix::new(addr, len),
            _ => Err(PrefixError::LengthTooLong { len, max }),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PrefixText;
        impl serde::de::Visitor<'_> for PrefixText {
            type Value = Prefix;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP prefix like 198.18.1.0/24 or 2001:db8::/32")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Prefix, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(PrefixText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_displays() {
        for text in [
            "198.18.1.0/24",
            "0.0.0.0/0",
            "198.18.1.7/32",
            "2001:db8::/32",
            "::/0",
            "fe80::1/128",
        ] {
            assert_eq!(prefix(text).to_string(), text);
        }
        assert_eq!(
            prefix("198.18.1.0/24"),
            Prefix {
                addr: ip("198.18.1.0"),
                len: 24
            }
        );
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "198.18.1.0",
            "198.18.1.0/",
            "/24",
            "198.18.1/24",
            "198.18.1.0/+4",
            "a.b.c.d/8",
            "",
        ] {
            assert_eq!(
                text.parse::<Prefix>(),
                Err(PrefixError::Syntax(text.to_string())),
                "{text:?}"
            );
        }
        assert_eq!(
            "198.18.1.0/33".parse::<Prefix>(),
            Err(PrefixError::LengthTooLong { len: 33, max: 32 })
        );
        assert_eq!(
            "2001:db8::/129".parse::<Prefix>(),
            Err(PrefixError::LengthTooLong { len: 129, max: 128 })
        );
        assert_eq!(
            "10.0.0.0/999".parse::<Prefix>(),
            Err(PrefixError::LengthTooLong { len: 999, max: 32 })
        );
    }

    #[test]
    fn rejects_host_bits_and_names_the_prefix_meant() {
        let error = "198.18.1.1/24".parse::<Prefix>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "198.18.1.1/24 has host bits set; the prefix is 198.18.1.0/24"
        );
        assert!("2001:db8::1/64".parse::<Prefix>().is_err());
    }

    #[test]
    fn contains_respects_length_and_family() {
        let net = prefix("198.18.1.0/24");
        assert!(net.contains(ip("198.18.1.0")));
        assert!(net.contains(ip("198.18.1.255")));
        assert!(!net.contains(ip("198.18.2.0")));
        assert!(!net.contains(ip("::ffff:198.18.1.1")));
        assert!(prefix("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!prefix("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(prefix("198.18.1.7/32").contains(ip("198.18.1.7")));
        assert!(!prefix("198.18.1.7/32").contains(ip("198.18.1.6")));
        let v6 = prefix("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
    }

    #[test]
    fn overlap_is_symmetric() {
        let wide = prefix("198.18.0.0/15");
        let narrow = prefix("198.18.2.0/24");
        assert!(wide.overlaps(&narrow) && narrow.overlaps(&wide));
        assert!(!prefix("198.18.1.0/24").overlaps(&narrow));
        assert!(!prefix("::/0").overlaps(&narrow));
    }
}
