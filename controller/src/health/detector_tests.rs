//! Detector tests in simulated time: 10 ms ticks, heartbeats and canaries every 100 ms.

use super::*;

const PAIR: PairId = 1;

fn gw(site: SiteIndex) -> DaemonKey {
    DaemonKey::gateway(site, PAIR)
}

fn up_facts() -> GatewayFacts {
    GatewayFacts {
        session_established: true,
        handshake_age_ms: Some(5_000),
    }
}

/// One watched pair driven through simulated time; every event is kept with its time.
struct Sim {
    det: Detector,
    now: u64,
    events: Vec<(u64, HealthEvent)>,
}

impl Sim {
    fn new() -> Self {
        Sim::with(DetectorConfig::default())
    }

    fn with(config: DetectorConfig) -> Self {
        let mut det = Detector::new(config);
        det.watch_pair(PAIR, 0);
        Sim {
            det,
            now: 0,
            events: Vec::new(),
        }
    }

    /// Advances to `until` in 10 ms ticks; at every 100 ms both gateways beat and the canary
    /// runs, healthy or not as `healthy(t)` says.
    fn run(&mut self, until: u64, healthy: impl Fn(u64) -> bool) {
        while self.now + 10 <= until {
            self.now += 10;
            let t = self.now;
            if t.is_multiple_of(100) {
                let facts = GatewayFacts {
                    session_established: healthy(t),
                    ..up_facts()
                };
                for site in SITES {
                    self.det.observe_heartbeat(gw(site), t, facts);
                }
                self.det.observe_canary(PAIR, t, healthy(t), 800);
            }
            self.tick(t);
        }
    }

    fn tick(&mut self, t: u64) {
        self.now = t;
        let new = self.det.tick(t);
        self.events.extend(new.into_iter().map(|e| (t, e)));
    }

    fn pair(&self) -> PairStatus {
        self.det.pairs(self.now)[0]
    }

    fn pair_events(&self) -> Vec<(u64, HealthEvent)> {
        let is_pair = |e: &HealthEvent| matches!(e, HealthEvent::PairUp { .. } | HealthEvent::PairDown { .. });
        self.events.iter().copied().filter(|(_, e)| is_pair(e)).collect()
    }

    /// Brings the fresh pair up: healthy from the first heartbeat at 100 ms, up at 1100 ms.
    fn up() -> Self {
        Sim::up_with(DetectorConfig::default())
    }

    fn up_with(config: DetectorConfig) -> Self {
        let mut sim = Sim::with(config);
        sim.run(1_200, |_| true);
        assert_eq!(sim.pair_events(), [(1_100, HealthEvent::PairUp { pair: PAIR })]);
        sim.events.clear();
        sim
    }
}

#[test]
fn pair_comes_up_only_after_recovery_time() {
    let mut sim = Sim::new();
    sim.run(1_090, |_| true);
    assert!(sim.pair_events().is_empty());
    assert_eq!(sim.pair().state, PairState::Down);
    assert_eq!(sim.pair().healthy_for_ms, Some(990));
    sim.run(1_100, |_| true);
    assert_eq!(sim.pair_events(), [(1_100, HealthEvent::PairUp { pair: PAIR })]);
    let alive = sim
        .events
        .iter()
        .filter(|(t, e)| *t == 100 && matches!(e, HealthEvent::DaemonAlive { .. }))
        .count();
    assert_eq!(alive, 2);
}

#[test]
fn process_exit_takes_pair_down_at_once_and_mutes_the_dead_process() {
    let mut sim = Sim::up();
    sim.det.observe_process_exit(gw(1), 1_205);
    sim.tick(1_205);
    assert_eq!(
        sim.events,
        [
            (
                1_205,
                HealthEvent::DaemonDead {
                    daemon: gw(1),
                    reason: FailureReason::ProcessExited
                }
            ),
            (
                1_205,
                HealthEvent::PairDown {
                    pair: PAIR,
                    reason: FailureReason::ProcessExited,
                    gateway_site: Some(1)
                }
            ),
        ]
    );
    assert!(!sim.det.observe_heartbeat(gw(1), 1_206, up_facts()));
    sim.det.observe_process_started(gw(1), 1_300);
    assert!(sim.det.observe_heartbeat(gw(1), 1_310, up_facts()));
    let status = sim.det.daemons(1_320);
    let d = status.iter().find(|d| d.daemon == gw(1)).unwrap();
    assert_eq!(d.liveness, Liveness::Alive);
    assert_eq!(d.last_failure.unwrap().reason, FailureReason::ProcessExited);
}

