//! Sealing and opening ESP allocate nothing, whatever the outcome: for both ciphers, packets
//! of every size are sealed and opened in order and out of order, replayed and damaged,
//! while the counting allocator ([`braid_sys::allocations`]) watches the test's thread.

use braid_ipsec::esp::{EspCipher, EspError, EspKeys, InboundSa, OutboundSa, ESP_MAX_OVERHEAD};
use braid_ipsec::replay::DEFAULT_REPLAY_WINDOW;
use braid_sys::allocations::{allocations_during, CountingAllocator};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const SPI: u32 = 0x0bad_cafe;
const SIZES: [usize; 5] = [20, 64, 200, 1400, 1500];

/// An IPv4-looking packet of `size` bytes.
fn inner(size: usize) -> Vec<u8> {
    let mut packet: Vec<u8> = (0..size).map(|i| i as u8).collect();
    packet[0] = 0x45;
    packet
}

#[test]
fn sealing_and_opening_allocate_nothing() {
    for cipher in [EspCipher::AesGcm256, EspCipher::ChaCha20Poly1305] {
        let keys = || EspKeys::from_keymat(cipher, &[0x42; 36]).unwrap();
        let mut tx = OutboundSa::new(SPI, cipher, keys(), true);
        let mut rx = InboundSa::new(SPI, cipher, keys(), true, DEFAULT_REPLAY_WINDOW);
        let packets: Vec<Vec<u8>> = SIZES.iter().map(|&size| inner(size)).collect();
        let stride = 1500 + ESP_MAX_OVERHEAD;
        let mut sealed = vec![0u8; 64 * stride];
        let mut lens = [0usize; 64];
        let mut out = vec![0u8; stride];
        let mut damaged = vec![0u8; stride];
        let ((opened, refused), allocations) = allocations_during(|| {
            let (mut opened, mut refused) = (0, 0);
            for _ in 0..200 {
                for (i, (slot, len)) in sealed.chunks_exact_mut(stride).zip(lens.iter_mut()).enumerate() {
                    *len = tx.seal(&packets[i % packets.len()], slot).unwrap();
                }
                // Every other packet first, then the rest: all inside the window.
                let order = (0..64).step_by(2).chain((1..64).step_by(2));
                for i in order {
                    let datagram = &sealed[i * stride..i * stride + lens[i]];
                    let inner = rx.open(datagram, &mut out).unwrap();
                    assert_eq!(&out[..inner.len], &packets[i % packets.len()][..]);
                    opened += 1;
                }
                // The same again: replayed. A new one damaged: not authentic.
                assert_eq!(rx.open(&sealed[..lens[0]], &mut out).unwrap_err(), EspError::Replayed);
                let len = tx.seal(&packets[3], &mut damaged).unwrap();
                damaged[len - 1] ^= 1;
                assert_eq!(
                    rx.open(&damaged[..len], &mut out).unwrap_err(),
                    EspError::AuthenticationFailed
                );
                refused += 2;
            }
            (opened, refused)
        });
        assert_eq!((opened, refused), (200 * 64, 400));
        assert_eq!(
            allocations, 0,
            "{cipher:?}: {opened} packets opened and {refused} refused cost {allocations} heap allocations"
        );
    }
}
