//! A partition in a real lab: a controller set (two controllers on a three-member etcd) whose
//! daemons heartbeat over the sites' management network, and site b's management link cut
//! under traffic. Site b's daemons keep forwarding, none of them is killed or restarted, the
//! pairs stay in service (site a's canaries keep crossing them), the alarm names the site, and
//! once the link is back the alarm clears and every daemon is heard again.

mod support;

use std::time::{Duration, Instant};

use braid_lab::controller_set::{partition_site, wait_for_leader};
use braid_lab::demo::BenchServer;
use braid_lab::LabInfo;
use support::*;

/// Every gateway's `(site, index, pid, restarts)` as `view`'s controller reports it.
fn gateways(view: &LabInfo) -> Vec<(String, u16, Option<u32>, u32)> {
    status(view)
        .gateways
        .iter()
        .map(|g| (g.site.clone(), g.index, g.pid, g.restarts))
        .collect()
}

#[test]
fn a_site_cut_off_from_the_controllers_keeps_carrying_traffic_and_the_alarm_names_it() {
    if skip_without_lab("lab_partition") {
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up_controllers("part", 2, 2);
    let info = &lab.info;
    let _server = BenchServer::start(info, &bin_dir()).expect("bench server");
    let leader = wait_for_leader(&info.controllers, Duration::from_secs(10), |_| true).expect("a leader");
    let mut view = info.clone();
    view.metrics = leader.metrics;
    let before = gateways(&view);
    assert_eq!(before.len(), 4, "{before:?}");

    let load = start_bench(info, UDP_LOAD);
    std::thread::sleep(Duration::from_secs(2));
    let cut = Instant::now();
    partition_site(&info.name, "b", true).expect("cut site b off");
    let alarm = wait_status(&view, Duration::from_secs(5), |s| {
        (s.alarms.sites_unreachable == ["b"]).then(|| cut.elapsed())
    });
    eprintln!("MEASURED site b cut off: alarm site_unreachable after {alarm:?}");
    // Hold the partition: the pairs stay in service and nothing of site b is touched.
    for _ in 0..20 {
        let s = status(&view);
        assert_eq!(
            s.pairs_up, 2,
            "both pairs stay up while site b is unheard: {:?}",
            s.pairs
        );
        assert!(s.alarms_raised().contains(&"site_unreachable"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::process::Command::new(bin_dir().join("braid"))
        .args(["status", "--controller", &view.metrics.to_string()])
        .output()
        .expect("run braid status");
    let table = String::from_utf8_lossy(&text.stdout);
    assert_eq!(
        text.status.code(),
        Some(1),
        "braid status exits 1 under the alarm:\n{table}"
    );
    assert!(table.contains("site(s) b unreachable"), "{table}");

    partition_site(&info.name, "b", false).expect("reconnect site b");
    let healed = Instant::now();
    wait_status(&view, Duration::from_secs(10), |s| {
        (s.alarms.sites_unreachable.is_empty() && s.gateways.iter().all(|g| g.state == "up")).then_some(())
    });
    eprintln!(
        "MEASURED site b heard again: alarm cleared after {:?}",
        healed.elapsed()
    );
    let run = finish_bench(load);
    assert_udp_lossless(&run, "UDP across site b's partition from the controllers");
    assert_eq!(gateways(&view), before, "no gateway was killed or restarted");
    let log = std::fs::read_to_string(&leader.log).unwrap_or_default();
    assert!(log.contains("site unreachable"), "the leader's log says what happened");
}
