//! One data thread's loop: its queue, its socket, its [`Processor`].

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Instant;

use braid_core::udp::{ReceiveDrops, RecvBatch, SendBatch};
use braid_core::wire::geneve;
use rustix::event::{PollFd, PollFlags, Timespec};

use super::handoff::{Direction, Parcel, Shed};
use super::processor::{InboundVerdict, Processor};
use super::{c, DataPath, Published, BATCH, CANARY_INTERVAL_MS, HEADROOM};
use crate::offload::{Coalescer, MAX_SUPER_PACKET, VNET_HEADER_LEN};
use crate::tun::Tun;

/// How long an idle thread sleeps at most before it sweeps its flow table and probes.
const IDLE_POLL_MS: i64 = 100;

/// Which of a thread's descriptors may have something to read this round. After a sleep,
/// `poll` says exactly which; after a busy round, anything may.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    tun: bool,
    socket: bool,
}

impl Readiness {
    const ANY: Readiness = Readiness {
        tun: true,
        socket: true,
    };
}

/// The descriptors a data thread owns.
#[derive(Debug)]
pub struct LaneIo {
    pub tun: Tun,
    pub socket: UdpSocket,
}

/// One data thread: the descriptors it owns and its processor.
#[derive(Debug)]
pub struct Lane {
    pub(super) id: usize,
    pub(super) path: Arc<DataPath>,
    pub(super) io: LaneIo,
    pub(super) proc: Processor,
    /// Threads this round handed parcels to, to wake at its end.
    wake: Vec<bool>,
    next_probe_ms: u64,
    /// What the kernel dropped at this thread's socket, read every canary interval.
    socket_drops: ReceiveDrops,
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
    pub held: Vec<Parcel>,
}

impl Lane {
    pub fn new(id: usize, path: Arc<DataPath>, io: LaneIo, proc: Processor) -> Lane {
        let threads = path.mesh.threads();
        let socket_drops = ReceiveDrops::new(&io.socket);
        Lane {
            id,
            path,
            io,
            proc,
            wake: vec![false; threads],
            next_probe_ms: 0,
            socket_drops,
        }
    }

