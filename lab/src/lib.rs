//! braid-lab: a whole braid cluster on one machine — two sites in network namespaces, joined
//! by a WAN bridge — driven from outside, the way an operator drives real hosts.
//!
//! The design: the lab builds the network and writes a cluster file, then runs the `braid`
//! binary (`braid up`, and `braid reload` to scale) as a process and reads the controller only
//! through its public interfaces: the `/status` document over HTTP ([`braid_core::status`])
//! and the daemons' status files. It links no controller code, so what it exercises is what a
//! deployment runs, and its users (the `braid lab`/`braid demo` subcommands, the controller's
//! integration tests, `braid-bench`) need not depend on the controller crate. It depends on
//! braid-core only for the cluster file's schema, the keys, and the status document.
//!
//! [`topology`] says where everything goes (pure), [`netns`] runs `ip`, [`cluster_file`]
//! writes the configuration, [`controller`] starts, reads and stops `braid up`, and this
//! module puts them together: [`up`] builds the namespaces, starts the controller on the
//! lab's cluster file — which launches one demux per site and one gateway per site and pair,
//! each in its namespace — and returns only once the controller reports every pair up and
//! traffic has crossed every pair; [`scale`] grows or shrinks a running lab online; [`down`]
//! removes everything a lab of that name made — the controller, its daemons, the namespaces
//! (which takes their links with them) and the state directory — whether the lab is healthy,
//! half-built or left over from a crashed run. [`external`] replaces site b with a strongSwan
//! peer; [`demo`] runs real traffic across a lab and summarises it (`braid demo`).
//!
//! A lab runs either tunnel suite ([`UpOptions::suite`]): WireGuard on port 51820 with a key
//! per gateway, or IPsec on port 4500 with one pre-shared key in the state directory. The
//! readiness probe is the same for both. An IPsec lab can be built with short SA lifetimes
//! ([`up_with`], `braid lab up --child-lifetime/--ike-lifetime`) to exercise rekeys; a scale
//! keeps them, as it keeps the suite, by reading them back from the lab's cluster file. Any lab
//! can set how many data threads each demux runs ([`UpOptions::data_threads`],
//! `braid lab up --data-threads N`); a scale keeps that too. A lab can put site a's gateways
//! behind a 1:1 NAT ([`UpOptions::nat`], `braid lab up --nat`; see [`nat`]); such a lab is
//! not scaled.

pub mod cluster_file;
pub mod controller;
pub mod controller_set;
pub mod demo;
pub mod external;
pub mod nat;
pub mod netns;
mod scale;
pub mod topology;

/// The tunnel suite of a lab's pairs, for users of the lab that do not depend on braid-core.
pub use braid_core::config::Suite;
pub use cluster_file::IpsecLabOptions;
pub use scale::scale;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use braid_core::config::ClusterConfig;
use serde::{Deserialize, Serialize};

use netns::{ip, ip_in, spawn_in, sysctl_in};

use topology::{bridge_mac, Topology, SITES};

/// Where labs keep their configuration, logs and status files.
pub const STATE_ROOT: &str = "/run/braid/lab";

/// The bridge in the WAN namespace that every gateway-to-gateway packet crosses.
pub const WAN_BRIDGE: &str = "wan0";

/// The UDP port of the readiness probe responder in host b.
const PROBE_PORT: u16 = 5299;
/// How many distinct flows the readiness probe sends (enough that every pair gets some).
const PROBE_FLOWS: u32 = 256;

/// What `braid lab up --json` prints, and what `lab.json` in the state directory holds.
/// Fields added later default when absent, so an older `lab.json` still reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabInfo {
    pub name: String,
    pub gateways: u16,
    /// The tunnel suite every pair speaks (`"wireguard"` or `"ipsec"`).
    #[serde(default)]
    pub suite: Suite,
    /// Every gateway pair: its id, its two gateways' namespaces and WAN endpoints, and for
    /// IPsec the pre-shared key file.
    #[serde(default)]
    pub pairs: Vec<LabPair>,
    /// The SA lifetimes of an IPsec lab's pairs; absent for WireGuard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsec: Option<LabIpsec>,
    pub hosts: Hosts,
    pub wan: Wan,
    pub processes: Vec<LabProcess>,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    /// The controller's HTTP endpoint (`/metrics`, `/status`; read-only).
    pub metrics: SocketAddr,
    /// The controller's admin socket (reload, drain, remove, activate); empty in a `lab.json`
    /// written before it existed (see [`LabInfo::admin_socket`]).
    #[serde(default)]
    pub admin_socket: PathBuf,
    /// A controller set (`--controllers K`, K ≥ 2): every controller; empty for a lone one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<controller_set::LabController>,
    /// The etcd members a controller set elects through; empty for a lone controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd: Vec<controller_set::EtcdMember>,
}

