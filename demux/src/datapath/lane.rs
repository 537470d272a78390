//! One data thread: its queue, its socket, its flow table, its loop.

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use braid_core::flow::Classified;
use braid_core::udp::{RecvBatch, SendBatch};
use braid_core::wire::{self, geneve, WireError};
use rustix::event::{PollFd, PollFlags, Timespec};

use super::handoff::{Direction, Shed};
use super::{c, owner_of, DataPath, DemuxStats, Published, Snapshot, BATCH, CANARY_INTERVAL_MS, HEADROOM};
use crate::canary::Canary;
use crate::offload::{Coalescer, MAX_SUPER_PACKET, VNET_HEADER_LEN};
use crate::steer::{FlowKey, Steering};
use crate::tun::Tun;

/// How long an idle thread sleeps at most before it sweeps its flow table and probes.
const IDLE_POLL_MS: i64 = 100;

/// The descriptors a data thread owns.
#[derive(Debug)]
pub struct LaneIo {
    pub tun: Tun,
    pub socket: UdpSocket,
}

/// One data thread's state. Everything here is touched by that thread only.
#[derive(Debug)]
pub struct Lane {
    pub(super) id: usize,
    pub(super) path: Arc<DataPath>,
    pub(super) io: LaneIo,
    pub(super) steering: Steering,
    pub(super) canary: Canary,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) stats: Arc<DemuxStats>,
    /// Threads this round handed parcels to, to wake at its end.
    wake: Vec<bool>,
    next_probe_ms: u64,
}

/// Whether a packet is this thread's to process.
pub(super) enum Claim {
    /// Ours: its classification and, if it has a 5-tuple, its flow (hash and key).
    Mine(Classified, Option<(u64, FlowKey)>),
    /// Thread `owner`'s.
    Theirs(usize),
    /// Not a packet; counted by the caller.
    Malformed(WireError),
}

/// The buffers of one thread's loop, allocated once.
pub(super) struct Buffers {
    pub send: SendBatch,
    pub recv: RecvBatch,
    pub coalescer: Coalescer,
    /// Offload mode: one TUN read (vnet header and super-packet).
    pub read_scratch: Vec<u8>,
    /// Offload mode: one coalesced super-packet to write.
    pub write_scratch: Vec<u8>,
    /// Where each received datagram's inner packet starts.
    pub inner_at: Vec<usize>,
    /// Inbound parcels accepted this round, until they are written.
    pub held: Vec<super::handoff::Parcel>,
}

impl Lane {
    pub fn new(id: usize, path: Arc<DataPath>, io: LaneIo, steering: Steering, canary: Canary) -> Lane {
        let snapshot = path.snapshot.load();
        let stats = path.stats.thread(id).clone();
        let threads = path.mesh.threads();
        let mut lane = Lane {
            id,
            path,
            io,
            steering,
            canary,
            snapshot: snapshot.clone(),
            stats,
            wake: vec![false; threads],
            next_probe_ms: 0,
        };
        lane.adopt(snapshot);
        lane
    }

