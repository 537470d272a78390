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
//!   this site's configured gateways with the VNI of that gateway's pair, learns the pair for the
//!   flow (so this site's replies use the pair the other site chose), clamps the MSS and writes
//!   the inner packet to the TUN; on an offload TUN the batch's TCP segments are first coalesced
//!   per flow into super-packets, so one write carries a whole run.
//!
//! Counters count wire packets: a super-packet adds its segment count to `tun_rx_packets` /
//! `tun_tx_packets` (and to a drop counter if it is dropped) and one to
//! `tun_rx_super_packets` / `tun_tx_super_packets`. Both threads poll only when idle: after a
//! read or receive that filled the batch they go straight back for more.
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

use crate::offload::{
    complete_checksum, Coalescer, Emit, GsoType, OffloadError, Segmenter, VnetHeader, MAX_SUPER_PACKET,
    OFFLOAD_DROP_COUNTERS, VNET_HEADER_LEN,
};
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
    "tun_rx_super_packets",
    "tun_tx_super_packets",
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
    pub const TUN_RX_SUPER_PACKETS: usize = 18;
    pub const TUN_TX_SUPER_PACKETS: usize = 19;
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
    /// TUN offload drops, by reason ([`OFFLOAD_DROP_COUNTERS`]).
    pub offload: CounterSet,
    pub pairs: Vec<PairCounters>,
    pub live_flows: AtomicU64,
}

