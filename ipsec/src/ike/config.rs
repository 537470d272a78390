//! What one IKE peer engine is configured with.

use std::net::SocketAddr;
use std::time::Duration;

use super::crypto::Secret;
use super::wire::{Identification, TrafficSelector};
use crate::proposal::{EspProposal, IkeProposal};

/// One peer's IKE configuration: who we are, who the peer is, how we prove it, what we offer.
#[derive(Clone, Debug)]
pub struct IkeConfig {
    /// Our IKE endpoint (for NAT detection hashes).
    pub local_addr: SocketAddr,
    /// The peer's IKE endpoint: where we initiate to.
    pub remote_addr: SocketAddr,
    pub local_id: Identification,
    /// The identity the peer must authenticate as.
    pub remote_id: Identification,
    /// The pre-shared key, byte for byte.
    pub psk: Secret,
    /// Most preferred first.
    pub ike_proposals: Vec<IkeProposal>,
    pub esp_proposals: Vec<EspProposal>,
    /// Our site's prefixes (TSi when we initiate).
    pub local_ts: Vec<TrafficSelector>,
    /// The peer site's prefixes.
    pub remote_ts: Vec<TrafficSelector>,
    /// IKE SAs are rekeyed before this age.
    pub ike_lifetime: Duration,
    /// CHILD SAs are rekeyed before this age.
    pub child_lifetime: Duration,
    /// With nothing heard from the peer for this long, check that it is alive.
    pub liveness: Duration,
    /// The anti-replay window of every inbound ESP SA, in packets.
    pub replay_window: u32,
    /// Whether this side sets up the IKE SA (at start, and again whenever none is up).
    pub initiate: bool,
    /// When both sides initiate at once, the preferred side's attempt wins and the other
    /// answers it. Exactly one side of a pair must be preferred; it also rekeys earlier, so
    /// the two sides' rekeys do not collide.
    pub preferred: bool,
}

/// How a rekey time is chosen within a lifetime, as fractions in per mille: the preferred side
/// rekeys between 80 % and 88 %, the other between 90 % and 97 %.
pub(crate) fn rekey_fraction(preferred: bool, random: u16) -> u32 {
    let (low, span) = if preferred { (800, 80) } else { (900, 70) };
    low + u32::from(random) % span
}
