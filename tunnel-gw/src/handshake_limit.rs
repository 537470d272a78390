//! Handshake admission: a per-source rate limit and a global cap in front of the tunnel suite.
//!
//! Design: handshake messages (WireGuard initiations, responses and cookie replies; IKE
//! messages) cost the suite far more than a table look-up, and anyone can make them: the mac1
//! key of a WireGuard responder derives from its public key. So the data thread asks
//! [`HandshakeLimiter::admit`] before a handshake reaches the suite; transport data never
//! does. The limiter is a pure core: the caller passes the time in, nothing is allocated after
//! [`HandshakeLimiter::new`], and the answer depends only on the calls made.
//!
//! * Each source IP address has a token bucket of [`SOURCE_RATE`] per second and a burst of
//!   [`SOURCE_BURST`], kept as a GCRA "theoretical arrival time" (one `u64` of nanoseconds).
//! * Buckets live in a fixed table of [`SOURCE_CAPACITY`] sources: open addressing with linear
//!   probing over twice as many slots, hashed with a per-limiter random key so a sender cannot
//!   pick addresses that collide. When the table holds [`SOURCE_CAPACITY`] sources, new sources
//!   share one overflow bucket with the same rate and burst, so a flood from many addresses
//!   costs the same as a flood from one.
//! * A source is forgotten once its bucket has refilled (its arrival time has passed): it then
//!   holds no state, so forgetting it is exact. Every [`SWEEP_PERIOD`] the live sources are
//!   copied into a second, preallocated table, which becomes the table.
//! * Every admitted handshake also takes a token from a global bucket of [`GLOBAL_RATE`] per
//!   second and a burst of [`GLOBAL_BURST`].
//! * Handshakes from the peer gateway's address are not limited here at all. Its address is
//!   known and easy to forge: a bucket for it would let anyone who floods with that source
//!   empty it and starve the real peer's handshakes and rekeys. They go to the suite, whose own
//!   stateless defence answers a flood: past a few handshakes a second WireGuard demands mac2
//!   (a cookie reply) and IKE demands a COOKIE (RFC 7296 §2.6), which only a sender that
//!   receives at the address can return, so the real peer still gets through and a forger
//!   costs a keyed hash per message and creates no state.
//!
//! A refused handshake is reported with its [`Refusal`] reason, which the caller counts.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sources that get a bucket of their own; further sources share the overflow bucket.
pub const SOURCE_CAPACITY: usize = 4096;
/// Handshakes per second one source may send in the long run (IKE needs a few per exchange).
pub const SOURCE_RATE: u64 = 10;
/// Handshakes one source may send at once.
pub const SOURCE_BURST: u64 = 20;
/// Handshakes per second from all sources but the peer together.
pub const GLOBAL_RATE: u64 = 200;
/// Handshakes from all sources but the peer at once.
pub const GLOBAL_BURST: u64 = 200;
/// How often sources whose buckets refilled are forgotten.
pub const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// Why a handshake was refused. Each reason is a separately counted drop.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// Its source sent more than its own bucket allows.
    Source,
    /// The table was full and the sources sharing the overflow bucket sent more than it allows.
    Overflow,
    /// All sources together sent more than the global cap allows.
    Global,
}

/// Rate and burst of one kind of bucket, as GCRA figures in nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Rate {
    /// Time one token takes to refill.
    interval: u64,
    /// How far ahead of now a bucket's arrival time may run: `(burst - 1) × interval`.
    tolerance: u64,
}

impl Rate {
    fn new(per_second: u64, burst: u64) -> Rate {
        let interval = 1_000_000_000 / per_second.max(1);
        Rate {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
        }
    }

    /// Takes a token from the bucket whose arrival time is `tat`, if it holds one.
    fn take(self, tat: &mut u64, now: u64) -> bool {
        if *tat > now + self.tolerance {
            return false;
        }
        *tat = (*tat).max(now) + self.interval;
        true
    }
}

/// A slot of the source table: a source address and its bucket's arrival time.
#[derive(Clone, Copy, Debug)]
struct Slot {
    source: [u8; 16],
    /// [`EMPTY`] when the slot holds no source.
    tat: u64,
}

const EMPTY: u64 = u64::MAX;
const FREE: Slot = Slot {
    source: [0; 16],
    tat: EMPTY,
};

/// A fixed-capacity open-addressing table of source buckets.
#[derive(Debug)]
struct Table {
    slots: Box<[Slot]>,
    len: usize,
}

impl Table {
    fn new(slots: usize) -> Table {
        Table {
            slots: vec![FREE; slots].into_boxed_slice(),
            len: 0,
        }
    }

