//! The data plane outlives its controller: `kill -9` of the controller while sequence-numbered
//! UDP flows and paced, verified TCP streams run loses nothing and stops no daemon; a new controller adopts every running
//! daemon (same pids, no restart) and reports every pair up, and keeps the operator's drains and
//! removals.

mod support;

use std::time::{Duration, Instant};

use braid_lab::demo::BenchServer;
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
    let new_controller = braid_lab::restart_controller(&lab.info.name, &bin_dir(), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("restart the controller: {e:#}"));
    let answered = started.elapsed();
    let adopted = braid_lab::load_info(&lab.info.name).expect("lab.json after the restart");
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
    // Each demux's flow table: sized for the cluster's flows, holding the load's.
    for site in ["a", "b"] {
        let series = |name: &str| metric(&text, &format!("{name}{{site=\"{site}\"}}"));
        let capacity = series("braid_demux_flow_table_capacity").expect("flow table capacity exported");
        let entries = series("braid_demux_flow_table_entries").expect("flow table entries exported");
        assert!(capacity >= f64::from(1u32 << 20), "site {site}: capacity {capacity}");
        assert!(
            entries > 0.0 && entries < capacity,
            "site {site}: {entries} of {capacity}"
        );
        // The demux's control client's counters ride its heartbeats: pushes it applied, and
        // (none here) pushes it refused.
        let event = |name: &str| {
            metric(
                &text,
                &format!("braid_demux_events_total{{site=\"{site}\",event=\"{name}\"}}"),
            )
        };
        assert!(
            event("control_membership_applied").is_some_and(|n| n >= 1.0),
            "site {site}: control counters exported"
        );
        assert_eq!(event("control_rejected_malformed"), Some(0.0), "site {site}");
    }
    // Healthy: `braid status` exits 0 and says so.
    let out = std::process::Command::new(bin_dir().join("braid"))
        .args(["status", "--lab", &lab.info.name])
        .output()
        .expect("run braid status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "braid status of a healthy lab:\n{table}");
    assert!(table.contains("alarms: none"), "{table}");

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

/// Where Debian's libfaketime lives (`apt-get install faketime`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A controller restarted on a host whose clock is a day behind, with its epoch record lost,
/// still fails a pair over: its epochs come from the demuxes' reports, not from a clock, and
/// its control messages carry no time. The fake clock is checked (the status it publishes is
/// stamped a day back), and a gateway is then killed: the pair leaves the membership at a
/// higher epoch than any pushed before, both demuxes apply it, and the pair comes back.
#[test]
fn a_controller_with_a_clock_a_day_behind_still_fails_pairs_over() {
    if skip_without_lab("lab_controller") {
        return;
    }
    if !std::path::Path::new(LIBFAKETIME).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{LIBFAKETIME} missing under CI: .ci/run installs faketime"
        );
        eprintln!("SKIPPED lab_controller clock test: {LIBFAKETIME} missing (apt-get install faketime)");
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up_with(&lab_name("ctl-clock", Suite::WireGuard), 2, Suite::WireGuard);
    wait_all_up(&lab.info, 1..=2, Duration::from_secs(20));
    let epoch_before = status(&lab.info)
        .demuxes
        .iter()
        .map(|d| d.membership_epoch)
        .max()
        .unwrap();
    assert!(epoch_before > 0);

    let old_controller = controller_pid(&lab.info);
    signal(old_controller, libc::SIGKILL);
    while process_alive(old_controller) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let record = lab.info.state_dir.join("state").join("membership-epoch");
    std::fs::remove_file(&record).unwrap_or_else(|e| panic!("{}: {e}", record.display()));
    // Only the controller runs a day in the past (the daemons it restarts keep the real clock:
    // WireGuard itself refuses handshakes stamped before the peer's last one). A step of the
    // wall clock leaves the monotonic clock alone, and so does the fake one.
    const FAKE: [(&str, &str); 4] = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME", "-1d"),
        ("FAKETIME_ONLY_CMDS", "braid"),
        ("DONT_FAKE_MONOTONIC", "1"),
    ];
    for (var, value) in FAKE {
        std::env::set_var(var, value);
    }
    let restarted = braid_lab::restart_controller(&lab.info.name, &bin_dir(), Duration::from_secs(15));
    for (var, _) in FAKE {
        std::env::remove_var(var);
    }
    let new_controller = restarted.unwrap_or_else(|e| panic!("restart the controller: {e:#}"));
    let info = braid_lab::load_info(&lab.info.name).expect("lab.json after the restart");
    assert_eq!(controller_pid(&info), new_controller);
    let real_now = braid_core::control::unix_now_ms();
    let published = status(&info).published_unix_ms;
    assert!(
        real_now.saturating_sub(published) > 23 * 3_600_000,
        "the controller's clock is not behind: published {published}, now {real_now}"
    );
    wait_all_up(&info, 1..=2, Duration::from_secs(10));

    let victim = status(&info)
        .gateways
        .iter()
        .find(|g| g.site == "a" && g.index == 2)
        .and_then(|g| g.pid)
        .expect("gateway a2's pid");
    signal(victim, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    let failed_over = loop {
        let s = status(&info);
        let epochs: Vec<u64> = s.demuxes.iter().map(|d| d.membership_epoch).collect();
        let pair2_down = s.pairs.iter().any(|p| p.index == 2 && p.state != "up");
        if pair2_down && epochs.iter().all(|e| *e > epoch_before) {
            break epochs;
        }
        assert!(
            Instant::now() < deadline,
            "no failover past epoch {epoch_before}: demux epochs {epochs:?}, pairs {:?}",
            s.pairs.iter().map(|p| (p.index, p.state.clone())).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let back = wait_all_up(&info, 1..=2, Duration::from_secs(20));
    eprintln!(
        "MEASURED clock a day behind, epoch record lost: failover applied at epochs {failed_over:?} \
         (before the restart: {epoch_before}); pair 2 back {back:?} later"
    );
}

/// The operator's orders outlive the controller: a pair drained and a pair removed with
/// `braid gateway` stay drained and removed when a new controller takes over after a
/// `kill -9` (they are recorded in its state directory), and the removed pair's gateways are
/// not started again.
#[test]
fn a_drain_and_a_removal_survive_a_controller_restart() {
    if skip_without_lab("lab_controller orders") {
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up(&lab_name("ctl-orders", Suite::WireGuard), 3);
    let info = &lab.info;
    let socket = info.admin_socket().display().to_string();
    for (verb, pair) in [("drain", "2"), ("remove", "3")] {
        let out = std::process::Command::new(bin_dir().join("braid"))
            .args(["gateway", verb, "--pair", pair, "--admin-socket", &socket])
            .output()
            .expect("run braid gateway");
        assert!(
            out.status.success(),
            "braid gateway {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let states = |s: &braid::status::StatusSnapshot| -> Vec<(u16, String)> {
        s.pairs.iter().map(|p| (p.index, p.state.clone())).collect()
    };
    // A removed pair leaves the status's pairs; its gateways stay listed, retired.
    let expected = vec![(1, "up".to_string()), (2, "draining".into())];
    wait_status(info, Duration::from_secs(5), |s| (states(s) == expected).then_some(()));

    let old_controller = controller_pid(info);
    signal(old_controller, libc::SIGKILL);
    while process_alive(old_controller) {
        std::thread::sleep(Duration::from_millis(10));
    }
    braid_lab::restart_controller(&info.name, &bin_dir(), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("restart the controller: {e:#}"));
    let adopted = braid_lab::load_info(&info.name).expect("lab.json after the restart");
    wait_status(&adopted, Duration::from_secs(10), |s| {
        (states(s) == expected).then_some(())
    });
    // Some seconds on, the removed pair's gateways have not come back.
    std::thread::sleep(Duration::from_secs(3));
    let s = status(&adopted);
    assert_eq!(states(&s), expected, "the orders still hold");
    for g in s.gateways.iter().filter(|g| g.index == 3) {
        assert!(
            g.pid.is_none() && g.state == "retired",
            "removed pair 3's gateway {}{} runs again: {g:?}",
            g.site,
            g.index
        );
    }
}

/// A lab started by a command holds none of that command's descriptors: a pipe the caller left
/// open without close-on-exec (as a `flock` lock or a CI runner's pipe is) reaches end of file
/// as soon as the caller closes its end, while the lab's controller and daemons run on.
#[test]
fn a_running_lab_holds_none_of_its_callers_descriptors() {
    if skip_without_lab("lab_controller descriptors") {
        return;
    }
    let _one = one_lab_at_a_time();
    // pipe(2) without close-on-exec: every process started from here on inherits the write end.
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    let lab = Lab::up(&lab_name("ctl-fds", Suite::WireGuard), 1);
    drop(writer);
    let reader = std::fs::File::from(reader);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1];
        let _ = done_tx.send(std::io::Read::read(&mut &reader, &mut buf));
    });
    let read = done_rx.recv_timeout(Duration::from_secs(10));
    let holders: Vec<String> = lab
        .info
        .processes
        .iter()
        .filter(|p| {
            std::fs::read_dir(format!("/proc/{}/fd", p.pid))
                .map(|fds| {
                    fds.flatten()
                        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().starts_with("pipe:")))
                })
                .unwrap_or(false)
        })
        .map(|p| format!("{} {}", p.role, p.pid))
        .collect();
    assert!(
        matches!(read, Ok(Ok(0))),
        "the pipe's write end is still held (read: {read:?}); lab processes holding a pipe: {holders:?}"
    );
    let up = status(&lab.info).pairs.iter().filter(|p| p.state == "up").count();
    assert_eq!(up, 1, "the lab runs on");
}
