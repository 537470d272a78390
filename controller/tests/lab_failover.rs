//! Failover under load, in a real three-pair lab: one gateway killed (`kill -9`), frozen
//! (SIGSTOP) or cut off the WAN while sequence-numbered UDP flows and verified TCP streams cross
//! the cluster (for the kill, full-speed TCP in a second round; otherwise paced TCP beside the
//! UDP, started once the UDP flows' pairs are measured so it does not blur that count).
//!
//! Each test measures which UDP flows rode the failed pair (the demux's per-pair datagram rate
//! before the failure, in units of one flow's rate), fails the gateway, and watches the
//! controller's status and `/metrics` until the pair is back. The run must then show: nothing
//! reordered or duplicated anywhere, no loss outside the failed pair's flows, and every flow
//! that lost anything resumed within 1 s. The controller must have reported the pair down and
//! up again, and restarted a dead or hung gateway.

mod support;

use std::time::{Duration, Instant};

use braid_lab::demo::BenchServer;
use support::*;

/// The gateway every test fails: site a's gateway of pair 2.
const SITE: &str = "a";
const PAIR: u16 = 2;
/// How long the pair may take to be up again (restart, handshake, canary, hysteresis).
const REJOIN_BUDGET: Duration = Duration::from_secs(6);

/// Starts the UDP load and returns it with how many of its flows ride pair [`PAIR`].
///
/// The load starts only once every pair is up and active (a pair that flapped while the lab
/// settled would otherwise get no flows, since flows stay pinned where they start); if the failed
/// pair still gets none, the controller's and the demux's account of membership is printed.
fn udp_load_and_flows_on_pair(info: &braid_lab::LabInfo) -> (std::thread::JoinHandle<serde_json::Value>, usize) {
    wait_all_up(info, 1..=info.gateways, Duration::from_secs(10));
    let load = start_bench(info, UDP_LOAD);
    std::thread::sleep(Duration::from_millis(800));
    let rates = pair_packet_rates(info, SITE, Duration::from_secs(2));
    let flows: Vec<(u16, usize)> = rates.iter().map(|&(id, pps)| (id, udp_flows_at(pps))).collect();
    eprintln!("UDP flows per pair: {flows:?} (rates {rates:?})");
    assert_eq!(
        flows.iter().map(|&(_, n)| n).sum::<usize>(),
        UDP_FLOWS,
        "the per-pair rates account for every flow: {rates:?}"
    );
    let on_pair = flows.iter().find(|&&(id, _)| id == PAIR).map(|&(_, n)| n).unwrap_or(0);
    if on_pair == 0 {
        print_membership_history(info);
    }
    assert!(on_pair > 0, "pair {PAIR} carries some of the flows: {flows:?}");
    (load, on_pair)
}

/// The lines of the controller's and demux a's logs that tell how membership and pair health
/// changed: what a test that found a pair without flows needs to say why.
fn print_membership_history(info: &braid_lab::LabInfo) {
    for p in info
        .processes
        .iter()
        .filter(|p| p.role == "controller" || (p.role == "demux" && p.site == SITE))
    {
        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
        eprintln!("--- {} (membership and pair health) ---", p.log.display());
        for line in text
            .lines()
            .filter(|l| l.contains("membership") || l.contains("pair"))
            .take(200)
        {
            eprintln!("{line}");
        }
    }
}

fn gateway_pid(info: &braid_lab::LabInfo, site: &str, index: u16) -> u32 {
    let s = status(info);
    let g = gateway(&s, site, index);
    assert_eq!(g.restarts, 0, "gateway {site}{index} has not been restarted yet");
    g.pid.unwrap_or_else(|| panic!("gateway {site}{index} has a pid"))
}

#[test]
fn killed_gateway_fails_over_within_a_second_and_is_restarted() {
    killed_gateway_fails_over_within_a_second_and_is_restarted_with(Suite::WireGuard);
}

#[test]
fn ipsec_killed_gateway_fails_over_within_a_second_and_is_restarted() {
    killed_gateway_fails_over_within_a_second_and_is_restarted_with(Suite::Ipsec);
}

