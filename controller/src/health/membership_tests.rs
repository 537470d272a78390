//! Membership tests: epochs, delivery, admin operations and a scripted re-cluster.

use super::*;

const DEMUXES: [SiteIndex; 2] = [0, 1];

/// A machine with pairs `ids`, all healthy and active, converged at the resulting epoch.
fn machine(ids: impl IntoIterator<Item = PairId>) -> MembershipMachine {
    let mut m = MembershipMachine::new(DEMUXES, 50, 1);
    for id in ids {
        m.add_pair(id).unwrap();
        m.set_health(id, true);
    }
    ack_all(&mut m);
    m
}

fn ack_all(m: &mut MembershipMachine) {
    let epoch = m.current().epoch;
    for d in DEMUXES {
        assert!(m.on_ack(d, epoch));
    }
    assert!(m.converged());
}

fn sets(m: &MembershipMachine) -> (Vec<PairId>, Vec<PairId>) {
    (m.current().active.clone(), m.current().serving.clone())
}

#[test]
fn every_change_bumps_the_epoch_and_reaches_every_demux() {
    let mut m = MembershipMachine::new(DEMUXES, 50, 7);
    let mut now = 0;
    let mut last_epoch = 0;
    let mut send_all = |m: &mut MembershipMachine, now: u64| {
        let sent = m.pending(now);
        assert_eq!(sent.iter().map(|(d, _)| *d).collect::<Vec<_>>(), DEMUXES);
        assert!(sent.iter().all(|(_, ms)| ms == m.current()));
        let epoch = m.current().epoch;
        assert!(epoch > last_epoch, "epoch {epoch} after {last_epoch}");
        last_epoch = epoch;
    };
    send_all(&mut m, now);
    m.add_pair(1).unwrap();
    m.add_pair(2).unwrap();
    let before = m.current().epoch;
    assert_eq!(before, 9, "each added pair is a new epoch: the demuxes must probe it");
    assert!(m.current().active.is_empty(), "but unhealthy pairs take no flows");
    send_all(&mut m, now);
    for op in 0..6 {
        now += 10;
        match op {
            0 => m.set_health(1, true),
            1 => m.set_health(2, true),
            2 => m.drain(1, now, 1_000).unwrap(),
            3 => m.set_health(1, false),
            4 => {
                m.reactivate(1).unwrap();
                m.set_health(1, true);
            }
            _ => m.remove(2).unwrap(),
        }
        send_all(&mut m, now);
    }
    assert_eq!(m.current().epoch, 15);
}

#[test]
fn unacked_demuxes_get_the_latest_every_resend_interval() {
    let mut m = machine([1, 2]);
    m.set_health(1, false);
    let epoch = m.current().epoch;
    assert_eq!(m.pending(1_000).len(), 2);
    assert!(m.pending(1_049).is_empty());
    assert_eq!(m.pending(1_050).len(), 2);
    assert!(m.on_ack(0, epoch));
    let resent = m.pending(1_100);
    assert_eq!(resent, [(1, m.current().clone())]);
    assert!(!m.converged());
    assert!(m.on_ack(1, epoch));
    assert!(m.converged());
    assert!(m.pending(2_000).is_empty());
}

#[test]
fn acks_for_older_or_future_epochs_do_not_count() {
    let mut m = machine([1, 2]);
    let old = m.current().epoch;
    m.set_health(2, false);
    assert!(!m.on_ack(0, old));
    assert!(!m.on_ack(1, old + 5));
    assert!(!m.on_ack(9, old + 1), "unknown demux");
    assert!(!m.converged());
    assert_eq!(m.pending(0).len(), 2);
}

#[test]
fn a_new_epoch_is_due_at_once_even_inside_the_resend_interval() {
    let mut m = machine([1, 2]);
    m.set_health(2, false);
    assert_eq!(m.pending(100).len(), 2);
    m.set_health(2, true);
    let sent = m.pending(101);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].1.active, [1, 2]);
}

#[test]
fn restarted_demux_is_sent_the_latest_again() {
    let mut m = machine([1]);
    m.on_demux_restart(1);
    assert!(!m.converged());
    assert_eq!(m.pending(0), [(1, m.current().clone())]);
}

#[test]
fn added_pair_joins_only_once_healthy() {
    let mut m = machine([1]);
    let before = m.current().epoch;
    m.add_pair(2).unwrap();
    assert_eq!(sets(&m), (vec![1], vec![1]));
    // A new epoch asks the demuxes to probe the new pair, which takes no flows yet.
    assert_eq!(m.current().probing, vec![1, 2]);
    assert_eq!(m.current().epoch, before + 1);
    assert!(!m.converged());
    assert_eq!(m.pending(0).len(), 2, "both demuxes are told to probe it");
    m.set_health(2, true);
    assert_eq!(sets(&m), (vec![1, 2], vec![1, 2]));
    assert_eq!(m.add_pair(2), Err(AdminError::AlreadyMember(2)));
}

