//! Restart policy: when to restart a daemon whose process exited.
//!
//! Design. Capped exponential backoff per daemon: the first restart after a stable run waits
//! `initial_ms`, each further consecutive one twice as long, up to `max_ms`. A run of at least
//! `stable_ms` forgives the earlier failures. The tracker only computes times; the supervisor
//! sleeps, spawns (or calls the restart hook) and reports back with
//! [`RestartTracker::on_started`].

/// Backoff rules, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct RestartPolicy {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub stable_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_ms: 100,
            max_ms: 10_000,
            stable_ms: 60_000,
        }
    }
}

/// Where a daemon is in its run / wait cycle.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RunState {
    /// Never started.
    Idle,
    Running {
        since_ms: u64,
    },
    /// Exited; due to be restarted at `restart_at_ms`.
    Waiting {
        restart_at_ms: u64,
    },
}

/// The restart history of one daemon.
#[derive(Clone, Debug)]
pub struct RestartTracker {
    policy: RestartPolicy,
    state: RunState,
    /// Exits since the last stable run; sets the next delay.
    consecutive_exits: u32,
    /// Restarts over the tracker's lifetime, for status.
    restarts: u64,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            policy,
            state: RunState::Idle,
            consecutive_exits: 0,
            restarts: 0,
        }
    }

    /// The process exited (or was killed) at `now_ms`: returns when to start it again.
    pub fn on_exit(&mut self, now_ms: u64) -> u64 {
        if let RunState::Waiting { restart_at_ms } = self.state {
            return restart_at_ms;
        }
        if let RunState::Running { since_ms } = self.state {
            if now_ms.saturating_sub(since_ms) >= self.policy.stable_ms {
                self.consecutive_exits = 0;
            }
        }
        let factor = 1u64 << self.consecutive_exits.min(32);
        let delay = self.policy.initial_ms.saturating_mul(factor).min(self.policy.max_ms);
        self.consecutive_exits = self.consecutive_exits.saturating_add(1);
        let restart_at_ms = now_ms.saturating_add(delay);
        self.state = RunState::Waiting { restart_at_ms };
        restart_at_ms
    }

    /// The process (re)started at `now_ms`. A start after an exit counts as a restart.
    pub fn on_started(&mut self, now_ms: u64) {
        if matches!(self.state, RunState::Waiting { .. }) {
            self.restarts += 1;
        }
        self.state = RunState::Running { since_ms: now_ms };
    }

    /// The daemon is due to be started at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        matches!(self.state, RunState::Waiting { restart_at_ms } if now_ms >= restart_at_ms)
    }

    pub fn state(&self) -> RunState {
        self.state
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Exits since the last stable run.
    pub fn consecutive_exits(&self) -> u32 {
        self.consecutive_exits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Crashes `n` times, each `run_ms` after its start; returns the delays waited.
    fn crash_loop(t: &mut RestartTracker, now: &mut u64, n: usize, run_ms: u64) -> Vec<u64> {
        (0..n)
            .map(|_| {
                *now += run_ms;
                let at = t.on_exit(*now);
                let delay = at - *now;
                assert!(!t.due(at - 1) && t.due(at));
                *now = at;
                t.on_started(at);
                delay
            })
            .collect()
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut t = RestartTracker::new(RestartPolicy::default());
        t.on_started(0);
        let mut now = 0;
        let delays = crash_loop(&mut t, &mut now, 9, 50);
        assert_eq!(delays, [100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000]);
        assert_eq!(t.restarts(), 9);
        assert_eq!(t.consecutive_exits(), 9);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut t = RestartTracker::new(RestartPolicy::default());
        t.on_started(0);
        let mut now = 0;
        crash_loop(&mut t, &mut now, 4, 1_000);
        assert_eq!(crash_loop(&mut t, &mut now, 1, 59_999), [1_600], "just short of stable");
        assert_eq!(crash_loop(&mut t, &mut now, 2, 60_000), [100, 100]);
        assert_eq!(t.restarts(), 7);
    }

    #[test]
    fn repeated_exit_reports_keep_the_first_schedule() {
        let mut t = RestartTracker::new(RestartPolicy::default());
        assert_eq!(t.state(), RunState::Idle);
        t.on_started(1_000);
        assert_eq!(t.on_exit(1_500), 1_600);
        assert_eq!(t.on_exit(1_550), 1_600);
        assert_eq!(t.consecutive_exits(), 1);
        t.on_started(1_600);
        assert_eq!(t.state(), RunState::Running { since_ms: 1_600 });
    }
}