impl LabInfo {
    /// Where the lab's controller takes administration requests.
    pub fn admin_socket(&self) -> PathBuf {
        if self.admin_socket.as_os_str().is_empty() {
            self.state_dir.join(cluster_file::ADMIN_SOCKET)
        } else {
            self.admin_socket.clone()
        }
    }
}

/// One gateway pair of a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPair {
    pub id: u16,
    /// The IPsec pre-shared key file (mode 0600); absent for WireGuard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_file: Option<PathBuf>,
    /// Site a's gateway.
    pub a: LabGateway,
    /// Site b's gateway.
    pub b: LabGateway,
}

/// One gateway of a lab pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabGateway {
    /// The namespace it runs in.
    pub netns: String,
    /// Its tunnel endpoint (`IP:PORT`), where its peer sends.
    pub wan: SocketAddr,
}

/// The SA lifetimes an IPsec lab's gateways run with, in seconds, and whether they seal on a
/// thread of their own: what the lab's cluster file says, the configuration's defaults where
/// it says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabIpsec {
    pub child_lifetime_s: u64,
    pub ike_lifetime_s: u64,
    #[serde(default)]
    pub seal_thread: bool,
}

impl LabIpsec {
    /// The lifetimes of a loaded cluster file; `None` unless its suite is IPsec.
    pub fn of(config: &ClusterConfig) -> Option<LabIpsec> {
        config.cluster.ipsec.as_ref().map(|ipsec| LabIpsec {
            child_lifetime_s: ipsec.child_lifetime_s,
            ike_lifetime_s: ipsec.ike_lifetime_s,
            seal_thread: ipsec.seal_thread,
        })
    }
}

/// Loads a lab's cluster file.
fn load_cluster(path: &Path) -> Result<ClusterConfig> {
    ClusterConfig::load(path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("reading the lab's cluster file")
}

/// The pairs of a lab with `topo`'s shape, running `suite`, with its state in `dir`.
pub fn lab_pairs(topo: &Topology, suite: Suite, dir: &Path) -> Vec<LabPair> {
    let psk_file = (suite == Suite::Ipsec).then(|| dir.join(cluster_file::PSK_FILE));
    let gateway = |site: &str, pair: u16| LabGateway {
        netns: topo.gateway_ns(site, pair),
        wan: topo.gateway_wan_endpoint(site, pair, suite),
    };
    topo.pair_ids()
        .map(|id| LabPair {
            id,
            psk_file: psk_file.clone(),
            a: gateway(SITES[0], id),
            b: gateway(SITES[1], id),
        })
        .collect()
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
    /// The tunnel suite of every pair.
    pub suite: Suite,
    /// Site b runs no braid: strongSwan is the whole peer site (see [`external`]).
    pub external_peer: bool,
    /// Data threads of every demux (`sites.<site>.demux.data_threads`, 1..=256); `None` leaves
    /// the configuration's default, one per CPU core.
    pub data_threads: Option<u16>,
    /// Controllers: 1 (a lone controller) or 2..=16 electing a leader through a three-member
    /// etcd cluster the lab runs (see [`controller_set`]).
    pub controllers: u16,
    /// Site a's gateways sit behind a 1:1 NAT in the `wan` namespace (see [`nat`]): each binds
    /// a private address (`wan_listen`) and is reached at its public one (`wan`).
    pub nat: bool,
}

/// The state directory of lab `name`.
pub fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// The directory holding the running `braid` binary, where its sibling binaries are installed.
pub fn default_bin_dir() -> PathBuf {
    std::env::var_os("BRAID_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
        })
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
    up_with(opts, IpsecLabOptions::default())
}

