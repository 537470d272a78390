//! What a data thread decides about each packet, sans-IO.
//!
//! A [`Processor`] is one data thread's state — its flow table ([`Steering`]), its canaries,
//! the membership [`Snapshot`] it steers by, its counters — and the decisions made on it: a
//! packet buffer and `now` go in, a verdict comes out ([`OutboundVerdict`],
//! [`InboundVerdict`]). It opens no socket, reads no clock and allocates nothing, so the
//! tests drive it packet by packet; the thread's loop (`lane.rs`, `outbound.rs`, `inbound.rs`)
//! only moves buffers between system calls and the processor.
//!
//! Every packet is classified once ([`Processor::claim`]): the classification picks the
//! owner thread, then steers (outbound) or is checked and learnt (inbound). A packet whose flow
//! another thread owns is left untouched for the caller to hand over; nothing of it is learnt
//! or counted here except that it was read.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use braid_core::config::Prefix;
use braid_core::flow::{Classified, PairId};
use braid_core::wire::geneve::{self, GeneveRefusal};
use braid_core::wire::{self, WireError};

use super::filter::{InboundFilter, Verdict};
use super::{c, count_wire, ethertype_of, in_prefixes, owner_of, source_of, steer_drop_counter};
use super::{DemuxStats, Route, Snapshot, HEADROOM};
use crate::canary::{Canary, Inbound as CanaryVerdict};
use crate::offload::OffloadError;
use crate::steer::{FlowKey, Steering};

/// The site's rules every data thread applies.
#[derive(Debug)]
pub struct Rules {
    /// Sources the TUN may send from.
    pub local_prefixes: Vec<Prefix>,
    /// What inner packets from the gateways may carry.
    pub inbound_filter: InboundFilter,
    /// The tunnel MTU, which TCP's MSS is clamped to.
    pub mtu: u16,
}

/// What [`Processor::claim`] learnt of a packet: its classification and, if it has a
/// 5-tuple, its flow (hash and key). A packet handed to its owner carries it, so the owner
/// does not parse and hash the same bytes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub class: Classified,
    pub flow: Option<(u64, FlowKey)>,
}

/// Whether a packet is this thread's to process.
#[derive(Debug)]
pub enum Claim {
    /// Ours.
    Mine(Claimed),
    /// Thread `owner`'s (the first field).
    Theirs(usize, Claimed),
    /// Not a well-formed packet (not yet counted).
    Malformed(WireError),
}

impl Claim {
    /// What was learnt of a packet this thread claims, if it does.
    pub fn mine(self) -> Option<Claimed> {
        match self {
            Claim::Mine(claimed) => Some(claimed),
            Claim::Theirs(..) | Claim::Malformed(_) => None,
        }
    }
}

/// What to do with a packet read from the TUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundVerdict {
    /// Send it to this pair's gateway in GENEVE.
    Forward(Route),
    /// Thread `owner` owns its flow: hand it over untouched.
    HandOff(usize),
    /// Dropped, and counted under the reason.
    Dropped,
}

/// What to do with a GENEVE datagram (or, from another thread, its inner packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundVerdict {
    /// Write the inner packet, which starts at `inner_at`, to the TUN (its flow was learnt and
    /// its MSS clamped).
    Deliver { inner_at: usize },
    /// Thread `owner` owns its flow: hand it the inner packet (from `inner_at`), which came
    /// from pair `pair`, with what this thread learnt of it.
    HandOff {
        owner: usize,
        pair: PairId,
        inner_at: usize,
        claimed: Claimed,
    },
    /// A canary probe: send the `len`-byte GENEVE datagram written into the reply buffer back
    /// to the gateway it came from.
    Reply { len: usize },
    /// Not for the TUN (a canary reply, or dropped and counted under the reason).
    Consumed,
}

/// One data thread's state and decisions.
#[derive(Debug)]
pub struct Processor {
    id: usize,
    threads: usize,
    rules: Arc<Rules>,
    pub(super) steering: Steering,
    pub(super) canary: Canary,
    snapshot: Arc<Snapshot>,
    pub(super) stats: Arc<DemuxStats>,
}

