//! `braid-bench baseline`: braid's WireGuard pairs and braid's IPsec pairs side by side, and
//! braid against one plain userspace WireGuard tunnel, all measured in the same run, with
//! braid-bench's TCP figure against iperf3's on every path.
//!
//! braid runs as a lab of `--pairs` pairs (2 by default) for each suite of `--suites`
//! (WireGuard, then IPsec, by default), one lab after the other in this process, each with the
//! same traffic: the report gives each suite's figures and IPsec's over WireGuard's. With
//! `--udp-size`, every path also carries sequence-numbered UDP flows of small datagrams at
//! `--udp-rate` offered, which measures the per-packet cost (delivered packets per second)
//! rather than the per-byte cost TCP's large segments show.
//!
//! Each baseline is two namespaces joined by a veth pair, a WireGuard daemon in each
//! (boringtun-cli; gotatun, its maintained fork, which takes the same command line; wireguard-go)
//! configured with `wg set`, and a 1420-byte tunnel MTU — the same shape as one braid lane
//! without the demux. On every path the same multi-stream TCP test runs twice: once with
//! braid-bench, once with iperf3, so the report shows braid's ratio to each implementation and
//! how far braid-bench and iperf3 agree. The small-packet UDP run is the same braid-bench client
//! on every path, braid's and the baselines', so braid's delivered packets per second are
//! compared with each baseline's too. An implementation that is not installed is skipped with
//! the reason.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use braid_lab::demo::{bench_client, BenchServer};
use braid_lab::netns::{ip, ip_in, list_namespaces, run_in, spawn_in, stop_processes_in};
use braid_lab::Suite;
use serde::Serialize;
use serde_json::Value;

use super::{lab_name, lab_tcp, tcp_figure, LabRun, TcpFigure};

const IPERF_PORT: u16 = 5202;
const BENCH_PORT: u16 = 5201;
const TUNNEL_MTU: &str = "1420";

/// A userspace WireGuard implementation to compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    BoringtunCli,
    /// boringtun's maintained fork; its `gotatun` program takes boringtun-cli's command line.
    Gotatun,
    WireguardGo,
}

impl Implementation {
    pub const ALL: [Implementation; 3] = [
        Implementation::BoringtunCli,
        Implementation::Gotatun,
        Implementation::WireguardGo,
    ];

    /// The name of the implementation, which is also the name of its program.
    pub fn name(self) -> &'static str {
        match self {
            Implementation::BoringtunCli => "boringtun-cli",
            Implementation::Gotatun => "gotatun",
            Implementation::WireguardGo => "wireguard-go",
        }
    }

    /// Where the program is, if installed: `cargo install`'s directory for the Rust ones, the
    /// distribution's for wireguard-go, then /usr/local/bin.
    pub fn program(self) -> Option<PathBuf> {
        let first = match self {
            Implementation::BoringtunCli | Implementation::Gotatun => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".cargo/bin"),
            Implementation::WireguardGo => "/usr/bin".into(),
        };
        [first, "/usr/local/bin".into()]
            .into_iter()
            .map(|dir| dir.join(self.name()))
            .find(|p| p.is_file())
    }

    /// The daemon's command line for interface `dev`, in the foreground.
    fn command(self, program: &Path, ns: &str, dev: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "env"]);
        match self {
            Implementation::BoringtunCli | Implementation::Gotatun => {
                c.arg("WG_SUDO=1")
                    .arg(program)
                    .args([dev, "--foreground", "--disable-drop-privileges"]);
            }
            Implementation::WireguardGo => {
                c.arg("WG_PROCESS_FOREGROUND=1").arg(program).arg(dev);
            }
        }
        c
    }
}

/// One path's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PathFigures {
    pub path: String,
    pub braid_bench: TcpFigure,
    pub iperf3_mbps: Option<f64>,
    /// braid-bench / iperf3.
    pub agreement: Option<f64>,
    /// The small-packet UDP run, when `--udp-size` asked for one.
    pub udp: Option<UdpFigure>,
}

/// The small-packet UDP run of every path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmallUdp {
    /// UDP payload bytes per datagram (braid-bench's header included, at least 32).
    pub size: usize,
    /// Offered rate over all flows (k, M or G suffix, bits per second of payload).
    pub rate: String,
    /// Flows (distinct 5-tuples, so every pair carries some).
    pub flows: u32,
}