/// [`up`], with the IPsec options (SA lifetimes, the gateways' sealing thread) written into the
/// lab's `ipsec:` section. They are refused for a WireGuard lab; out-of-range values are refused by the configuration's
/// validation (CHILD 10..=604800 s, IKE 20..=604800 s) before any namespace exists.
pub fn up_with(opts: &UpOptions, ipsec: IpsecLabOptions) -> Result<LabInfo> {
    ipsec.check_suite(opts.suite)?;
    netns::check_privileges()?;
    let topo = Topology::new(&opts.name, opts.gateways)
        .map_err(anyhow::Error::msg)?
        .behind_nat(opts.nat);
    if opts.nat {
        if opts.external_peer {
            bail!("--nat puts braid's own site a gateways behind a NAT; it does not combine with --external-peer");
        }
        nat::check_nft()?;
    }
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
        bail!(
            "lab {:?} already exists; remove it with `braid lab down --name {}`",
            topo.name,
            topo.name
        );
    }
    let mut guard = TeardownGuard {
        name: topo.name.clone(),
        armed: true,
    };
    let info = build(&topo, opts, ipsec)?;
    guard.armed = false;
    Ok(info)
}

/// Removes everything lab `name` made. Succeeds whether or not the lab exists.
pub fn down(name: &str) -> Result<()> {
    Topology::new(name, 1).map_err(anyhow::Error::msg)?;
    netns::check_privileges()?;
    controller::stop(&state_dir(name));
    controller_set::stop(&state_dir(name));
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
        if self.armed && std::env::var_os("BRAID_LAB_KEEP_ON_FAILURE").is_some() {
            tracing::warn!("BRAID_LAB_KEEP_ON_FAILURE is set: the failed lab is left for inspection; `braid lab down --name {}` removes it", self.name);
        } else if self.armed {
            if let Err(e) = down(&self.name) {
                tracing::error!("cleaning up the failed lab: {e:#}");
            }
        }
    }
}

