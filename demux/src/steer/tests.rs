use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use braid_core::flow::{proto, tcp_flags, Classified, FiveTuple, FragmentId, PairId};

use super::*;

const T0: u64 = 5_000;

fn steering(pairs: &[PairId]) -> Steering {
    let mut s = Steering::new(FlowHasher::from_secret(&[9; 32]), 10_000, IdleTimeouts::default());
    s.set_membership(Arc::new(MaglevTable::build(pairs, DEFAULT_TABLE_SIZE).unwrap()));
    s
}

fn tuple(n: u32) -> FiveTuple {
    FiveTuple {
        src: IpAddr::V4(Ipv4Addr::new(198, 18, (n >> 8) as u8, n as u8)),
        dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        src_port: 30_000 + (n % 1000) as u16,
        dst_port: 5201,
        proto: proto::TCP,
    }
}

fn whole(t: FiveTuple) -> Classified {
    Classified::Whole {
        tuple: t,
        tcp_flags: tcp_flags::ACK,
    }
}

fn frag_of(t: &FiveTuple, id: u32) -> FragmentId {
    FragmentId {
        src: t.src,
        dst: t.dst,
        proto: t.proto,
        id,
    }
}

#[test]
fn no_members_means_no_live_pair() {
    let mut s = Steering::new(FlowHasher::from_secret(&[9; 32]), 100, IdleTimeouts::default());
    assert_eq!(s.steer(&whole(tuple(1)), T0), Err(SteerDrop::NoLivePair));
    assert_eq!(s.live_flows(), 0);
}

#[test]
fn both_directions_take_one_pair() {
    let mut s = steering(&[1, 2, 3, 4]);
    for n in 0..200 {
        let out = s.steer(&whole(tuple(n)), T0).unwrap();
        assert_eq!(out.outcome, Outcome::New);
        let back = s.steer(&whole(tuple(n).reversed()), T0 + 1).unwrap();
        assert_eq!(
            back,
            Steered {
                pair: out.pair,
                outcome: Outcome::Established
            }
        );
    }
    assert_eq!(s.live_flows(), 200);
}

#[test]
fn failover_moves_only_the_dead_pairs_flows() {
    let mut s = steering(&[1, 2, 3, 4]);
    let before: Vec<PairId> = (0..2000).map(|n| s.steer(&whole(tuple(n)), T0).unwrap().pair).collect();
    let on_dead = before.iter().filter(|&&p| p == 3).count();
    assert!(on_dead > 300, "Maglev spreads flows: {on_dead} of 2000 on pair 3");

    s.set_membership(Arc::new(MaglevTable::build(&[1, 2, 4], DEFAULT_TABLE_SIZE).unwrap()));
    let mut moved = 0;
    for (n, &old) in before.iter().enumerate() {
        let now = s.steer(&whole(tuple(n as u32)), T0 + 10).unwrap();
        if old == 3 {
            assert_eq!(now.outcome, Outcome::Moved);
            assert_ne!(now.pair, 3);
            moved += 1;
        } else {
            assert_eq!(
                now,
                Steered {
                    pair: old,
                    outcome: Outcome::Established
                }
            );
        }
    }
    assert_eq!(moved, on_dead);
}

#[test]
fn adding_a_pair_leaves_established_flows_and_takes_new_ones() {
    let mut s = steering(&[1, 2]);
    let before: Vec<PairId> = (0..500).map(|n| s.steer(&whole(tuple(n)), T0).unwrap().pair).collect();
    s.set_membership(Arc::new(MaglevTable::build(&[1, 2, 3], DEFAULT_TABLE_SIZE).unwrap()));
    for (n, &old) in before.iter().enumerate() {
        assert_eq!(s.steer(&whole(tuple(n as u32)), T0 + 1).unwrap().pair, old);
    }
    let mut per_pair: HashMap<PairId, usize> = HashMap::new();
    for n in 500..2000 {
        *per_pair
            .entry(s.steer(&whole(tuple(n)), T0 + 1).unwrap().pair)
            .or_default() += 1;
    }
    assert!(per_pair[&3] > 300, "new flows reach the new pair: {per_pair:?}");
}