impl DemuxStats {
    pub fn new(pairs: &[PairId]) -> Self {
        DemuxStats {
            counters: CounterSet::new(DEMUX_COUNTERS),
            tun_wire: CounterSet::new(WIRE_DROP_COUNTERS),
            lan_wire: CounterSet::new(WIRE_DROP_COUNTERS),
            offload: CounterSet::new(OFFLOAD_DROP_COUNTERS),
            pairs: pairs
                .iter()
                .map(|&id| PairCounters {
                    id,
                    ..Default::default()
                })
                .collect(),
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
        for (name, value) in self.offload.snapshot() {
            map.insert(name.to_string(), value.into());
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
        self.gateways
            .iter()
            .position(|(p, _)| *p == id)
            .map(|i| (i, self.gateways[i].1))
    }

    /// The slot and pair id of the gateway sending from `addr`.
    #[inline]
    pub fn by_addr(&self, addr: &SocketAddr) -> Option<(usize, PairId)> {
        self.gateways
            .iter()
            .position(|(_, a)| a == addr)
            .map(|i| (i, self.gateways[i].0))
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

/// Where one outbound packet goes.
#[derive(Clone, Copy)]
struct Route {
    slot: usize,
    addr: SocketAddr,
    pair: PairId,
    ethertype: u16,
}

impl DataPath {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// TUN → gateways, until stopped.
    pub fn run_outbound(&self) {
        let buf_size = HEADROOM + usize::from(self.mtu) + 64;
        let mut batch = SendBatch::new(BATCH, buf_size);
        // Offload mode reads whole super-packets here; plain mode reads straight into the batch.
        let mut scratch = if self.tun.offload() {
            vec![0u8; VNET_HEADER_LEN + MAX_SUPER_PACKET + 1]
        } else {
            Vec::new()
        };
        let mut sweeps = 0u32;
        let mut busy = false;
        while !self.stop.is_stopped() {
            if !busy {
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
            }
            let now = self.now_ms();
            {
                let mut steering = self.steering.lock().unwrap_or_else(|p| p.into_inner());
                busy = if self.tun.offload() {
                    self.read_offloaded(&mut steering, &mut batch, &mut scratch, now)
                } else {
                    self.read_plain(&mut steering, &mut batch, now)
                };
                sweeps = sweeps.wrapping_add(1);
                if sweeps.is_multiple_of(64) {
                    steering.expire(now, 1024);
                    self.stats
                        .live_flows
                        .store(steering.live_flows() as u64, Ordering::Relaxed);
                }
            }
            self.flush(&mut batch);
        }
    }

    /// Reads packets straight into the batch's slots until the TUN is drained or the batch is
    /// full; returns whether more may be waiting.
    fn read_plain(&self, steering: &mut Steering, batch: &mut SendBatch, now: u64) -> bool {
        let stats = &*self.stats;
        while let Some(buf) = batch.next_buf() {
            let n = match self.tun.read(&mut buf[HEADROOM..]) {
                Ok(Some(n)) => n,
                Ok(None) => return false,
                Err(e) => {
                    tracing::error!("reading the TUN failed: {e}");
                    return false;
                }
            };
            stats.counters.inc(c::TUN_RX_PACKETS);
            stats.counters.add(c::TUN_RX_BYTES, n as u64);
            if n == buf.len() - HEADROOM {
                stats.counters.inc(c::DROP_OVERSIZE);
                continue;
            }
            let packet = &mut buf[HEADROOM..HEADROOM + n];
            let Some(route) = self.route(steering, packet, now, 1) else {
                continue;
            };
            self.clamp(packet);
            self.commit(batch, route, n);
        }
        true
    }

    /// Reads (super-)packets into `scratch` and segments them into the batch until the TUN is
    /// drained or the batch is full; returns whether more may be waiting.
    fn read_offloaded(&self, steering: &mut Steering, batch: &mut SendBatch, scratch: &mut [u8], now: u64) -> bool {
        let stats = &*self.stats;
        while !batch.is_full() {
            let n = match self.tun.read(scratch) {
                Ok(Some(n)) => n,
                Ok(None) => return false,
                Err(e) => {
                    tracing::error!("reading the TUN failed: {e}");
                    return false;
                }
            };
            if n == scratch.len() {
                stats.counters.inc(c::TUN_RX_PACKETS);
                stats.counters.inc(c::DROP_OVERSIZE);
                continue;
            }
            let header = match VnetHeader::parse(&scratch[..n]) {
                Ok(header) => header,
                Err(e) => {
                    stats.counters.inc(c::TUN_RX_PACKETS);
                    self.count_offload(e, 1);
                    continue;
                }
            };
            let packet = &mut scratch[VNET_HEADER_LEN..n];
            if header.gso_type == GsoType::None {
                stats.counters.inc(c::TUN_RX_PACKETS);
                stats.counters.add(c::TUN_RX_BYTES, packet.len() as u64);
                self.forward_copy(steering, batch, &header, packet, now);
            } else {
                self.forward_segments(steering, batch, &header, packet, now);
            }
        }
        true
    }

    /// Forwards one ordinary packet read in offload mode: completes its checksum and copies it
    /// into a send slot.
    fn forward_copy(
        &self,
        steering: &mut Steering,
        batch: &mut SendBatch,
        header: &VnetHeader,
        packet: &mut [u8],
        now: u64,
    ) {
        let stats = &*self.stats;
        if let Err(e) = complete_checksum(header, packet) {
            self.count_offload(e, 1);
            return;
        }
        let Some(route) = self.route(steering, packet, now, 1) else {
            return;
        };
        let Some(slot) = batch
            .next_buf()
            .and_then(|buf| buf.get_mut(HEADROOM..HEADROOM + packet.len()))
        else {
            stats.counters.inc(c::DROP_OVERSIZE);
            return;
        };
        slot.copy_from_slice(packet);
        self.clamp(slot);
        self.commit(batch, route, packet.len());
    }

    /// Forwards a TCP super-packet: steered once (all its segments are one flow), then cut into
    /// segments written straight into send slots, flushing whenever the batch fills.
    fn forward_segments(
        &self,
        steering: &mut Steering,
        batch: &mut SendBatch,
        header: &VnetHeader,
        packet: &[u8],
        now: u64,
    ) {
        let stats = &*self.stats;
        stats.counters.inc(c::TUN_RX_SUPER_PACKETS);
        let mut segmenter = match Segmenter::new(header, packet) {
            Ok(segmenter) => segmenter,
            Err(e) => {
                stats.counters.inc(c::TUN_RX_PACKETS);
                self.count_offload(e, 1);
                return;
            }
        };
        let segments = segmenter.segments() as u64;
        stats.counters.add(c::TUN_RX_PACKETS, segments);
        if HEADROOM + segmenter.max_segment_len() > batch.buf_size() {
            self.count_offload(OffloadError::BadGsoSize, segments);
            return;
        }
        let Some(route) = self.route(steering, packet, now, segments) else {
            return;
        };
        loop {
            if batch.is_full() {
                self.flush(batch);
            }
            let Some(buf) = batch.next_buf() else { return };
            match segmenter.next_into(&mut buf[HEADROOM..]) {
                Ok(Some(len)) => {
                    stats.counters.add(c::TUN_RX_BYTES, len as u64);
                    self.commit(batch, route, len);
                }
                Ok(None) => return,
                Err(e) => {
                    self.count_offload(e, segmenter.remaining() as u64);
                    return;
                }
            }
        }
    }

    /// Classifies, checks the source and steers one packet (or a super-packet standing for
    /// `packets` wire packets), counting them under the reason if they are dropped.
    fn route(&self, steering: &mut Steering, packet: &[u8], now: u64, packets: u64) -> Option<Route> {
        let stats = &*self.stats;
        let class = match wire::classify(packet) {
            Ok(class) => class,
            Err(e) => {
                stats.tun_wire.add(e.counter_index(), packets);
                return None;
            }
        };
        if !in_prefixes(&self.local_prefixes, source_of(&class)) {
            stats.counters.add(c::DROP_SRC_NOT_LOCAL, packets);
            return None;
        }
        let pair = match steering.steer(&class, now) {
            Ok(steered) => {
                self.count_outcome(&steered.outcome);
                steered.pair
            }
            Err(drop) => {
                stats.counters.add(steer_drop_counter(&drop), packets);
                return None;
            }
        };
        let Some((slot, addr)) = self.gateways.by_pair(pair) else {
            stats.counters.add(c::DROP_NO_LIVE_PAIR, packets);
            return None;
        };
        Some(Route {
            slot,
            addr,
            pair,
            ethertype: ethertype_of(packet),
        })
    }

    fn clamp(&self, packet: &mut [u8]) {
        if matches!(wire::clamp_tcp_mss(packet, self.mtu), Ok(true)) {
            self.stats.counters.inc(c::MSS_CLAMPED);
        }
    }

    /// Puts the GENEVE header in front of the `len`-byte packet already in the next slot and
    /// queues it.
    fn commit(&self, batch: &mut SendBatch, route: Route, len: usize) {
        let Some(buf) = batch.next_buf() else { return };
        geneve::write_header(&mut buf[..HEADROOM], u32::from(route.pair), route.ethertype);
        batch.commit(HEADROOM + len, route.addr);
        let p = &self.stats.pairs[route.slot];
        p.tx_packets.fetch_add(1, Ordering::Relaxed);
        p.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn flush(&self, batch: &mut SendBatch) {
        if batch.is_empty() {
            return;
        }
        let report = batch.flush(&self.socket);
        self.stats.counters.add(c::GENEVE_TX_PACKETS, report.sent as u64);
        self.stats.counters.add(c::DROP_GENEVE_SEND, report.dropped as u64);
    }

    /// Counts `packets` wire packets dropped for `e`.
    fn count_offload(&self, e: OffloadError, packets: u64) {
        match e.counter() {
            Ok(index) => self.stats.offload.add(index, packets),
            Err(wire) => self.stats.tun_wire.add(wire.counter_index(), packets),
        }
    }

    fn sweep_flows(&self) {
        let now = self.now_ms();
        let mut steering = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        steering.expire(now, 4096);
        self.stats
            .live_flows
            .store(steering.live_flows() as u64, Ordering::Relaxed);
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
        let mut coalescer = Coalescer::new(BATCH);
        let mut scratch = if self.tun.offload() {
            vec![0u8; VNET_HEADER_LEN + MAX_SUPER_PACKET]
        } else {
            Vec::new()
        };
        // Where each datagram's inner packet starts; grows if GRO ever brings a larger batch.
        let mut inner_at = vec![0usize; BATCH];
        let stats = &*self.stats;
        let mut busy = false;
        while !self.stop.is_stopped() {
            if !busy {
                match wait_readable(self.socket.as_raw_fd(), 100) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::error!("polling the GENEVE socket failed: {e}");
                        return;
                    }
                }
            }
            let count = match batch.recv(&self.socket) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("receiving GENEVE failed: {e}");
                    busy = false;
                    continue;
                }
            };
            busy = count >= batch.slots();
            stats.counters.add(c::GENEVE_RX_PACKETS, count as u64);
            coalescer.start_batch(count);
            if inner_at.len() < count {
                inner_at.resize(count, 0);
            }
            let now = self.now_ms();
            {
                let mut steering = self.steering.lock().unwrap_or_else(|p| p.into_inner());
                for (i, at) in inner_at.iter_mut().enumerate().take(count) {
                    let (datagram, from) = batch.get_mut(i);
                    let Some(header_len) = self.accept_inbound(&mut steering, datagram, from, now) else {
                        continue;
                    };
                    let inner = &datagram[header_len..];
                    if self.tun.offload() {
                        *at = header_len;
                        coalescer.push(i, inner);
                    } else {
                        self.write_tun(|| self.tun.write(inner), 1, inner.len());
                    }
                }
            }
            if self.tun.offload() {
                self.write_coalesced(&coalescer, &batch, &inner_at, &mut scratch);
            }
        }
    }

    /// Checks one GENEVE datagram from a gateway, learns its flow's pair and clamps its MSS.
    /// Returns where the inner packet starts, or `None` (counted) if it is dropped.
    fn accept_inbound(
        &self,
        steering: &mut Steering,
        datagram: &mut [u8],
        from: SocketAddr,
        now: u64,
    ) -> Option<usize> {
        let stats = &*self.stats;
        let Some((slot, pair)) = self.gateways.by_addr(&from) else {
            stats.counters.inc(c::DROP_UNKNOWN_GATEWAY);
            return None;
        };
        let (vni, header_len) = match geneve::GenevePacket::new_checked(&*datagram) {
            Ok(g) => (g.vni(), g.header_len()),
            Err(e) => {
                count_wire(&stats.lan_wire, e);
                return None;
            }
        };
        if vni != u32::from(pair) {
            stats.counters.inc(c::DROP_VNI_MISMATCH);
            return None;
        }
        let inner = &mut datagram[header_len..];
        let class = match wire::classify(inner) {
            Ok(class) => class,
            Err(e) => {
                count_wire(&stats.lan_wire, e);
                return None;
            }
        };
        if !in_prefixes(&self.local_prefixes, destination_of(&class)) {
            stats.counters.inc(c::DROP_DST_NOT_LOCAL);
            return None;
        }
        steering.learn(&class, pair, now);
        self.clamp(inner);
        let p = &stats.pairs[slot];
        p.rx_packets.fetch_add(1, Ordering::Relaxed);
        p.rx_bytes.fetch_add(inner.len() as u64, Ordering::Relaxed);
        Some(header_len)
    }

    /// Writes what the coalescer planned for this batch: untouched packets behind a zero vnet
    /// header, merged runs as super-packets.
    fn write_coalesced(&self, coalescer: &Coalescer, batch: &RecvBatch, inner_at: &[usize], scratch: &mut [u8]) {
        let packet_at = |i: usize| &batch.get(i).0[inner_at[i]..];
        let mut none = [0u8; VNET_HEADER_LEN];
        VnetHeader::NONE.write(&mut none);
        for emit in coalescer.emits() {
            match emit {
                Emit::Packet(i) => {
                    let packet = packet_at(i);
                    self.write_tun(|| self.tun.write_with_header(&none, packet), 1, packet.len());
                }
                Emit::SuperPacket { run, segments } => {
                    let len = coalescer.assemble(run, packet_at, scratch);
                    let wire_bytes = coalescer.wire_bytes(run);
                    if self.write_tun(|| self.tun.write(&scratch[..len]), segments as u64, wire_bytes) {
                        self.stats.counters.inc(c::TUN_TX_SUPER_PACKETS);
                    }
                }
            }
        }
    }

    /// Runs one TUN write standing for `packets` wire packets of `bytes` bytes in all and
    /// counts the outcome; returns whether it succeeded.
    fn write_tun(&self, write: impl FnOnce() -> std::io::Result<()>, packets: u64, bytes: usize) -> bool {
        match write() {
            Ok(()) => {
                self.stats.counters.add(c::TUN_TX_PACKETS, packets);
                self.stats.counters.add(c::TUN_TX_BYTES, bytes as u64);
                true
            }
            Err(_) => {
                self.stats.counters.add(c::DROP_TUN_WRITE, packets);
                false
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
