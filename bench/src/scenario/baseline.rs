//! `braid-bench baseline`: braid against one plain userspace WireGuard tunnel, measured in the
//! same run, and braid-bench's TCP figure against iperf3's on every path.
//!
//! Each baseline is two namespaces joined by a veth pair, a WireGuard daemon in each
//! (boringtun-cli, wireguard-go) configured with `wg set`, and a 1420-byte tunnel MTU — the same
//! shape as one braid lane without the demux. braid runs as a two-pair lab. On every path the
//! same multi-stream TCP test runs twice: once with braid-bench, once with iperf3, so the report
//! shows braid's ratio to each implementation and how far braid-bench and iperf3 agree. An
//! implementation that is not installed is skipped with the reason.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use braid::demo::BenchServer;
use braid::lab::netns::{ip, ip_in, list_namespaces, run_in, spawn_in, stop_processes_in};
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
    WireguardGo,
}

impl Implementation {
    pub const ALL: [Implementation; 2] = [Implementation::BoringtunCli, Implementation::WireguardGo];

    pub fn name(self) -> &'static str {
        match self {
            Implementation::BoringtunCli => "boringtun-cli",
            Implementation::WireguardGo => "wireguard-go",
        }
    }

    /// Where the program is, if installed.
    pub fn program(self) -> Option<PathBuf> {
        let candidates: Vec<PathBuf> = match self {
            Implementation::BoringtunCli => {
                let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
                vec![
                    home.join(".cargo/bin/boringtun-cli"),
                    "/usr/local/bin/boringtun-cli".into(),
                ]
            }
            Implementation::WireguardGo => vec!["/usr/bin/wireguard-go".into(), "/usr/local/bin/wireguard-go".into()],
        };
        candidates.into_iter().find(|p| p.is_file())
    }

    /// The daemon's command line for interface `dev`, in the foreground.
    fn command(self, program: &Path, ns: &str, dev: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "env"]);
        match self {
            Implementation::BoringtunCli => {
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
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    pub streams: u32,
    pub seconds: f64,
    pub paths: Vec<PathFigures>,
    /// braid's braid-bench figure over each baseline's, by implementation.
    pub braid_ratio: Vec<(String, f64)>,
    pub skipped: Vec<String>,
}

/// Runs braid and every installed baseline, one after the other.
pub fn run(streams: u32, seconds: f64, bin_dir: &Path) -> Result<BaselineReport> {
    let bench = bin_dir.join("braid-bench");
    let mut paths = Vec::new();
    let mut skipped = Vec::new();
    {
        eprintln!("baseline: braid, 2 pairs…");
        let lab = LabRun::up(&lab_name("bl"), 2, bin_dir)?;
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
        paths.push(figures("braid (2 pairs)", figure, iperf, &mut skipped));
    }
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
        paths.push(figures(imp.name(), figure, iperf, &mut skipped));
    }
    let braid = paths[0].braid_bench.mbps;
    let braid_ratio = paths[1..]
        .iter()
        .filter(|p| p.braid_bench.mbps > 0.0)
        .map(|p| (p.path.clone(), braid / p.braid_bench.mbps))
        .collect();
    Ok(BaselineReport {
        streams,
        seconds,
        paths,
        braid_ratio,
        skipped,
    })
}

fn figures(path: &str, figure: TcpFigure, iperf: Result<f64>, skipped: &mut Vec<String>) -> PathFigures {
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
        let port = BENCH_PORT.to_string();
        let mut server = spawn_in(
            &self.ns_b,
            bench,
            &["server".into(), "--port".into(), port.clone()],
            &self.dir.join("bench-server.log"),
        )?;
        thread::sleep(Duration::from_millis(300));
        let args: Vec<String> = [
            "client",
            "-c",
            Self::INNER_B,
            "--port",
            &port,
            "-P",
            &streams.to_string(),
            "-t",
            &seconds.to_string(),
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = run_in(&self.ns_a, bench, &args);
        let _ = server.kill();
        let _ = server.wait();
        tcp_figure(&serde_json::from_str(&out?).context("braid-bench printed no JSON")?)
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
        "TCP, {} streams, {} s per run\npath                 braid-bench   iperf3   bench/iperf3\n",
        r.streams, r.seconds
    );
    for p in &r.paths {
        let iperf = p.iperf3_mbps.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into());
        let agreement = p.agreement.map(|a| format!("{a:.3}")).unwrap_or_else(|| "-".into());
        s += &format!(
            "{:<20} {:>11.0} {:>8} {:>14}\n",
            p.path, p.braid_bench.mbps, iperf, agreement
        );
    }
    for (path, ratio) in &r.braid_ratio {
        s += &format!("braid / {path}: {ratio:.2}\n");
    }
    for skip in &r.skipped {
        s += &format!("skipped: {skip}\n");
    }
    s
}