/// The pair Maglev gives a datagram's addresses alone: where fragments go on a cache miss.
fn pair_of_addresses(s: &Steering, t: &FiveTuple) -> PairId {
    let key = FlowKey::new(&FiveTuple {
        src_port: 0,
        dst_port: 0,
        ..*t
    });
    s.membership().lookup(s.hasher.hash_key(&key)).unwrap()
}

/// A tuple (from `n`) whose flow's Maglev pair differs from its addresses' pair.
fn tuple_off_its_addresses_pair(s: &Steering, from: u32) -> FiveTuple {
    (from..)
        .map(tuple)
        .find(|t| {
            let key = FlowKey::new(t);
            s.membership().lookup(s.hasher.hash_key(&key)) != Some(pair_of_addresses(s, t))
        })
        .unwrap()
}

#[test]
fn later_fragments_follow_their_first_fragment() {
    let mut s = steering(&[1, 2, 3, 4]);
    let t = tuple_off_its_addresses_pair(&s, 7);
    let flow_pair = s.steer(&whole(t), T0).unwrap().pair;
    let by_addresses = pair_of_addresses(&s, &t);
    assert_ne!(flow_pair, by_addresses);
    let head = Classified::FirstFragment {
        tuple: t,
        frag: frag_of(&t, 77),
        tcp_flags: 0,
    };
    assert_eq!(
        s.steer(&head, T0).unwrap(),
        Steered {
            pair: flow_pair,
            outcome: Outcome::Established
        }
    );
    let tail = Classified::LaterFragment { frag: frag_of(&t, 77) };
    assert_eq!(
        s.steer(&tail, T0 + 1).unwrap(),
        Steered {
            pair: flow_pair,
            outcome: Outcome::FragmentFollowed
        }
    );
    // Without its first fragment a later fragment goes by its addresses, always to one pair.
    let orphan = Classified::LaterFragment { frag: frag_of(&t, 78) };
    let expected = Steered {
        pair: by_addresses,
        outcome: Outcome::FragmentByAddresses,
    };
    assert_eq!(s.steer(&orphan, T0 + 1), Ok(expected));
    assert_eq!(s.steer(&orphan, T0 + 2), Ok(expected));
    assert_eq!(
        s.steer(&tail, T0 + DEFAULT_FRAGMENT_TTL_MS),
        Ok(expected),
        "forgotten after the TTL"
    );
    let counts = s.take_counts();
    assert_eq!(&counts[4..], &[1, 3, 0], "fragment cache hits, misses, evictions");

    // Its pair gone, the tail goes by its addresses among the pairs left.
    s.steer(&head, T0 + 10_000).unwrap();
    let others: Vec<PairId> = [1, 2, 3, 4].into_iter().filter(|&p| p != flow_pair).collect();
    s.set_membership(Arc::new(MaglevTable::build(&others, DEFAULT_TABLE_SIZE).unwrap()));
    let moved = s.steer(&tail, T0 + 10_001).unwrap();
    assert_eq!(moved.outcome, Outcome::FragmentByAddresses);
    assert_ne!(moved.pair, flow_pair);
    s.set_membership(Arc::new(MaglevTable::empty()));
    assert_eq!(s.steer(&tail, T0 + 10_002), Err(SteerDrop::NoLivePair));
}

