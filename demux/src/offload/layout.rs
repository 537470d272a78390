//! Where the headers of a plain TCP/IP or UDP/IP packet end: the one parse both offload cores
//! share.

use braid_core::flow::proto;
use braid_core::wire::checksum;
use braid_core::wire::ipv4::Ipv4Packet;
use braid_core::wire::ipv6::{Ipv6Packet, IPV6_HEADER_LEN};
use braid_core::wire::tcp::TcpPacket;

use super::OffloadError;

/// Offset of the TCP flags byte in the TCP header.
pub(crate) const TCP_FLAGS_AT: usize = 13;
/// Offset of the TCP checksum in the TCP header.
pub(crate) const TCP_CHECKSUM_AT: usize = 16;

/// Offset of the UDP checksum in the UDP header.
pub(crate) const UDP_CHECKSUM_AT: usize = 6;
/// The UDP header's length.
pub(crate) const UDP_HEADER_LEN: usize = 8;

/// The layout of a TCP segment or UDP datagram over IPv4 (any header length, not a fragment)
/// or IPv6 (no extension headers).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct L4Layout {
    /// 4 or 6.
    pub version: u8,
    /// `proto::TCP` or `proto::UDP`.
    pub proto: u8,
    pub ip_header_len: usize,
    pub l4_header_len: usize,
    /// The packet length the IP header declares (trailing bytes are not part of the packet).
    pub len: usize,
}

impl L4Layout {
    /// Checks that `packet` is plain TCP and returns its layout.
    pub fn tcp(packet: &[u8]) -> Result<L4Layout, OffloadError> {
        let (version, ip_header_len, len) = ip_layout(packet, proto::TCP)?;
        let tcp = TcpPacket::new_checked(&packet[ip_header_len..len])?;
        Ok(L4Layout {
            version,
            proto: proto::TCP,
            ip_header_len,
            l4_header_len: tcp.header_len(),
            len,
        })
    }

    /// Checks that `packet` is plain UDP whose length field matches the IP length, and
    /// returns its layout.
    pub fn udp(packet: &[u8]) -> Result<L4Layout, OffloadError> {
        let (version, ip_header_len, len) = ip_layout(packet, proto::UDP)?;
        let udp = packet
            .get(ip_header_len..len)
            .filter(|udp| udp.len() >= UDP_HEADER_LEN)
            .ok_or(braid_core::wire::WireError::Truncated)?;
        if usize::from(u16::from_be_bytes([udp[4], udp[5]])) != udp.len() {
            return Err(braid_core::wire::WireError::BadUdpLength.into());
        }
        Ok(L4Layout {
            version,
            proto: proto::UDP,
            ip_header_len,
            l4_header_len: UDP_HEADER_LEN,
            len,
        })
    }

    /// IP plus transport header length.
    pub fn headers_len(&self) -> usize {
        self.ip_header_len + self.l4_header_len
    }

    /// The pseudo-header partial sum of this packet's addresses for a transport segment of
    /// `l4_len` bytes. `packet` must be the packet this layout was parsed from.
    pub fn pseudo_header(&self, packet: &[u8], l4_len: usize) -> u64 {
        if self.version == 4 {
            let ip = Ipv4Packet::new_unchecked(packet);
            checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), self.proto, l4_len as u16)
        } else {
            let ip = Ipv6Packet::new_unchecked(packet);
            checksum::pseudo_header_v6(ip.src_addr(), ip.dst_addr(), self.proto, l4_len as u32)
        }
    }

    /// The address and port bytes that identify this packet's flow, in a fixed-size key.
    pub fn flow_key(&self, packet: &[u8]) -> FlowKey {
        let mut addresses = [0u8; 32];
        let range = if self.version == 4 { 12..20 } else { 8..40 };
        let n = range.len();
        addresses[..n].copy_from_slice(&packet[range]);
        let t = self.ip_header_len;
        FlowKey {
            version: self.version,
            proto: self.proto,
            addresses,
            ports: [packet[t], packet[t + 1], packet[t + 2], packet[t + 3]],
        }
    }
}

/// A TCP or UDP flow in one direction: IP version, protocol, both addresses, both ports.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FlowKey {
    version: u8,
    proto: u8,
    addresses: [u8; 32],
    ports: [u8; 4],
}

/// The IP version, header length and declared length of a plain (unfragmented, no IPv6
/// extension headers) packet of transport protocol `transport`.
fn ip_layout(packet: &[u8], transport: u8) -> Result<(u8, usize, usize), OffloadError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(packet)?;
            if ip.protocol() != transport || ip.is_fragment() {
                return Err(OffloadError::NotPlainTcp);
            }
            Ok((4, ip.header_len(), usize::from(ip.total_len())))
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(packet)?;
            if ip.next_header() != transport {
                return Err(OffloadError::NotPlainTcp);
            }
            Ok((6, IPV6_HEADER_LEN, IPV6_HEADER_LEN + usize::from(ip.payload_len())))
        }
        Some(_) => Err(braid_core::wire::WireError::BadIpVersion.into()),
        None => Err(braid_core::wire::WireError::Truncated.into()),
    }
}
