//! Where the headers of a plain TCP/IP packet end: the one parse both offload cores share.

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

/// The layout of a TCP segment over IPv4 (any header length, not a fragment) or IPv6 (no
/// extension headers).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct TcpLayout {
    /// 4 or 6.
    pub version: u8,
    pub ip_header_len: usize,
    pub tcp_header_len: usize,
    /// The packet length the IP header declares (trailing bytes are not part of the packet).
    pub len: usize,
}

impl TcpLayout {
    /// Checks `packet` and returns its layout.
    pub fn parse(packet: &[u8]) -> Result<TcpLayout, OffloadError> {
        let (version, ip_header_len, len) = match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(packet)?;
                if ip.protocol() != proto::TCP || ip.is_fragment() {
                    return Err(OffloadError::NotPlainTcp);
                }
                (4, ip.header_len(), usize::from(ip.total_len()))
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(packet)?;
                if ip.next_header() != proto::TCP {
                    return Err(OffloadError::NotPlainTcp);
                }
                (6, IPV6_HEADER_LEN, IPV6_HEADER_LEN + usize::from(ip.payload_len()))
            }
            Some(_) => return Err(braid_core::wire::WireError::BadIpVersion.into()),
            None => return Err(braid_core::wire::WireError::Truncated.into()),
        };
        let tcp = TcpPacket::new_checked(&packet[ip_header_len..len])?;
        Ok(TcpLayout {
            version,
            ip_header_len,
            tcp_header_len: tcp.header_len(),
            len,
        })
    }

    /// IP plus TCP header length.
    pub fn headers_len(&self) -> usize {
        self.ip_header_len + self.tcp_header_len
    }

    /// The pseudo-header partial sum of this packet's addresses for a TCP segment of
    /// `tcp_len` bytes. `packet` must be the packet this layout was parsed from.
    pub fn pseudo_header(&self, packet: &[u8], tcp_len: usize) -> u64 {
        if self.version == 4 {
            let ip = Ipv4Packet::new_unchecked(packet);
            checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), proto::TCP, tcp_len as u16)
        } else {
            let ip = Ipv6Packet::new_unchecked(packet);
            checksum::pseudo_header_v6(ip.src_addr(), ip.dst_addr(), proto::TCP, tcp_len as u32)
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
            addresses,
            ports: [packet[t], packet[t + 1], packet[t + 2], packet[t + 3]],
        }
    }
}

/// A TCP flow in one direction: IP version, both addresses, both ports.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FlowKey {
    version: u8,
    addresses: [u8; 32],
    ports: [u8; 4],
}