fn build(topo: &Topology, opts: &UpOptions, ipsec: IpsecLabOptions) -> Result<LabInfo> {
    let dir = state_dir(&topo.name);
    for sub in ["logs", "status"] {
        fs::create_dir_all(dir.join(sub)).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let metrics = controller::free_loopback_port()?;
    let mut charons = Vec::new();
    let config = if opts.external_peer {
        if opts.suite != Suite::Ipsec {
            bail!("--external-peer strongswan needs --suite ipsec");
        }
        if ipsec != IpsecLabOptions::default() {
            bail!("--child-lifetime, --ike-lifetime and --seal-thread are not supported with --external-peer (the strongSwan side keeps its own)");
        }
        if opts.data_threads.is_some() {
            bail!("--data-threads is not supported with --external-peer");
        }
        external::check_strongswan()?;
        let config = external::write_cluster(topo, &dir, metrics)?;
        external::build_network(topo)?;
        charons = external::start_charons(topo, &dir)?;
        config
    } else {
        if !(1..=16).contains(&opts.controllers) {
            bail!("--controllers: expected 1 to 16, got {}", opts.controllers);
        }
        let set = (opts.controllers > 1)
            .then(|| controller_set::ControllerSet::plan(&topo.name, &dir, opts.controllers))
            .transpose()?;
        if let Some(set) = &set {
            set.save(&dir)?;
        }
        let config = cluster_file::write_lab_cluster(topo, &dir, metrics, opts.suite, ipsec, opts.data_threads)?;
        build_network(topo, topo.pair_ids())?;
        if let Some(set) = &set {
            set.build_network(topo)?;
        }
        config
    };
    if opts.external_peer && opts.controllers > 1 {
        bail!("--controllers is not supported with --external-peer");
    }
    let ipsec = LabIpsec::of(&load_cluster(&config)?);
    let set = controller_set::ControllerSet::load(&dir)?;
    let (metrics, controller_pid, admin_socket, controllers) = match &set {
        None => {
            let child = controller::start(&opts.bin_dir, &config, &dir)?;
            controller::wait_for(metrics, opts.ready_timeout, child.id(), |s| {
                controller::all_up(s, topo.pair_ids()).then_some(())
            })
            .context("the controller did not bring every pair up")?;
            (metrics, child.id(), dir.join(cluster_file::ADMIN_SOCKET), Vec::new())
        }
        Some(set) => {
            set.start_etcd(&dir)?;
            let mut controllers = set.controllers.clone();
            for c in &mut controllers {
                c.pid = set.start_controller(&opts.bin_dir, &config, &dir, c.index)?;
            }
            let leader = controller_set::wait_for_leader(&controllers, opts.ready_timeout, |s| {
                controller::all_up(s, topo.pair_ids())
            })
            .context("the controller set did not bring every pair up")?;
            (leader.metrics, leader.pid, leader.admin_socket.clone(), controllers)
        }
    };
    let mut info = LabInfo {
        name: topo.name.clone(),
        gateways: topo.pairs,
        suite: opts.suite,
        pairs: lab_pairs(topo, opts.suite, &dir),
        ipsec,
        hosts: Hosts {
            a: HostInfo {
                netns: topo.host_ns("a"),
                addr: topo.site("a").host,
            },
            b: HostInfo {
                netns: topo.host_ns("b"),
                addr: topo.site("b").host,
            },
        },
        wan: Wan {
            netns: topo.wan_ns(),
            interface: WAN_BRIDGE.into(),
        },
        processes: Vec::new(),
        state_dir: dir.clone(),
        config,
        metrics,
        admin_socket,
        controllers,
        etcd: set.map(|s| s.etcd).unwrap_or_default(),
    };
    refresh_processes(&mut info, controller_pid)?;
    for &(pair, pid) in &charons {
        let cdir = external::charon_dir(&dir, pair);
        info.processes.push(LabProcess {
            role: "strongswan".into(),
            site: "b".into(),
            index: pair,
            pid,
            netns: topo.gateway_ns("b", pair),
            status_file: cdir.join("charon.vici"),
            log: cdir.join("charon.log"),
        });
    }
    fs::write(dir.join("lab.json"), serde_json::to_string_pretty(&info)?)?;
    if !opts.external_peer {
        // With an external peer every pair already answered echo canaries from host b (all_up),
        // and replies all return through its first gateway, so there is no per-pair return
        // traffic to wait for.
        let deadline = Instant::now() + opts.ready_timeout;
        probe_every_pair(topo, opts, &info, deadline)?;
    }
    Ok(info)
}

/// Starts a new controller for running lab `name` (after the old one died or was killed): it
/// adopts the running daemons instead of restarting them. Returns its pid once it answers.
pub fn restart_controller(name: &str, bin_dir: &Path, timeout: Duration) -> Result<u32> {
    let mut info = load_info(name)?;
    let child = controller::start(bin_dir, &info.config, &info.state_dir)?;
    let pid = child.id();
    controller::wait_for(info.metrics, timeout, pid, |s| (s.controller_pid == pid).then_some(()))?;
    refresh_processes(&mut info, pid)?;
    fs::write(info.state_dir.join("lab.json"), serde_json::to_string_pretty(&info)?)?;
    Ok(pid)
}

/// Fills `info.processes` from the controller's status: the controller, every demux, every
/// gateway, with their status files and logs.
pub fn refresh_processes(info: &mut LabInfo, controller_pid: u32) -> Result<()> {
    let status = controller::status(info.metrics)?;
    let topo = Topology::new(&info.name, info.gateways).map_err(anyhow::Error::msg)?;
    let dir = &info.state_dir;
    let mut processes = vec![LabProcess {
        role: "controller".into(),
        site: String::new(),
        index: 0,
        pid: controller_pid,
        netns: String::new(),
        status_file: PathBuf::new(),
        log: dir.join("logs").join("controller.log"),
    }];
    if !info.controllers.is_empty() {
        processes = info
            .controllers
            .iter()
            .map(|c| LabProcess {
                role: "controller".into(),
                site: String::new(),
                index: c.index,
                pid: c.pid,
                netns: c.netns.clone(),
                status_file: PathBuf::new(),
                log: c.log.clone(),
            })
            .collect();
        processes.extend((0u16..).zip(&info.etcd).map(|(i, m)| {
            LabProcess {
                role: "etcd".into(),
                site: String::new(),
                index: i,
                pid: std::fs::read_to_string(dir.join(format!("{}.pid", m.name)))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0),
                netns: controller_set::hub_ns(&info.name),
                status_file: PathBuf::new(),
                log: dir.join("logs").join(format!("{}.log", m.name)),
            }
        }));
    }
    for d in &status.demuxes {
        let stem = format!("demux-{}", d.site);
        processes.push(LabProcess {
            role: "demux".into(),
            site: d.site.clone(),
            index: 0,
            pid: d.pid.unwrap_or(0),
            netns: topo.demux_ns(&d.site),
            status_file: dir.join("status").join(format!("{stem}.json")),
            log: dir.join("logs").join(format!("{stem}.log")),
        });
    }
    for g in status.gateways.iter().filter(|g| g.state != "retired") {
        let stem = format!("gw-{}{}", g.site, g.index);
        processes.push(LabProcess {
            role: "gw".into(),
            site: g.site.clone(),
            index: g.index,
            pid: g.pid.unwrap_or(0),
            netns: topo.gateway_ns(&g.site, g.index),
            status_file: dir.join("status").join(format!("{stem}.json")),
            log: dir.join("logs").join(format!("{stem}.log")),
        });
    }
    info.processes = processes;
    Ok(())
}

