//! The data plane outlives its controller: `kill -9` of the controller while sequence-numbered
//! UDP flows and paced, verified TCP streams run loses nothing and stops no daemon; a new controller adopts every running
//! daemon (same pids, no restart) and reports every pair up.

mod support;

use std::time::{Duration, Instant};

use braid::demo::BenchServer;
use support::*;

const LAB: &str = "ctl-kill";

#[test]
fn traffic_survives_a_killed_controller_and_a_new_one_adopts_the_fleet() {
    traffic_survives_a_killed_controller_and_a_new_one_adopts_the_fleet_with(Suite::WireGuard);
}

#[test]
fn ipsec_traffic_survives_a_killed_controller_and_a_new_one_adopts_the_fleet() {
    traffic_survives_a_killed_controller_and_a_new_one_adopts_the_fleet_with(Suite::Ipsec);
}

fn traffic_survives_a_killed_controller_and_a_new_one_adopts_the_fleet_with(suite: Suite) {
    if skip_without_lab("lab_controller") {
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up_with(&lab_name(LAB, suite), 3, suite);
    let info = &lab.info;
    let _server = BenchServer::start(info, &bin_dir()).expect("bench server");
    let fleet = |s: &braid::status::StatusSnapshot| {
        let mut pids: Vec<(String, u16, Option<u32>, u32)> = s
            .gateways
            .iter()
            .map(|g| (g.site.clone(), g.index, g.pid, g.restarts))
            .chain(
                s.demuxes
                    .iter()
                    .map(|d| (format!("demux {}", d.site), 0, d.pid, d.restarts)),
            )
            .collect();
        pids.sort();
        pids
    };
    let before = fleet(&status(info));
    assert_eq!(before.len(), 8, "three pairs and two demuxes: {before:?}");
    assert!(
        before
            .iter()
            .all(|(_, _, pid, restarts)| pid.is_some() && *restarts == 0),
        "{before:?}"
    );

    let load = start_bench(info, UDP_LOAD);
    let tcp = start_bench(info, TCP_PACED_LOAD);
    std::thread::sleep(Duration::from_secs(2));
    let old_controller = controller_pid(info);
    signal(old_controller, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while process_alive(old_controller) {
        assert!(Instant::now() < deadline, "the controller did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(2));
    for (name, index, pid, _) in &before {
        let pid = pid.expect("pid");
        assert!(process_alive(pid), "{name}{index} (pid {pid}) outlived the controller");
    }

    let started = Instant::now();
    let new_controller = braid::lab::restart_controller(&lab.info.name, &bin_dir(), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("restart the controller: {e:#}"));
    let answered = started.elapsed();
    let adopted = braid::lab::load_info(&lab.info.name).expect("lab.json after the restart");
    assert_eq!(
        controller_pid(&adopted),
        new_controller,
        "lab.json lists the new controller"
    );
    let all_up = wait_all_up(&adopted, 1..=3, Duration::from_secs(10));
    let s = status(&adopted);
    assert_eq!(s.controller_pid, new_controller);
    assert_eq!(
        fleet(&s),
        before,
        "the new controller adopted every daemon: same pids, no restart"
    );
    let text = metrics_text(&adopted);
    assert_eq!(
        metric(&text, "braid_pairs_up"),
        Some(3.0),
        "/metrics shows every pair up"
    );

    let run = finish_bench(load);
    assert_udp_lossless(&run, "UDP across the controller's death and replacement");
    assert_tcp_flowing(
        &finish_bench(tcp),
        TCP_PACED_STREAMS,
        "TCP across the controller's death and replacement",
    );
    eprintln!(
        "MEASURED controller kill: UDP lost {} reordered {}; new controller answered after {answered:?}, \
         every pair up {all_up:?} later; daemons kept their pids",
        run["totals"]["lost"], run["totals"]["reordered"]
    );
}
