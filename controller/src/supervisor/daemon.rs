//! One daemon as the supervisor tracks it: how to launch it, its process, its restarts, what
//! it last reported.

use std::collections::BTreeMap;

use braid_core::control::{Heartbeat, PairReport};
use braid_core::flow::PairId;

use crate::fleet::process::Running;
use crate::fleet::spec::DaemonSpec;
use crate::health::restart::{RestartPolicy, RestartTracker};
use crate::health::FailureReason;

#[derive(Debug)]
pub struct Daemon {
    pub spec: DaemonSpec,
    /// Started and restarted by this controller (else: on another host, restarted by a hook).
    pub local: bool,
    pub running: Option<Running>,
    pub restart: RestartTracker,
    /// The sender incarnation of its latest heartbeat (a new one means it restarted).
    pub incarnation: u64,
    pub last: Option<Heartbeat>,
    pub last_failure: Option<FailureReason>,
    /// Its pair left the cluster: never restarted.
    pub retired: bool,
    /// Canary totals (answered, lost) per pair at the previous heartbeat (demuxes).
    canary_seen: BTreeMap<PairId, (u64, u64)>,
}

impl Daemon {
    pub fn new(spec: DaemonSpec, local: bool) -> Daemon {
        Daemon {
            spec,
            local,
            running: None,
            restart: RestartTracker::new(RestartPolicy::default()),
            incarnation: 0,
            last: None,
            last_failure: None,
            retired: false,
            canary_seen: BTreeMap::new(),
        }
    }

    /// Canary probes answered and lost on `report`'s pair since the previous heartbeat.
    pub fn canary_progress(&mut self, report: &PairReport) -> (u64, u64) {
        let now = (report.canary_answered, report.canary_lost);
        let (answered, lost) = self.canary_seen.insert(report.id, now).unwrap_or((0, 0));
        if now.0 < answered || now.1 < lost {
            return (0, 0); // the demux restarted: its totals began again
        }
        (now.0 - answered, now.1 - lost)
    }
}
