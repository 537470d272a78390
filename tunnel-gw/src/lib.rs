//! braid-gw: one encrypting gateway of a braid cluster.
//!
//! Design: a gateway is one lane of the braid. On its LAN side it exchanges GENEVE (RFC 8926)
//! with its site's demux, the VNI naming the gateway pair; on its WAN side it holds one tunnel
//! session with its peer gateway in the other site. It needs only two UDP sockets: no TUN and no
//! privileges.
//!
//! * [`suite`]: the tunnel-protocol seam ([`suite::TunnelSuite`]), so WireGuard today and IPsec
//!   ESP plug into the same data loop.
//! * [`wireguard`]: the WireGuard suite over boringtun.
//! * [`ipsec`]: the IPsec suite: IKEv2 and ESP in UDP over braid-ipsec's sans-IO engine.
//! * [`datapath`]: the data thread (and IPsec's optional sealing thread): batched I/O, policy
//!   checks, counters.
//! * [`handshake_limit`]: per-source and global rate limits on handshakes before the suite.
//! * [`settings`]: the plain-data configuration the library runs from.
//! * [`counters`]: traffic and drop counters, one per reason.
//!
//! The binary (`main.rs`) turns the cluster YAML into [`settings::GatewaySettings`], runs the
//! data thread and writes a status file.

#![forbid(unsafe_code)]

/// The unit tests count heap allocations per thread (transport data's must be none).
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: braid_sys::allocations::CountingAllocator = braid_sys::allocations::CountingAllocator;

pub mod counters;
pub mod datapath;
pub mod handshake_limit;
pub mod ipsec;
pub mod settings;
pub mod suite;
pub mod wireguard;

use std::io;

use datapath::DataPath;
use ipsec::IpsecSuite;
use settings::{GatewaySettings, TunnelSettings};
use wireguard::WireGuardSuite;

/// A bound gateway of either suite, ready to run on its own thread.
#[derive(Debug)]
pub enum Gateway {
    WireGuard(Box<DataPath<WireGuardSuite>>),
    Ipsec(Box<DataPath<IpsecSuite>>),
}

/// Binds a gateway for the suite its settings name.
pub fn bind(settings: GatewaySettings) -> io::Result<Gateway> {
    match &settings.tunnel {
        TunnelSettings::WireGuard {
            private_key,
            peer_public_key,
        } => {
            let suite = WireGuardSuite::new(
                *private_key.as_bytes(),
                *peer_public_key.as_bytes(),
                u32::from(settings.pair_id),
            );
            Ok(Gateway::WireGuard(Box::new(DataPath::bind(settings, suite)?)))
        }
        TunnelSettings::Ipsec(config) => {
            let suite = IpsecSuite::new((**config).clone())?;
            Ok(Gateway::Ipsec(Box::new(DataPath::bind(settings, suite)?)))
        }
    }
}

/// Binds a gateway whose tunnel is WireGuard (the settings must say so).
pub fn bind_wireguard(settings: GatewaySettings) -> io::Result<DataPath<WireGuardSuite>> {
    match bind(settings)? {
        Gateway::WireGuard(datapath) => Ok(*datapath),
        Gateway::Ipsec(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the settings are for IPsec",
        )),
    }
}
