//! Flow-steering throughput with 1 M live flows: flow-table lookups of established flows,
//! inserts of new flows, and the whole `Steering::steer` path (canonical key, SipHash, table),
//! packet by packet and in prefetching batches; and a pass of the expiry sweep.
//!
//! `cargo bench -p braid-demux --bench flow_table -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_core::flow::{proto, tcp_flags, Classified, FiveTuple, PairId};
use braid_demux::steer::{
    FlowHasher, FlowKey, FlowTable, IdleTimeouts, MaglevTable, Outcome, Steering, DEFAULT_TABLE_SIZE, PREFETCH_WINDOW,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const LIVE_FLOWS: u32 = 1 << 20; // a multiple of BATCH
const NEW_FLOWS_PER_ROUND: u32 = 200_000;
const BATCH: usize = 1024;
const NOW: u64 = 1_000_000;
const PAIRS: [PairId; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

fn tuple(n: u32, proto: u8) -> FiveTuple {
    FiveTuple {
        src: IpAddr::V4(Ipv4Addr::from(0xc612_0000 | (n >> 4))),
        dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        src_port: 10_000 + (n & 15) as u16,
        dst_port: 443,
        proto,
    }
}

fn hasher() -> FlowHasher {
    FlowHasher::from_secret(&[0x5e; 32])
}

fn flows(count: u32, proto: u8) -> Vec<(u64, FlowKey)> {
    let h = hasher();
    (0..count)
        .map(|n| {
            let key = FlowKey::new(&tuple(n, proto));
            (h.hash_key(&key), key)
        })
        .collect()
}

fn pin_all(table: &mut FlowTable, maglev: &MaglevTable, flows: &[(u64, FlowKey)], now: u64) -> usize {
    let mut unpinned = 0;
    for (hash, key) in flows {
        let steered = table
            .lookup_or_insert(
                *hash,
                key,
                tcp_flags::ACK,
                now,
                |p| maglev.contains(p),
                || maglev.lookup(*hash),
            )
            .expect("pairs are live");
        unpinned += usize::from(steered.outcome == Outcome::Unpinned);
    }
    unpinned
}

/// `pin_all` for a batch, overlapping cache misses the way `Steering::steer_batch` does.
fn pin_all_prefetched(table: &mut FlowTable, maglev: &MaglevTable, flows: &[(u64, FlowKey)], now: u64) -> usize {
    let mut unpinned = 0;
    for window in flows.chunks(PREFETCH_WINDOW) {
        for (hash, _) in window {
            table.prefetch_buckets(*hash);
        }
        for (hash, _) in window {
            table.prefetch_entries(*hash);
        }
        unpinned += pin_all(table, maglev, window, now);
    }
    unpinned
}

fn bench_flow_table(c: &mut Criterion) {
    let maglev = MaglevTable::build(&PAIRS, DEFAULT_TABLE_SIZE).unwrap();
    let live = flows(LIVE_FLOWS, proto::TCP);
    let mut group = c.benchmark_group("flow_table_1M_live");
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut table = FlowTable::new(LIVE_FLOWS as usize, IdleTimeouts::default());
    assert_eq!(pin_all(&mut table, &maglev, &live, NOW), 0);
    println!(
        "flow table: {} flows, {} bytes, {} bytes per flow",
        table.len(),
        table.memory_bytes(),
        table.memory_bytes() / table.len()
    );
    let mut next = 0usize;
    group.bench_function("lookup_established", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let (hash, key) = &live[next];
                next = (next + 1) % live.len();
                black_box(table.lookup_or_insert(
                    *hash,
                    key,
                    tcp_flags::ACK,
                    NOW,
                    |p| maglev.contains(p),
                    || maglev.lookup(*hash),
                ));
            }
        })
    });
    group.bench_function("lookup_established_prefetched", |b| {
        b.iter(|| {
            let start = next;
            next = (next + BATCH) % live.len();
            black_box(pin_all_prefetched(
                &mut table,
                &maglev,
                &live[start..start + BATCH],
                NOW,
            ));
        })
    });
    drop(table);

    // New flows are UDP with a 1 ms timeout, so a sweep between rounds frees them again while
    // the 1 M TCP flows stay live; the table has room for 1 M + one round.
    let timeouts = IdleTimeouts {
        udp_ms: 1,
        tcp_ms: u64::MAX / 4,
        tcp_half_open_ms: u64::MAX / 4,
        ..IdleTimeouts::default()
    };
    let mut table = FlowTable::new((LIVE_FLOWS + NEW_FLOWS_PER_ROUND) as usize, timeouts);
    pin_all(&mut table, &maglev, &live, NOW);
    let fresh = flows(NEW_FLOWS_PER_ROUND, proto::UDP);
    let mut now = NOW;
    type PinFn = fn(&mut FlowTable, &MaglevTable, &[(u64, FlowKey)], u64) -> usize;
    let variants: [(&str, PinFn); 2] = [("insert_new", pin_all), ("insert_new_prefetched", pin_all_prefetched)];
    for (name, pin) in variants {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut remaining = iters as usize * BATCH;
                let mut elapsed = Duration::ZERO;
                while remaining > 0 {
                    let round = &fresh[..remaining.min(fresh.len())];
                    let start = Instant::now();
                    let unpinned = pin(&mut table, &maglev, round, now);
                    elapsed += start.elapsed();
                    assert_eq!(unpinned, 0, "the bench must measure pinning inserts");
                    remaining -= round.len();
                    now += 2;
                    table.expire(now, usize::MAX);
                }
                elapsed
            })
        });
    }
    group.finish();
}