/// What the scenario measures.
#[derive(Debug, Clone)]
pub struct BaselineOptions {
    /// Parallel TCP streams on every path.
    pub streams: u32,
    /// Seconds of every run.
    pub seconds: f64,
    /// Gateway pairs of each braid lab.
    pub pairs: u16,
    /// braid's suites, measured in this order; never empty, no suite twice.
    pub suites: Vec<Suite>,
    /// Also a small-packet UDP run on every path, braid's and the baselines'.
    pub udp: Option<SmallUdp>,
}

/// What a small-packet UDP run delivered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UdpFigure {
    /// Payload bytes per datagram.
    pub size: usize,
    pub flows: u32,
    pub seconds: f64,
    /// Datagrams the sender got out, per second (what it offered, if it kept up).
    pub sent_pps: f64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_percent: f64,
    /// Datagrams received per second of the run: the figure compared across suites.
    pub delivered_pps: f64,
    /// Payload Mbit/s received.
    pub delivered_mbps: f64,
}

/// One braid suite's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteFigures {
    /// `"wireguard"` or `"ipsec"`.
    pub suite: Suite,
    /// Its entry in `paths`.
    pub path: String,
    pub pairs: u16,
    pub tcp: TcpFigure,
    pub iperf3_mbps: Option<f64>,
    pub udp: Option<UdpFigure>,
}

/// IPsec's figures over WireGuard's, from the same run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SuiteRatios {
    /// braid-bench TCP Mbit/s.
    pub tcp: f64,
    /// iperf3 TCP Mbit/s, when both suites have one.
    pub tcp_iperf3: Option<f64>,
    /// Small-packet UDP, delivered datagrams per second.
    pub udp_pps: Option<f64>,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    pub streams: u32,
    pub seconds: f64,
    /// Gateway pairs of each braid lab.
    pub pairs: u16,
    /// Every braid suite (in the order measured), then every baseline.
    pub paths: Vec<PathFigures>,
    /// The braid path the baselines are compared with: braid's WireGuard pairs when measured
    /// (like with like), else the first suite's.
    pub braid_ratio_of: String,
    /// That braid path's braid-bench figure over each baseline's, by implementation.
    pub braid_ratio: RatioByPath,
    /// That braid path's small-packet UDP delivered packets per second over each baseline's, by
    /// implementation, when both ran it.
    pub braid_udp_ratio: RatioByPath,
    /// Each braid suite measured, in order.
    pub suites: Vec<SuiteFigures>,
    /// IPsec over WireGuard, when both were measured.
    pub ipsec_over_wireguard: Option<SuiteRatios>,
    pub skipped: Vec<String>,
}

/// How a braid path is named in the report.
pub fn braid_path(suite: Suite, pairs: u16) -> String {
    let label = match suite {
        Suite::WireGuard => "WireGuard",
        Suite::Ipsec => "IPsec",
    };
    format!("braid {label} ({pairs} pair{})", if pairs == 1 { "" } else { "s" })
}

