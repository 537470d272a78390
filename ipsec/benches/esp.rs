//! ESP seal and open throughput per cipher and packet size, against an anchor: ring's raw AEAD
//! over the same number of bytes, with no ESP framing. `esp_seal / ring_raw_seal` is what the
//! framing (header, copy, trailer, counters) costs; the AEAD itself is not ours to speed up.
//!
//! * `esp_seal/<cipher>/<size>`: [`OutboundSa::seal`] of a `size`-byte inner packet.
//! * `esp_open/<cipher>/<size>`: [`InboundSa::open`] of the same, in order, window 8192.
//!   Packets are sealed in untimed batches first (every sequence number opens once only), so
//!   the figure is the open alone, reading datagrams from a cache-sized batch.
//! * `ring_raw_seal/<cipher>/<size>`: `LessSafeKey::seal_in_place_separate_tag` on `size` bytes
//!   in place, with a fresh counter nonce each time and no AAD.
//!
//! `cargo bench -p braid-ipsec --bench esp -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use braid_ipsec::esp::{EspCipher, EspKeys, InboundSa, OutboundSa, ESP_MAX_OVERHEAD};
use braid_ipsec::replay::DEFAULT_REPLAY_WINDOW;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

const CIPHERS: [EspCipher; 2] = [EspCipher::AesGcm256, EspCipher::ChaCha20Poly1305];
const SIZES: [usize; 4] = [64, 256, 1400, 8192];
const KEYMAT: [u8; 36] = [0x42; 36];
const SPI: u32 = 0x0bad_cafe;
/// Bytes of sealed datagrams kept for one timed open batch: fits in L2.
const OPEN_BATCH_BYTES: usize = 256 * 1024;

fn label(cipher: EspCipher) -> &'static str {
    match cipher {
        EspCipher::AesGcm256 => "aes256gcm",
        EspCipher::ChaCha20Poly1305 => "chacha20poly1305",
    }
}

fn keys(cipher: EspCipher) -> EspKeys {
    EspKeys::from_keymat(cipher, &KEYMAT).expect("36 bytes of KEYMAT")
}

/// An IPv4-looking packet of `size` bytes.
fn inner(size: usize) -> Vec<u8> {
    let mut packet: Vec<u8> = (0..size).map(|i| i as u8).collect();
    packet[0] = 0x45;
    packet
}

fn esp_seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("esp_seal");
    for cipher in CIPHERS {
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            // ESN: a 64-bit counter no benchmark run can exhaust.
            let mut sa = OutboundSa::new(SPI, cipher, keys(cipher), true);
            let packet = inner(size);
            let mut out = vec![0u8; size + ESP_MAX_OVERHEAD];
            group.bench_function(BenchmarkId::new(label(cipher), size), |b| {
                b.iter(|| sa.seal(black_box(&packet), black_box(&mut out)).expect("seal"))
            });
        }
    }
    group.finish();
}

fn esp_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("esp_open");
    for cipher in CIPHERS {
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let mut tx = OutboundSa::new(SPI, cipher, keys(cipher), true);
            let mut rx = InboundSa::new(SPI, cipher, keys(cipher), true, DEFAULT_REPLAY_WINDOW);
            let packet = inner(size);
            let stride = size + ESP_MAX_OVERHEAD;
            let batch = (OPEN_BATCH_BYTES / stride).clamp(16, 256);
            let mut sealed = vec![0u8; batch * stride];
            let mut lens = vec![0usize; batch];
            let mut out = vec![0u8; stride];
            group.bench_function(BenchmarkId::new(label(cipher), size), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(batch as u64) as usize;
                        for (slot, len) in sealed.chunks_exact_mut(stride).zip(lens.iter_mut()).take(n) {
                            *len = tx.seal(&packet, slot).expect("seal");
                        }
                        let start = Instant::now();
                        for (slot, len) in sealed.chunks_exact(stride).zip(lens.iter()).take(n) {
                            black_box(rx.open(black_box(&slot[..*len]), &mut out).expect("open"));
                        }
                        timed += start.elapsed();
                        left -= n as u64;
                    }
                    timed
                })
            });
        }
    }
    group.finish();
}

fn ring_raw_seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_raw_seal");
    for cipher in CIPHERS {
        let algorithm = match cipher {
            EspCipher::AesGcm256 => &AES_256_GCM,
            EspCipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        };
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let key = LessSafeKey::new(UnboundKey::new(algorithm, &KEYMAT[..32]).expect("32-byte key"));
            let mut buf = inner(size);
            let mut counter = 0u64;
            group.bench_function(BenchmarkId::new(label(cipher), size), |b| {
                b.iter(|| {
                    counter += 1;
                    let mut nonce = [0x42u8; 12];
                    nonce[4..].copy_from_slice(&counter.to_be_bytes());
                    key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        black_box(&mut buf),
                    )
                    .expect("seal")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, esp_seal, esp_open, ring_raw_seal);
criterion_main!(benches);
