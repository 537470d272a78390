//! Zero-copy, checked views over packet bytes, and the flow classifier built on them.
//!
//! Design: each protocol module offers a view `XPacket<T: AsRef<[u8]>>` that wraps a buffer
//! without copying it. `new_checked` validates everything the getters rely on, so that after it
//! succeeds no getter can read out of bounds; untrusted bytes must enter through it. The
//! `new_unchecked` constructor exists for buffers the caller built itself. Getters never panic
//! even on an unchecked view whose length fields lie: payload accessors clamp to the buffer.
//! Setters exist when `T: AsMut<[u8]>`, so a caller can build or rewrite a packet in place.
//!
//! Every malformation maps to one [`WireError`] variant, and every variant has its own drop
//! counter name (see [`WIRE_DROP_COUNTERS`]), so a daemon counts bad input by reason instead of
//! panicking or silently skipping it.
//!
//! * [`checksum`]: the internet checksum, full and RFC 1624 incremental.
//! * [`ipv4`], [`ipv6`] (with the extension header walk), [`tcp`], [`udp`], [`icmp`].
//! * [`geneve`]: the demux ↔ gateway encapsulation (RFC 8926).
//! * [`classify`]: an inner IP packet → [`crate::flow::Classified`].
//! * [`clamp_tcp_mss`]: rewrites the MSS option of SYN segments in place.
//!
//! Nothing here allocates.

pub mod checksum;
mod classify;
pub mod geneve;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
mod mss;
pub mod tcp;
pub mod udp;

pub use classify::classify;
pub use mss::clamp_tcp_mss;

/// Why a buffer is not a well-formed packet. Each variant is a separately counted drop reason.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before a fixed-size header does.
    #[error("packet truncated")]
    Truncated,
    /// The IP version nibble is neither 4 nor 6 (or not the one expected).
    #[error("bad IP version")]
    BadIpVersion,
    /// The IPv4 header length (IHL) is below 5 words or beyond the buffer.
    #[error("bad IPv4 header length")]
    BadHeaderLength,
    /// The IP total/payload length is shorter than the header or longer than the buffer.
    #[error("bad IP total length")]
    BadTotalLength,
    /// An IPv6 extension header overruns the payload, is out of place, or is repeated.
    #[error("bad IPv6 extension header")]
    BadExtensionHeader,
    /// A first fragment too short to carry its transport header (tiny-fragment attack).
    #[error("bad fragment")]
    BadFragment,
    /// The TCP data offset is below 5 words or beyond the segment.
    #[error("bad TCP header length")]
    BadTcpHeader,
    /// A TCP option has a length below 2 or runs past the TCP header.
    #[error("bad TCP option")]
    BadTcpOption,
    /// The UDP length field is below 8 or beyond the IP payload.
    #[error("bad UDP length")]
    BadUdpLength,
    /// An ICMP error message whose quoted packet is not a parsable IP header.
    #[error("bad ICMP quoted packet")]
    BadIcmpQuote,
    /// The GENEVE version is not 0.
    #[error("bad GENEVE version")]
    GeneveBadVersion,
    /// The GENEVE options do not fit the buffer or their TLVs do not end exactly at the header end.
    #[error("bad GENEVE options")]
    GeneveBadOptions,
    /// A GENEVE critical option (C bit or option type high bit): braid understands none.
    #[error("GENEVE critical option")]
    GeneveCriticalOption,
    /// A GENEVE protocol type other than IPv4 or IPv6.
    #[error("unknown GENEVE protocol type")]
    GeneveUnknownProtocol,
}

/// Drop counter names for every [`WireError`], indexed by [`WireError::counter_index`].
pub const WIRE_DROP_COUNTERS: &[&str] = &[
    "drop_truncated",
    "drop_bad_ip_version",
    "drop_bad_header_length",
    "drop_bad_total_length",
    "drop_bad_extension_header",
    "drop_bad_fragment",
    "drop_bad_tcp_header",
    "drop_bad_tcp_option",
    "drop_bad_udp_length",
    "drop_bad_icmp_quote",
    "drop_geneve_bad_version",
    "drop_geneve_bad_options",
    "drop_geneve_critical_option",
    "drop_geneve_unknown_protocol",
];

impl WireError {
    /// Every variant, in [`WIRE_DROP_COUNTERS`] order.
    pub const ALL: [WireError; 14] = [
        WireError::Truncated,
        WireError::BadIpVersion,
        WireError::BadHeaderLength,
        WireError::BadTotalLength,
        WireError::BadExtensionHeader,
        WireError::BadFragment,
        WireError::BadTcpHeader,
        WireError::BadTcpOption,
        WireError::BadUdpLength,
        WireError::BadIcmpQuote,
        WireError::GeneveBadVersion,
        WireError::GeneveBadOptions,
        WireError::GeneveCriticalOption,
        WireError::GeneveUnknownProtocol,
    ];

    /// Position of this error's counter in [`WIRE_DROP_COUNTERS`].
    pub fn counter_index(self) -> usize {
        self as usize
    }

    /// The drop counter name for this error, e.g. `"drop_truncated"`.
    pub fn counter_name(self) -> &'static str {
        WIRE_DROP_COUNTERS[self.counter_index()]
    }
}

/// Reads a big-endian u16 at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Reads a big-endian u32 at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Writes a big-endian u16 at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Writes a big-endian u32 at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::CounterSet;

    #[test]
    fn counter_names_are_indexed_in_order_and_unique() {
        assert_eq!(WireError::ALL.len(), WIRE_DROP_COUNTERS.len());
        for (i, e) in WireError::ALL.iter().enumerate() {
            assert_eq!(e.counter_index(), i);
            assert_eq!(e.counter_name(), WIRE_DROP_COUNTERS[i]);
            assert!(e.counter_name().starts_with("drop_"));
        }
        for (i, a) in WIRE_DROP_COUNTERS.iter().enumerate() {
            assert!(!WIRE_DROP_COUNTERS[i + 1..].contains(a), "duplicate {a}");
        }
    }

    #[test]
    fn errors_count_into_a_counter_set() {
        let counters = CounterSet::new(WIRE_DROP_COUNTERS);
        counters.inc(WireError::BadTcpOption.counter_index());
        assert_eq!(counters.get_by_name("drop_bad_tcp_option"), Some(1));
        assert_eq!(WireError::GeneveCriticalOption.to_string(), "GENEVE critical option");
    }
}
