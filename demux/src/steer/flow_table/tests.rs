use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};

use braid_core::flow::{proto, tcp_flags, FiveTuple, PairId};

use super::*;
use crate::steer::FlowHasher;

const T0: u64 = 1_000_000;

fn hasher() -> FlowHasher {
    FlowHasher::from_secret(&[0x42; 32])
}

fn tuple(n: u32, proto: u8) -> FiveTuple {
    FiveTuple {
        src: IpAddr::V4(Ipv4Addr::from(0xc612_0000 | (n >> 16))),
        dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        src_port: n as u16,
        dst_port: 443,
        proto,
    }
}

/// A flow as the table sees it: key and keyed hash.
fn flow(n: u32, proto: u8) -> (u64, FlowKey) {
    let key = FlowKey::new(&tuple(n, proto));
    (hasher().hash_key(&key), key)
}

fn all_live(_: PairId) -> bool {
    true
}

/// Steers one packet, choosing `pick` for new flows.
fn steer(t: &mut FlowTable, f: &(u64, FlowKey), flags: u8, now: u64, pick: PairId) -> Steered {
    t.lookup_or_insert(f.0, &f.1, flags, now, all_live, || Some(pick))
        .unwrap()
}

#[test]
fn new_flow_is_pinned_and_both_directions_hit_it() {
    let mut t = FlowTable::new(1000, IdleTimeouts::default());
    let forward = tuple(1, proto::TCP);
    let (hash, key) = flow(1, proto::TCP);
    assert_eq!(steer(&mut t, &(hash, key), tcp_flags::SYN, T0, 7).outcome, Outcome::New);
    assert_eq!(t.len(), 1);

    let reply = FlowKey::new(&forward.reversed());
    let reply_hash = hasher().hash_key(&reply);
    let chosen = Cell::new(0);
    let s = t
        .lookup_or_insert(reply_hash, &reply, tcp_flags::ACK, T0 + 1, all_live, || {
            chosen.set(chosen.get() + 1);
            Some(9)
        })
        .unwrap();
    assert_eq!(
        s,
        Steered {
            pair: 7,
            outcome: Outcome::Established
        }
    );
    assert_eq!(chosen.get(), 0, "an established flow never consults Maglev");
    assert_eq!(t.len(), 1);
}

#[test]
fn no_pair_to_choose_steers_nothing_and_pins_nothing() {
    let mut t = FlowTable::new(1000, IdleTimeouts::default());
    let (hash, key) = flow(1, proto::UDP);
    assert_eq!(t.lookup_or_insert(hash, &key, 0, T0, all_live, || None), None);
    assert!(t.is_empty());
}

#[test]
fn a_flow_on_a_dead_pair_moves_and_others_stay() {
    let mut t = FlowTable::new(1000, IdleTimeouts::default());
    let on_dead = flow(1, proto::TCP);
    let on_live = flow(2, proto::TCP);
    steer(&mut t, &on_dead, 0, T0, 1);
    steer(&mut t, &on_live, 0, T0, 2);
    let live = |p: PairId| p != 1;
    let moved = t.lookup_or_insert(on_dead.0, &on_dead.1, 0, T0 + 5, live, || Some(3));
    assert_eq!(
        moved,
        Some(Steered {
            pair: 3,
            outcome: Outcome::Moved
        })
    );
    let kept = t.lookup_or_insert(on_live.0, &on_live.1, 0, T0 + 5, live, || Some(3));
    assert_eq!(
        kept,
        Some(Steered {
            pair: 2,
            outcome: Outcome::Established
        })
    );
    assert_eq!(
        steer(&mut t, &on_dead, 0, T0 + 6, 9).pair,
        3,
        "re-pinned to the new pair"
    );
    // With no live pair at all the pin stays, waiting for membership to return.
    assert_eq!(
        t.lookup_or_insert(on_live.0, &on_live.1, 0, T0 + 7, |_| false, || None),
        None
    );
    assert_eq!(t.pinned(on_live.0, &on_live.1, T0 + 7), Some(2));
}

