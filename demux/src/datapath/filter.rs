//! Which inner packets the demux takes from its gateways.
//!
//! The address a GENEVE datagram comes from proves little — any host on the gateway LAN can
//! send with a gateway's source address — so the inner packet is checked too: it must come
//! from the peer site (source inside the peer site's `prefixes`) and go to this site
//! (destination inside this site's `prefixes`). Anything else is dropped, counted per reason
//! ([`InnerDrop`]), before it can reach the TUN or teach the flow table a pin. The outer checks
//! (a configured gateway's address, the VNI of that gateway's pair) come first, in the
//! inbound thread.
//!
//! Canaries are the one exception: they run between the two sites' canary addresses, and an
//! external peer's canary address may lie outside its prefixes. A packet from exactly the peer's
//! canary address to exactly ours that fails the prefix check is [`Verdict::CanaryOnly`]: the
//! canary code may consume it, and if it is not a canary it is dropped like any other spoof.
//!
//! Pure and allocation-free per packet: a few prefix comparisons.

use std::net::IpAddr;

use braid_core::config::Prefix;
use braid_core::flow::Classified;

use super::{c, destination_of, in_prefixes, source_of};

/// Why an inner packet from a gateway was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InnerDrop {
    /// The inner source is not in the peer site's prefixes.
    SrcNotPeer,
    /// The inner destination is not in this site's prefixes.
    DstNotLocal,
}

impl InnerDrop {
    /// The demux counter this drop is counted under.
    pub fn counter(self) -> usize {
        match self {
            InnerDrop::SrcNotPeer => c::DROP_SRC_NOT_PEER,
            InnerDrop::DstNotLocal => c::DROP_DST_NOT_LOCAL,
        }
    }
}

/// What to do with an inner packet from a gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Peer site to this site: canary or traffic for the TUN.
    Accept,
    /// Between the canary addresses but outside the prefixes: only a canary may pass; anything
    /// else is dropped as this [`InnerDrop`].
    CanaryOnly(InnerDrop),
    Drop(InnerDrop),
}

/// The inner-address check of one demux (see the module docs).
#[derive(Debug, Clone)]
pub struct InboundFilter {
    local: Vec<Prefix>,
    peer: Vec<Prefix>,
    canary_peer: IpAddr,
    canary_local: IpAddr,
}

impl InboundFilter {
    /// A filter for the demux of the site with `local` prefixes, whose peer site has `peer`;
    /// canaries run from `canary_peer` to `canary_local`.
    pub fn new(local: Vec<Prefix>, peer: Vec<Prefix>, canary_peer: IpAddr, canary_local: IpAddr) -> Self {
        InboundFilter {
            local,
            peer,
            canary_peer,
            canary_local,
        }
    }