#[test]
fn heartbeat_silence_kills_at_exactly_the_timeout() {
    let mut sim = Sim::up();
    // Site 0's gateway goes silent after its beat at 1200; site 1 and the canary carry on.
    let last = 1_200;
    while sim.now < last + 399 {
        sim.now += 1;
        let t = sim.now;
        if t.is_multiple_of(100) {
            sim.det.observe_heartbeat(gw(1), t, up_facts());
            sim.det.observe_canary(PAIR, t, true, 800);
        }
        sim.tick(t);
    }
    assert!(sim.events.is_empty(), "nothing before the timeout: {:?}", sim.events);
    sim.tick(last + 400);
    let reason = FailureReason::NoHeartbeat { silent_ms: 400 };
    assert_eq!(
        sim.events,
        [
            (1_600, HealthEvent::DaemonDead { daemon: gw(0), reason }),
            (
                1_600,
                HealthEvent::PairDown {
                    pair: PAIR,
                    reason,
                    gateway_site: Some(0)
                }
            ),
        ]
    );
    assert_eq!(reason.to_string(), "no heartbeat for 400 ms");
}

#[test]
fn slow_but_alive_gateway_never_goes_down() {
    let mut sim = Sim::up();
    // Site 1 beats every 300..=399 ms (deterministic jitter); site 0 and the canary every 100.
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next_slow = sim.now + 350;
    let mut widest = 0;
    let mut prev = 1_200;
    while sim.now < 30_000 {
        sim.now += 1;
        let t = sim.now;
        if t.is_multiple_of(100) {
            sim.det.observe_heartbeat(gw(0), t, up_facts());
            sim.det.observe_canary(PAIR, t, true, 800);
        }
        if t == next_slow {
            assert!(sim.det.observe_heartbeat(gw(1), t, up_facts()));
            widest = widest.max(t - prev);
            prev = t;
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            next_slow = t + 300 + rng % 100;
        }
        if t.is_multiple_of(10) {
            sim.tick(t);
        }
    }
    assert!(sim.events.is_empty(), "{:?}", sim.events);
    let slow = sim
        .det
        .daemons(sim.now)
        .into_iter()
        .find(|d| d.daemon == gw(1))
        .unwrap();
    assert_eq!(slow.max_heartbeat_gap_ms, widest);
    assert!(widest >= 390, "jitter reached near the timeout: {widest}");
}

#[test]
fn flapping_pair_stays_down() {
    let mut sim = Sim::up();
    let start = sim.now;
    sim.run(start + 10_000, |t| ((t - start) / 200) % 2 == 1);
    let downs = sim.pair_events();
    assert_eq!(downs.len(), 1, "one down, never back up: {downs:?}");
    assert!(matches!(downs[0].1, HealthEvent::PairDown { .. }));
    assert_eq!(sim.pair().state, PairState::Down);
}

