//! Shared pieces of the braid fuzz targets and of the seed generators (`src/bin/seeds.rs` for
//! the braid-ipsec targets, `src/bin/braid_seeds.rs` for the others).
//!
//! Design: a target is a thin `fuzz_target!` that decodes its input and states its checks;
//! what several targets or a target and its seed generator share lives here, and every oracle
//! a check compares braid against is written independently of the code under test.
//!
//! * [`packet`]: an RFC 1071 checksum, the transport segment of a plain IP packet, a TCP
//!   option walker, RFC 8926 GENEVE acceptance, packet builders for seeds.
//! * [`offload`]: what a segment written by the demux's TSO must look like, and a coalesced
//!   batch checked by segmenting every super-packet again.
//! * [`control`]: the control envelope target's key and its independent signer.
//! * [`gw`]: two gateway suites of one pair (WireGuard or IPsec) on a simulated WAN, `a`'s LAN
//!   policy, and the script the gateway targets run against them.
//! * [`esp`]: the fixed ESP key the `esp_open` target uses, how its first byte picks cipher,
//!   ESN, mode and replay window, an independent RFC 4303 reference sealer (so the target can
//!   build *authentic* packets whose trailer or padding is wrong, which `OutboundSa` never
//!   produces) and an RFC 4303 §2.4–2.6 trailer oracle.
//! * [`engine`]: the IKE configurations of the `ike_engine` target (like those of
//!   `ipsec/src/ike/tests.rs`) and its input format: a script of operations on two real engines
//!   joined by a simulated network that the fuzzer controls (deliver, drop, replay, mutate,
//!   truncate, inject raw bytes or bytes under a live IKE SA's SPIs, let time pass, ...).
//! * [`corpus`]: a seed corpus being written.
//!
//! Everything here uses only the public API of braid's crates (`braid_gw::datapath::Policy`
//! is public, hidden from the docs, for the gateway targets).

pub mod control;
pub mod corpus;
pub mod engine;
pub mod esp;
pub mod gw;
pub mod offload;
pub mod packet;

/// A forgiving little-endian reader over fuzzer bytes: past the end it yields zeros, so every
/// input decodes to something.
#[derive(Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// A length-prefixed (u16, taken modulo `max + 1`) byte string.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()) % (max + 1);
        self.take(n)
    }
}
