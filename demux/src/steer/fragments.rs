//! Where the later fragments of a datagram go: the pair its first fragment was steered to.
//!
//! Only the first fragment carries ports, so steering records `FragmentId → PairId` when it
//! steers one, and later fragments look the pair up here. Entries live for a short TTL (2 s by
//! default — reassembly on the far side gives up long before a flow's idle timeout).
//!
//! The table is small, fixed and set-associative: the keyed fragment hash picks a set of four
//! slots; an insert takes a slot already holding this datagram, else a free or expired slot, else
//! overwrites the set's oldest entry. Losing a mapping only means that datagram's later
//! fragments are dropped (and counted by the caller), never that they go to the wrong pair.

use braid_core::flow::{FragmentId, PairId};

/// Slots per set.
const WAYS: usize = 4;

/// Fragment mappings kept by default.
pub const DEFAULT_FRAGMENT_CAPACITY: usize = 4096;

/// How long a first fragment's pair is remembered by default.
pub const DEFAULT_FRAGMENT_TTL_MS: u64 = 2_000;

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
}

impl FragmentTable {
    /// Room for about `capacity` datagrams (rounded up to a power of two, at least one set).
    pub fn new(capacity: usize, ttl_ms: u64) -> FragmentTable {
        let sets = capacity.div_ceil(WAYS).clamp(1, 1 << 20).next_power_of_two();
        FragmentTable {
            slots: vec![None; sets * WAYS].into_boxed_slice(),
            set_mask: sets - 1,
            ttl_ms,
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
            self.slots[slot] = Some(Mapping {
                id,
                pair,
                deadline_ms: now_ms.saturating_add(self.ttl_ms),
            });
        }
    }

    /// The pair datagram `id`'s first fragment went to, if still remembered.
    pub fn lookup(&self, hash: u64, id: &FragmentId, now_ms: u64) -> Option<PairId> {
        self.set(hash)
            .filter_map(|s| self.slots[s])
            .find(|m| m.id == *id && now_ms < m.deadline_ms)
            .map(|m| m.pair)
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
        assert_eq!(t.lookup(7, &frag(1), 1_000), Some(3));
        assert_eq!(t.lookup(7, &frag(1), 2_999), Some(3));
        assert_eq!(t.lookup(7, &frag(1), 3_000), None);
        assert_eq!(t.lookup(7, &frag(2), 1_000), None);
    }

    #[test]
    fn reinserting_a_datagram_updates_it_in_place() {
        let mut t = FragmentTable::new(4, 2_000);
        t.insert(0, frag(1), 3, 0);
        t.insert(0, frag(1), 4, 500);
        assert_eq!(t.lookup(0, &frag(1), 2_400), Some(4));
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
        assert_eq!(t.lookup(0, &frag(0), 10), None, "oldest was overwritten");
        for i in 1..4 {
            assert_eq!(t.lookup(0, &frag(i), 10), Some(i as PairId));
        }
        assert_eq!(t.lookup(0, &frag(9), 10), Some(9));
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
            assert_eq!(t.lookup(0, &frag(i), 120), Some(i as PairId));
        }
        assert_eq!(t.lookup(0, &frag(9), 120), Some(9));
    }
}
