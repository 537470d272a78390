//! Everything one gateway needs to run, as plain data.
//!
//! Design: the library takes a [`GatewaySettings`] and never reads files, so the data path can
//! be built and tested without a cluster config; `main.rs` derives the settings from the
//! cluster YAML and key files. Buffer sizes follow from the inner MTU (see [`BufferSizes`]).

use std::net::{IpAddr, SocketAddr};

use braid_core::config::Prefix;
use braid_core::flow::PairId;
use braid_core::keys::{PrivateKey, PublicKey};
use braid_core::wire::geneve::GENEVE_HEADER_LEN;
use braid_ipsec::ike::IkeConfig;

use crate::suite::MIN_CONTROL_BUFFER;

/// Datagrams moved per system call.
pub const DEFAULT_BATCH_SIZE: usize = 64;
/// Largest GENEVE option area (6-bit length in 4-byte words).
pub const GENEVE_MAX_OPTIONS_LEN: usize = 63 * 4;

/// The tunnel protocol spoken with the peer gateway, with what it needs.
#[derive(Clone, Debug)]
pub enum TunnelSettings {
    WireGuard {
        /// This gateway's private key (wiped on drop, redacted in `Debug`).
        private_key: PrivateKey,
        /// The peer gateway's public key.
        peer_public_key: PublicKey,
    },
    /// IKEv2 and ESP: identities, pre-shared key, proposals, selectors, lifetimes.
    Ipsec(Box<IkeConfig>),
}

/// One gateway's configuration.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// This pair's id: the GENEVE VNI on the LAN side.
    pub pair_id: PairId,
    /// Prefixes of this gateway's site: inner sources accepted from the LAN.
    pub local_prefixes: Vec<Prefix>,
    /// Prefixes of the peer site: inner sources accepted from the WAN.
    pub peer_prefixes: Vec<Prefix>,
    /// Where the LAN (GENEVE) socket binds.
    pub lan_bind: SocketAddr,
    /// The local demux's GENEVE address: the only accepted LAN source and the LAN destination.
    pub demux: SocketAddr,
    /// Where the WAN socket binds.
    pub wan_bind: SocketAddr,
    /// The peer gateway's WAN endpoint until an authenticated datagram moves it.
    pub peer_endpoint: SocketAddr,
    /// The tunnel protocol and its keys.
    pub tunnel: TunnelSettings,
    /// Largest inner IP packet carried, in bytes.
    pub mtu: usize,
    /// Datagrams moved per system call.
    pub batch_size: usize,
    /// Kernel buffer requested for each socket, in bytes.
    pub socket_buffer_bytes: usize,
    /// Seal on a thread of its own, beside the thread that opens and runs the handshakes
    /// (IPsec only: see [`crate::suite`]).
    pub seal_thread: bool,
}

impl GatewaySettings {
    /// Whether `source` may appear as the inner source of a packet from the local site.
    pub fn is_local_source(&self, source: IpAddr) -> bool {
        self.local_prefixes.iter().any(|p| p.contains(source))
    }

    /// Whether `source` may appear as the inner source of a packet from the peer site.
    pub fn is_peer_source(&self, source: IpAddr) -> bool {
        self.peer_prefixes.iter().any(|p| p.contains(source))
    }

    /// Buffer sizes for a suite adding `suite_overhead` bytes per packet whose control
    /// datagrams are at most `largest_control` bytes.
    pub fn buffer_sizes(&self, suite_overhead: usize, largest_control: usize) -> BufferSizes {
        let wan_datagram = (self.mtu + suite_overhead).max(MIN_CONTROL_BUFFER);
        let wan_received = wan_datagram.max(largest_control);
        BufferSizes {
            lan_recv: GENEVE_HEADER_LEN + GENEVE_MAX_OPTIONS_LEN + self.mtu,
            wan_send: wan_datagram,
            wan_recv: wan_received,
            lan_send: GENEVE_HEADER_LEN + wan_received,
        }
    }
}

/// Per-datagram buffer sizes of the four batches.
///
/// The WAN send buffer holds the largest inner packet plus the suite's overhead; the LAN send
/// buffer holds a GENEVE header plus a whole received WAN datagram, because the suite decrypts
/// straight into it and decryption needs an output as long as its input. A received WAN
/// datagram may be a control message longer than any data datagram (an IKE message of up to
/// 3000 bytes at a small MTU).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BufferSizes {
    pub lan_recv: usize,
    pub lan_send: usize,
    pub wan_recv: usize,
    pub wan_send: usize,
}
