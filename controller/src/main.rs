//! `braid`: the operator's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use braid::{check_cmd, demo, keys_cmd, lab};
use clap::{Parser, Subcommand};

/// braid spreads a site's traffic to another site, flow by flow, over N WireGuard gateway
/// pairs, so together they carry far more than one gateway can, with no stream reordered.
#[derive(Parser, Debug)]
#[command(name = "braid", version, about, long_about = None)]
struct Cli {
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a WireGuard private key (base64, like `wg genkey`), or a cluster secret.
    Keygen {
        /// Generate the 32-byte cluster secret (keys the flow hash and control messages).
        #[arg(long)]
        secret: bool,
        /// Write it to FILE (created with mode 0600) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Read a private key on stdin and print its public key (like `wg pubkey`).
    Pubkey,
    /// Validate a cluster file and summarise it.
    Check {
        /// The cluster YAML.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Also load every private key file and check it matches its public key.
        #[arg(long)]
        keys: bool,
    },
    /// Two sites on this machine in network namespaces (needs root or CAP_NET_ADMIN).
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// Build a lab, run multi-stream TCP and UDP from host a to host b, summarise, tear it down.
    Demo {
        /// Gateway pairs.
        #[arg(long, default_value_t = 3)]
        gateways: u16,
        /// TCP streams (and UDP flows).
        #[arg(short = 'P', long, default_value_t = 16)]
        streams: u32,
        /// Seconds of TCP traffic.
        #[arg(short = 't', long, default_value_t = 10)]
        seconds: u32,
        /// Aggregate UDP rate, bits per second (K, M, G suffixes).
        #[arg(long, default_value = "200M")]
        udp_rate: String,
        /// Leave the lab running afterwards.
        #[arg(long)]
        keep: bool,
        /// Lab name.
        #[arg(long, default_value = "demo")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// Build the lab and start its daemons; returns once traffic crosses every pair.
    Up {
        /// Lab name (1-12 of a-z, 0-9, '-'); namespaces are called braid-NAME.*
        #[arg(long, default_value = "lab")]
        name: String,
        /// Gateway pairs.
        #[arg(long, default_value_t = 3)]
        gateways: u16,
        /// Print the lab description as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for every pair to carry traffic.
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
    /// Remove a lab: its processes, namespaces, links and state. Succeeds if it does not exist.
    Down {
        #[arg(long, default_value = "lab")]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    braid_core::daemon::init_logging(cli.verbose);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("braid: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn up_options(name: String, gateways: u16, timeout: u64) -> lab::UpOptions {
    lab::UpOptions {
        name,
        gateways,
        bin_dir: lab::default_bin_dir(),
        ready_timeout: Duration::from_secs(timeout),
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Keygen { secret, out } => keys_cmd::keygen(secret, out.as_deref()),
        Command::Pubkey => keys_cmd::pubkey(),
        Command::Check { config, keys } => check_cmd::check(&config, keys),
        Command::Lab { command: LabCommand::Up { name, gateways, json, timeout } } => {
            let info = lab::up(&up_options(name, gateways, timeout))?;
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                println!(
                    "lab {:?} up: {} pair(s); host a {} in {}, host b {} in {}; WAN capture: ip netns exec {} tcpdump -i {}",
                    info.name, info.gateways, info.hosts.a.addr, info.hosts.a.netns, info.hosts.b.addr,
                    info.hosts.b.netns, info.wan.netns, info.wan.interface
                );
            }
            Ok(())
        }
        Command::Lab { command: LabCommand::Down { name } } => lab::down(&name),
        Command::Demo { gateways, streams, seconds, udp_rate, keep, name } => demo::run(&demo::DemoOptions {
            lab: up_options(name, gateways, 30),
            streams,
            seconds,
            udp_rate,
            keep,
        }),
    }
}
