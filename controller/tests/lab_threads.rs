//! Multi-threaded demuxes in a real three-pair lab.
//!
//! With two data threads per demux (set in the lab's cluster file), many TCP streams (every
//! byte verified, both ways) and sequence-numbered UDP flows cross the cluster: no flow is split
//! over two pairs (told from captures of the GENEVE traffic on each site's LAN), nothing is
//! reordered, every pair carried a share, and the kernel queued (nearly) every packet a site
//! sent for the thread owning its flow (the demux's eBPF steering program), while what came
//! back from the gateways, delivered by gateway rather than by flow, was handed between threads.
//!
//! Then the thread count changes under load, as an operator would change it: `data_threads`
//! edited in the cluster file, each demux stopped (SIGTERM) and restarted by the controller,
//! which starts it from the file. Every flow captured before the change crosses the same pair
//! after it, and the sequence-numbered flows are neither reordered nor duplicated across the
//! change (what the restarts lost is counted and shown, not required to be zero).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use braid_lab::demo::{bench_client, BenchServer};
use braid_lab::LabInfo;
use serde_json::Value;
use support::*;

/// Pairs in both labs.
const PAIRS: u16 = 3;
/// 16 verified TCP streams, 3 s.
const TCP_FORWARD: &[&str] = &["-P", "16", "-t", "3"];
const TCP_REVERSE: &[&str] = &["-P", "16", "-t", "3", "--reverse"];
const TCP_STREAMS: usize = 16;
/// 16 sequence-numbered UDP flows, 20 Mbit/s in all, 3 s.
const UDP_SHORT: &[&str] = &["--udp", "--rate", "20M", "--size", "1000", "-P", "16", "-t", "3"];
/// The load across the thread-count change: 16 UDP flows and 4 paced TCP streams, 12 s.
const UDP_ACROSS: &[&str] = &["--udp", "--rate", "40M", "--size", "1000", "-P", "16", "-t", "12"];
const TCP_ACROSS: &[&str] = &["-P", "4", "-b", "40M", "-t", "12"];

type FlowPairs = BTreeMap<InnerFlow, BTreeSet<u16>>;

/// Demux `site`'s status file as it is now.
fn demux_status(info: &LabInfo, site: &str) -> Value {
    let p = info
        .processes
        .iter()
        .find(|p| p.role == "demux" && p.site == site)
        .unwrap_or_else(|| panic!("no demux {site} in the lab"));
    braid_lab::read_status(&p.status_file).unwrap_or_else(|| panic!("demux {site} wrote no status"))
}

