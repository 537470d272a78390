//! What the lab tests share: privilege checks, a guard that always tears the lab down, running
//! code inside a namespace, and a minimal pcap reader for WAN captures.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use braid_core::config::Suite;
use braid_lab::{self as lab, LabInfo, UpOptions};

/// Why lab tests cannot run here, if they cannot.
pub fn lab_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: the lab needs root (or CAP_NET_ADMIN) for network namespaces and TUN".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    let bin = bin_dir();
    for b in ["braid-demux", "braid-gw", "braid-bench"] {
        if !bin.join(b).is_file() {
            return Some(format!(
                "{b} is not built in {} — build all binaries first (`cargo build --workspace --bins`, as scripts/test does)",
                bin.display()
            ));
        }
    }
    None
}

/// Prints a loud skip notice and returns true when the lab cannot run. Under CI (CI=true) a
/// missing prerequisite is a failure, not a skip.
pub fn skip_without_lab(test: &str) -> bool {
    match lab_unavailable() {
        None => false,
        Some(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: the lab cannot run under CI: {why}");
            }
            eprintln!("\n======== SKIPPED {test}: {why} ========\n");
            true
        }
    }
}

/// The directory holding the workspace's binaries (the one this test's `braid` was built in).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_braid"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// The name of a test's lab for `suite`: `base` for WireGuard, `base-ip` for IPsec, so the
/// two variants of a test never share namespaces.
pub fn lab_name(base: &str, suite: Suite) -> String {
    match suite {
        Suite::WireGuard => base.to_string(),
        Suite::Ipsec => format!("{base}-ip"),
    }
}

/// A running lab, removed when dropped (also when the test panics).
pub struct Lab {
    pub info: LabInfo,
}

impl Lab {
    /// A WireGuard lab.
    pub fn up(name: &str, gateways: u16) -> Lab {
        Lab::up_with(name, gateways, Suite::WireGuard)
    }

    /// A lab whose pairs speak `suite`.
    pub fn up_with(name: &str, gateways: u16, suite: Suite) -> Lab {
        Lab::up_opts(Lab::options(name, gateways, suite))
    }

    /// A WireGuard lab run by a set of `controllers` controllers electing through etcd.
    pub fn up_controllers(name: &str, gateways: u16, controllers: u16) -> Lab {
        Lab::up_opts(UpOptions {
            controllers,
            ..Lab::options(name, gateways, Suite::WireGuard)
        })
    }

    /// A WireGuard lab whose demuxes run `threads` data threads each.
    pub fn up_threads(name: &str, gateways: u16, threads: u16) -> Lab {
        Lab::up_opts(UpOptions {
            data_threads: Some(threads),
            ..Lab::options(name, gateways, Suite::WireGuard)
        })
    }

    /// A lab of `suite` whose site a gateways sit behind a 1:1 NAT ([`UpOptions::nat`]).
    pub fn up_nat(name: &str, gateways: u16, suite: Suite) -> Lab {
        Lab::up_opts(UpOptions {
            nat: true,
            ..Lab::options(name, gateways, suite)
        })
    }

    fn options(name: &str, gateways: u16, suite: Suite) -> UpOptions {
        UpOptions {
            name: name.into(),
            gateways,
            bin_dir: bin_dir(),
            ready_timeout: Duration::from_secs(30),
            suite,
            external_peer: false,
            data_threads: None,
            controllers: 1,
            nat: false,
        }
    }

    /// An IPsec lab whose gateways seal ESP on a thread of their own (`ipsec.seal_thread`).
    pub fn up_ipsec_sealing(name: &str, gateways: u16) -> Lab {
        let ipsec = lab::IpsecLabOptions {
            seal_thread: true,
            ..lab::IpsecLabOptions::default()
        };
        Lab::up_full(Lab::options(name, gateways, Suite::Ipsec), ipsec)
    }

    fn up_opts(opts: UpOptions) -> Lab {
        Lab::up_full(opts, lab::IpsecLabOptions::default())
    }

