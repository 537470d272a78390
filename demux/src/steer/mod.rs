//! Flow steering: which gateway pair carries each packet leaving the site.
//!
//! Everything here is sans-IO: no sockets, no clock (time arrives as `now_ms`), no allocation
//! after construction, so the demux data thread drives it and tests replay it exactly.
//!
//! * [`hash`]: the symmetric, keyed, host-independent flow hash ([`FlowHasher`]).
//! * [`key`]: the canonical (direction-free) form of a 5-tuple ([`FlowKey`]).
//! * [`maglev`]: the consistent-hash table over live pairs ([`MaglevTable`]), an immutable
//!   snapshot the control plane rebuilds on every membership change.
//! * [`flow_table`]: pins each flow to the pair it started on ([`FlowTable`]).
//! * [`fragments`]: later fragments follow their first fragment ([`FragmentTable`]), or, when
//!   it is unknown, go by their addresses (the fragment policy and its trade-off are there).
//!
//! [`Steering`] ties them together for one data thread. A packet is classified, hashed once,
//! and that one hash picks the flow-table buckets, the tag and (for a new flow) the Maglev slot.
//! Packets returning from a gateway pair are [`Steering::learn`]ed so a flow started by the
//! other site goes back over the pair it came on.
//!
//! Every limit is counted: [`Steering::take_counts`] hands over what the flow table did to
//! half-open TCP flows and what the fragment cache hit, missed and evicted
//! ([`STEER_COUNTERS`]), for the data path to add to its exported counters.

pub mod flow_table;
pub mod fragments;
pub mod hash;
pub mod key;
pub mod maglev;

use std::sync::{Arc, Mutex};

use braid_core::flow::{Classified, FiveTuple, FragmentId, PairId};

pub use flow_table::{FlowTable, HalfOpenCounts, IdleTimeouts, Learned};
pub use fragments::{FragmentCounts, FragmentTable, DEFAULT_FRAGMENT_CAPACITY, DEFAULT_FRAGMENT_TTL_MS};
pub use hash::FlowHasher;
pub use key::FlowKey;
pub use maglev::{MaglevError, MaglevTable, DEFAULT_TABLE_SIZE};

/// Packets whose flow-table lookups [`Steering::steer_batch`] overlaps.
pub const PREFETCH_WINDOW: usize = 16;

/// [`Steering::sweep`] walks the whole flow table once in this time, however busy the thread
/// is: expired flows are freed within about this of expiring, and the census of pinned flows
/// per pair (what a drain waits on, what `braid status` shows) is republished this often.
pub const SWEEP_PASS_MS: u64 = 1_000;

/// [`Steering::sweep`] waits until at least this many slots are due, so that a busy thread
/// calling it per batch does not pay a call's overhead for a handful of slots.
const SWEEP_MIN_SLOTS: usize = 1_024;

/// The counters [`Steering::take_counts`] reports, in its order.
pub const STEER_COUNTERS: [&str; 7] = [
    "tcp_half_open_created",
    "tcp_half_open_promoted",
    "tcp_half_open_expired",
    "tcp_half_open_evicted",
    "fragment_cache_hits",
    "fragment_cache_misses",
    "fragment_cache_evictions",
];

/// How a packet's pair was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The flow's pin, on a live pair.
    Established,
    /// A new (or expired) flow: chosen by Maglev and pinned.
    New,
    /// The pinned pair left the membership: chosen again by Maglev and re-pinned.
    Moved,
    /// The flow table had no room: chosen by Maglev and not pinned.
    Unpinned,
    /// A later fragment, sent where its datagram's first fragment went.
    FragmentFollowed,
    /// A later fragment whose first fragment's pair is unknown (or left): chosen by Maglev over
    /// its addresses and protocol, not pinned.
    FragmentByAddresses,
}

impl Outcome {
    /// Every outcome, in [`Outcome::index`] order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Established,
        Outcome::New,
        Outcome::Moved,
        Outcome::Unpinned,
        Outcome::FragmentFollowed,
        Outcome::FragmentByAddresses,
    ];

    /// Counter names, indexed by [`Outcome::index`].
    pub const NAMES: [&'static str; 6] = [
        "steer_established",
        "steer_new",
        "steer_moved",
        "steer_unpinned",
        "steer_fragment_followed",
        "steer_fragment_by_addresses",
    ];

    /// Position in [`Outcome::ALL`] and [`Outcome::NAMES`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A name fit for a counter.
    pub fn name(self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// Why a packet could not be steered. Each is a counted drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteerDrop {
    /// No gateway pair is live.
    NoLivePair,
}

