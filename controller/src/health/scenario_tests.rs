//! The three machines wired the way the supervisor wires them, in simulated time: a gateway
//! killed, restarted with backoff, and its pair back in membership only after recovery.

use braid_core::flow::PairId;

use super::detector::{Detector, DetectorConfig, GatewayFacts, HealthEvent};
use super::membership::MembershipMachine;
use super::restart::{RestartPolicy, RestartTracker};
use super::{DaemonKey, FailureReason, SITES};

#[test]
fn killed_gateway_is_restarted_and_its_pair_rejoins_after_recovery() {
    let pairs: [PairId; 2] = [1, 2];
    let victim = DaemonKey::gateway(1, 1);
    let mut det = Detector::new(DetectorConfig::default());
    let mut members = MembershipMachine::new(SITES, 50, 1);
    let mut restart = RestartTracker::new(RestartPolicy::default());
    for p in pairs {
        det.watch_pair(p, 0);
        members.add_pair(p).unwrap();
    }
    restart.on_started(0);

    let mut victim_running = true;
    let mut log: Vec<(u64, HealthEvent)> = Vec::new();
    let mut active_at = Vec::new();
    for t in (10..=5_000).step_by(10) {
        if t == 2_000 {
            // kill -9: the supervisor reaps the child at once.
            victim_running = false;
            det.observe_process_exit(victim, t);
            assert_eq!(restart.on_exit(t), 2_100);
        }
        if restart.due(t) {
            restart.on_started(t);
            det.observe_process_started(victim, t);
            victim_running = true;
        }
        if t.is_multiple_of(100) {
            for p in pairs {
                let up = p != 1 || victim_running;
                for site in SITES {
                    let key = DaemonKey::gateway(site, p);
                    if key != victim || victim_running {
                        let facts = GatewayFacts {
                            session_established: up,
                            handshake_age_ms: Some(10),
                        };
                        det.observe_heartbeat(key, t, facts);
                    }
                }
                det.observe_canary(p, t, up, 900);
            }
        }
        for event in det.tick(t) {
            match event {
                HealthEvent::PairUp { pair } => members.set_health(pair, true),
                HealthEvent::PairDown { pair, .. } => members.set_health(pair, false),
                _ => {}
            }
            log.push((t, event));
        }
        active_at.push((t, members.current().active.clone()));
    }

    let active = |t: u64| active_at.iter().find(|(at, _)| *at == t).unwrap().1.clone();
    assert_eq!(active(1_100), [1, 2]);
    assert!(log.contains(&(
        2_000,
        HealthEvent::PairDown {
            pair: 1,
            reason: FailureReason::ProcessExited,
            gateway_site: Some(1)
        }
    )));
    assert_eq!(active(2_000), [2], "out of membership in the same tick as the exit");
    assert_eq!(restart.restarts(), 1);
    // Restarted at 2100, healthy again from its first beat at 2100: up 1000 ms later.
    assert_eq!(active(3_090), [2]);
    assert_eq!(active(3_100), [1, 2]);
    let pair_events: Vec<_> = log
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                HealthEvent::PairUp { pair: 1 } | HealthEvent::PairDown { pair: 1, .. }
            )
        })
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(pair_events, [1_100, 2_000, 3_100]);
}
