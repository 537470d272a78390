//! A data thread's outbound half: TUN → gateways.

use std::sync::atomic::Ordering;

use braid_core::flow::Classified;
use braid_core::udp::SendBatch;
use braid_core::wire::{self, geneve};

use super::handoff::Direction;
use super::lane::Claim;
use super::{c, in_prefixes, source_of, steer_drop_counter, Lane, Route, HEADROOM};
use crate::offload::{complete_checksum, GsoType, OffloadError, Segmenter, VnetHeader, VNET_HEADER_LEN};
use crate::steer::FlowKey;

impl Lane {
    /// Reads packets straight into the batch's slots until the queue is drained or the batch
    /// is full; returns whether more may be waiting. A packet another thread owns is copied
    /// out to it and its slot reused.
    pub(super) fn read_plain(&mut self, batch: &mut SendBatch, now: u64) -> bool {
        while let Some(buf) = batch.next_buf() {
            let n = match self.io.tun.read(&mut buf[HEADROOM..]) {
                Ok(Some(n)) => n,
                Ok(None) => return false,
                Err(e) => {
                    tracing::error!("reading the TUN failed: {e}");
                    return false;
                }
            };
            if n == buf.len() - HEADROOM {
                self.stats.counters.inc(c::TUN_RX_PACKETS);
                self.stats.counters.inc(c::DROP_OVERSIZE);
                continue;
            }
            let packet = &mut buf[HEADROOM..HEADROOM + n];
            let (class, flow) = match self.claim(packet, true) {
                Claim::Theirs(owner) => {
                    self.hand_off_read(owner, packet, 1);
                    continue;
                }
                Claim::Malformed(e) => {
                    self.count_rx(1, n);
                    self.stats.tun_wire.inc(e.counter_index());
                    continue;
                }
                Claim::Mine(class, flow) => (class, flow),
            };
            self.count_rx(1, n);
            let Some(route) = self.route(&class, flow, now, 1) else {
                continue;
            };
            self.clamp(packet);
            self.commit(batch, route, n);
        }
        true
    }

    /// A plain-mode packet handed over by another thread: copied into a slot and forwarded.
    pub(super) fn forward_plain_copy(&mut self, batch: &mut SendBatch, packet: &mut [u8], now: u64) {
        self.count_rx(1, packet.len());
        let (class, flow) = match self.claim(packet, false) {
            Claim::Mine(class, flow) => (class, flow),
            Claim::Malformed(e) => {
                self.stats.tun_wire.inc(e.counter_index());
                return;
            }
            Claim::Theirs(_) => return,
        };
        self.copy_and_commit(batch, packet, &class, flow, now);
    }

    /// Reads (super-)packets into `scratch` and forwards them until the queue is drained or
    /// the batch is full; returns whether more may be waiting.
    pub(super) fn read_offloaded(&mut self, batch: &mut SendBatch, scratch: &mut [u8], now: u64) -> bool {
        while !batch.is_full() {
            let n = match self.io.tun.read(scratch) {
                Ok(Some(n)) => n,
                Ok(None) => return false,
                Err(e) => {
                    tracing::error!("reading the TUN failed: {e}");
                    return false;
                }
            };
            if n == scratch.len() {
                self.stats.counters.inc(c::TUN_RX_PACKETS);
                self.stats.counters.inc(c::DROP_OVERSIZE);
                continue;
            }
            self.forward_raw(batch, &mut scratch[..n], now, true);
        }
        true
    }