#[test]
fn a_flood_of_first_fragments_evicts_no_flow_and_strands_no_fragment() {
    let mut s = steering(&[1, 2, 3, 4]);
    let live: Vec<FiveTuple> = (0..1_000).map(tuple).collect();
    let pinned: Vec<PairId> = live.iter().map(|t| s.steer(&whole(*t), T0).unwrap().pair).collect();
    let before = s.live_flows();
    // A legitimate datagram's first fragment, then a flood of first fragments of UDP flows
    // (10× the fragment cache, each with its own addresses), then its later fragment.
    let t = tuple_off_its_addresses_pair(&s, 5_000);
    let head = Classified::FirstFragment {
        tuple: t,
        frag: frag_of(&t, 1),
        tcp_flags: 0,
    };
    let head_pair = s.steer(&head, T0).unwrap().pair;
    let flood = 10 * DEFAULT_FRAGMENT_CAPACITY as u32;
    for n in 0..flood {
        let f = FiveTuple {
            src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)),
            proto: proto::UDP,
            ..tuple(n)
        };
        s.steer(
            &Classified::FirstFragment {
                tuple: f,
                frag: frag_of(&f, n),
                tcp_flags: 0,
            },
            T0 + 1,
        )
        .unwrap();
    }
    let counts = s.take_counts();
    assert!(
        counts[6] > u64::from(flood) / 2,
        "the flood overwrites itself: {counts:?}"
    );
    // Every live flow is still pinned where it was.
    for (t, pair) in live.iter().zip(&pinned) {
        assert_eq!(
            s.steer(&whole(*t), T0 + 2).unwrap(),
            Steered {
                pair: *pair,
                outcome: Outcome::Established
            }
        );
    }
    assert!(s.live_flows() >= before);
    // The legitimate tail is still delivered: with its head's pair if the mapping survived,
    // otherwise by its addresses; never dropped.
    let tail = s
        .steer(&Classified::LaterFragment { frag: frag_of(&t, 1) }, T0 + 2)
        .unwrap();
    match tail.outcome {
        Outcome::FragmentFollowed => assert_eq!(tail.pair, head_pair),
        Outcome::FragmentByAddresses => assert_eq!(tail.pair, pair_of_addresses(&s, &t)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn learned_flows_reply_over_the_pair_they_came_from() {
    let mut s = steering(&[1, 2, 3, 4]);
    let inbound = tuple(42).reversed();
    // Pick a pair Maglev would not choose, to prove the pin wins.
    let maglev_choice = {
        let mut probe = steering(&[1, 2, 3, 4]);
        probe.steer(&whole(tuple(42)), T0).unwrap().pair
    };
    let from = if maglev_choice == 1 { 2 } else { 1 };
    assert_eq!(s.learn(&whole(inbound), from, T0), Some(Learned::Pinned));
    assert_eq!(
        s.steer(&whole(tuple(42)), T0 + 1).unwrap(),
        Steered {
            pair: from,
            outcome: Outcome::Established
        }
    );
    let tail = Classified::LaterFragment {
        frag: frag_of(&inbound, 1),
    };
    assert_eq!(s.learn(&tail, from, T0), None);
}

#[test]
fn expiry_frees_idle_flows() {
    let mut s = steering(&[1]);
    let udp = FiveTuple {
        proto: proto::UDP,
        ..tuple(1)
    };
    s.steer(
        &Classified::Whole {
            tuple: udp,
            tcp_flags: 0,
        },
        T0,
    )
    .unwrap();
    s.steer(&whole(tuple(2)), T0).unwrap();
    let udp_ms = s.flows().timeouts().udp_ms;
    assert_eq!(s.expire(T0 + udp_ms, usize::MAX), 1);
    assert_eq!(s.live_flows(), 1);
}

#[test]
fn counter_names_are_distinct_and_indexed() {
    for (i, o) in Outcome::ALL.into_iter().enumerate() {
        assert_eq!(o.index(), i);
        assert_eq!(o.name(), Outcome::NAMES[i]);
    }
    let mut names: Vec<&str> = Outcome::NAMES.into_iter().chain(SteerDrop::NAMES).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Outcome::NAMES.len() + SteerDrop::NAMES.len());
    assert_eq!(SteerDrop::NoLivePair.name(), "drop_no_live_pair");
    let mut steer = STEER_COUNTERS.to_vec();
    steer.sort_unstable();
    steer.dedup();
    assert_eq!(steer.len(), STEER_COUNTERS.len());
}

#[test]
fn batches_decide_exactly_like_single_packets() {
    let mut single = steering(&[1, 2, 3]);
    let mut batched = steering(&[1, 2, 3]);
    let t = tuple(3);
    let mut packets: Vec<Classified> = (0..40).map(|n| whole(tuple(n % 25))).collect();
    packets.push(Classified::FirstFragment {
        tuple: t,
        frag: frag_of(&t, 5),
        tcp_flags: 0,
    });
    packets.push(Classified::LaterFragment { frag: frag_of(&t, 5) });
    packets.push(Classified::LaterFragment { frag: frag_of(&t, 6) });
    let expected: Vec<_> = packets.iter().map(|p| single.steer(p, T0)).collect();
    let mut got = vec![None; packets.len()];
    batched.steer_batch(&packets, T0, |i, r| got[i] = Some(r));
    let got: Vec<_> = got.into_iter().map(Option::unwrap).collect();
    assert_eq!(got, expected);
    assert_eq!(got[30].unwrap().outcome, Outcome::Established, "repeats hit their pins");
    assert_eq!(batched.live_flows(), 25);
}

#[test]
fn draining_pairs_keep_their_flows_but_take_no_new_ones() {
    let mut s = steering(&[1, 2, 3]);
    let mut on_two = Vec::new();
    for n in 0..300 {
        if s.steer(&whole(tuple(n)), T0).unwrap().pair == 2 {
            on_two.push(n);
        }
    }
    assert!(!on_two.is_empty());
    let table = MaglevTable::build(&[1, 3], DEFAULT_TABLE_SIZE)
        .unwrap()
        .with_draining(&[2]);
    s.set_membership(Arc::new(table));
    for &n in &on_two {
        let out = s.steer(&whole(tuple(n)), T0 + 10).unwrap();
        assert_eq!(
            (out.pair, out.outcome),
            (2, Outcome::Established),
            "flow {n} stays on the draining pair"
        );
    }
    for n in 1_000..1_300 {
        assert_ne!(
            s.steer(&whole(tuple(n)), T0 + 10).unwrap().pair,
            2,
            "no new flow on a draining pair"
        );
    }
    // Once removed, its flows move.
    s.set_membership(Arc::new(MaglevTable::build(&[1, 3], DEFAULT_TABLE_SIZE).unwrap()));
    let out = s.steer(&whole(tuple(on_two[0])), T0 + 20).unwrap();
    assert_eq!(out.outcome, Outcome::Moved);
    assert_ne!(out.pair, 2);
}

#[test]
fn the_sweep_counts_live_flows_per_pair() {
    let mut s = steering(&[1, 2, 3]);
    let mut expected = HashMap::new();
    for n in 0..500 {
        let pair = s.steer(&whole(tuple(n)), T0).unwrap().pair;
        *expected.entry(pair).or_insert(0u32) += 1;
    }
    let slots = s.flows().slots();
    assert!(
        s.flows().pinned_per_pair().iter().all(|&c| c == 0),
        "nothing published before a full pass"
    );
    s.expire(T0 + 1, slots);
    for pair in [1u16, 2, 3] {
        assert_eq!(
            s.flows().pinned_per_pair()[usize::from(pair)],
            expected[&pair],
            "pair {pair}"
        );
    }
    // After the UDP/TCP idle timeout every flow is gone from the next census.
    s.expire(T0 + 400_000, slots);
    assert!(s.flows().pinned_per_pair().iter().all(|&c| c == 0));
}

#[test]
fn the_paced_sweep_completes_a_pass_per_period_at_any_call_rate() {
    let mut s = steering(&[1, 2]);
    for n in 0..300 {
        s.steer(&whole(tuple(n)), T0).unwrap();
    }
    let expired_at = T0 + 400_000;
    // Called every millisecond, as a busy data thread would: one pass frees every flow.
    s.sweep(expired_at);
    let mut freed = 0;
    for t in 0..=SWEEP_PASS_MS {
        freed += s.sweep(expired_at + t);
    }
    assert_eq!(s.live_flows(), 0, "freed {freed}");
    assert!(s.flows().pinned_per_pair().iter().all(|&c| c == 0));

    // Called once per idle tick: flows pinned mid-pass are in the census within two periods
    // (the pass that published it may have passed their slots before they were pinned).
    let later = expired_at + SWEEP_PASS_MS;
    for n in 0..50 {
        s.steer(&whole(tuple(n)), later).unwrap();
    }
    for tick in 1..=20 {
        s.sweep(later + tick * SWEEP_PASS_MS / 10);
    }
    assert_eq!(s.flows().pinned_per_pair().iter().sum::<u32>(), 50);
}

#[test]
fn the_paced_sweep_does_nothing_twice_in_the_same_instant() {
    let mut s = steering(&[1]);
    s.steer(&whole(tuple(1)), T0).unwrap();
    assert_eq!(s.sweep(T0 + 400_000), 1, "a long pause makes a whole pass due");
    s.steer(&whole(tuple(2)), T0).unwrap();
    assert_eq!(s.sweep(T0 + 400_000), 0, "no time passed, nothing due");
}
