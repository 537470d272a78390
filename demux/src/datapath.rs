//! The demux data path: two dedicated threads around one shared [`Steering`].
//!
//! * **outbound** (TUN → gateways): reads packets straight into the payload slot of a
//!   [`SendBatch`] buffer (after room for the GENEVE header, so nothing is copied), classifies,
//!   steers, clamps the TCP MSS, writes the GENEVE header and sends the batch with one
//!   `sendmmsg`.
//! * **inbound** (gateways → TUN): receives a batch with one `recvmmsg`, accepts GENEVE only from
//!   this site's configured gateways with the VNI of that gateway's pair, learns the pair for the
//!   flow (so this site's replies use the pair the other site chose), clamps the MSS and writes
//!   the inner packet to the TUN.
//!
//! The steering state is shared behind one mutex taken once per batch, not per packet. Every
//! packet that is not forwarded is counted under the reason why. Neither thread allocates per
//! packet or touches an async runtime; both wake at least every 100 ms to notice a stop request.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use braid_core::config::Prefix;
use braid_core::counters::CounterSet;
use braid_core::daemon::StopFlag;
use braid_core::flow::{Classified, PairId};
use braid_core::udp::{RecvBatch, SendBatch};
use braid_core::wire::{self, geneve, WireError, WIRE_DROP_COUNTERS};

use crate::steer::Steering;
use crate::tun::{wait_readable, Tun};

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
    "drop_fragment_without_head",
    "drop_src_not_local_site",
    "drop_dst_not_local_site",
    "drop_oversize",
    "drop_unknown_gateway",
    "drop_vni_mismatch",
    "drop_geneve_send",
    "drop_tun_write",
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
    pub const DROP_FRAGMENT_WITHOUT_HEAD: usize = 10;
    pub const DROP_SRC_NOT_LOCAL: usize = 11;
    pub const DROP_DST_NOT_LOCAL: usize = 12;
    pub const DROP_OVERSIZE: usize = 13;
    pub const DROP_UNKNOWN_GATEWAY: usize = 14;
    pub const DROP_VNI_MISMATCH: usize = 15;
    pub const DROP_GENEVE_SEND: usize = 16;
    pub const DROP_TUN_WRITE: usize = 17;
}

/// Packets per batch on both threads.
pub const BATCH: usize = 64;
/// Room for the GENEVE header in front of a packet read from the TUN.
const HEADROOM: usize = geneve::GENEVE_HEADER_LEN;

/// Traffic counters of one gateway pair, as seen by this demux.
#[derive(Debug, Default)]
pub struct PairCounters {
    pub id: PairId,
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
    pub pairs: Vec<PairCounters>,
    pub live_flows: AtomicU64,
}

impl DemuxStats {
    pub fn new(pairs: &[PairId]) -> Self {
        DemuxStats {
            counters: CounterSet::new(DEMUX_COUNTERS),
            tun_wire: CounterSet::new(WIRE_DROP_COUNTERS),
            lan_wire: CounterSet::new(WIRE_DROP_COUNTERS),
            pairs: pairs.iter().map(|&id| PairCounters { id, ..Default::default() }).collect(),
            live_flows: AtomicU64::new(0),
        }
    }

    /// The status JSON: counters (wire drops prefixed `tun_` / `lan_`), per-pair traffic, flows.
    pub fn to_json(&self) -> serde_json::Value {
        let mut counters = self.counters.to_json();
        let map = counters.as_object_mut().expect("counters are an object");
        for (prefix, set) in [("tun_", &self.tun_wire), ("lan_", &self.lan_wire)] {
            for (name, value) in set.snapshot() {
                map.insert(format!("{name}_{}", prefix.trim_end_matches('_')), value.into());
            }
        }
        let pairs: Vec<serde_json::Value> = self
            .pairs
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.id,
                    "tx_packets": p.tx_packets.load(Ordering::Relaxed),
                    "tx_bytes": p.tx_bytes.load(Ordering::Relaxed),
                    "rx_packets": p.rx_packets.load(Ordering::Relaxed),
                    "rx_bytes": p.rx_bytes.load(Ordering::Relaxed),
                })
            })
            .collect();
        serde_json::json!({
            "counters": counters,
            "pairs": pairs,
            "flows": self.live_flows.load(Ordering::Relaxed),
        })
    }
}

/// Where each pair's gateway is, indexed both ways without allocation on the data path.
#[derive(Debug, Clone)]
pub struct GatewayMap {
    /// (pair id, GENEVE address), in configuration order; the index is the pair's slot.
    gateways: Vec<(PairId, SocketAddr)>,
}