/// Builds the hosts, demuxes and WAN, and the gateways of `pairs`.
fn build_network(topo: &Topology, pairs: impl Iterator<Item = u16> + Clone) -> Result<()> {
    for ns in topo.base_namespaces() {
        ip(&["netns", "add", &ns])?;
        ip_in(&ns, &["link", "set", "dev", "lo", "up"])?;
    }
    let wan = topo.wan_ns();
    wan_bridge(&wan)?;
    if topo.nat {
        nat::build(topo, WAN_BRIDGE)?;
    }
    for (n, site) in (1u8..).zip(SITES) {
        let s = topo.site(site);
        let (host, demux) = (topo.host_ns(site), topo.demux_ns(site));
        veth(&host, "eth0", &demux, "host")?;
        ip_in(&host, &["addr", "add", &format!("{}/24", s.host), "dev", "eth0"])?;
        ip_in(&host, &["route", "add", "default", "via", &s.router.to_string()])?;
        ip_in(&demux, &["addr", "add", &format!("{}/24", s.router), "dev", "host"])?;
        ip_in(
            &demux,
            &[
                "link",
                "add",
                "name",
                "br-lan",
                "address",
                &bridge_mac(n),
                "type",
                "bridge",
            ],
        )?;
        ip_in(&demux, &["addr", "add", &format!("{}/24", s.lan), "dev", "br-lan"])?;
        ip_in(&demux, &["link", "set", "dev", "br-lan", "up"])?;
        sysctl_in(&demux, "net/ipv4/ip_forward", "1")?;
    }
    build_gateways(topo, pairs)
}

/// The bridge in namespace `wan` that every gateway-to-gateway packet crosses, with its fixed MAC.
fn wan_bridge(wan: &str) -> Result<()> {
    ip_in(
        wan,
        &[
            "link",
            "add",
            "name",
            WAN_BRIDGE,
            "address",
            &bridge_mac(0),
            "type",
            "bridge",
        ],
    )?;
    ip_in(wan, &["link", "set", "dev", WAN_BRIDGE, "up"])
}

/// Builds the namespaces and links of the gateways of `pairs` (both sites).
fn build_gateways(topo: &Topology, pairs: impl Iterator<Item = u16> + Clone) -> Result<()> {
    let wan = topo.wan_ns();
    let controller_set = controller_set::ControllerSet::load(&state_dir(&topo.name))?.is_some();
    for site in SITES {
        let demux = topo.demux_ns(site);
        for pair in pairs.clone() {
            let gw = topo.gateway_ns(site, pair);
            ip(&["netns", "add", &gw])?;
            ip_in(&gw, &["link", "set", "dev", "lo", "up"])?;
            let lan_port = format!("lan{pair}");
            veth(&gw, "lan", &demux, &lan_port)?;
            ip_in(&demux, &["link", "set", "dev", &lan_port, "master", "br-lan"])?;
            ip_in(
                &gw,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", topo.gateway_lan(site, pair)),
                    "dev",
                    "lan",
                ],
            )?;
            // Behind the NAT: only the private address, on the NAT's private bridge, and the
            // NAT as the way out.
            let private = topo.gateway_wan_private(site, pair);
            let (bridge, address) = match private {
                Some(private) => (nat::NAT_BRIDGE, private),
                None => (WAN_BRIDGE, topo.gateway_wan(site, pair)),
            };
            let wan_port = format!("{site}{pair}");
            veth(&gw, "wan", &wan, &wan_port)?;
            ip_in(&wan, &["link", "set", "dev", &wan_port, "master", bridge])?;
            ip_in(&gw, &["addr", "add", &format!("{address}/24"), "dev", "wan"])?;
            if private.is_some() {
                let router = topology::NAT_ROUTER.to_string();
                ip_in(&gw, &["route", "add", "default", "via", &router, "dev", "wan"])?;
            }
            if controller_set {
                controller_set::route_gateway(topo, site, pair)?;
            }
        }
    }
    Ok(())
}

