//! The flow table: pins each flow to the gateway pair it started on.
//!
//! ## Layout
//!
//! Slots are grouped in buckets of 16. A flow has two candidate buckets taken straight from its
//! (keyed) flow hash — the low and the high 32 bits, each scaled onto the bucket count by
//! multiplication, so any bucket count works and no rehash is ever needed — and a one-byte tag
//! from bits 0..8 (0 marks a free slot). Tags live in their own byte array, so a
//! lookup reads two 16-byte tag groups, matches the tag in all 16 lanes at once (SWAR on a
//! `u128`) and compares the full key only for matching lanes. A new flow goes to the emptier of
//! its two buckets (two-choice hashing keeps buckets even, so the table fills to its documented
//! load without overflow). No rehash, no growth, no chaining: probing is bounded by two buckets
//! and everything is allocated in [`FlowTable::new`].
//!
//! An entry is 48 bytes: the canonical key (two 16-byte addresses, two ports, protocol,
//! family), the pinned pair, a closing flag and the idle deadline in milliseconds. The table is
//! sized so the requested number of flows fills 3/4 of the slots — measured, the first flow that
//! finds both buckets full arrives at 86.5% load with 1 M flows, later in smaller tables — which
//! costs 49 bytes per slot and 65 bytes per flow at the documented maximum load. Both arrays are
//! backed by transparent huge pages where the kernel allows, so random lookups do not also miss
//! the TLB.

//! ## Policy
//!
//! * A live entry whose pair is still a member steers the packet ([`Outcome::Established`]) and
//!   its deadline moves to `now + idle timeout` (TCP; TCP after FIN or RST; UDP; other).
//! * A live entry whose pair left the membership is re-steered through `choose` and re-pinned
//!   ([`Outcome::Moved`]): failover moves only the dead pair's flows.
//! * An expired entry is dead: the flow starts again as new. Expired slots are reused by
//!   inserts and cleared incrementally by [`FlowTable::expire`].
//! * **Half-open TCP**: a TCP flow created by a packet carrying SYN is *half-open* and lives
//!   only `tcp_half_open_ms` (5 s by default) after its last packet, so a SYN flood holds a slot
//!   for seconds, not for the 350 s of an established connection. The first ACK without SYN
//!   seen in either direction (the handshake's third packet) promotes it to `tcp_ms`; a SYN
//!   that reopens a closing 5-tuple makes it half-open again. A flow picked up mid-stream (its
//!   first packet carries ACK without SYN) is established at once: a demux cannot tell it from
//!   one whose handshake it missed.
//! * **Full** (both buckets hold only live flows): the live half-open flow nearest its deadline
//!   is evicted to make room (its next packet is steered afresh, and Maglev sends it to the same
//!   pair while membership is unchanged); established flows and every other protocol are never
//!   evicted. With no half-open flow to evict the packet is steered by `choose` alone without
//!   pinning ([`Outcome::Unpinned`], which callers count).
//! * Half-open flows created, promoted, expired and evicted are counted ([`HalfOpenCounts`]).
//!
//! ## Measured
//!
//! `cargo bench -p braid-demux --bench flow_table -- --warm-up-time 1 --measurement-time 3`,
//! 2-core AMD EPYC VM (1 MiB L2 per core, 32 MiB L3, THP in `madvise` mode), release profile,
//! 1 M (2^20) live IPv4 TCP flows in a table sized for 1 M, other engineers' builds running
//! (load average ~2):
//!
//! | operation | one at a time | batches of 16 with prefetch |
//! |---|---|---|
//! | lookup of an established flow | 5.4 M/s | 23.8 M/s |
//! | insert of a new flow (1 M live) | 6.3 M/s | 13.1 M/s |
//! | `Steering::steer`, whole path incl. SipHash | 3.2 M/s | 12.2 M/s (`steer_batch`) |
//! | flow hash alone (IPv4 / IPv6) | 26 ns / 37 ns | |
//!
//! One lookup at a time is bound by one DRAM miss (~180 ns here); batching overlaps them,
//! which is why the data path should call [`super::Steering::steer_batch`]. Memory:
//! 68,507,576 bytes for 1,048,576 flows = 65 bytes per flow.

