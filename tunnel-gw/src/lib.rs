//! braid-gw: one encrypting gateway of a braid cluster.
//!
//! Design: a gateway is one lane of the braid. On its LAN side it exchanges GENEVE (RFC 8926)
//! with its site's demux, the VNI naming the gateway pair; on its WAN side it holds one tunnel
//! session with its peer gateway in the other site. It needs only two UDP sockets: no TUN and no
//! privileges.
//!
//! * [`suite`]: the tunnel-protocol seam ([`suite::TunnelSuite`]), so WireGuard today and IPsec
//!   ESP later plug into the same data loop.
//! * [`wireguard`]: the WireGuard suite over boringtun.
//! * [`datapath`]: the single data thread: batched I/O, policy checks, counters.
//! * [`settings`]: the plain-data configuration the library runs from.
//! * [`counters`]: traffic and drop counters, one per reason.
//!
//! The binary (`main.rs`) turns the cluster YAML into [`settings::GatewaySettings`], runs the
//! data thread and writes a status file.

pub mod counters;
pub mod datapath;
pub mod settings;
pub mod suite;
pub mod wireguard;

use std::io;

use datapath::DataPath;
use settings::GatewaySettings;
use wireguard::WireGuardSuite;

/// Binds a gateway whose tunnel is WireGuard, ready to run on its own thread.
pub fn bind_wireguard(settings: GatewaySettings) -> io::Result<DataPath<WireGuardSuite>> {
    let suite = WireGuardSuite::new(
        *settings.private_key.as_bytes(),
        *settings.peer_public_key.as_bytes(),
        u32::from(settings.pair_id),
    );
    DataPath::bind(settings, suite)
}