fn bench_steer(c: &mut Criterion) {
    let mut steering = Steering::new(hasher(), LIVE_FLOWS as usize, IdleTimeouts::default());
    steering.set_membership(Arc::new(MaglevTable::build(&PAIRS, DEFAULT_TABLE_SIZE).unwrap()));
    let packets: Vec<Classified> = (0..LIVE_FLOWS)
        .map(|n| Classified::Whole {
            tuple: tuple(n, proto::TCP),
            tcp_flags: tcp_flags::ACK,
        })
        .collect();
    for p in &packets {
        steering.steer(p, NOW).unwrap();
    }
    let mut group = c.benchmark_group("steering_1M_live");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut next = 0usize;
    group.bench_function("steer_established_v4", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                black_box(steering.steer(&packets[next], NOW).ok());
                next = (next + 1) % packets.len();
            }
        })
    });
    group.bench_function("steer_batch_established_v4", |b| {
        b.iter(|| {
            let start = next;
            next = (next + BATCH) % packets.len();
            steering.steer_batch(&packets[start..start + BATCH], NOW, |_, r| {
                black_box(r.ok());
            });
        })
    });
    group.finish();

    let h = hasher();
    let v4 = tuple(12345, proto::TCP);
    let v6 = FiveTuple {
        src: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
        dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x20)),
        ..v4
    };
    let mut group = c.benchmark_group("flow_hash");
    group.throughput(Throughput::Elements(1));
    group.bench_function("v4", |b| b.iter(|| h.hash_tuple(black_box(&v4))));
    group.bench_function("v6", |b| b.iter(|| h.hash_tuple(black_box(&v6))));
    group.finish();
}

/// One full sweep pass (`FlowTable::expire` over every slot, nothing expiring) of a table sized
/// for 1 M flows: empty (an idle site), at 1 % and full. A demux makes one pass a second.
fn bench_sweep(c: &mut Criterion) {
    let maglev = MaglevTable::build(&PAIRS, DEFAULT_TABLE_SIZE).unwrap();
    let mut group = c.benchmark_group("sweep_pass_1M_table");
    for (name, fill) in [("empty", 0), ("one_percent", LIVE_FLOWS / 100), ("full", LIVE_FLOWS)] {
        let mut table = FlowTable::new(LIVE_FLOWS as usize, IdleTimeouts::default());
        assert_eq!(pin_all(&mut table, &maglev, &flows(fill, proto::TCP), NOW), 0);
        let slots = table.slots();
        group.throughput(Throughput::Elements(slots as u64));
        group.bench_function(name, |b| b.iter(|| black_box(table.expire(NOW, slots))));
    }
    group.finish();
}

criterion_group!(benches, bench_flow_table, bench_steer, bench_sweep);
criterion_main!(benches);