use braid_core::flow::{proto, tcp_flags, PairId};
use braid_sys::memory::{filled_slice, prefetch};

use super::key::FlowKey;
use super::{Outcome, Steered};

/// Slots per bucket: one `u128` of tags.
const BUCKET: usize = 16;

/// Largest number of flows a table can be sized for (about 4.4 GB of table).
pub const MAX_FLOWS: usize = 1 << 26;

/// Idle timeouts, in milliseconds, after which a flow's pin is forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleTimeouts {
    pub tcp_ms: u64,
    /// TCP until the handshake completes (see the module docs).
    pub tcp_half_open_ms: u64,
    /// TCP once a FIN or RST has been seen in either direction.
    pub tcp_closing_ms: u64,
    pub udp_ms: u64,
    /// ICMP and every other protocol.
    pub other_ms: u64,
}

impl Default for IdleTimeouts {
    fn default() -> Self {
        IdleTimeouts {
            tcp_ms: 350_000,
            tcp_half_open_ms: 5_000,
            tcp_closing_ms: 10_000,
            udp_ms: 120_000,
            other_ms: 120_000,
        }
    }
}

/// What [`FlowTable::learn`] did with a flow seen coming back from a gateway pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// The flow was pinned already; its deadline moved.
    Refreshed,
    /// The flow was new and is now pinned to the pair it came from.
    Pinned,
    /// The flow's pinned pair had left the membership; it now follows the pair it came from.
    Repinned,
    /// No free slot: nothing was pinned.
    TableFull,
}

impl Learned {
    /// A name fit for a counter.
    pub fn name(self) -> &'static str {
        match self {
            Learned::Refreshed => "learn_refreshed",
            Learned::Pinned => "learn_pinned",
            Learned::Repinned => "learn_repinned",
            Learned::TableFull => "learn_table_full",
        }
    }
}

const FLAG_V6: u8 = 1;
const FLAG_CLOSING: u8 = 2;
const FLAG_HALF_OPEN: u8 = 4;

/// What happened to half-open TCP flows since the counts were last taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HalfOpenCounts {
    /// Flows created (or reopened) by a SYN.
    pub created: u64,
    /// Half-open flows whose handshake completed.
    pub promoted: u64,
    /// Half-open flows that timed out.
    pub expired: u64,
    /// Live half-open flows evicted to make room in a full bucket pair.
    pub evicted: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    /// The entry is dead once `now_ms >= deadline_ms`.
    deadline_ms: u64,
    lo_addr: [u8; 16],
    hi_addr: [u8; 16],
    lo_port: u16,
    hi_port: u16,
    pair: PairId,
    proto: u8,
    flags: u8,
}

impl Entry {
    const VACANT: Entry = Entry {
        deadline_ms: 0,
        lo_addr: [0; 16],
        hi_addr: [0; 16],
        lo_port: 0,
        hi_port: 0,
        pair: 0,
        proto: 0,
        flags: 0,
    };

    /// A new entry; a TCP flow whose first packet carries SYN starts half-open.
    fn new(key: &FlowKey, pair: PairId, tcp: u8) -> Entry {
        let half_open = key.proto == proto::TCP && tcp & tcp_flags::SYN != 0;
        Entry {
            deadline_ms: 0,
            lo_addr: key.lo_addr,
            hi_addr: key.hi_addr,
            lo_port: key.lo_port,
            hi_port: key.hi_port,
            pair,
            proto: key.proto,
            flags: (if key.v6 { FLAG_V6 } else { 0 }) | (if half_open { FLAG_HALF_OPEN } else { 0 }),
        }
    }

    #[inline]
    fn is_half_open(&self) -> bool {
        self.flags & FLAG_HALF_OPEN != 0
    }

