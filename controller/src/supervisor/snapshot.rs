//! Builds the [`StatusSnapshot`] readers see from the supervisor's live state.

use braid_core::config::Suite;
use braid_core::control::Heartbeat;

use crate::fleet::spec;
use crate::health::detector::{Liveness, PairState};
use crate::health::membership::AdminState;
use crate::health::Role;
use crate::status::{Alarms, ControllerStatus, DemuxStatus, GatewayStatus, Monitoring, PairStatus, StatusSnapshot};

use super::Supervisor;

/// The suite a gateway runs: the one it reports, if this controller knows it (so only known
/// names reach status and metric labels), else the cluster's.
fn suite_of(hb: Option<&Heartbeat>, configured: Suite) -> &'static str {
    hb.and_then(|h| h.suite.as_deref())
        .and_then(|name| Suite::ALL.into_iter().find(|s| s.as_str() == name))
        .unwrap_or(configured)
        .as_str()
}

fn liveness_label(l: Liveness) -> &'static str {
    match l {
        Liveness::Starting => "starting",
        Liveness::Alive => "up",
        Liveness::Dead => "down",
    }
}

impl Supervisor {
    /// This controller, and the leader it follows if that is another member.
    fn controller_set_status(&self, now: u64) -> Vec<ControllerStatus> {
        let leadership = self.leadership.lock().unwrap_or_else(|e| e.into_inner());
        let leader = leadership.leader(now);
        let me = leadership.me();
        let mut set = vec![ControllerStatus {
            index: me,
            pid: Some(std::process::id()),
            leader: self.acting_term.is_some() && leadership.leading(now) == self.acting_term,
            term: leader.map_or(0, |l| l.term),
            store_reachable: leadership.store_reachable(),
        }];
        if let Some(l) = leader.filter(|l| l.member != me) {
            set.push(ControllerStatus {
                index: l.member,
                pid: None,
                leader: true,
                term: l.term,
                store_reachable: true,
            });
        }
        set
    }

