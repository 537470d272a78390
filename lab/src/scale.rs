//! `braid scale --lab NAME --gateways N`: grows or shrinks a running lab online.
//!
//! Growing builds the new gateways' namespaces and links, adds the pairs to the lab's cluster
//! file (existing pairs keep their keys; new gateways get new ones) and asks the controller to
//! reload (`braid reload` on its admin socket): the new pairs join once healthy and take new flows only.
//! Shrinking drops the highest pairs from the file and reloads: the controller drains them (no
//! new flows; pinned flows stay until idle or the drain deadline) and then stops their
//! gateways. Established flows never move in either direction. The lab keeps its suite and its
//! IPsec SA lifetimes (read from its cluster file): new IPsec pairs use the lab's pre-shared key
//! and lifetimes, and running pairs are not handed different lifetimes by the reload. The
//! demuxes' data threads are kept too (a demux reads them only when it starts).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_core::config::ClusterConfig;

use super::topology::Topology;
use super::{
    build_gateways, cluster_file, controller, lab_pairs, load_cluster, load_info, refresh_processes, IpsecLabOptions,
    LabInfo, LabIpsec,
};
use anyhow::{bail, Context, Result};

/// Scales lab `name` to `gateways` pairs, with the `braid` binary in `bin_dir`; returns once
/// new pairs are up and carrying canary traffic, or once removed pairs take no new flows.
pub fn scale(name: &str, bin_dir: &Path, gateways: u16, timeout: Duration) -> Result<LabInfo> {
    let mut info = load_info(name)?;
    if info.processes.iter().any(|p| p.role == "strongswan") {
        bail!("lab {name:?} has an external (strongSwan) peer site, which `scale` does not grow or shrink; rebuild it with `braid lab down` and `braid lab up --gateways N`");
    }
    let current = info.gateways;
    let topo = Topology::new(name, gateways).map_err(anyhow::Error::msg)?;
    let pid = info
        .processes
        .iter()
        .find(|p| p.role == "controller")
        .map(|p| p.pid)
        .context("lab has no controller")?;
    if !controller::alive(pid) {
        bail!("the lab's controller (pid {pid}) is not running");
    }
    // The cluster file is what the running daemons use (lab.json may predate `suite` and
    // `ipsec`).
    let running = load_cluster(&info.config)?;
    if super::nat::is_behind_nat(&running) {
        bail!("lab {name:?} has gateways behind a NAT, which `scale` does not grow or shrink; rebuild it with `braid lab down` and `braid lab up --nat --gateways N`");
    }
    if gateways > current {
        build_gateways(&topo, current + 1..=gateways)?;
    }
    let config = rewrite_cluster_file(&running, &info, &topo)?;
    let answer = controller::reload(bin_dir, &info.admin_socket())?;
    tracing::info!("{answer}");
    controller::wait_for(info.metrics, timeout, pid, |s| {
        let grown = controller::all_up(s, 1..=gateways);
        let shrunk = s.pairs.iter().filter(|p| p.index > gateways).all(|p| !p.active);
        (grown && shrunk).then_some(())
    })
    .with_context(|| format!("scaling lab {name:?} from {current} to {gateways} pairs"))?;
    let written = load_cluster(&config)?;
    info.gateways = gateways;
    info.suite = written.cluster.suite;
    info.ipsec = LabIpsec::of(&written);
    info.pairs = lab_pairs(&topo, info.suite, &info.state_dir);
    refresh_processes(&mut info, pid)?;
    fs::write(info.state_dir.join("lab.json"), serde_json::to_string_pretty(&info)?)?;
    Ok(info)
}

/// Rewrites lab `info`'s cluster file for `topo`'s pairs, keeping what the running daemons use
/// (`running`, the file as it was): its suite, its IPsec SA lifetimes and its demuxes' data
/// threads; the keys are kept by [`cluster_file::write_lab_cluster`].
pub(super) fn rewrite_cluster_file(running: &ClusterConfig, info: &LabInfo, topo: &Topology) -> Result<PathBuf> {
    let (suite, ipsec) = (running.cluster.suite, IpsecLabOptions::of(running));
    let data_threads = cluster_file::data_threads_of(running)?;
    cluster_file::write_lab_cluster(topo, &info.state_dir, info.metrics, suite, ipsec, data_threads)
}
