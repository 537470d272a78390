//! The demux data path: N data threads, each a complete demux for the flows it owns.
//!
//! ## Threads and ownership
//!
//! The TUN is opened multi-queue and every data thread owns one queue of it, one GENEVE socket
//! (all bound to the same address with `SO_REUSEPORT`), its own flow table and its own
//! counters. Every flow has one owner, picked from its 5-tuple ([`owner_of`]), and only
//! the owner steers it, learns it and writes it to the TUN; a thread that reads a packet of a
//! flow it does not own hands it over ([`handoff`]) before touching any state. The kernel runs
//! the same owner function ([`braid_sys::steer`]) to pick the TUN queue of every packet the
//! site sends, so on that side a handoff is the exception (a packet the program places
//! differently, such as one with IPv6 extension headers, or a kernel that refused the
//! program); what comes back from the gateways is spread over the sockets by gateway, and about
//! half of it is handed over. So the flow table is consistent for both directions of a flow
//! with no lock, and a flow keeps one path through the demux (its owner) whichever queue or
//! socket the kernel delivers it on. Later
//! fragments (no 5-tuple) are handled where they are read: the fragment cache is the one
//! table the threads share, behind a mutex taken for fragments only.
//!
//! Membership and the gateway map are an immutable [`Snapshot`] the control thread swaps
//! atomically; a thread loads it once per round. Counters are per thread and summed when read
//! ([`StatsSet`]); the flow-table census and canary results are published per thread every
//! 100 ms ([`Published`]) through a mutex the data thread only ever `try_lock`s.
//!
//! ## One round of a data thread
//!
//! * **outbound** (TUN → gateways): up to [`BATCH`] reads from its queue. Plain TUN: packets are
//!   read straight into the payload slot of a [`braid_core::udp::SendBatch`] buffer (after room
//!   for the GENEVE header, so nothing is copied). Offload TUN ([`crate::offload`]): a read may
//!   return a TCP super-packet into a 64 KiB scratch buffer; it is steered once (all its
//!   segments are one flow; a SYN, the only packet whose MSS is clamped, is never one) and
//!   segmented straight into the send slots, flushing whenever the batch fills. An ordinary
//!   packet gets its checksum completed and is copied into a slot. Each packet is classified
//!   once; the classification picks the owner and then steers it.
//! * **inbound** (gateways → TUN): one `recvmmsg` batch; GENEVE is accepted only from this
//!   site's configured gateways with the VNI of that gateway's pair, with an inner packet from
//!   the peer site's prefixes to this site's ([`filter`]); the owner learns the pair for the
//!   flow (so this site's replies use the pair the other site chose), clamps the MSS and writes
//!   the inner packet to the TUN; on an offload TUN the batch's TCP segments are first
//!   coalesced per flow into super-packets, so one write carries a whole run.
//! * **handed-off** packets from the other threads' readers, then one `sendmmsg` for everything
//!   bound for the gateways.
//!
//! A thread sleeps in `poll` (its queue, its socket, its wake-up eventfd) only after a round
//! found nothing to do and its busy-poll budget ([`DataPath::busy_poll`], none by default) is
//! spent; a round that filled a batch goes straight back for more. The round after a sleep
//! reads only what `poll` found readable, so a quiet side costs no system call.
//!
//! Counters count wire packets: a super-packet adds its segment count to `tun_rx_packets` /
//! `tun_tx_packets` (and to a drop counter if it is dropped) and one to
//! `tun_rx_super_packets` / `tun_tx_super_packets`. Every packet that is not forwarded is
//! counted under the reason why, including what the kernel dropped at a thread's full socket
//! (`drop_geneve_socket_full`, read every canary interval). No data thread allocates per packet
//! or takes a lock on the per-packet path; unit tests count the heap allocations of every
//! processor verdict, of the handoff and of coalescing and segmenting, and require none
//! (`processor_alloc_tests.rs`, `offload/alloc_tests.rs`).
//!
//! Files: [`processor`] (every decision, sans-IO), [`stats`] (counters), [`gateways`] (pair ↔
//! gateway address), [`snapshot`], [`handoff`], `lane.rs` (one thread's loop), `outbound.rs`
//! and `inbound.rs` (its system calls).

pub mod filter;
mod gateways;
pub mod handoff;
mod inbound;
mod lane;
mod outbound;
#[cfg(test)]
mod owner_tests;
pub mod processor;
pub mod snapshot;
mod stats;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use braid_core::config::Prefix;
use braid_core::control::PairReport;
use braid_core::counters::CounterSet;
use braid_core::daemon::StopFlag;
use braid_core::flow::{proto, Classified, FiveTuple, PairId};
use braid_core::service::Progress;
use braid_core::wire::{geneve, WireError};
use braid_sys::steer::OWNER_MIX;

use crate::canary::PairCanary;

pub use filter::InboundFilter;
pub use gateways::GatewayMap;
pub use handoff::{Mesh, MeshSizes};
pub use lane::{Lane, LaneIo};
pub use processor::{InboundVerdict, OutboundVerdict, Processor, Rules};
pub use snapshot::{Snapshot, SnapshotCell};
pub use stats::{c, DemuxStats, PairCounters, StatsSet, DEMUX_COUNTERS};

