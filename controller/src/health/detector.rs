//! Failure detector: per-daemon liveness and per-pair health, with hysteresis.
//!
//! Design. Observations (heartbeats, process starts and exits, canary results) update the
//! records and immediately re-evaluate what they touch; [`Detector::tick`] applies the timeouts
//! and returns every event produced since the previous tick. The supervisor calls `tick` after
//! each batch of observations and on a timer (every few tens of ms).
//!
//! * A daemon is **alive** from its first heartbeat until `failure_timeout_ms` pass without one
//!   (dead at exactly the timeout, never before) or its process exits. After an exit its
//!   heartbeats are ignored until [`Detector::observe_process_started`], so a datagram still in
//!   flight from the dead process cannot revive it. A started daemon that never reports is dead
//!   after `startup_grace_ms` (at least the failure timeout): a daemon opening its TUN, binding
//!   its sockets and meeting the controller on a loaded host is slow, not hung. Late heartbeats within the timeout are fine; the largest gap seen
//!   is kept for status.
//! * A pair is **healthy** when both gateways are alive, both report an established session
//!   (with a handshake younger than `max_handshake_age_ms`), and a canary probe succeeded within
//!   `canary_fail_ms` with fewer than `canary_fail_count` failures since.
//! * **Hysteresis**: an up pair goes down on the first failure. A down pair comes up only after
//!   being healthy continuously for its recovery time: `recovery_ms`, doubled for every further
//!   failure that follows an up period shorter than `stable_ms`, capped at `max_recovery_ms`.
//!   Pairs start down and come up the same way.
//! * **A site that goes silent at once** is unreachable, not dead: when at least two of a site's
//!   daemons, and more than half of them, have been silent for nearly the failure timeout (within
//!   two heartbeat periods of it) when the first of them reaches it, the controller has lost
//!   sight of the site (a partition, a management network fault) rather than watched its
//!   daemons fail one by one. Its silent daemons die with [`FailureReason::SiteUnreachable`],
//!   which the supervisor neither kills nor restarts for, and a pair whose gateway is silent
//!   that way stays up as long as the other site's demux reports canaries crossing it: the
//!   demuxes' own probes must confirm a failure before an up pair is taken out (a down pair
//!   does not come up while its gateway is unheard). When the site is heard again, daemons
//!   still silent die of [`FailureReason::NoHeartbeat`] and are handled as usual.
//! * **A monitor that did not run is no witness.** When the detector's clock jumps by more
//!   than `pause_ms` between two calls (the controller was frozen, suspended or starved), nobody
//!   was watched meanwhile: every heartbeat, canary and recovery clock is moved forward by the
//!   gap before anything is judged, so a controller that wakes up (a standby most often, once its
//!   heartbeats queued up and were dropped) neither fails daemons and pairs for its own silence
//!   nor carries those false failures (and their flap penalty) into its next term as leader.
//!   It reports [`HealthEvent::MonitorPaused`].
//! * An **external** site ([`Detector::with_external_site`]) runs no braid: its gateways are
//!   standard IPsec endpoints that send no heartbeats. A pair's health is then its one braid
//!   gateway (alive, session established and fresh) plus the canaries, which are ICMP echoes
//!   to a host inside the external site.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use braid_core::flow::PairId;

use super::types::{DaemonKey, Failure, FailureReason, Role, SiteIndex, SITES};

/// Timing rules of the detector, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct DetectorConfig {
    /// Silence after which a daemon is dead.
    pub failure_timeout_ms: u64,
    /// How often daemons send heartbeats: daemons of one site silent within two periods of
    /// each other went silent together.
    pub heartbeat_ms: u64,
    /// How long a started daemon has for its first heartbeat (never less than
    /// `failure_timeout_ms`).
    pub startup_grace_ms: u64,
    /// A pair without a successful canary for this long is failing.
    pub canary_fail_ms: u64,
    /// This many failed canaries in a row fail a pair before `canary_fail_ms` runs out.
    pub canary_fail_count: u32,
    /// A handshake older than this means the session is gone (WireGuard rejects after 180 s).
    pub max_handshake_age_ms: u64,
    /// Continuous health a down pair needs before it comes up, at first.
    pub recovery_ms: u64,
    /// Ceiling of the growing recovery time of a flapping pair.
    pub max_recovery_ms: u64,
    /// An up period this long forgives earlier flaps.
    pub stable_ms: u64,
    /// A gap this long between two calls means the detector itself did not run (`u64::MAX`,
    /// the default: never, for callers that do not call on a timer).
    pub pause_ms: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            failure_timeout_ms: 400,
            heartbeat_ms: 100,
            startup_grace_ms: 2_000,
            canary_fail_ms: 500,
            canary_fail_count: 3,
            max_handshake_age_ms: 180_000,
            recovery_ms: 1_000,
            max_recovery_ms: 30_000,
            stable_ms: 30_000,
            pause_ms: u64::MAX,
        }
    }
}