    /// The verdict on an inner packet.
    #[inline]
    pub fn check(&self, packet: &Classified) -> Verdict {
        let (src, dst) = (source_of(packet), destination_of(packet));
        let refused = if !in_prefixes(&self.peer, src) {
            InnerDrop::SrcNotPeer
        } else if !in_prefixes(&self.local, dst) {
            InnerDrop::DstNotLocal
        } else {
            return Verdict::Accept;
        };
        if src == self.canary_peer && dst == self.canary_local {
            Verdict::CanaryOnly(refused)
        } else {
            Verdict::Drop(refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::{Canary, Inbound};
    use braid_core::flow::{proto, FiveTuple, FragmentId};
    use braid_core::wire::classify;

    fn prefix(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Site a (198.18.1.0/24) receiving from site b (198.18.2.0/24, canary 198.18.2.1).
    fn site_a() -> InboundFilter {
        InboundFilter::new(
            vec![prefix("198.18.1.0/24"), prefix("2001:db8:1::/48")],
            vec![prefix("198.18.2.0/24"), prefix("2001:db8:2::/48")],
            ip("198.18.2.1"),
            ip("198.18.1.1"),
        )
    }

    fn packet(src: &str, dst: &str) -> Classified {
        Classified::Whole {
            tuple: FiveTuple {
                src: ip(src),
                dst: ip(dst),
                src_port: 40000,
                dst_port: 443,
                proto: proto::TCP,
            },
            tcp_flags: 0,
        }
    }

    #[test]
    fn peer_to_local_passes_and_spoofs_are_refused_by_reason() {
        let f = site_a();
        assert_eq!(f.check(&packet("198.18.2.9", "198.18.1.7")), Verdict::Accept);
        assert_eq!(f.check(&packet("2001:db8:2::9", "2001:db8:1::7")), Verdict::Accept);
        // A LAN host forging a gateway's datagram with its own (or a local) inner source.
        for src in ["198.18.1.9", "10.0.0.1", "198.18.3.1", "2001:db8:1::9"] {
            let dst = if src.contains(':') {
                "2001:db8:1::7"
            } else {
                "198.18.1.7"
            };
            assert_eq!(
                f.check(&packet(src, dst)),
                Verdict::Drop(InnerDrop::SrcNotPeer),
                "{src}"
            );
        }
        assert_eq!(
            f.check(&packet("198.18.2.9", "198.18.2.7")),
            Verdict::Drop(InnerDrop::DstNotLocal)
        );
        assert_eq!(
            f.check(&packet("198.18.2.9", "8.8.8.8")),
            Verdict::Drop(InnerDrop::DstNotLocal)
        );
        // Later fragments carry addresses too.
        let frag = |src: &str| Classified::LaterFragment {
            frag: FragmentId {
                src: ip(src),
                dst: ip("198.18.1.7"),
                proto: proto::UDP,
                id: 1,
            },
        };
        assert_eq!(f.check(&frag("198.18.2.9")), Verdict::Accept);
        assert_eq!(f.check(&frag("198.18.1.9")), Verdict::Drop(InnerDrop::SrcNotPeer));
        assert_eq!(InnerDrop::SrcNotPeer.counter(), c::DROP_SRC_NOT_PEER);
        assert_eq!(InnerDrop::DstNotLocal.counter(), c::DROP_DST_NOT_LOCAL);
    }

    #[test]
    fn canaries_from_the_peer_demux_pass() {
        let f = site_a();
        let (local, peer) = (ip("198.18.1.1"), ip("198.18.2.1"));
        let mut ours = Canary::new(local, peer, &[1]);
        let mut theirs = Canary::new(peer, local, &[1]);
        let mut probe = [0u8; 128];
        let len = theirs.probe(1, 0, &mut probe);
        let class = classify(&probe[..len]).unwrap();
        assert_eq!(f.check(&class), Verdict::Accept);
        let mut reply = [0u8; 128];
        let Inbound::Reply { len } = ours.inbound(&probe[..len], 1, 1, 1_000, &mut reply) else {
            panic!("the probe is answered");
        };
        // Our reply, as the peer's filter sees it.
        let peer_filter = InboundFilter::new(
            vec![prefix("198.18.2.0/24")],
            vec![prefix("198.18.1.0/24")],
            local,
            peer,
        );
        assert_eq!(peer_filter.check(&classify(&reply[..len]).unwrap()), Verdict::Accept);
    }

    #[test]
    fn an_external_canary_outside_the_prefixes_is_for_the_canary_code_only() {
        // The external peer answers echo canaries from 192.0.2.10, outside its prefixes.
        let f = InboundFilter::new(
            vec![prefix("198.18.1.0/24")],
            vec![prefix("198.18.2.0/24")],
            ip("192.0.2.10"),
            ip("198.18.1.1"),
        );
        assert_eq!(
            f.check(&packet("192.0.2.10", "198.18.1.1")),
            Verdict::CanaryOnly(InnerDrop::SrcNotPeer)
        );
        assert_eq!(
            f.check(&packet("192.0.2.10", "198.18.1.2")),
            Verdict::Drop(InnerDrop::SrcNotPeer),
            "only to our canary address"
        );
        assert_eq!(
            f.check(&packet("192.0.2.11", "198.18.1.1")),
            Verdict::Drop(InnerDrop::SrcNotPeer)
        );
    }
}