    fn up_full(opts: UpOptions, ipsec: lab::IpsecLabOptions) -> Lab {
        let name = opts.name.clone();
        let _ = lab::down(&name);
        let info = lab::up_with(&opts, ipsec).unwrap_or_else(|e| panic!("lab up failed: {e:#}"));
        Lab { info }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.info.name) {
            eprintln!("lab down failed: {e:#}");
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file descriptor only changes this thread's namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// One captured frame's IPv4/UDP view, if it is one.
#[derive(Debug)]
pub struct UdpFrame {
    pub src: std::net::Ipv4Addr,
    pub dst: std::net::Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// What a capture file held.
#[derive(Debug, Default)]
pub struct Capture {
    pub frames: usize,
    pub udp: Vec<UdpFrame>,
    /// IPv4 frames that were not UDP.
    pub other_ipv4: usize,
    pub raw: Vec<u8>,
}

/// Reads a classic pcap file of Ethernet (linktype 1) or Linux cooked (113) frames.
pub fn read_pcap(path: &Path) -> Capture {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(raw.len() >= 24, "capture {} is empty", path.display());
    let magic = u32::from_le_bytes(raw[0..4].try_into().unwrap());
    assert!(
        magic == 0xa1b2c3d4 || magic == 0xa1b23c4d,
        "not a little-endian pcap file"
    );
    let linktype = u32::from_le_bytes(raw[20..24].try_into().unwrap());
    let link_len = match linktype {
        1 => 14,
        113 => 16,
        other => panic!("unsupported pcap link type {other}"),
    };
    let mut cap = Capture::default();
    let mut off = 24;
    while off + 16 <= raw.len() {
        let incl = u32::from_le_bytes(raw[off + 8..off + 12].try_into().unwrap()) as usize;
        let frame = &raw[off + 16..(off + 16 + incl).min(raw.len())];
        off += 16 + incl;
        cap.frames += 1;
        if frame.len() < link_len + 20 || frame[link_len - 2..link_len] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[link_len..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 17 {
            cap.other_ipv4 += 1;
            continue;
        }
        if ip.len() < ihl + 8 {
            continue;
        }
        let udp = &ip[ihl..];
        cap.udp.push(UdpFrame {
            src: std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst: std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            src_port: u16::from_be_bytes([udp[0], udp[1]]),
            dst_port: u16::from_be_bytes([udp[2], udp[3]]),
            payload: udp[8..].to_vec(),
        });
    }
    cap.raw = raw;
    cap
}

/// Whether `payload` is a well-formed WireGuard message (type, reserved zeros, length).
pub fn is_wireguard_message(payload: &[u8]) -> bool {
    if payload.len() < 4 || payload[1..4] != [0, 0, 0] {
        return false;
    }
    match payload[0] {
        1 => payload.len() == 148,
        2 => payload.len() == 92,
        3 => payload.len() == 64,
        // Header, counter and tag; boringtun does not pad the inner packet to 16 bytes.
        4 => payload.len() >= 32,
        _ => false,
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends one IPv4/UDP datagram with a forged source through a raw socket (IP_HDRINCL), from the
/// calling thread's namespace. The UDP checksum is left zero (allowed for IPv4).
pub fn send_forged_udp(src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4, payload: &[u8]) {
    send_raw_ipv4(&ipv4_udp_frame(src, dst, payload), *dst.ip());
}

/// Sends a hand-made IPv4 packet (header included) through a raw socket. The kernel fills in the
/// header checksum and total length.
pub fn send_raw_ipv4(packet: &[u8], dst: std::net::Ipv4Addr) {
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the buffer and address are valid for the lengths given; fd is ours and closed after.
    let rc = unsafe {
        let rc = libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        libc::close(fd);
        rc
    };
    assert!(rc >= 0, "raw sendto: {}", std::io::Error::last_os_error());
}

/// A daemon's counter from its status file (0 when absent).
pub fn counter(info: &LabInfo, role: &str, site: &str, index: u16, name: &str) -> u64 {
    let p = info
        .processes
        .iter()
        .find(|p| p.role == role && p.site == site && p.index == index)
        .unwrap_or_else(|| panic!("no {role} {site}{index} in the lab"));
    lab::read_status(&p.status_file)
        .and_then(|s| s["counters"][name].as_u64())
        .unwrap_or(0)
}

/// Waits (up to 3 s, the status files refresh every 500 ms) until `check` holds.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}");
}

// ---------------------------------------------------------------------------------------------
// Chaos under load: the failover, re-cluster and controller-loss tests share what follows.

use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use braid::status::{GatewayStatus, PairStatus, StatusSnapshot};
use braid_lab::controller as lab_controller;
use serde_json::Value;

/// The sequence-numbered UDP load every chaos test runs: 40 Mbit/s of 1000-byte datagrams over
/// 16 flows, 10 s.
pub const UDP_LOAD: &[&str] = &["--udp", "--rate", "40M", "--size", "1000", "-P", "16", "-t", "10"];
/// Flows in [`UDP_LOAD`].
pub const UDP_FLOWS: usize = 16;
/// Datagrams per second each flow of [`UDP_LOAD`] sends (40 Mbit/s / 8000 bit / 16 flows).
pub const UDP_FLOW_PPS: f64 = 40e6 / 8000.0 / 16.0;
/// The TCP load: 8 verified streams, 10 s.
pub const TCP_LOAD: &[&str] = &["-P", "8", "-t", "10"];
/// TCP beside [`UDP_LOAD`]: 4 verified streams paced to 40 Mbit/s in all, 10 s, so that both
/// loads fit the two cores together and a loss is braid's, not the CPU's.
pub const TCP_PACED_LOAD: &[&str] = &["-P", "4", "-b", "40M", "-t", "10"];
/// Streams in [`TCP_PACED_LOAD`].
pub const TCP_PACED_STREAMS: usize = 4;
/// The longest a flow on a failed pair may go without a datagram.
pub const FAILOVER_BUDGET_MS: f64 = 1000.0;

/// One lab at a time per test binary (the machine has two cores; labs would disturb each other).
pub fn one_lab_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `braid-bench client ARGS` from host a on a background thread.
pub fn start_bench(info: &LabInfo, args: &'static [&'static str]) -> JoinHandle<Value> {
    let info = info.clone();
    std::thread::spawn(move || {
        braid_lab::demo::bench_client(&info, &bin_dir(), args).unwrap_or_else(|e| panic!("bench {args:?}: {e:#}"))
    })
}

/// Waits for a background bench run.
pub fn finish_bench(run: JoinHandle<Value>) -> Value {
    run.join().unwrap_or_else(|_| panic!("the bench thread panicked"))
}

/// The controller's pid, as the lab recorded it.
pub fn controller_pid(info: &LabInfo) -> u32 {
    info.processes
        .iter()
        .find(|p| p.role == "controller")
        .map(|p| p.pid)
        .expect("the lab lists its controller")
}

/// The controller's status right now.
pub fn status(info: &LabInfo) -> StatusSnapshot {
    lab_controller::status(info.metrics).unwrap_or_else(|e| panic!("controller status: {e:#}"))
}

/// Gateway `site``index` in `s`.
pub fn gateway<'a>(s: &'a StatusSnapshot, site: &str, index: u16) -> &'a GatewayStatus {
    s.gateways
        .iter()
        .find(|g| g.site == site && g.index == index)
        .unwrap_or_else(|| panic!("no gateway {site}{index} in the status"))
}

/// Pair `index` in `s`.
pub fn pair(s: &StatusSnapshot, index: u16) -> &PairStatus {
    s.pairs
        .iter()
        .find(|p| p.index == index)
        .unwrap_or_else(|| panic!("no pair {index} in the status"))
}

/// Waits until every pair of `pairs` is up, active and answering canaries; returns how long
/// that took.
pub fn wait_all_up(info: &LabInfo, pairs: std::ops::RangeInclusive<u16>, timeout: Duration) -> Duration {
    let started = Instant::now();
    lab_controller::wait_for(info.metrics, timeout, controller_pid(info), |s| {
        lab_controller::all_up(s, pairs.clone()).then_some(())
    })
    .unwrap_or_else(|e| panic!("pairs {pairs:?} did not all come up: {e:#}"));
    started.elapsed()
}

/// The controller's Prometheus exposition.
pub fn metrics_text(info: &LabInfo) -> String {
    braid::http::get(info.metrics, "/metrics").unwrap_or_else(|e| panic!("GET /metrics: {e:#}"))
}

/// The value of the sample `series` (name and labels exactly as exported) in `text`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a pid the test read from the lab's own status.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    lab_controller::alive(pid)
}

/// Continues a stopped process when dropped, so a failing test never leaves one frozen.
pub struct ThawOnDrop(pub u32);

impl Drop for ThawOnDrop {
    fn drop(&mut self) {
        if process_alive(self.0) {
            // SAFETY: SIGCONT to the process this guard froze; harmless if it runs.
            unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
        }
    }
}

/// Datagrams per second demux `site` sends into each pair, measured between two refreshes of
/// its status file `window` apart (timed at the refreshes, so the 500 ms refresh period does
/// not blur the figure).
pub fn pair_packet_rates(info: &LabInfo, site: &str, window: Duration) -> Vec<(u16, f64)> {
    let path = info
        .processes
        .iter()
        .find(|p| p.role == "demux" && p.site == site)
        .map(|p| p.status_file.clone())
        .unwrap_or_else(|| panic!("no demux {site} in the lab"));
    let (t0, first) = next_status_refresh(&path);
    std::thread::sleep(window.saturating_sub(Duration::from_millis(250)));
    let (t1, second) = next_status_refresh(&path);
    let seconds = (t1 - t0).as_secs_f64();
    let packets = |status: &Value, id: u64| {
        status["pairs"]
            .as_array()
            .and_then(|pairs| pairs.iter().find(|p| p["id"] == id))
            .and_then(|p| p["tx_packets"].as_u64())
            .unwrap_or(0)
    };
    second["pairs"]
        .as_array()
        .expect("the demux status lists pairs")
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .map(|id| {
            let delta = packets(&second, id).saturating_sub(packets(&first, id));
            (id as u16, delta as f64 / seconds)
        })
        .collect()
}

/// Waits for the status file at `path` to be rewritten; returns when that was seen, and it.
fn next_status_refresh(path: &Path) -> (Instant, Value) {
    let before = std::fs::read(path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(now) = std::fs::read(path) {
            if now != before {
                if let Ok(v) = serde_json::from_slice(&now) {
                    return (Instant::now(), v);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{} was not refreshed within 3 s", path.display());
}

/// How many [`UDP_LOAD`] flows a pair sending `pps` datagrams per second carries.
pub fn udp_flows_at(pps: f64) -> usize {
    (pps / UDP_FLOW_PPS).round() as usize
}

/// One UDP flow's figures from a bench report.
#[derive(Debug, Clone, Copy)]
pub struct FlowFigures {
    pub index: u64,
    pub received: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub max_gap_ms: f64,
}

/// Every flow of a UDP bench report.
pub fn udp_flows(run: &Value) -> Vec<FlowFigures> {
    let flows = run["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("no UDP flows in {run}"));
    flows
        .iter()
        .map(|f| FlowFigures {
            index: f["index"].as_u64().unwrap_or(0),
            received: f["received"].as_u64().unwrap_or(0),
            lost: f["lost"].as_u64().unwrap_or(u64::MAX),
            reordered: f["reordered"].as_u64().unwrap_or(u64::MAX),
            duplicates: f["duplicates"].as_u64().unwrap_or(u64::MAX),
            max_gap_ms: f["max_gap_ms"].as_f64().unwrap_or(f64::INFINITY),
        })
        .collect()
}

/// Asserts a UDP run lost, reordered and duplicated nothing on any flow.
pub fn assert_udp_lossless(run: &Value, what: &str) {
    let flows = udp_flows(run);
    assert_eq!(flows.len(), UDP_FLOWS, "{what}: flow count in {run}");
    for f in &flows {
        assert!(f.received > 0, "{what}: flow received nothing: {f:?}");
        assert_eq!((f.lost, f.reordered, f.duplicates), (0, 0, 0), "{what}: flow {f:?}");
    }
}

/// What a UDP run across one pair's failure showed.
#[derive(Debug)]
pub struct FailoverFigures {
    /// Flows that lost datagrams (they must all have been on the failed pair).
    pub affected: usize,
    /// The largest gap of any affected flow.
    pub affected_max_gap_ms: f64,
    /// Datagrams lost over all flows.
    pub lost: u64,
}

/// Asserts a UDP run across the failure of a pair that carried `on_failed_pair` of its flows:
/// nothing reordered or duplicated anywhere; only that many flows lost anything; each of them
/// resumed within [`FAILOVER_BUDGET_MS`] and lost no more than that much time's datagrams.
/// A 3 s failover fails the gap and loss bounds; a loss on any other pair fails the count.
pub fn assert_udp_failover(run: &Value, on_failed_pair: usize, what: &str) -> FailoverFigures {
    let flows = udp_flows(run);
    assert_eq!(flows.len(), UDP_FLOWS, "{what}: flow count in {run}");
    for f in &flows {
        assert!(f.received > 0, "{what}: flow received nothing: {f:?}");
        assert_eq!(
            (f.reordered, f.duplicates),
            (0, 0),
            "{what}: flow reordered or duplicated: {f:?}"
        );
    }
    let affected: Vec<&FlowFigures> = flows.iter().filter(|f| f.lost > 0).collect();
    let figures = FailoverFigures {
        affected: affected.len(),
        affected_max_gap_ms: affected.iter().map(|f| f.max_gap_ms).fold(0.0, f64::max),
        lost: affected.iter().map(|f| f.lost).sum(),
    };
    eprintln!("{what}: {figures:?} (flows on the failed pair: {on_failed_pair})");
    assert!(
        figures.affected <= on_failed_pair,
        "{what}: {} flows lost datagrams but only {on_failed_pair} were on the failed pair: {affected:?}",
        figures.affected
    );
    for f in &affected {
        assert!(
            f.max_gap_ms <= FAILOVER_BUDGET_MS,
            "{what}: an affected flow stalled {} ms (budget {FAILOVER_BUDGET_MS} ms): {f:?}",
            f.max_gap_ms
        );
    }
    let budget = (UDP_FLOW_PPS * FAILOVER_BUDGET_MS / 1000.0 * figures.affected as f64).ceil() as u64;
    assert!(
        figures.lost <= budget,
        "{what}: {} datagrams lost, more than {FAILOVER_BUDGET_MS} ms of {} flows ({budget})",
        figures.lost,
        figures.affected
    );
    figures
}

/// Asserts a TCP run delivered every byte intact on every stream.
pub fn assert_tcp_intact(run: &Value, streams: usize, what: &str) {
    assert_eq!(
        run["integrity_ok"],
        Value::Bool(true),
        "{what}: integrity failed: {run}"
    );
    assert_eq!(
        run["complete"],
        Value::Bool(true),
        "{what}: a stream did not end cleanly: {run}"
    );
    let per_stream = run["streams"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no streams in {run}"));
    assert_eq!(per_stream.len(), streams, "{what}: stream count");
    for s in per_stream {
        assert!(
            s["bytes"].as_u64().unwrap_or(0) > 0,
            "{what}: a stream carried nothing: {s}"
        );
        assert_eq!(s["corrupted_bytes"].as_u64(), Some(0), "{what}: corrupted stream {s}");
    }
}

/// Asserts that a paced TCP run was intact ([`assert_tcp_intact`]) and never stalled: every
/// one-second interval carried data.
pub fn assert_tcp_flowing(run: &Value, streams: usize, what: &str) {
    assert_tcp_intact(run, streams, what);
    let intervals = run["intervals"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no intervals in {run}"));
    assert!(!intervals.is_empty(), "{what}: no intervals");
    for interval in intervals {
        assert!(
            interval["bytes"].as_u64().unwrap_or(0) > 0,
            "{what}: TCP stalled for a whole interval: {interval}"
        );
    }
}

/// What the controller showed while one gateway was failed and recovered.
#[derive(Debug)]
pub struct Recovery {
    /// From the failure to a new pid for the gateway in the status (None if it kept its pid).
    pub new_pid_after: Option<Duration>,
    pub new_pid: Option<u32>,
    /// From the failure to the pair's first "down" in the status.
    pub down_after: Duration,
    /// Why the status said the pair went down.
    pub down_reason: Option<String>,
    /// From the failure to the pair being up, active and answering canaries again.
    pub up_after: Duration,
    /// The lowest `braid_pairs_up` /metrics showed meanwhile.
    pub min_pairs_up_metric: f64,
    /// `braid_pairs_up` once recovered.
    pub pairs_up_metric_after: f64,
}

/// Watches the controller (status and /metrics, every 20 ms) from `since`, the moment gateway
/// `site``index` (pid `old_pid`) was failed, until the gateway has a new pid (when
/// `expect_restart`) and its pair has gone down and come back up with every other pair.
pub fn watch_recovery(
    info: &LabInfo,
    site: &str,
    index: u16,
    old_pid: u32,
    expect_restart: bool,
    since: Instant,
    timeout: Duration,
) -> Recovery {
    let mut new_pid = None;
    let mut down: Option<(Duration, Option<String>)> = None;
    let mut min_pairs_up = f64::INFINITY;
    loop {
        let text = metrics_text(info);
        let pairs_up = metric(&text, "braid_pairs_up").expect("/metrics exports braid_pairs_up");
        let s = status(info);
        if pairs_up < min_pairs_up {
            min_pairs_up = pairs_up;
            let states: Vec<String> = s
                .pairs
                .iter()
                .map(|p| format!("{}:{}({:?})", p.index, p.state, p.last_failure))
                .collect();
            eprintln!(
                "watch_recovery: braid_pairs_up {pairs_up} at {:?}, pairs {}",
                since.elapsed(),
                states.join(" ")
            );
        }
        let g = gateway(&s, site, index);
        if new_pid.is_none() && g.pid.is_some_and(|p| p != old_pid) {
            new_pid = Some((since.elapsed(), g.pid.unwrap_or(0)));
        }
        let p = pair(&s, index);
        if down.is_none() && p.state != "up" {
            down = Some((since.elapsed(), p.last_failure.clone()));
        }
        let restarted = new_pid.is_some() || !expect_restart;
        if let Some((down_after, down_reason)) = &down {
            if restarted && lab_controller::all_up(&s, 1..=info.gateways) {
                return Recovery {
                    new_pid_after: new_pid.map(|(t, _)| t),
                    new_pid: new_pid.map(|(_, p)| p),
                    down_after: *down_after,
                    down_reason: down_reason.clone(),
                    up_after: since.elapsed(),
                    min_pairs_up_metric: min_pairs_up,
                    pairs_up_metric_after: metric(&metrics_text(info), "braid_pairs_up").unwrap_or(-1.0),
                };
            }
        }
        assert!(
            since.elapsed() < timeout,
            "gateway {site}{index} did not recover within {timeout:?}: new pid {new_pid:?}, down {down:?}, pair {p:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls the controller's status until `check` returns something (panics after `timeout`).
pub fn wait_status<T>(info: &LabInfo, timeout: Duration, check: impl FnMut(&StatusSnapshot) -> Option<T>) -> T {
    lab_controller::wait_for(info.metrics, timeout, controller_pid(info), check).unwrap_or_else(|e| panic!("{e:#}"))
}

// ---------------------------------------------------------------------------------------------
// Floods: forged handshakes at a gateway's WAN port.

/// Gives the lab's WAN bridge the address `addr`/24 so a test can send into the WAN from the
/// WAN namespace (the bridge has no address of its own). The namespace goes with the lab.
pub fn add_wan_address(info: &LabInfo, addr: std::net::Ipv4Addr) {
    let out = std::process::Command::new("ip")
        .args([
            "-n",
            &info.wan.netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &info.wan.interface,
        ])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip addr add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A WireGuard handshake initiation (148 bytes) with sender index `sender` and random-looking
/// ephemeral key, static and timestamp, whose mac1 is valid for the responder `responder_public`
/// (BLAKE2s per the WireGuard paper: mac1 = MAC(HASH("mac1----" ‖ public key), msg[..116])).
/// Anyone can make one: the responder's public key is all it takes. mac2 is zero (no cookie).
pub fn forged_initiation(responder_public: &[u8; 32], sender: u32, seed: u64) -> [u8; 148] {
    use blake2::digest::{consts::U16, Digest, Mac};
    let mut msg = [0u8; 148];
    msg[0] = 1;
    msg[4..8].copy_from_slice(&sender.to_le_bytes());
    let mut x = seed | 1;
    for b in &mut msg[8..116] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let key = blake2::Blake2s256::new()
        .chain_update(b"mac1----")
        .chain_update(responder_public)
        .finalize();
    let mut mac = <blake2::Blake2sMac<U16> as Mac>::new_from_slice(&key).expect("a 32-byte key");
    mac.update(&msg[..116]);
    msg[116..132].copy_from_slice(&mac.finalize().into_bytes());
    msg
}

/// What a flood sent.
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    pub sent: u64,
    pub send_errors: u64,
    pub seconds: f64,
}

impl FloodReport {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.seconds
    }
}

/// Sends the prepared `payloads` round-robin to `dst`, each forged from its own source, paced to
/// `pps` datagrams per second for `duration`, through one raw socket (IP_HDRINCL) opened in the
/// calling thread's namespace. Sources must lie in the lab's own range (198.18.0.0/15).
pub fn flood_forged_udp(
    packets: &[(std::net::SocketAddrV4, Vec<u8>)],
    dst: std::net::SocketAddrV4,
    pps: u64,
    duration: Duration,
) -> FloodReport {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let lab_range = |ip: &std::net::Ipv4Addr| ip.octets()[0] == 198 && (ip.octets()[1] & 0xfe) == 18;
    assert!(lab_range(dst.ip()), "floods stay inside the lab: {dst}");
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).expect("raw socket");
    socket.set_header_included_v4(true).expect("IP_HDRINCL");
    let frames: Vec<Vec<u8>> = packets
        .iter()
        .map(|(src, payload)| {
            assert!(lab_range(src.ip()), "forged sources stay inside the lab: {src}");
            ipv4_udp_frame(*src, dst, payload)
        })
        .collect();
    let to = SockAddr::from(dst);
    let started = Instant::now();
    let (mut sent, mut send_errors) = (0u64, 0u64);
    const CHUNK: u64 = 256;
    while started.elapsed() < duration {
        for _ in 0..CHUNK {
            let frame = &frames[(sent + send_errors) as usize % frames.len()];
            match socket.send_to(frame, &to) {
                Ok(_) => sent += 1,
                Err(_) => send_errors += 1,
            }
        }
        let due = Duration::from_secs_f64((sent + send_errors) as f64 / pps as f64);
        if let Some(ahead) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
    FloodReport {
        sent,
        send_errors,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// An IPv4/UDP packet from `src` to `dst`; the kernel fills in the IP checksum and the UDP
/// checksum stays zero (allowed for IPv4).
fn ipv4_udp_frame(src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut pkt = vec![0u8; 28 + payload.len()];
    pkt[0] = 0x45;
    let total = pkt.len() as u16;
    pkt[2..4].copy_from_slice(&total.to_be_bytes());
    pkt[8] = 64;
    pkt[9] = 17;
    pkt[12..16].copy_from_slice(&src.ip().octets());
    pkt[16..20].copy_from_slice(&dst.ip().octets());
    pkt[20..22].copy_from_slice(&src.port().to_be_bytes());
    pkt[22..24].copy_from_slice(&dst.port().to_be_bytes());
    pkt[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    pkt[28..].copy_from_slice(payload);
    pkt
}

// ---------------------------------------------------------------------------------------------
// Captures: tcpdump in a lab namespace, and which pair each flow's GENEVE packets crossed.

/// A tcpdump writing a pcap file, stopped (SIGTERM) by [`Tcpdump::finish`] or when dropped.
pub struct Tcpdump {
    child: Option<std::process::Child>,
    path: PathBuf,
}

impl Tcpdump {
    /// Starts tcpdump on `interface` in namespace `netns`, keeping `snaplen` bytes of each
    /// frame that matches `filter` (a pcap filter expression; empty for everything), writing
    /// `path`; returns once it has had time to attach.
    pub fn start(netns: &str, interface: &str, snaplen: u32, filter: &str, path: &Path) -> Tcpdump {
        let mut args: Vec<String> = ["netns", "exec", netns, "tcpdump", "-i", interface, "-U", "-s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(snaplen.to_string());
        args.push("-w".into());
        args.push(path.display().to_string());
        args.extend(filter.split_whitespace().map(str::to_string));
        let child = std::process::Command::new("ip")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tcpdump is needed for lab captures (apt-get install tcpdump)");
        std::thread::sleep(Duration::from_millis(800));
        Tcpdump {
            child: Some(child),
            path: path.to_path_buf(),
        }
    }

    /// Stops the capture (after a moment for frames in flight) and reads what it wrote.
    pub fn finish(mut self) -> Capture {
        std::thread::sleep(Duration::from_millis(300));
        self.stop();
        read_pcap(&self.path)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the tcpdump child this guard started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A flow as braid steers it: protocol and its two ends, in canonical (sorted) order, so both
/// directions of a connection are one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InnerFlow {
    pub protocol: u8,
    pub ends: [std::net::SocketAddrV4; 2],
}

/// The GENEVE demux↔gateway traffic on site `site`'s LAN (a capture of `br-lan` in its demux's
/// namespace, see [`capture_site_lan`]): for every inner IPv4 TCP or UDP flow whose ends are
/// both in `hosts`, the pairs its packets crossed in either direction, told by the gateway's LAN
/// address (the outer destination of what the demux sent, the outer source of what it got).
pub fn flow_pairs(
    cap: &Capture,
    info: &LabInfo,
    site: &str,
) -> std::collections::BTreeMap<InnerFlow, std::collections::BTreeSet<u16>> {
    let topo = braid_lab::topology::Topology::new(&info.name, info.gateways).expect("the lab's topology");
    let gateway_of = |ip: std::net::Ipv4Addr| topo.pair_ids().find(|&p| topo.gateway_lan(site, p) == ip);
    let hosts = [info.hosts.a.addr, info.hosts.b.addr];
    let mut out: std::collections::BTreeMap<InnerFlow, std::collections::BTreeSet<u16>> = Default::default();
    for f in &cap.udp {
        if f.src_port != 6081 && f.dst_port != 6081 {
            continue;
        }
        let Some(pair) = gateway_of(f.dst).or_else(|| gateway_of(f.src)) else {
            continue;
        };
        let Some(flow) = geneve_inner_flow(&f.payload) else {
            continue;
        };
        if flow.ends.iter().all(|e| hosts.contains(e.ip())) {
            out.entry(flow).or_default().insert(pair);
        }
    }
    out
}

/// The inner flow of a GENEVE payload carrying IPv4 TCP or UDP (first fragments only).
fn geneve_inner_flow(geneve: &[u8]) -> Option<InnerFlow> {
    let header = 8 + usize::from(geneve.first()? & 0x3f) * 4;
    if geneve.get(2..4)? != [0x08, 0x00] {
        return None;
    }
    let ip = geneve.get(header..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let protocol = *ip.get(9)?;
    let fragment_offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
    if !(protocol == 6 || protocol == 17) || fragment_offset != 0 {
        return None;
    }
    let ports = ip.get(ihl..ihl + 4)?;
    let addr = |at: usize, port: usize| {
        std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]),
            u16::from_be_bytes([ports[port], ports[port + 1]]),
        )
    };
    let mut ends = [addr(12, 0), addr(16, 2)];
    ends.sort();
    Some(InnerFlow { protocol, ends })
}

/// Starts a capture of the GENEVE traffic between site `site`'s demux and its gateways (the
/// demux namespace's LAN bridge), into `file` in the lab's state directory. 128 bytes of each
/// frame hold the outer headers, GENEVE and the inner IPv4 and ports.
pub fn capture_site_lan(info: &LabInfo, site: &str, file: &str) -> Tcpdump {
    let netns = info
        .processes
        .iter()
        .find(|p| p.role == "demux" && p.site == site)
        .map(|p| p.netns.clone())
        .unwrap_or_else(|| panic!("no demux {site} in the lab"));
    Tcpdump::start(&netns, "br-lan", 128, "udp port 6081", &info.state_dir.join(file))
}
