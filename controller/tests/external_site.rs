//! A peer site that runs no braid: site b is strongSwan alone, one charon (5.9.8,
//! kernel-libipsec) per external gateway, host b behind them. Site a is braid as usual: its
//! demux and two braid gateways under `braid up`, from a cluster file that declares site b
//! `external: true` with a canary address (host b).
//!
//! ```text
//!  ns ha                ns da                   ns ga<i>                 ns gb<i> (charon)       ns hb
//!  198.18.1.2 ── 198.18.1.1 braid0 (demux a)    lan 198.18.10.1<i>        wan 198.19.0.11<i>      lo 198.18.2.2/32
//!                br-lan 198.18.10.1 ─────────── wan 198.19.0.1<i> ═ wan0 ═ site 198.18.2<i>.1 ── gw<i> 198.18.2<i>.2
//! ```
//!
//! Host b answers on 198.18.2.2 and routes every reply to site a through charon 1 (a plain
//! external site picks its return tunnel; this one always picks the first). So pair 2's
//! canaries go out through pair 2 and come back through pair 1, which the demux accepts: the
//! echo identifier and payload name the pair. Killing charon 2 takes pair 2 out of service
//! (its canaries are lost) while pair 1 keeps carrying every flow, in order.
//!
//! Run: `cargo test --release -p braid --test external_site -- --nocapture` (root, strongSwan).

#![allow(dead_code)]

mod support;

#[path = "support/strongswan.rs"]
mod strongswan;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use braid::lab::controller as lab_controller;
use braid::lab::netns::{ip, ip_in, list_namespaces, run_in, spawn_in, stop_processes_in, sysctl_in};
use braid::status::StatusSnapshot;
use braid_core::keys::{write_secret_file, ClusterSecret, PresharedKey};
use serde_json::Value;
use strongswan::{skip_without_strongswan, Charon, SwanConf};
use support::{bin_dir, skip_without_lab, udp_flows};

const PREFIX: &str = "braid-xs.";
const PAIRS: u16 = 2;
const HOST_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const HOST_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const BENCH_PORT: u16 = 5299;

fn ns(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn wan_a(pair: u16) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, (10 + pair) as u8)
}

fn wan_b(pair: u16) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, (110 + pair) as u8)
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

/// Everything the test made; removed on drop (also when it panics).
struct ExternalLab {
    dir: PathBuf,
    metrics: SocketAddr,
    controller: Option<Child>,
    server: Option<Child>,
    charons: Vec<Charon>,
}

impl Drop for ExternalLab {
    fn drop(&mut self) {
        lab_controller::stop(&self.dir);
        if let Some(mut c) = self.controller.take() {
            let _ = c.wait();
        }
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for c in &mut self.charons {
            c.stop();
        }
        remove_all();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("external lab files kept in {}", self.dir.display());
        }
    }
}

fn remove_all() {
    let namespaces = list_namespaces(PREFIX).unwrap_or_default();
    stop_processes_in(&namespaces, Duration::from_secs(2));
    for n in namespaces {
        let _ = ip(&["netns", "del", &n]);
    }
}

fn veth(ns_a: &str, name_a: &str, ns_b: &str, name_b: &str) {
    ok(ip_in(
        ns_a,
        &[
            "link", "add", "name", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b,
        ],
    ));
    ok(ip_in(ns_a, &["link", "set", "dev", name_a, "up"]));
    ok(ip_in(ns_b, &["link", "set", "dev", name_b, "up"]));
}