#[test]
fn drain_leaves_active_at_once_and_serving_when_idle_everywhere() {
    let mut m = machine([1, 2]);
    m.observe_pinned_flows(0, 2, 0, 900);
    m.observe_pinned_flows(1, 2, 0, 900);
    m.drain(2, 1_000, 10_000).unwrap();
    assert_eq!(sets(&m), (vec![1], vec![1, 2]));
    assert!(m.tick(1_000).is_empty(), "reports from before the drain do not count");
    // Within the census lag a zero may be a census from before the drain: not counted.
    m.observe_pinned_flows(0, 2, 0, 1_000 + CENSUS_LAG_MS - 1);
    m.observe_pinned_flows(1, 2, 0, 1_000 + CENSUS_LAG_MS - 1);
    assert!(
        m.tick(1_000 + CENSUS_LAG_MS - 1).is_empty(),
        "a census that may predate the drain"
    );
    m.observe_pinned_flows(0, 2, 0, 2_500);
    m.observe_pinned_flows(1, 2, 12, 2_500);
    assert!(m.tick(2_500).is_empty());
    m.observe_pinned_flows(1, 2, 0, 3_000);
    assert_eq!(
        m.tick(3_000),
        [DrainFinished {
            pair: 2,
            end: DrainEnd::Idle
        }]
    );
    assert_eq!(sets(&m), (vec![1], vec![1]));
    assert_eq!(m.admin_state(2), Some(AdminState::Removed));
}

#[test]
fn drain_ends_at_the_deadline_with_flows_still_pinned() {
    let mut m = machine([1, 2]);
    m.drain(2, 1_000, 5_000).unwrap();
    assert_eq!(
        m.admin_state(2),
        Some(AdminState::Draining {
            since_ms: 1_000,
            deadline_ms: 6_000
        })
    );
    m.observe_pinned_flows(0, 2, 3, 3_000);
    assert!(m.tick(5_999).is_empty());
    assert_eq!(
        m.tick(6_000),
        [DrainFinished {
            pair: 2,
            end: DrainEnd::Deadline
        }]
    );
    assert_eq!(sets(&m), (vec![1], vec![1]));
    assert!(m.tick(7_000).is_empty());
}

#[test]
fn remove_is_immediate_and_reactivate_brings_back() {
    let mut m = machine([1, 2, 3]);
    m.remove(3).unwrap();
    assert_eq!(sets(&m), (vec![1, 2], vec![1, 2]));
    m.reactivate(3).unwrap();
    assert_eq!(sets(&m), (vec![1, 2, 3], vec![1, 2, 3]));
    assert_eq!(m.reactivate(3), Err(AdminError::AlreadyActive(3)));
    assert_eq!(m.drain(9, 0, 1), Err(AdminError::UnknownPair(9)));
    m.drain(3, 0, 1).unwrap();
    assert_eq!(m.drain(3, 0, 1), Err(AdminError::NotActive(3)));
}

#[test]
fn when_every_pair_looks_down_the_last_ones_keep_forwarding() {
    let mut m = machine([1, 2, 3]);
    m.set_health(3, false);
    m.set_health(2, false);
    let epoch = m.current().epoch;
    m.set_health(1, false);
    assert_eq!(sets(&m), (vec![1], vec![1]), "fail-static: the last healthy pair stays");
    assert_eq!(m.current().epoch, epoch, "nothing changed, nothing to push");
    m.set_health(3, true);
    assert_eq!(sets(&m), (vec![3], vec![3]), "health rules again once one pair is up");
    // A drained or removed pair is not kept by fail-static.
    m.drain(3, 0, 60_000).unwrap();
    assert_eq!(sets(&m), (vec![], vec![3]));
    m.set_health(3, false);
    assert_eq!(sets(&m), (vec![], vec![3]), "the draining pair keeps its pinned flows");
    m.remove(3).unwrap();
    assert_eq!(sets(&m), (vec![], vec![]));
}

#[test]
fn before_any_pair_is_healthy_the_sets_stay_empty() {
    let mut fresh = MembershipMachine::new(DEMUXES, 50, 1);
    fresh.add_pair(7).unwrap();
    assert_eq!(
        sets(&fresh),
        (vec![], vec![]),
        "a pair that was never healthy takes nothing"
    );
    fresh.set_health(7, false);
    assert_eq!(sets(&fresh), (vec![], vec![]));
    fresh.set_health(7, true);
    assert_eq!(sets(&fresh), (vec![7], vec![7]));
}