    /// The slot holding `source`, or the free slot where it belongs. The table always keeps
    /// free slots (it holds at most half its size), so the probe ends.
    fn find(&self, source: &[u8; 16], hash: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = &self.slots[i];
            if slot.tat == EMPTY || slot.source == *source {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    fn clear(&mut self) {
        self.slots.fill(FREE);
        self.len = 0;
    }
}

/// Admission control for handshake messages; see the module documentation.
#[derive(Debug)]
pub struct HandshakeLimiter {
    table: Table,
    /// The table the next sweep copies live sources into.
    spare: Table,
    capacity: usize,
    hasher: RandomState,
    source_rate: Rate,
    global_rate: Rate,
    overflow_tat: u64,
    global_tat: u64,
    epoch: Instant,
    last_sweep: u64,
}

impl HandshakeLimiter {
    /// A limiter with the module's figures; `epoch` is the earliest time it will be given.
    pub fn new(epoch: Instant) -> HandshakeLimiter {
        HandshakeLimiter::with_limits(
            epoch,
            SOURCE_CAPACITY,
            (SOURCE_RATE, SOURCE_BURST),
            (GLOBAL_RATE, GLOBAL_BURST),
        )
    }

    /// A limiter for `capacity` sources with (per second, burst) figures for each source and
    /// for all of them together.
    pub fn with_limits(epoch: Instant, capacity: usize, source: (u64, u64), global: (u64, u64)) -> HandshakeLimiter {
        let capacity = capacity.max(1);
        let slots = (capacity * 2).next_power_of_two();
        HandshakeLimiter {
            table: Table::new(slots),
            spare: Table::new(slots),
            capacity,
            hasher: RandomState::new(),
            source_rate: Rate::new(source.0, source.1),
            global_rate: Rate::new(global.0, global.1),
            overflow_tat: 0,
            global_tat: 0,
            epoch,
            last_sweep: 0,
        }
    }

    /// Sources that have a bucket of their own now.
    pub fn sources(&self) -> usize {
        self.table.len
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(EMPTY - 1)
    }

    /// Whether a handshake from `source` may reach the suite at `now`. `from_peer` says the
    /// source is the peer gateway's address, which is always admitted (see the module docs).
    pub fn admit(&mut self, source: IpAddr, from_peer: bool, now: Instant) -> Result<(), Refusal> {
        if from_peer {
            return Ok(());
        }
        let now = self.nanos(now);
        if now.saturating_sub(self.last_sweep) >= SWEEP_PERIOD.as_nanos() as u64 {
            self.sweep(now);
        }
        let key = key(source);
        let i = self.table.find(&key, self.hasher.hash_one(key));
        let rate = self.source_rate;
        let admitted = if self.table.slots[i].tat != EMPTY {
            rate.take(&mut self.table.slots[i].tat, now)
        } else if self.table.len < self.capacity {
            let mut tat = 0;
            rate.take(&mut tat, now);
            self.table.slots[i] = Slot { source: key, tat };
            self.table.len += 1;
            true
        } else if rate.take(&mut self.overflow_tat, now) {
            true
        } else {
            return Err(Refusal::Overflow);
        };
        if !admitted {
            return Err(Refusal::Source);
        }
        if !self.global_rate.take(&mut self.global_tat, now) {
            return Err(Refusal::Global);
        }
        Ok(())
    }

    /// Forgets the sources whose buckets have refilled by `now`.
    fn sweep(&mut self, now: u64) {
        self.last_sweep = now;
        self.spare.clear();
        for slot in self.table.slots.iter().filter(|s| s.tat != EMPTY && s.tat > now) {
            let i = self.spare.find(&slot.source, self.hasher.hash_one(slot.source));
            self.spare.slots[i] = *slot;
            self.spare.len += 1;
        }
        std::mem::swap(&mut self.table, &mut self.spare);
    }
}

/// A source address as table key: IPv4 in its IPv4-mapped IPv6 form.
fn key(source: IpAddr) -> [u8; 16] {
    match source {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 + n)) // 198.18.0.0 + n
    }

