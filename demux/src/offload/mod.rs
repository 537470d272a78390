//! TUN offloads: TCP super-packets between the kernel and the demux.
//!
//! Design: with `IFF_VNET_HDR` and `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)` the
//! kernel hands the demux TCP super-packets of up to 64 KiB, each behind a [`vnet`] header, and
//! accepts them back, so one system call and one trip through the kernel's stack carries tens
//! of wire packets. The gateways still see ordinary MTU-sized packets:
//!
//! * outbound, [`segment`] is TSO in userspace: a super-packet read from the TUN is split into
//!   MSS-sized IP packets written straight into caller-provided buffers (the GENEVE send
//!   slots), with every length, identifier, sequence number, flag and checksum fixed up;
//! * inbound, [`coalesce`] is GRO in userspace: the TCP segments of one received batch that
//!   continue each other are merged into one super-packet per run, never reordering a flow.
//!
//! Both cores are sans-IO and allocation-free per packet: buffers are the caller's or were
//! allocated once. Every input they refuse maps to one [`OffloadError`] variant, which the data
//! path counts as a drop reason.

#[cfg(test)]
mod alloc_tests;
pub mod coalesce;
pub mod kernel_model;
mod layout;
pub mod segment;
pub mod vnet;

use braid_core::wire::WireError;

pub use coalesce::{Coalescer, Emit};
pub use segment::{complete_checksum, Segmenter};
pub use vnet::{GsoType, VnetHeader, VNET_HEADER_LEN};

/// The largest IP packet (and so super-packet) the demux reads from or writes to the TUN.
pub const MAX_SUPER_PACKET: usize = 65535;

/// Why an offloaded packet cannot be handled. Each variant is a separately counted drop.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum OffloadError {
    /// Shorter than a virtio_net_hdr.
    #[error("truncated virtio_net_hdr")]
    Truncated,
    /// A virtio_net_hdr flag the demux does not know.
    #[error("unsupported virtio_net_hdr flags")]
    UnsupportedFlags,
    /// A segmentation type the demux never enabled (UDP, ECN-marked TSO, unknown).
    #[error("unsupported GSO type")]
    UnsupportedGso,
    /// The GSO type names one IP version and the packet is the other.
    #[error("GSO type does not match the IP version")]
    GsoMismatch,
    /// A super-packet that is not plain TCP over IPv4 or IPv6 (no IPv6 extension headers, not
    /// a fragment).
    #[error("super-packet is not plain TCP")]
    NotPlainTcp,
    /// A zero segment size, or a segment that does not fit the output buffer.
    #[error("bad GSO segment size")]
    BadGsoSize,
    /// The checksum position lies outside the packet.
    #[error("bad checksum offsets")]
    BadChecksumOffset,
    /// The packet inside is malformed.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Drop counter names for the [`OffloadError`]s that are not [`OffloadError::Wire`] (those are
/// counted with the other wire drops), indexed by [`OffloadError::counter_index`].
pub const OFFLOAD_DROP_COUNTERS: &[&str] = &[
    "drop_offload_truncated",
    "drop_offload_unsupported_flags",
    "drop_offload_unsupported_gso",
    "drop_offload_gso_mismatch",
    "drop_offload_not_plain_tcp",
    "drop_offload_bad_gso_size",
    "drop_offload_bad_checksum_offset",
];

impl OffloadError {
    /// Where this error is counted: an index into [`OFFLOAD_DROP_COUNTERS`], or the wire error.
    pub fn counter(self) -> Result<usize, WireError> {
        match self {
            OffloadError::Truncated => Ok(0),
            OffloadError::UnsupportedFlags => Ok(1),
            OffloadError::UnsupportedGso => Ok(2),
            OffloadError::GsoMismatch => Ok(3),
            OffloadError::NotPlainTcp => Ok(4),
            OffloadError::BadGsoSize => Ok(5),
            OffloadError::BadChecksumOffset => Ok(6),
            OffloadError::Wire(e) => Err(e),
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_own_counter() {
        let all = [
            OffloadError::Truncated,
            OffloadError::UnsupportedFlags,
            OffloadError::UnsupportedGso,
            OffloadError::GsoMismatch,
            OffloadError::NotPlainTcp,
            OffloadError::BadGsoSize,
            OffloadError::BadChecksumOffset,
        ];
        assert_eq!(all.len(), OFFLOAD_DROP_COUNTERS.len());
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.counter(), Ok(i));
        }
        assert_eq!(
            OffloadError::Wire(WireError::Truncated).counter(),
            Err(WireError::Truncated)
        );
    }
}
