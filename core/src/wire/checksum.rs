//! The internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Design: a checksum is built from partial sums. [`accumulate`] adds bytes to a running 64-bit
//! sum four bytes at a time (the ones' complement sum of 32-bit words folds to the same 16-bit
//! value as the sum of 16-bit words, because 2^16 ≡ 1 mod 0xFFFF), pseudo-header
//! helpers add the addresses a transport checksum covers, and [`finish`] folds and complements.
//! [`update`] patches a stored checksum after one 16-bit word changes, without re-reading the
//! packet: HC' = ~(~HC + ~m + m') (RFC 1624 eqn. 3), which never yields the invalid -0 when the
//! original checksum came from a full computation over non-zero data.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` to the partial sum `sum`. An odd trailing byte is padded with a zero byte, so
/// only the last chunk of a packet may have odd length.
///
/// The bytes are summed as native-endian 32-bit words into 64-bit lanes (no byte swap per
/// word, so the compiler vectorises the loop), folded to 16 bits and only then put in network
/// byte order: the ones' complement sum is byte-order independent (RFC 1071 §2 B), so
/// swapping the folded sum equals summing big-endian words.
#[inline]
pub fn accumulate(sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    let mut native: u64 = words
        .by_ref()
        .map(|word| u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]])))
        .sum();
    let mut tail = [0u8; 4];
    let rest = words.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    native += u64::from(u32::from_ne_bytes(tail));
    sum + u64::from(u16::from_be(fold(native)))
}

/// Folds a partial sum to 16 bits with end-around carry.
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// Folds and complements a partial sum into the checksum field value.
#[inline]
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// The internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    finish(accumulate(0, data))
}

/// Partial sum of the IPv4 pseudo-header for a transport segment of `len` bytes.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u64 {
    let sum = accumulate(0, &src.octets());
    accumulate(sum, &dst.octets()) + u64::from(proto) + u64::from(len)
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1) for an upper-layer packet of `len` bytes.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u64 {
    let sum = accumulate(0, &src.octets());
    accumulate(sum, &dst.octets()) + u64::from(next_header) + u64::from(len)
}

/// The checksum field value after one 16-bit word of the covered data changes from `old` to
/// `new` (RFC 1624 eqn. 3).
#[inline]
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP datagram's IPv4 header, 192.168.0.1 → 192.168.0.199, checksum 0xB861.
    const IPV4_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xB8, 0x61, 0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8,
        0x00, 0xC7,
    ];

    #[test]
    fn computes_a_known_header_checksum() {
        let mut header = IPV4_HEADER;
        assert_eq!(checksum(&header), 0, "a valid header sums to zero");
        header[10..12].fill(0);
        assert_eq!(checksum(&header), 0xB861);
    }

    #[test]
    fn rfc1071_example_words() {
        // RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let data = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7];
        assert_eq!(fold(accumulate(0, &data)), 0xDDF2);
        assert_eq!(checksum(&data), !0xDDF2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), checksum(&[0x12, 0x34, 0x56, 0x00]));
        assert_eq!(checksum(&[0xAB]), !0xAB00);
        assert_eq!(checksum(&[]), 0xFFFF);
    }

    #[test]
    fn split_sums_match_whole_sum_at_even_boundaries() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1501).collect();
        for split in (0..data.len()).step_by(2) {
            let split_sum = accumulate(accumulate(0, &data[..split]), &data[split..]);
            assert_eq!(finish(split_sum), checksum(&data), "split {split}");
        }
    }

    /// RFC 1071 by the letter: big-endian 16-bit words, an odd byte padded, end-around carry.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for pair in data.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn agrees_with_the_rfc_at_every_length_and_alignment() {
        let mut state = 0x2545_F491_u32;
        let bytes: Vec<u8> = (0..2_100)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        for start in 0..8 {
            for len in (0..1_600).chain([2_000, 2_091]) {
                let data = &bytes[start..start + len];
                assert_eq!(
                    fold(accumulate(0, data)),
                    reference_sum(data),
                    "start {start} len {len}"
                );
            }
        }
        // Worst cases for carries: all ones, and a sum that is a multiple of 0xFFFF.
        assert_eq!(fold(accumulate(0, &[0xFF; 1_501])), reference_sum(&[0xFF; 1_501]));
        assert_eq!(fold(accumulate(0, &[0xFF, 0xFF])), 0xFFFF);
        assert_eq!(fold(accumulate(7, &[0; 40])), 7, "zeros add nothing to a running sum");
    }

    #[test]
    fn incremental_update_matches_recomputation() {
        let mut state = 0x9E37_79B9_u32;
        let mut data = [0u8; 64];
        for round in 0..2000 {
            for b in data.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *b = state as u8;
            }
            let before = checksum(&data);
            let at = (round % 32) * 2;
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            let new = (state >> 8) as u16;
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            assert_eq!(update(before, old, new), checksum(&data), "round {round}");
        }
    }

    #[test]
    fn pseudo_headers_sum_their_fields() {
        let v4 = pseudo_header_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 6, 20);
        assert_eq!(fold(v4), 0x0A00 + 0x0001 + 0x0A00 + 0x0002 + 6 + 20);
        let v6 = pseudo_header_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 17, 8);
        assert_eq!(fold(v6), 1 + 1 + 17 + 8);
    }
}
