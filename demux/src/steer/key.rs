//! The canonical, direction-free form of a flow's 5-tuple.
//!
//! Both directions of one conversation must hash to one value and hit one flow-table entry, so a
//! [`FiveTuple`] is reduced to a [`FlowKey`]: its two (address, port) endpoints ordered low then
//! high, plus the protocol and the address family. Addresses are kept as 16 bytes (IPv4 in its
//! IPv4-mapped IPv6 form) so the flow table can store every key in one fixed-size entry; the
//! family flag keeps an IPv4 flow distinct from an IPv6 flow between `::ffff:a.b.c.d` addresses.
//!
//! [`FlowKey::encode`] is the byte string the flow hash is computed over. It is part of the
//! cluster's wire contract (both sites and every host must agree), so its layout is fixed:
//!
//! | field | bytes |
//! |---|---|
//! | family | 1: `4` when both addresses are IPv4, `6` otherwise |
//! | protocol | 1 |
//! | low address | 4 (family 4) or 16 (family 6), network byte order |
//! | low port | 2, little-endian |
//! | high address | as the low address |
//! | high port | 2, little-endian |

use std::net::IpAddr;

use braid_core::flow::FiveTuple;

/// The longest [`FlowKey::encode`] output: family, protocol and two IPv6 endpoints.
pub const MAX_ENCODED_LEN: usize = 1 + 1 + 2 * (16 + 2);

/// A flow's 5-tuple with its endpoints in canonical order: `key(t) == key(t.reversed())`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FlowKey {
    pub lo_addr: [u8; 16],
    pub hi_addr: [u8; 16],
    pub lo_port: u16,
    pub hi_port: u16,
    pub proto: u8,
    /// False when both addresses are IPv4 (stored IPv4-mapped).
    pub v6: bool,
}

impl FlowKey {
    /// The canonical key of `tuple`, whichever direction it was taken in.
    pub fn new(tuple: &FiveTuple) -> FlowKey {
        let v6 = !(tuple.src.is_ipv4() && tuple.dst.is_ipv4());
        let a = (address_bytes(tuple.src), tuple.src_port);
        let b = (address_bytes(tuple.dst), tuple.dst_port);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        FlowKey {
            lo_addr: lo.0,
            hi_addr: hi.0,
            lo_port: lo.1,
            hi_port: hi.1,
            proto: tuple.proto,
            v6,
        }
    }

    /// Writes the hash input (layout in the module docs) into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8; MAX_ENCODED_LEN]) -> usize {
        let mut w = ByteWriter::new(out);
        w.put(&[if self.v6 { 6 } else { 4 }, self.proto]);
        for (addr, port) in [(&self.lo_addr, self.lo_port), (&self.hi_addr, self.hi_port)] {
            w.put(if self.v6 { &addr[..] } else { &addr[12..] });
            w.put(&port.to_le_bytes());
        }
        w.len()
    }
}

/// `addr` as 16 bytes: IPv6 as is, IPv4 as its IPv4-mapped IPv6 address.
pub(crate) fn address_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Appends byte strings to a fixed buffer whose size the caller has proven sufficient.
pub(crate) struct ByteWriter<'a, const N: usize> {
    buf: &'a mut [u8; N],
    len: usize,
}

impl<'a, const N: usize> ByteWriter<'a, N> {
    pub(crate) fn new(buf: &'a mut [u8; N]) -> Self {
        ByteWriter { buf, len: 0 }
    }

    /// Appends `bytes`; callers size `N` for their longest encoding, so this never truncates.
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steer::written_tuple as tuple;
    use braid_core::flow::proto;

    #[test]
    fn both_directions_give_one_key() {
        let t = tuple("198.18.0.9", 40000, "198.19.0.1", 443, proto::TCP);
        assert_eq!(FlowKey::new(&t), FlowKey::new(&t.reversed()));
        let t6 = tuple("2001:db8::9", 5353, "2001:db8::1", 5353, proto::UDP);
        assert_eq!(FlowKey::new(&t6), FlowKey::new(&t6.reversed()));
    }

    #[test]
    fn same_address_orders_by_port() {
        let t = tuple("198.18.0.1", 9000, "198.18.0.1", 80, proto::TCP);
        let k = FlowKey::new(&t);
        assert_eq!((k.lo_port, k.hi_port), (80, 9000));
        assert_eq!(k, FlowKey::new(&t.reversed()));
    }

    #[test]
    fn ipv4_and_mapped_ipv6_are_different_flows() {
        let v4 = tuple("198.18.0.1", 1, "198.18.0.2", 2, proto::UDP);
        let mapped = tuple("::ffff:198.18.0.1", 1, "::ffff:198.18.0.2", 2, proto::UDP);
        assert_ne!(FlowKey::new(&v4), FlowKey::new(&mapped));
    }

    #[test]
    fn encoding_layout_is_fixed() {
        let t = tuple("198.18.0.2", 0x0102, "198.18.0.1", 0x0304, proto::UDP);
        let mut buf = [0; MAX_ENCODED_LEN];
        let n = FlowKey::new(&t).encode(&mut buf);
        assert_eq!(
            &buf[..n],
            &[4, 17, 198, 18, 0, 1, 0x04, 0x03, 198, 18, 0, 2, 0x02, 0x01]
        );
        let t6 = tuple("2001:db8::1", 7, "2001:db8::2", 8, proto::TCP);
        assert_eq!(FlowKey::new(&t6).encode(&mut buf), MAX_ENCODED_LEN);
        assert_eq!(&buf[..4], &[6, 6, 0x20, 0x01]);
    }
}