    /// Admissions out of `tries` handshakes from `source` at `at`.
    fn admitted(limiter: &mut HandshakeLimiter, source: IpAddr, at: Instant, tries: u32) -> u32 {
        (0..tries).filter(|_| limiter.admit(source, false, at).is_ok()).count() as u32
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut limiter = HandshakeLimiter::with_limits(t0, 16, (10, 20), (1000, 1000));
        assert_eq!(admitted(&mut limiter, ip(1), t0, 50), 20, "the burst");
        assert_eq!(limiter.admit(ip(1), false, t0), Err(Refusal::Source));
        // 100 ms refills one token at 10 per second.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(admitted(&mut limiter, ip(1), t1, 5), 1);
        // Over ten seconds at 20 tries a second, exactly the rate gets through.
        let mut total = 0;
        for tick in 1..=200u64 {
            total += admitted(&mut limiter, ip(1), t1 + Duration::from_millis(50 * tick), 1);
        }
        assert_eq!(total, 100);
        // Another source is not affected.
        assert_eq!(admitted(&mut limiter, ip(2), t1 + Duration::from_secs(10), 50), 20);
    }

    #[test]
    fn sources_beyond_the_capacity_share_the_overflow_bucket() {
        let t0 = Instant::now();
        let mut limiter = HandshakeLimiter::with_limits(t0, 4, (10, 2), (1_000_000, 1_000_000));
        for n in 0..4 {
            assert_eq!(admitted(&mut limiter, ip(n), t0, 1), 1);
        }
        assert_eq!(limiter.sources(), 4);
        // Sources 4.. have no slot: together they get one bucket's burst.
        let overflow: u32 = (4..100).map(|n| admitted(&mut limiter, ip(n), t0, 1)).sum();
        assert_eq!(overflow, 2);
        assert_eq!(limiter.admit(ip(500), false, t0), Err(Refusal::Overflow));
        assert_eq!(limiter.sources(), 4, "the table never grows past its capacity");
        // The sources in the table keep their own buckets.
        assert_eq!(admitted(&mut limiter, ip(0), t0, 5), 1);
    }

    #[test]
    fn refilled_sources_are_forgotten_at_the_sweep() {
        let t0 = Instant::now();
        let mut limiter = HandshakeLimiter::with_limits(t0, 4, (10, 2), (1_000_000, 1_000_000));
        for n in 0..4 {
            admitted(&mut limiter, ip(n), t0, 2);
        }
        assert_eq!(limiter.sources(), 4);
        // Source 3 keeps sending at its rate and stays; sources 0..3 fall silent and refill.
        let mut t = t0;
        for _ in 0..10 {
            t += Duration::from_millis(100);
            assert_eq!(admitted(&mut limiter, ip(3), t, 1), 1);
        }
        assert_eq!(limiter.sources(), 1, "only the busy source is left");
        // Their slots are free again: three new sources get buckets of their own.
        for n in 10..13 {
            assert_eq!(admitted(&mut limiter, ip(n), t, 2), 2);
        }
        assert_eq!(limiter.sources(), 4);
    }

    #[test]
    fn the_peers_address_is_never_limited_here() {
        let t0 = Instant::now();
        let mut limiter = HandshakeLimiter::with_limits(t0, 1024, (10, 2), (10, 5));
        let flood: u32 = (0..100).map(|n| admitted(&mut limiter, ip(n), t0, 1)).sum();
        assert_eq!(flood, 5, "the global burst");
        assert_eq!(limiter.admit(ip(200), false, t0), Err(Refusal::Global));
        // A flood forging the peer's address takes nothing the real peer needs: every message
        // from that address reaches the suite (and its cookie defence), the global cap and
        // the other sources' buckets untouched.
        let peer = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 111));
        for _ in 0..1000 {
            assert_eq!(limiter.admit(peer, true, t0), Ok(()));
        }
        assert_eq!(
            limiter.sources(),
            101,
            "the peer holds no bucket (101 other sources do)"
        );
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            limiter.admit(ip(300), false, later),
            Ok(()),
            "the global bucket refilled by one"
        );
    }

    #[test]
    fn refused_handshakes_take_no_global_token() {
        let t0 = Instant::now();
        let mut limiter = HandshakeLimiter::with_limits(t0, 16, (10, 1), (10, 2));
        assert_eq!(admitted(&mut limiter, ip(1), t0, 100), 1);
        assert_eq!(admitted(&mut limiter, ip(2), t0, 1), 1, "one global token left");
        assert_eq!(limiter.admit(ip(3), false, t0), Err(Refusal::Global));
    }

    #[test]
    fn ipv4_and_ipv6_sources_are_told_apart_and_time_never_goes_back() {
        let t0 = Instant::now();
        let mut limiter = HandshakeLimiter::with_limits(t0 + Duration::from_secs(5), 16, (10, 1), (100, 100));
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
        assert_eq!(
            admitted(&mut limiter, ip(1), t0, 3),
            1,
            "a time before the epoch is the epoch"
        );
        assert_eq!(admitted(&mut limiter, v6, t0, 3), 1);
        assert_eq!(limiter.sources(), 2);
    }
}