#[test]
fn recovery_time_doubles_per_flap_up_to_the_cap_and_resets_when_stable() {
    let mut sim = Sim::up();
    let mut seen = Vec::new();
    for _ in 0..7 {
        // Up for 400 ms, one failing beat, then healthy until it is back up.
        let fail_at = sim.now + 400;
        sim.run(fail_at, |t| t != fail_at);
        assert_eq!(sim.pair().state, PairState::Down);
        let needed = sim.pair().recovery_ms;
        seen.push(needed);
        let back_at = fail_at + 100 + needed;
        sim.run(back_at - 10, |_| true);
        assert_eq!(sim.pair().state, PairState::Down, "not before {needed} ms of health");
        sim.run(back_at, |_| true);
        assert_eq!(sim.pair().state, PairState::Up);
    }
    assert_eq!(seen, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
    let stable_until = sim.now + 30_000;
    sim.run(stable_until, |t| t != stable_until);
    assert_eq!(sim.pair().state, PairState::Down);
    assert_eq!(sim.pair().recovery_ms, 1_000);
}

#[test]
fn session_lost_takes_pair_down_on_that_heartbeat() {
    let mut sim = Sim::up();
    let down = GatewayFacts {
        session_established: false,
        handshake_age_ms: Some(100),
    };
    sim.det.observe_heartbeat(gw(0), 1_250, down);
    sim.tick(1_250);
    assert_eq!(
        sim.pair_events(),
        [(
            1_250,
            HealthEvent::PairDown {
                pair: PAIR,
                reason: FailureReason::SessionNotEstablished,
                gateway_site: Some(0)
            }
        )]
    );
}

#[test]
fn stale_handshake_counts_as_no_session() {
    let mut sim = Sim::up();
    let stale = GatewayFacts {
        session_established: true,
        handshake_age_ms: Some(180_001),
    };
    sim.det.observe_heartbeat(gw(1), 1_250, stale);
    sim.tick(1_250);
    assert_eq!(sim.pair().state, PairState::Down);
    assert_eq!(
        sim.pair().last_failure.unwrap().reason,
        FailureReason::SessionNotEstablished
    );
}

#[test]
fn canary_silence_takes_pair_down_after_canary_fail_ms() {
    let mut sim = Sim::up();
    // Last good canary at 1200; heartbeats carry on, probes stop arriving.
    while sim.now < 1_690 {
        sim.now += 10;
        let t = sim.now;
        if t.is_multiple_of(100) {
            for site in SITES {
                sim.det.observe_heartbeat(gw(site), t, up_facts());
            }
        }
        sim.tick(t);
    }
    assert!(sim.pair_events().is_empty());
    sim.tick(1_700);
    assert_eq!(
        sim.pair_events(),
        [(
            1_700,
            HealthEvent::PairDown {
                pair: PAIR,
                reason: FailureReason::CanaryLost,
                gateway_site: None
            }
        )]
    );
}

#[test]
fn consecutive_canary_failures_take_pair_down_early() {
    let mut sim = Sim::up();
    sim.det.observe_canary(PAIR, 1_210, false, 0);
    sim.det.observe_canary(PAIR, 1_220, false, 0);
    sim.tick(1_220);
    assert_eq!(sim.pair().state, PairState::Up);
    sim.det.observe_canary(PAIR, 1_230, false, 0);
    sim.tick(1_230);
    assert_eq!(sim.pair().state, PairState::Down);
    assert_eq!(sim.pair().canary_lost, 3);
    assert_eq!(sim.pair().canary_rtt_us, Some(800));
}

#[test]
fn started_daemon_that_never_reports_is_dead_after_the_startup_grace() {
    let mut det = Detector::new(DetectorConfig::default());
    det.watch_demux(0, 1_000);
    assert!(det.tick(1_400).is_empty(), "slow to start is not hung");
    assert!(det.tick(2_999).is_empty());
    assert_eq!(
        det.tick(3_000),
        [HealthEvent::DaemonDead {
            daemon: DaemonKey::demux(0),
            reason: FailureReason::NoHeartbeat { silent_ms: 2_000 }
        }]
    );
    assert!(det.tick(5_000).is_empty(), "dead is reported once");
    assert!(!det.observe_heartbeat(DaemonKey::demux(1), 5_000, GatewayFacts::default()));
    assert!(det.observe_heartbeat(DaemonKey::demux(0), 5_000, GatewayFacts::default()));
    assert_eq!(
        det.tick(5_000),
        [HealthEvent::DaemonAlive {
            daemon: DaemonKey::demux(0)
        }]
    );
}

#[test]
fn unwatched_pair_is_forgotten() {
    let mut sim = Sim::up();
    sim.det.unwatch_pair(PAIR);
    assert!(sim.det.pairs(sim.now).is_empty());
    assert!(sim.det.daemons(sim.now).is_empty());
    assert!(!sim.det.observe_heartbeat(gw(0), sim.now, up_facts()));
}

/// Site 1 external: only site 0's gateway beats; the canary decides the rest.
fn external_sim() -> Detector {
    let mut det = Detector::new(DetectorConfig::default()).with_external_site(Some(1));
    det.watch_pair(PAIR, 0);
    det.watch_demux(0, 0);
    det.watch_demux(1, 0);
    det
}

/// Drives `det` from `from` to `until`: site 0's gateway beats with `session`, the canary
/// answers as `canary` says. Returns the events.
fn drive_external(
    det: &mut Detector,
    from: u64,
    until: u64,
    session: impl Fn(u64) -> bool,
    canary: impl Fn(u64) -> bool,
) -> Vec<(u64, HealthEvent)> {
    let mut events = Vec::new();
    let mut t = from;
    while t + 10 <= until {
        t += 10;
        if t.is_multiple_of(100) {
            let facts = GatewayFacts {
                session_established: session(t),
                ..up_facts()
            };
            det.observe_heartbeat(gw(0), t, facts);
            det.observe_heartbeat(DaemonKey::demux(0), t, GatewayFacts::default());
            det.observe_canary(PAIR, t, canary(t), 900);
        }
        events.extend(det.tick(t).into_iter().map(|e| (t, e)));
    }
    events
}

#[test]
fn external_peer_pair_comes_up_on_its_braid_gateway_and_canaries_alone() {
    let mut det = external_sim();
    assert!(
        !det.daemons(0).iter().any(|d| d.daemon.site == 1),
        "nothing of the external site is watched"
    );
    let events = drive_external(&mut det, 0, 1_500, |_| true, |_| true);
    assert!(
        events.iter().any(|(_, e)| *e == HealthEvent::PairUp { pair: PAIR }),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|(_, e)| matches!(e, HealthEvent::DaemonDead { .. })),
        "no heartbeat is expected from the external site: {events:?}"
    );
    assert_eq!(det.pairs(1_500)[0].state, PairState::Up);
}