/// A veth pair between two namespaces, both ends up.
pub(crate) fn veth(ns_a: &str, name_a: &str, ns_b: &str, name_b: &str) -> Result<()> {
    ip_in(
        ns_a,
        &[
            "link", "add", "name", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b,
        ],
    )?;
    ip_in(ns_a, &["link", "set", "dev", name_a, "up"])?;
    ip_in(ns_b, &["link", "set", "dev", name_b, "up"])
}

/// Reads a daemon's status JSON, if it has written one yet.
pub fn read_status(path: &Path) -> Option<serde_json::Value> {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
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
        let demux_a = info
            .processes
            .iter()
            .find(|p| p.role == "demux" && p.site == "a")
            .context("no demux a")?;
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
                s["pairs"]
                    .as_array()?
                    .iter()
                    .find(|p| p["id"] == *id)
                    .and_then(|p| p["rx_packets"].as_u64())
            });
            rx.unwrap_or(0) == 0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_core::testing::ScratchDir;

    fn info(suite: Suite) -> LabInfo {
        let topo = Topology::new("t", 2).unwrap();
        let dir = state_dir("t");
        LabInfo {
            name: "t".into(),
            gateways: 2,
            suite,
            pairs: lab_pairs(&topo, suite, &dir),
            ipsec: (suite == Suite::Ipsec).then_some(LabIpsec {
                child_lifetime_s: 60,
                ike_lifetime_s: 240,
                seal_thread: false,
            }),
            hosts: Hosts {
                a: HostInfo {
                    netns: topo.host_ns("a"),
                    addr: topo.site("a").host,
                },
                b: HostInfo {
                    netns: topo.host_ns("b"),
                    addr: topo.site("b").host,
                },
            },
            wan: Wan {
                netns: topo.wan_ns(),
                interface: WAN_BRIDGE.into(),
            },
            processes: Vec::new(),
            config: dir.join("cluster.yaml"),
            admin_socket: dir.join(cluster_file::ADMIN_SOCKET),
            controllers: Vec::new(),
            etcd: Vec::new(),
            state_dir: dir,
            metrics: "127.0.0.1:9477".parse().unwrap(),
        }
    }

    #[test]
    fn json_names_the_suite_and_every_pair() {
        let json = serde_json::to_value(info(Suite::Ipsec)).unwrap();
        assert_eq!(json["suite"], "ipsec");
        assert_eq!(
            json["ipsec"],
            serde_json::json!({"child_lifetime_s": 60, "ike_lifetime_s": 240, "seal_thread": false})
        );
        assert_eq!(
            json["pairs"][1],
            serde_json::json!({
                "id": 2,
                "psk_file": "/run/braid/lab/t/ipsec.psk",
                "a": {"netns": "braid-t.ga2", "wan": "198.19.0.12:4500"},
                "b": {"netns": "braid-t.gb2", "wan": "198.19.0.112:4500"},
            })
        );

        let json = serde_json::to_value(info(Suite::WireGuard)).unwrap();
        assert_eq!(json["suite"], "wireguard");
        assert_eq!(
            json["pairs"][0],
            serde_json::json!({
                "id": 1,
                "a": {"netns": "braid-t.ga1", "wan": "198.19.0.11:51820"},
                "b": {"netns": "braid-t.gb1", "wan": "198.19.0.111:51820"},
            }),
            "no psk_file for WireGuard"
        );
        assert!(json.get("ipsec").is_none(), "no SA lifetimes for WireGuard: {json}");
    }

    #[test]
    fn lab_json_round_trips_and_older_files_still_read() {
        let ipsec = info(Suite::Ipsec);
        let again: LabInfo = serde_json::from_str(&serde_json::to_string_pretty(&ipsec).unwrap()).unwrap();
        assert_eq!(
            (again.suite, &again.pairs, again.ipsec),
            (Suite::Ipsec, &ipsec.pairs, ipsec.ipsec)
        );

        let mut old = serde_json::to_value(info(Suite::WireGuard)).unwrap();
        let object = old.as_object_mut().unwrap();
        object.remove("suite");
        object.remove("pairs");
        let read: LabInfo = serde_json::from_value(old).unwrap();
        assert_eq!(read.suite, Suite::WireGuard);
        assert!(read.pairs.is_empty());
        assert_eq!(read.ipsec, None);
    }

    fn lifetimes(child: Option<u64>, ike: Option<u64>) -> IpsecLabOptions {
        IpsecLabOptions {
            child_lifetime_s: child,
            ike_lifetime_s: ike,
            seal_thread: false,
        }
    }

    /// What the gateways of a lab whose file is `path` run with.
    fn running(path: &Path) -> (Suite, Option<LabIpsec>) {
        let config = load_cluster(path).unwrap();
        (config.cluster.suite, LabIpsec::of(&config))
    }

    #[test]
    fn ipsec_lifetimes_reach_the_cluster_file_and_survive_a_scale() {
        let dir = ScratchDir::new("lab-mod-lifetimes");
        let metrics: SocketAddr = "127.0.0.1:19478".parse().unwrap();
        let topo = Topology::new("t", 2).unwrap();
        let path = cluster_file::write_lab_cluster(
            &topo,
            &dir.0,
            metrics,
            Suite::Ipsec,
            IpsecLabOptions {
                seal_thread: true,
                ..lifetimes(Some(60), Some(240))
            },
            None,
        )
        .unwrap();
        let yaml = fs::read_to_string(&path).unwrap();
        assert!(
            yaml.contains(
                "ipsec:\n  psk_file: ipsec.psk\n  child_lifetime_s: 60\n  ike_lifetime_s: 240\n  seal_thread: true\n"
            ),
            "{yaml}"
        );
        let expected = LabIpsec {
            child_lifetime_s: 60,
            ike_lifetime_s: 240,
            seal_thread: true,
        };
        assert_eq!(running(&path), (Suite::Ipsec, Some(expected)));

        // `braid scale` rewrites the file from the topology (grow, then shrink): the lifetimes
        // and the sealing thread stay, as the suite does.
        let mut lab = info(Suite::Ipsec);
        (lab.state_dir, lab.config, lab.metrics) = (dir.0.clone(), path.clone(), metrics);
        for pairs in [3, 1] {
            let running_before = load_cluster(&path).unwrap();
            let rewritten =
                scale::rewrite_cluster_file(&running_before, &lab, &Topology::new("t", pairs).unwrap()).unwrap();
            assert_eq!(rewritten, path);
            assert_eq!(
                running(&path),
                (Suite::Ipsec, Some(expected)),
                "after scaling to {pairs}"
            );
            assert_eq!(load_cluster(&path).unwrap().pairs.len(), usize::from(pairs));
        }

        // Only one lifetime given: the other keeps the default, through a scale too.
        let path =
            cluster_file::write_lab_cluster(&topo, &dir.0, metrics, Suite::Ipsec, lifetimes(None, Some(30)), None)
                .unwrap();
        let defaults = Some(LabIpsec {
            child_lifetime_s: braid_core::config::DEFAULT_CHILD_LIFETIME_S,
            ike_lifetime_s: 30,
            seal_thread: false,
        });
        assert_eq!(running(&path).1, defaults);
        assert!(!fs::read_to_string(&path).unwrap().contains("child_lifetime_s"));
        scale::rewrite_cluster_file(&load_cluster(&path).unwrap(), &lab, &topo).unwrap();
        assert_eq!(running(&path).1, defaults);

        // No flags: the file is what it always was, and a WireGuard lab has no lifetimes.
        let path =
            cluster_file::write_lab_cluster(&topo, &dir.0, metrics, Suite::Ipsec, IpsecLabOptions::default(), None)
                .unwrap();
        assert!(!fs::read_to_string(&path).unwrap().contains("_lifetime_s"));
        let wg_dir = ScratchDir::new("lab-mod-lifetimes-wg");
        let path = cluster_file::write_lab_cluster(
            &topo,
            &wg_dir.0,
            metrics,
            Suite::WireGuard,
            IpsecLabOptions::default(),
            None,
        )
        .unwrap();
        assert_eq!(running(&path), (Suite::WireGuard, None));
    }

    #[test]
    fn data_threads_survive_a_scale() {
        let dir = ScratchDir::new("lab-mod-threads");
        let metrics: SocketAddr = "127.0.0.1:19481".parse().unwrap();
        let topo = Topology::new("t", 2).unwrap();
        let path = cluster_file::write_lab_cluster(
            &topo,
            &dir.0,
            metrics,
            Suite::WireGuard,
            IpsecLabOptions::default(),
            Some(2),
        )
        .unwrap();
        let mut lab = info(Suite::WireGuard);
        (lab.state_dir, lab.config, lab.metrics) = (dir.0.clone(), path.clone(), metrics);
        for pairs in [3, 1] {
            let running_before = load_cluster(&path).unwrap();
            scale::rewrite_cluster_file(&running_before, &lab, &Topology::new("t", pairs).unwrap()).unwrap();
            let after = load_cluster(&path).unwrap();
            assert_eq!(
                cluster_file::data_threads_of(&after).unwrap(),
                Some(2),
                "after scaling to {pairs}"
            );
            assert_eq!(after.pairs.len(), usize::from(pairs));
        }
    }

    #[test]
    fn ipsec_lifetimes_out_of_range_are_refused_with_the_field_and_range() {
        let dir = ScratchDir::new("lab-mod-ranges");
        let metrics: SocketAddr = "127.0.0.1:19479".parse().unwrap();
        let topo = Topology::new("t", 1).unwrap();
        let write = |child, ike| {
            cluster_file::write_lab_cluster(&topo, &dir.0, metrics, Suite::Ipsec, lifetimes(child, ike), None)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        for (child, ike, message) in [
            (
                Some(9),
                None,
                "ipsec.child_lifetime_s: expected a number from 10 to 604800, got 9",
            ),
            (
                Some(604_801),
                None,
                "ipsec.child_lifetime_s: expected a number from 10 to 604800, got 604801",
            ),
            (
                None,
                Some(19),
                "ipsec.ike_lifetime_s: expected a number from 20 to 604800, got 19",
            ),
            (
                None,
                Some(604_801),
                "ipsec.ike_lifetime_s: expected a number from 20 to 604800, got 604801",
            ),
        ] {
            let error = write(child, ike).unwrap_err();
            assert!(error.contains(message), "{child:?}/{ike:?}: {error}");
        }
        for (child, ike) in [(10, 20), (604_800, 604_800)] {
            write(Some(child), Some(ike)).unwrap();
        }
    }

    #[test]
    fn ipsec_options_are_refused_for_a_wireguard_lab() {
        let opts = UpOptions {
            name: "g-never".into(),
            gateways: 1,
            bin_dir: PathBuf::from("/nonexistent"),
            ready_timeout: Duration::from_secs(1),
            suite: Suite::WireGuard,
            external_peer: false,
            data_threads: None,
            controllers: 1,
            nat: false,
        };
        for set in [
            lifetimes(Some(60), None),
            lifetimes(None, Some(240)),
            lifetimes(Some(60), Some(240)),
        ] {
            // Refused before anything is checked or built (this needs no privileges).
            let error = format!("{:#}", up_with(&opts, set).unwrap_err());
            assert!(
                error.contains("--child-lifetime and --ike-lifetime set IPsec SA lifetimes and need --suite ipsec"),
                "{error}"
            );
            let dir = ScratchDir::new("lab-mod-wg-refused");
            let error = cluster_file::write_lab_cluster(
                &Topology::new("t", 1).unwrap(),
                &dir.0,
                "127.0.0.1:19480".parse().unwrap(),
                Suite::WireGuard,
                set,
                None,
            )
            .unwrap_err();
            assert!(format!("{error:#}").contains("need --suite ipsec"), "{error:#}");
            assert!(!dir.0.join("cluster.yaml").exists());
        }
        let seal = IpsecLabOptions {
            seal_thread: true,
            ..IpsecLabOptions::default()
        };
        let error = format!("{:#}", up_with(&opts, seal).unwrap_err());
        assert!(error.contains("--seal-thread needs --suite ipsec"), "{error}");
        assert!(!state_dir("g-never").exists());
    }
}