#[test]
fn dead_pair_leaves_both_sets_and_recovers_into_active() {
    let mut m = machine([1, 2, 3]);
    m.set_health(2, false);
    assert_eq!(sets(&m), (vec![1, 3], vec![1, 3]));
    m.set_health(2, true);
    assert_eq!(sets(&m), (vec![1, 2, 3], vec![1, 2, 3]));
    m.drain(3, 0, 60_000).unwrap();
    m.set_health(3, false);
    assert_eq!(
        sets(&m),
        (vec![1, 2], vec![1, 2]),
        "a dead draining pair serves nothing"
    );
}

#[test]
fn scale_four_to_six_to_three() {
    let mut m = machine(1..=4);
    let mut seen = vec![(m.current().epoch, sets(&m))];
    let mut record = |m: &mut MembershipMachine| {
        let sent = m.pending(0);
        assert_eq!(sent.len(), 2, "every change goes to both demuxes");
        ack_all(m);
        seen.push((m.current().epoch, sets(m)));
    };
    // 4 → 6: the new pairs join as they become healthy.
    m.add_pair(5).unwrap();
    m.add_pair(6).unwrap();
    m.set_health(6, true);
    record(&mut m);
    m.set_health(5, true);
    record(&mut m);
    // 6 → 3: drain 4..=6; 5 and 6 go idle, 4 keeps a long flow until the deadline.
    for p in 4..=6 {
        m.drain(p, 10_000, 30_000).unwrap();
    }
    record(&mut m);
    for d in DEMUXES {
        m.observe_pinned_flows(d, 4, 1, 12_000);
        m.observe_pinned_flows(d, 5, 0, 12_000);
        m.observe_pinned_flows(d, 6, 0, 12_000);
    }
    let done = m.tick(12_000);
    assert_eq!(done.iter().map(|f| f.pair).collect::<Vec<_>>(), [5, 6]);
    record(&mut m);
    assert_eq!(
        m.tick(40_000),
        [DrainFinished {
            pair: 4,
            end: DrainEnd::Deadline
        }]
    );
    record(&mut m);
    let v = |s: &[PairId]| s.to_vec();
    let expected = [
        (v(&[1, 2, 3, 4]), v(&[1, 2, 3, 4])),
        (v(&[1, 2, 3, 4, 6]), v(&[1, 2, 3, 4, 6])),
        (v(&[1, 2, 3, 4, 5, 6]), v(&[1, 2, 3, 4, 5, 6])),
        (v(&[1, 2, 3]), v(&[1, 2, 3, 4, 5, 6])),
        (v(&[1, 2, 3]), v(&[1, 2, 3, 4])),
        (v(&[1, 2, 3]), v(&[1, 2, 3])),
    ];
    assert_eq!(seen.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(), expected);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "epochs strictly increase");
}

/// A controller that starts behind the demuxes (its persisted epoch lost, or older than what
/// a previous controller pushed) catches up on their first heartbeat: its next push carries a
/// higher epoch than any applied, so it is applied, and failover keeps working.
#[test]
fn a_controller_behind_the_demuxes_moves_past_their_epoch() {
    let mut m = MembershipMachine::new(DEMUXES, 50, 1);
    m.add_pair(1).unwrap();
    m.add_pair(2).unwrap();
    m.set_health(1, true);
    m.set_health(2, true);
    let behind = m.current().epoch;
    assert!(
        !m.observe_applied(0, behind - 1),
        "an older applied epoch changes nothing"
    );
    assert!(!m.observe_applied(7, 1_000), "an unknown demux changes nothing");
    assert!(m.observe_applied(1, 1_000));
    assert_eq!(m.current().epoch, 1_001);
    assert_eq!(m.current().active, [1, 2], "the sets stay");
    let sent = m.pending(0);
    assert_eq!(sent.len(), 2, "due to every demux at once");
    assert!(sent.iter().all(|(_, ms)| ms.epoch == 1_001));
    ack_all(&mut m);
    // A later failure moves on from there.
    m.set_health(2, false);
    assert_eq!((m.current().epoch, m.current().active.clone()), (1_002, vec![1]));
    // An absurd epoch (a stolen demux key, a bug) cannot drive the machine to the end of
    // its range.
    assert!(!m.observe_applied(0, u64::MAX));
    assert!(!m.observe_applied(0, MAX_EPOCH));
    assert_eq!(m.current().epoch, 1_002);
}
