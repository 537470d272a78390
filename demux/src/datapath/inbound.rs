//! A data thread's inbound half, gateways → TUN: receives, coalesces and writes; every
//! decision is the [`super::Processor`]'s.

use std::net::SocketAddr;

use super::handoff::{Direction, Parcel};
use super::lane::Buffers;
use super::processor::InboundVerdict;
use super::{c, Lane, BATCH, HEADROOM};
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
        self.proc.stats.counters.add(c::GENEVE_RX_PACKETS, count as u64);
        let offload = self.io.tun.offload();
        bufs.coalescer.start_batch(count);
        if bufs.inner_at.len() < count {
            bufs.inner_at.resize(count, 0);
        }
        let now_us = self.path.now_us();
        let mut reply = [0u8; HEADROOM + 128];
        for i in 0..count {
            let (datagram, from) = bufs.recv.get_mut(i);
            match self.proc.inbound(datagram, from, now, now_us, true, &mut reply) {
                InboundVerdict::Deliver { inner_at } => {
                    let inner = &datagram[inner_at..];
                    if offload {
                        bufs.inner_at[i] = inner_at;
                        bufs.coalescer.push(i, inner);
                    } else {
                        self.write_tun(|tun| tun.write(inner), 1, inner.len());
                    }
                }
                InboundVerdict::HandOff {
                    owner,
                    pair,
                    inner_at,
                    claimed,
                } => {
                    let direction = Direction::Inbound { pair, from, claimed };
                    self.hand_off(owner, direction, &datagram[inner_at..], 1);
                }
                verdict => self.answer(verdict, &reply, from),
            }
        }
        if offload {
            let (recv, inner_at) = (&bufs.recv, &bufs.inner_at);
            self.write_coalesced(
                &mut bufs.coalescer,
                |i| &recv.get(i).0[inner_at[i]..],
                &mut bufs.write_scratch,
            );
        }
        busy
    }

    /// Sends a canary reply the processor wrote into `reply` back to the gateway it came from;
    /// any other verdict needs nothing sent.
    pub(super) fn answer(&self, verdict: InboundVerdict, reply: &[u8], to: SocketAddr) {
        if let InboundVerdict::Reply { len } = verdict {
            if self.io.socket.send_to(&reply[..len], to).is_err() {
                self.proc.stats.counters.inc(c::DROP_GENEVE_SEND);
            }
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
        for chunk in held.chunks(BATCH) {
            coalescer.start_batch(chunk.len());
            for (i, parcel) in chunk.iter().enumerate() {
                coalescer.push(i, parcel.bytes());
            }
            self.write_coalesced(coalescer, |i| chunk[i].bytes(), scratch);
        }
    }

    /// Writes what the coalescer planned for this batch: untouched packets behind a zero vnet
    /// header, merged runs as super-packets.
    ///
    /// A kernel that refuses UDP super-packets (before Linux 6.2) answers `EINVAL`: the run is
    /// then written datagram by datagram and UDP merging is turned off for good.
    fn write_coalesced<'a>(
        &self,
        coalescer: &mut Coalescer,
        packet_at: impl Fn(usize) -> &'a [u8] + Copy,
        scratch: &mut [u8],
    ) {
        let mut none = [0u8; VNET_HEADER_LEN];
        VnetHeader::NONE.write(&mut none);
        let write_alone = |i: usize| {
            let packet = packet_at(i);
            self.write_tun(|tun| tun.write_with_header(&none, packet), 1, packet.len());
        };
        let mut udp_refused = false;
        for emit in coalescer.emits() {
            match emit {
                Emit::Packet(i) => write_alone(i),
                Emit::SuperPacket { run, .. } if udp_refused && coalescer.is_udp(run) => {
                    coalescer.members(run).for_each(write_alone);
                }
                Emit::SuperPacket { run, segments } => {
                    let len = coalescer.assemble(run, packet_at, scratch);
                    match self.io.tun.write(&scratch[..len]) {
                        Ok(()) => {
                            let counters = &self.proc.stats.counters;
                            counters.add(c::TUN_TX_PACKETS, segments as u64);
                            counters.add(c::TUN_TX_BYTES, coalescer.wire_bytes(run) as u64);
                            counters.inc(c::TUN_TX_SUPER_PACKETS);
                        }
                        Err(e) if coalescer.is_udp(run) && e.raw_os_error() == Some(libc::EINVAL) => {
                            if !udp_refused {
                                tracing::warn!("the kernel refuses UDP super-packets on the TUN ({e}); writing datagrams one by one");
                            }
                            udp_refused = true;
                            coalescer.members(run).for_each(write_alone);
                        }
                        Err(_) => self.proc.stats.counters.add(c::DROP_TUN_WRITE, segments as u64),
                    }
                }
            }
        }
        if udp_refused {
            coalescer.set_udp(false);
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
                self.proc.stats.counters.add(c::TUN_TX_PACKETS, packets);
                self.proc.stats.counters.add(c::TUN_TX_BYTES, bytes as u64);
                true
            }
            Err(_) => {
                self.proc.stats.counters.add(c::DROP_TUN_WRITE, packets);
                false
            }
        }
    }
}
