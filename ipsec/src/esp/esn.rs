//! Inferring the unsent high 32 bits of an extended sequence number (RFC 4304, RFC 4303
//! Appendix A2.2).
//!
//! Design: only the low 32 bits travel; the receiver picks the high half that puts the number
//! nearest its replay window. With `T` the highest number seen (`Th`, `Tl` its halves) and `W`
//! the window, the window's bottom is `Bl = Tl - W + 1 (mod 2^32)`:
//!
//! * Case A, the window lies within one 2^32 block (`Tl >= W - 1`): a low half at or above `Bl`
//!   is in or right of the window in block `Th`; one below `Bl` has wrapped into block `Th + 1`.
//! * Case B, the window straddles a block boundary (`Tl < W - 1`): a low half at or above `Bl`
//!   is in the window's older part, block `Th - 1`; one below is in block `Th`.
//!
//! A guess is only a guess: the ICV (whose AAD carries the high half) confirms it, and the
//! window is marked only then. So a packet from just left of the window in case A opens as
//! `Th + 1` and fails authentication rather than being reported as too old. Guesses outside
//! the 64-bit space (below block 0, above block 2^32 - 1) are too old by definition.

use super::wire::low32;

/// The full sequence number for a received low half, given the window's highest number and
/// size, or `None` if it can only be left of the window.
pub(super) fn infer(seq_low: u32, highest: u64, window: u32) -> Option<u64> {
    let th = (highest >> 32) as u32;
    let tl = low32(highest);
    let bottom = tl.wrapping_sub(window).wrapping_add(1);
    let high = if tl >= window - 1 {
        if seq_low >= bottom {
            th
        } else {
            th.checked_add(1)?
        }
    } else if seq_low >= bottom {
        th.checked_sub(1)?
    } else {
        th
    };
    Some((u64::from(high) << 32) | u64::from(seq_low))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 64;
    const B: u64 = 1 << 32;

    #[test]
    fn fresh_window_starts_in_block_zero() {
        assert_eq!(infer(1, 0, W), Some(1));
        assert_eq!(infer(0x8000_0000, 0, W), Some(0x8000_0000));
        // Right of 2^32 - W: would be block -1.
        assert_eq!(infer(u32::MAX, 0, W), None);
        assert_eq!(infer(u32::MAX - 62, 0, W), None);
        assert_eq!(infer(u32::MAX - 63, 0, W), Some(B - 64));
    }

    #[test]
    fn case_a_window_inside_one_block() {
        let top = B + 1000; // Th = 1, Tl = 1000
        assert_eq!(infer(1000, top, W), Some(top));
        assert_eq!(infer(1000 - 63, top, W), Some(top - 63));
        assert_eq!(infer(5000, top, W), Some(B + 5000));
        // Below the window's bottom: taken as having wrapped into the next block.
        assert_eq!(infer(1000 - 64, top, W), Some(2 * B + 936));
        assert_eq!(infer(0, top, W), Some(2 * B));
        // Edge of case A: Tl = W - 1, bottom = 0.
        assert_eq!(infer(0, B + 63, W), Some(B));
    }

    #[test]
    fn across_the_boundary_both_ways() {
        // Receiver just below 2^32, sender just above it.
        assert_eq!(infer(5, B - 10, W), Some(B + 5));
        assert_eq!(infer(u32::MAX - 20, B - 10, W), Some(B - 21));
        // Receiver just above 2^32, a late packet from just below it.
        assert_eq!(infer(u32::MAX - 2, B + 5, W), Some(B - 3));
        assert_eq!(infer(2, B + 5, W), Some(B + 2));
        assert_eq!(infer(100, B + 5, W), Some(B + 100));
        // Edge of case B: Tl = W - 2, bottom = 2^32 - 1.
        assert_eq!(infer(u32::MAX, B + 62, W), Some(B - 1));
        assert_eq!(infer(0, B + 62, W), Some(B));
    }

    #[test]
    fn top_of_the_space() {
        let top = u64::MAX - 10;
        assert_eq!(infer(u32::MAX, top, W), Some(u64::MAX));
        // Would be block 2^32.
        assert_eq!(infer(0, top, W), None);
        assert_eq!(infer(u32::MAX - 74, top, W), None);
        assert_eq!(infer(u32::MAX - 73, top, W), Some(u64::MAX - 73));
    }

    #[test]
    fn large_windows() {
        let w = crate::replay::MAX_REPLAY_WINDOW;
        assert_eq!(infer(u32::MAX - 1000, B + 100, w), Some(B - 1001));
        assert_eq!(infer(200, B + 100, w), Some(B + 200));
    }
}
