//! A data thread's inbound half: gateways → TUN.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use braid_core::flow::{Classified, PairId};
use braid_core::wire::geneve;

use super::filter::Verdict;
use super::handoff::{Direction, Parcel};
use super::lane::{Buffers, Claim};
use super::{c, count_wire, ethertype_of, Lane, BATCH, HEADROOM};
use crate::canary::Inbound as CanaryVerdict;
use crate::offload::{Coalescer, Emit, VnetHeader, VNET_HEADER_LEN};

impl Lane {
    /// Receives one batch of GENEVE from the gateways and delivers what this thread owns,
    /// handing the rest to the owners; returns whether more may be waiting.
    pub(super) fn receive(&mut self, bufs: &mut Buffers, now: u64) -> bool {
        let count = match bufs.recv.recv(&self.io.socket) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("receiving GENEVE failed: {e}");
                return false;
            }
        };
        if count == 0 {
            return false;
        }
        let busy = count >= bufs.recv.slots();
        self.stats.counters.add(c::GENEVE_RX_PACKETS, count as u64);
        let offload = self.io.tun.offload();
        bufs.coalescer.start_batch(count);
        if bufs.inner_at.len() < count {
            bufs.inner_at.resize(count, 0);
        }
        for i in 0..count {
            let (datagram, from) = bufs.recv.get_mut(i);
            let Some((pair, header_len)) = self.check_gateway(datagram, from) else {
                continue;
            };
            let inner = &mut datagram[header_len..];
            let class = match self.claim(inner, true) {
                Claim::Mine(class, _) => class,
                Claim::Theirs(owner) => {
                    self.hand_off(owner, Direction::Inbound { pair, from }, inner, 1);
                    continue;
                }
                Claim::Malformed(e) => {
                    count_wire(&self.stats.lan_wire, e);
                    continue;
                }
            };
            if !self.accept_classified(inner, &class, pair, from, now) {
                continue;
            }
            if offload {
                bufs.inner_at[i] = header_len;
                bufs.coalescer.push(i, inner);
            } else {
                self.write_tun(|tun| tun.write(inner), 1, inner.len());
            }
        }
        if offload {
            let (recv, inner_at) = (&bufs.recv, &bufs.inner_at);
            self.write_coalesced(
                &bufs.coalescer,
                |i| &recv.get(i).0[inner_at[i]..],
                &mut bufs.write_scratch,
            );
        }
        busy
    }

    /// An inner packet another thread received for a flow this thread owns: whether it is
    /// for the TUN (checked, learnt and clamped like one received here).
    pub(super) fn accept_owned(&mut self, inner: &mut [u8], pair: PairId, from: SocketAddr, now: u64) -> bool {
        match self.claim(inner, false) {
            Claim::Mine(class, _) => self.accept_classified(inner, &class, pair, from, now),
            Claim::Malformed(e) => {
                count_wire(&self.stats.lan_wire, e);
                false
            }
            Claim::Theirs(_) => false,
        }
    }

    /// Writes the inbound parcels accepted this round (coalesced on an offload TUN).
    pub(super) fn write_parcels(&self, held: &[Parcel], coalescer: &mut Coalescer, scratch: &mut [u8]) {
        if !self.io.tun.offload() {
            for parcel in held {
                self.write_tun(|tun| tun.write(parcel.bytes()), 1, parcel.bytes().len());
            }
            return;
        }
        for chunk_start in (0..held.len()).step_by(BATCH) {
            let chunk = &held[chunk_start..(chunk_start + BATCH).min(held.len())];
            coalescer.start_batch(chunk.len());
            for (i, parcel) in chunk.iter().enumerate() {
                coalescer.push(i, parcel.bytes());
            }
            self.write_coalesced(coalescer, |i| chunk[i].bytes(), scratch);
        }
    }

    /// The first checks on a GENEVE datagram, made by whichever thread received it: a
    /// configured gateway's address, a well-formed GENEVE header with the VNI of that
    /// gateway's pair. Returns the pair and where the inner packet starts, or `None`
    /// (counted).
    fn check_gateway(&self, datagram: &[u8], from: SocketAddr) -> Option<(PairId, usize)> {
        let stats = &*self.stats;
        let Some(pair) = self.snapshot.gateways.by_addr(&from) else {
            stats.counters.inc(c::DROP_UNKNOWN_GATEWAY);
            return None;
        };
        let (vni, header_len) = match geneve::GenevePacket::new_checked(datagram) {
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
        Some((pair, header_len))
    }

    /// The owner's checks on an inner packet from pair `pair` — from the peer site to this
    /// one ([`super::filter`]) — answers it if it is a canary, else learns its flow's pair and
    /// clamps its MSS. Returns whether it is for the TUN (if not, it is counted).
    fn accept_classified(
        &mut self,
        inner: &mut [u8],
        class: &Classified,
        pair: PairId,
        from: SocketAddr,
        now: u64,
    ) -> bool {
        match self.path.inbound_filter.check(class) {
            Verdict::Accept => {}
            Verdict::CanaryOnly(refused) => {
                if !self.answer_canary(inner, pair, from, now) {
                    self.stats.counters.inc(refused.counter());
                }
                return false;
            }
            Verdict::Drop(refused) => {
                self.stats.counters.inc(refused.counter());
                return false;
            }
        }
        if self.answer_canary(inner, pair, from, now) {
            return false;
        }
        self.steering.learn(class, pair, now);
        self.clamp(inner);
        let p = self.stats.pair(pair);
        p.rx_packets.fetch_add(1, Ordering::Relaxed);
        p.rx_bytes.fetch_add(inner.len() as u64, Ordering::Relaxed);
        true
    }

    /// Writes what the coalescer planned for this batch: untouched packets behind a zero vnet
    /// header, merged runs as super-packets.
    fn write_coalesced<'a>(
        &self,
        coalescer: &Coalescer,
        packet_at: impl Fn(usize) -> &'a [u8] + Copy,
        scratch: &mut [u8],
    ) {
        let mut none = [0u8; VNET_HEADER_LEN];
        VnetHeader::NONE.write(&mut none);
        for emit in coalescer.emits() {
            match emit {
                Emit::Packet(i) => {
                    let packet = packet_at(i);
                    self.write_tun(|tun| tun.write_with_header(&none, packet), 1, packet.len());
                }
                Emit::SuperPacket { run, segments } => {
                    let len = coalescer.assemble(run, packet_at, scratch);
                    let wire_bytes = coalescer.wire_bytes(run);
                    if self.write_tun(|tun| tun.write(&scratch[..len]), segments as u64, wire_bytes) {
                        self.stats.counters.inc(c::TUN_TX_SUPER_PACKETS);
                    }
                }
            }
        }
    }

    /// Runs one TUN write standing for `packets` wire packets of `bytes` bytes in all and
    /// counts the outcome; returns whether it succeeded.
    fn write_tun(
        &self,
        write: impl FnOnce(&crate::tun::Tun) -> std::io::Result<()>,
        packets: u64,
        bytes: usize,
    ) -> bool {
        match write(&self.io.tun) {
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
    fn answer_canary(&mut self, inner: &[u8], pair: u16, from: SocketAddr, now: u64) -> bool {
        let mut reply = [0u8; HEADROOM + 128];
        let now_us = self.path.now_us();
        match self.canary.inbound(inner, pair, now, now_us, &mut reply[HEADROOM..]) {
            CanaryVerdict::NotCanary => false,
            CanaryVerdict::Consumed => true,
            CanaryVerdict::Reply { len } => {
                let ethertype = ethertype_of(&reply[HEADROOM..HEADROOM + len]);
                geneve::write_header(&mut reply[..HEADROOM], u32::from(pair), ethertype);
                if self.io.socket.send_to(&reply[..HEADROOM + len], from).is_err() {
                    self.stats.counters.inc(c::DROP_GENEVE_SEND);
                }
                true
            }
        }
    }
}
