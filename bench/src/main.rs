//! `braid-bench`: iperf-style traffic for measuring braid. See the library for the design.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use braid_bench::client::{run_tcp, run_udp, TcpOptions, UdpOptions};
use braid_bench::probe::{run_probe, ProbeOptions};
use braid_bench::report::{interval_lines, render_tcp, render_udp, INTERVAL_HEADER};
use braid_bench::scenario::cli::ScenarioCommand;
use braid_bench::server::Server;
use braid_bench::spec::{parse_rate, Direction};

/// Multi-stream TCP and sequence-numbered UDP traffic with full payload verification.
#[derive(Debug, Parser)]
#[command(name = "braid-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer tests and probes (TCP and UDP on the same port) until killed.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: IpAddr,
        /// TCP and UDP port to listen on.
        #[arg(long, default_value_t = 5201)]
        port: u16,
    },
    /// Run one test against a server and report what the receivers verified.
    Client(ClientArgs),
    /// Check that every one of N flows (distinct source ports) reaches the server and back.
    Probe {
        /// Server host or address.
        #[arg(short = 'c', long = "connect")]
        host: String,
        /// Server port.
        #[arg(long, default_value_t = 5201)]
        port: u16,
        /// Number of flows, each from its own source port.
        #[arg(long, default_value_t = 16)]
        flows: u32,
        /// Seconds to wait for all answers.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
        /// Probes per unanswered flow, spread over the timeout.
        #[arg(long, default_value_t = 3)]
        attempts: u32,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Scenario(ScenarioCommand),
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// Server host or address.
    #[arg(short = 'c', long = "connect")]
    host: String,
    /// Server port (TCP control and data, UDP data).
    #[arg(long, default_value_t = 5201)]
    port: u16,
    /// Parallel TCP streams, or UDP flows (per direction).
    #[arg(short = 'P', long = "parallel", default_value_t = 1)]
    streams: u32,
    /// Test duration in seconds.
    #[arg(short = 't', long = "time", default_value_t = 10.0)]
    seconds: f64,
    /// Server sends, client receives (TCP only).
    #[arg(short = 'R', long, conflicts_with_all = ["bidir", "udp"])]
    reverse: bool,
    /// Both directions at once, P streams each (TCP only).
    #[arg(long, conflicts_with = "udp")]
    bidir: bool,
    /// Seconds between interval lines.
    #[arg(short = 'i', long, default_value_t = 1.0)]
    interval: f64,
    /// Print one JSON object at the end instead of text.
    #[arg(short = 'J', long)]
    json: bool,
    /// Sequence-numbered UDP flows instead of TCP streams.
    #[arg(short = 'u', long)]
    udp: bool,
    /// Bit rate over all flows (UDP, default 1M) or over each direction's streams (TCP, default
    /// unlimited; every stream is paced by the kernel to its share): a number with an optional
    /// k, M or G suffix.
    #[arg(short = 'b', long)]
    rate: Option<String>,
    /// UDP payload bytes per datagram (header included, at least 32).
    #[arg(short = 'l', long, default_value_t = 1200, requires = "udp")]
    size: usize,
    /// Seconds the server waits for late UDP datagrams after the sender stops.
    #[arg(long, default_value_t = 0.5, requires = "udp")]
    drain: f64,
}

/// The UDP rate when `--rate` is not given.
const DEFAULT_UDP_RATE: &str = "1M";

fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

fn seconds(value: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| anyhow::anyhow!("{what} must be a non-negative number of seconds"))
}

fn print_interval(json: bool) -> impl FnMut(&braid_bench::intervals::IntervalReport) {
    let mut first = true;
    move |interval| {
        if json {
            return;
        }
        if first {
            println!("{INTERVAL_HEADER}");
            first = false;
        }
        print!("{}", interval_lines(interval));
    }
}

fn client(args: &ClientArgs) -> Result<ExitCode> {
    let server = resolve(&args.host, args.port)?;
    let duration = seconds(args.seconds, "--time")?;
    let interval = seconds(args.interval, "--interval")?;
    let mut on_interval = print_interval(args.json);
    if !args.json {
        println!("Connecting to host {}, port {}", args.host, args.port);
    }
    let integrity_ok = if args.udp {
        let options = UdpOptions {
            server,
            flows: args.streams,
            duration,
            interval,
            rate_bps: parse_rate(args.rate.as_deref().unwrap_or(DEFAULT_UDP_RATE)).map_err(anyhow::Error::msg)?,
            size: args.size,
            drain: seconds(args.drain, "--drain")?,
        };
        let report = run_udp(&options, &mut on_interval)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", render_udp(&report));
        }
        report.integrity_ok
    } else {
        let direction = match (args.reverse, args.bidir) {
            (true, _) => Direction::Reverse,
            (_, true) => Direction::Bidir,
            _ => Direction::Forward,
        };
        let options = TcpOptions {
            server,
            streams: args.streams,
            duration,
            interval,
            direction,
            rate_bps: args
                .rate
                .as_deref()
                .map(parse_rate)
                .transpose()
                .map_err(anyhow::Error::msg)?,
        };
        let report = run_tcp(&options, &mut on_interval)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", render_tcp(&report));
        }
        report.integrity_ok
    };
    if !integrity_ok {
        eprintln!("braid-bench: payload corruption detected");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Server { bind, port } => {
            let server = Server::bind(SocketAddr::new(bind, port))
                .with_context(|| format!("cannot listen on {bind} port {port} (TCP and UDP)"))?;
            eprintln!("braid-bench server listening on {}", server.local_addr()?);
            server.serve()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Client(args) => client(&args),
        Command::Scenario(command) => {
            braid_bench::scenario::cli::run(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe {
            host,
            port,
            flows,
            timeout,
            attempts,
            json,
        } => {
            if flows == 0 {
                bail!("--flows must be at least 1");
            }
            let options = ProbeOptions {
                server: resolve(&host, port)?,
                flows,
                timeout: seconds(timeout, "--timeout")?,
                attempts,
            };
            let report = run_probe(&options)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{} of {} flows answered", report.answered, report.flows);
                if !report.all_answered {
                    println!("unanswered flows: {:?}", report.unanswered);
                }
            }
            Ok(if report.all_answered {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("braid-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