fn killed_gateway_fails_over_within_a_second_and_is_restarted_with(suite: Suite) {
    if skip_without_lab("lab_failover kill") {
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up_with(&lab_name("fo-kill", suite), 3, suite);
    let info = &lab.info;
    let _server = BenchServer::start(info, &bin_dir()).expect("bench server");

    // UDP across a kill -9 of gateway a2.
    let old_pid = gateway_pid(info, SITE, PAIR);
    let (load, on_pair) = udp_load_and_flows_on_pair(info);
    let killed = Instant::now();
    signal(old_pid, libc::SIGKILL);
    let recovery = watch_recovery(info, SITE, PAIR, old_pid, true, killed, Duration::from_secs(10));
    let run = finish_bench(load);
    eprintln!("kill -9 {SITE}{PAIR}: {recovery:?}");
    eprintln!("drops: {:?}", braid_lab::demo::nonzero_drops(info));
    let figures = assert_udp_failover(&run, on_pair, "UDP across kill -9");
    eprintln!(
        "MEASURED kill -9: affected flows {} of {on_pair} on the pair, largest gap {:.1} ms, lost {}, \
         unaffected flows lost 0, new pid after {:?}, pair up after {:?}",
        figures.affected, figures.affected_max_gap_ms, figures.lost, recovery.new_pid_after, recovery.up_after
    );
    assert!(!process_alive(old_pid), "the killed gateway is gone");
    assert!(
        recovery.new_pid_after.is_some_and(|t| t < Duration::from_secs(3)),
        "restarted within 3 s: {recovery:?}"
    );
    assert!(
        recovery.up_after < REJOIN_BUDGET,
        "pair {PAIR} rejoined in time: {recovery:?}"
    );

    // Status and /metrics told the truth meanwhile, and still do.
    assert_eq!(
        recovery.min_pairs_up_metric, 2.0,
        "/metrics showed the pair down: {recovery:?}"
    );
    assert_eq!(
        recovery.pairs_up_metric_after, 3.0,
        "/metrics shows every pair up again"
    );
    let s = status(info);
    let g = gateway(&s, SITE, PAIR);
    assert!(g.restarts >= 1, "status counts the restart: {g:?}");
    assert_eq!(g.pid, recovery.new_pid, "status shows the new pid");
    assert!(g.last_failure.is_some(), "status records why it failed: {g:?}");
    let text = metrics_text(info);
    let restarts = metric(
        &text,
        &format!("braid_gateway_restarts_total{{site=\"{SITE}\",pair=\"{PAIR}\"}}"),
    );
    assert!(
        restarts.is_some_and(|r| r >= 1.0),
        "/metrics counts the restart: {restarts:?}"
    );
    for other in [1u16, 3] {
        assert_eq!(
            gateway(&s, SITE, other).restarts,
            0,
            "gateway {SITE}{other} was left alone"
        );
    }

    // Verified TCP across a kill -9 of gateway b1 (the other site, another pair).
    let b1 = gateway_pid(info, "b", 1);
    let tcp = start_bench(info, TCP_LOAD);
    std::thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    signal(b1, libc::SIGKILL);
    let recovery = watch_recovery(info, "b", 1, b1, true, killed, Duration::from_secs(10));
    let run = finish_bench(tcp);
    eprintln!(
        "MEASURED kill -9 b1 under TCP: {recovery:?}, {} Mbit/s",
        run["aggregate_mbps"]
    );
    assert_tcp_intact(&run, 8, "TCP across kill -9");
    assert!(
        recovery.up_after < REJOIN_BUDGET,
        "pair 1 rejoined in time: {recovery:?}"
    );
}

#[test]
fn frozen_gateway_is_killed_restarted_and_its_flows_fail_over_within_a_second() {
    frozen_gateway_is_killed_restarted_and_its_flows_fail_over_within_a_second_with(Suite::WireGuard);
}

#[test]
fn ipsec_frozen_gateway_is_killed_restarted_and_its_flows_fail_over_within_a_second() {
    frozen_gateway_is_killed_restarted_and_its_flows_fail_over_within_a_second_with(Suite::Ipsec);
}

fn frozen_gateway_is_killed_restarted_and_its_flows_fail_over_within_a_second_with(suite: Suite) {
    if skip_without_lab("lab_failover freeze") {
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up_with(&lab_name("fo-stop", suite), 3, suite);
    let info = &lab.info;
    let _server = BenchServer::start(info, &bin_dir()).expect("bench server");

    let old_pid = gateway_pid(info, SITE, PAIR);
    let (load, on_pair) = udp_load_and_flows_on_pair(info);
    let tcp = start_bench(info, TCP_PACED_LOAD);
    std::thread::sleep(Duration::from_millis(500));
    let frozen = Instant::now();
    let _thaw = ThawOnDrop(old_pid);
    signal(old_pid, libc::SIGSTOP);
    let recovery = watch_recovery(info, SITE, PAIR, old_pid, true, frozen, Duration::from_secs(10));
    let run = finish_bench(load);
    assert_tcp_flowing(&finish_bench(tcp), TCP_PACED_STREAMS, "TCP across SIGSTOP");
    eprintln!("SIGSTOP {SITE}{PAIR}: {recovery:?}");
    let figures = assert_udp_failover(&run, on_pair, "UDP across SIGSTOP");
    eprintln!(
        "MEASURED SIGSTOP: affected flows {} of {on_pair} on the pair, largest gap {:.1} ms, lost {}, \
         unaffected flows lost 0, new pid after {:?}, pair up after {:?}",
        figures.affected, figures.affected_max_gap_ms, figures.lost, recovery.new_pid_after, recovery.up_after
    );
    assert!(!process_alive(old_pid), "the controller killed the hung gateway");
    assert!(
        recovery.new_pid_after.is_some_and(|t| t < Duration::from_secs(3)),
        "restarted within 3 s: {recovery:?}"
    );
    assert!(
        recovery.up_after < REJOIN_BUDGET,
        "pair {PAIR} rejoined in time: {recovery:?}"
    );
    assert_eq!(recovery.min_pairs_up_metric, 2.0, "/metrics showed the pair down");
    let s = status(info);
    assert!(gateway(&s, SITE, PAIR).restarts >= 1, "status counts the restart");
    assert!(
        recovery.down_reason.as_deref().is_some_and(|r| r.contains("heartbeat")),
        "the pair went down for the silent gateway: {recovery:?}"
    );
}

#[test]
fn cut_wan_link_takes_the_pair_out_and_its_return_puts_it_back() {
    cut_wan_link_takes_the_pair_out_and_its_return_puts_it_back_with(Suite::WireGuard);
}

#[test]
fn ipsec_cut_wan_link_takes_the_pair_out_and_its_return_puts_it_back() {
    cut_wan_link_takes_the_pair_out_and_its_return_puts_it_back_with(Suite::Ipsec);
}

fn cut_wan_link_takes_the_pair_out_and_its_return_puts_it_back_with(suite: Suite) {
    if skip_without_lab("lab_failover wan cut") {
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up_with(&lab_name("fo-wan", suite), 3, suite);
    let info = &lab.info;
    let _server = BenchServer::start(info, &bin_dir()).expect("bench server");
    let netns = info
        .processes
        .iter()
        .find(|p| p.role == "gw" && p.site == SITE && p.index == PAIR)
        .map(|p| p.netns.clone())
        .expect("the lab lists gateway a2");
    let link = |state: &str| {
        let out = std::process::Command::new("ip")
            .args(["-n", &netns, "link", "set", "wan", state])
            .status()
            .expect("run ip");
        assert!(out.success(), "ip -n {netns} link set wan {state}");
    };

    let pid = gateway_pid(info, SITE, PAIR);
    let (load, on_pair) = udp_load_and_flows_on_pair(info);
    let tcp = start_bench(info, TCP_PACED_LOAD);
    std::thread::sleep(Duration::from_millis(500));
    let cut = Instant::now();
    link("down");
    let seen_down = wait_status(info, Duration::from_secs(5), |s| {
        let p = pair(s, PAIR);
        (p.state == "down" && !p.active).then(|| (cut.elapsed(), p.last_failure.clone(), s.pairs_up))
    });
    eprintln!(
        "WAN cut: pair {PAIR} down after {:?}, reason {:?}",
        seen_down.0, seen_down.1
    );
    assert!(
        seen_down.1.as_deref().is_some_and(|r| r.contains("canary")),
        "the pair went down because canaries stopped crossing it: {seen_down:?}"
    );
    assert_eq!(seen_down.2, 2, "two pairs up while the link is cut");
    let run = finish_bench(load);
    let figures = assert_udp_failover(&run, on_pair, "UDP across a WAN cut");
    assert_tcp_flowing(&finish_bench(tcp), TCP_PACED_STREAMS, "TCP across a WAN cut");

    let restored = Instant::now();
    link("up");
    let recovery = watch_recovery(info, SITE, PAIR, pid, false, restored, Duration::from_secs(10));
    eprintln!(
        "MEASURED WAN cut: affected flows {} of {on_pair}, largest gap {:.1} ms, lost {}, unaffected lost 0, \
         pair down after {:?}; link restored → pair up after {:?}",
        figures.affected, figures.affected_max_gap_ms, figures.lost, seen_down.0, recovery.up_after
    );
    assert!(
        recovery.up_after < REJOIN_BUDGET,
        "pair {PAIR} is back within ~5 s: {recovery:?}"
    );
    let s = status(info);
    let g = gateway(&s, SITE, PAIR);
    assert_eq!(
        (g.pid, g.restarts),
        (Some(pid), 0),
        "a cut link is no reason to restart the gateway"
    );
}
