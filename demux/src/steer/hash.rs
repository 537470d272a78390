//! The flow hash: symmetric, keyed, and bit-identical on every host and CPU.
//!
//! Every steering decision starts from one 64-bit value per flow. Three properties matter:
//!
//! * **Symmetric.** The hash is taken over the [`FlowKey`], whose endpoints are in canonical
//!   order, so a packet and its reply hash alike and both directions use one gateway pair.
//! * **Keyed.** The SipHash key is derived from the 32-byte cluster secret with
//!   HMAC-SHA256 over [`FLOW_HASH_LABEL`]. Without the secret nobody can choose 5-tuples that all
//!   land on one gateway pair or one flow-table bucket.
//! * **Stable across hosts.** Both sites' demuxes (and, later, gateways choosing NAT ports whose
//!   replies hash back to themselves) must compute the same value. So the hash is SipHash-2-4
//!   (Aumasson & Bernstein, 2012) implemented here over an explicit byte encoding with
//!   little-endian integers — never `std::hash::Hasher`, whose output may change between Rust
//!   releases, nor ahash, which varies with CPU features. Golden vectors in the tests pin it.
//!
//! A [`FragmentId`] is hashed with the same key over its own encoding (family byte with the
//! high bit set, so it never shares an input with a flow): fragments need no symmetry, only a
//! spread an outsider cannot aim.

use std::fmt;

use braid_core::flow::{FiveTuple, FragmentId};
use ring::hmac;

use super::key::{address_bytes, ByteWriter, FlowKey, MAX_ENCODED_LEN};

/// HMAC label deriving the flow-hash key from the cluster secret. Changing it re-steers every
/// flow in a cluster, so it carries a version.
pub const FLOW_HASH_LABEL: &[u8] = b"braid flow hash v1";

/// Marks a fragment encoding's first byte (the family byte of a flow encoding never has it).
const FRAGMENT_DOMAIN: u8 = 0x80;

/// Longest fragment encoding: family, protocol, two IPv6 addresses, identification.
const MAX_FRAGMENT_ENCODED_LEN: usize = 1 + 1 + 16 + 16 + 4;

/// The cluster's keyed, symmetric flow hash. The key is secret: `Debug` does not print it.
#[derive(Clone)]
pub struct FlowHasher {
    k0: u64,
    k1: u64,
}

impl FlowHasher {
    /// The hasher every member of the cluster derives from the cluster secret.
    pub fn from_secret(secret: &[u8; 32]) -> FlowHasher {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&key, FLOW_HASH_LABEL);
        let mut sip_key = [0u8; 16];
        sip_key.copy_from_slice(&tag.as_ref()[..16]);
        FlowHasher::from_sip_key(sip_key)
    }

    /// A hasher with an explicit 16-byte SipHash key (k0 then k1, little-endian).
    pub fn from_sip_key(key: [u8; 16]) -> FlowHasher {
        let (k0, k1) = split_key(key);
        FlowHasher { k0, k1 }
    }

    /// The hash of a flow in either direction.
    #[inline]
    pub fn hash_tuple(&self, tuple: &FiveTuple) -> u64 {
        self.hash_key(&FlowKey::new(tuple))
    }

    /// The hash of a flow already in canonical form.
    #[inline]
    pub fn hash_key(&self, key: &FlowKey) -> u64 {
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let len = key.encode(&mut buf);
        siphash24(self.k0, self.k1, &buf[..len])
    }

    /// The hash of the fragments of one datagram.
    #[inline]
    pub fn hash_fragment(&self, frag: &FragmentId) -> u64 {
        let v6 = !(frag.src.is_ipv4() && frag.dst.is_ipv4());
        let addr_range = if v6 { 0..16 } else { 12..16 };
        let mut buf = [0u8; MAX_FRAGMENT_ENCODED_LEN];
        let mut w = ByteWriter::new(&mut buf);
        w.put(&[FRAGMENT_DOMAIN | if v6 { 6 } else { 4 }, frag.proto]);
        w.put(&address_bytes(frag.src)[addr_range.clone()]);
        w.put(&address_bytes(frag.dst)[addr_range]);
        w.put(&frag.id.to_le_bytes());
        let len = w.len();
        siphash24(self.k0, self.k1, &buf[..len])
    }
}

impl fmt::Debug for FlowHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowHasher").finish_non_exhaustive()
    }
}

fn split_key(key: [u8; 16]) -> (u64, u64) {
    let mut k0 = [0u8; 8];
    let mut k1 = [0u8; 8];
    k0.copy_from_slice(&key[..8]);
    k1.copy_from_slice(&key[8..]);
    (u64::from_le_bytes(k0), u64::from_le_bytes(k1))
}