#[test]
fn idle_timeouts_follow_protocol_and_tcp_state() {
    let timeouts = IdleTimeouts {
        tcp_ms: 300,
        tcp_half_open_ms: 300,
        tcp_closing_ms: 10,
        udp_ms: 120,
        other_ms: 50,
    };
    let mut t = FlowTable::new(1000, timeouts);
    let cases = [(proto::TCP, 300), (proto::UDP, 120), (proto::ICMP, 50)];
    for (i, (p, timeout)) in cases.into_iter().enumerate() {
        let f = flow(i as u32, p);
        steer(&mut t, &f, 0, T0, 1);
        assert_eq!(t.pinned(f.0, &f.1, T0 + timeout - 1), Some(1), "proto {p}");
        assert_eq!(t.pinned(f.0, &f.1, T0 + timeout), None, "proto {p}");
        // An expired flow starts again as a new flow, with a fresh choice.
        assert_eq!(
            steer(&mut t, &f, 0, T0 + timeout, 2),
            Steered {
                pair: 2,
                outcome: Outcome::New
            }
        );
    }
    assert_eq!(t.len(), 3, "expired entries are reused in place");

    for closing in [tcp_flags::FIN | tcp_flags::ACK, tcp_flags::RST] {
        let f = flow(100 + u32::from(closing), proto::TCP);
        steer(&mut t, &f, tcp_flags::SYN, T0, 1);
        steer(&mut t, &f, closing, T0 + 1, 1);
        // Later ACKs keep the short timeout.
        steer(&mut t, &f, tcp_flags::ACK, T0 + 2, 1);
        assert_eq!(t.pinned(f.0, &f.1, T0 + 11), Some(1));
        assert_eq!(t.pinned(f.0, &f.1, T0 + 12), None);
    }

    let reopened = flow(200, proto::TCP);
    steer(&mut t, &reopened, tcp_flags::FIN, T0, 1);
    steer(&mut t, &reopened, tcp_flags::SYN, T0 + 1, 1);
    assert_eq!(
        t.pinned(reopened.0, &reopened.1, T0 + 300),
        Some(1),
        "a new SYN reopens"
    );
}

#[test]
fn expire_sweeps_incrementally_within_its_budget() {
    let timeouts = IdleTimeouts {
        udp_ms: 100,
        ..IdleTimeouts::default()
    };
    let mut t = FlowTable::new(100, timeouts);
    for n in 0..50 {
        steer(&mut t, &flow(n, proto::UDP), 0, T0, 1);
    }
    steer(&mut t, &flow(99, proto::TCP), 0, T0, 1);
    assert_eq!(t.expire(T0 + 99, usize::MAX), 0, "nothing has expired yet");
    let slots = t.tags.len();
    let mut freed = 0;
    let mut calls = 0;
    while freed < 50 {
        let step = t.expire(T0 + 100, 16);
        assert!(step <= 16);
        freed += step;
        calls += 1;
        assert!(calls <= slots / 16, "one pass over the table frees everything");
    }
    assert_eq!(t.len(), 1, "the TCP flow is still live");
    assert_eq!(t.expire(T0 + 100, usize::MAX), 0);
}

#[test]
fn next_occupied_finds_the_first_occupied_tag_across_groups() {
    assert_eq!(next_occupied(&[]), None);
    assert_eq!(next_occupied(&[0; 41]), None);
    for at in [0, 1, 15, 16, 17, 31, 32, 40] {
        let mut tags = [0u8; 41];
        tags[at] = 0x80;
        assert_eq!(next_occupied(&tags), Some(at), "occupied at {at}");
        tags[40] = 1;
        assert_eq!(next_occupied(&tags), Some(at), "the first, not the last");
    }
}

/// A pass over the table frees the same flows and takes the same census however its budget
/// is sliced (the sweep skips vacant tags a group at a time; slices start anywhere).
#[test]
fn expire_frees_and_counts_the_same_whatever_the_budget() {
    let timeouts = IdleTimeouts {
        udp_ms: 100,
        ..IdleTimeouts::default()
    };
    let pass = |budget: usize| {
        let mut t = FlowTable::new(300, timeouts);
        // UDP flows seen at T0 (expired by T0 + 150) and TCP flows (live), on pairs 1-3.
        for n in 0..120u32 {
            let (proto, pair) = if n % 3 == 0 {
                (proto::UDP, 1)
            } else {
                (proto::TCP, (n % 2 + 2) as PairId)
            };
            steer(&mut t, &flow(n, proto), tcp_flags::ACK, T0, pair);
        }
        let slots = t.tags.len();
        let mut freed = 0;
        let mut examined = 0;
        while examined < slots {
            let step = budget.min(slots - examined);
            freed += t.expire(T0 + 150, step);
            examined += step;
        }
        (freed, t.len(), t.pinned_per_pair()[..4].to_vec())
    };
    let whole = pass(usize::MAX);
    assert_eq!(whole, (40, 80, vec![0, 0, 40, 40]));
    for budget in [1, 7, 16, 17, 100] {
        assert_eq!(pass(budget), whole, "budget {budget}");
    }
}