impl GatewayMap {
    pub fn new(gateways: Vec<(PairId, SocketAddr)>) -> Self {
        GatewayMap { gateways }
    }

    /// The slot and address of pair `id`.
    #[inline]
    pub fn by_pair(&self, id: PairId) -> Option<(usize, SocketAddr)> {
        self.gateways.iter().position(|(p, _)| *p == id).map(|i| (i, self.gateways[i].1))
    }

    /// The slot and pair id of the gateway sending from `addr`.
    #[inline]
    pub fn by_addr(&self, addr: &SocketAddr) -> Option<(usize, PairId)> {
        self.gateways.iter().position(|(_, a)| a == addr).map(|i| (i, self.gateways[i].0))
    }

    pub fn pair_ids(&self) -> Vec<PairId> {
        self.gateways.iter().map(|(p, _)| *p).collect()
    }
}

/// What both data threads need.
#[derive(Debug)]
pub struct DataPath {
    pub tun: Arc<Tun>,
    pub socket: Arc<UdpSocket>,
    pub steering: Arc<Mutex<Steering>>,
    pub gateways: GatewayMap,
    pub local_prefixes: Vec<Prefix>,
    pub mtu: u16,
    pub stats: Arc<DemuxStats>,
    pub stop: StopFlag,
    pub epoch: Instant,
}

fn in_prefixes(prefixes: &[Prefix], addr: std::net::IpAddr) -> bool {
    prefixes.iter().any(|p| p.contains(addr))
}

fn source_of(c: &Classified) -> std::net::IpAddr {
    match c {
        Classified::Whole { tuple, .. } | Classified::FirstFragment { tuple, .. } => tuple.src,
        Classified::LaterFragment { frag } => frag.src,
    }
}

fn destination_of(c: &Classified) -> std::net::IpAddr {
    match c {
        Classified::Whole { tuple, .. } | Classified::FirstFragment { tuple, .. } => tuple.dst,
        Classified::LaterFragment { frag } => frag.dst,
    }
}

fn count_wire(set: &CounterSet, e: WireError) {
    set.inc(e.counter_index());
}

fn ethertype_of(packet: &[u8]) -> u16 {
    if packet.first().map(|b| b >> 4) == Some(6) {
        geneve::ETHERTYPE_IPV6
    } else {
        geneve::ETHERTYPE_IPV4
    }
}

impl DataPath {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// TUN → gateways, until stopped.
    pub fn run_outbound(&self) {
        let buf_size = HEADROOM + usize::from(self.mtu) + 64;
        let mut batch = SendBatch::new(BATCH, buf_size);
        let stats = &*self.stats;
        let mut sweeps = 0u32;
        while !self.stop.is_stopped() {
            match wait_readable(self.tun.as_raw_fd(), 100) {
                Ok(true) => {}
                Ok(false) => {
                    self.sweep_flows();
                    continue;
                }
                Err(e) => {
                    tracing::error!("polling the TUN failed: {e}");
                    return;
                }
            }
            let now = self.now_ms();
            {
                let mut steering = self.steering.lock().unwrap_or_else(|p| p.into_inner());
                while let Some(buf) = batch.next_buf() {
                    let n = match self.tun.read(&mut buf[HEADROOM..]) {
                        Ok(Some(n)) => n,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!("reading the TUN failed: {e}");
                            break;
                        }
                    };
                    stats.counters.inc(c::TUN_RX_PACKETS);
                    stats.counters.add(c::TUN_RX_BYTES, n as u64);
                    if n == buf.len() - HEADROOM {
                        stats.counters.inc(c::DROP_OVERSIZE);
                        continue;
                    }
                    let packet = &mut buf[HEADROOM..HEADROOM + n];
                    let class = match wire::classify(packet) {
                        Ok(class) => class,
                        Err(e) => {
                            count_wire(&stats.tun_wire, e);
                            continue;
                        }
                    };
                    if !in_prefixes(&self.local_prefixes, source_of(&class)) {
                        stats.counters.inc(c::DROP_SRC_NOT_LOCAL);
                        continue;
                    }
                    let pair = match steering.steer(&class, now) {
                        Ok(steered) => {
                            self.count_outcome(&steered.outcome);
                            steered.pair
                        }
                        Err(drop) => {
                            stats.counters.inc(steer_drop_counter(&drop));
                            continue;
                        }
                    };
                    let Some((slot, addr)) = self.gateways.by_pair(pair) else {
                        stats.counters.inc(c::DROP_NO_LIVE_PAIR);
                        continue;
                    };
                    if matches!(wire::clamp_tcp_mss(packet, self.mtu), Ok(true)) {
                        stats.counters.inc(c::MSS_CLAMPED);
                    }
                    let ethertype = ethertype_of(packet);
                    geneve::write_header(&mut buf[..HEADROOM], u32::from(pair), ethertype);
                    batch.commit(HEADROOM + n, addr);
                    let p = &stats.pairs[slot];
                    p.tx_packets.fetch_add(1, Ordering::Relaxed);
                    p.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                sweeps = sweeps.wrapping_add(1);
                if sweeps % 64 == 0 {
                    steering.expire(now, 1024);
                    stats.live_flows.store(steering.live_flows() as u64, Ordering::Relaxed);
                }
            }
            let report = batch.flush(&self.socket);
            stats.counters.add(c::GENEVE_TX_PACKETS, report.sent as u64);
            stats.counters.add(c::DROP_GENEVE_SEND, report.dropped as u64);
        }
    }