/// SipHash-2-4 of `msg` under the key (`k0`, `k1`), words read little-endian.
pub(crate) fn siphash24(k0: u64, k1: u64, msg: &[u8]) -> u64 {
    let mut s = SipState {
        v0: k0 ^ 0x736f_6d65_7073_6575,
        v1: k1 ^ 0x646f_7261_6e64_6f6d,
        v2: k0 ^ 0x6c79_6765_6e65_7261,
        v3: k1 ^ 0x7465_6462_7974_6573,
    };
    let words = msg.chunks_exact(8);
    let tail = words.remainder();
    for word in words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        s.compress(u64::from_le_bytes(bytes));
    }
    let mut last = (msg.len() as u64) << 56;
    for (i, &b) in tail.iter().enumerate() {
        last |= u64::from(b) << (8 * i);
    }
    s.compress(last);
    s.v2 ^= 0xff;
    for _ in 0..4 {
        s.round();
    }
    s.v0 ^ s.v1 ^ s.v2 ^ s.v3
}

struct SipState {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl SipState {
    /// Absorbs one message word with two rounds (the "2" of SipHash-2-4).
    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.round();
        self.v0 ^= m;
    }

    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steer::written_tuple as tuple;
    use braid_core::flow::proto;

    fn paper_key() -> (u64, u64) {
        let mut key = [0u8; 16];
        for (i, b) in key.iter_mut().enumerate() {
            *b = i as u8;
        }
        split_key(key)
    }

    #[test]
    fn siphash_matches_the_paper_vector() {
        let (k0, k1) = paper_key();
        let msg: Vec<u8> = (0u8..15).collect();
        assert_eq!(siphash24(k0, k1, &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn siphash_matches_reference_vectors_at_block_edges() {
        // From the reference implementation's vectors.h (message 00..len-1, key 00..0f).
        let (k0, k1) = paper_key();
        let msg: Vec<u8> = (0u8..64).collect();
        assert_eq!(siphash24(k0, k1, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(k0, k1, &msg[..8]), 0x93f5_f579_9a93_2462);
        assert_eq!(siphash24(k0, k1, &msg[..63]), 0x958a_324c_eb06_4572);
    }

    fn golden_hasher() -> FlowHasher {
        let mut secret = [0u8; 32];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = 0xa0 + i as u8;
        }
        FlowHasher::from_secret(&secret)
    }

    /// These values are part of the cluster contract: every demux, on any CPU, must compute
    /// them. A change here re-steers every flow and breaks mixed-version clusters.
    #[test]
    fn golden_vectors() {
        let h = golden_hasher();
        let cases = [
            (tuple("198.18.0.10", 40000, "198.19.0.20", 443, proto::TCP), GOLDEN[0]),
            (tuple("198.18.0.10", 5353, "198.19.0.20", 53, proto::UDP), GOLDEN[1]),
            (tuple("198.18.0.10", 7, "198.19.0.20", 7, proto::ICMP), GOLDEN[2]),
            (
                tuple("2001:db8::10", 40000, "2001:db8:1::20", 443, proto::TCP),
                GOLDEN[3],
            ),
        ];
        for (t, expected) in cases {
            assert_eq!(h.hash_tuple(&t), expected, "{t:?}");
        }
        let frag = FragmentId {
            src: "198.18.0.10".parse().unwrap(),
            dst: "198.19.0.20".parse().unwrap(),
            proto: proto::UDP,
            id: 0xbeef,
        };
        assert_eq!(h.hash_fragment(&frag), GOLDEN[4]);
    }

    /// Cross-checked against an independent implementation of the same encoding.
    const GOLDEN: [u64; 5] = [
        0xd481_9281_a213_b3e8,
        0xa521_18af_3c0f_8e6f,
        0x92a1_607a_5db0_c827,
        0xbe49_4cec_42e4_9566,
        0xdeff_3596_6aba_49c2,
    ];

    #[test]
    fn symmetric_in_direction() {
        let h = golden_hasher();
        for t in [
            tuple("198.18.0.10", 40000, "198.19.0.20", 443, proto::TCP),
            tuple("2001:db8::10", 1, "2001:db8::9", 2, proto::UDP),
        ] {
            assert_eq!(h.hash_tuple(&t), h.hash_tuple(&t.reversed()));
        }
    }

    #[test]
    fn every_field_and_the_key_change_the_hash() {
        let h = golden_hasher();
        let base = tuple("198.18.0.10", 40000, "198.19.0.20", 443, proto::TCP);
        let variants = [
            tuple("198.18.0.11", 40000, "198.19.0.20", 443, proto::TCP),
            tuple("198.18.0.10", 40001, "198.19.0.20", 443, proto::TCP),
            tuple("198.18.0.10", 40000, "198.19.0.21", 443, proto::TCP),
            tuple("198.18.0.10", 40000, "198.19.0.20", 444, proto::TCP),
            tuple("198.18.0.10", 40000, "198.19.0.20", 443, proto::UDP),
        ];
        for v in variants {
            assert_ne!(h.hash_tuple(&v), h.hash_tuple(&base), "{v:?}");
        }
        let other = FlowHasher::from_secret(&[7; 32]);
        assert_ne!(other.hash_tuple(&base), h.hash_tuple(&base));
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let h = FlowHasher::from_sip_key([0x5a; 16]);
        let shown = format!("{h:?}");
        assert!(!shown.contains("5a5a") && !shown.contains(&0x5a5a5a5a5a5a5a5au64.to_string()));
    }
}
