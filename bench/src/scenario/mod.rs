//! Scenarios: whole measurements of braid, each on a lab of its own.
//!
//! Design: a scenario builds a two-site lab (`braid_lab`) under a name nobody else uses,
//! drives real traffic through it with `braid-bench` processes inside the lab's host
//! namespaces, acts on the cluster while traffic flows (shaping links, killing a gateway,
//! scaling), and turns what the receivers counted into a serialisable result. The lab is held by
//! a [`LabRun`] guard whose `Drop` removes it, so an error or panic half-way never leaves
//! namespaces or processes behind. Scenario results carry everything a chart needs; charts are
//! drawn by [`crate::chart`] from those results only.
//!
//! Every figure here comes from one machine on which both sites, every gateway, both demuxes
//! and the traffic tool share the same cores: read them as ratios and shapes, not as what
//! separate hosts would reach.

pub mod baseline;
pub mod cli;
pub mod failover;
pub mod flood;
pub mod flows;
pub mod recluster;
pub mod scale;
pub mod shaping;
pub mod timeline;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use braid_lab::{self as lab, LabInfo, Suite, UpOptions};
use serde_json::Value;

/// How long a scenario waits for a lab, or a scaled lab, to carry traffic on every pair.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where `braid`, `braid-demux`, `braid-gw` and `braid-bench` are: `BRAID_BIN_DIR`, or the
/// directory of the running executable.
pub fn bin_dir() -> PathBuf {
    lab::default_bin_dir()
}

/// A lab name unique to this process: `b<tag><pid>`, at most 12 characters.
pub fn lab_name(tag: &str) -> String {
    let mut name = format!("b{tag}{}", std::process::id());
    name.truncate(12);
    name
}

/// A running lab, removed when this is dropped.
#[derive(Debug)]
pub struct LabRun {
    pub info: LabInfo,
    pub bin_dir: PathBuf,
}

impl LabRun {
    /// Builds lab `name` with `gateways` WireGuard pairs and waits until every pair carries
    /// traffic.
    pub fn up(name: &str, gateways: u16, bin_dir: &Path) -> Result<LabRun> {
        LabRun::up_with(name, gateways, Suite::WireGuard, bin_dir)
    }

    /// Builds lab `name` with `gateways` pairs speaking `suite` and waits until every pair
    /// carries traffic.
    pub fn up_with(name: &str, gateways: u16, suite: Suite, bin_dir: &Path) -> Result<LabRun> {
        let info = lab::up(&UpOptions {
            name: name.to_string(),
            gateways,
            bin_dir: bin_dir.to_path_buf(),
            ready_timeout: READY_TIMEOUT,
            suite,
            external_peer: false,
            data_threads: None,
            controllers: 1,
            nat: false,
        })
        .with_context(|| format!("building lab {name:?} with {gateways} {suite} pair(s)"))?;
        Ok(LabRun {
            info,
            bin_dir: bin_dir.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Re-reads `lab.json` (after scaling or a restart changed the processes).
    pub fn reload(&mut self) -> Result<()> {
        self.info = lab::load_info(&self.info.name)?;
        Ok(())
    }
}

impl Drop for LabRun {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.info.name) {
            eprintln!("braid-bench: removing lab {:?}: {e:#}", self.info.name);
        }
    }
}

/// What one TCP measurement through a path reported.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TcpFigure {
    pub mbps: f64,
    /// Payload bytes the receivers counted.
    pub bytes: u64,
    pub retransmits: u64,
}

/// Reads the figures of a `braid-bench client --json` TCP report, refusing a corrupted run.
pub fn tcp_figure(report: &Value) -> Result<TcpFigure> {
    if report["integrity_ok"].as_bool() != Some(true) {
        bail!("the TCP run reported payload corruption: {report}");
    }
    Ok(TcpFigure {
        mbps: report["aggregate_mbps"]
            .as_f64()
            .context("report has no aggregate_mbps")?,
        bytes: report["bytes"].as_u64().context("report has no bytes")?,
        retransmits: report["retransmits"].as_u64().unwrap_or(0),
    })
}

/// Runs multi-stream TCP from host a to host b of a lab (a bench server must be running).
pub fn lab_tcp(lab: &LabRun, streams: u32, seconds: f64) -> Result<TcpFigure> {
    let (p, t) = (streams.to_string(), seconds.to_string());
    let report = braid_lab::demo::bench_client(&lab.info, &lab.bin_dir, &["-P", &p, "-t", &t])?;
    tcp_figure(&report)
}

/// Checks that this process may build labs; the message says why not.
pub fn check_privileges() -> Result<()> {
    braid_lab::netns::check_privileges()
}

/// The interval of the per-flow time series of the failover and re-cluster scenarios.
pub const TIMELINE_INTERVAL_S: f64 = 0.1;

/// Runs sequence-numbered UDP flows from host a to host b of a lab (a bench server must be
/// running), sampled every [`TIMELINE_INTERVAL_S`], and returns the client's JSON report.
pub fn lab_udp(info: &LabInfo, bin_dir: &Path, flows: u32, rate: &str, seconds: f64) -> Result<Value> {
    let (p, t, i) = (flows.to_string(), seconds.to_string(), TIMELINE_INTERVAL_S.to_string());
    braid_lab::demo::bench_client(
        info,
        bin_dir,
        &[
            "--udp", "--rate", rate, "--size", "1200", "-P", &p, "-t", &t, "-i", &i, "--drain", "1",
        ],
    )
}