impl SteerDrop {
    /// Counter names, indexed by [`SteerDrop::index`].
    pub const NAMES: [&'static str; 1] = ["drop_no_live_pair"];

    /// Position in [`SteerDrop::NAMES`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A name fit for a counter.
    pub fn name(self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// The pair a packet goes to, and how it was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steered {
    pub pair: PairId,
    pub outcome: Outcome,
}

/// One data thread's steering state: hasher, flow table, fragment table, membership snapshot.
#[derive(Debug)]
pub struct Steering {
    hasher: FlowHasher,
    flows: FlowTable,
    /// Shared by every data thread (a later fragment has no 5-tuple, so no owner); locked
    /// for fragments only.
    fragments: Arc<Mutex<FragmentTable>>,
    membership: Arc<MaglevTable>,
    /// When [`Steering::sweep`] last examined slots.
    swept_at_ms: u64,
}

impl Steering {
    /// Steering for up to `table_capacity` pinned flows, with no members until
    /// [`Steering::set_membership`].
    pub fn new(hasher: FlowHasher, table_capacity: usize, timeouts: IdleTimeouts) -> Steering {
        let fragments = FragmentTable::new(DEFAULT_FRAGMENT_CAPACITY, DEFAULT_FRAGMENT_TTL_MS);
        Steering::with_fragments(hasher, table_capacity, timeouts, Arc::new(Mutex::new(fragments)))
    }

    /// Steering for one of several data threads, which share `fragments`.
    pub fn with_fragments(
        hasher: FlowHasher,
        table_capacity: usize,
        timeouts: IdleTimeouts,
        fragments: Arc<Mutex<FragmentTable>>,
    ) -> Steering {
        Steering {
            hasher,
            flows: FlowTable::new(table_capacity, timeouts),
            fragments,
            membership: Arc::new(MaglevTable::empty()),
            swept_at_ms: 0,
        }
    }

    /// Installs a new membership snapshot. Pinned flows on pairs still in it stay put; flows on
    /// pairs that left are moved when their next packet arrives.
    pub fn set_membership(&mut self, membership: Arc<MaglevTable>) {
        self.membership = membership;
    }

    /// The membership snapshot in force.
    pub fn membership(&self) -> &Arc<MaglevTable> {
        &self.membership
    }

    /// The pair an outgoing packet goes to.
    pub fn steer(&mut self, packet: &Classified, now_ms: u64) -> Result<Steered, SteerDrop> {
        let flow = self.flow_of(packet);
        self.steer_flow(packet, flow, now_ms)
    }

    /// Steers a batch of packets, reporting each result with its index. Same decisions as
    /// [`Steering::steer`] packet by packet, but the flow-table misses of up to
    /// [`PREFETCH_WINDOW`] packets are started together: about 4× the throughput on tables much
    /// larger than the CPU cache (figures in [`flow_table`]).
    pub fn steer_batch(
        &mut self,
        packets: &[Classified],
        now_ms: u64,
        mut each: impl FnMut(usize, Result<Steered, SteerDrop>),
    ) {
        for (chunk_index, chunk) in packets.chunks(PREFETCH_WINDOW).enumerate() {
            // Three passes, so no pass waits on a miss another packet could be overlapping:
            // hash and prefetch tag groups, match tags and prefetch entries, then steer.
            let mut flows = [None; PREFETCH_WINDOW];
            for (slot, packet) in flows.iter_mut().zip(chunk) {
                *slot = self.flow_of(packet);
                if let Some((hash, _)) = slot {
                    self.flows.prefetch_buckets(*hash);
                }
            }
            for (hash, _) in flows.iter().flatten() {
                self.flows.prefetch_entries(*hash);
            }
            for (i, (packet, flow)) in chunk.iter().zip(flows).enumerate() {
                each(chunk_index * PREFETCH_WINDOW + i, self.steer_flow(packet, flow, now_ms));
            }
        }
    }

    /// Records a packet that arrived from gateway pair `from`, so the flow's packets in the
    /// other direction take the same pair. `None` for a later fragment (no 5-tuple).
    pub fn learn(&mut self, packet: &Classified, from: PairId, now_ms: u64) -> Option<Learned> {
        let flow = self.flow_of(packet);
        self.learn_flow(packet, flow, from, now_ms)
    }

    /// [`Steering::learn`] once the packet's flow (if it has one) has been hashed
    /// ([`Steering::flow_of`]).
    pub fn learn_flow(
        &mut self,
        packet: &Classified,
        flow: Option<(u64, FlowKey)>,
        from: PairId,
        now_ms: u64,
    ) -> Option<Learned> {
        let (hash, key) = flow?;
        let tcp_flags = match *packet {
            Classified::Whole { tcp_flags, .. } | Classified::FirstFragment { tcp_flags, .. } => tcp_flags,
            Classified::LaterFragment { .. } => 0,
        };
        let members = &*self.membership;
        Some(
            self.flows
                .learn(hash, &key, tcp_flags, now_ms, from, |p| members.serves(p)),
        )
    }

    /// Frees up to `budget` slots' worth of expired flows; returns how many were freed.
    pub fn expire(&mut self, now_ms: u64, budget: usize) -> usize {
        self.flows.expire(now_ms, budget)
    }

    /// Sweeps the share of the flow table that the time since the last sweep is due, so a
    /// full pass takes [`SWEEP_PASS_MS`] whether this is called per batch on a busy thread or
    /// on an idle tick. Returns how many expired flows it freed.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let slots = self.flows.slots();
        let elapsed = now_ms.saturating_sub(self.swept_at_ms);
        let due = (slots as u128 * u128::from(elapsed) / u128::from(SWEEP_PASS_MS)).min(slots as u128) as usize;
        if due < SWEEP_MIN_SLOTS.min(slots) {
            return 0;
        }
        self.swept_at_ms = now_ms;
        self.flows.expire(now_ms, due)
    }

    /// Occupied flow-table slots (live flows plus expired ones not yet swept).
    pub fn live_flows(&self) -> usize {
        self.flows.len()
    }

    /// The flows the flow table is sized for ([`FlowTable::capacity`]).
    pub fn flow_capacity(&self) -> usize {
        self.flows.capacity()
    }

    /// The [`STEER_COUNTERS`] since the last call, which restarts them from zero.
    pub fn take_counts(&mut self) -> [u64; STEER_COUNTERS.len()] {
        let h = self.flows.take_half_open_counts();
        let f = match self.fragments.try_lock() {
            Ok(mut fragments) => fragments.take_counts(),
            // Another thread holds it: its counts wait for the next call.
            Err(_) => FragmentCounts::default(),
        };
        [
            h.created,
            h.promoted,
            h.expired,
            h.evicted,
            f.hits,
            f.misses,
            f.evictions,
        ]
    }

    /// The flow table, for its size and memory figures.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The flow hash of a 5-tuple (direction-free).
    pub fn hash_tuple(&self, tuple: &FiveTuple) -> u64 {
        self.hasher.hash_key(&FlowKey::new(tuple))
    }

    /// The hash and canonical key of a packet that carries a 5-tuple.
    pub fn flow_of(&self, packet: &Classified) -> Option<(u64, FlowKey)> {
        let key = FlowKey::new(packet.tuple()?);
        Some((self.hasher.hash_key(&key), key))
    }

    /// [`Steering::steer`] once the packet's flow (if it has one) has been hashed
    /// ([`Steering::flow_of`]).
    pub fn steer_flow(
        &mut self,
        packet: &Classified,
        flow: Option<(u64, FlowKey)>,
        now_ms: u64,
    ) -> Result<Steered, SteerDrop> {
        let (tcp_flags, head_of) = match *packet {
            Classified::Whole { tcp_flags, .. } => (tcp_flags, None),
            Classified::FirstFragment { frag, tcp_flags, .. } => (tcp_flags, Some(frag)),
            Classified::LaterFragment { frag } => return self.follow_fragment(&frag, now_ms),
        };
        // `flow` comes from `flow_of`, which hashes every packet that carries a 5-tuple.
        let (hash, key) = flow.ok_or(SteerDrop::NoLivePair)?;
        let members = &*self.membership;
        let steered = self
            .flows
            .lookup_or_insert(
                hash,
                &key,
                tcp_flags,
                now_ms,
                |p| members.serves(p),
                || members.lookup(hash),
            )
            .ok_or(SteerDrop::NoLivePair)?;
        if let Some(frag) = head_of {
            let frag_hash = self.hasher.hash_fragment(&frag);
            self.fragments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(frag_hash, frag, steered.pair, now_ms);
        }
        Ok(steered)
    }

    /// A later fragment: its first fragment's pair, else the pair of its addresses (see
    /// [`fragments`] for the policy).
    fn follow_fragment(&mut self, frag: &FragmentId, now_ms: u64) -> Result<Steered, SteerDrop> {
        let hash = self.hasher.hash_fragment(frag);
        let members = &*self.membership;
        let followed = self
            .fragments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(hash, frag, now_ms, |p| members.serves(p));
        if let Some(pair) = followed {
            return Ok(Steered {
                pair,
                outcome: Outcome::FragmentFollowed,
            });
        }
        let addresses = FlowKey::new(&FiveTuple {
            src: frag.src,
            dst: frag.dst,
            src_port: 0,
            dst_port: 0,
            proto: frag.proto,
        });
        let pair = members
            .lookup(self.hasher.hash_key(&addresses))
            .ok_or(SteerDrop::NoLivePair)?;
        Ok(Steered {
            pair,
            outcome: Outcome::FragmentByAddresses,
        })
    }
}

#[cfg(test)]
mod tests;

/// A 5-tuple from its written form, for the tests of the steering modules.
#[cfg(test)]
pub(crate) fn written_tuple(
    src: &str,
    src_port: u16,
    dst: &str,
    dst_port: u16,
    proto: u8,
) -> braid_core::flow::FiveTuple {
    braid_core::flow::FiveTuple {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port,
        dst_port,
        proto,
    }
}
