//! Prometheus text exposition of a [`StatusSnapshot`].
//!
//! Tunnel series (SA ages, rekeys, replay drops) carry a `suite` label, `wireguard` or `ipsec`,
//! so one dashboard serves both suites and can still tell them apart.

use std::fmt::Write as _;

use crate::status::{GatewayStatus, StatusSnapshot};

/// Every `braid_alarm` name, each exported whether raised or not ([`StatusSnapshot::alarms_raised`]).
pub const ALARMS: [&str; 4] = [
    "pairs_up_below_one",
    "canary_rtt_high",
    "site_unreachable",
    "monitoring_unhealthy",
];

fn gauge(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders `s` in the Prometheus text format (version 0.0.4).
pub fn render(s: &StatusSnapshot) -> String {
    let mut o = String::new();
    gauge(
        &mut o,
        "braid_pairs_up",
        "Gateway pairs healthy and taking traffic.",
        "gauge",
    );
    let _ = writeln!(o, "braid_pairs_up {}", s.pairs_up);
    gauge(
        &mut o,
        "braid_membership_epoch",
        "Membership epoch last pushed to the demuxes.",
        "gauge",
    );
    let _ = writeln!(o, "braid_membership_epoch {}", s.epoch);
    gauge(
        &mut o,
        "braid_membership_converged",
        "1 when every demux acknowledged the latest epoch.",
        "gauge",
    );
    let _ = writeln!(o, "braid_membership_converged {}", u8::from(s.converged));

    gauge(&mut o, "braid_pair_up", "1 when the pair is healthy.", "gauge");
    for p in &s.pairs {
        let _ = writeln!(
            o,
            "braid_pair_up{{pair=\"{}\",state=\"{}\"}} {}",
            p.index,
            p.state,
            u8::from(p.state == "up")
        );
    }
    gauge(
        &mut o,
        "braid_pair_pinned_flows",
        "Flows pinned to the pair (demux flow tables).",
        "gauge",
    );
    for p in &s.pairs {
        let _ = writeln!(o, "braid_pair_pinned_flows{{pair=\"{}\"}} {}", p.index, p.pinned_flows);
    }
    for (name, help, pick) in [
        (
            "braid_pair_tx_bytes_total",
            "Bytes the demuxes sent into the pair.",
            (|p: &crate::status::PairStatus| p.tx_bytes) as fn(&_) -> u64,
        ),
        (
            "braid_pair_rx_bytes_total",
            "Bytes the demuxes received from the pair.",
            |p| p.rx_bytes,
        ),
        (
            "braid_pair_canary_sent_total",
            "Canary probes sent through the pair.",
            |p| p.canary_sent,
        ),
        (
            "braid_pair_canary_lost_total",
            "Canary probes that did not come back.",
            |p| p.canary_lost,
        ),
    ] {
        gauge(&mut o, name, help, "counter");
        for p in &s.pairs {
            let _ = writeln!(o, "{name}{{pair=\"{}\"}} {}", p.index, pick(p));
        }
    }
    gauge(
        &mut o,
        "braid_pair_canary_rtt_seconds",
        "Last canary round trip through the pair.",
        "gauge",
    );
    for p in &s.pairs {
        if let Some(rtt) = p.canary_rtt_us {
            let _ = writeln!(
                o,
                "braid_pair_canary_rtt_seconds{{pair=\"{}\"}} {:.6}",
                p.index,
                rtt as f64 / 1e6
            );
        }
    }
    pair_tunnels(&mut o, s);

    gauge(
        &mut o,
        "braid_gateway_up",
        "1 when the gateway process is alive and heartbeating.",
        "gauge",
    );
    for g in &s.gateways {
        let _ = writeln!(
            o,
            "braid_gateway_up{{site=\"{}\",pair=\"{}\"}} {}",
            g.site,
            g.index,
            u8::from(g.state == "up")
        );
    }
    gauge(
        &mut o,
        "braid_gateway_restarts_total",
        "Times the controller restarted the gateway.",
        "counter",
    );
    for g in &s.gateways {
        let _ = writeln!(
            o,
            "braid_gateway_restarts_total{{site=\"{}\",pair=\"{}\"}} {}",
            g.site, g.index, g.restarts
        );
    }
    gauge(
        &mut o,
        "braid_gateway_handshake_age_seconds",
        "The gateway's SA age under its older name: braid_gateway_sa_age_seconds.",
        "gauge",
    );
    for g in &s.gateways {
        if let Some(age) = g.handshake_age_ms {
            let _ = writeln!(
                o,
                "braid_gateway_handshake_age_seconds{{site=\"{}\",pair=\"{}\"}} {:.3}",
                g.site,
                g.index,
                age as f64 / 1e3
            );
        }
    }
    for (name, help, pick) in [
        (
            "braid_gateway_tx_bytes_total",
            "Bytes the gateway sent (LAN and WAN).",
            (|g: &crate::status::GatewayStatus| g.tx_bytes) as fn(&_) -> u64,
        ),
        (
            "braid_gateway_rx_bytes_total",
            "Bytes the gateway received (LAN and WAN).",
            |g| g.rx_bytes,
        ),
        (
            "braid_gateway_drops_total",
            "Packets the gateway dropped, all reasons.",
            |g| g.drops,
        ),
    ] {
        gauge(&mut o, name, help, "counter");
        for g in &s.gateways {
            let _ = writeln!(o, "{name}{{site=\"{}\",pair=\"{}\"}} {}", g.site, g.index, pick(g));
        }
    }

    gateway_tunnels(&mut o, s);
    demux_counters(&mut o, s);

    gauge(&mut o, "braid_alarm", "1 when the alarm fires.", "gauge");
    let raised = s.alarms_raised();
    for name in ALARMS {
        let _ = writeln!(o, "braid_alarm{{name=\"{name}\"}} {}", u8::from(raised.contains(&name)));
    }

    controller_set(&mut o, s);

    gauge(
        &mut o,
        "braid_monitoring_loop_age_seconds",
        "Seconds since the controller's loop last ran.",
        "gauge",
    );
    let _ = writeln!(
        o,
        "braid_monitoring_loop_age_seconds {:.3}",
        s.monitoring.loop_age_ms as f64 / 1e3
    );
    gauge(
        &mut o,
        "braid_monitoring_heartbeats_total",
        "Authenticated heartbeats received.",
        "counter",
    );
    let _ = writeln!(
        o,
        "braid_monitoring_heartbeats_total {}",
        s.monitoring.heartbeats_received
    );
    gauge(
        &mut o,
        "braid_monitoring_rejected_total",
        "Control messages rejected, by reason.",
        "counter",
    );
    for (reason, n) in &s.monitoring.rejected {
        let _ = writeln!(o, "braid_monitoring_rejected_total{{reason=\"{reason}\"}} {n}");
    }
    restart_hooks(&mut o, s);
    gauge(
        &mut o,
        "braid_admin_refused_total",
        "Administration requests refused (unauthorised peer, bad signature, stale, replayed, malformed, overload), by reason.",
        "counter",
    );
    for (reason, n) in &s.monitoring.admin_refused {
        let _ = writeln!(o, "braid_admin_refused_total{{reason=\"{reason}\"}} {n}");
    }
    gauge(
        &mut o,
        "braid_http_refused_total",
        "HTTP connections closed unanswered (too many at once) or cut off (slow or oversized request head), by reason.",
        "counter",
    );
    for (reason, n) in &s.monitoring.http_refused {
        let _ = writeln!(o, "braid_http_refused_total{{reason=\"{reason}\"}} {n}");
    }
    o
}

/// The operator's restart hooks, by outcome, and how many run now.
fn restart_hooks(o: &mut String, s: &StatusSnapshot) {
    let h = &s.monitoring.restart_hooks;
    gauge(
        o,
        "braid_restart_hooks_total",
        "Restart hooks for daemons on other hosts, by outcome (started; succeeded, failed, timed_out once reaped; skipped while the daemon's previous hook ran).",
        "counter",
    );
    for (outcome, n) in [
        ("started", h.started),
        ("succeeded", h.succeeded),
        ("failed", h.failed),
        ("timed_out", h.timed_out),
        ("skipped", h.skipped),
    ] {
        let _ = writeln!(o, "braid_restart_hooks_total{{outcome=\"{outcome}\"}} {n}");
    }
    gauge(o, "braid_restart_hooks_running", "Restart hooks running now.", "gauge");
    let _ = writeln!(o, "braid_restart_hooks_running {}", h.running);
}

/// Each demux's counters: drops by reason, and every other counter (traffic, half-open TCP
/// flows, fragment-cache hits, misses and evictions, flows left unpinned because the flow table
/// was full) by event name; and its flow table's fill.
/// Whether a counter name a daemon reports can stand in a label value as it is: 1 to 64
/// characters of `a-z`, `0-9` and `_`, as every braid counter is. Anything else (a daemon's
/// key can sign any name) is left out, so no report can break the exposition format or forge
/// another series.
pub fn is_counter_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn demux_counters(o: &mut String, s: &StatusSnapshot) {
    gauge(
        o,
        "braid_demux_drops_total",
        "Packets the demux dropped, by reason.",
        "counter",
    );
    for d in &s.demuxes {
        for (name, n) in d.counters.iter().filter(|(name, _)| is_counter_name(name)) {
            if let Some(reason) = name.strip_prefix("drop_") {
                let _ = writeln!(
                    o,
                    "braid_demux_drops_total{{site=\"{}\",reason=\"{reason}\"}} {n}",
                    d.site
                );
            }
        }
    }
    gauge(
        o,
        "braid_demux_events_total",
        "Demux counters other than drops, by name: traffic, half-open TCP flows created, promoted, \
         expired and evicted, fragment-cache hits, misses and evictions.",
        "counter",
    );
    for d in &s.demuxes {
        for (name, n) in d
            .counters
            .iter()
            .filter(|(name, _)| is_counter_name(name) && !name.starts_with("drop_"))
        {
            let _ = writeln!(
                o,
                "braid_demux_events_total{{site=\"{}\",event=\"{name}\"}} {n}",
                d.site
            );
        }
    }
    for (name, help, pick) in [
        (
            "braid_demux_flow_table_entries",
            "Flow-table slots in use (live flows and expired ones not yet swept), over the demux's data threads.",
            (|d: &crate::status::DemuxStatus| d.flow_table_entries) as fn(&_) -> Option<u64>,
        ),
        (
            "braid_demux_flow_table_capacity",
            "The flows the demux's flow tables are sized for; beyond it new flows start to go unpinned \
             (braid_demux_events_total{event=\"flows_unpinned_table_full\"}).",
            |d| d.flow_table_capacity,
        ),
    ] {
        gauge(o, name, help, "gauge");
        for d in &s.demuxes {
            if let Some(n) = pick(d) {
                let _ = writeln!(o, "{name}{{site=\"{}\"}} {n}", d.site);
            }
        }
    }
}

/// Each pair's suite, and the age of the older of its gateways' SAs.
fn pair_tunnels(o: &mut String, s: &StatusSnapshot) {
    gauge(o, "braid_pair_info", "The pair's tunnel suite; always 1.", "gauge");
    for p in &s.pairs {
        let _ = writeln!(o, "braid_pair_info{{pair=\"{}\",suite=\"{}\"}} 1", p.index, p.suite);
    }
    gauge(
        o,
        "braid_pair_sa_age_seconds",
        "Age of the older of the keys the pair's two gateways send with.",
        "gauge",
    );
    for p in &s.pairs {
        if let Some(age) = p.sa_age_ms {
            let _ = writeln!(
                o,
                "braid_pair_sa_age_seconds{{pair=\"{}\",suite=\"{}\"}} {:.3}",
                p.index,
                p.suite,
                age as f64 / 1e3
            );
        }
    }
}

/// The labels of a gateway's tunnel series.
fn tunnel_labels(g: &GatewayStatus) -> String {
    format!("site=\"{}\",pair=\"{}\",suite=\"{}\"", g.site, g.index, g.suite)
}

/// Each gateway's SA ages, rekeys and replay drops, for the figures it reports.
fn gateway_tunnels(o: &mut String, s: &StatusSnapshot) {
    for (name, help, pick) in [
        (
            "braid_gateway_sa_age_seconds",
            "Age of the keys the gateway sends with: since the last WireGuard handshake, or since \
             the IPsec CHILD SA was installed or rekeyed.",
            (|g: &GatewayStatus| g.sa_age_ms) as fn(&_) -> Option<u64>,
        ),
        (
            "braid_gateway_ike_sa_age_seconds",
            "Age of the gateway's IPsec IKE SA, since it was established or rekeyed.",
            |g| g.ike_sa_age_ms,
        ),
    ] {
        gauge(o, name, help, "gauge");
        for g in &s.gateways {
            if let Some(age) = pick(g) {
                let _ = writeln!(o, "{name}{{{}}} {:.3}", tunnel_labels(g), age as f64 / 1e3);
            }
        }
    }
    for (name, help, label, picks) in [
        (
            "braid_gateway_rekeys_total",
            "Rekeys since the gateway started: sa=data the keys traffic is sent with (WireGuard \
             session, IPsec CHILD SA), sa=ike the IPsec IKE SA.",
            "sa",
            [
                ("data", (|g: &GatewayStatus| g.rekeys) as fn(&_) -> Option<u64>),
                ("ike", |g| g.ike_rekeys),
            ],
        ),
        (
            "braid_gateway_replay_drops_total",
            "Packets from the peer refused by the anti-replay check: reason=replayed a counter \
             already seen, reason=too_old a counter older than the window.",
            "reason",
            [("replayed", |g| g.drops_replayed), ("too_old", |g| g.drops_too_old)],
        ),
    ] {
        gauge(o, name, help, "counter");
        for g in &s.gateways {
            for (value, pick) in picks {
                if let Some(n) = pick(g) {
                    let _ = writeln!(o, "{name}{{{},{label}=\"{value}\"}} {n}", tunnel_labels(g));
                }
            }
        }
    }
    let name = "braid_gateway_handshake_limit_drops_total";
    gauge(
        o,
        name,
        "Handshakes the gateway refused in its per-source and global handshake rate limits, \
         before the tunnel protocol saw them.",
        "counter",
    );
    for g in &s.gateways {
        if let Some(n) = g.drops_handshake_limited {
            let _ = writeln!(o, "{name}{{{}}} {n}", tunnel_labels(g));
        }
    }
}

/// This controller's place in the controller set: whether it leads, under which term, and
/// whether etcd answers it. Summed over every member's scrape, `braid_controller_leader` is 1
/// in a healthy set (0: leaderless; 2: a split the fencing must contain).
fn controller_set(o: &mut String, s: &StatusSnapshot) {
    let Some(me) = s.controllers.iter().find(|c| c.pid.is_some()) else {
        return;
    };
    let labels = format!("cluster=\"{}\",controller=\"{}\"", s.cluster, me.index);
    for (name, help, value) in [
        (
            "braid_controller_leader",
            "1 while this controller leads its controller set (acts), 0 while it stands by.",
            u64::from(me.leader),
        ),
        (
            "braid_controller_term",
            "The leadership term this controller leads or follows (0 without etcd).",
            me.term,
        ),
        (
            "braid_controller_store_up",
            "1 when this controller's last exchange with etcd succeeded (always 1 without etcd).",
            u64::from(me.store_reachable),
        ),
    ] {
        gauge(o, name, help, "gauge");
        let _ = writeln!(o, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{PairStatus, StatusSnapshot};

    #[test]
    fn renders_pairs_and_alarms() {
        let s = StatusSnapshot {
            pairs_up: 0,
            pairs: vec![PairStatus {
                index: 2,
                state: "down".into(),
                canary_rtt_us: Some(1500),
                ..Default::default()
            }],
            alarms: crate::status::Alarms {
                pairs_up_below_one: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let text = render(&s);
        assert!(text.contains("braid_pairs_up 0\n"));
        assert!(text.contains("braid_pair_up{pair=\"2\",state=\"down\"} 0\n"));
        assert!(text.contains("braid_pair_canary_rtt_seconds{pair=\"2\"} 0.001500\n"));
        assert!(text.contains("braid_alarm{name=\"pairs_up_below_one\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }

    #[test]
    fn renders_restart_hook_outcomes() {
        let mut s = StatusSnapshot::default();
        s.monitoring.restart_hooks = crate::status::HookCounts {
            started: 4,
            succeeded: 1,
            failed: 1,
            timed_out: 1,
            skipped: 2,
            running: 1,
        };
        let text = render(&s);
        for line in [
            "# TYPE braid_restart_hooks_total counter",
            "braid_restart_hooks_total{outcome=\"started\"} 4",
            "braid_restart_hooks_total{outcome=\"succeeded\"} 1",
            "braid_restart_hooks_total{outcome=\"failed\"} 1",
            "braid_restart_hooks_total{outcome=\"timed_out\"} 1",
            "braid_restart_hooks_total{outcome=\"skipped\"} 2",
            "braid_restart_hooks_running 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn renders_demux_drops_by_reason_and_other_counters_by_event() {
        let s = StatusSnapshot {
            demuxes: vec![crate::status::DemuxStatus {
                site: "a".into(),
                counters: [
                    ("drop_src_not_peer_site", 3),
                    ("tcp_half_open_evicted", 7),
                    ("drop_x\"} 1\nbraid_pairs_up 9\n#", 1),
                    ("event\"} 1\nbraid_pairs_up{a=\"", 1),
                    ("Drop_Upper", 1),
                ]
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
                flow_table_entries: Some(950),
                flow_table_capacity: Some(1000),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&s);
        for line in [
            "braid_demux_drops_total{site=\"a\",reason=\"src_not_peer_site\"} 3",
            "braid_demux_events_total{site=\"a\",event=\"tcp_half_open_evicted\"} 7",
            "# TYPE braid_demux_drops_total counter",
            "braid_demux_flow_table_entries{site=\"a\"} 950",
            "braid_demux_flow_table_capacity{site=\"a\"} 1000",
            "# TYPE braid_demux_flow_table_capacity gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Names no braid counter has are left out: nothing forged, nothing broken.
        assert!(!text.contains("braid_pairs_up 9") && !text.contains("Upper"), "{text}");
        assert_eq!(text.matches("braid_demux_drops_total{").count(), 1, "{text}");
    }

    #[test]
    fn renders_suites_sa_ages_rekeys_and_replay_drops() {
        let text = render(&crate::status::tests::sample());
        for line in [
            "braid_pair_info{pair=\"1\",suite=\"ipsec\"} 1",
            "braid_pair_info{pair=\"2\",suite=\"wireguard\"} 1",
            "braid_pair_sa_age_seconds{pair=\"1\",suite=\"ipsec\"} 42.400",
            "braid_gateway_sa_age_seconds{site=\"a\",pair=\"1\",suite=\"ipsec\"} 42.400",
            "braid_gateway_ike_sa_age_seconds{site=\"b\",pair=\"1\",suite=\"ipsec\"} 3000.000",
            "braid_gateway_rekeys_total{site=\"a\",pair=\"1\",suite=\"ipsec\",sa=\"data\"} 3",
            "braid_gateway_rekeys_total{site=\"a\",pair=\"1\",suite=\"ipsec\",sa=\"ike\"} 1",
            "braid_gateway_replay_drops_total{site=\"a\",pair=\"1\",suite=\"ipsec\",reason=\"replayed\"} 5",
            "braid_gateway_replay_drops_total{site=\"b\",pair=\"1\",suite=\"ipsec\",reason=\"too_old\"} 2",
            "braid_gateway_handshake_age_seconds{site=\"a\",pair=\"2\"} 7.000",
            "# TYPE braid_gateway_rekeys_total counter",
            "# TYPE braid_gateway_replay_drops_total counter",
            "braid_gateway_handshake_limit_drops_total{site=\"a\",pair=\"1\",suite=\"ipsec\"} 500",
            "# TYPE braid_gateway_handshake_limit_drops_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // A gateway that does not report a figure has no series for it, rather than a zero.
        let a2 = |l: &&str| l.contains("site=\"a\",pair=\"2\"");
        let reported: Vec<_> = text.lines().filter(a2).filter(|l| l.contains("suite=")).collect();
        assert!(reported.is_empty(), "{reported:?}");
        // Every family has one HELP and one TYPE, before its samples.
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(seen.insert(line.split(' ').nth(2).unwrap()), "{line} twice");
        }
    }
}