    #[inline]
    fn holds(&self, key: &FlowKey) -> bool {
        self.lo_port == key.lo_port
            && self.hi_port == key.hi_port
            && self.proto == key.proto
            && (self.flags & FLAG_V6 != 0) == key.v6
            && self.lo_addr == key.lo_addr
            && self.hi_addr == key.hi_addr
    }

    #[inline]
    fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.deadline_ms
    }

    /// Records a packet's TCP flags and restarts the idle timer.
    #[inline]
    fn touch(&mut self, tcp: u8, now_ms: u64, timeouts: &IdleTimeouts) {
        let timeout = match self.proto {
            proto::TCP => {
                let handshake = tcp & (tcp_flags::SYN | tcp_flags::ACK);
                if tcp & (tcp_flags::FIN | tcp_flags::RST) != 0 {
                    self.flags |= FLAG_CLOSING;
                } else if handshake == tcp_flags::SYN && self.flags & FLAG_CLOSING != 0 {
                    // A fresh SYN reopens a closed 5-tuple as a new, half-open connection.
                    self.flags = (self.flags & !FLAG_CLOSING) | FLAG_HALF_OPEN;
                } else if handshake == tcp_flags::ACK {
                    self.flags &= !FLAG_HALF_OPEN;
                }
                if self.is_half_open() {
                    timeouts.tcp_half_open_ms
                } else if self.flags & FLAG_CLOSING != 0 {
                    timeouts.tcp_closing_ms
                } else {
                    timeouts.tcp_ms
                }
            }
            proto::UDP => timeouts.udp_ms,
            _ => timeouts.other_ms,
        };
        self.deadline_ms = now_ms.saturating_add(timeout);
    }
}

/// Where a flow may live: its two candidate buckets and its tag.
#[derive(Clone, Copy)]
struct Home {
    buckets: [usize; 2],
    tag: u8,
}

/// Either the slot holding a flow, or the place a new flow would go.
enum Probe {
    Found(usize),
    Vacant(usize),
    Reusable(usize),
    /// Holds a live half-open flow: the slot to take when nothing else is free.
    Evictable(usize),
    Full,
}

/// A fixed-capacity map from flow to pinned gateway pair. See the module docs.
pub struct FlowTable {
    tags: Box<[u8]>,
    entries: Box<[Entry]>,
    buckets: u64,
    /// Slots with a non-zero tag (live, or expired and not yet swept).
    occupied: usize,
    sweep_cursor: usize,
    timeouts: IdleTimeouts,
    /// Live flows per pair counted by the sweep in progress, indexed by pair id.
    census: Box<[u32]>,
    /// The last complete sweep's count of live flows per pair.
    pinned_per_pair: Box<[u32]>,
    half_open: HalfOpenCounts,
}

impl FlowTable {
    /// A table for up to `max_flows` flows (clamped to 1..=[`MAX_FLOWS`]) at 3/4 load.
    pub fn new(max_flows: usize, timeouts: IdleTimeouts) -> FlowTable {
        let flows = max_flows.clamp(1, MAX_FLOWS);
        let buckets = (flows * 4).div_ceil(3 * BUCKET);
        let slots = buckets * BUCKET;
        FlowTable {
            tags: filled_slice(slots, 0),
            entries: filled_slice(slots, Entry::VACANT),
            buckets: buckets as u64,
            occupied: 0,
            sweep_cursor: 0,
            timeouts,
            census: filled_slice(usize::from(PairId::MAX) + 1, 0),
            pinned_per_pair: filled_slice(usize::from(PairId::MAX) + 1, 0),
            half_open: HalfOpenCounts::default(),
        }
    }