    pub(super) fn publish_snapshot(&mut self) {
        let now = self.now_ms();
        let daemon_status = self.detector.daemons(now);
        let pair_status = self.detector.pairs(now);
        let membership = self.membership.current().clone();
        let suite = self.cfg.cluster.suite;
        let mut s = StatusSnapshot {
            cluster: self.cfg.cluster.name.clone(),
            controller_pid: std::process::id(),
            uptime_ms: now,
            published_unix_ms: braid_core::control::unix_now_ms(),
            epoch: membership.epoch,
            converged: self.membership.converged(),
            controllers: self.controller_set_status(now),
            ..Default::default()
        };
        for d in self.daemons.values() {
            let st = daemon_status.iter().find(|x| x.daemon == d.spec.key);
            let state = st.map(|x| liveness_label(x.liveness)).unwrap_or("down").to_string();
            let last_failure = d.last_failure.map(|f| f.to_string());
            let hb = d.last.as_ref();
            match d.spec.key.role {
                Role::Demux => s.demuxes.push(DemuxStatus {
                    site: d.spec.site.clone(),
                    pid: d.running.as_ref().map(|r| r.pid()).or(hb.map(|h| h.pid)),
                    state,
                    restarts: d.restart.restarts() as u32,
                    membership_epoch: hb.map(|h| h.membership_epoch).unwrap_or(0),
                    heartbeat_age_ms: st.and_then(|x| x.heartbeat_age_ms),
                    last_failure,
                    counters: hb
                        .map(|h| {
                            let names = h
                                .counters
                                .iter()
                                .filter(|(name, _)| crate::metrics::is_counter_name(name));
                            names.map(|(name, n)| (name.clone(), *n)).collect()
                        })
                        .unwrap_or_default(),
                    flow_table_entries: hb.and_then(|h| h.flow_table_entries),
                    flow_table_capacity: hb.and_then(|h| h.flow_table_capacity),
                }),
                Role::Gateway(pair) => s.gateways.push(GatewayStatus {
                    site: d.spec.site.clone(),
                    index: pair,
                    pid: d.running.as_ref().map(|r| r.pid()).or(hb.map(|h| h.pid)),
                    state: if d.retired { "retired".into() } else { state },
                    restarts: d.restart.restarts() as u32,
                    handshake_age_ms: hb.and_then(|h| h.handshake_age_ms),
                    session_established: hb.and_then(|h| h.session_established).unwrap_or(false),
                    suite: suite_of(hb, suite).into(),
                    sa_age_ms: hb.and_then(|h| h.handshake_age_ms),
                    ike_sa_age_ms: hb.and_then(|h| h.ike_sa_age_ms),
                    rekeys: hb.and_then(|h| h.rekeys),
                    ike_rekeys: hb.and_then(|h| h.ike_rekeys),
                    drops_replayed: hb.and_then(|h| h.drops_replayed),
                    drops_too_old: hb.and_then(|h| h.drops_too_old),
                    drops_handshake_limited: hb.and_then(|h| h.drops_handshake_limited),
                    tx_bytes: hb.map(|h| h.tx_bytes).unwrap_or(0),
                    rx_bytes: hb.map(|h| h.rx_bytes).unwrap_or(0),
                    tx_packets: hb.map(|h| h.tx_packets).unwrap_or(0),
                    rx_packets: hb.map(|h| h.rx_packets).unwrap_or(0),
                    drops: hb.map(|h| h.drops).unwrap_or(0),
                    heartbeat_age_ms: st.and_then(|x| x.heartbeat_age_ms),
                    max_heartbeat_gap_ms: st.map(|x| x.max_heartbeat_gap_ms).unwrap_or(0),
                    last_failure,
                }),
            }
        }
        let threshold = self.cfg.controller.canary_rtt_alarm_ms;
        for p in &pair_status {
            let admin = self.membership.admin_state(p.pair);
            let state = match (admin, p.state) {
                (Some(AdminState::Removed) | None, _) => "removed",
                (Some(AdminState::Draining { .. }), _) => "draining",
                (_, PairState::Up) => "up",
                (_, PairState::Down) => "down",
            };
            let mut ps = PairStatus {
                index: p.pair,
                state: state.into(),
                active: membership.active.contains(&p.pair),
                serving: membership.serving.contains(&p.pair),
                canary_rtt_us: p.canary_rtt_us.map(u64::from),
                last_failure: p.last_failure.map(|f| f.reason.to_string()),
                suite: suite.as_str().into(),
                ..Default::default()
            };
            for g in s.gateways.iter().filter(|g| g.index == p.pair) {
                ps.add_gateway(g);
            }
            for d in self.daemons.values().filter(|d| d.spec.key.role == Role::Demux) {
                if let Some(r) = d.last.as_ref().and_then(|h| h.pairs.iter().find(|r| r.id == p.pair)) {
                    ps.pinned_flows += r.pinned_flows;
                    ps.tx_bytes += r.tx_bytes;
                    ps.rx_bytes += r.rx_bytes;
                    ps.tx_packets += r.tx_packets;
                    ps.rx_packets += r.rx_packets;
                    ps.canary_sent += r.canary_sent;
                    ps.canary_lost += r.canary_lost;
                }
            }
            if ps.canary_rtt_us.is_some_and(|rtt| rtt > threshold * 1000) {
                s.alarms.canary_rtt_high.push(p.pair);
            }
            s.pairs.push(ps);
        }
        s.pairs_up = s.pairs.iter().filter(|p| p.state == "up").count();
        s.alarms = Alarms {
            pairs_up_below_one: s.pairs_up < 1,
            canary_rtt_threshold_ms: threshold,
            sites_unreachable: self
                .detector
                .unreachable_sites()
                .map(|site| spec::site_name(&self.cfg, site).to_string())
                .collect(),
            ..s.alarms
        };
        let counters = self.server.counters();
        s.monitoring = Monitoring {
            loop_age_ms: 0,
            heartbeats_received: self.heartbeats,
            rejected: counters
                .set()
                .snapshot()
                .into_iter()
                .filter(|(n, _)| n.starts_with("reject"))
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            never_heard: daemon_status.iter().filter(|d| d.heartbeat_age_ms.is_none()).count(),
            restart_hooks: self.hooks.counts(),
            ..Monitoring::default()
        };
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = s;
    }
}

#[cfg(test)]
mod tests {
    use braid_core::control::DaemonId;

    use super::*;

    #[test]
    fn a_gateway_runs_the_suite_it_reports_if_known_else_the_clusters() {
        let mut hb = Heartbeat::new(DaemonId::gateway("a", 1));
        assert_eq!(suite_of(None, Suite::Ipsec), "ipsec");
        assert_eq!(suite_of(Some(&hb), Suite::Ipsec), "ipsec", "an older gateway");
        hb.suite = Some("wireguard".into());
        assert_eq!(suite_of(Some(&hb), Suite::Ipsec), "wireguard");
        hb.suite = Some("x\"} 1\nforged 2".into());
        assert_eq!(suite_of(Some(&hb), Suite::WireGuard), "wireguard", "never a raw label");
    }
}