#[test]
fn a_full_table_never_evicts_a_live_flow() {
    // One 16-slot bucket: both candidate buckets are the same one.
    let timeouts = IdleTimeouts {
        udp_ms: 100,
        ..IdleTimeouts::default()
    };
    let mut t = FlowTable::new(1, timeouts);
    assert_eq!(t.capacity(), 12);
    for n in 0..16 {
        assert_eq!(steer(&mut t, &flow(n, proto::UDP), 0, T0, 1).outcome, Outcome::New);
    }
    let extra = flow(16, proto::UDP);
    assert_eq!(
        steer(&mut t, &extra, 0, T0, 2),
        Steered {
            pair: 2,
            outcome: Outcome::Unpinned
        }
    );
    assert_eq!(
        steer(&mut t, &extra, 0, T0, 3).outcome,
        Outcome::Unpinned,
        "still not pinned"
    );
    for n in 0..16 {
        assert_eq!(steer(&mut t, &flow(n, proto::UDP), 0, T0 + 1, 9).pair, 1);
    }
    // Once flows expire their slots are reused without waiting for a sweep.
    assert_eq!(steer(&mut t, &extra, 0, T0 + 101, 2).outcome, Outcome::New);
    assert_eq!(t.len(), 16);
}

#[test]
fn flows_sharing_a_hash_are_kept_apart_by_their_keys() {
    let mut t = FlowTable::new(100, IdleTimeouts::default());
    let hash = 0x0123_4567_89ab_cdef;
    let a = (hash, flow(1, proto::TCP).1);
    let b = (hash, flow(2, proto::TCP).1);
    steer(&mut t, &a, 0, T0, 1);
    steer(&mut t, &b, 0, T0, 2);
    assert_eq!(steer(&mut t, &a, 0, T0 + 1, 9).pair, 1);
    assert_eq!(steer(&mut t, &b, 0, T0 + 1, 9).pair, 2);
    assert_eq!(t.len(), 2);
}

#[test]
fn learn_pins_absent_flows_and_adopts_a_live_pair_over_a_dead_one() {
    let mut t = FlowTable::new(100, IdleTimeouts::default());
    let f = flow(1, proto::TCP);
    assert_eq!(t.learn(f.0, &f.1, 0, T0, 4, all_live), Learned::Pinned);
    assert_eq!(
        steer(&mut t, &f, 0, T0 + 1, 9),
        Steered {
            pair: 4,
            outcome: Outcome::Established
        }
    );
    assert_eq!(t.learn(f.0, &f.1, 0, T0 + 2, 5, all_live), Learned::Refreshed);
    assert_eq!(t.pinned(f.0, &f.1, T0 + 2), Some(4), "a live pin is kept");
    let live = |p: PairId| p != 4;
    assert_eq!(t.learn(f.0, &f.1, 0, T0 + 3, 5, live), Learned::Repinned);
    assert_eq!(t.pinned(f.0, &f.1, T0 + 3), Some(5));

    let mut tiny = FlowTable::new(1, IdleTimeouts::default());
    for n in 0..16 {
        tiny.learn(flow(n, proto::TCP).0, &flow(n, proto::TCP).1, 0, T0, 1, all_live);
    }
    let late = flow(16, proto::TCP);
    assert_eq!(tiny.learn(late.0, &late.1, 0, T0, 1, all_live), Learned::TableFull);
}

#[test]
fn fills_to_capacity_within_128_bytes_per_flow() {
    for requested in [1000, 100_000] {
        let mut t = FlowTable::new(requested, IdleTimeouts::default());
        for target in [requested, t.capacity()] {
            let mut n = t.len() as u32;
            while t.len() < target {
                assert_eq!(steer(&mut t, &flow(n, proto::TCP), 0, T0, 1).outcome, Outcome::New);
                n += 1;
            }
            let per_flow = t.memory_bytes() / t.len();
            assert!(per_flow <= 128, "{per_flow} bytes per flow at {target} flows");
        }
    }
}

#[test]
fn entries_are_48_bytes() {
    assert_eq!(std::mem::size_of::<Entry>(), 48);
}

