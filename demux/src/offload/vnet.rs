//! The `virtio_net_hdr` that prefixes every packet on a TUN opened with `IFF_VNET_HDR`.
//!
//! Layout (10 bytes, no mergeable-buffer count; the demux fixes the size with
//! `TUNSETVNETHDRSZ`): `flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, csum_start: u16,
//! csum_offset: u16`. The 16-bit fields are in the legacy virtio byte order, which for a TUN
//! that was never switched with `TUNSETVNETLE`/`TUNSETVNETBE` is the host's native order.
//!
//! [`VnetHeader::parse`] is the checked entry point for bytes read from the kernel: it accepts
//! only what the demux asks the kernel for (`TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`), so a
//! header announcing UDP segmentation, ECN-marked TSO or an unknown type is a typed error
//! (a counted drop), never a guess.

use super::OffloadError;

/// Size of the header the demux configures (`struct virtio_net_hdr`), defined with the TUN
/// device that sets it.
pub use braid_sys::tun::VNET_HEADER_LEN;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const FLAG_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum has been verified.
pub const FLAG_DATA_VALID: u8 = 2;

/// How a super-packet is to be segmented.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GsoType {
    /// An ordinary packet.
    None,
    /// TCP over IPv4 (`VIRTIO_NET_HDR_GSO_TCPV4`).
    TcpV4,
    /// TCP over IPv6 (`VIRTIO_NET_HDR_GSO_TCPV6`).
    TcpV6,
    /// UDP datagrams of one flow (`VIRTIO_NET_HDR_GSO_UDP_L4`): only ever written, never
    /// accepted from the kernel (the demux does not enable UDP segmentation offload on reads).
    UdpL4,
}

impl GsoType {
    /// The wire value.
    pub fn to_wire(self) -> u8 {
        match self {
            GsoType::None => 0,
            GsoType::TcpV4 => 1,
            GsoType::TcpV6 => 4,
            GsoType::UdpL4 => 5,
        }
    }

    fn from_wire(value: u8) -> Result<GsoType, OffloadError> {
        match value {
            0 => Ok(GsoType::None),
            1 => Ok(GsoType::TcpV4),
            4 => Ok(GsoType::TcpV6),
            // UDP, UDP_L4, anything ECN-marked (`VIRTIO_NET_HDR_GSO_ECN`, 0x80) or unknown.
            _ => Err(OffloadError::UnsupportedGso),
        }
    }
}

/// A parsed `virtio_net_hdr`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VnetHeader {
    pub flags: u8,
    pub gso_type: GsoType,
    /// Length of the headers to replicate into every segment (a hint; see `segment`).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the transport header).
    pub csum_start: u16,
    /// Where, after `csum_start`, the checksum field is.
    pub csum_offset: u16,
}

impl VnetHeader {
    /// The header of an ordinary packet whose checksums are complete.
    pub const NONE: VnetHeader = VnetHeader {
        flags: 0,
        gso_type: GsoType::None,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Parses the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<VnetHeader, OffloadError> {
        let Some(bytes) = buf.get(..VNET_HEADER_LEN) else {
            return Err(OffloadError::Truncated);
        };
        let field = |at: usize| u16::from_ne_bytes([bytes[at], bytes[at + 1]]);
        if bytes[0] & !(FLAG_NEEDS_CSUM | FLAG_DATA_VALID) != 0 {
            return Err(OffloadError::UnsupportedFlags);
        }
        Ok(VnetHeader {
            flags: bytes[0],
            gso_type: GsoType::from_wire(bytes[1])?,
            hdr_len: field(2),
            gso_size: field(4),
            csum_start: field(6),
            csum_offset: field(8),
        })
    }

    /// Writes the header into the first [`VNET_HEADER_LEN`] bytes of `out` and returns that
    /// length.
    ///
    /// # Panics
    /// If `out` is shorter than [`VNET_HEADER_LEN`]: the caller sizes its own buffers.
    pub fn write(&self, out: &mut [u8]) -> usize {
        let out = &mut out[..VNET_HEADER_LEN];
        out[0] = self.flags;
        out[1] = self.gso_type.to_wire();
        out[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        VNET_HEADER_LEN
    }

    /// Whether the checksum at `csum_start + csum_offset` still has to be completed.
    pub fn needs_csum(&self) -> bool {
        self.flags & FLAG_NEEDS_CSUM != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let header = VnetHeader {
            flags: FLAG_NEEDS_CSUM,
            gso_type: GsoType::TcpV6,
            hdr_len: 72,
            gso_size: 1428,
            csum_start: 40,
            csum_offset: 16,
        };
        let mut buf = [0xAAu8; 12];
        assert_eq!(header.write(&mut buf), VNET_HEADER_LEN);
        assert_eq!(buf[1], 4);
        assert_eq!(&buf[10..], &[0xAA, 0xAA], "nothing past the header is touched");
        assert_eq!(VnetHeader::parse(&buf), Ok(header));
        assert!(header.needs_csum());
        assert!(!VnetHeader::NONE.needs_csum());
    }

    #[test]
    fn parses_a_kernel_tcpv4_header() {
        let mut buf = [0u8; VNET_HEADER_LEN];
        buf[0] = FLAG_NEEDS_CSUM;
        buf[1] = 1;
        buf[2..4].copy_from_slice(&52u16.to_ne_bytes());
        buf[4..6].copy_from_slice(&1448u16.to_ne_bytes());
        buf[6..8].copy_from_slice(&20u16.to_ne_bytes());
        buf[8..10].copy_from_slice(&16u16.to_ne_bytes());
        let header = VnetHeader::parse(&buf).unwrap();
        assert_eq!(header.gso_type, GsoType::TcpV4);
        assert_eq!((header.hdr_len, header.gso_size), (52, 1448));
        assert_eq!((header.csum_start, header.csum_offset), (20, 16));
    }

    #[test]
    fn rejects_what_the_demux_never_asked_for() {
        for (gso_type, what) in [
            (3u8, "UDP"),
            (5, "UDP L4"),
            (0x81, "TCPv4 ECN"),
            (0x84, "TCPv6 ECN"),
            (2, "?"),
        ] {
            let mut buf = [0u8; VNET_HEADER_LEN];
            buf[1] = gso_type;
            assert_eq!(VnetHeader::parse(&buf), Err(OffloadError::UnsupportedGso), "{what}");
        }
        let mut buf = [0u8; VNET_HEADER_LEN];
        buf[0] = 4;
        assert_eq!(VnetHeader::parse(&buf), Err(OffloadError::UnsupportedFlags));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let buf = [0u8; VNET_HEADER_LEN];
        for len in 0..VNET_HEADER_LEN {
            assert_eq!(VnetHeader::parse(&buf[..len]), Err(OffloadError::Truncated));
        }
    }
}