/// Runs every braid suite and every installed baseline, one after the other.
pub fn run(options: &BaselineOptions, bin_dir: &Path) -> Result<BaselineReport> {
    let BaselineOptions {
        streams,
        seconds,
        pairs,
        ..
    } = *options;
    ensure!(!options.suites.is_empty(), "no braid suite to measure");
    for (i, suite) in options.suites.iter().enumerate() {
        ensure!(!options.suites[..i].contains(suite), "--suites lists {suite} twice");
    }
    let bench = bin_dir.join("braid-bench");
    let mut paths = Vec::new();
    let mut suites = Vec::new();
    let mut skipped = Vec::new();
    for &suite in &options.suites {
        let path = braid_path(suite, pairs);
        eprintln!("baseline: {path}…");
        let tag = match suite {
            Suite::WireGuard => "bl",
            Suite::Ipsec => "bi",
        };
        let lab = LabRun::up_with(&lab_name(tag), pairs, suite, bin_dir)?;
        let _server = BenchServer::start(&lab.info, bin_dir)?;
        let figure = lab_tcp(&lab, streams, seconds)?;
        let iperf = iperf3(
            &lab.info.hosts.a.netns,
            &lab.info.hosts.b.netns,
            &lab.info.hosts.b.addr.to_string(),
            streams,
            seconds,
            &lab.info.state_dir.join("logs"),
        );
        let udp = small_udp_on(&path, options, |args| bench_client(&lab.info, &lab.bin_dir, args))?;
        let figures = figures(&path, figure, iperf, udp, &mut skipped);
        suites.push(SuiteFigures {
            suite,
            path,
            pairs,
            tcp: figure,
            iperf3_mbps: figures.iperf3_mbps,
            udp,
        });
        paths.push(figures);
    }
    let braid_paths = paths.len();
    for imp in Implementation::ALL {
        let Some(program) = imp.program() else {
            skipped.push(format!("{}: not installed", imp.name()));
            continue;
        };
        eprintln!("baseline: {}…", imp.name());
        let tunnel = Tunnel::up(imp, &program)?;
        let figure = tunnel.tcp(&bench, streams, seconds)?;
        let iperf = iperf3(
            &tunnel.ns_a,
            &tunnel.ns_b,
            Tunnel::INNER_B,
            streams,
            seconds,
            &tunnel.dir,
        );
        let udp = small_udp_on(imp.name(), options, |args| tunnel.bench_client(&bench, args))?;
        paths.push(figures(imp.name(), figure, iperf, udp, &mut skipped));
    }
    // The braid paths come first in `paths`, in the order of `suites`.
    let reference = suites.iter().position(|s| s.suite == Suite::WireGuard).unwrap_or(0);
    let (braid_ratio, braid_udp_ratio) = braid_ratios(&paths[reference], &paths[braid_paths..]);
    Ok(BaselineReport {
        streams,
        seconds,
        pairs,
        braid_ratio_of: paths[reference].path.clone(),
        paths,
        braid_ratio,
        braid_udp_ratio,
        ipsec_over_wireguard: suite_ratios(&suites),
        suites,
        skipped,
    })
}

/// Ratios of one braid path's figure to each baseline's, by the baseline's name.
pub type RatioByPath = Vec<(String, f64)>;

/// `num / den`, unless `den` is not positive (a path that carried nothing).
fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

/// `braid`'s figures over each baseline's, by implementation: braid-bench TCP Mbit/s, then
/// small-packet UDP delivered packets per second where both paths ran it.
pub fn braid_ratios(braid: &PathFigures, baselines: &[PathFigures]) -> (RatioByPath, RatioByPath) {
    let tcp = baselines
        .iter()
        .filter_map(|p| Some((p.path.clone(), ratio(braid.braid_bench.mbps, p.braid_bench.mbps)?)))
        .collect();
    let udp = baselines
        .iter()
        .filter_map(|p| {
            let (b, p_udp) = braid.udp.zip(p.udp)?;
            Some((p.path.clone(), ratio(b.delivered_pps, p_udp.delivered_pps)?))
        })
        .collect();
    (tcp, udp)
}

/// IPsec's figures over WireGuard's, when both suites were measured.
pub fn suite_ratios(suites: &[SuiteFigures]) -> Option<SuiteRatios> {
    let of = |suite| suites.iter().find(|s| s.suite == suite);
    let (wg, ipsec) = (of(Suite::WireGuard)?, of(Suite::Ipsec)?);
    Some(SuiteRatios {
        tcp: ratio(ipsec.tcp.mbps, wg.tcp.mbps)?,
        tcp_iperf3: ipsec.iperf3_mbps.zip(wg.iperf3_mbps).and_then(|(i, w)| ratio(i, w)),
        udp_pps: wg
            .udp
            .zip(ipsec.udp)
            .and_then(|(w, i)| ratio(i.delivered_pps, w.delivered_pps)),
    })
}

/// The small-packet UDP run on `path`, when `options` asks for one: `client` runs
/// `braid-bench client` with the given arguments against a bench server across the path and
/// returns its JSON report.
fn small_udp_on(
    path: &str,
    options: &BaselineOptions,
    client: impl FnOnce(&[&str]) -> Result<Value>,
) -> Result<Option<UdpFigure>> {
    let Some(udp) = &options.udp else {
        return Ok(None);
    };
    eprintln!("baseline: {path}, {}-byte UDP datagrams…", udp.size);
    let (size, flows, t) = (udp.size.to_string(), udp.flows.to_string(), options.seconds.to_string());
    let report = client(&[
        "--udp", "--rate", &udp.rate, "--size", &size, "-P", &flows, "-t", &t, "-i", &t, "--drain", "1",
    ])
    .and_then(|report| udp_figure(&report, udp.size, udp.flows))
    .with_context(|| format!("small-packet UDP through {path}"))?;
    Ok(Some(report))
}

