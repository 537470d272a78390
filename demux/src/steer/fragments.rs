//! Where the later fragments of a datagram go: the pair its first fragment was steered to.
//!
//! ## Policy
//!
//! Only the first fragment carries ports, so it is steered like any packet of its 5-tuple (flow
//! table, then Maglev), and steering records `FragmentId → PairId` here; later fragments look
//! the pair up. A later fragment with no mapping — its first fragment was never seen, arrived
//! after it, or its mapping was overwritten — or whose mapping names a pair that left the
//! membership is steered by Maglev over a keyed hash of its addresses and protocol alone
//! ([`super::Steering`]), so every such fragment of one datagram takes one pair.
//!
//! This cache is separate from the flow table and holds nothing else, so no flood of fragments
//! can evict a flow: fragments only ever evict fragment mappings. It is small, fixed and
//! set-associative: the keyed fragment hash picks a set of four slots; an insert takes a slot
//! already holding this datagram, else a free or expired slot, else overwrites the set's oldest
//! entry (counted as an eviction). Entries live for a short TTL (2 s by default — reassembly on
//! the far side gives up long before a flow's idle timeout). Hits, misses and evictions are
//! counted ([`FragmentCounts`]).
//!
//! ## Trade-off
//!
//! A miss sends the later fragments over the addresses' pair, which may differ from the pair
//! the first fragment took. The datagram still arrives whole: both pairs reach the same peer
//! demux, and the destination host reassembles fragments whatever path each took; the cost is
//! reordering between the two halves of one datagram. The alternative — dropping fragments
//! without a mapping, as this demux once did — would let a flood of first fragments, which
//! overwrites mappings, turn into the loss of every live fragmented datagram. Steering every
//! fragment by addresses alone would need no cache at all, but would split a flow whose
//! packets are sometimes fragmented across two pairs for all its life, not just on a miss.

use braid_core::flow::{FragmentId, PairId};

/// Slots per set.
const WAYS: usize = 4;

/// Fragment mappings kept by default.
pub const DEFAULT_FRAGMENT_CAPACITY: usize = 4096;

/// How long a first fragment's pair is remembered by default.
pub const DEFAULT_FRAGMENT_TTL_MS: u64 = 2_000;

/// Fragment-cache lookups and evictions since the counts were last taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentCounts {
    /// Later fragments that found their first fragment's pair.
    pub hits: u64,
    /// Later fragments that found no (live) mapping.
    pub misses: u64,
    /// Live mappings overwritten by another datagram's first fragment.
    pub evictions: u64,
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    id: FragmentId,
    pair: PairId,
    /// Dead once `now_ms >= deadline_ms`.
    deadline_ms: u64,
}

/// Fixed-capacity `FragmentId → PairId` map with a TTL. See the module docs.
#[derive(Debug)]
pub struct FragmentTable {
    slots: Box<[Option<Mapping>]>,
    set_mask: usize,
    ttl_ms: u64,
    counts: FragmentCounts,
}

impl FragmentTable {
    /// Room for about `capacity` datagrams (rounded up to a power of two, at least one set).
    pub fn new(capacity: usize, ttl_ms: u64) -> FragmentTable {
        let sets = capacity.div_ceil(WAYS).clamp(1, 1 << 20).next_power_of_two();
        FragmentTable {
            slots: vec![None; sets * WAYS].into_boxed_slice(),
            set_mask: sets - 1,
            ttl_ms,
            counts: FragmentCounts::default(),
        }
    }

    /// Remembers that datagram `id` (with keyed fragment hash `hash`) was steered to `pair`.
    pub fn insert(&mut self, hash: u64, id: FragmentId, pair: PairId, now_ms: u64) {
        let set = self.set(hash);
        let slot = set
            .clone()
            .find(|&s| self.slots[s].is_some_and(|m| m.id == id))
            .or_else(|| {
                set.clone()
                    .find(|&s| self.slots[s].is_none_or(|m| m.deadline_ms <= now_ms))
            })
            .or_else(|| set.min_by_key(|&s| self.slots[s].map_or(0, |m| m.deadline_ms)));
        if let Some(slot) = slot {
            let evicted = self.slots[slot].is_some_and(|m| m.id != id && now_ms < m.deadline_ms);
            self.counts.evictions += u64::from(evicted);
            self.slots[slot] = Some(Mapping {
                id,
                pair,
                deadline_ms: now_ms.saturating_add(self.ttl_ms),
            });
        }
    }

