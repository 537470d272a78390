//! The demux's counters: one per reason a packet is not forwarded, one per limit at work (the
//! steering tables' [`STEER_COUNTERS`]), traffic per pair. All of them appear in the status
//! file and, by name, in every heartbeat to the controller.
//!
//! Each data thread counts into its own [`DemuxStats`] (no cache line is written by two
//! threads); [`StatsSet`] sums them when they are read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use braid_core::control::PairReport;
use braid_core::counters::CounterSet;
use braid_core::flow::PairId;
use braid_core::wire::WIRE_DROP_COUNTERS;

use crate::offload::OFFLOAD_DROP_COUNTERS;
use crate::steer::STEER_COUNTERS;

/// Demux counters, indexed by the constants in [`c`].
pub const DEMUX_COUNTERS: &[&str] = &[
    "tun_rx_packets",
    "tun_rx_bytes",
    "geneve_tx_packets",
    "geneve_rx_packets",
    "tun_tx_packets",
    "tun_tx_bytes",
    "mss_clamped",
    "flows_moved",
    "flows_unpinned_table_full",
    "drop_no_live_pair",
    "drop_src_not_peer_site",
    "drop_src_not_local_site",
    "drop_dst_not_local_site",
    "drop_oversize",
    "drop_unknown_gateway",
    "drop_vni_mismatch",
    "drop_geneve_send",
    "drop_tun_write",
    "tun_rx_super_packets",
    "tun_tx_super_packets",
    "tun_rx_link_scoped",
    "handed_off_packets",
    "drop_handoff_no_buffer",
    "drop_handoff_inbox_full",
    "drop_geneve_oam",
    "handed_off_from_tun_packets",
    "drop_geneve_socket_full",
];

/// Indices into [`DEMUX_COUNTERS`].
pub mod c {
    pub const TUN_RX_PACKETS: usize = 0;
    pub const TUN_RX_BYTES: usize = 1;
    pub const GENEVE_TX_PACKETS: usize = 2;
    pub const GENEVE_RX_PACKETS: usize = 3;
    pub const TUN_TX_PACKETS: usize = 4;
    pub const TUN_TX_BYTES: usize = 5;
    pub const MSS_CLAMPED: usize = 6;
    pub const FLOWS_MOVED: usize = 7;
    pub const FLOWS_UNPINNED: usize = 8;
    pub const DROP_NO_LIVE_PAIR: usize = 9;
    /// From a gateway: the inner source is not in the peer site's prefixes.
    pub const DROP_SRC_NOT_PEER: usize = 10;
    pub const DROP_SRC_NOT_LOCAL: usize = 11;
    pub const DROP_DST_NOT_LOCAL: usize = 12;
    pub const DROP_OVERSIZE: usize = 13;
    pub const DROP_UNKNOWN_GATEWAY: usize = 14;
    pub const DROP_VNI_MISMATCH: usize = 15;
    pub const DROP_GENEVE_SEND: usize = 16;
    pub const DROP_TUN_WRITE: usize = 17;
    pub const TUN_RX_SUPER_PACKETS: usize = 18;
    pub const TUN_TX_SUPER_PACKETS: usize = 19;
    pub const TUN_RX_LINK_SCOPED: usize = 20;
    /// Read by one data thread, handed to the thread that owns its flow.
    pub const HANDED_OFF: usize = 21;
    /// Shed at the reading thread: its handoff buffers were all in flight.
    pub const DROP_HANDOFF_NO_BUFFER: usize = 22;
    /// Shed at the reading thread: the owner's inbox was full.
    pub const DROP_HANDOFF_INBOX_FULL: usize = 23;
    /// From a gateway: a GENEVE control (OAM) packet.
    pub const DROP_GENEVE_OAM: usize = 24;
    /// The part of [`HANDED_OFF`] read from the TUN: what kernel steering did not place on the
    /// owner's queue.
    pub const HANDED_OFF_FROM_TUN: usize = 25;
    /// GENEVE the kernel dropped on arrival because this demux's socket receive buffer was
    /// full: the data threads fell behind the gateways. Counted in kernel messages (a GRO
    /// train of up to 64 datagrams counts once), read every canary interval.
    pub const DROP_GENEVE_SOCKET_FULL: usize = 26;
}

