//! The RFC 6479 anti-replay window.
//!
//! Design: a ring of `N` 64-bit words, allocated once when the SA is created. Sequence number
//! `s` always lives in bit `s % 64` of word `(s / 64) % N`, so marking and testing a number is
//! one load and one mask, and nothing ever shifts. When a higher number arrives, only the words
//! it skips over are zeroed (at most the whole ring, however far it jumps). One word is spare
//! (RFC 6479 §2): the word holding the highest number is usually part-filled, so a ring of `N`
//! words guarantees a window of `64 (N - 1)` packets. Cost: O(1) per packet and `window / 8 + 8`
//! bytes, so the multi-thousand-packet windows a multi-core sender's reordering needs are cheap.
//!
//! Numbers are 64-bit throughout (RFC 4304 ESN; without ESN they simply stay below 2^32). With
//! `H` the highest number accepted so far and `W` the window, a number is:
//!
//! * new if it is above `H`, or inside the window (`H - W < s <= H`) and not yet marked;
//! * [`ReplayError::Replayed`] if it is inside the window and already marked;
//! * [`ReplayError::TooOld`] if it is at or left of `H - W`, where nothing is remembered, and
//!   always for 0, which no sender ever uses (RFC 4303 §3.3.3: the first packet is 1).
//!
//! The caller checks before decrypting ([`ReplayWindow::check`], cheap, drops floods of old
//! packets) and marks only after the ICV verified ([`ReplayWindow::accept`]), so a forged
//! packet can never move the window (RFC 4303 §3.4.3).

use std::fmt;

/// The window an SA gets unless configured otherwise: enough for a few thousand packets of
/// reordering between sender cores, at about 1 KiB per SA.
pub const DEFAULT_REPLAY_WINDOW: u32 = 8192;
/// The largest window [`ReplayWindow::new`] builds (about 8 KiB per SA).
pub const MAX_REPLAY_WINDOW: u32 = 65536;
/// The smallest window [`ReplayWindow::new`] builds (RFC 4303 §3.4.3 recommends 64).
pub const MIN_REPLAY_WINDOW: u32 = 64;

const WORD_BITS: u64 = u64::BITS as u64;

/// Why a sequence number was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReplayError {
    /// Inside the window and already accepted once.
    Replayed,
    /// Left of the window (nothing is remembered there), or 0.
    TooOld,
}

/// An RFC 6479 sliding window over 64-bit sequence numbers.
pub struct ReplayWindow {
    /// The ring: sequence number `s` is bit `s % 64` of word `(s / 64) % words.len()`.
    words: Box<[u64]>,
    /// The highest sequence number accepted so far; 0 before the first.
    highest: u64,
    /// Packets remembered below and including `highest`: `64 * (words.len() - 1)`.
    window: u32,
}

impl ReplayWindow {
    /// A window of at least `window` packets: `window` is clamped to
    /// [[`MIN_REPLAY_WINDOW`], [`MAX_REPLAY_WINDOW`]] and rounded up to a multiple of 64;
    /// [`ReplayWindow::window`] reports the result. Allocates `window / 64 + 1` words, once.
    pub fn new(window: u32) -> Self {
        let window = window
            .clamp(MIN_REPLAY_WINDOW, MAX_REPLAY_WINDOW)
            .next_multiple_of(WORD_BITS as u32);
        let words = (window as u64 / WORD_BITS + 1) as usize;
        Self {
            words: vec![0; words].into_boxed_slice(),
            highest: 0,
            window,
        }
    }