/// What a gateway's heartbeat says about its tunnel (a demux sends the default).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct GatewayFacts {
    pub session_established: bool,
    pub handshake_age_ms: Option<u64>,
}

/// A change the supervisor must act on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HealthEvent {
    PairDown {
        pair: PairId,
        reason: FailureReason,
        /// The site whose gateway caused it, if one did.
        gateway_site: Option<SiteIndex>,
    },
    PairUp {
        pair: PairId,
    },
    DaemonDead {
        daemon: DaemonKey,
        reason: FailureReason,
    },
    DaemonAlive {
        daemon: DaemonKey,
    },
    /// The detector did not run for `gap_ms` (see the module docs); that silence was not held
    /// against anyone.
    MonitorPaused {
        gap_ms: u64,
    },
    /// Most of `site`'s daemons went silent together: the controller lost sight of the site.
    SiteUnreachable {
        site: SiteIndex,
    },
    /// `site` is heard again.
    SiteReachable {
        site: SiteIndex,
    },
}

/// Liveness of one daemon.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Liveness {
    /// Started (or first watched), no heartbeat yet.
    Starting,
    Alive,
    Dead,
}

/// Service state of one pair.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PairState {
    Up,
    Down,
}

/// One daemon, for `braid status`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DaemonStatus {
    pub daemon: DaemonKey,
    pub liveness: Liveness,
    pub since_ms: u64,
    pub heartbeat_age_ms: Option<u64>,
    pub max_heartbeat_gap_ms: u64,
    pub facts: GatewayFacts,
    pub last_failure: Option<Failure>,
}

/// One pair, for `braid status`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PairStatus {
    pub pair: PairId,
    pub state: PairState,
    pub since_ms: u64,
    pub last_failure: Option<Failure>,
    /// Continuous health a down pair needs before it comes up (set by its latest failure).
    pub recovery_ms: u64,
    /// How long a down pair has been healthy so far.
    pub healthy_for_ms: Option<u64>,
    pub canary_rtt_us: Option<u32>,
    pub canary_probes: u64,
    pub canary_lost: u64,
}

#[derive(Debug)]
struct Daemon {
    liveness: Liveness,
    since_ms: u64,
    last_heartbeat_ms: Option<u64>,
    max_gap_ms: u64,
    facts: GatewayFacts,
    last_failure: Option<Failure>,
    /// The process exited: heartbeats are ignored until it is started again.
    exited: bool,
}

#[derive(Debug, Default)]
struct Canary {
    last_ok_ms: Option<u64>,
    failures_since_ok: u32,
    rtt_us: Option<u32>,
    probes: u64,
    lost: u64,
}

#[derive(Debug)]
struct Pair {
    state: PairState,
    since_ms: u64,
    healthy_since_ms: Option<u64>,
    flaps: u32,
    recovery_ms: u64,
    last_failure: Option<Failure>,
    canary: Canary,
}

/// The failure detector of one cluster.
#[derive(Debug)]
pub struct Detector {
    config: DetectorConfig,
    /// The site that runs no braid, if any: its gateways are neither watched nor required.
    external_site: Option<SiteIndex>,
    daemons: BTreeMap<DaemonKey, Daemon>,
    pairs: BTreeMap<PairId, Pair>,
    /// Sites the controller has lost sight of (see the module docs), with when most of the
    /// site was heard again (the others then have a failure timeout to speak up).
    unreachable: BTreeMap<SiteIndex, Option<u64>>,
    events: Vec<HealthEvent>,
    /// The latest time any call passed in.
    latest_ms: Option<u64>,
}

