//! The deterministic payload every byte stream carries.
//!
//! Byte `o` of stream `s` in test `t` is byte `o % 8` (little endian) of `mix(seed(t, s) ^
//! (o / 8))`, where `mix` is the SplitMix64 finaliser. The receiver regenerates the expected bytes
//! from the offset alone, so it verifies every byte without any state beyond its position, and a
//! byte that was dropped, duplicated, reordered or flipped anywhere in a stream shows up as a
//! mismatch. Filling and checking work eight bytes at a time and never allocate.

/// The pattern of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    seed: u64,
}

/// Offsets at which one UDP datagram's payload starts: datagram `seq` of a flow uses pattern
/// offsets `seq << DATAGRAM_SHIFT ..`, which leaves room for any UDP payload size.
pub const DATAGRAM_SHIFT: u32 = 16;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The outcome of checking a buffer against the pattern.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Check {
    /// Bytes that differ from the pattern.
    pub corrupted_bytes: u64,
    /// Stream offset of the first differing byte.
    pub first_bad_offset: Option<u64>,
}

impl Check {
    /// Folds a later check of the same stream into this one.
    pub fn merge(&mut self, later: Check) {
        self.corrupted_bytes += later.corrupted_bytes;
        if self.first_bad_offset.is_none() {
            self.first_bad_offset = later.first_bad_offset;
        }
    }
}

impl Pattern {
    /// The pattern of stream `stream` in test `test_id`.
    pub fn new(test_id: u64, stream: u32) -> Self {
        Pattern {
            seed: mix(test_id ^ mix(u64::from(stream).wrapping_add(1))),
        }
    }

    fn word(&self, index: u64) -> [u8; 8] {
        mix(self.seed ^ index).to_le_bytes()
    }

    /// The pattern byte at stream offset `offset`.
    pub fn byte_at(&self, offset: u64) -> u8 {
        self.word(offset / 8)[(offset % 8) as usize]
    }

    /// Writes the pattern for stream offsets `offset .. offset + buf.len()` into `buf`.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let head = head_len(offset, buf.len());
        let (head_bytes, rest) = buf.split_at_mut(head);
        for (i, b) in head_bytes.iter_mut().enumerate() {
            *b = self.byte_at(offset + i as u64);
        }
        let mut word_index = (offset + head as u64) / 8;
        let mut chunks = rest.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.word(word_index));
            word_index += 1;
        }
        let tail = chunks.into_remainder();
        let expected = self.word(word_index);
        tail.copy_from_slice(&expected[..tail.len()]);
    }

    /// Compares `buf` with the pattern for stream offsets `offset .. offset + buf.len()`.
    pub fn check(&self, offset: u64, buf: &[u8]) -> Check {
        let mut result = Check::default();
        let mut note = |at: u64, got: &[u8], want: &[u8]| {
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                if g != w {
                    result.corrupted_bytes += 1;
                    result.first_bad_offset.get_or_insert(at + i as u64);
                }
            }
        };
        let head = head_len(offset, buf.len());
        let (head_bytes, rest) = buf.split_at(head);
        if head > 0 {
            let word = self.word(offset / 8);
            let start = (offset % 8) as usize;
            note(offset, head_bytes, &word[start..start + head]);
        }
        let mut at = offset + head as u64;
        let mut chunks = rest.chunks_exact(8);
        for chunk in &mut chunks {
            let want = self.word(at / 8);
            if chunk != want {
                note(at, chunk, &want);
            }
            at += 8;
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            note(at, tail, &self.word(at / 8)[..tail.len()]);
        }
        result
    }
}

/// Bytes before the first 8-aligned stream offset, capped by the buffer length.
fn head_len(offset: u64, len: usize) -> usize {
    (((8 - offset % 8) % 8) as usize).min(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_matches_byte_at_for_every_alignment() {
        let p = Pattern::new(7, 3);
        for offset in 0..17u64 {
            for len in [0usize, 1, 5, 8, 13, 64, 67] {
                let mut buf = vec![0u8; len];
                p.fill(offset, &mut buf);
                for (i, b) in buf.iter().enumerate() {
                    assert_eq!(*b, p.byte_at(offset + i as u64), "offset {offset} len {len}");
                }
                assert_eq!(p.check(offset, &buf), Check::default());
            }
        }
    }

    #[test]
    fn check_counts_and_locates_corruption() {
        let p = Pattern::new(1, 0);
        let mut buf = vec![0u8; 100];
        p.fill(1003, &mut buf);
        buf[10] ^= 0xff;
        buf[11] ^= 0x01;
        buf[99] ^= 0x80;
        let check = p.check(1003, &buf);
        assert_eq!(check.corrupted_bytes, 3);
        assert_eq!(check.first_bad_offset, Some(1013));
    }

    #[test]
    fn streams_and_tests_get_different_bytes() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        let mut c = [0u8; 32];
        Pattern::new(1, 0).fill(0, &mut a);
        Pattern::new(1, 1).fill(0, &mut b);
        Pattern::new(2, 0).fill(0, &mut c);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_shifted_stream_is_detected() {
        let p = Pattern::new(9, 9);
        let mut buf = vec![0u8; 64];
        p.fill(1, &mut buf);
        assert!(p.check(0, &buf).corrupted_bytes > 50);
    }

    #[test]
    fn merge_keeps_the_earliest_offset() {
        let mut total = Check {
            corrupted_bytes: 1,
            first_bad_offset: Some(5),
        };
        total.merge(Check {
            corrupted_bytes: 2,
            first_bad_offset: Some(9),
        });
        assert_eq!(
            total,
            Check {
                corrupted_bytes: 3,
                first_bad_offset: Some(5)
            }
        );
    }
}
