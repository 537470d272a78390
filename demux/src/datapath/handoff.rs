//! Handing a packet to the data thread that owns its flow.
//!
//! Every flow has one owner thread ([`super::owner_of`], from its 5-tuple), and only the
//! owner touches the flow's entry in its flow table, so no table is shared and none is locked.
//! The kernel decides which thread *reads* a packet (the TUN queue it lands on, the GENEVE
//! socket `SO_REUSEPORT` picks); a thread that reads a packet it does not own copies it into a
//! [`Parcel`] and pushes it into the owner's inbox. On the TUN side that is the exception: the
//! demux's steering program ([`braid_sys::steer`]) has the kernel queue every packet for its
//! owner, so only a packet the program places differently (or every other packet, on a kernel
//! or host that refused the program) comes here. On the GENEVE side it is the rule for half
//! the packets of two threads: the kernel spreads datagrams by gateway, not by flow.
//!
//! Order: one flow's packets reach its owner through one path — the owner's own queue or
//! socket, or one reader's inbox, which is first in, first out — so a flow is never reordered
//! by the handoff.
//!
//! Memory: each thread has a pool of preallocated buffers (small ones for packets, a few large
//! ones for TCP super-packets) that it fills and the owner returns after use; inboxes are
//! bounded lock-free queues (`crossbeam-queue`). Nothing is allocated per packet. When the
//! reader's pool is empty or the owner's inbox is full, the packet is shed right there, at the
//! reader — the demux's ingress — and counted ([`Shed`]); it never stalls the reader.
//!
//! Wake-ups: a thread about to sleep in `poll` raises its `sleeping` flag and looks at its
//! inbox once more; a sender that finds the flag raised writes the owner's eventfd, which the
//! owner polls with its TUN queue and socket. Both sides use sequentially consistent
//! operations, so a parcel is never left waiting for the next timeout.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use braid_core::flow::PairId;
use crossbeam_queue::ArrayQueue;
use rustix::event::{eventfd, EventfdFlags};

use super::processor::Claimed;

/// Which way a handed-off packet goes, and what the reader learnt about it already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Read from the TUN (in offload mode, with its vnet header), bound for a gateway.
    Outbound,
    /// An inner packet that arrived in GENEVE from pair `pair`'s gateway at `from` (already
    /// checked to be that pair's gateway with that pair's VNI), bound for the TUN, with what
    /// the receiving thread learnt of it.
    Inbound {
        pair: PairId,
        from: SocketAddr,
        claimed: Claimed,
    },
}

/// One packet in transit between two data threads.
#[derive(Debug)]
pub struct Parcel {
    pub direction: Direction,
    buf: Vec<u8>,
    len: usize,
    large: bool,
    /// The thread whose pool the buffer goes back to.
    home: usize,
}

impl Parcel {
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

/// Why a packet could not be handed off (it is dropped and counted by the reader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// The reader's buffers are all in flight: the owner is not keeping up.
    NoBuffer,
    /// The owner's inbox is full: the owner is not keeping up.
    InboxFull,
    /// Larger than a large buffer (cannot happen for what a TUN or a socket delivers).
    TooLarge,
}

/// How many buffers and parcels a [`Mesh`] holds.
#[derive(Clone, Copy, Debug)]
pub struct MeshSizes {
    pub small_bytes: usize,
    pub small_per_thread: usize,
    pub large_bytes: usize,
    pub large_per_thread: usize,
    pub inbox: usize,
}

#[derive(Debug)]
struct Mailbox {
    inbox: ArrayQueue<Parcel>,
    sleeping: AtomicBool,
    wake: OwnedFd,
}

#[derive(Debug)]
struct Pool {
    small: ArrayQueue<Vec<u8>>,
    large: ArrayQueue<Vec<u8>>,
}

/// The inboxes and buffer pools of all data threads.
#[derive(Debug)]
pub struct Mesh {
    boxes: Vec<Mailbox>,
    pools: Vec<Pool>,
    sizes: MeshSizes,
}