impl Processor {
    /// Thread `id` of `threads`, steering by `snapshot`.
    pub fn new(
        id: usize,
        threads: usize,
        rules: Arc<Rules>,
        stats: Arc<DemuxStats>,
        steering: Steering,
        canary: Canary,
        snapshot: Arc<Snapshot>,
    ) -> Processor {
        stats
            .flow_capacity
            .store(steering.flow_capacity() as u64, Ordering::Relaxed);
        let mut processor = Processor {
            id,
            threads: threads.max(1),
            rules,
            steering,
            canary,
            snapshot: snapshot.clone(),
            stats,
        };
        processor.adopt(snapshot);
        processor
    }

    /// Starts steering by a new snapshot; pairs that joined get canaries. Pinned flows on
    /// pairs still serving stay put.
    pub fn adopt(&mut self, snapshot: Arc<Snapshot>) {
        self.steering.set_membership(snapshot.membership.clone());
        for pair in snapshot.gateways.pair_ids() {
            self.canary.add_pair(pair);
        }
        self.snapshot = snapshot;
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// This thread's counters.
    pub fn stats(&self) -> &DemuxStats {
        &self.stats
    }

    /// Whose packet this is: classifies it and, when `may_hand_off`, finds its owner. A later
    /// fragment (no 5-tuple) is everyone's.
    pub fn claim(&self, packet: &[u8], may_hand_off: bool) -> Claim {
        let class = match wire::classify(packet) {
            Ok(class) => class,
            Err(e) => return Claim::Malformed(e),
        };
        let claimed = Claimed {
            class,
            flow: self.steering.flow_of(&class),
        };
        if may_hand_off {
            if let Some(tuple) = class.tuple() {
                let owner = owner_of(tuple, self.threads);
                if owner != self.id {
                    return Claim::Theirs(owner, claimed);
                }
            }
        }
        Claim::Mine(claimed)
    }

    /// One ordinary packet read from the TUN: where it goes. A forwarded packet has had its
    /// MSS clamped. The caller has counted it as read.
    pub fn outbound(&mut self, packet: &mut [u8], may_hand_off: bool, now_ms: u64) -> OutboundVerdict {
        let Claimed { class, flow } = match self.claim(packet, may_hand_off) {
            Claim::Mine(claimed) => claimed,
            Claim::Theirs(owner, _) => return OutboundVerdict::HandOff(owner),
            Claim::Malformed(e) => {
                self.stats.tun_wire.inc(e.counter_index());
                return OutboundVerdict::Dropped;
            }
        };
        match self.route(&class, flow, now_ms, 1) {
            Some(route) => {
                if route.clamp {
                    self.clamp(packet);
                }
                OutboundVerdict::Forward(route)
            }
            None => OutboundVerdict::Dropped,
        }
    }

    /// Checks the source and steers one classified packet (or a super-packet standing for
    /// `packets` wire packets), counting them under the reason if they are dropped.
    pub fn route(
        &mut self,
        class: &Classified,
        flow: Option<(u64, FlowKey)>,
        now_ms: u64,
        packets: u64,
    ) -> Option<Route> {
        let stats = &*self.stats;
        let source = source_of(class);
        if !in_prefixes(&self.rules.local_prefixes, source) {
            // The kernel's own link-scoped chatter on the TUN (IPv6 router solicitations, MLD
            // reports from fe80::) is not site traffic: counted apart, not as a drop.
            let counter = if is_link_scoped(source) {
                c::TUN_RX_LINK_SCOPED
            } else {
                c::DROP_SRC_NOT_LOCAL
            };
            stats.counters.add(counter, packets);
            return None;
        }
        let pair = match self.steering.steer_flow(class, flow, now_ms) {
            Ok(steered) => {
                count_outcome(stats, &steered.outcome);
                steered.pair
            }
            Err(drop) => {
                stats.counters.add(steer_drop_counter(&drop), packets);
                return None;
            }
        };
        let Some(addr) = self.snapshot.gateways.by_pair(pair) else {
            stats.counters.add(c::DROP_NO_LIVE_PAIR, packets);
            return None;
        };
        Some(Route {
            addr,
            pair,
            ethertype: if source.is_ipv6() {
                geneve::ETHERTYPE_IPV6
            } else {
                geneve::ETHERTYPE_IPV4
            },
            clamp: is_syn(class),
        })
    }

    /// Clamps a TCP SYN's MSS to what the tunnel carries (callers skip every packet that is
    /// not a SYN: [`Route::clamp`]).
    pub fn clamp(&self, packet: &mut [u8]) {
        if matches!(wire::clamp_tcp_mss(packet, self.rules.mtu), Ok(true)) {
            self.stats.counters.inc(c::MSS_CLAMPED);
        }
    }

    /// Counts a packet of `len` bytes sent through `pair`.
    pub fn count_tx(&self, pair: PairId, len: usize) {
        let p = self.stats.pair(pair);
        p.tx_packets.fetch_add(1, Ordering::Relaxed);
        p.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Counts `packets` wire packets dropped for `e`.
    pub fn count_offload(&self, e: OffloadError, packets: u64) {
        match e.counter() {
            Ok(index) => self.stats.offload.add(index, packets),
            Err(wire) => self.stats.tun_wire.add(wire.counter_index(), packets),
        }
    }

    /// One GENEVE datagram received from `from`: checked against the gateway it claims to come
    /// from (a configured gateway, the VNI of that gateway's pair), then, if this thread owns
    /// its flow, [`Processor::inbound_inner`].
    pub fn inbound(
        &mut self,
        datagram: &mut [u8],
        from: SocketAddr,
        now_ms: u64,
        now_us: u64,
        may_hand_off: bool,
        reply: &mut [u8],
    ) -> InboundVerdict {
        let Some((pair, header_len)) = self.check_gateway(datagram, from) else {
            return InboundVerdict::Consumed;
        };
        let inner = &mut datagram[header_len..];
        let claimed = match self.claim(inner, may_hand_off) {
            Claim::Mine(claimed) => claimed,
            Claim::Theirs(owner, claimed) => {
                return InboundVerdict::HandOff {
                    owner,
                    pair,
                    inner_at: header_len,
                    claimed,
                }
            }
            Claim::Malformed(e) => {
                count_wire(&self.stats.lan_wire, e);
                return InboundVerdict::Consumed;
            }
        };
        match self.accept(inner, &claimed, pair, now_ms, now_us, reply) {
            InboundVerdict::Deliver { .. } => InboundVerdict::Deliver { inner_at: header_len },
            other => other,
        }
    }

    /// An inner packet from pair `pair` whose flow this thread owns, handed over by the thread
    /// that received it with what that thread learnt of these same bytes (`claimed`): checked,
    /// learnt and clamped like one received here.
    pub fn inbound_inner(
        &mut self,
        inner: &mut [u8],
        claimed: &Claimed,
        pair: PairId,
        now_ms: u64,
        now_us: u64,
        reply: &mut [u8],
    ) -> InboundVerdict {
        self.accept(inner, claimed, pair, now_ms, now_us, reply)
    }

    /// Writes a canary probe for `pair` into `out` (GENEVE header included) if this thread
    /// probes that pair — the one that owns the probe's flow, so the replies come back to it.
    /// Returns the datagram's length and the gateway to send it to.
    pub fn probe(&mut self, pair: PairId, now_ms: u64, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let owner = match self.canary.probe_tuple(pair) {
            Some(tuple) => owner_of(&tuple, self.threads),
            None => 0,
        };
        if owner != self.id || out.len() <= HEADROOM {
            return None;
        }
        let addr = self.snapshot.gateways.by_pair(pair)?;
        let len = self.canary.probe(pair, now_ms, &mut out[HEADROOM..]);
        if len == 0 {
            return None;
        }
        let ethertype = ethertype_of(&out[HEADROOM..HEADROOM + len]);
        geneve::write_header(&mut out[..HEADROOM], u32::from(pair), ethertype);
        Some((HEADROOM + len, addr))
    }

    /// Adds what the steering tables counted since the last call to the exported counters, and
    /// the flow table's occupancy.
    pub fn publish_counts(&mut self) {
        for (i, n) in self.steering.take_counts().into_iter().enumerate() {
            if n != 0 {
                self.stats.steering.add(i, n);
            }
        }
        self.stats
            .live_flows
            .store(self.steering.live_flows() as u64, Ordering::Relaxed);
    }

    /// A configured gateway's address, then GENEVE's one acceptance policy
    /// ([`geneve::accept_data`]: well-formed, not OAM, the VNI of that gateway's pair, an inner
    /// version that agrees with the protocol type): the pair and where the inner packet
    /// starts, or `None` (counted).
    fn check_gateway(&self, datagram: &[u8], from: SocketAddr) -> Option<(PairId, usize)> {
        let stats = &*self.stats;
        let Some(pair) = self.snapshot.gateways.by_addr(&from) else {
            stats.counters.inc(c::DROP_UNKNOWN_GATEWAY);
            return None;
        };
        match geneve::accept_data(datagram, u32::from(pair)) {
            Ok(data) => Some((pair, data.header_len)),
            Err(GeneveRefusal::Wire(e)) => {
                count_wire(&stats.lan_wire, e);
                None
            }
            Err(GeneveRefusal::Oam) => {
                stats.counters.inc(c::DROP_GENEVE_OAM);
                None
            }
            Err(GeneveRefusal::WrongVni) => {
                stats.counters.inc(c::DROP_VNI_MISMATCH);
                None
            }
        }
    }

    /// The owner's checks on an inner packet from pair `pair` — from the peer site to this
    /// one ([`super::filter`]) — answers it if it is a canary, else learns its flow's pair and
    /// clamps its MSS.
    fn accept(
        &mut self,
        inner: &mut [u8],
        claimed: &Claimed,
        pair: PairId,
        now_ms: u64,
        now_us: u64,
        reply: &mut [u8],
    ) -> InboundVerdict {
        let Claimed { ref class, flow } = *claimed;
        match self.rules.inbound_filter.check(class) {
            Verdict::Accept => {}
            Verdict::CanaryOnly(refused) => {
                let verdict = self.canary_verdict(inner, class, pair, now_ms, now_us, reply);
                if verdict.is_none() {
                    self.stats.counters.inc(refused.counter());
                }
                return verdict.unwrap_or(InboundVerdict::Consumed);
            }
            Verdict::Drop(refused) => {
                self.stats.counters.inc(refused.counter());
                return InboundVerdict::Consumed;
            }
        }
        if let Some(verdict) = self.canary_verdict(inner, class, pair, now_ms, now_us, reply) {
            return verdict;
        }
        self.steering.learn_flow(class, flow, pair, now_ms);
        if is_syn(class) {
            self.clamp(inner);
        }
        let p = self.stats.pair(pair);
        p.rx_packets.fetch_add(1, Ordering::Relaxed);
        p.rx_bytes.fetch_add(inner.len() as u64, Ordering::Relaxed);
        InboundVerdict::Deliver { inner_at: 0 }
    }

    /// A canary (see [`crate::canary`]): a probe from the peer demux becomes a reply through
    /// the same pair, written into `reply` behind its GENEVE header; a reply to our probe is
    /// recorded. `None` if `inner` is not a canary.
    fn canary_verdict(
        &mut self,
        inner: &[u8],
        class: &Classified,
        pair: PairId,
        now_ms: u64,
        now_us: u64,
        reply: &mut [u8],
    ) -> Option<InboundVerdict> {
        if reply.len() <= HEADROOM || !self.canary.may_carry(class) {
            return None;
        }
        match self.canary.inbound(inner, pair, now_ms, now_us, &mut reply[HEADROOM..]) {
            CanaryVerdict::NotCanary => None,
            CanaryVerdict::Consumed => Some(InboundVerdict::Consumed),
            CanaryVerdict::Reply { len } => {
                let ethertype = ethertype_of(&reply[HEADROOM..HEADROOM + len]);
                geneve::write_header(&mut reply[..HEADROOM], u32::from(pair), ethertype);
                Some(InboundVerdict::Reply { len: HEADROOM + len })
            }
        }
    }
}

/// Whether `class` is a TCP segment with SYN set (a SYN or a SYN-ACK).
fn is_syn(class: &Classified) -> bool {
    match *class {
        Classified::Whole { tuple, tcp_flags } | Classified::FirstFragment { tuple, tcp_flags, .. } => {
            tuple.proto == braid_core::flow::proto::TCP && tcp_flags & braid_core::flow::tcp_flags::SYN != 0
        }
        Classified::LaterFragment { .. } => false,
    }
}

fn count_outcome(stats: &DemuxStats, outcome: &crate::steer::Outcome) {
    use crate::steer::Outcome;
    match outcome {
        Outcome::Moved => stats.counters.inc(c::FLOWS_MOVED),
        Outcome::Unpinned => stats.counters.inc(c::FLOWS_UNPINNED),
        _ => {}
    }
}

/// Whether `addr` is an IPv6 link-local, or unspecified, source: traffic the kernel originates on
/// any interface that has IPv6, never meant for the other site.
fn is_link_scoped(addr: std::net::IpAddr) -> bool {
    match addr {
        std::net::IpAddr::V6(a) => a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80,
        std::net::IpAddr::V4(a) => a.is_unspecified() || a.is_link_local(),
    }
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