/// Pair ids are 1..=4095 (the configuration's rule; they are also 12-bit-safe GENEVE VNIs).
const PAIR_IDS: usize = 4096;

/// Traffic counters of one gateway pair, as seen by this demux.
#[derive(Debug, Default)]
pub struct PairCounters {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
}

/// Everything the data threads share with the reporter.
#[derive(Debug)]
pub struct DemuxStats {
    pub counters: CounterSet,
    /// Malformed packets read from the TUN, by reason.
    pub tun_wire: CounterSet,
    /// Malformed GENEVE or inner packets received from gateways, by reason.
    pub lan_wire: CounterSet,
    /// TUN offload drops, by reason ([`OFFLOAD_DROP_COUNTERS`]).
    pub offload: CounterSet,
    /// Flow-table and fragment-cache limits at work ([`STEER_COUNTERS`]).
    pub steering: CounterSet,
    /// Traffic per pair, indexed by pair id (every possible id, so pairs that join online
    /// need no reallocation).
    pairs: Box<[PairCounters]>,
    pub live_flows: AtomicU64,
    /// The flows this thread's flow table is sized for.
    pub flow_capacity: AtomicU64,
}

impl Default for DemuxStats {
    fn default() -> Self {
        Self::new()
    }
}

impl DemuxStats {
    pub fn new() -> Self {
        DemuxStats {
            counters: CounterSet::new(DEMUX_COUNTERS),
            tun_wire: CounterSet::new(WIRE_DROP_COUNTERS),
            lan_wire: CounterSet::new(WIRE_DROP_COUNTERS),
            offload: CounterSet::new(OFFLOAD_DROP_COUNTERS),
            steering: CounterSet::new(&STEER_COUNTERS),
            pairs: (0..PAIR_IDS).map(|_| PairCounters::default()).collect(),
            live_flows: AtomicU64::new(0),
            flow_capacity: AtomicU64::new(0),
        }
    }

    /// The traffic counters of pair `id` (ids are 1..=4095).
    #[inline]
    pub fn pair(&self, id: PairId) -> &PairCounters {
        &self.pairs[usize::from(id) % self.pairs.len()]
    }

    /// Every counter, drops of all kinds included, in one map (wire drops suffixed `_tun` /
    /// `_lan` by where they were seen).
    fn counters_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = match self.counters.to_json() {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        for (suffix, set) in [("tun", &self.tun_wire), ("lan", &self.lan_wire)] {
            for (name, value) in set.snapshot() {
                map.insert(format!("{name}_{suffix}"), value.into());
            }
        }
        for (name, value) in self.offload.snapshot().into_iter().chain(self.steering.snapshot()) {
            map.insert(name.to_string(), value.into());
        }
        map
    }
}

/// Traffic of one pair, summed over the data threads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PairTotals {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

/// Every data thread's counters, summed when read.
#[derive(Debug)]
pub struct StatsSet {
    threads: Vec<Arc<DemuxStats>>,
    /// Packets the kernel dropped because the TUN's queues were full (the demux did not read
    /// them in time): shed at the demux's ingress. Set by whoever reads the interface's
    /// statistics, exported as `drop_tun_queue_full`.
    pub tun_queue_drops: AtomicU64,
}

impl StatsSet {
    /// Counters for `threads` data threads.
    pub fn new(threads: usize) -> StatsSet {
        StatsSet {
            threads: (0..threads.max(1)).map(|_| Arc::new(DemuxStats::new())).collect(),
            tun_queue_drops: AtomicU64::new(0),
        }
    }