    /// Forwards one offload-mode read (vnet header, then a packet or a TCP super-packet),
    /// handing it whole to its owner first if that is another thread and `may_hand_off`.
    pub(super) fn forward_raw(&mut self, batch: &mut SendBatch, raw: &mut [u8], now: u64, may_hand_off: bool) {
        let header = match VnetHeader::parse(raw) {
            Ok(header) => header,
            Err(e) => {
                self.stats.counters.inc(c::TUN_RX_PACKETS);
                self.count_offload(e, 1);
                return;
            }
        };
        let (class, flow) = match self.claim(&raw[VNET_HEADER_LEN..], may_hand_off) {
            Claim::Theirs(owner) => {
                self.hand_off_read(owner, raw, 1);
                return;
            }
            Claim::Malformed(e) => {
                self.count_rx(1, raw.len() - VNET_HEADER_LEN);
                self.stats.tun_wire.inc(e.counter_index());
                return;
            }
            Claim::Mine(class, flow) => (class, flow),
        };
        let packet = &mut raw[VNET_HEADER_LEN..];
        if header.gso_type == GsoType::None {
            self.count_rx(1, packet.len());
            if let Err(e) = complete_checksum(&header, packet) {
                self.count_offload(e, 1);
                return;
            }
            self.copy_and_commit(batch, packet, &class, flow, now);
        } else {
            self.forward_segments(batch, &header, packet, &class, flow, now);
        }
    }

    /// Hands a packet read here to its owner; a shed packet still counts as read.
    fn hand_off_read(&mut self, owner: usize, bytes: &[u8], packets: u64) {
        if !self.hand_off(owner, Direction::Outbound, bytes, packets) {
            self.stats.counters.add(c::TUN_RX_PACKETS, packets);
        }
    }

    fn count_rx(&self, packets: u64, bytes: usize) {
        self.stats.counters.add(c::TUN_RX_PACKETS, packets);
        self.stats.counters.add(c::TUN_RX_BYTES, bytes as u64);
    }

    /// Steers one ordinary packet and copies it into a send slot.
    fn copy_and_commit(
        &mut self,
        batch: &mut SendBatch,
        packet: &[u8],
        class: &Classified,
        flow: Option<(u64, FlowKey)>,
        now: u64,
    ) {
        let Some(route) = self.route(class, flow, now, 1) else {
            return;
        };
        if batch.is_full() {
            self.flush(batch);
        }
        let Some(slot) = batch
            .next_buf()
            .and_then(|buf| buf.get_mut(HEADROOM..HEADROOM + packet.len()))
        else {
            self.stats.counters.inc(c::DROP_OVERSIZE);
            return;
        };
        slot.copy_from_slice(packet);
        self.clamp(slot);
        self.commit(batch, route, packet.len());
    }

    /// Forwards a TCP super-packet: steered once (all its segments are one flow), then cut into
    /// segments written straight into send slots, flushing whenever the batch fills.
    fn forward_segments(
        &mut self,
        batch: &mut SendBatch,
        header: &VnetHeader,
        packet: &[u8],
        class: &Classified,
        flow: Option<(u64, FlowKey)>,
        now: u64,
    ) {
        let stats = self.stats.clone();
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
        let Some(route) = self.route(class, flow, now, segments) else {
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

    /// Checks the source and steers one classified packet (or a super-packet standing for
    /// `packets` wire packets), counting them under the reason if they are dropped.
    fn route(&mut self, class: &Classified, flow: Option<(u64, FlowKey)>, now: u64, packets: u64) -> Option<Route> {
        let stats = &*self.stats;
        if !in_prefixes(&self.path.local_prefixes, source_of(class)) {
            // The kernel's own link-scoped chatter on the TUN (IPv6 router solicitations, MLD
            // reports from fe80::) is not site traffic: counted apart, not as a drop.
            let counter = if is_link_scoped(source_of(class)) {
                c::TUN_RX_LINK_SCOPED
            } else {
                c::DROP_SRC_NOT_LOCAL
            };
            stats.counters.add(counter, packets);
            return None;
        }
        let pair = match self.steering.steer_flow(class, flow, now) {
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
            ethertype: if source_of(class).is_ipv6() {
                geneve::ETHERTYPE_IPV6
            } else {
                geneve::ETHERTYPE_IPV4
            },
        })
    }

    pub(super) fn clamp(&self, packet: &mut [u8]) {
        if matches!(wire::clamp_tcp_mss(packet, self.path.mtu), Ok(true)) {
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

    pub(super) fn flush(&self, batch: &mut SendBatch) {
        if batch.is_empty() {
            return;
        }
        let report = batch.flush(&self.io.socket);
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
}

fn count_outcome(stats: &super::DemuxStats, outcome: &crate::steer::Outcome) {
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
