//! Shared pieces of the braid-ipsec fuzz targets and of the seed generator (`src/bin/seeds.rs`).
//!
//! * [`esp`]: the fixed ESP key the `esp_open` target uses, how its first byte picks cipher,
//!   ESN, mode and replay window, an independent RFC 4303 reference sealer (so the target can
//!   build *authentic* packets whose trailer or padding is wrong, which `OutboundSa` never
//!   produces) and an RFC 4303 §2.4–2.6 trailer oracle.
//! * [`engine`]: the IKE configurations of the `ike_engine` target (like those of
//!   `ipsec/src/ike/tests.rs`) and its input format: a script of operations on two real engines
//!   joined by a simulated network that the fuzzer controls (deliver, drop, replay, mutate,
//!   truncate, inject raw bytes or bytes under a live IKE SA's SPIs, let time pass, ...).
//!
//! Everything here only uses braid-ipsec's public API.

pub mod engine;
pub mod esp;

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

    /// A length-prefixed (u16, taken modulo `max + 1`) byte string.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()) % (max + 1);
        self.take(n)
    }
}
