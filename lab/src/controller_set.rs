//! A lab's controller set (`braid lab up --controllers K`, K ≥ 2): a three-member etcd cluster
//! and K controllers electing their leader through it, each a process of its own in a network
//! namespace of its own like on K hosts, so a test can kill, freeze or cut off one alone.
//!
//! ```text
//!  ns <lab>.c0  eth0 198.18.40.10 ─┐
//!  ns <lab>.c1  eth0 198.18.40.11 ─┤
//!  ...                             ├── ns <lab>.ctl: bridge ctl0 198.18.40.1 (etcd's client
//!  ns <lab>.da  mgmt 198.18.40.101 ┤   and peer ports)
//!  ns <lab>.db  mgmt 198.18.40.102 ┤
//!  root ns  bc-<lab> 198.18.40.254 ┘   (the lab's own commands read /status and /metrics)
//! ```
//!
//! The control network is the sites' management network too: each site's demux has a link to
//! it (`mgmt`) and routes for its gateways, which reach it through their demux. Daemons send
//! heartbeats to the controllers' UDP control addresses (`198.18.40.<10+i>:7400`), so a site
//! can be cut off from every controller while its data path runs on ([`partition_site`]), and
//! [`cut_off_from_etcd`] blackholes one controller's route to etcd and nothing else. etcd runs with a 50 ms heartbeat and a 500 ms election timeout,
//! which lets the controllers' leases last 1 s: a dead leader is replaced within about a
//! second. Every controller shares the lab's runtime directory (daemon logs and status files),
//! with a log, pid file, admin socket and persistent state of its own. The control network's
//! addresses are fixed, so one host runs one such lab at a time.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::netns::{ip, ip_in};
use crate::topology::{ns_prefix, Topology, SITES};
use braid_sys::process::Detach;

/// etcd members in a lab's controller set.
pub const ETCD_MEMBERS: usize = 3;
/// The controllers' lease, in seconds.
pub const LEASE_TTL_S: u64 = 1;
/// Where a lab records its controller set.
const PLAN_FILE: &str = "controller-set.json";
/// etcd's address on the control network.
const ETCD_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 40, 1);
/// The root namespace's address on the control network.
const ROOT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 40, 254);
/// The control network's bridge, in the hub namespace.
const BRIDGE: &str = "ctl0";
/// A controller's metrics port, on its own address.
const METRICS_PORT: u16 = 9477;
/// A controller's UDP control port, on its own address.
const CONTROL_PORT: u16 = 7400;
/// The control network.
const CONTROL_NET: &str = "198.18.40.0/24";

/// Site `n`'s (1 or 2) demux address on the control network.
fn site_mgmt_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 40, 100 + n)
}

/// The subnet of `lan` (a /24), as `ip route` wants it.
fn subnet_of(lan: Ipv4Addr) -> String {
    let [a, b, c, _] = lan.octets();
    format!("{a}.{b}.{c}.0/24")
}

/// The hub's end of site `site`'s management link.
fn site_port(site: &str) -> String {
    format!("s{site}")
}

/// Controller `index`'s address on the control network.
fn controller_addr(index: u16) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 40, 10 + index as u8)
}

/// The namespace of lab `name`'s controller `index`.
pub fn controller_ns(name: &str, index: u16) -> String {
    format!("{}c{index}", ns_prefix(name))
}

/// The namespace of lab `name`'s control network and etcd.
pub fn hub_ns(name: &str) -> String {
    format!("{}ctl", ns_prefix(name))
}

/// The root namespace's end of lab `name`'s control network (at most 15 bytes: names are at
/// most 12).
fn root_link(name: &str) -> String {
    format!("bc-{name}")
}

/// Where one etcd member listens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EtcdMember {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
}

/// One controller of the set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LabController {
    pub index: u16,
    /// Its network namespace.
    #[serde(default)]
    pub netns: String,
    /// Its `/metrics` and `/status`.
    pub metrics: SocketAddr,
    pub admin_socket: PathBuf,
    pub log: PathBuf,
    /// Its pid when the lab description was written (0 before it started).
    #[serde(default)]
    pub pid: u32,
}