/// Packets demux `site` sent into each pair so far.
fn pair_tx_packets(info: &LabInfo, site: &str) -> Vec<(u16, u64)> {
    demux_status(info, site)["pairs"]
        .as_array()
        .expect("the demux status lists pairs")
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap_or(0) as u16,
                p["tx_packets"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Asserts no flow in `flows` crossed more than one pair; returns how many flows each pair
/// carried.
fn assert_unsplit(flows: &FlowPairs, what: &str) -> BTreeMap<u16, usize> {
    let mut per_pair = BTreeMap::new();
    for (flow, pairs) in flows {
        assert_eq!(pairs.len(), 1, "{what}: flow {flow:?} was split over pairs {pairs:?}");
        *per_pair.entry(*pairs.first().unwrap()).or_insert(0) += 1;
    }
    per_pair
}

/// The flows of both sites' captures together: a flow's pairs as seen on either LAN.
fn both_sites(a: FlowPairs, b: FlowPairs) -> FlowPairs {
    let mut all = a;
    for (flow, pairs) in b {
        all.entry(flow).or_default().extend(pairs);
    }
    all
}

/// Both demuxes' handoff drop counters, by site and name.
fn handoff_drops(info: &LabInfo) -> Vec<(String, u64)> {
    ["a", "b"]
        .iter()
        .flat_map(|site| {
            ["drop_handoff_no_buffer", "drop_handoff_inbox_full"]
                .map(|name| (format!("{site} {name}"), counter(info, "demux", site, 0, name)))
        })
        .collect()
}

fn udp_flows_between_hosts(flows: &FlowPairs) -> usize {
    flows.keys().filter(|f| f.protocol == 17).count()
}

#[test]
fn two_data_threads_share_the_work_and_keep_every_flow_on_one_pair_in_order() {
    if skip_without_lab("lab_threads") {
        return;
    }
    let _one = one_lab_at_a_time();
    let started = Instant::now();
    let lab = Lab::up_threads("mt-share", PAIRS, 2);
    let info = &lab.info;
    let bin = bin_dir();
    let _server = BenchServer::start(info, &bin).expect("bench server");
    for site in ["a", "b"] {
        assert_eq!(
            demux_status(info, site)["data_threads"].as_u64(),
            Some(2),
            "demux {site} runs the two data threads the cluster file sets"
        );
        assert_eq!(
            demux_status(info, site)["kernel_steering"].as_bool(),
            Some(true),
            "demux {site} has the kernel queue each packet for its owner thread"
        );
    }
    let handed_before = ["a", "b"].map(|site| counter(info, "demux", site, 0, "handed_off_packets"));
    let from_tun_before = ["a", "b"].map(|site| counter(info, "demux", site, 0, "handed_off_from_tun_packets"));
    let tun_rx_before = ["a", "b"].map(|site| counter(info, "demux", site, 0, "tun_rx_packets"));
    let tx_before = ["a", "b"].map(|site| pair_tx_packets(info, site));

    let lan_a = capture_site_lan(info, "a", "share-a.pcap");
    let lan_b = capture_site_lan(info, "b", "share-b.pcap");
    let forward = bench_client(info, &bin, TCP_FORWARD).expect("forward TCP run");
    let reverse = bench_client(info, &bin, TCP_REVERSE).expect("reverse TCP run");
    std::thread::sleep(Duration::from_millis(700)); // a status refresh after the TCP runs
    let drops_after_tcp = handoff_drops(info);
    let udp = bench_client(info, &bin, UDP_SHORT).expect("UDP run");
    let (cap_a, cap_b) = (lan_a.finish(), lan_b.finish());
    std::thread::sleep(Duration::from_millis(700)); // a status refresh after the traffic

    assert_tcp_intact(&forward, TCP_STREAMS, "TCP a→b");
    assert_tcp_intact(&reverse, TCP_STREAMS, "TCP b→a");
    let flows = udp_flows(&udp);
    assert_eq!(flows.len(), 16, "UDP flow count in {udp}");
    for f in &flows {
        assert!(f.received > 0, "a UDP flow received nothing: {f:?}");
        assert_eq!(
            (f.lost, f.reordered, f.duplicates),
            (0, 0, 0),
            "UDP flow lost, reordered or duplicated at 20 Mbit/s: {f:?}"
        );
    }

    // Every flow, seen on both LANs, crossed one pair only.
    let (on_a, on_b) = (flow_pairs(&cap_a, info, "a"), flow_pairs(&cap_b, info, "b"));
    assert_unsplit(&on_a, "site a's LAN");
    assert_unsplit(&on_b, "site b's LAN");
    let all = both_sites(on_a, on_b);
    let flows_per_pair = assert_unsplit(&all, "both LANs");
    let tcp_flows = all.keys().filter(|f| f.protocol == 6).count();
    assert!(
        tcp_flows >= 2 * TCP_STREAMS,
        "the captures saw every TCP stream: {tcp_flows} TCP flows"
    );
    assert!(
        udp_flows_between_hosts(&all) >= 16,
        "the captures saw every UDP flow: {all:?}"
    );
    assert_eq!(
        flows_per_pair.len(),
        usize::from(PAIRS),
        "every pair carried flows: {flows_per_pair:?}"
    );

    // The threads shared the work: packets crossed threads on both sites, and every pair
    // carried a share of each site's packets.
    let handed: Vec<u64> = ["a", "b"]
        .iter()
        .zip(handed_before)
        .map(|(site, before)| counter(info, "demux", site, 0, "handed_off_packets") - before)
        .collect();
    let from_tun: Vec<(u64, u64)> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, site)| {
            (
                counter(info, "demux", site, 0, "handed_off_from_tun_packets") - from_tun_before[i],
                counter(info, "demux", site, 0, "tun_rx_packets") - tun_rx_before[i],
            )
        })
        .collect();
    let drops_after_udp = handoff_drops(info);
    let mut spread = Vec::new();
    for (site, before) in ["a", "b"].iter().zip(&tx_before) {
        let after = pair_tx_packets(info, site);
        let delta: Vec<(u16, u64)> = after
            .iter()
            .map(|&(id, n)| {
                let was = before.iter().find(|(p, _)| *p == id).map(|(_, n)| *n).unwrap_or(0);
                (id, n - was)
            })
            .collect();
        spread.push((site.to_string(), delta));
    }
    eprintln!(
        "MEASURED 2 threads: handed off a {} b {}, of which read from the TUN (handed off / read) \
         {from_tun:?}; handoff drops after the TCP runs \
         {drops_after_tcp:?}, after the UDP run {drops_after_udp:?}; tx packets per pair {spread:?}; \
         flows per pair {flows_per_pair:?} ({tcp_flows} TCP, {} UDP); TCP {} / {} Mbit/s; {:?} in all",
        handed[0],
        handed[1],
        udp_flows_between_hosts(&all),
        forward["aggregate_mbps"],
        reverse["aggregate_mbps"],
        started.elapsed()
    );
    // The kernel queued what each site sent for the thread owning its flow (a flow the kernel
    // and the demux place differently would be handed over every time); what came back from
    // the gateways arrives by gateway, not by flow, and is handed over.
    for (site, (handed_from_tun, read)) in ["a", "b"].iter().zip(&from_tun) {
        assert!(*read > 10_000, "demux {site} read the traffic from its TUN: {read}");
        assert!(
            *handed_from_tun * 1000 <= *read,
            "demux {site}: {handed_from_tun} of {read} packets read from the TUN reached a thread that \
             does not own their flow"
        );
    }
    for (site, n) in ["a", "b"].iter().zip(&handed) {
        assert!(*n > 0, "demux {site} handed packets between its threads");
    }
    // Both threads of each demux read a share of what its site sent and hold flows of their
    // own: the owner function spreads the flows, and the kernel follows it.
    for site in ["a", "b"] {
        let threads = demux_status(info, site)["threads"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(threads.len(), 2, "demux {site} reports each thread: {threads:?}");
        let read: Vec<u64> = threads
            .iter()
            .map(|t| t["tun_rx_packets"].as_u64().unwrap_or(0))
            .collect();
        let total: u64 = read.iter().sum();
        eprintln!("MEASURED demux {site}: packets read from the TUN per thread {read:?}");
        for (i, n) in read.iter().enumerate() {
            assert!(
                *n * 10 >= total,
                "demux {site}: thread {i} read under 10 % of the TUN's packets: {read:?}"
            );
            assert!(
                threads[i]["flows"].as_u64().unwrap_or(0) > 0,
                "demux {site}: thread {i} holds no flow"
            );
        }
    }
    for (site, delta) in &spread {
        let total: u64 = delta.iter().map(|(_, n)| n).sum();
        assert_eq!(delta.len(), usize::from(PAIRS), "demux {site} reports every pair");
        for (id, n) in delta {
            assert!(
                *n * 20 >= total,
                "demux {site}: pair {id} carried under 5 % of the packets: {delta:?}"
            );
        }
    }
}

/// Stops demux `site` (SIGTERM) and waits until the controller has started it again and reports
/// it alive with every pair up; returns how long that took. Then checks that the new demux read
/// `threads` data threads from the cluster file (its status file, not part of the time).
fn restart_demux(info: &LabInfo, site: &str, threads: u64) -> Duration {
    let s = status(info);
    let d = s
        .demuxes
        .iter()
        .find(|d| d.site == site)
        .unwrap_or_else(|| panic!("no demux {site} in the status"));
    let old = d.pid.unwrap_or_else(|| panic!("demux {site} has a pid"));
    let stopped = Instant::now();
    signal(old, libc::SIGTERM);
    let new = wait_status(info, Duration::from_secs(15), |s| {
        let d = s.demuxes.iter().find(|d| d.site == site)?;
        let pid = d.pid.filter(|p| *p != old)?;
        braid_lab::controller::all_up(s, 1..=PAIRS).then_some(pid)
    });
    let back = stopped.elapsed();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = demux_status(info, site);
        if now["pid"].as_u64() == Some(u64::from(new)) {
            assert_eq!(
                now["data_threads"].as_u64(),
                Some(threads),
                "the restarted demux {site} read the new thread count from the file"
            );
            break;
        }
        assert!(Instant::now() < deadline, "demux {site} (pid {new}) wrote no status");
        std::thread::sleep(Duration::from_millis(100));
    }
    back
}

