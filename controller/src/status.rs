//! `braid status` as a table; the document itself is [`braid_core::status`], shared with
//! everything that reads `/status` (the lab, the bench).

pub use braid_core::status::*;

/// `braid status` as a table an operator reads at a glance.
pub fn render_table(s: &StatusSnapshot) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "cluster {}  controller pid {}  up {:.0} s  pairs up {}/{}  epoch {} ({})",
        s.cluster,
        s.controller_pid,
        s.uptime_ms as f64 / 1e3,
        s.pairs_up,
        s.pairs.len(),
        s.epoch,
        if s.converged { "acknowledged" } else { "pending" }
    );
    if let Some(me) = s.controllers.iter().find(|c| c.pid.is_some()) {
        let leader = s.controllers.iter().find(|c| c.leader);
        let _ = writeln!(
            o,
            "controller member {}: {}{}",
            me.index,
            match leader {
                Some(l) if l.index == me.index => format!("leader, term {}", l.term),
                Some(l) => format!("standing by, member {} leads (term {})", l.index, l.term),
                None => "standing by, no leader known".to_string(),
            },
            if me.store_reachable { "" } else { "; etcd unreachable" }
        );
    }
    let _ = writeln!(
        o,
        "\nPAIR  STATE     NEW  SUITE      FLOWS    TX MB     RX MB   CANARY RTT  LOST  SA AGE   REKEYS        \
         REPLAYED/OLD  LAST FAILURE"
    );
    for p in &s.pairs {
        let rtt = p
            .canary_rtt_us
            .map(|r| format!("{:.2} ms", r as f64 / 1e3))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "{:<5} {:<9} {:<4} {:<10} {:<8} {:>8.1} {:>9.1} {:>11} {:>5}  {:<8} {:<13} {:<13} {}",
            p.index,
            p.state,
            if p.active { "yes" } else { "no" },
            dash_if_empty(&p.suite),
            p.pinned_flows,
            p.tx_bytes as f64 / 1e6,
            p.rx_bytes as f64 / 1e6,
            rtt,
            p.canary_lost,
            age(p.sa_age_ms),
            rekeys(p.rekeys, p.ike_rekeys),
            replay_drops(Some(p.drops_replayed), Some(p.drops_too_old)),
            p.last_failure.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(
        o,
        "\nGATEWAY  STATE     PID      RESTARTS  SA AGE   IKE AGE  REKEYS           TX MB     RX MB   DROPS  \
         REPLAYED/OLD  LAST FAILURE"
    );
    for g in &s.gateways {
        let _ = writeln!(
            o,
            "{:<8} {:<9} {:<8} {:<9} {:<8} {:<8} {:<13} {:>8.1} {:>9.1} {:>7}  {:<13} {}",
            format!("{}{}", g.site, g.index),
            g.state,
            g.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            g.restarts,
            // An older controller sends the SA age only under its older name.
            age(g.sa_age_ms.or(g.handshake_age_ms)),
            age(g.ike_sa_age_ms),
            rekeys(g.rekeys, g.ike_rekeys),
            g.tx_bytes as f64 / 1e6,
            g.rx_bytes as f64 / 1e6,
            g.drops,
            replay_drops(g.drops_replayed, g.drops_too_old),
            g.last_failure.as_deref().unwrap_or("-")
        );
    }
    for d in &s.demuxes {
        let flows = match (d.flow_table_entries, d.flow_table_capacity) {
            (Some(n), Some(cap)) => format!("  flow table {n}/{cap}"),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "demux {:<3} {:<9} pid {:<8} restarts {}  epoch {}{flows}",
            d.site,
            d.state,
            d.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            d.restarts,
            d.membership_epoch
        );
    }
    let mut alarms = Vec::new();
    if s.alarms.pairs_up_below_one {
        alarms.push("no pair up".to_string());
    }
    if !s.alarms.sites_unreachable.is_empty() {
        alarms.push(format!(
            "site(s) {} unreachable from the controller (pairs kept while canaries cross them)",
            s.alarms.sites_unreachable.join(", ")
        ));
    }
    if !s.alarms.canary_rtt_high.is_empty() {
        alarms.push(format!(
            "canary RTT over {} ms on pairs {:?}",
            s.alarms.canary_rtt_threshold_ms, s.alarms.canary_rtt_high
        ));
    }
    if s.monitoring.unhealthy() {
        alarms.push(format!(
            "monitoring unhealthy (status {:.1} s old, {} daemon(s) never heard from)",
            s.monitoring.loop_age_ms as f64 / 1e3,
            s.monitoring.never_heard
        ));
    }
    let _ = writeln!(
        o,
        "\nalarms: {}",
        if alarms.is_empty() {
            "none".into()
        } else {
            alarms.join("; ")
        }
    );
    o
}

/// An age in whole seconds, `-` when there is none.
fn age(ms: Option<u64>) -> String {
    ms.map(|a| format!("{:.0} s", a as f64 / 1e3))
        .unwrap_or_else(|| "-".into())
}

/// `3`, or with IPsec IKE SA rekeys `3 (ike 1)`; `-` when unknown.
fn rekeys(data: Option<u64>, ike: Option<u64>) -> String {
    match (data, ike) {
        (None, _) => "-".into(),
        (Some(data), None) => data.to_string(),
        (Some(data), Some(ike)) => format!("{data} (ike {ike})"),
    }
}

/// `replayed/too old`, `-` when unknown.
fn replay_drops(replayed: Option<u64>, too_old: Option<u64>) -> String {
    match (replayed, too_old) {
        (Some(replayed), Some(too_old)) => format!("{replayed}/{too_old}"),
        _ => "-".into(),
    }
}