/// Reads the figures of a `braid-bench client --udp --json` report, refusing a corrupted run.
pub fn udp_figure(report: &Value, size: usize, flows: u32) -> Result<UdpFigure> {
    if report["integrity_ok"].as_bool() != Some(true) {
        bail!("the UDP run reported payload corruption: {report}");
    }
    let totals = &report["totals"];
    let count = |field: &str| {
        totals[field]
            .as_u64()
            .with_context(|| format!("report has no totals.{field}"))
    };
    let seconds = report["duration_s"]
        .as_f64()
        .filter(|s| *s > 0.0)
        .context("report has no duration_s")?;
    let (sent, received) = (count("sent")?, count("received")?);
    Ok(UdpFigure {
        size,
        flows,
        seconds,
        sent_pps: sent as f64 / seconds,
        sent,
        received,
        lost: count("lost")?,
        loss_percent: totals["loss_percent"].as_f64().unwrap_or(0.0),
        delivered_pps: received as f64 / seconds,
        delivered_mbps: count("bytes")? as f64 * 8.0 / seconds / 1e6,
    })
}

fn figures(
    path: &str,
    figure: TcpFigure,
    iperf: Result<f64>,
    udp: Option<UdpFigure>,
    skipped: &mut Vec<String>,
) -> PathFigures {
    let iperf3_mbps = match iperf {
        Ok(mbps) => Some(mbps),
        Err(e) => {
            skipped.push(format!("iperf3 on {path}: {e:#}"));
            None
        }
    };
    PathFigures {
        path: path.into(),
        braid_bench: figure,
        iperf3_mbps,
        agreement: iperf3_mbps.filter(|m| *m > 0.0).map(|m| figure.mbps / m),
        udp,
    }
}

