//! Traffic selectors (RFC 7296 §3.13) and the subset logic of §2.9.
//!
//! ```text
//! TS payload:  | Number of TSs | RESERVED (3) | Traffic Selectors ~ |
//! Selector:    | TS Type | IP Protocol ID | Selector Length (2) |
//!              | Start Port (2) | End Port (2) | Starting Address ~ | Ending Address ~ |
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{ts_type, Reader, WireError};

const TS_HEADER_LEN: usize = 8;
/// Ports "any".
const ANY_START_PORT: u16 = 0;
const ANY_END_PORT: u16 = 0xFFFF;
/// Ports "OPAQUE" (§3.13.1): start 65535, end 0, i.e. the ports are not available (for
/// example in non-first fragments).
const OPAQUE_START_PORT: u16 = 0xFFFF;
const OPAQUE_END_PORT: u16 = 0;

/// One traffic selector: an address range, an IP protocol (0 = any) and a port range
/// (0–65535 = any; for ICMP the "ports" are type << 8 | code). The TS type (7 or 8) follows
/// from the address family; `start` and `end` must be of the same family.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TrafficSelector {
    pub ip_protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start: IpAddr,
    pub end: IpAddr,
}

impl TrafficSelector {
    /// All protocols and ports between two addresses (of one family).
    pub fn any_for(start: IpAddr, end: IpAddr) -> Self {
        debug_assert_eq!(
            start.is_ipv4(),
            end.is_ipv4(),
            "traffic selector mixes address families"
        );
        TrafficSelector {
            ip_protocol: 0,
            start_port: ANY_START_PORT,
            end_port: ANY_END_PORT,
            start,
            end,
        }
    }

    /// All protocols and ports of one address.
    pub fn host(addr: IpAddr) -> Self {
        TrafficSelector::any_for(addr, addr)
    }

    /// All protocols and ports of a CIDR block; host bits of `addr` are ignored. `None` if
    /// the prefix is longer than the address.
    pub fn from_cidr(addr: IpAddr, prefix: u8) -> Option<Self> {
        let (value, width) = to_bits(addr);
        let prefix = u32::from(prefix);
        if prefix > width {
            return None;
        }
        let host_mask = if prefix == width {
            0
        } else {
            (u128::MAX >> (128 - width)) >> prefix
        };
        let start = from_bits(addr, value & !host_mask);
        let end = from_bits(addr, value | host_mask);
        Some(TrafficSelector::any_for(start, end))
    }

    /// 7 (IPv4 range) or 8 (IPv6 range), from the start address.
    pub fn ts_type(&self) -> u8 {
        if self.start.is_ipv4() {
            ts_type::IPV4_ADDR_RANGE
        } else {
            ts_type::IPV6_ADDR_RANGE
        }
    }

    /// Whether the ports are 0–65535.
    pub fn is_any_port(&self) -> bool {
        self.start_port == ANY_START_PORT && self.end_port == ANY_END_PORT
    }

    /// Whether the ports are OPAQUE (start 65535, end 0).
    pub fn is_opaque(&self) -> bool {
        self.start_port == OPAQUE_START_PORT && self.end_port == OPAQUE_END_PORT
    }