#[test]
fn tag_lanes_match_exactly() {
    let mut group = [0u8; 16];
    group[0] = 0x80;
    group[3] = 0x01;
    group[4] = 0x01;
    group[15] = 0xff;
    let g = u128::from_le_bytes(group);
    let lanes = |m: u128| (0..16).filter(|i| m >> (i * 8 + 7) & 1 == 1).collect::<Vec<_>>();
    assert_eq!(lanes(lanes_equal_to(g, 0x01)), vec![3, 4]);
    assert_eq!(lanes(lanes_equal_to(g, 0x80)), vec![0]);
    assert_eq!(lanes(lanes_equal_to(g, 0xff)), vec![15]);
    assert_eq!(lanes(lanes_equal_to(g, 0)).len(), 12);
    assert_eq!(lanes_equal_to(g, 0x7f), 0);
}

/// Short timeouts so the half-open and established lifetimes are told apart easily.
fn half_open_timeouts() -> IdleTimeouts {
    IdleTimeouts {
        tcp_ms: 350_000,
        tcp_half_open_ms: 5_000,
        ..IdleTimeouts::default()
    }
}

#[test]
fn a_syn_pins_briefly_until_the_handshake_completes() {
    let mut t = FlowTable::new(1000, half_open_timeouts());
    let f = flow(1, proto::TCP);
    steer(&mut t, &f, tcp_flags::SYN, T0, 1);
    assert_eq!(t.pinned(f.0, &f.1, T0 + 4_999), Some(1));
    assert_eq!(t.pinned(f.0, &f.1, T0 + 5_000), None, "a lone SYN lives 5 s");

    // SYN out, SYN-ACK learnt back from the pair, then the ACK: promoted.
    let g = flow(2, proto::TCP);
    steer(&mut t, &g, tcp_flags::SYN, T0, 1);
    assert_eq!(
        t.learn(g.0, &g.1, tcp_flags::SYN | tcp_flags::ACK, T0 + 10, 1, all_live),
        Learned::Refreshed
    );
    assert_eq!(t.pinned(g.0, &g.1, T0 + 5_010), None, "a SYN-ACK does not promote");
    let h = flow(3, proto::TCP);
    steer(&mut t, &h, tcp_flags::SYN, T0, 1);
    t.learn(h.0, &h.1, tcp_flags::SYN | tcp_flags::ACK, T0 + 10, 1, all_live);
    steer(&mut t, &h, tcp_flags::ACK, T0 + 20, 9);
    assert_eq!(
        t.pinned(h.0, &h.1, T0 + 350_019),
        Some(1),
        "promoted to the TCP idle time"
    );
    assert_eq!(t.pinned(h.0, &h.1, T0 + 350_020), None);

    // The other site's SYN arrives through a pair; our ACK... or theirs: either direction.
    let r = flow(4, proto::TCP);
    assert_eq!(t.learn(r.0, &r.1, tcp_flags::SYN, T0, 2, all_live), Learned::Pinned);
    assert_eq!(t.pinned(r.0, &r.1, T0 + 5_000), None);
    let r2 = flow(5, proto::TCP);
    t.learn(r2.0, &r2.1, tcp_flags::SYN, T0, 2, all_live);
    steer(&mut t, &r2, tcp_flags::SYN | tcp_flags::ACK, T0 + 1, 9);
    t.learn(r2.0, &r2.1, tcp_flags::ACK, T0 + 2, 2, all_live);
    assert_eq!(t.pinned(r2.0, &r2.1, T0 + 300_000), Some(2));

    // A flow picked up mid-stream is established at once; UDP is untouched.
    let m = flow(6, proto::TCP);
    steer(&mut t, &m, tcp_flags::ACK, T0, 1);
    assert_eq!(t.pinned(m.0, &m.1, T0 + 300_000), Some(1));

    let counts = t.take_half_open_counts();
    assert_eq!(
        counts,
        HalfOpenCounts {
            created: 5,
            promoted: 2,
            expired: 0,
            evicted: 0
        }
    );
    assert_eq!(t.take_half_open_counts(), HalfOpenCounts::default(), "taking resets");
    // The sweep frees the three expired half-open flows and counts them.
    t.expire(T0 + 6_000, usize::MAX);
    assert_eq!(t.take_half_open_counts().expired, 3);
}