#[test]
fn flows_keep_their_pair_and_order_across_a_data_thread_change() {
    if skip_without_lab("lab_threads") {
        return;
    }
    let _one = one_lab_at_a_time();
    let started = Instant::now();
    let lab = Lab::up_threads("mt-change", PAIRS, 2);
    let info = &lab.info;
    let _server = BenchServer::start(info, &bin_dir()).expect("bench server");

    // Long-lived flows, captured on both LANs before the change.
    let lan_a = capture_site_lan(info, "a", "before-a.pcap");
    let lan_b = capture_site_lan(info, "b", "before-b.pcap");
    let udp = start_bench(info, UDP_ACROSS);
    let tcp = start_bench(info, TCP_ACROSS);
    std::thread::sleep(Duration::from_millis(2500));
    let (cap_a, cap_b) = (lan_a.finish(), lan_b.finish());
    let before = both_sites(flow_pairs(&cap_a, info, "a"), flow_pairs(&cap_b, info, "b"));

    // The operator's change: 2 → 3 data threads in the cluster file, then each demux restarted
    // through the controller (which starts it from the file).
    let yaml = std::fs::read_to_string(&info.config).expect("read the cluster file");
    assert_eq!(
        yaml.matches("data_threads: 2").count(),
        2,
        "both demuxes run 2 threads: {yaml}"
    );
    std::fs::write(&info.config, yaml.replace("data_threads: 2", "data_threads: 3")).expect("write the cluster file");
    let restart_a = restart_demux(info, "a", 3);
    let restart_b = restart_demux(info, "b", 3);

    // The same flows, captured after the change.
    let lan_a = capture_site_lan(info, "a", "after-a.pcap");
    let lan_b = capture_site_lan(info, "b", "after-b.pcap");
    std::thread::sleep(Duration::from_millis(2000));
    let (cap_a, cap_b) = (lan_a.finish(), lan_b.finish());
    let after = both_sites(flow_pairs(&cap_a, info, "a"), flow_pairs(&cap_b, info, "b"));
    let udp_run = finish_bench(udp);
    let tcp_run = finish_bench(tcp);

    let per_pair_before = assert_unsplit(&before, "before the change");
    let per_pair_after = assert_unsplit(&after, "after the change");
    // A flow that moved: its pair before, its pair after.
    let moved: Vec<(&InnerFlow, &BTreeSet<u16>, &BTreeSet<u16>)> = before
        .iter()
        .filter_map(|(flow, pairs)| Some((flow, pairs, after.get(flow)?)))
        .filter(|(_, pairs, later)| pairs != later)
        .collect();
    let kept = before.keys().filter(|f| after.contains_key(*f)).count();
    let (udp_before, udp_kept) = (
        udp_flows_between_hosts(&before),
        before
            .keys()
            .filter(|f| f.protocol == 17 && after.contains_key(*f))
            .count(),
    );
    let flows = udp_flows(&udp_run);
    let lost: u64 = flows.iter().map(|f| f.lost).sum();
    let max_gap = flows.iter().map(|f| f.max_gap_ms).fold(0.0, f64::max);
    eprintln!(
        "MEASURED 2 → 3 threads: demux a back after {restart_a:?}, b after {restart_b:?}; flows before {} \
         (UDP {udp_before}), seen again after {kept} (UDP {udp_kept}), moved {}; flows per pair before \
         {per_pair_before:?} after {per_pair_after:?}; UDP lost {lost} datagrams, largest gap {max_gap:.0} ms; \
         TCP {} Mbit/s; drops {:?}; {:?} in all",
        before.len(),
        moved.len(),
        tcp_run["aggregate_mbps"],
        braid_lab::demo::nonzero_drops(info),
        started.elapsed()
    );
    assert!(
        moved.is_empty(),
        "flows moved to another pair across the change: {moved:?}"
    );
    assert!(
        udp_before >= 16,
        "every UDP flow was captured before the change: {before:?}"
    );
    assert!(udp_kept >= 16, "every UDP flow was captured again after it: {after:?}");
    assert!(
        before.keys().filter(|f| f.protocol == 6).count() >= 4
            && before
                .keys()
                .filter(|f| f.protocol == 6 && after.contains_key(*f))
                .count()
                >= 4,
        "the TCP streams were captured before and after the change: {before:?} {after:?}"
    );
    assert_eq!(flows.len(), 16, "UDP flow count in {udp_run}");
    for f in &flows {
        assert!(f.received > 0, "a UDP flow received nothing: {f:?}");
        assert_eq!(
            (f.reordered, f.duplicates),
            (0, 0),
            "UDP flow reordered or duplicated across the change: {f:?}"
        );
    }
    assert_tcp_intact(&tcp_run, 4, "TCP across the change");
}