    /// The pair datagram `id`'s first fragment went to, if still remembered and `usable`;
    /// counted as a hit, or else as a miss.
    pub fn lookup(
        &mut self,
        hash: u64,
        id: &FragmentId,
        now_ms: u64,
        usable: impl Fn(PairId) -> bool,
    ) -> Option<PairId> {
        let pair = self
            .set(hash)
            .filter_map(|s| self.slots[s])
            .find(|m| m.id == *id && now_ms < m.deadline_ms)
            .map(|m| m.pair)
            .filter(|&p| usable(p));
        match pair {
            Some(_) => self.counts.hits += 1,
            None => self.counts.misses += 1,
        }
        pair
    }

    /// Lookups and evictions since the last call; the counts restart from zero.
    pub fn take_counts(&mut self) -> FragmentCounts {
        std::mem::take(&mut self.counts)
    }

    /// Slots holding a mapping that has not expired at `now_ms`.
    pub fn live(&self, now_ms: u64) -> usize {
        self.slots.iter().flatten().filter(|m| now_ms < m.deadline_ms).count()
    }

    /// Total slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn set(&self, hash: u64) -> std::ops::Range<usize> {
        let first = (hash as usize & self.set_mask) * WAYS;
        first..first + WAYS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_core::flow::proto;

    fn any(_: PairId) -> bool {
        true
    }

    fn frag(id: u32) -> FragmentId {
        FragmentId {
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.19.0.1".parse().unwrap(),
            proto: proto::UDP,
            id,
        }
    }

    #[test]
    fn later_fragments_find_their_pair_until_the_ttl() {
        let mut t = FragmentTable::new(64, 2_000);
        t.insert(7, frag(1), 3, 1_000);
        assert_eq!(t.lookup(7, &frag(1), 1_000, any), Some(3));
        assert_eq!(t.lookup(7, &frag(1), 2_999, any), Some(3));
        assert_eq!(t.lookup(7, &frag(1), 3_000, any), None);
        assert_eq!(t.lookup(7, &frag(2), 1_000, any), None);
        assert_eq!(t.lookup(7, &frag(1), 1_000, |p| p != 3), None, "its pair left");
        assert_eq!(t.take_counts().misses, 3);
    }

    #[test]
    fn reinserting_a_datagram_updates_it_in_place() {
        let mut t = FragmentTable::new(4, 2_000);
        t.insert(0, frag(1), 3, 0);
        t.insert(0, frag(1), 4, 500);
        assert_eq!(t.lookup(0, &frag(1), 2_400, any), Some(4));
        assert_eq!(t.live(600), 1);
    }

    #[test]
    fn a_full_set_overwrites_its_oldest_entry() {
        let mut t = FragmentTable::new(4, 2_000);
        assert_eq!(t.capacity(), 4);
        for i in 0..4 {
            t.insert(0, frag(i), i as PairId, u64::from(i));
        }
        t.insert(0, frag(9), 9, 10);
        assert_eq!(t.take_counts().evictions, 1);
        assert_eq!(t.lookup(0, &frag(0), 10, any), None, "oldest was overwritten");
        for i in 1..4 {
            assert_eq!(t.lookup(0, &frag(i), 10, any), Some(i as PairId));
        }
        assert_eq!(t.lookup(0, &frag(9), 10, any), Some(9));
    }

    #[test]
    fn expired_slots_are_reused_before_live_ones() {
        let mut t = FragmentTable::new(4, 100);
        t.insert(0, frag(0), 0, 0);
        for i in 1..4 {
            t.insert(0, frag(i), i as PairId, 50);
        }
        t.insert(0, frag(9), 9, 120);
        for i in 1..4 {
            assert_eq!(t.lookup(0, &frag(i), 120, any), Some(i as PairId));
        }
        assert_eq!(t.lookup(0, &frag(9), 120, any), Some(9));
        assert_eq!(t.lookup(0, &frag(0), 120, any), None);
        assert_eq!(
            t.take_counts(),
            FragmentCounts {
                hits: 4,
                misses: 1,
                evictions: 0
            }
        );
    }
}
