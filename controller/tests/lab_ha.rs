//! A controller set in a real lab: three controllers (`braid up --member N`, each a process
//! of its own) electing their leader through a real three-member etcd cluster, under traffic.
//!
//! The leader is killed (`kill -9`), then its successor is frozen (SIGSTOP) past its lease and
//! woken again, then the next one is cut off from etcd (its namespace loses the route) and
//! reconnected. Each time a standby must lead within 2 s, exactly one controller may call
//! itself the leader afterwards, the woken one must not act (it stands by, and the demuxes
//! refuse anything from its old term), a gateway killed after each takeover must be restarted
//! exactly once (one new process, one restart counted), and flows on the healthy pairs must
//! not lose a datagram across the takeovers. Last, `braid gateway drain|activate --lab` finds
//! the leader among the members, and a drain ordered to one leader is carried on by the next.

mod support;

use std::time::{Duration, Instant};

use braid_lab::controller_set::LabController;
use braid_lab::demo::BenchServer;
use braid_lab::LabInfo;
use support::*;

const TAKEOVER_BUDGET: Duration = Duration::from_secs(2);

/// `(index, term)` of every controller of the set that says it leads, asking each one alive.
fn leaders(info: &LabInfo, alive: &[u16]) -> Vec<(u16, u64)> {
    info.controllers
        .iter()
        .filter(|c| alive.contains(&c.index))
        .filter_map(|c| braid_lab::controller::status(c.metrics).ok())
        .filter_map(|s| s.controllers.iter().find(|m| m.pid.is_some()).cloned())
        .filter(|me| me.leader)
        .map(|me| (me.index, me.term))
        .collect()
}

/// Waits for a controller other than `old` among `alive` to lead; returns it, its term, and
/// how long after `since` that was seen.
fn wait_takeover(info: &LabInfo, old: u16, alive: &[u16], since: Instant) -> (LabController, u64, Duration) {
    loop {
        let now = leaders(info, alive);
        if let Some(&(index, term)) = now.iter().find(|&&(i, _)| i != old) {
            let c = info.controllers[usize::from(index)].clone();
            return (c, term, since.elapsed());
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "no controller took over from {old} within 10 s (leaders seen: {now:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lab as seen through controller `c` (its status, metrics and pid).
fn through(info: &LabInfo, c: &LabController) -> LabInfo {
    let mut view = info.clone();
    view.metrics = c.metrics;
    for p in view
        .processes
        .iter_mut()
        .filter(|p| p.role == "controller" && p.index == c.index)
    {
        p.pid = c.pid;
    }
    view.processes.retain(|p| p.role != "controller" || p.index == c.index);
    view
}

/// braid-gw processes of this lab serving `site``pair`.
fn gateway_processes(info: &LabInfo, site: &str, pair: u16) -> Vec<u32> {
    let wanted = format!("--site\0{site}\0--pair\0{pair}\0");
    let dir = info.state_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("braid-gw") && c.contains(&wanted) && c.contains(&dir)
            })
        })
        .collect()
}

/// Kills gateway `site``pair` and checks that leader `c` restarts it exactly once.
fn gateway_restarted_once_by(info: &LabInfo, c: &LabController, site: &str, pair: u16) {
    let view = through(info, c);
    let s = status(&view);
    let old = gateway(&s, site, pair).pid.expect("the gateway runs");
    let restarts_before = gateway(&s, site, pair).restarts;
    let killed = Instant::now();
    signal(old, libc::SIGKILL);
    let recovery = watch_recovery(&view, site, pair, old, true, killed, Duration::from_secs(10));
    eprintln!(
        "MEASURED gateway {site}{pair} killed under controller {}: {recovery:?}",
        c.index
    );
    assert!(
        recovery.min_pairs_up_metric >= f64::from(info.gateways - 1),
        "only the killed gateway's pair goes down under controller {}: {recovery:?}",
        c.index
    );
    // Give any second restarter time to show itself.
    std::thread::sleep(Duration::from_secs(2));
    let running = gateway_processes(info, site, pair);
    assert_eq!(running.len(), 1, "exactly one {site}{pair} gateway runs: {running:?}");
    assert_eq!(Some(running[0]), recovery.new_pid, "it is the one the leader started");
    let s = status(&view);
    assert_eq!(
        gateway(&s, site, pair).restarts,
        restarts_before + 1,
        "controller {} counts exactly one restart",
        c.index
    );
}