/// The namespaces and links of the drawing above.
fn build_network() {
    let (ha, da, hb, wan) = (ns("ha"), ns("da"), ns("hb"), ns("wan"));
    let mut all = vec![ha.clone(), da.clone(), hb.clone(), wan.clone()];
    for pair in 1..=PAIRS {
        all.push(ns(&format!("ga{pair}")));
        all.push(ns(&format!("gb{pair}")));
    }
    for n in &all {
        ok(ip(&["netns", "add", n]));
        ok(ip_in(n, &["link", "set", "dev", "lo", "up"]));
        for key in ["all", "default"] {
            ok(sysctl_in(n, &format!("net/ipv4/conf/{key}/rp_filter"), "0"));
        }
    }
    ok(ip_in(&wan, &["link", "add", "name", "wan0", "type", "bridge"]));
    ok(ip_in(&wan, &["link", "set", "dev", "wan0", "up"]));
    // Site a: host, demux namespace (the demux makes braid0 and its route), LAN bridge.
    veth(&ha, "eth0", &da, "host");
    ok(ip_in(&ha, &["addr", "add", &format!("{HOST_A}/24"), "dev", "eth0"]));
    ok(ip_in(&ha, &["route", "add", "default", "via", "198.18.1.1"]));
    ok(ip_in(&da, &["addr", "add", "198.18.1.1/24", "dev", "host"]));
    ok(ip_in(
        &da,
        &[
            "link",
            "add",
            "name",
            "br-lan",
            "address",
            "02:62:72:00:00:01",
            "type",
            "bridge",
        ],
    ));
    ok(ip_in(&da, &["addr", "add", "198.18.10.1/24", "dev", "br-lan"]));
    ok(ip_in(&da, &["link", "set", "dev", "br-lan", "up"]));
    ok(sysctl_in(&da, "net/ipv4/ip_forward", "1"));
    // Host b: its address on loopback, one link to each external gateway.
    ok(ip_in(&hb, &["addr", "add", &format!("{HOST_B}/32"), "dev", "lo"]));
    for pair in 1..=PAIRS {
        let (ga, gb) = (ns(&format!("ga{pair}")), ns(&format!("gb{pair}")));
        veth(&ga, "lan", &da, &format!("lan{pair}"));
        ok(ip_in(
            &da,
            &["link", "set", "dev", &format!("lan{pair}"), "master", "br-lan"],
        ));
        ok(ip_in(
            &ga,
            &["addr", "add", &format!("198.18.10.{}/24", 10 + pair), "dev", "lan"],
        ));
        veth(&ga, "wan", &wan, &format!("a{pair}"));
        veth(&gb, "wan", &wan, &format!("b{pair}"));
        for port in [format!("a{pair}"), format!("b{pair}")] {
            ok(ip_in(&wan, &["link", "set", "dev", &port, "master", "wan0"]));
        }
        ok(ip_in(
            &ga,
            &["addr", "add", &format!("{}/24", wan_a(pair)), "dev", "wan"],
        ));
        ok(ip_in(
            &gb,
            &["addr", "add", &format!("{}/24", wan_b(pair)), "dev", "wan"],
        ));
        let link = 20 + pair;
        veth(&gb, "site", &hb, &format!("gw{pair}"));
        ok(ip_in(
            &gb,
            &["addr", "add", &format!("198.18.{link}.1/24"), "dev", "site"],
        ));
        ok(ip_in(
            &hb,
            &[
                "addr",
                "add",
                &format!("198.18.{link}.2/24"),
                "dev",
                &format!("gw{pair}"),
            ],
        ));
        ok(ip_in(
            &gb,
            &["route", "add", "198.18.2.0/24", "via", &format!("198.18.{link}.2")],
        ));
        ok(sysctl_in(&gb, "net/ipv4/ip_forward", "1"));
        // charon (kernel-libipsec) installs its route to site a from an address of its own
        // inside its traffic selector.
        ok(ip_in(
            &gb,
            &["addr", "add", &format!("198.18.2.{}/32", 100 + pair), "dev", "lo"],
        ));
    }
    // Every reply to site a leaves through external gateway 1.
    ok(ip_in(&hb, &["route", "add", "198.18.1.0/24", "via", "198.18.21.1"]));
}