/// Packets per batch, in every direction.
pub const BATCH: usize = 64;
/// Room for the GENEVE header in front of a packet read from the TUN.
const HEADROOM: usize = geneve::GENEVE_HEADER_LEN;
/// How often a canary probe goes through every pair, and how often each thread publishes its
/// census and canary results.
pub const CANARY_INTERVAL_MS: u64 = 100;

/// The owner thread of a flow, out of `threads`: the function the kernel runs to steer packets
/// ([`braid_sys::steer`]), so a flow's packets are read by its owner whenever the kernel
/// steers them. The 32-bit words of both addresses and, for TCP and UDP, `source port ^
/// destination port` are xored (so both directions of a flow agree), multiplied by
/// [`OWNER_MIX`], and the top 16 bits taken modulo `threads`.
///
/// It is not keyed: someone choosing both ends of many flows can make them share one thread,
/// which costs that thread's share of the work and nothing else (which *pair* a flow takes is
/// still decided by the keyed flow hash, like a NIC's receive-side scaling with a known key).
#[inline]
pub fn owner_of(tuple: &FiveTuple, threads: usize) -> usize {
    let mut folded = fold_address(tuple.src) ^ fold_address(tuple.dst);
    if matches!(tuple.proto, proto::TCP | proto::UDP) {
        folded ^= u32::from(tuple.src_port ^ tuple.dst_port);
    }
    (folded.wrapping_mul(OWNER_MIX) >> 16) as usize % threads.max(1)
}

fn fold_address(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => v6
            .octets()
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .fold(0, |a, w| a ^ w),
    }
}

/// What one data thread publishes for the control thread, every [`CANARY_INTERVAL_MS`].
#[derive(Debug, Default, Clone)]
pub struct Published {
    /// Canary results of the pairs this thread probes.
    pub canary: Vec<(PairId, PairCanary)>,
    /// Pinned flows per pair id, from this thread's last flow-table census.
    pub pinned: Vec<u32>,
}

/// What every data thread shares: configuration, the membership snapshot, the handoff mesh,
/// and each thread's counters and published figures (indexed by thread).
#[derive(Debug)]
pub struct DataPath {
    pub snapshot: Arc<SnapshotCell>,
    pub mesh: Mesh,
    pub rules: Arc<Rules>,
    pub stats: StatsSet,
    pub published: Vec<Mutex<Published>>,
    /// Each thread's progress marker, marked every [`CANARY_INTERVAL_MS`] (the watchdog reads
    /// them).
    pub progress: Vec<Progress>,
    /// How long an idle data thread keeps polling its queue, socket and inbox without
    /// sleeping (zero: it sleeps in `poll` at once). Spinning trades a core for latency and
    /// wake-ups.
    pub busy_poll: std::time::Duration,
    /// Whether inbound UDP datagrams of one flow are written to the (offload) TUN as one
    /// super-packet ([`crate::offload::coalesce`]).
    pub udp_coalescing: bool,
    pub stop: StopFlag,
    pub epoch: Instant,
}

impl DataPath {
    /// Every known pair's figures: traffic summed over the threads, pinned flows from each
    /// thread's last census, canary results from the thread that probes the pair.
    pub fn views(&self) -> Vec<PairReport> {
        let snapshot = self.snapshot.load();
        let published: Vec<Published> = self
            .published
            .iter()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        snapshot
            .gateways
            .pair_ids()
            .into_iter()
            .map(|id| {
                let traffic = self.stats.pair(id);
                let pinned: u64 = published
                    .iter()
                    .filter_map(|p| p.pinned.get(usize::from(id)))
                    .map(|n| u64::from(*n))
                    .sum();
                let canary = published
                    .iter()
                    .flat_map(|p| p.canary.iter())
                    .filter(|(pair, c)| *pair == id && c.sent > 0)
                    .map(|(_, c)| *c)
                    .next()
                    .unwrap_or_default();
                PairReport {
                    id,
                    tx_packets: traffic.tx_packets,
                    tx_bytes: traffic.tx_bytes,
                    rx_packets: traffic.rx_packets,
                    rx_bytes: traffic.rx_bytes,
                    pinned_flows: pinned,
                    canary_sent: canary.sent,
                    canary_answered: canary.answered,
                    canary_lost: canary.lost,
                    canary_rtt_us: canary.last_rtt_us,
                }
            })
            .collect()
    }

    /// The membership epoch in force.
    pub fn epoch(&self) -> u64 {
        self.snapshot.load().epoch
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub addr: SocketAddr,
    pub pair: PairId,
    pub ethertype: u16,
    /// A TCP SYN (or SYN-ACK): its MSS option is clamped to the tunnel MTU. No other packet
    /// is parsed for it.
    pub clamp: bool,
}

pub(crate) fn steer_drop_counter(drop: &crate::steer::SteerDrop) -> usize {
    use crate::steer::SteerDrop;
    match drop {
        SteerDrop::NoLivePair => c::DROP_NO_LIVE_PAIR,
    }
}