/// Runs iperf3 from namespace `client_ns` to a one-shot iperf3 server in `server_ns`, and returns
/// the receiver's Mbit/s.
pub fn iperf3(client_ns: &str, server_ns: &str, server: &str, streams: u32, seconds: f64, logs: &Path) -> Result<f64> {
    let port = IPERF_PORT.to_string();
    let mut server_process = spawn_in(
        server_ns,
        Path::new("iperf3"),
        &["-s".into(), "-1".into(), "-p".into(), port.clone()],
        &logs.join("iperf3-server.log"),
    )
    .context("cannot start iperf3 (install the iperf3 package)")?;
    thread::sleep(Duration::from_millis(300));
    let args: Vec<String> = [
        "-c",
        server,
        "-p",
        &port,
        "-P",
        &streams.to_string(),
        "-t",
        &seconds.to_string(),
        "-J",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = run_in(client_ns, Path::new("iperf3"), &args);
    let _ = server_process.kill();
    let _ = server_process.wait();
    let json: Value = serde_json::from_str(&out?).context("iperf3 printed no JSON")?;
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3's JSON has no end.sum_received")?;
    Ok(bps / 1e6)
}

/// One WireGuard tunnel between two namespaces; removed on drop.
#[derive(Debug)]
struct Tunnel {
    ns_a: String,
    ns_b: String,
    dir: PathBuf,
    daemons: Vec<Child>,
}

impl Tunnel {
    const OUTER: [&'static str; 2] = ["198.18.0.1", "198.18.0.2"];
    const INNER: [&'static str; 2] = ["198.19.0.1", "198.19.0.2"];
    const INNER_B: &'static str = "198.19.0.2";

    fn up(imp: Implementation, program: &Path) -> Result<Tunnel> {
        let stem = lab_name("wg");
        let mut tunnel = Tunnel {
            ns_a: format!("{stem}a"),
            ns_b: format!("{stem}b"),
            dir: std::env::temp_dir().join(format!("braid-bench-{stem}")),
            daemons: Vec::new(),
        };
        fs::create_dir_all(&tunnel.dir)?;
        fs::set_permissions(&tunnel.dir, fs::Permissions::from_mode(0o700))?;
        let ns = [tunnel.ns_a.clone(), tunnel.ns_b.clone()];
        for n in &ns {
            ip(&["netns", "add", n])?;
            ip_in(n, &["link", "set", "dev", "lo", "up"])?;
        }
        ip_in(
            &ns[0],
            &[
                "link", "add", "name", "wan", "type", "veth", "peer", "name", "wan", "netns", &ns[1],
            ],
        )?;
        let keys = [wg_key()?, wg_key()?];
        let publics = [wg_public(&keys[0])?, wg_public(&keys[1])?];
        for side in 0..2 {
            let (n, dev, peer) = (&ns[side], format!("wg{side}"), 1 - side);
            ip_in(n, &["addr", "add", &format!("{}/24", Self::OUTER[side]), "dev", "wan"])?;
            ip_in(n, &["link", "set", "dev", "wan", "up"])?;
            let log = fs::File::create(tunnel.dir.join(format!("{dev}.log")))?;
            let child = imp
                .command(program, n, &dev)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {}", program.display()))?;
            tunnel.daemons.push(child);
            wait_for_link(n, &dev)?;
            let key_file = tunnel.dir.join(format!("{dev}.key"));
            fs::write(&key_file, &keys[side])?;
            let status = Command::new("ip")
                .args(["netns", "exec", n, "wg", "set", &dev, "private-key"])
                .arg(&key_file)
                .args(["listen-port", "51820", "peer", &publics[peer], "endpoint"])
                .arg(format!("{}:51820", Self::OUTER[peer]))
                .args(["allowed-ips", &format!("{}/32", Self::INNER[peer])])
                .status()
                .context("cannot run `wg` (install wireguard-tools)")?;
            if !status.success() {
                bail!("`wg set {dev}` failed in {n}");
            }
            ip_in(n, &["addr", "add", &format!("{}/24", Self::INNER[side]), "dev", &dev])?;
            ip_in(n, &["link", "set", "dev", &dev, "mtu", TUNNEL_MTU, "up"])?;
        }
        Ok(tunnel)
    }

    /// braid-bench TCP through the tunnel.
    fn tcp(&self, bench: &Path, streams: u32, seconds: f64) -> Result<TcpFigure> {
        let (p, t) = (streams.to_string(), seconds.to_string());
        tcp_figure(&self.bench_client(bench, &["-P", &p, "-t", &t])?)
    }

    /// Runs `braid-bench client ARGS --json` on side a against a bench server started for it
    /// on side b, across the tunnel, and parses its JSON.
    fn bench_client(&self, bench: &Path, extra: &[&str]) -> Result<Value> {
        let port = BENCH_PORT.to_string();
        let mut server = spawn_in(
            &self.ns_b,
            bench,
            &["server".into(), "--port".into(), port.clone()],
            &self.dir.join("bench-server.log"),
        )?;
        thread::sleep(Duration::from_millis(300));
        let args: Vec<String> = ["client", "-c", Self::INNER_B, "--port", &port]
            .into_iter()
            .chain(extra.iter().copied())
            .chain(["--json"])
            .map(String::from)
            .collect();
        let out = run_in(&self.ns_a, bench, &args);
        let _ = server.kill();
        let _ = server.wait();
        let out = out?;
        serde_json::from_str(&out).with_context(|| format!("braid-bench printed no JSON: {out}"))
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        let ours: Vec<String> = [&self.ns_a, &self.ns_b]
            .iter()
            .filter(|n| list_namespaces(n).map(|l| l.contains(n)).unwrap_or(false))
            .map(|n| n.to_string())
            .collect();
        stop_processes_in(&ours, Duration::from_secs(2));
        for n in &ours {
            let _ = ip(&["netns", "del", n]);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn wait_for_link(ns: &str, dev: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ip_in(ns, &["link", "show", "dev", dev]).is_err() {
        if Instant::now() > deadline {
            bail!("the WireGuard daemon did not create {dev} in {ns}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn wg_key() -> Result<String> {
    let out = Command::new("wg")
        .arg("genkey")
        .output()
        .context("cannot run `wg genkey` (install wireguard-tools)")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn wg_public(private: &str) -> Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run `wg pubkey`")?;
    child.stdin.take().context("no stdin")?.write_all(private.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The text summary.
pub fn render(r: &BaselineReport) -> String {
    let mut s = format!(
        "TCP, {} streams, {} s per run; braid: {} pair(s) per suite, one suite after the other\n\
         path                        braid-bench   iperf3   bench/iperf3\n",
        r.streams, r.seconds, r.pairs
    );
    for p in &r.paths {
        let iperf = p.iperf3_mbps.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into());
        let agreement = p.agreement.map(|a| format!("{a:.3}")).unwrap_or_else(|| "-".into());
        s += &format!(
            "{:<27} {:>11.0} {:>8} {:>14}\n",
            p.path, p.braid_bench.mbps, iperf, agreement
        );
    }
    let udp: Vec<(&PathFigures, &UdpFigure)> = r.paths.iter().filter_map(|p| Some((p, p.udp.as_ref()?))).collect();
    if let Some((_, first)) = udp.first() {
        s += &format!(
            "small-packet UDP, {}-byte datagrams, {} flows, {} s per run\n\
             path                          sent pps  delivered pps   Mbit/s   lost %\n",
            first.size, first.flows, first.seconds
        );
        for (p, u) in &udp {
            s += &format!(
                "{:<27} {:>11.0} {:>14.0} {:>8.1} {:>8.2}\n",
                p.path, u.sent_pps, u.delivered_pps, u.delivered_mbps, u.loss_percent
            );
        }
    }
    if let Some(q) = &r.ipsec_over_wireguard {
        s += &format!("IPsec / WireGuard (same run): TCP {:.3}", q.tcp);
        if let Some(iperf) = q.tcp_iperf3 {
            s += &format!(" (iperf3 {iperf:.3})");
        }
        if let Some(pps) = q.udp_pps {
            s += &format!(", small-packet UDP {pps:.3} (delivered pps)");
        }
        s += "\n";
    }
    for (path, ratio) in &r.braid_ratio {
        s += &format!("{} / {path}: TCP {ratio:.2}", r.braid_ratio_of);
        if let Some((_, pps)) = r.braid_udp_ratio.iter().find(|(p, _)| p == path) {
            s += &format!(", small-packet UDP {pps:.2} (delivered pps)");
        }
        s += "\n";
    }
    for skip in &r.skipped {
        s += &format!("skipped: {skip}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(suite: Suite, mbps: f64, iperf3_mbps: Option<f64>, delivered_pps: Option<f64>) -> SuiteFigures {
        SuiteFigures {
            suite,
            path: braid_path(suite, 2),
            pairs: 2,
            tcp: TcpFigure {
                mbps,
                bytes: 1,
                retransmits: 0,
            },
            iperf3_mbps,
            udp: delivered_pps.map(|pps| UdpFigure {
                size: 64,
                flows: 4,
                seconds: 8.0,
                sent_pps: pps,
                sent: 8,
                received: 8,
                lost: 0,
                loss_percent: 0.0,
                delivered_pps: pps,
                delivered_mbps: 1.0,
            }),
        }
    }

    #[test]
    fn ipsec_is_compared_with_wireguard_whatever_the_order() {
        let wg = suite(Suite::WireGuard, 2000.0, Some(2100.0), Some(100_000.0));
        let ipsec = suite(Suite::Ipsec, 1500.0, None, Some(80_000.0));
        let expected = SuiteRatios {
            tcp: 0.75,
            tcp_iperf3: None,
            udp_pps: Some(0.8),
        };
        assert_eq!(suite_ratios(&[wg.clone(), ipsec.clone()]), Some(expected));
        assert_eq!(suite_ratios(&[ipsec.clone(), wg.clone()]), Some(expected));
        assert_eq!(suite_ratios(std::slice::from_ref(&wg)), None, "one suite: no ratio");
        let no_udp = suite(Suite::Ipsec, 1050.0, Some(1050.0), None);
        assert_eq!(
            suite_ratios(&[wg, no_udp]),
            Some(SuiteRatios {
                tcp: 0.525,
                tcp_iperf3: Some(0.5),
                udp_pps: None
            })
        );
        assert_eq!(braid_path(Suite::Ipsec, 1), "braid IPsec (1 pair)");
    }

    #[test]
    fn udp_figures_come_from_the_client_report() {
        let report = serde_json::json!({
            "duration_s": 2.0,
            "integrity_ok": true,
            "totals": {"sent": 1000, "received": 900, "lost": 100, "loss_percent": 10.0, "bytes": 57_600},
        });
        let figure = udp_figure(&report, 64, 4).unwrap();
        assert_eq!((figure.sent_pps, figure.delivered_pps), (500.0, 450.0));
        assert!((figure.delivered_mbps - 0.2304).abs() < 1e-9);
        assert_eq!((figure.lost, figure.loss_percent), (100, 10.0));
        let corrupted = serde_json::json!({"duration_s": 2.0, "integrity_ok": false, "totals": {}});
        assert!(udp_figure(&corrupted, 64, 4).is_err());
    }

    #[test]
    fn the_summary_shows_each_suite_and_their_ratio() {
        let suites = vec![
            suite(Suite::WireGuard, 2000.0, Some(2100.0), Some(100_000.0)),
            suite(Suite::Ipsec, 1500.0, Some(1575.0), Some(80_000.0)),
        ];
        let mut paths: Vec<PathFigures> = suites
            .iter()
            .map(|s| figures(&s.path, s.tcp, Ok(s.iperf3_mbps.unwrap()), s.udp, &mut Vec::new()))
            .collect();
        let gotatun = suite(Suite::WireGuard, 500.0, None, Some(40_000.0));
        paths.push(figures("gotatun", gotatun.tcp, Ok(510.0), gotatun.udp, &mut Vec::new()));
        let (braid_ratio, braid_udp_ratio) = braid_ratios(&paths[0], &paths[2..]);
        let report = BaselineReport {
            streams: 4,
            seconds: 8.0,
            pairs: 2,
            paths,
            braid_ratio_of: suites[0].path.clone(),
            braid_ratio,
            braid_udp_ratio,
            ipsec_over_wireguard: suite_ratios(&suites),
            suites,
            skipped: Vec::new(),
        };
        let text = render(&report);
        assert!(
            text.contains("braid WireGuard (2 pairs)          2000     2100          0.952\n"),
            "{text}"
        );
        assert!(
            text.contains("braid IPsec (2 pairs)              1500     1575          0.952\n"),
            "{text}"
        );
        assert!(
            text.contains("small-packet UDP, 64-byte datagrams, 4 flows, 8 s per run\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "IPsec / WireGuard (same run): TCP 0.750 (iperf3 0.750), small-packet UDP 0.800 (delivered pps)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("gotatun                             500      510          0.980\n"),
            "{text}"
        );
        assert!(
            text.contains("gotatun                           40000          40000      1.0     0.00\n"),
            "{text}"
        );
        assert!(
            text.contains("braid WireGuard (2 pairs) / gotatun: TCP 4.00, small-packet UDP 2.50 (delivered pps)\n"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["suites"][1]["suite"], "ipsec");
        assert_eq!(json["ipsec_over_wireguard"]["udp_pps"], 0.8);
        assert_eq!(json["paths"][2]["udp"]["delivered_pps"], 40_000.0);
        assert_eq!(json["braid_udp_ratio"][0], serde_json::json!(["gotatun", 2.5]));
    }

    #[test]
    fn braid_is_compared_with_each_baseline_that_carried_traffic() {
        let path = |name: &str, mbps: f64, pps: Option<f64>| {
            let s = suite(Suite::WireGuard, mbps, None, pps);
            figures(name, s.tcp, Ok(mbps), s.udp, &mut Vec::new())
        };
        let braid = path("braid", 2000.0, Some(90_000.0));
        let baselines = [
            path("boringtun-cli", 400.0, Some(30_000.0)),
            path("gotatun", 800.0, None),
            path("wireguard-go", 0.0, Some(0.0)),
        ];
        let (tcp, udp) = braid_ratios(&braid, &baselines);
        assert_eq!(tcp, vec![("boringtun-cli".into(), 5.0), ("gotatun".into(), 2.5)]);
        assert_eq!(
            udp,
            vec![("boringtun-cli".to_string(), 3.0)],
            "no UDP figure or nothing delivered: no ratio"
        );
        let (_, none) = braid_ratios(&path("braid", 2000.0, None), &baselines);
        assert!(none.is_empty(), "braid without a UDP run: no UDP ratio");
    }

    #[test]
    fn every_baseline_has_a_program_name_and_a_command_line() {
        let names: Vec<&str> = Implementation::ALL.iter().map(|i| i.name()).collect();
        assert_eq!(names, ["boringtun-cli", "gotatun", "wireguard-go"]);
        let args = |imp: Implementation| -> Vec<String> {
            imp.command(Path::new("/bin/prog"), "ns", "wg0")
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let rust = [
            "netns",
            "exec",
            "ns",
            "env",
            "WG_SUDO=1",
            "/bin/prog",
            "wg0",
            "--foreground",
            "--disable-drop-privileges",
        ];
        assert_eq!(args(Implementation::BoringtunCli), rust);
        assert_eq!(args(Implementation::Gotatun), rust);
        assert_eq!(
            args(Implementation::WireguardGo),
            [
                "netns",
                "exec",
                "ns",
                "env",
                "WG_PROCESS_FOREGROUND=1",
                "/bin/prog",
                "wg0"
            ]
        );
    }
}