#[test]
fn external_peer_pair_goes_down_when_its_canaries_stop() {
    let mut det = external_sim();
    drive_external(&mut det, 0, 1_500, |_| true, |_| true);
    // The strongSwan end dies: the braid gateway still beats (its IKE liveness has not noticed
    // yet), but the echoes stop.
    let events = drive_external(&mut det, 1_500, 2_500, |_| true, |t| t < 1_600);
    let down = events
        .iter()
        .find(|(_, e)| matches!(e, HealthEvent::PairDown { .. }))
        .expect("the pair goes down");
    assert_eq!(
        down.1,
        HealthEvent::PairDown {
            pair: PAIR,
            reason: FailureReason::CanaryLost,
            gateway_site: None
        }
    );
    assert!(down.0 <= 2_000, "down within the canary budget, at {}", down.0);
    // And back once the echoes return.
    let events = drive_external(&mut det, 2_500, 5_000, |_| true, |_| true);
    assert!(events.iter().any(|(_, e)| *e == HealthEvent::PairUp { pair: PAIR }));
}

#[test]
fn external_peer_pair_goes_down_when_its_braid_gateway_loses_the_session() {
    let mut det = external_sim();
    drive_external(&mut det, 0, 1_500, |_| true, |_| true);
    let events = drive_external(&mut det, 1_500, 2_000, |t| t < 1_700, |_| true);
    assert!(
        events.iter().any(|(_, e)| *e
            == HealthEvent::PairDown {
                pair: PAIR,
                reason: FailureReason::SessionNotEstablished,
                gateway_site: Some(0)
            }),
        "{events:?}"
    );
}

/// Three pairs and both demuxes, every daemon beating at its own phase within the 100 ms
/// period; `heard(t, daemon)` says whether a heartbeat gets through, `crosses(t, pair)` whether
/// the canaries site 0's demux reports for a pair were answered.
struct Cluster {
    det: Detector,
    now: u64,
    events: Vec<(u64, HealthEvent)>,
}

const PAIRS: [PairId; 3] = [1, 2, 3];

impl Cluster {
    fn daemons() -> Vec<DaemonKey> {
        let mut all: Vec<DaemonKey> = SITES.into_iter().map(DaemonKey::demux).collect();
        for site in SITES {
            all.extend(PAIRS.map(|p| DaemonKey::gateway(site, p)));
        }
        all
    }

