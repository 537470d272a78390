//! The inbound thread: gateways → TUN.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use braid_core::udp::RecvBatch;
use braid_core::wire::{self, geneve};

use super::filter::Verdict;
use super::Shared;
use super::{c, count_wire, ethertype_of, DataPath, BATCH, HEADROOM};
use crate::canary::Inbound as CanaryVerdict;
use crate::offload::{Coalescer, Emit, VnetHeader, MAX_SUPER_PACKET, VNET_HEADER_LEN};
use crate::tun::wait_readable;

impl DataPath {
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
                let mut shared = self.lock();
                for (i, at) in inner_at.iter_mut().enumerate().take(count) {
                    let (datagram, from) = batch.get_mut(i);
                    let Some(header_len) = self.accept_inbound(&mut shared, datagram, from, now) else {
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
                self.publish_counts(&mut shared.steering);
            }
            if self.tun.offload() {
                self.write_coalesced(&coalescer, &batch, &inner_at, &mut scratch);
            }
        }
    }

    /// Checks one GENEVE datagram from a gateway — a configured gateway's address, the VNI of
    /// that gateway's pair, a well-formed inner packet from the peer site to this one
    /// ([`super::filter`]) — answers it if it is a canary, else learns its flow's pair and clamps
    /// its MSS. Returns where the inner packet starts, or `None` (counted) if it is not for the
    /// TUN.
    fn accept_inbound(&self, shared: &mut Shared, datagram: &mut [u8], from: SocketAddr, now: u64) -> Option<usize> {
        let stats = &*self.stats;
        let Some(pair) = shared.gateways.by_addr(&from) else {
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
        match self.inbound_filter.check(&class) {
            Verdict::Accept => {}
            Verdict::CanaryOnly(refused) => {
                if !self.answer_canary(shared, inner, pair, from, now) {
                    stats.counters.inc(refused.counter());
                }
                return None;
            }
            Verdict::Drop(refused) => {
                stats.counters.inc(refused.counter());
                return None;
            }
        }
        if self.answer_canary(shared, inner, pair, from, now) {
            return None;
        }
        shared.steering.learn(&class, pair, now);
        self.clamp(inner);
        let p = stats.pair(pair);
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

    /// Handles a canary (see [`crate::canary`]): a probe from the peer demux is answered
    /// through the same pair, a reply to our probe is recorded. Returns whether `inner` was a
    /// canary (and so is not for the TUN).
    fn answer_canary(&self, shared: &mut Shared, inner: &[u8], pair: u16, from: SocketAddr, now: u64) -> bool {
        let mut reply = [0u8; HEADROOM + 128];
        match shared
            .canary
            .inbound(inner, pair, now, self.now_us(), &mut reply[HEADROOM..])
        {
            CanaryVerdict::NotCanary => false,
            CanaryVerdict::Consumed => true,
            CanaryVerdict::Reply { len } => {
                let ethertype = ethertype_of(&reply[HEADROOM..HEADROOM + len]);
                geneve::write_header(&mut reply[..HEADROOM], u32::from(pair), ethertype);
                if self.socket.send_to(&reply[..HEADROOM + len], from).is_err() {
                    self.stats.counters.inc(c::DROP_GENEVE_SEND);
                }
                true
            }
        }
    }
}