/// The addresses of a lab's controller set, chosen before anything starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControllerSet {
    /// The lab's name.
    #[serde(default)]
    pub lab: String,
    pub etcd: Vec<EtcdMember>,
    pub controllers: Vec<LabController>,
}

impl ControllerSet {
    /// Addresses for `k` controllers and three etcd members of lab `name`, state under `dir`.
    pub fn plan(name: &str, dir: &Path, k: u16) -> Result<Self> {
        if !(2..=16).contains(&k) {
            bail!("a controller set has 2 to 16 controllers, not {k}");
        }
        let etcd = (0..ETCD_MEMBERS as u16)
            .map(|i| EtcdMember {
                name: format!("etcd{i}"),
                client: SocketAddr::from((ETCD_ADDR, 2379 + 2 * i)),
                peer: SocketAddr::from((ETCD_ADDR, 2380 + 2 * i)),
            })
            .collect();
        let controllers = (0..k)
            .map(|index| LabController {
                index,
                netns: controller_ns(name, index),
                metrics: SocketAddr::from((controller_addr(index), METRICS_PORT)),
                admin_socket: dir.join(format!("admin-{index}.sock")),
                log: dir.join("logs").join(format!("controller-{index}.log")),
                pid: 0,
            })
            .collect();
        Ok(ControllerSet {
            lab: name.to_string(),
            etcd,
            controllers,
        })
    }