impl Mesh {
    /// Inboxes and pools for `threads` threads, every buffer allocated now.
    pub fn new(threads: usize, sizes: MeshSizes) -> io::Result<Mesh> {
        let mut boxes = Vec::with_capacity(threads);
        let mut pools = Vec::with_capacity(threads);
        for _ in 0..threads {
            boxes.push(Mailbox {
                inbox: ArrayQueue::new(sizes.inbox.max(1)),
                sleeping: AtomicBool::new(false),
                wake: eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?,
            });
            let pool = Pool {
                small: ArrayQueue::new(sizes.small_per_thread.max(1)),
                large: ArrayQueue::new(sizes.large_per_thread.max(1)),
            };
            // With one thread nothing is ever handed off: no buffers.
            if threads > 1 {
                for _ in 0..sizes.small_per_thread {
                    let _ = pool.small.push(vec![0; sizes.small_bytes]);
                }
                for _ in 0..sizes.large_per_thread {
                    let _ = pool.large.push(vec![0; sizes.large_bytes]);
                }
            }
            pools.push(pool);
        }
        Ok(Mesh { boxes, pools, sizes })
    }

    pub fn threads(&self) -> usize {
        self.boxes.len()
    }

    /// Copies `bytes` into a buffer of thread `from`'s pool and queues it for thread `to`.
    /// The caller wakes `to` ([`Mesh::wake`]) once it has queued what it had for it.
    pub fn send(&self, from: usize, to: usize, direction: Direction, bytes: &[u8]) -> Result<(), Shed> {
        let large = bytes.len() > self.sizes.small_bytes;
        if large && bytes.len() > self.sizes.large_bytes {
            return Err(Shed::TooLarge);
        }
        let pool = &self.pools[from];
        let mut buf = if large { pool.large.pop() } else { pool.small.pop() }.ok_or(Shed::NoBuffer)?;
        buf[..bytes.len()].copy_from_slice(bytes);
        let parcel = Parcel {
            direction,
            buf,
            len: bytes.len(),
            large,
            home: from,
        };
        self.boxes[to].inbox.push(parcel).map_err(|parcel| {
            self.recycle(parcel);
            Shed::InboxFull
        })
    }

    /// Wakes thread `to` if it sleeps (its inbox has parcels).
    pub fn wake(&self, to: usize) {
        let mailbox = &self.boxes[to];
        if mailbox.sleeping.load(Ordering::SeqCst) {
            // A full eventfd counter (never, at 2^64 - 1) or a closed one only means the owner
            // is awake or gone.
            let _ = rustix::io::write(&mailbox.wake, &1u64.to_ne_bytes());
        }
    }

    /// The next parcel for thread `me`.
    #[inline]
    pub fn receive(&self, me: usize) -> Option<Parcel> {
        self.boxes[me].inbox.pop()
    }

    /// Gives a parcel's buffer back to its pool.
    pub fn recycle(&self, parcel: Parcel) {
        let pool = &self.pools[parcel.home];
        let queue = if parcel.large { &pool.large } else { &pool.small };
        // The pool has room for every buffer it ever gave out.
        let _ = queue.push(parcel.buf);
    }

    /// Thread `me` is about to sleep: raises its flag and says whether it may (its inbox is
    /// still empty). Call [`Mesh::woke`] after the sleep, or right away if this says no.
    pub fn may_sleep(&self, me: usize) -> bool {
        let mailbox = &self.boxes[me];
        mailbox.sleeping.store(true, Ordering::SeqCst);
        mailbox.inbox.is_empty()
    }

    /// Thread `me` is awake: lowers its flag and, if `signalled` (its poll found the eventfd
    /// readable), clears its eventfd. A signal left standing only wakes its next poll early.
    pub fn woke(&self, me: usize, signalled: bool) {
        let mailbox = &self.boxes[me];
        mailbox.sleeping.store(false, Ordering::SeqCst);
        if signalled {
            let mut counter = [0u8; 8];
            let _ = rustix::io::read(&mailbox.wake, &mut counter);
        }
    }