    /// Runs the thread's loop until the demux stops.
    pub fn run(mut self) {
        let offload = self.io.tun.offload();
        let mtu = usize::from(self.path.rules.mtu);
        let mut bufs = Buffers {
            send: SendBatch::new(BATCH, HEADROOM + mtu + 64),
            recv: RecvBatch::new(BATCH, (geneve::GENEVE_HEADER_LEN + 256 + mtu + 64).max(2048)),
            coalescer: {
                let mut coalescer = Coalescer::new(BATCH);
                coalescer.set_udp(self.path.udp_coalescing);
                coalescer
            },
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
        let mut idle_since: Option<Instant> = None;
        while !self.path.stop.is_stopped() {
            let mut ready = Readiness::ANY;
            if busy {
                idle_since = None;
            } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= self.path.busy_poll {
                // The busy-poll budget is spent (or zero): sleep until there is work.
                idle_since = None;
                ready = match self.sleep() {
                    Ok(ready) => ready,
                    Err(e) => {
                        tracing::error!(thread = self.id, "polling failed: {e}");
                        return;
                    }
                };
            }
            let latest = self.path.snapshot.load();
            if latest.version != self.proc.snapshot().version {
                self.proc.adopt(latest);
            }
            let now = self.path.now_ms();
            if now >= self.next_probe_ms {
                self.next_probe_ms = now + CANARY_INTERVAL_MS;
                self.probe_owned_pairs(&mut bufs.send, now);
                let overflowed = self.socket_drops.take(&self.io.socket);
                self.proc.stats.counters.add(c::DROP_GENEVE_SOCKET_FULL, overflowed);
                self.publish();
                self.path.progress[self.id].mark();
            }
            // A descriptor `poll` found empty is not read: at low rates that is most of a
            // round's system calls, each of which would only have said "nothing".
            let more_out = match (ready.tun, offload) {
                (false, _) => false,
                (true, true) => self.read_offloaded(&mut bufs.send, &mut bufs.read_scratch, now),
                (true, false) => self.read_plain(&mut bufs.send, now),
            };
            let more_in = ready.socket && self.receive(&mut bufs, now);
            let more_handed = self.take_parcels(&mut bufs, now);
            self.flush(&mut bufs.send);
            self.wake_owners();
            self.proc.steering.sweep(now);
            self.proc.publish_counts();
            busy = more_out || more_in || more_handed;
        }
    }

    /// Sleeps until the queue, the socket or the wake-up eventfd is readable, or the idle
    /// timeout passes; returns which of the queue and the socket to read.
    ///
    /// The eventfd is read (cleared) only when `poll` found it signalled. A wake-up written
    /// after that, or while the inbox was not empty and the thread did not sleep, leaves it
    /// signalled: the next `poll` returns at once and clears it, a spurious wake-up at worst.
    fn sleep(&mut self) -> std::io::Result<Readiness> {
        let mesh = &self.path.mesh;
        if !mesh.may_sleep(self.id) {
            mesh.woke(self.id, false);
            return Ok(Readiness::ANY);
        }
        let mut fds = [
            PollFd::new(&self.io.tun, PollFlags::IN),
            PollFd::new(&self.io.socket, PollFlags::IN),
            PollFd::from_borrowed_fd(mesh.wake_fd(self.id), PollFlags::IN),
        ];
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: IDLE_POLL_MS * 1_000_000,
        };
        let polled = rustix::event::poll(&mut fds, Some(&timeout));
        // Any event counts, an error or a hang-up too: the read that follows reports it.
        let signalled = |fd: &PollFd| !fd.revents().is_empty();
        mesh.woke(self.id, signalled(&fds[2]));
        match polled {
            Ok(_) => Ok(Readiness {
                tun: signalled(&fds[0]),
                socket: signalled(&fds[1]),
            }),
            // Interrupted: nothing is known, so everything is read.
            Err(rustix::io::Errno::INTR) => Ok(Readiness::ANY),
            Err(e) => Err(e.into()),
        }
    }

    /// Hands `bytes` to thread `owner`, counting it, or counting why it was shed; returns
    /// whether it went.
    pub(super) fn hand_off(&mut self, owner: usize, direction: Direction, bytes: &[u8], packets: u64) -> bool {
        let counter = match self.path.mesh.send(self.id, owner, direction, bytes) {
            Ok(()) => {
                self.proc.stats.counters.add(c::HANDED_OFF, packets);
                if direction == Direction::Outbound {
                    self.proc.stats.counters.add(c::HANDED_OFF_FROM_TUN, packets);
                }
                self.wake[owner] = true;
                return true;
            }
            Err(Shed::NoBuffer) => c::DROP_HANDOFF_NO_BUFFER,
            Err(Shed::InboxFull) => c::DROP_HANDOFF_INBOX_FULL,
            Err(Shed::TooLarge) => c::DROP_OVERSIZE,
        };
        self.proc.stats.counters.add(counter, packets);
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
        // Shared by the round's parcels, as `receive` shares them among a batch's datagrams.
        let mut reply = [0u8; HEADROOM + 128];
        let now_us = self.path.now_us();
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
                Direction::Inbound { pair, from, claimed } => {
                    match self
                        .proc
                        .inbound_inner(parcel.bytes_mut(), &claimed, pair, now, now_us, &mut reply)
                    {
                        InboundVerdict::Deliver { .. } => held.push(parcel),
                        verdict => {
                            self.answer(verdict, &reply, from);
                            self.path.mesh.recycle(parcel);
                        }
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
        for pair in self.proc.snapshot().gateways.pair_ids() {
            if batch.is_full() {
                self.flush(batch);
            }
            let Some(buf) = batch.next_buf() else { return };
            if let Some((len, addr)) = self.proc.probe(pair, now, buf) {
                batch.commit(len, addr);
            }
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
        canary.extend(self.proc.canary.pairs().map(|(p, c)| (p, *c)));
        pinned.clear();
        pinned.extend_from_slice(self.proc.steering.flows().pinned_per_pair());
    }
}