    fn sweep_flows(&self) {
        let now = self.now_ms();
        let mut steering = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        steering.expire(now, 4096);
        self.stats.live_flows.store(steering.live_flows() as u64, Ordering::Relaxed);
    }

    fn count_outcome(&self, outcome: &crate::steer::Outcome) {
        use crate::steer::Outcome;
        match outcome {
            Outcome::Moved => self.stats.counters.inc(c::FLOWS_MOVED),
            Outcome::Unpinned => self.stats.counters.inc(c::FLOWS_UNPINNED),
            _ => {}
        }
    }

    /// Gateways → TUN, until stopped.
    pub fn run_inbound(&self) {
        let buf_size = geneve::GENEVE_HEADER_LEN + 256 + usize::from(self.mtu) + 64;
        let mut batch = RecvBatch::new(BATCH, buf_size.max(2048));
        let stats = &*self.stats;
        while !self.stop.is_stopped() {
            match wait_readable(self.socket.as_raw_fd(), 100) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!("polling the GENEVE socket failed: {e}");
                    return;
                }
            }
            let count = match batch.recv(&self.socket) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("receiving GENEVE failed: {e}");
                    continue;
                }
            };
            stats.counters.add(c::GENEVE_RX_PACKETS, count as u64);
            let now = self.now_ms();
            let mut steering = self.steering.lock().unwrap_or_else(|p| p.into_inner());
            for i in 0..count {
                let (datagram, from) = batch.get_mut(i);
                let Some((slot, pair)) = self.gateways.by_addr(&from) else {
                    stats.counters.inc(c::DROP_UNKNOWN_GATEWAY);
                    continue;
                };
                let (vni, header_len) = match geneve::GenevePacket::new_checked(&*datagram) {
                    Ok(g) => (g.vni(), g.header_len()),
                    Err(e) => {
                        count_wire(&stats.lan_wire, e);
                        continue;
                    }
                };
                if vni != u32::from(pair) {
                    stats.counters.inc(c::DROP_VNI_MISMATCH);
                    continue;
                }
                let inner = &mut datagram[header_len..];
                let class = match wire::classify(inner) {
                    Ok(class) => class,
                    Err(e) => {
                        count_wire(&stats.lan_wire, e);
                        continue;
                    }
                };
                if !in_prefixes(&self.local_prefixes, destination_of(&class)) {
                    stats.counters.inc(c::DROP_DST_NOT_LOCAL);
                    continue;
                }
                steering.learn(&class, pair, now);
                if matches!(wire::clamp_tcp_mss(inner, self.mtu), Ok(true)) {
                    stats.counters.inc(c::MSS_CLAMPED);
                }
                let p = &stats.pairs[slot];
                p.rx_packets.fetch_add(1, Ordering::Relaxed);
                p.rx_bytes.fetch_add(inner.len() as u64, Ordering::Relaxed);
                match self.tun.write(inner) {
                    Ok(()) => {
                        stats.counters.inc(c::TUN_TX_PACKETS);
                        stats.counters.add(c::TUN_TX_BYTES, inner.len() as u64);
                    }
                    Err(_) => stats.counters.inc(c::DROP_TUN_WRITE),
                }
            }
        }
    }
}

fn steer_drop_counter(drop: &crate::steer::SteerDrop) -> usize {
    use crate::steer::SteerDrop;
    match drop {
        SteerDrop::NoLivePair => c::DROP_NO_LIVE_PAIR,
        SteerDrop::FragmentWithoutHead => c::DROP_FRAGMENT_WITHOUT_HEAD,
    }
}
