//! Online re-clustering under load: a four-pair lab scaled to six and then to three while
//! sequence-numbered UDP flows and paced, verified TCP streams run. Established flows must
//! lose, reorder and duplicate nothing across either step (TCP: every byte intact, no
//! interval without data); flows started after growing must use the new pairs, and after
//! shrinking the removed pairs take no new flows.

mod support;

use std::time::{Duration, Instant};

use braid_lab::demo::{pair_tx_bytes, BenchServer};
use braid_lab::LabInfo;
use serde_json::Value;
use support::*;

const LAB: &str = "rc-scale";
/// Many short new flows, so every pair of six gets some: a given pair misses all 64 with
/// p = (5/6)^64 ≈ 1e-5 (with 32 flows it was 0.3 %, and it happened).
/// The bench server ports of the two fresh runs (the established load uses the usual one).
const FRESH_PORTS: [u16; 2] = [5211, 5212];
const FRESH_UDP: &[&str] = &["--udp", "--rate", "40M", "--size", "1000", "-P", "64", "-t", "2"];

/// Bytes demux a sent into each pair of `pairs` while `run` ran. Status files refresh every
/// 500 ms, so both readings wait for a fresh one: the first must not predate the end of the
/// traffic that ran before (established flows keep using removed pairs until they go idle).
fn bytes_per_pair_during(info: &LabInfo, pairs: &[u16], run: impl FnOnce() -> Value) -> (Vec<(u16, u64)>, Value) {
    let sent = |id: u16, tx: &[(u16, u64)]| tx.iter().find(|(p, _)| *p == id).map(|(_, b)| *b).unwrap_or(0);
    std::thread::sleep(Duration::from_millis(700));
    let before = pair_tx_bytes(info, "a");
    let result = run();
    std::thread::sleep(Duration::from_millis(700));
    let after = pair_tx_bytes(info, "a");
    let grown = pairs
        .iter()
        .map(|&id| (id, sent(id, &after).saturating_sub(sent(id, &before))))
        .collect();
    (grown, result)
}

/// New UDP flows to a server port no earlier flow used. Flows to the usual port would pick
/// random source ports, and one that happened to take the 5-tuple of an earlier flow still
/// pinned to a removed pair would rightly keep that pair: a flow the demux cannot tell from the
/// old one.
fn fresh_run(info: &LabInfo, port: u16) -> Value {
    let _server = BenchServer::start_on(info, &bin_dir(), port).expect("fresh bench server");
    let run = braid_lab::demo::bench_client_on(info, &bin_dir(), port, FRESH_UDP).expect("fresh UDP run");
    for f in run["flows"].as_array().expect("flows") {
        assert_eq!(f["reordered"].as_u64(), Some(0), "a new flow was reordered: {f}");
        assert!(
            f["received"].as_u64().unwrap_or(0) > 0,
            "a new flow received nothing: {f}"
        );
    }
    run
}

#[test]
fn scaling_four_to_six_to_three_under_load_keeps_established_flows_whole() {
    scaling_four_to_six_to_three_under_load_keeps_established_flows_whole_with(Suite::WireGuard);
}

#[test]
fn ipsec_scaling_four_to_six_to_three_under_load_keeps_established_flows_whole() {
    scaling_four_to_six_to_three_under_load_keeps_established_flows_whole_with(Suite::Ipsec);
}

fn scaling_four_to_six_to_three_under_load_keeps_established_flows_whole_with(suite: Suite) {
    if skip_without_lab("lab_recluster") {
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up_with(&lab_name(LAB, suite), 4, suite);
    let _server = BenchServer::start(&lab.info, &bin_dir()).expect("bench server");

    // 4 → 6 while 16 flows and 4 TCP streams run.
    let established = start_bench(&lab.info, UDP_LOAD);
    let tcp = start_bench(&lab.info, TCP_PACED_LOAD);
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let grown = braid_lab::scale(&lab.info.name, &bin_dir(), 6, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("scale to 6: {e:#}"));
    let grow_time = started.elapsed();
    let run = finish_bench(established);
    assert_udp_lossless(&run, "established flows across 4 → 6");
    assert_tcp_flowing(&finish_bench(tcp), TCP_PACED_STREAMS, "TCP across 4 → 6");
    let (new_pairs, _) = bytes_per_pair_during(&grown, &[5, 6], || fresh_run(&grown, FRESH_PORTS[0]));
    eprintln!("MEASURED scale 4 → 6: {grow_time:?} until the new pairs were up; new flows' bytes on pairs 5, 6: {new_pairs:?}");
    for (id, bytes) in &new_pairs {
        assert!(*bytes > 100_000, "new flows use new pair {id}: {bytes} bytes");
    }

    // 6 → 3 while 16 flows and 4 TCP streams run; some of them ride pairs 4..6, which must keep
    // them until idle.
    let established = start_bench(&grown, UDP_LOAD);
    let tcp = start_bench(&grown, TCP_PACED_LOAD);
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let shrunk = braid_lab::scale(&lab.info.name, &bin_dir(), 3, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("scale to 3: {e:#}"));
    let shrink_time = started.elapsed();
    let s = status(&shrunk);
    for id in 4..=6 {
        let p = pair(&s, id);
        assert!(!p.active, "removed pair {id} takes no new flows: {p:?}");
    }
    let run = finish_bench(established);
    assert_udp_lossless(&run, "established flows across 6 → 3");
    assert_tcp_flowing(&finish_bench(tcp), TCP_PACED_STREAMS, "TCP across 6 → 3");
    let all: Vec<u16> = (1..=6).collect();
    let (per_pair, fresh) = bytes_per_pair_during(&shrunk, &all, || fresh_run(&shrunk, FRESH_PORTS[1]));
    let total: u64 = per_pair.iter().map(|(_, b)| b).sum();
    let on_removed: u64 = per_pair.iter().filter(|(id, _)| *id > 3).map(|(_, b)| b).sum();
    eprintln!(
        "MEASURED scale 6 → 3: {shrink_time:?} until pairs 4..6 took no new flows; new flows' bytes per pair {per_pair:?}; \
         fresh run lost {}",
        fresh["totals"]["lost"]
    );
    assert!(total > 1_000_000, "the fresh run crossed the cluster: {per_pair:?}");
    assert!(
        on_removed * 100 < total,
        "new flows avoid removed pairs 4..6 (only canaries may cross them): {per_pair:?}"
    );
}
