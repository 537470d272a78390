//! The demux data path: two dedicated threads around one shared [`Steering`].
//!
//! * **outbound** (TUN → gateways): classifies, steers, clamps the TCP MSS, writes the GENEVE
//!   header and sends the batch with one `sendmmsg`. Plain TUN: packets are read straight into
//!   the payload slot of a [`SendBatch`] buffer (after room for the GENEVE header, so nothing is
//!   copied). Offload TUN ([`crate::offload`]): a read may return a TCP super-packet into a
//!   64 KiB scratch buffer; it is steered once (all its segments are one flow; a SYN, the only
//!   packet whose MSS is clamped, is never one) and segmented straight into the send slots,
//!   flushing whenever the batch fills. An ordinary packet gets its checksum completed and is
//!   copied into a slot.
//! * **inbound** (gateways → TUN): receives a batch with one `recvmmsg`, accepts GENEVE only from
//!   this site's configured gateways with the VNI of that gateway's pair and an inner packet from
//!   the peer site's prefixes to this site's ([`filter`]), learns the pair for the
//!   flow (so this site's replies use the pair the other site chose), clamps the MSS and writes
//!   the inner packet to the TUN; on an offload TUN the batch's TCP segments are first coalesced
//!   per flow into super-packets, so one write carries a whole run.
//!
//! Counters count wire packets: a super-packet adds its segment count to `tun_rx_packets` /
//! `tun_tx_packets` (and to a drop counter if it is dropped) and one to
//! `tun_rx_super_packets` / `tun_tx_super_packets`. Both threads poll only when idle: after a
//! read or receive that filled the batch they go straight back for more.
//!
//! The steering state, the gateway map and the canary state are shared behind one mutex
//! ([`Shared`]) taken once per batch, not per packet; the control thread takes it to apply a
//! membership push or read per-pair figures. Every
//! packet that is not forwarded is counted under the reason why. Neither thread allocates per
//!
//! Files: [`stats`] (counters), [`gateways`] (pair ↔ gateway address), `outbound.rs` and
//! `inbound.rs` (the two threads).

pub mod filter;
mod gateways;
mod inbound;
mod outbound;
mod stats;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use braid_core::config::Prefix;
use braid_core::counters::CounterSet;
use braid_core::daemon::StopFlag;
use braid_core::flow::{Classified, PairId};
use braid_core::wire::{geneve, WireError};

use braid_core::control::PairReport;

use crate::canary::Canary;
use crate::steer::Steering;
use crate::tun::Tun;

pub use filter::InboundFilter;
pub use gateways::GatewayMap;
pub use stats::{c, DemuxStats, PairCounters, DEMUX_COUNTERS};

/// Packets per batch on both threads.
pub const BATCH: usize = 64;
/// Room for the GENEVE header in front of a packet read from the TUN.
const HEADROOM: usize = geneve::GENEVE_HEADER_LEN;
/// How often a canary probe goes through every pair.
pub const CANARY_INTERVAL_MS: u64 = 100;

/// What the data threads and the control thread share, behind one mutex.
#[derive(Debug)]
pub struct Shared {
    pub steering: Steering,
    pub gateways: GatewayMap,
    pub canary: Canary,
    /// The membership epoch in force (0: the configuration's static membership).
    pub epoch: u64,
}

/// What both data threads need.
#[derive(Debug)]
pub struct DataPath {
    pub tun: Arc<Tun>,
    pub socket: Arc<UdpSocket>,
    pub shared: Arc<Mutex<Shared>>,
    pub local_prefixes: Vec<Prefix>,
    /// What inner packets from the gateways may carry.
    pub inbound_filter: InboundFilter,
    pub mtu: u16,
    pub stats: Arc<DemuxStats>,
    pub stop: StopFlag,
    pub epoch: Instant,
}

impl Shared {
    /// Every known pair's figures (traffic from `stats`, pinned flows from the flow table's
    /// last census, canary results).
    pub fn views(&self, stats: &DemuxStats) -> Vec<PairReport> {
        let pinned = self.steering.flows().pinned_per_pair();
        self.gateways
            .pair_ids()
            .into_iter()
            .map(|id| {
                let t = stats.pair(id);
                let canary = self.canary.pair(id).copied().unwrap_or_default();
                PairReport {
                    id,
                    tx_packets: t.tx_packets.load(Ordering::Relaxed),
                    tx_bytes: t.tx_bytes.load(Ordering::Relaxed),
                    rx_packets: t.rx_packets.load(Ordering::Relaxed),
                    rx_bytes: t.rx_bytes.load(Ordering::Relaxed),
                    pinned_flows: pinned.get(usize::from(id)).copied().map(u64::from).unwrap_or(0),
                    canary_sent: canary.sent,
                    canary_answered: canary.answered,
                    canary_lost: canary.lost,
                    canary_rtt_us: canary.last_rtt_us,
                }
            })
            .collect()
    }
}

impl DataPath {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds what the steering tables counted since the last call to the exported counters.
    fn publish_counts(&self, steering: &mut Steering) {
        for (i, n) in steering.take_counts().into_iter().enumerate() {
            if n != 0 {
                self.stats.steering.add(i, n);
            }
        }
    }
}

pub(crate) fn in_prefixes(prefixes: &[Prefix], addr: std::net::IpAddr) -> bool {
    prefixes.iter().any(|p| p.contains(addr))
}

pub(crate) fn source_of(c: &Classified) -> std::net::IpAddr {
    match c {
        Classified::Whole { tuple, .. } | Classified::FirstFragment { tuple, .. } => tuple.src,
        Classified::LaterFragment { frag } => frag.src,
    }
}

pub(crate) fn destination_of(c: &Classified) -> std::net::IpAddr {
    match c {
        Classified::Whole { tuple, .. } | Classified::FirstFragment { tuple, .. } => tuple.dst,
        Classified::LaterFragment { frag } => frag.dst,
    }
}

pub(crate) fn count_wire(set: &CounterSet, e: WireError) {
    set.inc(e.counter_index());
}

pub(crate) fn ethertype_of(packet: &[u8]) -> u16 {
    if packet.first().map(|b| b >> 4) == Some(6) {
        geneve::ETHERTYPE_IPV6
    } else {
        geneve::ETHERTYPE_IPV4
    }
}

/// Where one outbound packet goes.
#[derive(Clone, Copy)]
pub(crate) struct Route {
    addr: SocketAddr,
    pair: PairId,
    ethertype: u16,
}

pub(crate) fn steer_drop_counter(drop: &crate::steer::SteerDrop) -> usize {
    use crate::steer::SteerDrop;
    match drop {
        SteerDrop::NoLivePair => c::DROP_NO_LIVE_PAIR,
    }
}
