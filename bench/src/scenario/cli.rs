//! The scenario subcommands of `braid-bench`: arguments, and printing each result as text or
//! JSON, with an optional SVG chart.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use braid_lab::Suite;
use clap::Subcommand;
use serde::Serialize;

use crate::chart::Chart;
use crate::spec::parse_rate;

use super::shaping::Cap;
use super::{baseline, bin_dir, check_privileges, failover, flood, flows, recluster, scale};

/// Scenarios: each builds its own lab, measures, and removes the lab.
#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Aggregate TCP throughput for each number of gateway pairs.
    Scale {
        /// Pair counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        gateways: Vec<u16>,
        /// Shape every gateway's WAN egress to this rate (k, M or G suffix, bits per second).
        #[arg(long)]
        cap: Option<String>,
        /// Seconds of traffic per lab size.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Parallel TCP streams.
        #[arg(long, short = 'P', default_value_t = 16)]
        streams: u32,
        #[command(flatten)]
        output: Output,
    },
    /// Per-flow UDP time series around a gateway killed with SIGKILL (3 pairs).
    Failover {
        /// UDP flows.
        #[arg(long, default_value_t = 16)]
        flows: u32,
        /// Aggregate UDP rate (k, M or G suffix).
        #[arg(long, default_value = "64M")]
        rate: String,
        /// Seconds of traffic.
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Seconds into the traffic at which the gateway is killed.
        #[arg(long, default_value_t = 3.0)]
        kill_at: f64,
        #[command(flatten)]
        output: Output,
    },
    /// braid's WireGuard and IPsec pairs side by side (2 pairs each), and braid against one
    /// boringtun-cli, one gotatun and one wireguard-go tunnel, each measured with braid-bench
    /// and iperf3.
    Baseline {
        /// Parallel TCP streams.
        #[arg(long, short = 'P', default_value_t = 4)]
        streams: u32,
        /// Seconds per run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// braid's tunnel suites, comma-separated, measured one after the other in this order
        /// with the same traffic (wireguard, ipsec).
        #[arg(long, value_delimiter = ',', default_value = "wireguard,ipsec")]
        suites: Vec<Suite>,
        /// Gateway pairs of each braid lab.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
        pairs: u16,
        /// Also send small UDP datagrams of this many payload bytes through each braid suite
        /// and each baseline (sequence-numbered flows; at least 32), after its TCP run.
        #[arg(long)]
        udp_size: Option<usize>,
        /// The small-packet UDP run's offered rate over all flows (k, M or G suffix). Paths are
        /// told apart by delivered packets per second only when this is above what they carry.
        #[arg(long, default_value = "50M", requires = "udp_size")]
        udp_rate: String,
        /// The small-packet UDP run's flows (default: as many as TCP streams).
        #[arg(long, requires = "udp_size")]
        udp_flows: Option<u32>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Many concurrent UDP flows at a packet rate through a 2-pair lab: seed 003's mix.
    Flows {
        /// Concurrent flows.
        #[arg(long, default_value_t = 250_000)]
        count: u32,
        /// Packets per second over all flows.
        #[arg(long, default_value_t = 200_000)]
        pps: u64,
        /// IPv4 packet size in bytes.
        #[arg(long, default_value_t = 206)]
        size: usize,
        /// Seconds of traffic.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The sender of `flows` (runs inside a lab host; needs a raw socket).
    #[command(hide = true)]
    Flood {
        #[arg(long)]
        destination: Ipv4Addr,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        source_base: Ipv4Addr,
        #[arg(long)]
        flows: u32,
        #[arg(long)]
        pps: u64,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        seconds: f64,
    },
    /// Per-flow UDP time series around an online scale 3 → 5 and a drain back to 3.
    Recluster {
        /// UDP flows in each set (before and after the scale-up).
        #[arg(long, default_value_t = 16)]
        flows: u32,
        /// Aggregate UDP rate of each set (k, M or G suffix).
        #[arg(long, default_value = "32M")]
        rate: String,
        /// Seconds of traffic.
        #[arg(long, default_value_t = 12.0)]
        seconds: f64,
        #[command(flatten)]
        output: Output,
    },
}

/// How a scenario's result is printed.
#[derive(Debug, clap::Args)]
pub struct Output {
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG chart to this file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
}

impl Output {
    /// Prints `result` (JSON or `text`) and writes `chart` if asked to.
    pub fn emit<T: Serialize>(&self, result: &T, text: String, chart: impl FnOnce() -> Chart) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(result)?);
        } else {
            print!("{text}");
        }
        if let Some(path) = &self.chart {
            std::fs::write(path, chart().to_svg()).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("chart written to {}", path.display());
        }
        Ok(())
    }
}

/// Runs one scenario to the end.
pub fn run(command: ScenarioCommand) -> Result<()> {
    check_privileges()?;
    let bin = bin_dir();
    match command {
        ScenarioCommand::Scale {
            gateways,
            cap,
            seconds,
            streams,
            output,
        } => {
            let cap = cap
                .map(|c| parse_rate(&c).map(|bits_per_second| Cap { bits_per_second }))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let options = scale::ScaleOptions {
                gateways,
                cap,
                streams,
                seconds,
            };
            let report = scale::run(&options, &bin)?;
            output.emit(&report, scale::render(&report), || scale::chart(&report))
        }
        ScenarioCommand::Failover {
            flows,
            rate,
            seconds,
            kill_at,
            output,
        } => {
            let options = failover::FailoverOptions {
                flows,
                rate,
                seconds,
                kill_at,
            };
            let report = failover::run(&options, &bin)?;
            output.emit(&report, failover::render(&report), || failover::chart(&report))
        }
        ScenarioCommand::Baseline {
            streams,
            seconds,
            suites,
            pairs,
            udp_size,
            udp_rate,
            udp_flows,
            json,
        } => {
            parse_rate(&udp_rate).map_err(|e| anyhow::anyhow!("--udp-rate: {e}"))?;
            if let Some(size) = udp_size.filter(|size| *size < 32) {
                anyhow::bail!("--udp-size: expected at least 32 bytes (braid-bench's header), got {size}");
            }
            let options = baseline::BaselineOptions {
                streams,
                seconds,
                pairs,
                suites,
                udp: udp_size.map(|size| baseline::SmallUdp {
                    size,
                    rate: udp_rate,
                    flows: udp_flows.unwrap_or(streams),
                }),
            };
            let report = baseline::run(&options, &bin)?;
            let output = Output { json, chart: None };
            output.emit(&report, baseline::render(&report), Chart::default)
        }
        ScenarioCommand::Flows {
            count,
            pps,
            size,
            seconds,
            json,
        } => {
            let options = flows::FlowsOptions {
                count,
                pps,
                size,
                seconds,
            };
            let report = flows::run(&options, &bin)?;
            let output = Output { json, chart: None };
            output.emit(&report, flows::render(&report), Chart::default)
        }
        ScenarioCommand::Flood {
            destination,
            port,
            source_base,
            flows,
            pps,
            size,
            seconds,
        } => {
            let options = flood::FloodOptions {
                source_base,
                destination,
                port,
                flows,
                pps,
                size,
                duration: Duration::try_from_secs_f64(seconds).context("--seconds")?,
            };
            println!("{}", serde_json::to_string(&flood::run(&options)?)?);
            Ok(())
        }
        ScenarioCommand::Recluster {
            flows,
            rate,
            seconds,
            output,
        } => {
            let options = recluster::ReclusterOptions { flows, rate, seconds };
            let report = recluster::run(&options, &bin)?;
            output.emit(&report, recluster::render(&report), || recluster::chart(&report))
        }
    }
}