impl Detector {
    pub fn new(config: DetectorConfig) -> Self {
        Detector {
            config,
            external_site: None,
            daemons: BTreeMap::new(),
            pairs: BTreeMap::new(),
            unreachable: BTreeMap::new(),
            events: Vec::new(),
            latest_ms: None,
        }
    }

    /// Declares `site` external (it runs no braid): its demux and gateways are not watched, and a
    /// pair is judged by the other site's gateway and the canaries alone. Call before watching.
    pub fn with_external_site(mut self, site: Option<SiteIndex>) -> Self {
        self.external_site = site;
        self
    }

    /// The sites whose daemons report heartbeats.
    fn braid_sites(&self) -> impl Iterator<Item = SiteIndex> + '_ {
        SITES.into_iter().filter(move |&s| Some(s) != self.external_site)
    }

    /// Starts watching `site`'s demux; it must report within the failure timeout. An external
    /// site has none: ignored.
    pub fn watch_demux(&mut self, site: SiteIndex, now_ms: u64) {
        if Some(site) == self.external_site {
            return;
        }
        self.daemons
            .entry(DaemonKey::demux(site))
            .or_insert_with(|| Daemon::starting(now_ms));
    }

    /// Starts watching `pair` and its two gateways. The pair starts down.
    pub fn watch_pair(&mut self, pair: PairId, now_ms: u64) {
        let sites: Vec<SiteIndex> = self.braid_sites().collect();
        for site in sites {
            self.daemons
                .entry(DaemonKey::gateway(site, pair))
                .or_insert_with(|| Daemon::starting(now_ms));
        }
        let recovery_ms = self.config.recovery_ms;
        self.pairs.entry(pair).or_insert_with(|| Pair {
            state: PairState::Down,
            since_ms: now_ms,
            healthy_since_ms: None,
            flaps: 0,
            recovery_ms,
            last_failure: None,
            canary: Canary::default(),
        });
    }

    /// Forgets `pair` and its gateways (the pair was removed from the cluster).
    pub fn unwatch_pair(&mut self, pair: PairId) {
        self.pairs.remove(&pair);
        for site in SITES {
            self.daemons.remove(&DaemonKey::gateway(site, pair));
        }
    }

    /// A heartbeat from `daemon`. Returns false when it was ignored: an unknown daemon, or one
    /// whose process exited and has not been started again.
    pub fn observe_heartbeat(&mut self, daemon: DaemonKey, now_ms: u64, facts: GatewayFacts) -> bool {
        self.catch_up(now_ms);
        let Some(d) = self.daemons.get_mut(&daemon) else {
            return false;
        };
        if d.exited {
            return false;
        }
        if let Some(last) = d.last_heartbeat_ms {
            d.max_gap_ms = d.max_gap_ms.max(now_ms.saturating_sub(last));
        }
        d.last_heartbeat_ms = Some(now_ms);
        d.facts = facts;
        if d.liveness != Liveness::Alive {
            d.liveness = Liveness::Alive;
            d.since_ms = now_ms;
            self.events.push(HealthEvent::DaemonAlive { daemon });
        }
        self.evaluate_daemon_pair(daemon, now_ms);
        true
    }

    /// The supervisor saw `daemon`'s process exit: dead at once.
    pub fn observe_process_exit(&mut self, daemon: DaemonKey, now_ms: u64) {
        self.catch_up(now_ms);
        self.mark_dead(daemon, now_ms, FailureReason::ProcessExited);
        self.evaluate_daemon_pair(daemon, now_ms);
    }

    /// The supervisor (re)started `daemon`: its heartbeats count again and it must send the
    /// first one within the failure timeout.
    pub fn observe_process_started(&mut self, daemon: DaemonKey, now_ms: u64) {
        self.catch_up(now_ms);
        if let Some(d) = self.daemons.get_mut(&daemon) {
            if d.liveness != Liveness::Alive {
                *d = Daemon {
                    max_gap_ms: d.max_gap_ms,
                    last_failure: d.last_failure,
                    ..Daemon::starting(now_ms)
                };
            }
        }
    }

    /// The result of one canary probe through `pair`.
    pub fn observe_canary(&mut self, pair: PairId, now_ms: u64, ok: bool, rtt_us: u32) {
        self.catch_up(now_ms);
        let Some(p) = self.pairs.get_mut(&pair) else {
            return;
        };
        let canary = &mut p.canary;
        canary.probes += 1;
        if ok {
            canary.last_ok_ms = Some(now_ms);
            canary.failures_since_ok = 0;
            canary.rtt_us = Some(rtt_us);
        } else {
            canary.lost += 1;
            canary.failures_since_ok = canary.failures_since_ok.saturating_add(1);
        }
        self.evaluate_pair(pair, now_ms);
    }

    /// Applies the timeouts at `now_ms` and returns every event since the previous tick, daemon
    /// events before the pair events they cause.
    pub fn tick(&mut self, now_ms: u64) -> Vec<HealthEvent> {
        self.catch_up(now_ms);
        let timeout = self.config.failure_timeout_ms;
        let first_timeout = timeout.max(self.config.startup_grace_ms);
        let silent: Vec<(DaemonKey, u64)> = self
            .daemons
            .iter()
            .filter(|(_, d)| d.liveness != Liveness::Dead)
            .filter_map(|(k, d)| {
                let (since, limit) = match d.last_heartbeat_ms {
                    Some(last) => (last, timeout),
                    None => (d.since_ms, first_timeout),
                };
                let silent_ms = now_ms.saturating_sub(since);
                (silent_ms >= limit).then_some((*k, silent_ms))
            })
            .collect();
        self.update_reachability(now_ms);
        for (daemon, silent_ms) in silent {
            let reason = if self.unreachable.contains_key(&daemon.site) {
                FailureReason::SiteUnreachable { silent_ms }
            } else {
                FailureReason::NoHeartbeat { silent_ms }
            };
            self.mark_dead(daemon, now_ms, reason);
        }
        let pairs: Vec<PairId> = self.pairs.keys().copied().collect();
        for pair in pairs {
            self.evaluate_pair(pair, now_ms);
        }
        std::mem::take(&mut self.events)
    }

    /// Moves every clock forward by the gap when the detector did not run for `pause_ms` or more
    /// before `now_ms` (see the module docs).
    fn catch_up(&mut self, now_ms: u64) {
        let Some(latest) = self.latest_ms.replace(now_ms.max(self.latest_ms.unwrap_or(0))) else {
            return;
        };
        let gap = now_ms.saturating_sub(latest);
        if gap < self.config.pause_ms {
            return;
        }
        for d in self.daemons.values_mut() {
            match d.last_heartbeat_ms.as_mut() {
                Some(last) => *last += gap,
                None if d.liveness != Liveness::Dead => d.since_ms += gap,
                None => {}
            }
        }
        for p in self.pairs.values_mut() {
            if let Some(t) = p.canary.last_ok_ms.as_mut() {
                *t += gap;
            }
            if let Some(t) = p.healthy_since_ms.as_mut() {
                *t += gap;
            }
        }
        for heard in self.unreachable.values_mut().flatten() {
            *heard += gap;
        }
        self.events.push(HealthEvent::MonitorPaused { gap_ms: gap });
    }

    /// The sites the controller has lost sight of, in order.
    pub fn unreachable_sites(&self) -> impl Iterator<Item = SiteIndex> + '_ {
        self.unreachable.keys().copied()
    }

    /// Recomputes which sites went silent together (see the module docs). Only daemons that
    /// were alive count as going silent, so a daemon dead for long does not make a slow
    /// neighbour look like a partition. A site is heard again once fewer than two (or only half)
    /// of its daemons remain unheard and the rest either spoke up or stayed silent for a failure
    /// timeout more: those then die of no heartbeat.
    fn update_reachability(&mut self, now_ms: u64) {
        let timeout = self.config.failure_timeout_ms;
        let nearly = timeout.saturating_sub((2 * self.config.heartbeat_ms).min(timeout / 2));
        let most = |n: usize, total: usize| n >= 2 && n * 2 > total;
        let sites: Vec<SiteIndex> = self.braid_sites().collect();
        for site in sites {
            let of_site: Vec<(DaemonKey, &Daemon)> = self
                .daemons
                .iter()
                .filter(|(k, _)| k.site == site)
                .map(|(k, d)| (*k, d))
                .collect();
            let silence = |d: &Daemon| d.last_heartbeat_ms.map_or(0, |t| now_ms.saturating_sub(t));
            if let Entry::Vacant(entry) = self.unreachable.entry(site) {
                let going: Vec<u64> = of_site
                    .iter()
                    .filter(|(_, d)| d.liveness == Liveness::Alive && !d.exited)
                    .map(|(_, d)| silence(d))
                    .filter(|&ms| ms >= nearly)
                    .collect();
                if most(going.len(), of_site.len()) && going.iter().any(|&ms| ms >= timeout) {
                    entry.insert(None);
                    self.events.push(HealthEvent::SiteUnreachable { site });
                }
                continue;
            }
            let unheard: Vec<(DaemonKey, u64)> = of_site
                .iter()
                .filter(|(_, d)| {
                    d.liveness == Liveness::Dead
                        && matches!(
                            d.last_failure.map(|f| f.reason),
                            Some(FailureReason::SiteUnreachable { .. })
                        )
                })
                .map(|(k, d)| (*k, silence(d)))
                .collect();
            let going = of_site
                .iter()
                .filter(|(_, d)| d.liveness == Liveness::Alive && silence(d) >= nearly)
                .count();
            if most(unheard.len() + going, of_site.len()) {
                self.unreachable.insert(site, None);
                continue;
            }
            if !unheard.is_empty() {
                let heard_since = *self.unreachable.entry(site).or_default().get_or_insert(now_ms);
                if now_ms.saturating_sub(heard_since) < timeout {
                    continue;
                }
            }
            self.unreachable.remove(&site);
            self.events.push(HealthEvent::SiteReachable { site });
            for (daemon, silent_ms) in unheard {
                let reason = FailureReason::NoHeartbeat { silent_ms };
                if let Some(d) = self.daemons.get_mut(&daemon) {
                    d.last_failure = Some(Failure {
                        at_ms: now_ms,
                        reason,
                        gateway_site: None,
                    });
                }
                self.events.push(HealthEvent::DaemonDead { daemon, reason });
            }
        }
    }

    /// Every watched daemon, in key order.
    pub fn daemons(&self, now_ms: u64) -> Vec<DaemonStatus> {
        self.daemons
            .iter()
            .map(|(k, d)| DaemonStatus {
                daemon: *k,
                liveness: d.liveness,
                since_ms: d.since_ms,
                heartbeat_age_ms: d.last_heartbeat_ms.map(|t| now_ms.saturating_sub(t)),
                max_heartbeat_gap_ms: d.max_gap_ms,
                facts: d.facts,
                last_failure: d.last_failure,
            })
            .collect()
    }

    /// Every watched pair, in id order.
    pub fn pairs(&self, now_ms: u64) -> Vec<PairStatus> {
        self.pairs
            .iter()
            .map(|(id, p)| PairStatus {
                pair: *id,
                state: p.state,
                since_ms: p.since_ms,
                last_failure: p.last_failure,
                recovery_ms: p.recovery_ms,
                healthy_for_ms: p.healthy_since_ms.map(|t| now_ms.saturating_sub(t)),
                canary_rtt_us: p.canary.rtt_us,
                canary_probes: p.canary.probes,
                canary_lost: p.canary.lost,
            })
            .collect()
    }

    fn mark_dead(&mut self, daemon: DaemonKey, now_ms: u64, reason: FailureReason) {
        let Some(d) = self.daemons.get_mut(&daemon) else {
            return;
        };
        if reason == FailureReason::ProcessExited {
            d.exited = true;
        }
        if d.liveness == Liveness::Dead {
            return;
        }
        d.liveness = Liveness::Dead;
        d.since_ms = now_ms;
        d.facts = GatewayFacts::default();
        d.last_failure = Some(Failure {
            at_ms: now_ms,
            reason,
            gateway_site: None,
        });
        self.events.push(HealthEvent::DaemonDead { daemon, reason });
    }

    fn evaluate_daemon_pair(&mut self, daemon: DaemonKey, now_ms: u64) {
        if let Role::Gateway(pair) = daemon.role {
            self.evaluate_pair(pair, now_ms);
        }
    }

    /// Why `pair` is not healthy at `now_ms`, if it is not.
    fn fault(&self, pair: PairId, p: &Pair, now_ms: u64) -> Option<(FailureReason, Option<SiteIndex>)> {
        let gateways: Vec<_> = self
            .braid_sites()
            .map(|site| (site, self.daemons.get(&DaemonKey::gateway(site, pair))))
            .collect();
        for &(site, d) in &gateways {
            let Some(d) = d else {
                return Some((FailureReason::Starting, Some(site)));
            };
            match d.liveness {
                Liveness::Alive => {}
                Liveness::Starting => return Some((FailureReason::Starting, Some(site))),
                Liveness::Dead => {
                    let reason = d.last_failure.map_or(FailureReason::Starting, |f| f.reason);
                    // Unheard because its site is: the canaries below judge an up pair.
                    let unheard = matches!(reason, FailureReason::SiteUnreachable { .. });
                    if !(unheard && p.state == PairState::Up) {
                        return Some((reason, Some(site)));
                    }
                }
            }
        }
        for &(site, d) in &gateways {
            if self.unreachable.contains_key(&site) && d.is_some_and(|d| d.liveness == Liveness::Dead) {
                continue;
            }
            let facts = d.map(|d| d.facts).unwrap_or_default();
            let fresh = facts
                .handshake_age_ms
                .is_some_and(|age| age <= self.config.max_handshake_age_ms);
            if !(facts.session_established && fresh) {
                return Some((FailureReason::SessionNotEstablished, Some(site)));
            }
        }
        let canary = &p.canary;
        let recent = canary
            .last_ok_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < self.config.canary_fail_ms);
        if !recent || canary.failures_since_ok >= self.config.canary_fail_count {
            return Some((FailureReason::CanaryLost, None));
        }
        None
    }

    fn evaluate_pair(&mut self, pair: PairId, now_ms: u64) {
        let Some(p) = self.pairs.get(&pair) else {
            return;
        };
        let fault = self.fault(pair, p, now_ms);
        let config = self.config;
        let Some(p) = self.pairs.get_mut(&pair) else {
            return;
        };
        match (p.state, fault) {
            (PairState::Up, Some((reason, gateway_site))) => {
                p.go_down(now_ms, reason, gateway_site, &config);
                self.events.push(HealthEvent::PairDown {
                    pair,
                    reason,
                    gateway_site,
                });
            }
            (PairState::Up, None) => {}
            (PairState::Down, Some(_)) => p.healthy_since_ms = None,
            (PairState::Down, None) => {
                let since = *p.healthy_since_ms.get_or_insert(now_ms);
                if now_ms.saturating_sub(since) >= p.recovery_ms {
                    p.state = PairState::Up;
                    p.since_ms = now_ms;
                    p.healthy_since_ms = None;
                    self.events.push(HealthEvent::PairUp { pair });
                }
            }
        }
    }
}

impl Daemon {
    fn starting(now_ms: u64) -> Self {
        Daemon {
            liveness: Liveness::Starting,
            since_ms: now_ms,
            last_heartbeat_ms: None,
            max_gap_ms: 0,
            facts: GatewayFacts::default(),
            last_failure: None,
            exited: false,
        }
    }
}

impl Pair {
    /// Takes an up pair down and sets the recovery time it will need to come back.
    fn go_down(
        &mut self,
        now_ms: u64,
        reason: FailureReason,
        gateway_site: Option<SiteIndex>,
        config: &DetectorConfig,
    ) {
        if now_ms.saturating_sub(self.since_ms) >= config.stable_ms {
            self.flaps = 0;
        }
        let factor = 1u64 << self.flaps.min(32);
        self.recovery_ms = config.recovery_ms.saturating_mul(factor).min(config.max_recovery_ms);
        self.flaps = self.flaps.saturating_add(1);
        self.state = PairState::Down;
        self.since_ms = now_ms;
        self.healthy_since_ms = None;
        self.last_failure = Some(Failure {
            at_ms: now_ms,
            reason,
            gateway_site,
        });
    }
}

#[cfg(test)]
#[path = "detector_tests.rs"]
mod tests;
