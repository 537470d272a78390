//! `braid`: the operator's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use braid::admin::client::{self as admin_client, Channel};
use braid::admin::Command as AdminCommand;
use braid::{check_cmd, http, keys_cmd, status, supervisor};
use braid_core::config::Suite;
use braid_lab::{self as lab, demo};
use clap::{Parser, Subcommand, ValueEnum};

/// braid spreads a site's traffic to another site, flow by flow, over N WireGuard or IPsec
/// gateway pairs, so together they carry far more than one gateway can, with no stream reordered.
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
    /// Generate a WireGuard private key (base64, like `wg genkey`), a cluster secret, an admin
    /// key, or an IPsec pre-shared key.
    Keygen {
        /// Generate the 32-byte cluster secret (the controller's root key: every daemon's role
        /// key and the flow-hash key are derived from it).
        #[arg(long, conflicts_with_all = ["psk", "admin"])]
        secret: bool,
        /// Generate a 32-byte admin key: it signs remote administration requests
        /// (`controller.admin_key_file` on the controller, `--admin-key` on the CLI).
        #[arg(long, conflicts_with = "psk")]
        admin: bool,
        /// Write every daemon's role key and the demuxes' flow-hash key, derived from the
        /// cluster secret of --config, into `role-keys/` beside the secret file (0600 files in
        /// a 0700 directory). Copy each daemon's file to its host; the secret itself stays
        /// with the controller. The controller writes the keys of the daemons it launches.
        #[arg(long, requires = "config", conflicts_with_all = ["secret", "admin", "psk", "out"])]
        role_keys: bool,
        /// The cluster YAML, for --role-keys.
        #[arg(short, long, value_name = "FILE", requires = "role_keys")]
        config: Option<PathBuf>,
        /// Generate an IPsec pre-shared key: 32 random bytes as 44 characters of base64 text,
        /// used as text byte for byte (paste it into strongSwan's `secret = "..."` as is).
        #[arg(long)]
        psk: bool,
        /// Write it to FILE (created with mode 0600) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Read a private key on stdin and print its public key (like `wg pubkey`).
    Pubkey,
    /// Validate a cluster file and summarise it (for IPsec, also the pre-shared key file).
    Check {
        /// The cluster YAML.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Also load every private key file and check it matches its public key.
        #[arg(long)]
        keys: bool,
    },
    /// Run the controller: launch and supervise the demuxes and gateways of the cluster file,
    /// watch heartbeats, restart failed gateways, push membership, serve /metrics and /status.
    /// Foreground, logs to stderr; SIGTERM stops the fleet, SIGHUP reloads the file.
    Up {
        /// The cluster YAML.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Run only this site's daemons here (repeatable); default: every site, on this host.
        #[arg(long, value_name = "NAME")]
        site: Vec<String>,
        /// Logs, status files and the fleet record (default /run/braid/CLUSTER); the persistent
        /// state is in the cluster file's controller.state_dir.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Where braid-demux and braid-gw are (default: beside this binary).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Start no daemons: they run under another supervisor (systemd, Kubernetes); the
        /// controller watches them, pushes membership and runs `controller.restart_hook`.
        #[arg(long, conflicts_with = "site")]
        no_launch: bool,
        /// Which member of the controller set this is (an index into `controller.members`;
        /// default 0). Members elect one leader through `controller.etcd`; only the leader
        /// pushes membership and starts, kills or restarts daemons, the others stand by.
        #[arg(long, value_name = "N", default_value_t = 0)]
        member: u16,
    },
    /// Show every pair and gateway: state, pid, restarts, handshake age, traffic, pinned flows,
    /// canary round trip and loss, last failure, and the alarms raised.
    ///
    /// Exit status (also with --json): 0 the cluster is healthy; 1 an alarm is raised (no pair
    /// up, canary RTT over the threshold, a site unreachable, or the monitoring itself
    /// unhealthy); 2 the controller cannot be reached or read, or the command line is wrong.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the controller's status document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Grow or shrink a lab to N gateway pairs online (new pairs take new flows only; removed
    /// pairs are drained first). Returns once new pairs carry traffic.
    Scale {
        #[command(flatten)]
        target: Target,
        /// The number of gateway pairs wanted.
        #[arg(long)]
        gateways: u16,
        /// Seconds to wait.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Act on one gateway pair: add (lab: one more pair), drain, remove, activate. Over the
    /// admin socket (root or the controller's user only) or the signed remote channel.
    Gateway {
        #[command(subcommand)]
        action: GatewayAction,
    },
    /// Ask the controller to re-read the cluster file (same as SIGHUP). Over the admin socket
    /// (root or the controller's user only) or the signed remote channel.
    Reload {
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Two sites on this machine in network namespaces (needs root).
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
        /// The tunnel suite of every pair.
        #[arg(long, value_enum, default_value_t = SuiteArg::Wireguard)]
        suite: SuiteArg,
    },
}

/// `--suite`: the tunnel protocol of a lab's pairs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SuiteArg {
    /// WireGuard on UDP port 51820, a key pair per gateway.
    Wireguard,
    /// IKEv2 with a pre-shared key and ESP in UDP, port 4500.
    Ipsec,
}

