//! `braid lab`: two sites on one machine, built from network namespaces and veth pairs.
//!
//! [`topology`] says where everything goes (pure), [`netns`] runs `ip`, [`cluster_file`]
//! writes the configuration, and this module puts them together: [`up`] builds the namespaces,
//! starts one demux per site and one gateway per site and pair, and returns only once traffic
//! has crossed every pair; [`down`] removes everything a lab of that name made — its
//! processes, namespaces (which takes their links with them) and state directory — whether the
//! lab is healthy, half-built or left over from a crashed run.

pub mod cluster_file;
pub mod netns;
pub mod topology;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use netns::{ip, ip_in, spawn_in, sysctl_in};
use topology::{Topology, SITES};

/// Where labs keep their configuration, logs and status files.
pub const STATE_ROOT: &str = "/run/braid/lab";

/// The bridge in the WAN namespace that every gateway-to-gateway packet crosses.
pub const WAN_BRIDGE: &str = "wan0";

/// The UDP port of the readiness probe responder in host b.
const PROBE_PORT: u16 = 5299;
/// How many distinct flows the readiness probe sends (enough that every pair gets some).
const PROBE_FLOWS: u32 = 256;

/// What `braid lab up --json` prints, and what `lab.json` in the state directory holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabInfo {
    pub name: String,
    pub gateways: u16,
    pub hosts: Hosts,
    pub wan: Wan,
    pub processes: Vec<LabProcess>,
    pub state_dir: PathBuf,
    pub config: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hosts {
    pub a: HostInfo,
    pub b: HostInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    pub netns: String,
    pub addr: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wan {
    pub netns: String,
    pub interface: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabProcess {
    pub role: String,
    pub site: String,
    pub index: u16,
    pub pid: u32,
    pub netns: String,
    pub status_file: PathBuf,
    pub log: PathBuf,
}

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    pub gateways: u16,
    /// Where `braid-demux`, `braid-gw` and `braid-bench` are.
    pub bin_dir: PathBuf,
    /// How long to wait for every pair to carry traffic.
    pub ready_timeout: Duration,
}

/// The state directory of lab `name`.
pub fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// The directory holding the running `braid` binary, where its sibling binaries are installed.
pub fn default_bin_dir() -> PathBuf {
    std::env::var_os("BRAID_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Reads `lab.json` of a running lab.
pub fn load_info(name: &str) -> Result<LabInfo> {
    let path = state_dir(name).join("lab.json");
    let text = fs::read_to_string(&path).with_context(|| format!("lab {name:?} is not up (no {})", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a lab description", path.display()))
}

/// Builds lab `opts.name` and returns once every gateway pair carries traffic. On any failure
/// everything built so far is removed again.
pub fn up(opts: &UpOptions) -> Result<LabInfo> {
    netns::check_privileges()?;
    let topo = Topology::new(&opts.name, opts.gateways).map_err(anyhow::Error::msg)?;
    for bin in ["braid-demux", "braid-gw", "braid-bench"] {
        if !opts.bin_dir.join(bin).is_file() {
            bail!(
                "{} not found in {} (build the workspace with `cargo build --release`, or set BRAID_BIN_DIR)",
                bin,
                opts.bin_dir.display()
            );
        }
    }
    if !netns::list_namespaces(&topo.ns_prefix())?.is_empty() {
        bail!("lab {:?} already exists; remove it with `braid lab down --name {}`", topo.name, topo.name);
    }
    let mut guard = TeardownGuard { name: topo.name.clone(), armed: true };
    let info = build(&topo, opts)?;
    guard.armed = false;
    Ok(info)
}

/// Removes everything lab `name` made. Succeeds whether or not the lab exists.
pub fn down(name: &str) -> Result<()> {
    Topology::new(name, 1).map_err(anyhow::Error::msg)?;
    netns::check_privileges()?;
    let namespaces = netns::list_namespaces(&topology::ns_prefix(name))?;
    netns::stop_processes_in(&namespaces, Duration::from_secs(3));
    let mut failures = Vec::new();
    for ns in &namespaces {
        if let Err(e) = ip(&["netns", "del", ns]) {
            failures.push(e.to_string());
        }
    }
    let dir = state_dir(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    if !failures.is_empty() {
        bail!("lab {name:?} was not removed completely: {}", failures.join("; "));
    }
    tracing::info!(lab = name, namespaces = namespaces.len(), "lab removed");
    Ok(())
}

/// Removes a half-built lab when `up` fails.
struct TeardownGuard {
    name: String,
    armed: bool,
}

impl Drop for TeardownGuard {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = down(&self.name) {
                tracing::error!("cleaning up the failed lab: {e:#}");
            }
        }
    }
}

fn build(topo: &Topology, opts: &UpOptions) -> Result<LabInfo> {
    let dir = state_dir(&topo.name);
    for sub in ["logs", "status"] {
        fs::create_dir_all(dir.join(sub)).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let config = cluster_file::write_lab_cluster(topo, &dir)?;
    build_network(topo)?;

    let mut processes = Vec::new();
    let mut children = Vec::new();
    for site in SITES {
        for pair in std::iter::once(0).chain(topo.pair_ids()) {
            let role = if pair == 0 { "demux" } else { "gw" };
            let (process, child) = start_daemon(topo, opts, &dir, &config, role, site, pair)?;
            processes.push(process);
            children.push(child);
        }
    }
    let info = LabInfo {
        name: topo.name.clone(),
        gateways: topo.pairs,
        hosts: Hosts {
            a: HostInfo { netns: topo.host_ns("a"), addr: topo.site("a").host },
            b: HostInfo { netns: topo.host_ns("b"), addr: topo.site("b").host },
        },
        wan: Wan { netns: topo.wan_ns(), interface: WAN_BRIDGE.into() },
        processes,
        state_dir: dir.clone(),
        config,
    };
    fs::write(dir.join("lab.json"), serde_json::to_string_pretty(&info)?)?;
    wait_until_ready(topo, opts, &info, &mut children)?;
    Ok(info)
}

fn build_network(topo: &Topology) -> Result<()> {
    for ns in topo.namespaces() {
        ip(&["netns", "add", &ns])?;
        ip_in(&ns, &["link", "set", "dev", "lo", "up"])?;
    }
    let wan = topo.wan_ns();
    ip_in(&wan, &["link", "add", "name", WAN_BRIDGE, "type", "bridge"])?;
    ip_in(&wan, &["link", "set", "dev", WAN_BRIDGE, "up"])?;
    for site in SITES {
        let s = topo.site(site);
        let (host, demux) = (topo.host_ns(site), topo.demux_ns(site));
        veth(&host, "eth0", &demux, "host")?;
        ip_in(&host, &["addr", "add", &format!("{}/24", s.host), "dev", "eth0"])?;
        ip_in(&host, &["route", "add", "default", "via", &s.router.to_string()])?;
        ip_in(&demux, &["addr", "add", &format!("{}/24", s.router), "dev", "host"])?;
        ip_in(&demux, &["link", "add", "name", "br-lan", "type", "bridge"])?;
        ip_in(&demux, &["addr", "add", &format!("{}/24", s.lan), "dev", "br-lan"])?;
        ip_in(&demux, &["link", "set", "dev", "br-lan", "up"])?;
        sysctl_in(&demux, "net/ipv4/ip_forward", "1")?;
        for pair in topo.pair_ids() {
            let gw = topo.gateway_ns(site, pair);
            let lan_port = format!("lan{pair}");
            veth(&gw, "lan", &demux, &lan_port)?;
            ip_in(&demux, &["link", "set", "dev", &lan_port, "master", "br-lan"])?;
            ip_in(&gw, &["addr", "add", &format!("{}/24", topo.gateway_lan(site, pair)), "dev", "lan"])?;
            let wan_port = format!("{site}{pair}");
            veth(&gw, "wan", &wan, &wan_port)?;
            ip_in(&wan, &["link", "set", "dev", &wan_port, "master", WAN_BRIDGE])?;
            ip_in(&gw, &["addr", "add", &format!("{}/24", topo.gateway_wan(site, pair)), "dev", "wan"])?;
        }
    }
    Ok(())
}

/// A veth pair between two namespaces, both ends up.
fn veth(ns_a: &str, name_a: &str, ns_b: &str, name_b: &str) -> Result<()> {
    ip_in(ns_a, &["link", "add", "name", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b])?;
    ip_in(ns_a, &["link", "set", "dev", name_a, "up"])?;
    ip_in(ns_b, &["link", "set", "dev", name_b, "up"])
}

#[allow(clippy::too_many_arguments)]
fn start_daemon(
    topo: &Topology,
    opts: &UpOptions,
    dir: &Path,
    config: &Path,
    role: &str,
    site: &str,
    pair: u16,
) -> Result<(LabProcess, Child)> {
    let (ns, stem, bin) = if role == "demux" {
        (topo.demux_ns(site), format!("demux-{site}"), "braid-demux")
    } else {
        (topo.gateway_ns(site, pair), format!("gw-{site}{pair}"), "braid-gw")
    };
    let status_file = dir.join("status").join(format!("{stem}.json"));
    let log = dir.join("logs").join(format!("{stem}.log"));
    let mut args = vec!["--config".into(), config.display().to_string(), "--site".into(), site.to_string()];
    if role == "gw" {
        args.extend(["--pair".into(), pair.to_string()]);
    }
    args.extend(["--status-file".into(), status_file.display().to_string()]);
    let child = spawn_in(&ns, &opts.bin_dir.join(bin), &args, &log)
        .with_context(|| format!("cannot start {bin} in {ns}"))?;
    let process = LabProcess { role: role.into(), site: site.into(), index: pair, pid: child.id(), netns: ns, status_file, log };
    Ok((process, child))
}

/// Reads a daemon's status JSON, if it has written one yet.
pub fn read_status(path: &Path) -> Option<serde_json::Value> {
    fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok())
}

fn wait_until_ready(topo: &Topology, opts: &UpOptions, info: &LabInfo, children: &mut [Child]) -> Result<()> {
    let deadline = Instant::now() + opts.ready_timeout;
    // Every daemon alive and every gateway's WireGuard session established.
    loop {
        let mut waiting = Vec::new();
        for (p, child) in info.processes.iter().zip(children.iter_mut()) {
            if !matches!(child.try_wait(), Ok(None)) {
                let tail = log_tail(&p.log, 5);
                bail!("{} {}{} exited during start-up; its log {} ends with:\n{tail}", p.role, p.site, p.index, p.log.display());
            }
            let established = read_status(&p.status_file)
                .map(|s| p.role == "demux" || s["session_established"].as_bool() == Some(true))
                .unwrap_or(false);
            if !established {
                waiting.push(format!("{} {}{}", p.role, p.site, p.index));
            }
        }
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {}", waiting.join(", "));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    probe_every_pair(topo, opts, info, deadline)
}

/// Sends UDP probes over many flows from host a to host b until every pair has carried traffic
/// in both directions, as counted by demux a.
fn probe_every_pair(topo: &Topology, opts: &UpOptions, info: &LabInfo, deadline: Instant) -> Result<()> {
    let bench = opts.bin_dir.join("braid-bench");
    let server_log = info.state_dir.join("logs").join("probe-server.log");
    let mut server = spawn_in(
        &topo.host_ns("b"),
        &bench,
        &["server".into(), "--port".into(), PROBE_PORT.to_string()],
        &server_log,
    )?;
    let result = (|| {
        let demux_a = info.processes.iter().find(|p| p.role == "demux" && p.site == "a").context("no demux a")?;
        loop {
            let args = [
                "probe".into(),
                "-c".into(),
                topo.site("b").host.to_string(),
                "--port".into(),
                PROBE_PORT.to_string(),
                "--flows".into(),
                PROBE_FLOWS.to_string(),
                "--timeout".into(),
                "1".into(),
            ];
            let _ = netns::run_in(&topo.host_ns("a"), &bench, &args);
            std::thread::sleep(Duration::from_millis(600));
            let silent = silent_pairs(topo, &demux_a.status_file);
            if silent.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out: no traffic came back through pair(s) {silent:?}");
            }
        }
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// The pairs a demux's status shows no returning packets on.
fn silent_pairs(topo: &Topology, status_file: &Path) -> Vec<u16> {
    let status = read_status(status_file);
    topo.pair_ids()
        .filter(|id| {
            let rx = status.as_ref().and_then(|s| {
                s["pairs"].as_array()?.iter().find(|p| p["id"] == *id).and_then(|p| p["rx_packets"].as_u64())
            });
            rx.unwrap_or(0) == 0
        })
        .collect()
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