    /// Whether `addr` lies in the address range (protocol and ports not considered).
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        same_family(self.start, addr) && same_family(self.end, addr) && self.start <= addr && addr <= self.end
    }

    /// Whether `other` is a subset of `self` (RFC 7296 §2.9: what a narrowed answer must be):
    /// same family, `self`'s protocol is 0 or `other`'s, `other`'s ports and addresses lie
    /// within `self`'s. OPAQUE ports are within OPAQUE and "any" only.
    pub fn contains(&self, other: &TrafficSelector) -> bool {
        self.intersect(other).as_ref() == Some(other)
    }

    /// The largest selector within both, as strongSwan computes it (traffic_selector.c
    /// `get_subset`): same family; protocols equal or one of them 0 (the other wins);
    /// overlapping port and address ranges. OPAQUE ∩ OPAQUE and OPAQUE ∩ any ports are OPAQUE.
    pub fn intersect(&self, other: &TrafficSelector) -> Option<TrafficSelector> {
        if !self.is_well_formed() || !other.is_well_formed() || !same_family(self.start, other.start) {
            return None;
        }
        if self.ip_protocol != other.ip_protocol && self.ip_protocol != 0 && other.ip_protocol != 0 {
            return None;
        }
        let ip_protocol = self.ip_protocol.max(other.ip_protocol);
        let (start_port, end_port) = if (self.is_opaque() && (other.is_opaque() || other.is_any_port()))
            || (other.is_opaque() && self.is_any_port())
        {
            (OPAQUE_START_PORT, OPAQUE_END_PORT)
        } else {
            let (s, e) = (self.start_port.max(other.start_port), self.end_port.min(other.end_port));
            if s > e {
                return None;
            }
            (s, e)
        };
        let (start, end) = (self.start.max(other.start), self.end.min(other.end));
        if start > end {
            return None;
        }
        Some(TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start,
            end,
        })
    }

    /// The range as a CIDR block (network, prefix length), if it is one.
    pub fn to_cidr(&self) -> Option<(IpAddr, u8)> {
        if !same_family(self.start, self.end) || self.start > self.end {
            return None;
        }
        let (s, width) = to_bits(self.start);
        let (e, _) = to_bits(self.end);
        let host_mask = s ^ e;
        if host_mask & host_mask.wrapping_add(1) != 0 || s & host_mask != 0 {
            return None;
        }
        let prefix = u8::try_from(width - host_mask.count_ones()).ok()?;
        Some((self.start, prefix))
    }

    /// Same family, start ≤ end, ports ordered or OPAQUE: what parse accepts.
    fn is_well_formed(&self) -> bool {
        same_family(self.start, self.end)
            && self.start <= self.end
            && (self.start_port <= self.end_port || self.is_opaque())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(
            same_family(self.start, self.end),
            "traffic selector mixes address families"
        );
        let len = match self.start {
            IpAddr::V4(_) => TS_HEADER_LEN + 8,
            IpAddr::V6(_) => TS_HEADER_LEN + 32,
        };
        out.extend_from_slice(&[self.ts_type(), self.ip_protocol]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&self.start_port.to_be_bytes());
        out.extend_from_slice(&self.end_port.to_be_bytes());
        // A mixed-family selector (a caller bug) is written in the start's family, the end
        // mapped (IPv4 ↔ IPv4-mapped IPv6) or, failing that, the family's last address.
        match (self.start, self.end) {
            (IpAddr::V4(s), end) => {
                let e = match end {
                    IpAddr::V4(e) => e,
                    IpAddr::V6(e) => e.to_ipv4_mapped().unwrap_or(Ipv4Addr::BROADCAST),
                };
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&e.octets());
            }
            (IpAddr::V6(s), end) => {
                let e = match end {
                    IpAddr::V6(e) => e,
                    IpAddr::V4(e) => e.to_ipv6_mapped(),
                };
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&e.octets());
            }
        }
    }

    /// Parses a TS payload body: at least one selector; as many as announced, filling the
    /// body exactly; types 7 (length 16) and 8 (length 40) only; start ≤ end for addresses,
    /// and for ports unless they are OPAQUE.
    pub(crate) fn parse_payload(body: &[u8]) -> Result<Vec<TrafficSelector>, WireError> {
        let mut r = Reader::new(body, WireError::BadTrafficSelector);
        let count = r.u8()?;
        r.take(3)?;
        if count == 0 {
            return Err(WireError::BadTrafficSelector);
        }
        let mut selectors = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let kind = r.u8()?;
            let ip_protocol = r.u8()?;
            let len = usize::from(r.u16()?);
            let addr_len = match kind {
                ts_type::IPV4_ADDR_RANGE => 4,
                ts_type::IPV6_ADDR_RANGE => 16,
                _ => return Err(WireError::BadTrafficSelector),
            };
            if len != TS_HEADER_LEN + 2 * addr_len {
                return Err(WireError::BadTrafficSelector);
            }
            let start_port = r.u16()?;
            let end_port = r.u16()?;
            let start = addr_from(r.take(addr_len)?);
            let end = addr_from(r.take(addr_len)?);
            let (Some(start), Some(end)) = (start, end) else {
                return Err(WireError::BadTrafficSelector);
            };
            let ts = TrafficSelector {
                ip_protocol,
                start_port,
                end_port,
                start,
                end,
            };
            if !ts.is_well_formed() {
                return Err(WireError::BadTrafficSelector);
            }
            selectors.push(ts);
        }
        if !r.is_empty() {
            return Err(WireError::BadTrafficSelector);
        }
        Ok(selectors)
    }

    /// Appends a TS payload body. More than 255 selectors is a caller bug.
    pub(crate) fn encode_payload(selectors: &[TrafficSelector], out: &mut Vec<u8>) {
        debug_assert!(selectors.len() <= 255, "too many traffic selectors");
        out.extend_from_slice(&[u8::try_from(selectors.len()).unwrap_or(u8::MAX), 0, 0, 0]);
        for ts in selectors {
            ts.encode(out);
        }
    }
}

/// strongSwan's notation: `198.18.1.0/24` for a CIDR block, else `198.18.1.5..198.18.1.9`;
/// then, unless protocol and ports are "any", `[proto/ports]`: `[tcp/443]`, `[udp]`,
/// `[0/1024-2047]`, `[icmp/8]`, `[tcp/OPAQUE]`. Ports print as numbers (no service names).
impl fmt::Display for TrafficSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_cidr() {
            Some((net, prefix)) => write!(f, "{net}/{prefix}")?,
            None => write!(f, "{}..{}", self.start, self.end)?,
        }
        let has_proto = self.ip_protocol != 0;
        let has_ports = !self.is_any_port();
        if !has_proto && !has_ports {
            return Ok(());
        }
        f.write_str("[")?;
        match protocol_name(self.ip_protocol) {
            Some(name) if has_proto => f.write_str(name)?,
            _ => write!(f, "{}", self.ip_protocol)?,
        }
        if has_ports {
            f.write_str("/")?;
            let icmp = matches!(self.ip_protocol, 1 | 58);
            if self.is_opaque() {
                f.write_str("OPAQUE")?;
            } else if icmp {
                write_icmp(f, self.start_port)?;
                if self.start_port != self.end_port {
                    f.write_str("-")?;
                    write_icmp(f, self.end_port)?;
                }
            } else if self.start_port == self.end_port {
                write!(f, "{}", self.start_port)?;
            } else {
                write!(f, "{}-{}", self.start_port, self.end_port)?;
            }
        }
        f.write_str("]")
    }
}

fn write_icmp(f: &mut fmt::Formatter<'_>, port: u16) -> fmt::Result {
    let [icmp_type, code] = port.to_be_bytes();
    if code != 0 {
        write!(f, "{icmp_type}({code})")
    } else {
        write!(f, "{icmp_type}")
    }
}

fn protocol_name(proto: u8) -> Option<&'static str> {
    Some(match proto {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        47 => "gre",
        50 => "esp",
        58 => "ipv6-icmp",
        132 => "sctp",
        _ => return None,
    })
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The address as an integer and its width in bits.
fn to_bits(addr: IpAddr) -> (u128, u32) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// An address of `like`'s family from an integer (truncated to 32 bits for IPv4).
fn from_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

fn addr_from(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(a));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}