impl From<SuiteArg> for Suite {
    fn from(arg: SuiteArg) -> Suite {
        match arg {
            SuiteArg::Wireguard => Suite::WireGuard,
            SuiteArg::Ipsec => Suite::Ipsec,
        }
    }
}

/// Which controller to talk to.
#[derive(clap::Args, Debug, Clone)]
struct Target {
    /// A lab's controller, by lab name.
    #[arg(long, value_name = "NAME", conflicts_with = "controller")]
    lab: Option<String>,
    /// A controller's HTTP address (its `controller.metrics`, e.g. 127.0.0.1:9477).
    #[arg(long, value_name = "ADDR")]
    controller: Option<std::net::SocketAddr>,
}

impl Target {
    fn address(&self) -> anyhow::Result<std::net::SocketAddr> {
        match (&self.lab, self.controller) {
            (Some(name), _) => Ok(lab::load_info(name)?.metrics),
            (None, Some(addr)) => Ok(addr),
            (None, None) => anyhow::bail!("say which controller: --lab NAME or --controller ADDR"),
        }
    }
}

/// Which controller to administer, and how: its admin socket (found through a lab, a cluster
/// file, or given), or its signed remote channel with the admin key. With a controller set
/// (several members), a reload goes to every member and any other command to the leader,
/// found by asking the members in turn (a standby refuses and names the leader).
#[derive(clap::Args, Debug, Clone)]
struct AdminTarget {
    /// A lab's controller (or every member of its controller set), by lab name (the admin
    /// sockets are in the lab's directory).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["config", "admin_socket", "remote"])]
    lab: Option<String>,
    /// The cluster file: administer its controller over `controller.admin_socket`, or the
    /// members of its set over their `admin_socket`s (those on this host).
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["admin_socket", "remote"])]
    config: Option<PathBuf>,
    /// The controller's admin socket itself.
    #[arg(long, value_name = "PATH", conflicts_with = "remote")]
    admin_socket: Option<PathBuf>,
    /// A controller's signed admin channel (its `controller.admin_listen`); needs --admin-key.
    /// Repeat it, member 0 first, to reach a controller set on several hosts.
    #[arg(long, value_name = "HOST:PORT", requires = "admin_key")]
    remote: Vec<String>,
    /// The admin key file (mode 0600) that signs requests to --remote.
    #[arg(long, value_name = "FILE", requires = "remote")]
    admin_key: Option<PathBuf>,
}

impl AdminTarget {
    /// The channel to each member (one for a lone controller), member 0 first.
    fn channels(&self) -> anyhow::Result<Vec<Channel>> {
        use std::net::ToSocketAddrs;
        if let Some(key_file) = &self.admin_key {
            return self
                .remote
                .iter()
                .map(|remote| {
                    let addr = remote
                        .to_socket_addrs()
                        .map_err(|e| anyhow::anyhow!("--remote {remote}: {e}"))?
                        .next()
                        .ok_or_else(|| anyhow::anyhow!("--remote {remote}: no address"))?;
                    Channel::remote(addr, key_file)
                })
                .collect();
        }
        if let Some(path) = &self.admin_socket {
            return Ok(vec![Channel::Local(path.clone())]);
        }
        if let Some(name) = &self.lab {
            let info = lab::load_info(name)?;
            if info.controllers.is_empty() {
                return Ok(vec![Channel::Local(info.admin_socket())]);
            }
            return Ok(info
                .controllers
                .iter()
                .map(|c| Channel::Local(c.admin_socket.clone()))
                .collect());
        }
        if let Some(config) = &self.config {
            let cfg = braid_core::config::ClusterConfig::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
            // A lone controller is a set of one: `members` always lists it.
            return Ok(cfg
                .controller
                .members
                .iter()
                .map(|m| Channel::Local(m.admin_socket.clone()))
                .collect());
        }
        anyhow::bail!(
            "say which controller: --lab NAME, --config FILE (its controller.admin_socket), --admin-socket PATH, \
             or --remote HOST:PORT --admin-key FILE"
        )
    }

