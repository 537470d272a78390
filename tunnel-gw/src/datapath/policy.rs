//! What a gateway checks packets against: the demux as the only LAN source, this pair's VNI,
//! inner sources inside the local site on the way out and inside the peer site on the way in.

use std::net::{IpAddr, SocketAddr};

use braid_core::wire::geneve::{self, GeneveData, GeneveRefusal, InnerProtocol};
use braid_core::wire::ipv4::Ipv4Packet;
use braid_core::wire::ipv6::Ipv6Packet;
use braid_core::wire::WireError;

use crate::counters::{Counter, ThreadCounters};
use crate::settings::GatewaySettings;

/// What the data threads check packets against. Public (hidden) only so the fuzz targets can
/// feed [`Policy::accept_from_lan`] without sockets.
#[doc(hidden)]
#[derive(Debug)]
pub struct Policy {
    settings: GatewaySettings,
    vni: u32,
}

/// Why a LAN datagram is not forwarded.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum LanDrop {
    Counter(Counter),
    Wire(WireError),
}

impl LanDrop {
    pub(super) fn count(self, counters: &ThreadCounters) {
        match self {
            LanDrop::Counter(counter) => counters.inc(counter),
            LanDrop::Wire(error) => counters.wire_drop(error),
        }
    }
}

impl From<WireError> for LanDrop {
    fn from(error: WireError) -> Self {
        LanDrop::Wire(error)
    }
}

impl Policy {
    /// The policy of the gateway `settings` describe: its pair id is the GENEVE VNI.
    pub fn new(settings: GatewaySettings) -> Self {
        Policy {
            vni: u32::from(settings.pair_id),
            settings,
        }
    }

    /// The gateway's settings.
    pub(super) fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// This pair's GENEVE VNI (its pair id).
    pub(super) fn vni(&self) -> u32 {
        self.vni
    }

    /// The inner packet of a GENEVE datagram from the LAN, if it may enter the tunnel.
    pub fn accept_from_lan<'a>(&self, datagram: &'a [u8], source: SocketAddr) -> Result<&'a [u8], LanDrop> {
        if source != self.settings.demux {
            return Err(LanDrop::Counter(Counter::DropLanUnknownSource));
        }
        let GeneveData { header_len, protocol } =
            geneve::accept_data(datagram, self.vni).map_err(|refusal| match refusal {
                GeneveRefusal::Wire(e) => LanDrop::Wire(e),
                GeneveRefusal::Oam => LanDrop::Counter(Counter::DropLanOam),
                GeneveRefusal::WrongVni => LanDrop::Counter(Counter::DropLanWrongVni),
            })?;
        let inner = &datagram[header_len..];
        if inner.len() > self.settings.mtu {
            return Err(LanDrop::Counter(Counter::DropLanInnerTooBig));
        }
        let inner_source = match protocol {
            InnerProtocol::Ipv4 => IpAddr::V4(Ipv4Packet::new_checked(inner)?.src_addr()),
            InnerProtocol::Ipv6 => IpAddr::V6(Ipv6Packet::new_checked(inner)?.src_addr()),
        };
        if !self.settings.is_local_source(inner_source) {
            return Err(LanDrop::Counter(Counter::DropInnerSrcNotLocalSite));
        }
        Ok(inner)
    }
}