    /// Thread `i`'s counters.
    pub fn thread(&self, i: usize) -> &Arc<DemuxStats> {
        &self.threads[i]
    }

    /// Demux counter `index` ([`c`]) summed over the threads.
    pub fn get(&self, index: usize) -> u64 {
        self.threads.iter().map(|t| t.counters.get(index)).sum()
    }

    /// Pair `id`'s traffic summed over the threads.
    pub fn pair(&self, id: PairId) -> PairTotals {
        let mut sum = PairTotals::default();
        for t in &self.threads {
            let p = t.pair(id);
            sum.tx_packets += p.tx_packets.load(Ordering::Relaxed);
            sum.tx_bytes += p.tx_bytes.load(Ordering::Relaxed);
            sum.rx_packets += p.rx_packets.load(Ordering::Relaxed);
            sum.rx_bytes += p.rx_bytes.load(Ordering::Relaxed);
        }
        sum
    }

    /// Flow-table slots in use, over all threads.
    pub fn live_flows(&self) -> u64 {
        self.threads.iter().map(|t| t.live_flows.load(Ordering::Relaxed)).sum()
    }

    /// The flows the flow tables are sized for, over all threads.
    pub fn flow_capacity(&self) -> u64 {
        self.threads
            .iter()
            .map(|t| t.flow_capacity.load(Ordering::Relaxed))
            .sum()
    }

    /// Every counter, drops of all kinds included, in one map (wire drops suffixed `_tun` /
    /// `_lan` by where they were seen), summed over the threads.
    pub fn counters_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut sum = serde_json::Map::new();
        for t in &self.threads {
            for (name, value) in t.counters_json() {
                let add = value.as_u64().unwrap_or(0);
                let total = sum.get(&name).and_then(|v| v.as_u64()).unwrap_or(0) + add;
                sum.insert(name, total.into());
            }
        }
        sum.insert(
            "drop_tun_queue_full".into(),
            self.tun_queue_drops.load(Ordering::Relaxed).into(),
        );
        sum
    }

    /// Packets dropped for any reason.
    pub fn total_drops(&self) -> u64 {
        self.counters_json()
            .iter()
            .filter(|(name, _)| name.starts_with("drop_"))
            .filter_map(|(_, v)| v.as_u64())
            .sum()
    }

    /// The status JSON: every counter, per-pair figures, live flows, per-thread figures.
    pub fn to_json(&self, pairs: &[PairReport]) -> serde_json::Value {
        let pairs: Vec<serde_json::Value> = pairs
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.id,
                    "tx_packets": p.tx_packets,
                    "tx_bytes": p.tx_bytes,
                    "rx_packets": p.rx_packets,
                    "rx_bytes": p.rx_bytes,
                    "pinned_flows": p.pinned_flows,
                    "canary_sent": p.canary_sent,
                    "canary_answered": p.canary_answered,
                    "canary_lost": p.canary_lost,
                    "canary_rtt_us": p.canary_rtt_us,
                })
            })
            .collect();
        serde_json::json!({
            "counters": self.counters_json(),
            "pairs": pairs,
            "flows": self.live_flows(),
            "flow_capacity": self.flow_capacity(),
            "threads": self.per_thread_json(),
        })
    }

    /// What each data thread did, in thread order: how the work is spread, and how much of it
    /// crossed between threads.
    fn per_thread_json(&self) -> Vec<serde_json::Value> {
        self.threads
            .iter()
            .map(|t| {
                serde_json::json!({
                    "tun_rx_packets": t.counters.get(c::TUN_RX_PACKETS),
                    "geneve_rx_packets": t.counters.get(c::GENEVE_RX_PACKETS),
                    "tun_tx_packets": t.counters.get(c::TUN_TX_PACKETS),
                    "handed_off_packets": t.counters.get(c::HANDED_OFF),
                    "flows": t.live_flows.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}