    fn send(&self, command: AdminCommand) -> anyhow::Result<()> {
        println!("{}", admin_client::send_to_set(&self.channels()?, &command)?.trim());
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
enum GatewayAction {
    /// Add one gateway pair to a lab (outside a lab: add it to the cluster file and `braid reload`).
    Add {
        /// The lab, by name.
        #[arg(long, value_name = "NAME")]
        lab: Option<String>,
    },
    /// Stop new flows on a pair; it is removed once its pinned flows are idle (or the drain
    /// timeout passes).
    Drain {
        #[command(flatten)]
        admin: AdminTarget,
        /// The pair's id (its `id` under `pairs:` in the cluster file).
        #[arg(long, value_name = "ID")]
        pair: u16,
    },
    /// Take a pair out at once (its flows move to the other pairs) and stop its gateways.
    Remove {
        #[command(flatten)]
        admin: AdminTarget,
        /// The pair's id (its `id` under `pairs:` in the cluster file).
        #[arg(long, value_name = "ID")]
        pair: u16,
    },
    /// Put a drained pair back into service for new flows.
    Activate {
        #[command(flatten)]
        admin: AdminTarget,
        /// The pair's id (its `id` under `pairs:` in the cluster file).
        #[arg(long, value_name = "ID")]
        pair: u16,
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
        /// The tunnel suite of every pair.
        #[arg(long, value_enum, default_value_t = SuiteArg::Wireguard)]
        suite: SuiteArg,
        /// IPsec CHILD SA lifetime in seconds (10-604800; default 3600); --suite ipsec only.
        #[arg(long, value_name = "SECS")]
        child_lifetime: Option<u64>,
        /// IPsec IKE SA lifetime in seconds (20-604800; default 14400); --suite ipsec only.
        #[arg(long, value_name = "SECS")]
        ike_lifetime: Option<u64>,
        /// Every gateway seals ESP on a thread of its own (`ipsec.seal_thread`); --suite ipsec
        /// only.
        #[arg(long)]
        seal_thread: bool,
        /// Make site b a site that runs no braid: `strongswan` runs one strongSwan charon per
        /// site-b gateway, host b behind them (needs --suite ipsec).
        #[arg(long, value_parser = ["strongswan"])]
        external_peer: Option<String>,
        /// Data threads of each demux (1-256; `sites.<site>.demux.data_threads`). Default 1:
        /// a lab runs both sites, every gateway and the traffic on this one host, so each
        /// demux leaves the other cores to them (measured in BENCHMARKS.md); a demux on a host
        /// of its own defaults to one thread per core.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
        data_threads: Option<u16>,
        /// Controllers (1-16). With 2 or more the lab also runs a three-member etcd cluster
        /// (Debian etcd-server) and the controllers elect one leader through it; each is a
        /// process of its own (`braid up --member N`) in a namespace of its own, listed in
        /// --json's processes, and daemons heartbeat to them over a management network.
        #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        controllers: u16,
        /// Put site a's gateways behind a 1:1 NAT, as on a cloud with elastic/external IPs:
        /// each binds a private 198.18.30.x address (`wan_listen`) and is reached at its public
        /// 198.19.0.x one (`wan`), translated with nftables in the WAN namespace (needs `nft`).
        #[arg(long)]
        nat: bool,
    },
    /// Remove a lab: its processes, namespaces, links and state. Succeeds if it does not exist.
    Down {
        /// The lab's name, as given to `braid lab up --name`.
        #[arg(long, default_value = "lab")]
        name: String,
    },
}

/// Data threads of each demux in a lab made by `braid lab up` unless `--data-threads` says
/// otherwise: everything of a lab shares one host's cores.
const LAB_DATA_THREADS: u16 = 1;
fn main() -> ExitCode {
    let cli = Cli::parse();
    braid_core::daemon::init_logging(cli.verbose);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("braid: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `braid status`: prints the cluster's status; the exit status says whether an alarm is raised
/// (see the command's help).
fn status_cmd(target: &Target, json: bool) -> ExitCode {
    let fetched = target.address().and_then(|addr| {
        let body = http::get(addr, "/status")?;
        let s: status::StatusSnapshot =
            serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("the controller's /status does not parse: {e}"))?;
        Ok((body, s))
    });
    match fetched {
        Ok((body, s)) => {
            if json {
                println!("{}", body.trim());
            } else {
                print!("{}", status::render_table(&s));
            }
            if s.alarms_raised().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("braid: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn gateway(action: GatewayAction) -> anyhow::Result<()> {
    let (admin, command) = match action {
        GatewayAction::Add { lab } => {
            let name = lab.ok_or_else(|| {
                anyhow::anyhow!("outside a lab: add the pair to the cluster file, then `braid reload --config FILE`")
            })?;
            let now = lab::load_info(&name)?.gateways;
            let info = lab::scale(&name, &lab::default_bin_dir(), now + 1, Duration::from_secs(60))?;
            println!("lab {:?} now has {} pair(s)", info.name, info.gateways);
            return Ok(());
        }
        GatewayAction::Drain { admin, pair } => (admin, AdminCommand::Drain(pair)),
        GatewayAction::Remove { admin, pair } => (admin, AdminCommand::Remove(pair)),
        GatewayAction::Activate { admin, pair } => (admin, AdminCommand::Activate(pair)),
    };
    admin.send(command)
}

fn up_options(name: String, gateways: u16, timeout: u64, suite: SuiteArg) -> lab::UpOptions {
    lab::UpOptions {
        name,
        gateways,
        bin_dir: lab::default_bin_dir(),
        ready_timeout: Duration::from_secs(timeout),
        suite: suite.into(),
        external_peer: false,
        data_threads: None,
        controllers: 1,
        nat: false,
    }
}

/// Runs one command: its exit status, or the error that stopped it.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Keygen {
            role_keys: true,
            config: Some(config),
            ..
        } => keys_cmd::role_keys(&config),
        Command::Keygen {
            secret,
            admin,
            psk,
            out,
            ..
        } => keys_cmd::keygen(keys_cmd::KeyKind::pick(secret, admin, psk), out.as_deref()),
        Command::Pubkey => keys_cmd::pubkey(),
        Command::Check { config, keys } => check_cmd::check(&config, keys),
        Command::Lab {
            command:
                LabCommand::Up {
                    name,
                    gateways,
                    json,
                    timeout,
                    suite,
                    child_lifetime,
                    ike_lifetime,
                    seal_thread,
                    external_peer,
                    data_threads,
                    controllers,
                    nat,
                },
        } => {
            let ipsec = lab::IpsecLabOptions {
                child_lifetime_s: child_lifetime,
                ike_lifetime_s: ike_lifetime,
                seal_thread,
            };
            let opts = lab::UpOptions {
                external_peer: external_peer.is_some(),
                // The external-peer lab has one demux and keeps its per-core default.
                data_threads: data_threads.or(external_peer.is_none().then_some(LAB_DATA_THREADS)),
                controllers,
                nat,
                ..up_options(name, gateways, timeout, suite)
            };
            let info = lab::up_with(&opts, ipsec)?;
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                println!(
                    "lab {:?} up: {} {} pair(s); host a {} in {}, host b {} in {}; WAN capture: ip netns exec {} tcpdump -i {}",
                    info.name, info.gateways, info.suite, info.hosts.a.addr, info.hosts.a.netns, info.hosts.b.addr,
                    info.hosts.b.netns, info.wan.netns, info.wan.interface
                );
            }
            Ok(())
        }
        Command::Lab {
            command: LabCommand::Down { name },
        } => lab::down(&name),
        Command::Up {
            config,
            site,
            state_dir,
            bin_dir,
            no_launch,
            member,
        } => {
            let cfg = braid_core::config::ClusterConfig::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            if cfg.controller.as_member(member).is_none() {
                anyhow::bail!(
                    "--member {member}: the cluster file lists {} controller(s) (controller.members)",
                    cfg.controller.members.len()
                );
            }
            if !no_launch {
                if let Some(problem) = braid::fleet::spec::clashing_tuns(&cfg, &site) {
                    anyhow::bail!("{}: {problem}", config.display());
                }
            }
            let stop = braid_core::daemon::StopFlag::from_signals()?;
            supervisor::install_reload_signal()?;
            supervisor::run(
                supervisor::UpOptions {
                    config,
                    sites: site,
                    member,
                    launch: !no_launch,
                    bin_dir: bin_dir.unwrap_or_else(lab::default_bin_dir),
                    state_dir: state_dir.unwrap_or_else(|| PathBuf::from("/run/braid").join(&cfg.cluster.name)),
                },
                stop,
            )
        }
        Command::Status { target, json } => return Ok(status_cmd(&target, json)),
        Command::Scale {
            target,
            gateways,
            timeout,
        } => match &target.lab {
            Some(name) => {
                let info = lab::scale(name, &lab::default_bin_dir(), gateways, Duration::from_secs(timeout))?;
                println!("lab {:?} now has {} pair(s)", info.name, info.gateways);
                Ok(())
            }
            None => anyhow::bail!(
                "outside a lab braid cannot invent gateway addresses and keys: add or remove pairs in the \
                 cluster file, then `braid reload --config FILE` (or send the controller SIGHUP)"
            ),
        },
        Command::Reload { admin } => admin.send(AdminCommand::Reload),
        Command::Gateway { action } => gateway(action),
        Command::Demo {
            gateways,
            streams,
            seconds,
            udp_rate,
            keep,
            name,
            suite,
        } => demo::run(&demo::DemoOptions {
            lab: up_options(name, gateways, 30, suite),
            streams,
            seconds,
            udp_rate,
            keep,
        }),
    }
    .map(|()| ExitCode::SUCCESS)
}