/// The cluster file: site a runs braid, site b is external.
fn write_cluster(dir: &Path, metrics: SocketAddr) -> (PathBuf, String) {
    write_secret_file(&dir.join("secret.key"), &ClusterSecret::generate().to_base64()).unwrap();
    let psk_path = dir.join("ipsec.psk");
    PresharedKey::generate().write_new(&psk_path).unwrap();
    let psk = std::fs::read_to_string(&psk_path).unwrap().trim_end().to_string();
    let mut yaml = format!(
        "cluster:\n  name: xs\n  secret_file: secret.key\n  mtu: 1400\n  suite: ipsec\n\
         ipsec:\n  psk_file: ipsec.psk\n  initiators: [a]\n  liveness_s: 2\n\
         controller:\n  address: unix:{}\n  metrics: {metrics}\n\
         sites:\n  a:\n    prefixes: [198.18.1.0/24]\n    demux: {{ tun: braid0, geneve: 198.18.10.1:6081, netns: {} }}\n\
         \x20 b:\n    external: true\n    prefixes: [198.18.2.0/24]\n    canary: {HOST_B}\npairs:\n",
        dir.join("control.sock").display(),
        ns("da"),
    );
    for pair in 1..=PAIRS {
        yaml.push_str(&format!(
            "  - id: {pair}\n    gateways:\n      a: {{ geneve: 198.18.10.{}:6081, wan: \"{}:4500\", netns: {} }}\n      b: {{ wan: \"{}:4500\" }}\n",
            10 + pair,
            wan_a(pair),
            ns(&format!("ga{pair}")),
            wan_b(pair),
        ));
    }
    let path = dir.join("cluster.yaml");
    std::fs::write(&path, yaml).unwrap();
    (path, psk)
}

fn status(metrics: SocketAddr) -> StatusSnapshot {
    ok(lab_controller::status(metrics))
}

fn pair_state(s: &StatusSnapshot, id: u16) -> (String, bool) {
    let p = s
        .pairs
        .iter()
        .find(|p| p.index == id)
        .unwrap_or_else(|| panic!("pair {id} missing"));
    (p.state.clone(), p.active)
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {timeout:?}");
}