#[test]
fn a_syn_reopening_a_closed_flow_is_half_open_again() {
    let mut t = FlowTable::new(1000, half_open_timeouts());
    let f = flow(1, proto::TCP);
    steer(&mut t, &f, tcp_flags::ACK, T0, 1);
    steer(&mut t, &f, tcp_flags::FIN | tcp_flags::ACK, T0 + 1, 1);
    steer(&mut t, &f, tcp_flags::SYN, T0 + 2, 1);
    assert_eq!(t.pinned(f.0, &f.1, T0 + 5_001), Some(1));
    assert_eq!(t.pinned(f.0, &f.1, T0 + 5_002), None);
    // A SYN on an established flow (a retransmission, a probe) leaves it established.
    let g = flow(2, proto::TCP);
    steer(&mut t, &g, tcp_flags::ACK, T0, 1);
    steer(&mut t, &g, tcp_flags::SYN, T0 + 1, 1);
    assert_eq!(t.pinned(g.0, &g.1, T0 + 300_000), Some(1));
    assert_eq!(t.take_half_open_counts().created, 1);
}

#[test]
fn a_syn_flood_never_evicts_established_flows_and_leaves_nothing_behind() {
    let mut t = FlowTable::new(1000, half_open_timeouts());
    let capacity = t.capacity() as u32;
    // Established flows fill half the table (each with its handshake completed).
    let established: Vec<_> = (0..capacity / 2).map(|n| flow(n, proto::TCP)).collect();
    for f in &established {
        steer(&mut t, f, tcp_flags::SYN, T0, 1);
        steer(&mut t, f, tcp_flags::ACK, T0 + 1, 9);
    }
    assert_eq!(t.take_half_open_counts().promoted, established.len() as u64);
    // A flood of SYNs from 10× the capacity in distinct sources, over one second.
    let flood = 10 * capacity;
    let mut unpinned = 0;
    for n in 0..flood {
        let now = T0 + 2 + u64::from(n) * 1_000 / u64::from(flood);
        let s = steer(&mut t, &flow(1_000_000 + n, proto::TCP), tcp_flags::SYN, now, 2);
        unpinned += u32::from(s.outcome == Outcome::Unpinned);
    }
    let now = T0 + 1_002;
    for f in &established {
        assert_eq!(t.pinned(f.0, &f.1, now), Some(1), "an established flow was evicted");
    }
    let counts = t.take_half_open_counts();
    assert_eq!(counts.created, u64::from(flood - unpinned));
    assert!(
        counts.evicted > u64::from(flood) / 2,
        "the flood churns through itself: {counts:?}"
    );
    assert!(
        unpinned < flood / 100,
        "half-open flows give way to each other: {unpinned} unpinned"
    );
    // A new established flow still finds room during the flood (it evicts a half-open one).
    let late = flow(5_000_000, proto::TCP);
    assert_eq!(steer(&mut t, &late, tcp_flags::ACK, now, 3).outcome, Outcome::New);

    // After the half-open timeout every flood flow is gone, and a sweep frees their slots.
    let after = now + 5_000;
    assert!((0..flood).all(|n| {
        let f = flow(1_000_000 + n, proto::TCP);
        t.pinned(f.0, &f.1, after).is_none()
    }));
    t.expire(after, usize::MAX);
    assert_eq!(t.len(), established.len() + 1);
    // Every half-open flow created was either evicted (one by `late`) or has now expired.
    let swept = t.take_half_open_counts();
    assert_eq!(swept.evicted, 1);
    assert_eq!(swept.expired, counts.created - counts.evicted - 1);
}

#[test]
fn a_full_table_of_established_flows_leaves_a_syn_unpinned() {
    let mut t = FlowTable::new(1, half_open_timeouts());
    for n in 0..16 {
        steer(&mut t, &flow(n, proto::TCP), tcp_flags::ACK, T0, 1);
    }
    let syn = flow(16, proto::TCP);
    assert_eq!(steer(&mut t, &syn, tcp_flags::SYN, T0, 2).outcome, Outcome::Unpinned);
    assert_eq!(t.take_half_open_counts(), HalfOpenCounts::default());
    // A half-open flow gives way to a new flow, the oldest first.
    let mut t = FlowTable::new(1, half_open_timeouts());
    for n in 0..15 {
        steer(&mut t, &flow(n, proto::TCP), tcp_flags::ACK, T0, 1);
    }
    let half = flow(15, proto::TCP);
    steer(&mut t, &half, tcp_flags::SYN, T0, 1);
    let udp = flow(16, proto::UDP);
    assert_eq!(steer(&mut t, &udp, 0, T0 + 1, 2).outcome, Outcome::New);
    assert_eq!(t.pinned(half.0, &half.1, T0 + 1), None);
    assert_eq!(t.take_half_open_counts().evicted, 1);
}