    /// Builds the control network: the hub namespace with its bridge, the root namespace's
    /// link to it, one namespace per controller, and each site's management link (its demux
    /// namespace must exist; gateways get their route in [`route_gateway`]).
    pub fn build_network(&self, topo: &Topology) -> Result<()> {
        let hub = hub_ns(&self.lab);
        ip(&["netns", "add", &hub])?;
        ip_in(&hub, &["link", "set", "dev", "lo", "up"])?;
        ip_in(&hub, &["link", "add", "name", BRIDGE, "type", "bridge"])?;
        ip_in(&hub, &["addr", "add", &format!("{ETCD_ADDR}/24"), "dev", BRIDGE])?;
        ip_in(&hub, &["link", "set", "dev", BRIDGE, "up"])?;
        let root = root_link(&self.lab);
        ip(&[
            "link", "add", "name", &root, "type", "veth", "peer", "name", "root", "netns", &hub,
        ])
        .context("linking the root namespace to the control network")?;
        ip_in(&hub, &["link", "set", "dev", "root", "master", BRIDGE, "up"])?;
        ip(&["addr", "add", &format!("{ROOT_ADDR}/24"), "dev", &root]).context(
            "198.18.40.0/24 is taken in the root namespace: another lab with a controller set runs (`braid lab down` it)",
        )?;
        ip(&["link", "set", "dev", &root, "up"])?;
        for c in &self.controllers {
            ip(&["netns", "add", &c.netns])?;
            ip_in(&c.netns, &["link", "set", "dev", "lo", "up"])?;
            let port = format!("c{}", c.index);
            crate::veth(&c.netns, "eth0", &hub, &port)?;
            ip_in(&hub, &["link", "set", "dev", &port, "master", BRIDGE])?;
            ip_in(
                &c.netns,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", controller_addr(c.index)),
                    "dev",
                    "eth0",
                ],
            )?;
        }
        for (n, site) in (1u8..).zip(SITES) {
            let demux = topo.demux_ns(site);
            let port = site_port(site);
            crate::veth(&demux, "mgmt", &hub, &port)?;
            ip_in(&hub, &["link", "set", "dev", &port, "master", BRIDGE])?;
            let mgmt = format!("{}/24", site_mgmt_addr(n));
            ip_in(&demux, &["addr", "add", &mgmt, "dev", "mgmt"])?;
            let lan = subnet_of(topo.site(site).lan);
            let via = site_mgmt_addr(n).to_string();
            for c in &self.controllers {
                ip_in(&c.netns, &["route", "add", &lan, "via", &via])?;
            }
        }
        Ok(())
    }

    /// Records the set in the lab's state directory, where [`ControllerSet::load`] finds it
    /// whenever the cluster file is written again (`braid scale`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join(PLAN_FILE), serde_json::to_string_pretty(self)?)
            .with_context(|| format!("cannot write {}", dir.join(PLAN_FILE).display()))
    }

    /// The set recorded in lab directory `dir`, if the lab has one.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(PLAN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Ok(Some(serde_json::from_str(&text).with_context(|| {
                    format!("{} is not a controller set", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The `controller:` section of the lab's cluster file.
    pub fn section(&self, dir: &Path) -> String {
        let mut yaml = String::from("controller:\n  etcd:\n    endpoints:\n");
        for m in &self.etcd {
            let _ = writeln!(yaml, "      - http://{}", m.client);
        }
        let _ = writeln!(yaml, "    lease_ttl_s: {LEASE_TTL_S}\n  members:");
        for c in &self.controllers {
            let _ = writeln!(
                yaml,
                "    - address: \"{}:{CONTROL_PORT}\"\n      metrics: {}\n      admin_socket: {}\n      state_dir: {}",
                controller_addr(c.index),
                c.metrics,
                c.admin_socket.display(),
                dir.join(format!("state-{}", c.index)).display(),
            );
        }
        yaml.trim_end().to_string()
    }

    /// Starts the three etcd members and waits until the cluster answers.
    pub fn start_etcd(&self, dir: &Path) -> Result<()> {
        let etcd = which_etcd()?;
        let cluster: Vec<String> = self
            .etcd
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect();
        for m in &self.etcd {
            let log = open_log(&dir.join("logs").join(format!("{}.log", m.name)))?;
            let child = Command::new("ip")
                .args(["netns", "exec", &hub_ns(&self.lab)])
                .arg(&etcd)
                .arg("--name")
                .arg(&m.name)
                .arg("--data-dir")
                .arg(dir.join(&m.name))
                .arg("--listen-client-urls")
                .arg(format!("http://{}", m.client))
                .arg("--advertise-client-urls")
                .arg(format!("http://{}", m.client))
                .arg("--listen-peer-urls")
                .arg(format!("http://{}", m.peer))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://{}", m.peer))
                .arg("--initial-cluster")
                .arg(cluster.join(","))
                .args(["--initial-cluster-state", "new", "--initial-cluster-token"])
                .arg(dir.display().to_string())
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                // The leader rewrites its key four times a second: keep an hour of history.
                .args([
                    "--auto-compaction-mode",
                    "periodic",
                    "--auto-compaction-retention",
                    "1h",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .detached()
                .spawn()
                .with_context(|| format!("cannot start {} (ip netns exec)", etcd.display()))?;
            std::fs::write(dir.join(format!("{}.pid", m.name)), child.id().to_string())?;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let health = |m: &EtcdMember| braid_core::status::http_get(m.client, "/health").unwrap_or_default();
        while !self.etcd.iter().all(|m| health(m).contains("true")) {
            if Instant::now() > deadline {
                bail!(
                    "the lab's etcd cluster did not become healthy in 20 s (logs: {}/logs/etcd*.log)",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Starts controller `index` (`braid up --member index`) on `config`; returns its pid.
    pub fn start_controller(&self, bin_dir: &Path, config: &Path, dir: &Path, index: u16) -> Result<u32> {
        let c = self
            .controllers
            .get(usize::from(index))
            .with_context(|| format!("the lab has no controller {index}"))?;
        let log = open_log(&c.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &c.netns])
            .arg(bin_dir.join("braid"))
            .args(["up", "--config"])
            .arg(config)
            .arg("--state-dir")
            .arg(dir)
            .arg("--bin-dir")
            .arg(bin_dir)
            .arg("--member")
            .arg(index.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .detached()
            .spawn()
            .with_context(|| format!("cannot start {} (ip netns exec)", bin_dir.join("braid").display()))?;
        std::fs::write(dir.join(format!("controller-{index}.pid")), child.id().to_string())?;
        Ok(child.id())
    }
}

/// Gives gateway `site``pair` of a lab with a controller set its route to the control network,
/// through its site's demux.
pub fn route_gateway(topo: &Topology, site: &str, pair: u16) -> Result<()> {
    let via = topo.site(site).lan.to_string();
    ip_in(
        &topo.gateway_ns(site, pair),
        &["route", "add", CONTROL_NET, "via", &via],
    )
}

/// Cuts site `site` of lab `name` off from every controller and from etcd (`cut`: its
/// management link goes down), or reconnects it. Its data path is untouched.
pub fn partition_site(name: &str, site: &str, cut: bool) -> Result<()> {
    let state = if cut { "down" } else { "up" };
    ip_in(&hub_ns(name), &["link", "set", "dev", &site_port(site), state])
}

/// Cuts controller `index` of lab `name` off from etcd (`cut`), or reconnects it: a blackhole
/// route to etcd's address in its namespace. Its daemons and its HTTP stay reachable.
pub fn cut_off_from_etcd(name: &str, index: u16, cut: bool) -> Result<()> {
    let route = format!("{ETCD_ADDR}/32");
    let verb = if cut { "add" } else { "del" };
    ip_in(&controller_ns(name, index), &["route", verb, "blackhole", &route])
}

/// Stops every controller of a set, then its etcd members (SIGTERM, then SIGKILL after a few
/// seconds), each verified through `/proc` to belong to the lab in `dir`.
pub fn stop(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut pid_files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".pid") && (name.starts_with("controller-") || name.starts_with("etcd"))
        })
        .collect();
    // Controllers first (they stop their daemons), etcd last.
    pid_files.sort_by_key(|p| p.to_string_lossy().contains("etcd"));
    for file in pid_files {
        if let Some(pid) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            crate::controller::stop_pid(pid, dir);
        }
    }
}

fn open_log(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

fn which_etcd() -> Result<PathBuf> {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context(
            "etcd is not installed (Debian: apt-get install etcd-server); a lab with --controllers 2 or more needs it",
        )
}

/// Polls every controller of a set until one leads and its status passes `ready`; returns it.
pub fn wait_for_leader(
    controllers: &[LabController],
    timeout: Duration,
    mut ready: impl FnMut(&braid_core::status::StatusSnapshot) -> bool,
) -> Result<LabController> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no controller answered");
    loop {
        for c in controllers {
            let Ok(s) = crate::controller::status(c.metrics) else {
                continue;
            };
            let leads = s.controllers.iter().any(|m| m.pid.is_some() && m.leader);
            if leads {
                if ready(&s) {
                    return Ok(c.clone());
                }
                let pairs: Vec<String> = s.pairs.iter().map(|p| format!("{}:{}", p.index, p.state)).collect();
                last = format!(
                    "controller {} leads: pairs {}, epoch {}, converged {}",
                    c.index,
                    pairs.join(" "),
                    s.epoch,
                    s.converged
                );
            }
        }
        if Instant::now() > deadline {
            bail!("timed out after {} s ({last})", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_stays_in_the_benchmarking_range_with_distinct_addresses_and_lab_namespaces() {
        let set = ControllerSet::plan("abcdefghijkl", Path::new("/run/braid/lab"), 16).unwrap();
        let mut seen = std::collections::HashSet::new();
        let addrs = set
            .etcd
            .iter()
            .flat_map(|m| [m.client, m.peer])
            .chain(set.controllers.iter().map(|c| c.metrics));
        for a in addrs {
            let std::net::IpAddr::V4(ip) = a.ip() else {
                panic!("{a} is not IPv4")
            };
            let o = ip.octets();
            assert!(o[0] == 198 && (o[1] == 18 || o[1] == 19), "{a} outside 198.18.0.0/15");
            assert!(seen.insert(a), "{a} planned twice");
        }
        assert!(set
            .controllers
            .iter()
            .all(|c| c.metrics.ip() != ROOT_ADDR && c.metrics.ip() != ETCD_ADDR));
        let prefix = ns_prefix("abcdefghijkl");
        let mut names: Vec<&str> = set.controllers.iter().map(|c| c.netns.as_str()).collect();
        let hub = hub_ns("abcdefghijkl");
        names.push(&hub);
        assert!(
            names.iter().all(|n| n.starts_with(&prefix)),
            "lab down finds them: {names:?}"
        );
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 17);
        assert!(root_link("abcdefghijkl").len() <= 15, "an interface name fits IFNAMSIZ");
    }

    #[test]
    fn a_plan_needs_two_to_sixteen_controllers() {
        assert!(ControllerSet::plan("ha", Path::new("/tmp"), 1).is_err());
        assert!(ControllerSet::plan("ha", Path::new("/tmp"), 17).is_err());
    }
}