fn dash_if_empty(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn gateway(site: &str, sa_age_ms: u64, rekeys: u64, replayed: u64, too_old: u64) -> GatewayStatus {
        GatewayStatus {
            site: site.into(),
            index: 1,
            state: "up".into(),
            suite: "ipsec".into(),
            handshake_age_ms: Some(sa_age_ms),
            sa_age_ms: Some(sa_age_ms),
            ike_sa_age_ms: Some(3_000_000),
            rekeys: Some(rekeys),
            ike_rekeys: Some(1),
            drops_replayed: Some(replayed),
            drops_too_old: Some(too_old),
            drops_handshake_limited: Some(replayed * 100),
            ..Default::default()
        }
    }

    /// An ipsec pair of two gateways, and a wireguard pair whose gateway is too old to report
    /// tunnel figures.
    pub(crate) fn sample() -> StatusSnapshot {
        let gateways = vec![
            gateway("a", 42_400, 3, 5, 1),
            gateway("b", 40_000, 2, 0, 2),
            GatewayStatus {
                site: "a".into(),
                index: 2,
                state: "up".into(),
                suite: "wireguard".into(),
                handshake_age_ms: Some(7_000),
                ..Default::default()
            },
        ];
        let mut pairs = vec![
            PairStatus {
                index: 1,
                state: "up".into(),
                active: true,
                ..Default::default()
            },
            PairStatus {
                index: 2,
                state: "down".into(),
                ..Default::default()
            },
        ];
        for g in &gateways {
            pairs[usize::from(g.index) - 1].add_gateway(g);
        }
        StatusSnapshot {
            cluster: "c".into(),
            pairs_up: 1,
            gateways,
            pairs,
            ..Default::default()
        }
    }

    #[test]
    fn a_pair_shows_its_suite_older_sa_higher_rekeys_and_all_replay_drops() {
        let s = sample();
        let p = &s.pairs[0];
        assert_eq!(p.suite, "ipsec");
        assert_eq!((p.sa_age_ms, p.rekeys, p.ike_rekeys), (Some(42_400), Some(3), Some(1)));
        assert_eq!((p.drops_replayed, p.drops_too_old), (5, 3));
        let old = &s.pairs[1];
        assert_eq!(old.suite, "wireguard");
        assert_eq!((old.sa_age_ms, old.rekeys, old.drops_replayed), (None, None, 0));
    }

    #[test]
    fn the_table_shows_suite_sa_age_rekeys_and_replay_drops() {
        let text = render_table(&sample());
        let line = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(line("PAIR").contains("SUITE"), "{text}");
        assert!(line("PAIR").contains("SA AGE REKEYS REPLAYED/OLD"), "{text}");
        assert!(line("GATEWAY").contains("SA AGE IKE AGE REKEYS"), "{text}");
        assert_eq!(line("1 "), "1 up yes ipsec 0 0.0 0.0 - 0 42 s 3 (ike 1) 5/3 -");
        assert_eq!(line("2 "), "2 down no wireguard 0 0.0 0.0 - 0 - - 0/0 -");
        assert_eq!(line("a1 "), "a1 up - 0 42 s 3000 s 3 (ike 1) 0.0 0.0 0 5/1 -");
        assert_eq!(line("b1 "), "b1 up - 0 40 s 3000 s 2 (ike 1) 0.0 0.0 0 0/2 -");
        // A gateway that does not report the new figures: its SA age under the older name.
        assert_eq!(line("a2 "), "a2 up - 0 7 s - - 0.0 0.0 0 - -");
    }

    /// A document from a controller that knew none of the tunnel figures still reads.
    #[test]
    fn an_older_status_document_parses() {
        let old = r#"{"cluster":"c","controller_pid":1,"uptime_ms":5,"published_unix_ms":6,"epoch":1,
            "converged":true,"pairs_up":0,"gateways":[{"site":"a","index":1,"pid":null,"state":"up",
            "restarts":0,"handshake_age_ms":1000,"session_established":true,"tx_bytes":0,
            "rx_bytes":0,"tx_packets":0,"rx_packets":0,"drops":0,"heartbeat_age_ms":null,
            "max_heartbeat_gap_ms":0,"last_failure":null}],"demuxes":[],"pairs":[{"index":1,
            "state":"up","active":true,"serving":true,"pinned_flows":0,"tx_bytes":0,"rx_bytes":0,
            "tx_packets":0,"rx_packets":0,"canary_rtt_us":null,"canary_sent":0,"canary_lost":0,
            "last_failure":null}],"alarms":{"pairs_up_below_one":false,"canary_rtt_high":[],
            "canary_rtt_threshold_ms":50},"monitoring":{"loop_age_ms":0,"heartbeats_received":0,
            "rejected":[],"never_heard":0}}"#;
        let s: StatusSnapshot = serde_json::from_str(old).unwrap();
        assert_eq!((s.gateways[0].suite.as_str(), s.gateways[0].rekeys), ("", None));
        assert!(render_table(&s)
            .lines()
            .any(|l| l.starts_with("a1 ") && l.contains("1 s")));
    }

    #[test]
    fn json_carries_the_tunnel_figures() {
        let json = serde_json::to_value(sample()).unwrap();
        let g = &json["gateways"][0];
        assert_eq!(
            (&g["suite"], &g["sa_age_ms"], &g["rekeys"]),
            (&"ipsec".into(), &42_400.into(), &3.into())
        );
        assert_eq!((&g["drops_replayed"], &g["drops_too_old"]), (&5.into(), &1.into()));
        let p = &json["pairs"][0];
        assert_eq!(
            (&p["suite"], &p["sa_age_ms"], &p["ike_rekeys"]),
            (&"ipsec".into(), &42_400.into(), &1.into())
        );
    }
}