    /// Steers one packet of the flow `key` (with flow hash `hash`): by its pin if it has a live
    /// one on a live pair, otherwise by `choose` (pinning the choice when there is room).
    /// `is_live` says whether a pair is still a member. `None` when `choose` had no pair.
    #[inline]
    pub fn lookup_or_insert(
        &mut self,
        hash: u64,
        key: &FlowKey,
        tcp_flags: u8,
        now_ms: u64,
        is_live: impl Fn(PairId) -> bool,
        choose: impl FnOnce() -> Option<PairId>,
    ) -> Option<Steered> {
        let timeouts = self.timeouts;
        let (slot, outcome) = match self.probe(hash, key, now_ms) {
            Probe::Found(slot) if self.entries[slot].is_live(now_ms) => {
                let entry = &mut self.entries[slot];
                let outcome = if is_live(entry.pair) {
                    Outcome::Established
                } else {
                    entry.pair = choose()?;
                    Outcome::Moved
                };
                let pair = entry.pair;
                self.touch(slot, tcp_flags, now_ms, &timeouts);
                return Some(Steered { pair, outcome });
            }
            Probe::Found(slot) | Probe::Reusable(slot) | Probe::Vacant(slot) | Probe::Evictable(slot) => {
                (slot, Outcome::New)
            }
            Probe::Full => {
                return choose().map(|pair| Steered {
                    pair,
                    outcome: Outcome::Unpinned,
                });
            }
        };
        let pair = choose()?;
        self.pin(slot, hash, key, pair, tcp_flags, now_ms);
        Some(Steered { pair, outcome })
    }

    /// Records a packet of flow `key` that arrived from gateway pair `from`, so replies use the
    /// same pair: pins the flow if it has no live pin, or if its pinned pair is no longer a
    /// member while `from` is.
    pub fn learn(
        &mut self,
        hash: u64,
        key: &FlowKey,
        tcp_flags: u8,
        now_ms: u64,
        from: PairId,
        is_live: impl Fn(PairId) -> bool,
    ) -> Learned {
        let timeouts = self.timeouts;
        let slot = match self.probe(hash, key, now_ms) {
            Probe::Found(slot) if self.entries[slot].is_live(now_ms) => {
                let entry = &mut self.entries[slot];
                let learned = if entry.pair != from && !is_live(entry.pair) && is_live(from) {
                    entry.pair = from;
                    Learned::Repinned
                } else {
                    Learned::Refreshed
                };
                self.touch(slot, tcp_flags, now_ms, &timeouts);
                return learned;
            }
            Probe::Found(slot) | Probe::Reusable(slot) | Probe::Vacant(slot) | Probe::Evictable(slot) => slot,
            Probe::Full => return Learned::TableFull,
        };
        self.pin(slot, hash, key, from, tcp_flags, now_ms);
        Learned::Pinned
    }

    /// Starts loading the two tag groups a lookup of `hash` reads. Issues prefetches only, so it
    /// never stalls: call it for a whole batch first, then [`FlowTable::prefetch_entries`].
    #[inline]
    pub fn prefetch_buckets(&self, hash: u64) {
        for bucket in self.home(hash).buckets {
            prefetch(&self.tags[bucket * BUCKET]);
        }
    }

    /// Reads the tag groups of `hash` and starts loading the entries a lookup will compare.
    /// Together with [`FlowTable::prefetch_buckets`] this lets a batch overlap the cache misses
    /// of its packets; both are purely performance hints.
    #[inline]
    pub fn prefetch_entries(&self, hash: u64) {
        let home = self.home(hash);
        let mut candidates = 0;
        for bucket in home.buckets {
            let lanes = lanes_equal_to(self.tag_group(bucket), home.tag);
            if lanes != 0 {
                prefetch(&self.entries[bucket * BUCKET + (lanes.trailing_zeros() / 8) as usize]);
                candidates += 1;
            }
        }
        if candidates == 0 {
            // Most likely a new flow: warm the slot it will be written to.
            if let Some(slot) = self.vacant_slot(home) {
                prefetch(&self.entries[slot]);
            }
        }
    }

    /// The live pin of flow `key`, if any (no side effects).
    pub fn pinned(&self, hash: u64, key: &FlowKey, now_ms: u64) -> Option<PairId> {
        let home = self.home(hash);
        let slot = self.find(home, key)?;
        let entry = &self.entries[slot];
        entry.is_live(now_ms).then_some(entry.pair)
    }