    /// Every pair up.
    fn up() -> Self {
        let mut det = Detector::new(DetectorConfig::default());
        for site in SITES {
            det.watch_demux(site, 0);
        }
        for p in PAIRS {
            det.watch_pair(p, 0);
        }
        let mut c = Cluster {
            det,
            now: 0,
            events: Vec::new(),
        };
        c.run(1_500, |_, _| true, |_, _| true);
        assert!(c.det.pairs(c.now).iter().all(|p| p.state == PairState::Up));
        c.events.clear();
        c
    }

    fn run(&mut self, until: u64, heard: impl Fn(u64, DaemonKey) -> bool, crosses: impl Fn(u64, PairId) -> bool) {
        let daemons = Self::daemons();
        while self.now + 10 <= until {
            self.now += 10;
            let t = self.now;
            for (i, &d) in daemons.iter().enumerate() {
                // Phases 0, 10, .., 70 ms: the daemons' heartbeats are spread over the period.
                if t % 100 == (i as u64 * 10) % 100 && heard(t, d) {
                    let facts = if matches!(d.role, Role::Gateway(_)) {
                        up_facts()
                    } else {
                        GatewayFacts::default()
                    };
                    self.det.observe_heartbeat(d, t, facts);
                }
            }
            if t.is_multiple_of(100) {
                for p in PAIRS {
                    self.det.observe_canary(p, t, crosses(t, p), 900);
                }
            }
            let new = self.det.tick(t);
            self.events.extend(new.into_iter().map(|e| (t, e)));
        }
    }

    /// The pairs up now.
    fn up_pairs(&self) -> Vec<PairId> {
        self.det
            .pairs(self.now)
            .iter()
            .filter(|p| p.state == PairState::Up)
            .map(|p| p.pair)
            .collect()
    }