#[test]
fn a_standby_takes_over_within_two_seconds_of_the_leader_dying_freezing_or_losing_etcd_and_the_old_one_cannot_act() {
    if skip_without_lab("lab_ha") {
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up_controllers("ha", 2, 3);
    let info = &lab.info;
    assert_eq!(info.controllers.len(), 3);
    assert_eq!(info.processes.iter().filter(|p| p.role == "controller").count(), 3);
    assert_eq!(info.processes.iter().filter(|p| p.role == "etcd").count(), 3);
    let _server = BenchServer::start(info, &bin_dir()).expect("bench server");
    let mut alive: Vec<u16> = vec![0, 1, 2];

    let first = leaders(info, &alive);
    assert_eq!(first.len(), 1, "exactly one leader once the lab is up: {first:?}");
    let (first_leader, first_term) = first[0];
    eprintln!("controller {first_leader} leads, term {first_term}");

    // 1. kill -9 the leader under UDP load: a standby leads within 2 s, no flow loses anything.
    let load = start_bench(info, UDP_LOAD);
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    signal(info.controllers[usize::from(first_leader)].pid, libc::SIGKILL);
    alive.retain(|&i| i != first_leader);
    let (second, second_term, took) = wait_takeover(info, first_leader, &alive, killed);
    eprintln!(
        "MEASURED kill -9 of leader {first_leader}: controller {} leads after {took:?} (term {second_term})",
        second.index
    );
    assert!(took < TAKEOVER_BUDGET, "takeover after kill -9 took {took:?}");
    assert!(second_term > first_term, "terms grow: {first_term} then {second_term}");
    let run = finish_bench(load);
    assert_udp_lossless(&run, "UDP across the leader's kill -9");
    assert_eq!(
        leaders(info, &alive),
        [(second.index, second_term)],
        "exactly one leader"
    );
    gateway_restarted_once_by(info, &second, "a", 1);

    // 2. Freeze the new leader past its lease: another standby leads within 2 s; woken, the
    //    frozen one stands by and acts on nothing.
    let frozen = Instant::now();
    signal(second.pid, libc::SIGSTOP);
    let remaining: Vec<u16> = alive.iter().copied().filter(|&i| i != second.index).collect();
    let (third, third_term, took) = wait_takeover(info, second.index, &remaining, frozen);
    eprintln!(
        "MEASURED SIGSTOP of leader {}: controller {} leads after {took:?} (term {third_term})",
        second.index, third.index
    );
    assert!(took < TAKEOVER_BUDGET, "takeover after SIGSTOP took {took:?}");
    assert!(third_term > second_term);
    std::thread::sleep(Duration::from_secs(1));
    signal(second.pid, libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        leaders(info, &alive),
        [(third.index, third_term)],
        "exactly one leader after the wake-up"
    );
    let woken = braid_lab::controller::status(second.metrics).expect("the woken controller answers");
    let me = woken
        .controllers
        .iter()
        .find(|m| m.pid.is_some())
        .expect("it describes itself");
    assert!(!me.leader, "the woken controller stands by: {me:?}");
    let log = std::fs::read_to_string(&second.log).unwrap_or_default();
    assert!(log.contains("standing by"), "the woken controller says it stands by");
    assert!(
        log.contains("did not run for"),
        "the woken controller knows it was not watching, and holds that silence against nobody"
    );
    gateway_restarted_once_by(info, &third, "b", 2);

    // 3. Cut the leader off from etcd (its own namespace loses the route; its daemons and its
    //    HTTP stay reachable) under UDP load: a standby leads within 2 s, the cut-off one stops
    //    acting on its own, no flow loses anything, and reconnected it stands by.
    let load = start_bench(info, UDP_LOAD);
    std::thread::sleep(Duration::from_secs(2));
    let cut = Instant::now();
    braid_lab::controller_set::cut_off_from_etcd(&info.name, third.index, true).expect("cut off");
    let others: Vec<u16> = alive.iter().copied().filter(|&i| i != third.index).collect();
    let (fourth, fourth_term, took) = wait_takeover(info, third.index, &others, cut);
    eprintln!(
        "MEASURED leader {} cut off from etcd: controller {} leads after {took:?} (term {fourth_term})",
        third.index, fourth.index
    );
    assert!(took < TAKEOVER_BUDGET, "takeover after the cut took {took:?}");
    assert!(fourth_term > third_term);
    assert_eq!(
        leaders(info, &alive),
        [(fourth.index, fourth_term)],
        "exactly one leader while the old one is cut off (it no longer calls itself leader)"
    );
    let run = finish_bench(load);
    assert_udp_lossless(&run, "UDP across the leader's cut from etcd");
    braid_lab::controller_set::cut_off_from_etcd(&info.name, third.index, false).expect("reconnect");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        leaders(info, &alive),
        [(fourth.index, fourth_term)],
        "exactly one leader once the cut-off one is back"
    );
    gateway_restarted_once_by(info, &fourth, "b", 1);

    // Operator commands find the leader of the set: `--lab` asks the members in turn (the first
    // leader is dead, a standby names the leader), and only the leader drains.
    let gateway_cmd = |verb: &str| {
        let out = std::process::Command::new(bin_dir().join("braid"))
            .args(["gateway", verb, "--pair", "2", "--lab", &info.name])
            .output()
            .expect("run braid gateway");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "braid gateway {verb} --lab: {said}");
        said
    };
    let said = gateway_cmd("drain");
    assert!(said.contains("draining"), "{said}");
    let draining = |s: &braid::status::StatusSnapshot| s.pairs.iter().any(|p| p.index == 2 && p.state == "draining");
    wait_status(&through(info, &fourth), Duration::from_secs(5), |s| {
        draining(s).then_some(())
    });
    // The order outlives the leader that took it: the next leader drains the pair too.
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    signal(fourth.pid, libc::SIGKILL);
    alive.retain(|&i| i != fourth.index);
    let (fifth, _, took) = wait_takeover(info, fourth.index, &alive, killed);
    eprintln!(
        "MEASURED kill -9 of leader {} after a drain: controller {} leads after {took:?}",
        fourth.index, fifth.index
    );
    let view = through(info, &fifth);
    wait_status(&view, Duration::from_secs(5), |s| draining(s).then_some(()));
    let log = std::fs::read_to_string(&fifth.log).unwrap_or_default();
    assert!(
        log.contains("as the operator ordered under an earlier leader"),
        "the new leader says whose order it carries out"
    );
    gateway_cmd("activate");
    wait_status(&view, Duration::from_secs(5), |s| {
        s.pairs.iter().all(|p| p.state == "up").then_some(())
    });

    // Every controller's /metrics agrees: one leader in the set.
    let leading: f64 = alive
        .iter()
        .map(|&i| {
            let c = &info.controllers[usize::from(i)];
            let text = braid_core::status::http_get(c.metrics, "/metrics").expect("/metrics");
            metric(
                &text,
                &format!("braid_controller_leader{{cluster=\"lab-ha\",controller=\"{i}\"}}"),
            )
            .unwrap_or(-1.0)
        })
        .sum();
    assert_eq!(leading, 1.0, "braid_controller_leader sums to one across the set");
}