    /// Examines the next `budget` slots (continuing where the last call stopped) and frees
    /// those whose flow has expired. Returns how many it freed.
    ///
    /// The sweep also takes a census: live flows per pair, published by
    /// [`FlowTable::pinned_per_pair`] each time the sweep completes a full pass, so the
    /// controller can tell when a draining pair has no flows left without a stop-the-world scan.
    pub fn expire(&mut self, now_ms: u64, budget: usize) -> usize {
        let mut freed = 0;
        let mut left = budget.min(self.tags.len());
        while left > 0 {
            // The budget's slots up to the end of the table; vacant ones are skipped a group of
            // tags at a time (an idle or lightly loaded table is mostly vacant).
            let start = self.sweep_cursor;
            let end = (start + left).min(self.tags.len());
            let mut slot = start;
            while let Some(found) = next_occupied(&self.tags[slot..end]) {
                slot += found;
                let entry = &self.entries[slot];
                if entry.is_live(now_ms) {
                    self.census[usize::from(entry.pair)] += 1;
                } else {
                    self.half_open.expired += u64::from(entry.is_half_open());
                    self.tags[slot] = 0;
                    self.occupied -= 1;
                    freed += 1;
                }
                slot += 1;
            }
            left -= end - start;
            self.sweep_cursor = if end == self.tags.len() { 0 } else { end };
            if self.sweep_cursor == 0 {
                std::mem::swap(&mut self.census, &mut self.pinned_per_pair);
                self.census.fill(0);
            }
        }
        freed
    }

    /// Live flows per pair id, as counted by the last complete sweep ([`FlowTable::expire`]).
    pub fn pinned_per_pair(&self) -> &[u32] {
        &self.pinned_per_pair
    }

    /// Slots in the table: a full census takes this many slots of [`FlowTable::expire`] budget.
    pub fn slots(&self) -> usize {
        self.tags.len()
    }

    /// Occupied slots: live flows plus expired ones not yet swept by [`FlowTable::expire`].
    pub fn len(&self) -> usize {
        self.occupied
    }

