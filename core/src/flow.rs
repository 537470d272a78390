//! The 5-tuple that identifies a flow.
//!
//! A [`FiveTuple`] is taken from a packet in its direction of travel. Steering hashes it
//! symmetrically, so the two directions of one conversation land on the same gateway pair.
//! For ICMP echo and ICMPv6 echo, the echo identifier stands in for both ports.

use std::net::IpAddr;

/// IANA protocol numbers braid classifies.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// A flow's addresses, ports and protocol, in the packet's direction of travel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FiveTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IANA protocol number of the transport (after any IPv6 extension headers).
    pub proto: u8,
}

impl FiveTuple {
    /// The same flow seen from the other direction.
    pub fn reversed(&self) -> Self {
        FiveTuple {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }
}

/// Identifies a gateway pair cluster-wide (the `id` of a pair in the cluster YAML). It is also
/// the GENEVE VNI on the demux ↔ gateway hop and the Maglev backend id.
pub type PairId = u16;

/// TCP header flag bits, as found in byte 13 of the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// Identifies the fragments of one IP datagram (RFC 791 / RFC 8200 reassembly key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FragmentId {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// IPv4 identification (16 bits) or IPv6 fragment header identification (32 bits).
    pub id: u32,
}

/// What steering needs to know about one packet.
///
/// Fragment policy: a fragmented datagram is steered by its first fragment, which carries the
/// ports; later fragments follow the first through a short-lived fragment cache keyed by
/// [`FragmentId`]. A later fragment whose first fragment is unknown is steered by its addresses
/// and protocol alone, so all such fragments of one datagram take one pair (the demux's
/// `steer::fragments` documents the trade-off).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Classified {
    /// An unfragmented packet.
    Whole { tuple: FiveTuple, tcp_flags: u8 },
    /// The first fragment (offset 0, more-fragments set) of a datagram.
    FirstFragment {
        tuple: FiveTuple,
        frag: FragmentId,
        tcp_flags: u8,
    },
    /// A fragment with a non-zero offset: no transport header, so no ports.
    LaterFragment { frag: FragmentId },
}

impl Classified {
    /// The packet's 5-tuple, if it carries one (a later fragment does not).
    pub fn tuple(&self) -> Option<&FiveTuple> {
        match self {
            Classified::Whole { tuple, .. } | Classified::FirstFragment { tuple, .. } => Some(tuple),
            Classified::LaterFragment { .. } => None,
        }
    }
}