    fn downs(&self) -> Vec<(PairId, FailureReason)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match *e {
                HealthEvent::PairDown { pair, reason, .. } => Some((pair, reason)),
                _ => None,
            })
            .collect()
    }

    fn dead(&self) -> Vec<(DaemonKey, FailureReason)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match *e {
                HealthEvent::DaemonDead { daemon, reason } => Some((daemon, reason)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_site_gone_silent_at_once_is_unreachable_and_only_canaries_take_its_pairs_down() {
    let mut c = Cluster::up();
    let cut = c.now;
    // Site 1 is cut off from the controller; pair 3 really broke at the same moment.
    c.run(cut + 3_000, |_, d| d.site == 0, |_, p| p != 3);
    assert!(
        c.events
            .iter()
            .any(|(_, e)| *e == HealthEvent::SiteUnreachable { site: 1 }),
        "{:?}",
        c.events
    );
    assert_eq!(c.det.unreachable_sites().collect::<Vec<_>>(), [1]);
    // Every silent daemon of site 1 died of the partition, none of plain silence.
    let dead = c.dead();
    assert_eq!(dead.len(), 4, "{dead:?}");
    assert!(
        dead.iter()
            .all(|(d, r)| d.site == 1 && matches!(r, FailureReason::SiteUnreachable { .. })),
        "{dead:?}"
    );
    // Pairs 1 and 2 stayed up (their canaries cross); pair 3 went down once, confirmed by them.
    assert_eq!(c.downs(), [(3, FailureReason::CanaryLost)]);
    assert_eq!(c.up_pairs(), [1, 2]);
}

#[test]
fn a_down_pair_does_not_come_up_while_its_gateway_is_unheard() {
    let mut c = Cluster::up();
    let cut = c.now;
    c.run(cut + 1_000, |_, d| d.site == 0, |t, p| p != 3 || t < cut);
    assert_eq!(c.downs(), [(3, FailureReason::CanaryLost)]);
    // Pair 3's canaries cross again, but its site-1 gateway is still unheard.
    c.run(cut + 5_000, |_, d| d.site == 0, |_, _| true);
    assert_eq!(c.det.pairs(c.now)[2].state, PairState::Down);
    assert!(!c.events.iter().any(|(_, e)| *e == HealthEvent::PairUp { pair: 3 }));
}

#[test]
fn one_silent_gateway_still_takes_its_pair_down_at_the_failure_timeout() {
    let mut c = Cluster::up();
    let cut = c.now;
    let frozen = DaemonKey::gateway(1, 2);
    c.run(cut + 2_000, |_, d| d != frozen, |_, p| p != 2);
    assert!(c.det.unreachable_sites().next().is_none(), "{:?}", c.events);
    let dead = c.dead();
    assert_eq!(dead.len(), 1);
    assert!(
        matches!(dead[0], (d, FailureReason::NoHeartbeat { .. }) if d == frozen),
        "{dead:?}"
    );
    let downs = c.downs();
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert_eq!(downs[0].0, 2);
    let at = c
        .events
        .iter()
        .find(|(_, e)| matches!(e, HealthEvent::PairDown { .. }))
        .unwrap()
        .0;
    assert!(at <= cut + 400 + 100, "down at {at}, the silence began after {cut}");
}

#[test]
fn a_site_heard_again_hands_its_still_silent_daemons_to_the_ordinary_rules() {
    let mut c = Cluster::up();
    let cut = c.now;
    c.run(cut + 1_000, |_, d| d.site == 0, |_, _| true);
    assert_eq!(c.det.unreachable_sites().collect::<Vec<_>>(), [1]);
    c.events.clear();
    // The partition heals, but site 1's gateway of pair 3 stays silent: it really is dead.
    let dead_gw = DaemonKey::gateway(1, 3);
    c.run(cut + 3_000, |_, d| d != dead_gw, |_, p| p != 3);
    assert!(c
        .events
        .iter()
        .any(|(_, e)| *e == HealthEvent::SiteReachable { site: 1 }));
    assert!(c.det.unreachable_sites().next().is_none());
    let dead = c.dead();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        matches!(dead[0], (d, FailureReason::NoHeartbeat { .. }) if d == dead_gw),
        "{dead:?}"
    );
    assert_eq!(c.up_pairs(), [1, 2]);
}

fn pausing() -> DetectorConfig {
    DetectorConfig {
        pause_ms: 200,
        ..DetectorConfig::default()
    }
}

#[test]
fn a_detector_that_did_not_run_holds_nobody_responsible_for_its_own_silence() {
    // Up at 1_200, then the controller is frozen for 5 s: no call at all until 6_200.
    let mut sim = Sim::up_with(pausing());
    sim.tick(6_200);
    assert_eq!(sim.events, [(6_200, HealthEvent::MonitorPaused { gap_ms: 5_000 })]);
    assert_eq!(sim.pair().state, PairState::Up);
    // It watches again from where it left off: healthy traffic keeps the pair up ...
    sim.run(7_000, |_| true);
    assert_eq!(sim.pair_events(), []);
    assert!(sim.det.daemons(7_000).iter().all(|d| d.liveness == Liveness::Alive));
}

#[test]
fn after_a_pause_a_real_failure_is_still_caught_within_its_usual_time() {
    let mut sim = Sim::up_with(pausing());
    // Frozen from 1_200 to 6_200; on waking, the daemons stay silent and no canary comes.
    for t in (6_200..=6_800).step_by(10) {
        sim.tick(t);
    }
    // Before the pause the last heartbeats were at 1_200: they run out after the failure
    // timeout (400 ms) of watched time, so 400 ms after waking, never at once.
    assert_eq!(
        sim.pair_events(),
        [(
            6_600,
            HealthEvent::PairDown {
                pair: PAIR,
                reason: FailureReason::NoHeartbeat { silent_ms: 400 },
                gateway_site: Some(0)
            }
        )],
        "{:?}",
        sim.events
    );
}

#[test]
fn a_stale_heartbeat_read_first_on_waking_takes_nothing_down() {
    let mut sim = Sim::up_with(pausing());
    // The first call after the freeze is the heartbeat that was queued: the pause is seen there.
    for site in SITES {
        sim.det.observe_heartbeat(gw(site), 6_200, up_facts());
    }
    sim.tick(6_200);
    assert_eq!(sim.events, [(6_200, HealthEvent::MonitorPaused { gap_ms: 5_000 })]);
    assert_eq!(sim.pair().state, PairState::Up);
}

#[test]
fn time_that_went_nowhere_or_back_is_no_pause() {
    let mut sim = Sim::up_with(pausing());
    sim.tick(1_150);
    sim.tick(1_390);
    assert_eq!(sim.events, [], "a 190 ms gap (from 1_200) is within pause_ms");
}
