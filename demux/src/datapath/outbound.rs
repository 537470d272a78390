//! A data thread's outbound half, TUN → gateways: reads, segments, batches and sends; every
//! decision is the [`Processor`]'s.

use braid_core::udp::SendBatch;
use braid_core::wire::geneve;

use super::handoff::Direction;
use super::processor::{Claim, Claimed, OutboundVerdict, Processor};
use super::{c, Lane, Route, HEADROOM};
use crate::offload::{complete_checksum, GsoType, OffloadError, Segmenter, VnetHeader, VNET_HEADER_LEN};

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
                self.count_rx(1, 0);
                self.proc.stats.counters.inc(c::DROP_OVERSIZE);
                continue;
            }
            let packet = &mut buf[HEADROOM..HEADROOM + n];
            match self.proc.outbound(packet, true, now) {
                OutboundVerdict::Forward(route) => {
                    self.count_rx(1, n);
                    commit(&self.proc, batch, route, n);
                }
                OutboundVerdict::HandOff(owner) => self.hand_off_read(owner, packet),
                OutboundVerdict::Dropped => self.count_rx(1, n),
            }
        }
        true
    }

    /// A plain-mode packet handed over by another thread: copied into a slot and forwarded.
    pub(super) fn forward_plain_copy(&mut self, batch: &mut SendBatch, packet: &mut [u8], now: u64) {
        self.count_rx(1, packet.len());
        if let OutboundVerdict::Forward(route) = self.proc.outbound(packet, false, now) {
            self.copy_and_commit(batch, packet, route);
        }
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
                self.count_rx(1, 0);
                self.proc.stats.counters.inc(c::DROP_OVERSIZE);
                continue;
            }
            self.forward_raw(batch, &mut scratch[..n], now, true);
        }
        true
    }

    /// Forwards one offload-mode read (vnet header, then a packet or a TCP super-packet),
    /// handing it whole to its owner first if that is another thread and `may_hand_off`. The
    /// owner is found before the checksum is completed, so the owner completes it once.
    pub(super) fn forward_raw(&mut self, batch: &mut SendBatch, raw: &mut [u8], now: u64, may_hand_off: bool) {
        let header = match VnetHeader::parse(raw) {
            Ok(header) => header,
            Err(e) => {
                self.count_rx(1, 0);
                self.proc.count_offload(e, 1);
                return;
            }
        };
        let Claimed { class, flow } = match self.proc.claim(&raw[VNET_HEADER_LEN..], may_hand_off) {
            Claim::Mine(claimed) => claimed,
            Claim::Theirs(owner, _) => {
                self.hand_off_read(owner, raw);
                return;
            }
            Claim::Malformed(e) => {
                self.count_rx(1, raw.len() - VNET_HEADER_LEN);
                self.proc.stats.tun_wire.inc(e.counter_index());
                return;
            }
        };
        let packet = &mut raw[VNET_HEADER_LEN..];
        if header.gso_type == GsoType::None {
            self.count_rx(1, packet.len());
            if let Err(e) = complete_checksum(&header, packet) {
                self.proc.count_offload(e, 1);
                return;
            }
            if let Some(route) = self.proc.route(&class, flow, now, 1) {
                self.copy_and_commit(batch, packet, route);
            }
            return;
        }
        // A super-packet: steered once (all its segments are one flow), then cut into segments
        // written straight into send slots, flushing whenever the batch fills.
        self.proc.stats.counters.inc(c::TUN_RX_SUPER_PACKETS);
        let mut segmenter = match Segmenter::new(&header, packet) {
            Ok(segmenter) => segmenter,
            Err(e) => {
                self.count_rx(1, 0);
                self.proc.count_offload(e, 1);
                return;
            }
        };
        let segments = segmenter.segments() as u64;
        self.count_rx(segments, 0);
        if HEADROOM + segmenter.max_segment_len() > batch.buf_size() {
            self.proc.count_offload(OffloadError::BadGsoSize, segments);
            return;
        }
        let Some(route) = self.proc.route(&class, flow, now, segments) else {
            return;
        };
        loop {
            if batch.is_full() {
                self.flush(batch);
            }
            let Some(buf) = batch.next_buf() else { return };
            match segmenter.next_into(&mut buf[HEADROOM..]) {
                Ok(Some(len)) => {
                    self.count_rx(0, len);
                    commit(&self.proc, batch, route, len);
                }
                Ok(None) => return,
                Err(e) => {
                    self.proc.count_offload(e, segmenter.remaining() as u64);
                    return;
                }
            }
        }
    }

    /// Hands a packet read here to its owner; a packet that cannot be handed over is counted
    /// as read here (and dropped).
    fn hand_off_read(&mut self, owner: usize, bytes: &[u8]) {
        if !self.hand_off(owner, Direction::Outbound, bytes, 1) {
            self.count_rx(1, 0);
        }
    }

    fn count_rx(&self, packets: u64, bytes: usize) {
        let counters = &self.proc.stats.counters;
        counters.add(c::TUN_RX_PACKETS, packets);
        counters.add(c::TUN_RX_BYTES, bytes as u64);
    }

    /// Copies an ordinary packet into a send slot, clamps its MSS and queues it.
    fn copy_and_commit(&mut self, batch: &mut SendBatch, packet: &[u8], route: Route) {
        if batch.is_full() {
            self.flush(batch);
        }
        let Some(slot) = batch
            .next_buf()
            .and_then(|buf| buf.get_mut(HEADROOM..HEADROOM + packet.len()))
        else {
            self.proc.stats.counters.inc(c::DROP_OVERSIZE);
            return;
        };
        slot.copy_from_slice(packet);
        if route.clamp {
            self.proc.clamp(slot);
        }
        commit(&self.proc, batch, route, packet.len());
    }

    pub(super) fn flush(&self, batch: &mut SendBatch) {
        if batch.is_empty() {
            return;
        }
        let report = batch.flush(&self.io.socket);
        let counters = &self.proc.stats.counters;
        counters.add(c::GENEVE_TX_PACKETS, report.sent as u64);
        counters.add(c::DROP_GENEVE_SEND, report.dropped as u64);
    }
}

/// Puts the GENEVE header in front of the `len`-byte packet already in the next slot and
/// queues it.
fn commit(proc: &Processor, batch: &mut SendBatch, route: Route, len: usize) {
    let Some(buf) = batch.next_buf() else { return };
    geneve::write_header(&mut buf[..HEADROOM], u32::from(route.pair), route.ethertype);
    batch.commit(HEADROOM + len, route.addr);
    proc.count_tx(route.pair, len);
}