    /// Whether no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.occupied == 0
    }

    /// The number of flows the table is sized for: 3/4 of its slots.
    pub fn capacity(&self) -> usize {
        self.tags.len() / 4 * 3
    }

    /// Bytes the table holds, allocated once in [`FlowTable::new`].
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.tags.len() + self.entries.len() * std::mem::size_of::<Entry>()
    }

    /// What happened to half-open flows since the last call; the counts restart from zero.
    pub fn take_half_open_counts(&mut self) -> HalfOpenCounts {
        std::mem::take(&mut self.half_open)
    }

    /// The idle timeouts in force.
    pub fn timeouts(&self) -> &IdleTimeouts {
        &self.timeouts
    }

    fn pin(&mut self, slot: usize, hash: u64, key: &FlowKey, pair: PairId, tcp: u8, now_ms: u64) {
        if self.tags[slot] == 0 {
            self.occupied += 1;
        } else if self.entries[slot].is_half_open() {
            // The slot's old flow is overwritten: expired, or evicted by `probe`'s choice.
            if self.entries[slot].is_live(now_ms) {
                self.half_open.evicted += 1;
            } else {
                self.half_open.expired += 1;
            }
        }
        self.tags[slot] = self.home(hash).tag;
        let entry = &mut self.entries[slot];
        *entry = Entry::new(key, pair, tcp);
        self.half_open.created += u64::from(entry.is_half_open());
        entry.touch(tcp, now_ms, &self.timeouts);
    }

    /// [`Entry::touch`] on a live entry, counting what it did to a half-open flow.
    #[inline]
    fn touch(&mut self, slot: usize, tcp: u8, now_ms: u64, timeouts: &IdleTimeouts) {
        let entry = &mut self.entries[slot];
        let was_half_open = entry.is_half_open();
        entry.touch(tcp, now_ms, timeouts);
        match (was_half_open, entry.is_half_open()) {
            (true, false) => self.half_open.promoted += 1,
            (false, true) => self.half_open.created += 1,
            _ => {}
        }
    }

    #[inline]
    fn home(&self, hash: u64) -> Home {
        let scale = |half: u64| (((half & 0xffff_ffff) * self.buckets) >> 32) as usize;
        Home {
            buckets: [scale(hash), scale(hash >> 32)],
            tag: (hash as u8).max(1),
        }
    }

    #[inline]
    fn tag_group(&self, bucket: usize) -> u128 {
        let start = bucket * BUCKET;
        let mut group = [0u8; BUCKET];
        group.copy_from_slice(&self.tags[start..start + BUCKET]);
        u128::from_le_bytes(group)
    }

    #[inline]
    fn find(&self, home: Home, key: &FlowKey) -> Option<usize> {
        let distinct = if home.buckets[0] == home.buckets[1] { 1 } else { 2 };
        for &bucket in &home.buckets[..distinct] {
            let mut lanes = lanes_equal_to(self.tag_group(bucket), home.tag);
            while lanes != 0 {
                let slot = bucket * BUCKET + (lanes.trailing_zeros() / 8) as usize;
                if self.entries[slot].holds(key) {
                    return Some(slot);
                }
                lanes &= lanes - 1;
            }
        }
        None
    }

    /// A free slot in the emptier of the two buckets (two-choice placement).
    #[inline]
    fn vacant_slot(&self, home: Home) -> Option<usize> {
        let free = home.buckets.map(|b| lanes_equal_to(self.tag_group(b), 0));
        let (bucket, lanes) = if free[1].count_ones() > free[0].count_ones() {
            (home.buckets[1], free[1])
        } else {
            (home.buckets[0], free[0])
        };
        (lanes != 0).then(|| bucket * BUCKET + (lanes.trailing_zeros() / 8) as usize)
    }

    /// Finds `key`, or else the slot a new entry for it should take.
    #[inline]
    fn probe(&self, hash: u64, key: &FlowKey, now_ms: u64) -> Probe {
        let home = self.home(hash);
        if let Some(slot) = self.find(home, key) {
            return Probe::Found(slot);
        }
        if let Some(slot) = self.vacant_slot(home) {
            return Probe::Vacant(slot);
        }
        let slots = || home.buckets.iter().flat_map(|&b| b * BUCKET..(b + 1) * BUCKET);
        if let Some(slot) = slots().find(|&slot| !self.entries[slot].is_live(now_ms)) {
            return Probe::Reusable(slot);
        }
        slots()
            .filter(|&slot| self.entries[slot].is_half_open())
            .min_by_key(|&slot| self.entries[slot].deadline_ms)
            .map_or(Probe::Full, Probe::Evictable)
    }
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("occupied", &self.occupied)
            .field("slots", &self.tags.len())
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// The index of the first occupied (non-zero) tag in `tags`, testing a group of 16 tags at a
/// time.
fn next_occupied(tags: &[u8]) -> Option<usize> {
    const GROUP: usize = std::mem::size_of::<u128>();
    let mut groups = tags.chunks_exact(GROUP);
    let vacant = groups
        .by_ref()
        .take_while(|group| u128::from_ne_bytes((*group).try_into().expect("a group of tags")) == 0)
        .count();
    let at = vacant * GROUP;
    tags[at..].iter().position(|&tag| tag != 0).map(|i| at + i)
}

const LOW7: u128 = u128::from_le_bytes([0x7f; 16]);
const ONES: u128 = u128::from_le_bytes([0x01; 16]);

/// The high bit of every byte lane of `group` equal to `tag`, all other bits clear.
#[inline]
fn lanes_equal_to(group: u128, tag: u8) -> u128 {
    let x = group ^ (ONES * u128::from(tag));
    // A lane is zero iff neither its low 7 bits (carried into bit 7 by + 0x7f) nor bit 7 is set.
    !(((x & LOW7) + LOW7) | x | LOW7)
}

#[cfg(test)]
mod tests;