/// Per-pair counters of demux a (its status file): (tx_bytes, canary_answered).
fn demux_pairs(dir: &Path) -> Vec<(u16, u64, u64)> {
    let text = std::fs::read_to_string(dir.join("status").join("demux-a.json")).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["pairs"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|p| {
                    Some((
                        p["id"].as_u64()? as u16,
                        p["tx_bytes"].as_u64().unwrap_or(0),
                        p["canary_answered"].as_u64().unwrap_or(0),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn bench(extra: &[&str]) -> Value {
    let mut args: Vec<String> = ["client", "-c", &HOST_B.to_string(), "--port", &BENCH_PORT.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--json".into());
    let out = ok(run_in(&ns("ha"), &bin_dir().join("braid-bench"), &args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("braid-bench printed no JSON ({e}): {out}"))
}

/// `braid ARGS`, in this namespace; its stdout.
fn braid(args: &[&str]) -> String {
    let out = ok(std::process::Command::new(bin_dir().join("braid")).args(args).output());
    assert!(
        out.status.success(),
        "braid {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn strongswan_as_the_whole_peer_site() {
    const TEST: &str = "strongswan_as_the_whole_peer_site";
    if skip_without_lab(TEST) || skip_without_strongswan(TEST) {
        return;
    }
    let started = Instant::now();
    remove_all();
    let dir = std::env::temp_dir().join("braid-xs");
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["logs", "status"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let metrics = ok(lab_controller::free_loopback_port());
    let mut lab = ExternalLab {
        dir: dir.clone(),
        metrics,
        controller: None,
        server: None,
        charons: Vec::new(),
    };
    build_network();
    let (config, psk) = write_cluster(&dir, metrics);
    let check = braid(&["check", "-c", &config.display().to_string()]);
    assert!(
        check.contains("external"),
        "braid check explains the external site:\n{check}"
    );

    // Site b: one charon per external gateway, each answering its braid gateway.
    for pair in 1..=PAIRS {
        let conf = SwanConf::new(wan_b(pair), wan_a(pair), "198.18.2.0/24", "198.18.1.0/24").with_psk(&psk);
        let charon = ok(Charon::start(
            &ns(&format!("gb{pair}")),
            &dir.join(format!("ss{pair}")),
            &conf,
        ));
        lab.charons.push(charon);
    }
    // Site a: the controller launches demux a and gateways a1, a2; nothing for site b.
    lab.controller = Some(ok(lab_controller::start(&bin_dir(), &config, &dir)));
    let pid = lab.controller.as_ref().unwrap().id();
    ok(lab_controller::wait_for(metrics, Duration::from_secs(30), pid, |s| {
        lab_controller::all_up(s, 1..=PAIRS).then_some(())
    }));
    eprintln!("both pairs up after {:?}", started.elapsed());
    let s = status(metrics);
    assert!(
        s.gateways.iter().all(|g| g.site == "a"),
        "only site a's gateways are braid's: {:?}",
        s.gateways.iter().map(|g| (&g.site, g.index)).collect::<Vec<_>>()
    );
    // `braid status` shows both pairs up.
    let text = braid(&["status", "--controller", &metrics.to_string()]);
    eprintln!("{text}");

    lab.server = Some(ok(spawn_in(
        &ns("hb"),
        &bin_dir().join("braid-bench"),
        &["server".into(), "--port".into(), BENCH_PORT.to_string()],
        &dir.join("logs").join("bench-server.log"),
    )));
    std::thread::sleep(Duration::from_millis(300));

    // 16 sequence-numbered UDP flows over both pairs: nothing lost, reordered or duplicated.
    let before = demux_pairs(&dir);
    let run = bench(&["--udp", "--rate", "16M", "--size", "1000", "-P", "16", "-t", "4"]);
    let flows = udp_flows(&run);
    assert_eq!(flows.len(), 16, "{run}");
    for f in &flows {
        assert!(f.received > 0, "flow received nothing: {f:?}");
        assert_eq!((f.lost, f.reordered, f.duplicates), (0, 0, 0), "flow {f:?}");
    }
    let after = demux_pairs(&dir);
    for pair in 1..=PAIRS {
        let sent = |v: &[(u16, u64, u64)]| v.iter().find(|p| p.0 == pair).map_or(0, |p| p.1);
        let carried = sent(&after) - sent(&before);
        eprintln!("pair {pair} carried {carried} bytes from site a");
        assert!(carried > 1_000_000, "pair {pair} carried only {carried} bytes");
    }

    // Kill charon 2: pair 2's echoes stop, it leaves service; pair 1 stays up.
    lab.charons[1].kill();
    let took = wait_until("pair 2 down", Duration::from_secs(10), || {
        let s = status(metrics);
        pair_state(&s, 2).0 != "up" || !pair_state(&s, 2).1
    });
    eprintln!("pair 2 out of service {took:?} after its strongSwan died");
    let s = status(metrics);
    let p2 = s.pairs.iter().find(|p| p.index == 2).unwrap();
    eprintln!("pair 2: {p2:?}");
    assert_eq!(pair_state(&s, 1), ("up".to_string(), true), "pair 1 stays in service");
    wait_until("membership converged without pair 2", Duration::from_secs(5), || {
        let s = status(metrics);
        s.converged && !pair_state(&s, 2).1
    });

    // Every flow now crosses pair 1, in order, nothing lost.
    let before = demux_pairs(&dir);
    let run = bench(&["--udp", "--rate", "8M", "--size", "1000", "-P", "16", "-t", "3"]);
    for f in &udp_flows(&run) {
        assert!(f.received > 0, "flow received nothing after the failure: {f:?}");
        assert_eq!(
            (f.lost, f.reordered, f.duplicates),
            (0, 0, 0),
            "after the failure: flow {f:?}"
        );
    }
    let after = demux_pairs(&dir);
    let sent = |v: &[(u16, u64, u64)], pair: u16| v.iter().find(|p| p.0 == pair).map_or(0, |p| p.1);
    assert!(
        sent(&after, 1) - sent(&before, 1) > 1_000_000,
        "pair 1 carries the flows"
    );
    let s = status(metrics);
    assert_eq!(pair_state(&s, 1), ("up".to_string(), true), "pair 1 still in service");
    assert_ne!(
        pair_state(&s, 2).0,
        "up",
        "pair 2 stays out while its strongSwan is dead"
    );
    eprintln!("{TEST}: passed in {:?}", started.elapsed());
}