    /// The eventfd that wakes thread `me`, for its poll set.
    pub fn wake_fd(&self, me: usize) -> BorrowedFd<'_> {
        self.boxes[me].wake.as_fd()
    }

    /// Buffers of thread `thread`'s pool not in flight (small, large).
    pub fn free_buffers(&self, thread: usize) -> (usize, usize) {
        (self.pools[thread].small.len(), self.pools[thread].large.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> MeshSizes {
        MeshSizes {
            small_bytes: 16,
            small_per_thread: 3,
            large_bytes: 64,
            large_per_thread: 1,
            inbox: 4,
        }
    }

    #[test]
    fn parcels_arrive_in_order_and_their_buffers_go_home() {
        let mesh = Mesh::new(2, sizes()).unwrap();
        for i in 0..3u8 {
            mesh.send(0, 1, Direction::Outbound, &[i; 10]).unwrap();
        }
        assert_eq!(mesh.free_buffers(0), (0, 1));
        assert!(mesh.receive(0).is_none());
        for i in 0..3u8 {
            let parcel = mesh.receive(1).unwrap();
            assert_eq!(parcel.bytes(), &[i; 10]);
            mesh.recycle(parcel);
        }
        assert!(mesh.receive(1).is_none());
        assert_eq!(mesh.free_buffers(0), (3, 1));
    }

    #[test]
    fn an_empty_pool_or_a_full_inbox_sheds_without_losing_buffers() {
        let mesh = Mesh::new(3, sizes()).unwrap();
        for _ in 0..3 {
            mesh.send(0, 1, Direction::Outbound, b"x").unwrap();
        }
        assert_eq!(mesh.send(0, 1, Direction::Outbound, b"x"), Err(Shed::NoBuffer));
        // Thread 2 fills the last inbox slot of thread 1, then finds it full.
        mesh.send(2, 1, Direction::Outbound, &[7; 40]).unwrap();
        assert_eq!(mesh.send(2, 1, Direction::Outbound, b"y"), Err(Shed::InboxFull));
        assert_eq!(mesh.free_buffers(2), (3, 0), "the refused parcel's buffer is back");
        assert_eq!(mesh.send(2, 0, Direction::Outbound, &[0; 65]), Err(Shed::TooLarge));
        while let Some(parcel) = mesh.receive(1) {
            mesh.recycle(parcel);
        }
        assert_eq!(mesh.free_buffers(0), (3, 1));
        assert_eq!(mesh.free_buffers(2), (3, 1));
    }

    #[test]
    fn a_sleeper_with_mail_does_not_sleep_and_a_sender_wakes_a_sleeper() {
        let mesh = Mesh::new(2, sizes()).unwrap();
        assert!(mesh.may_sleep(1));
        mesh.send(0, 1, inbound_from_pair_3(), b"z").unwrap();
        mesh.wake(1);
        let mut fds = [rustix::event::PollFd::from_borrowed_fd(
            mesh.wake_fd(1),
            rustix::event::PollFlags::IN,
        )];
        assert_eq!(
            rustix::event::poll(&mut fds, None).unwrap(),
            1,
            "the eventfd is readable"
        );
        let signalled = || {
            let mut fds = [rustix::event::PollFd::from_borrowed_fd(
                mesh.wake_fd(1),
                rustix::event::PollFlags::IN,
            )];
            let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
            rustix::event::poll(&mut fds, Some(&zero)).unwrap() == 1
        };
        mesh.woke(1, false);
        assert!(
            signalled(),
            "a thread whose poll did not see the signal leaves it standing"
        );
        mesh.woke(1, true);
        assert!(!signalled(), "cleared once its poll saw it");
        mesh.wake(1);
        assert!(!signalled(), "a thread that is awake is not signalled");
        assert!(!mesh.may_sleep(1), "mail is waiting");
        let parcel = mesh.receive(1).unwrap();
        assert_eq!(parcel.direction, inbound_from_pair_3(), "with what the reader learnt");
    }

    /// An inbound parcel's direction: from pair 3, a later fragment as the reader classified it.
    fn inbound_from_pair_3() -> Direction {
        let frag = braid_core::flow::FragmentId {
            src: "198.18.2.9".parse().unwrap(),
            dst: "198.18.1.5".parse().unwrap(),
            proto: 17,
            id: 77,
        };
        Direction::Inbound {
            pair: 3,
            from: "198.18.0.1:1".parse().unwrap(),
            claimed: Claimed {
                class: braid_core::flow::Classified::LaterFragment { frag },
                flow: None,
            },
        }
    }
}