    /// The effective window, in packets.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// The highest sequence number accepted so far (0 before the first).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `seq` would be accepted now. Call before decrypting; changes nothing.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::TooOld);
        }
        if seq > self.highest {
            return Ok(());
        }
        if self.highest - seq >= u64::from(self.window) {
            return Err(ReplayError::TooOld);
        }
        let (word, bit) = self.slot(seq);
        if self.words[word] & bit != 0 {
            Err(ReplayError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Marks `seq` as received, sliding the window forward if it is the new highest. Call only
    /// after the packet's ICV verified; re-checks first, so a refused number changes nothing.
    pub fn accept(&mut self, seq: u64) -> Result<(), ReplayError> {
        self.check(seq)?;
        if seq > self.highest {
            self.advance(seq);
        }
        let (word, bit) = self.slot(seq);
        self.words[word] |= bit;
        Ok(())
    }

    /// Makes `seq` (above `highest`) the highest, zeroing the words of the blocks skipped over,
    /// which hold numbers that have just left the window. A jump of a whole ring or more
    /// clears the ring, once.
    fn advance(&mut self, seq: u64) {
        let ring = self.words.len();
        let from_block = self.highest / WORD_BITS;
        let to_block = seq / WORD_BITS;
        let skipped = (to_block - from_block).min(ring as u64) as usize;
        let mut index = (from_block % ring as u64) as usize;
        for _ in 0..skipped {
            index += 1;
            if index == ring {
                index = 0;
            }
            self.words[index] = 0;
        }
        self.highest = seq;
    }

    /// The word index and bit mask of `seq`.
    fn slot(&self, seq: u64) -> (usize, u64) {
        let word = (seq / WORD_BITS % self.words.len() as u64) as usize;
        (word, 1 << (seq % WORD_BITS))
    }
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("window", &self.window)
            .field("highest", &self.highest)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Accepts `seq`, asserting it was new.
    fn take(w: &mut ReplayWindow, seq: u64) {
        assert_eq!(w.check(seq), Ok(()), "check {seq}");
        assert_eq!(w.accept(seq), Ok(()), "accept {seq}");
    }

    #[test]
    fn window_is_rounded_up_and_clamped() {
        for (asked, effective, words) in [
            (0, 64, 2),
            (1, 64, 2),
            (64, 64, 2),
            (65, 128, 3),
            (128, 128, 3),
            (DEFAULT_REPLAY_WINDOW, 8192, 129),
            (65535, 65536, 1025),
            (65536, 65536, 1025),
            (65537, 65536, 1025),
            (u32::MAX, 65536, 1025),
        ] {
            let w = ReplayWindow::new(asked);
            assert_eq!(w.window(), effective, "asked {asked}");
            assert_eq!(w.words.len(), words, "asked {asked}");
            assert_eq!(w.highest(), 0);
        }
    }

    #[test]
    fn in_order_then_duplicates() {
        let mut w = ReplayWindow::new(64);
        for seq in 1..=1000 {
            take(&mut w, seq);
            assert_eq!(w.highest(), seq);
            assert_eq!(w.check(seq), Err(ReplayError::Replayed));
            assert_eq!(w.accept(seq), Err(ReplayError::Replayed));
        }
        // Everything still inside the window is remembered as seen; the rest is too old.
        for seq in 937..=1000 {
            assert_eq!(w.check(seq), Err(ReplayError::Replayed), "{seq}");
        }
        assert_eq!(w.check(936), Err(ReplayError::TooOld));
        assert_eq!(w.check(1), Err(ReplayError::TooOld));
        assert_eq!(w.highest(), 1000);
    }

    #[test]
    fn sequence_zero_is_never_valid() {
        let mut w = ReplayWindow::new(64);
        assert_eq!(w.check(0), Err(ReplayError::TooOld));
        assert_eq!(w.accept(0), Err(ReplayError::TooOld));
        take(&mut w, 5);
        assert_eq!(w.accept(0), Err(ReplayError::TooOld));
        assert_eq!(w.highest(), 5);
    }

    #[test]
    fn reordering_up_to_window_minus_one_is_accepted() {
        for window in [64, 128, 1024, DEFAULT_REPLAY_WINDOW] {
            let mut w = ReplayWindow::new(window);
            let top = 100_000;
            take(&mut w, top);
            let w64 = u64::from(window);
            // Every number behind the highest, in reverse, down to the window's left edge.
            for seq in (top - (w64 - 1)..top).rev() {
                take(&mut w, seq);
            }
            assert_eq!(w.check(top - w64), Err(ReplayError::TooOld));
            for seq in top - (w64 - 1)..=top {
                assert_eq!(w.check(seq), Err(ReplayError::Replayed), "window {window} seq {seq}");
            }
        }
    }

    #[test]
    fn window_edge_is_exact() {
        let mut w = ReplayWindow::new(128);
        take(&mut w, 1000);
        // 1000 - 127 is the oldest number remembered; 1000 - 128 is forgotten.
        assert_eq!(w.check(873), Ok(()));
        assert_eq!(w.check(872), Err(ReplayError::TooOld));
        take(&mut w, 873);
        // One step forward pushes 873 out of the window: too old now, not replayed.
        take(&mut w, 1001);
        assert_eq!(w.check(873), Err(ReplayError::TooOld));
        assert_eq!(w.check(874), Ok(()));
        // Sliding by exactly a word boundary keeps the spare word's promise.
        for seq in [1023, 1024, 1087, 1088, 1151] {
            take(&mut w, seq);
        }
        assert_eq!(w.check(1025), Ok(()));
        assert_eq!(w.check(1024), Err(ReplayError::Replayed)); // 1151 - 127
        assert_eq!(w.check(1023), Err(ReplayError::TooOld)); // 1151 - 128
        assert_eq!(w.check(1087), Err(ReplayError::Replayed));
        assert_eq!(w.check(1088), Err(ReplayError::Replayed));
    }

    #[test]
    fn far_jumps_clear_the_ring() {
        let mut w = ReplayWindow::new(64);
        for seq in 1..=130 {
            take(&mut w, seq);
        }
        // A jump of many rings (2 words each): no stale bit may survive at the aliased slots.
        let jump = 130 + 64 * 3 * 7 + 5;
        take(&mut w, jump);
        for seq in jump - 63..jump {
            assert_eq!(w.check(seq), Ok(()), "{seq} is new after the jump");
        }
        assert_eq!(w.check(jump - 64), Err(ReplayError::TooOld));
        // Jumps of exactly one and two words (the whole ring), and around three.
        for step in [64, 128, 191, 192, 193] {
            let from = w.highest();
            take(&mut w, from + step);
            for seq in from + step - 63..from + step {
                let expected = if seq == from {
                    Err(ReplayError::Replayed)
                } else {
                    Ok(())
                };
                assert_eq!(w.check(seq), expected, "step {step} seq {seq}");
            }
        }
        assert!(w.words.iter().map(|word| word.count_ones()).sum::<u32>() <= 2);
    }

    #[test]
    fn huge_sequence_numbers_near_the_top() {
        let mut w = ReplayWindow::new(256);
        take(&mut w, u64::MAX - 300);
        take(&mut w, u64::MAX - 1);
        assert_eq!(w.check(u64::MAX - 300), Err(ReplayError::TooOld));
        take(&mut w, u64::MAX - 200);
        take(&mut w, u64::MAX);
        assert_eq!(w.highest(), u64::MAX);
        for seq in [u64::MAX, u64::MAX - 1, u64::MAX - 200] {
            assert_eq!(w.check(seq), Err(ReplayError::Replayed));
        }
        assert_eq!(w.check(u64::MAX - 255), Ok(()));
        assert_eq!(w.check(u64::MAX - 256), Err(ReplayError::TooOld));
        assert_eq!(w.check(1), Err(ReplayError::TooOld));
        // From 1 straight to the top: the ring is cleared without walking 2^58 words.
        let mut w = ReplayWindow::new(64);
        take(&mut w, 1);
        take(&mut w, u64::MAX);
        assert_eq!(w.check(u64::MAX - 63), Ok(()));
    }

    /// A seeded xorshift64*, for reproducible random tests without a rand crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The obvious model: every number ever accepted, and the highest.
    struct Model {
        seen: BTreeSet<u64>,
        highest: u64,
        window: u64,
    }

    impl Model {
        fn check(&self, seq: u64) -> Result<(), ReplayError> {
            if seq == 0 || (seq <= self.highest && self.highest - seq >= self.window) {
                Err(ReplayError::TooOld)
            } else if self.seen.contains(&seq) {
                Err(ReplayError::Replayed)
            } else {
                Ok(())
            }
        }

        fn accept(&mut self, seq: u64) -> Result<(), ReplayError> {
            self.check(seq)?;
            self.seen.insert(seq);
            self.highest = self.highest.max(seq);
            Ok(())
        }
    }

    #[test]
    fn matches_a_reference_model_under_random_traffic() {
        for (seed, window, start) in [
            (0x9e37_79b9_7f4a_7c15, 64, 0),
            (0xdead_beef_cafe_f00d, 128, 1 << 32),
            (0x0123_4567_89ab_cdef, 1000, 0),
            (0x5555_aaaa_3333_cccc, DEFAULT_REPLAY_WINDOW, u64::MAX - (1 << 40)),
        ] {
            let mut rng = XorShift(seed);
            let mut w = ReplayWindow::new(window);
            let mut model = Model {
                seen: BTreeSet::new(),
                highest: start,
                window: u64::from(w.window()),
            };
            if start > 0 {
                take(&mut w, start);
                model.seen.insert(start);
            }
            let span = u64::from(w.window()) * 2;
            for step in 0..100_000 {
                let top = model.highest;
                let seq = match rng.below(16) {
                    // Mostly a little ahead, as in-order traffic with gaps is.
                    0..=7 => top.saturating_add(1 + rng.below(4)),
                    // Reordered or replayed, around and beyond the window's left edge.
                    8..=13 => top.saturating_sub(rng.below(span)),
                    // Now and then a far jump, or something ancient.
                    14 => top.saturating_add(rng.below(span * 8)),
                    _ => rng.below(top.max(1)),
                };
                let expected = model.check(seq);
                assert_eq!(w.check(seq), expected, "seed {seed:#x} step {step} seq {seq} top {top}");
                if rng.below(4) != 0 {
                    assert_eq!(w.accept(seq), model.accept(seq), "seed {seed:#x} step {step} seq {seq}");
                    assert_eq!(w.highest(), model.highest);
                }
            }
        }
    }
}
