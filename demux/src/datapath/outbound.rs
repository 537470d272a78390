//! The outbound thread: TUN → gateways.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use braid_core::udp::SendBatch;
use braid_core::wire::{self, geneve};

use super::Shared;
use super::{
    c, ethertype_of, in_prefixes, source_of, steer_drop_counter, DataPath, Route, BATCH, CANARY_INTERVAL_MS, HEADROOM,
};
use crate::offload::{
    complete_checksum, GsoType, OffloadError, Segmenter, VnetHeader, MAX_SUPER_PACKET, VNET_HEADER_LEN,
};
use crate::tun::wait_readable;

impl DataPath {
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
        let mut busy = false;
        let mut next_probe_ms = 0;
        while !self.stop.is_stopped() {
            if !busy {
                match wait_readable(self.tun.as_raw_fd(), 100) {
                    Ok(true) => {}
                    Ok(false) => {
                        self.sweep_flows();
                        if self.now_ms() < next_probe_ms {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::error!("polling the TUN failed: {e}");
                        return;
                    }
                }
            }
            let now = self.now_ms();
            {
                let mut shared = self.lock();
                if now >= next_probe_ms {
                    next_probe_ms = now + CANARY_INTERVAL_MS;
                    self.probe_every_pair(&mut shared, &mut batch, now);
                }
                busy = if self.tun.offload() {
                    self.read_offloaded(&mut shared, &mut batch, &mut scratch, now)
                } else {
                    self.read_plain(&mut shared, &mut batch, now)
                };
                let steering = &mut shared.steering;
                steering.sweep(now);
                self.stats
                    .live_flows
                    .store(steering.live_flows() as u64, Ordering::Relaxed);
                self.publish_counts(steering);
            }
            self.flush(&mut batch);
        }
    }

    /// Reads packets straight into the batch's slots until the TUN is drained or the batch is
    /// full; returns whether more may be waiting.
    fn read_plain(&self, shared: &mut Shared, batch: &mut SendBatch, now: u64) -> bool {
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
            let Some(route) = self.route(shared, packet, now, 1) else {
                continue;
            };
            self.clamp(packet);
            self.commit(batch, route, n);
        }
        true
    }

    /// Reads (super-)packets into `scratch` and segments them into the batch until the TUN is
    /// drained or the batch is full; returns whether more may be waiting.
    fn read_offloaded(&self, shared: &mut Shared, batch: &mut SendBatch, scratch: &mut [u8], now: u64) -> bool {
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
                self.forward_copy(shared, batch, &header, packet, now);
            } else {
                self.forward_segments(shared, batch, &header, packet, now);
            }
        }
        true
    }

    /// Forwards one ordinary packet read in offload mode: completes its checksum and copies it
    /// into a send slot.
    fn forward_copy(
        &self,
        shared: &mut Shared,
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
        let Some(route) = self.route(shared, packet, now, 1) else {
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
        shared: &mut Shared,
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
        let Some(route) = self.route(shared, packet, now, segments) else {
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
    fn route(&self, shared: &mut Shared, packet: &[u8], now: u64, packets: u64) -> Option<Route> {
        let stats = &*self.stats;
        let class = match wire::classify(packet) {
            Ok(class) => class,
            Err(e) => {
                stats.tun_wire.add(e.counter_index(), packets);
                return None;
            }
        };
        if !in_prefixes(&self.local_prefixes, source_of(&class)) {
            // The kernel's own link-scoped chatter on the TUN (IPv6 router solicitations, MLD
            // reports from fe80::) is not site traffic: counted apart, not as a drop.
            let counter = if is_link_scoped(source_of(&class)) {
                c::TUN_RX_LINK_SCOPED
            } else {
                c::DROP_SRC_NOT_LOCAL
            };
            stats.counters.add(counter, packets);
            return None;
        }
        let pair = match shared.steering.steer(&class, now) {
            Ok(steered) => {
                self.count_outcome(&steered.outcome);
                steered.pair
            }
            Err(drop) => {
                stats.counters.add(steer_drop_counter(&drop), packets);
                return None;
            }
        };
        let Some(addr) = shared.gateways.by_pair(pair) else {
            stats.counters.add(c::DROP_NO_LIVE_PAIR, packets);
            return None;
        };
        Some(Route {
            addr,
            pair,
            ethertype: ethertype_of(packet),
        })
    }

    pub(super) fn clamp(&self, packet: &mut [u8]) {
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
        let p = self.stats.pair(route.pair);
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
        let mut shared = self.lock();
        let steering = &mut shared.steering;
        steering.sweep(now);
        self.stats
            .live_flows
            .store(steering.live_flows() as u64, Ordering::Relaxed);
        self.publish_counts(steering);
    }

    fn count_outcome(&self, outcome: &crate::steer::Outcome) {
        use crate::steer::Outcome;
        match outcome {
            Outcome::Moved => self.stats.counters.inc(c::FLOWS_MOVED),
            Outcome::Unpinned => self.stats.counters.inc(c::FLOWS_UNPINNED),
            _ => {}
        }
    }

    /// Sends one canary probe to every pair's gateway (see [`crate::canary`]).
    fn probe_every_pair(&self, shared: &mut Shared, batch: &mut SendBatch, now: u64) {
        for slot in 0..shared.gateways.len() {
            let (pair, addr) = shared.gateways.get(slot);
            if batch.is_full() {
                self.flush(batch);
            }
            let Some(buf) = batch.next_buf() else { return };
            let len = shared.canary.probe(pair, now, &mut buf[HEADROOM..]);
            if len == 0 {
                continue;
            }
            let ethertype = ethertype_of(&buf[HEADROOM..HEADROOM + len]);
            geneve::write_header(&mut buf[..HEADROOM], u32::from(pair), ethertype);
            batch.commit(HEADROOM + len, addr);
        }
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