    /// Runs the thread's loop until the demux stops.
    pub fn run(mut self) {
        let offload = self.io.tun.offload();
        let mtu = usize::from(self.path.mtu);
        let mut bufs = Buffers {
            send: SendBatch::new(BATCH, HEADROOM + mtu + 64),
            recv: RecvBatch::new(BATCH, (geneve::GENEVE_HEADER_LEN + 256 + mtu + 64).max(2048)),
            coalescer: Coalescer::new(BATCH),
            read_scratch: if offload {
                vec![0; VNET_HEADER_LEN + MAX_SUPER_PACKET + 1]
            } else {
                Vec::new()
            },
            write_scratch: if offload {
                vec![0; VNET_HEADER_LEN + MAX_SUPER_PACKET]
            } else {
                Vec::new()
            },
            inner_at: vec![0; BATCH],
            held: Vec::with_capacity(BATCH),
        };
        let mut busy = true;
        while !self.path.stop.is_stopped() {
            if !busy {
                match self.sleep() {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::error!(thread = self.id, "polling failed: {e}");
                        return;
                    }
                }
            }
            let latest = self.path.snapshot.load();
            if latest.version != self.snapshot.version {
                self.adopt(latest);
            }
            let now = self.path.now_ms();
            if now >= self.next_probe_ms {
                self.next_probe_ms = now + CANARY_INTERVAL_MS;
                self.probe_owned_pairs(&mut bufs.send, now);
                self.publish();
            }
            let more_out = if offload {
                self.read_offloaded(&mut bufs.send, &mut bufs.read_scratch, now)
            } else {
                self.read_plain(&mut bufs.send, now)
            };
            let more_in = self.receive(&mut bufs, now);
            let more_handed = self.take_parcels(&mut bufs, now);
            self.flush(&mut bufs.send);
            self.wake_owners();
            self.steering.sweep(now);
            self.stats
                .live_flows
                .store(self.steering.live_flows() as u64, Ordering::Relaxed);
            self.publish_counts();
            busy = more_out || more_in || more_handed;
        }
    }

    /// Sleeps until the queue, the socket or the wake-up eventfd is readable, or the idle
    /// timeout passes.
    fn sleep(&mut self) -> std::io::Result<()> {
        let mesh = &self.path.mesh;
        if mesh.may_sleep(self.id) {
            let mut fds = [
                PollFd::new(&self.io.tun, PollFlags::IN),
                PollFd::new(&self.io.socket, PollFlags::IN),
                PollFd::from_borrowed_fd(mesh.wake_fd(self.id), PollFlags::IN),
            ];
            let timeout = Timespec {
                tv_sec: 0,
                tv_nsec: IDLE_POLL_MS * 1_000_000,
            };
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    mesh.woke(self.id);
                    return Err(e.into());
                }
            }
        }
        mesh.woke(self.id);
        Ok(())
    }

    /// Starts steering by a new snapshot; pairs that joined get canaries.
    fn adopt(&mut self, snapshot: Arc<Snapshot>) {
        self.steering.set_membership(snapshot.membership.clone());
        for pair in snapshot.gateways.pair_ids() {
            self.canary.add_pair(pair);
        }
        self.snapshot = snapshot;
    }

    /// Whose packet this is: classifies it and, when `may_hand_off`, finds its owner.
    pub(super) fn claim(&self, packet: &[u8], may_hand_off: bool) -> Claim {
        let class = match wire::classify(packet) {
            Ok(class) => class,
            Err(e) => return Claim::Malformed(e),
        };
        let flow = self.steering.flow_of(&class);
        if may_hand_off {
            if let Some((hash, _)) = flow {
                let owner = owner_of(hash, self.path.mesh.threads());
                if owner != self.id {
                    return Claim::Theirs(owner);
                }
            }
        }
        Claim::Mine(class, flow)
    }

    /// Hands `bytes` to thread `owner`, counting it, or counting why it was shed; returns
    /// whether it went.
    pub(super) fn hand_off(&mut self, owner: usize, direction: Direction, bytes: &[u8], packets: u64) -> bool {
        let counter = match self.path.mesh.send(self.id, owner, direction, bytes) {
            Ok(()) => {
                self.stats.counters.add(c::HANDED_OFF, packets);
                self.wake[owner] = true;
                return true;
            }
            Err(Shed::NoBuffer) => c::DROP_HANDOFF_NO_BUFFER,
            Err(Shed::InboxFull) => c::DROP_HANDOFF_INBOX_FULL,
            Err(Shed::TooLarge) => c::DROP_OVERSIZE,
        };
        self.stats.counters.add(counter, packets);
        false
    }

    fn wake_owners(&mut self) {
        for (owner, wake) in self.wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                self.path.mesh.wake(owner);
            }
        }
    }

    /// Processes what the other threads handed to this one (at most a batch of each kind);
    /// returns whether more may be waiting.
    fn take_parcels(&mut self, bufs: &mut Buffers, now: u64) -> bool {
        let mut held = std::mem::take(&mut bufs.held);
        let mut taken = 0;
        while taken < BATCH {
            let Some(mut parcel) = self.path.mesh.receive(self.id) else {
                break;
            };
            taken += 1;
            match parcel.direction {
                Direction::Outbound => {
                    if self.io.tun.offload() {
                        self.forward_raw(&mut bufs.send, parcel.bytes_mut(), now, false);
                    } else {
                        self.forward_plain_copy(&mut bufs.send, parcel.bytes_mut(), now);
                    }
                    self.path.mesh.recycle(parcel);
                }
                Direction::Inbound { pair, from } => {
                    if self.accept_owned(parcel.bytes_mut(), pair, from, now) {
                        held.push(parcel);
                    } else {
                        self.path.mesh.recycle(parcel);
                    }
                }
            }
        }
        self.write_parcels(&held, &mut bufs.coalescer, &mut bufs.write_scratch);
        for parcel in held.drain(..) {
            self.path.mesh.recycle(parcel);
        }
        bufs.held = held;
        taken == BATCH
    }

    /// Sends one canary probe through every pair whose canary flow this thread owns (see
    /// [`crate::canary`]).
    fn probe_owned_pairs(&mut self, batch: &mut SendBatch, now: u64) {
        let snapshot = self.snapshot.clone();
        for slot in 0..snapshot.gateways.len() {
            let (pair, addr) = snapshot.gateways.get(slot);
            let owner = match self.canary.probe_tuple(pair) {
                Some(tuple) => owner_of(self.steering.hash_tuple(&tuple), self.path.mesh.threads()),
                None => 0,
            };
            if owner != self.id {
                continue;
            }
            if batch.is_full() {
                self.flush(batch);
            }
            let Some(buf) = batch.next_buf() else { return };
            let len = self.canary.probe(pair, now, &mut buf[HEADROOM..]);
            if len == 0 {
                continue;
            }
            let ethertype = super::ethertype_of(&buf[HEADROOM..HEADROOM + len]);
            geneve::write_header(&mut buf[..HEADROOM], u32::from(pair), ethertype);
            batch.commit(HEADROOM + len, addr);
        }
    }

    /// Publishes this thread's canary results and flow census, unless the control thread is
    /// reading them right now (then next time).
    fn publish(&self) {
        let Ok(mut published) = self.path.published[self.id].try_lock() else {
            return;
        };
        let Published { canary, pinned } = &mut *published;
        canary.clear();
        canary.extend(self.canary.pairs().map(|(p, c)| (p, *c)));
        pinned.clear();
        pinned.extend_from_slice(self.steering.flows().pinned_per_pair());
    }

    /// Adds what the steering tables counted since the last call to the exported counters.
    fn publish_counts(&mut self) {
        for (i, n) in self.steering.take_counts().into_iter().enumerate() {
            if n != 0 {
                self.stats.steering.add(i, n);
            }
        }
    }
}
