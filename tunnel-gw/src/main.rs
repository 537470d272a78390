//! `braid-gw`: runs one gateway of a braid cluster.
//!
//! Design: the binary is glue. It reads the cluster YAML, finds this gateway (`--site`,
//! `--pair`) and its peer in the other site, loads and checks the private key, and hands plain
//! [`GatewaySettings`] to the library. The data path runs on its own thread; the main thread
//! writes the status file every 500 ms until SIGTERM or SIGINT, then the data thread finishes
//! its current batch and the process exits 0. Key material is never logged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use braid_core::config::ClusterConfig;
use braid_core::control::{ControlClient, ControlKey, DaemonId, Heartbeat};
use braid_core::daemon::{init_logging, run_reporter, StatusWriter, StopFlag};
use braid_core::flow::PairId;
use braid_core::keys::{ClusterSecret, PrivateKey};
use braid_core::udp::DEFAULT_SOCKET_BUFFER_BYTES;
use braid_gw::settings::{GatewaySettings, DEFAULT_BATCH_SIZE};
use clap::Parser;

const STATUS_PERIOD: Duration = Duration::from_millis(500);

/// Runs one braid gateway: GENEVE from the site's demux on the LAN side, a WireGuard session
/// with the peer gateway of the same pair in the other site on the WAN side.
///
/// Needs no TUN and no privileges, only its two UDP sockets (the pair's `geneve` and `wan`
/// addresses in the cluster file). Stops cleanly on SIGTERM or SIGINT.
#[derive(Parser, Debug)]
#[command(name = "braid-gw", version)]
struct Args {
    /// The cluster configuration (YAML) shared by every braid component.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// The site this gateway serves, as named under `sites:`.
    #[arg(long, value_name = "NAME")]
    site: String,
    /// The pair this gateway belongs to (`id` of an entry under `pairs:`); also the GENEVE VNI.
    #[arg(long, value_name = "ID")]
    pair: PairId,
    /// Write a JSON status document (session state and counters) here every 500 ms, replacing
    /// the file atomically.
    #[arg(long, value_name = "PATH")]
    status_file: Option<PathBuf>,
    /// More log output: -v for debug, -vv for trace. RUST_LOG, when set, takes precedence.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("braid-gw: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = ClusterConfig::load(&args.config)
        .with_context(|| format!("cannot load cluster configuration {}", args.config.display()))?;
    let settings = settings_from_config(&config, &args.site, args.pair)?;
    let stop = StopFlag::from_signals().context("cannot install SIGTERM/SIGINT handlers")?;
    let datapath = braid_gw::bind_wireguard(settings.clone()).with_context(|| {
        format!(
            "cannot bind the gateway sockets (LAN {}, WAN {})",
            settings.lan_bind, settings.wan_bind
        )
    })?;
    let (lan_buffers, wan_buffers) = datapath.socket_buffers();
    tracing::info!(
        cluster = %config.cluster.name,
        site = %args.site,
        pair = args.pair,
        lan = %settings.lan_bind,
        demux = %settings.demux,
        wan = %settings.wan_bind,
        peer = %settings.peer_endpoint,
        mtu = settings.mtu,
        "gateway starting"
    );
    for (side, granted) in [("LAN", lan_buffers), ("WAN", wan_buffers)] {
        if granted.recv_bytes < settings.socket_buffer_bytes {
            tracing::warn!(
                side,
                requested = settings.socket_buffer_bytes,
                granted = granted.recv_bytes,
                "kernel granted a smaller socket receive buffer; raise net.core.rmem_max to \
                 absorb bursts"
            );
        }
    }

    let counters = datapath.counters();
    let session = datapath.session();
    let data_stop = stop.clone();
    let data_thread = thread::Builder::new()
        .name(format!("braid-gw-{}", args.pair))
        .spawn(move || {
            let result = datapath.run(&data_stop);
            // However the data path ends, the rest of the process ends with it.
            data_stop.stop();
            result
        })
        .context("cannot start the data thread")?;

    let control = start_control(&config, args, counters.clone(), session.clone(), &stop)?;
    match &args.status_file {
        Some(path) => {
            let writer = StatusWriter::new(path);
            run_reporter(&writer, STATUS_PERIOD, &stop, || {
                let state = session.get();
                serde_json::json!({
                    "role": "gw",
                    "site": args.site,
                    "pair": args.pair,
                    "pid": std::process::id(),
                    "session_established": state.established,
                    "handshake_age_ms": state.last_handshake_age.map(|age| age.as_millis() as u64),
                    "counters": counters.to_json(),
                })
            });
        }
        None => while !stop.sleep(STATUS_PERIOD) {},
    }
    data_thread
        .join()
        .map_err(|_| anyhow!("the data thread panicked"))?
        .context("the data path failed")?;
    let _ = control.join();
    tracing::info!("gateway stopped");
    Ok(())
}

/// Starts the thread that heartbeats to the controller: alive, session state, traffic totals.
fn start_control(
    config: &ClusterConfig,
    args: &Args,
    counters: std::sync::Arc<braid_gw::counters::GatewayCounters>,
    session: std::sync::Arc<braid_gw::datapath::SharedSession>,
    stop: &StopFlag,
) -> anyhow::Result<thread::JoinHandle<()>> {
    let secret = ClusterSecret::load(&config.cluster.secret_file)
        .with_context(|| format!("{}: cluster.secret_file", config.path.display()))?;
    let me = DaemonId::gateway(&args.site, args.pair);
    let controller = config.controller.address.clone();
    let local = controller.local_for(&format!("gw-{}{}", args.site, args.pair));
    let client = ControlClient::new(ControlKey::derive(&secret), me.clone(), controller, local.clone())
        .with_context(|| format!("cannot open the control socket {local}"))?;
    let period = Duration::from_millis(config.controller.heartbeat_ms);
    let started = std::time::Instant::now();
    let stop = stop.clone();
    thread::Builder::new()
        .name("gw-control".into())
        .spawn(move || {
            let report = || {
                let state = session.get();
                let totals = counters.to_json();
                let get = |name: &str| totals[name].as_u64().unwrap_or(0);
                let mut hb = Heartbeat::new(me.clone());
                hb.uptime_ms = started.elapsed().as_millis() as u64;
                hb.session_established = Some(state.established);
                hb.handshake_age_ms = state.last_handshake_age.map(|age| age.as_millis() as u64);
                hb.tx_bytes = get("lan_tx_bytes") + get("wan_tx_bytes");
                hb.rx_bytes = get("lan_rx_bytes") + get("wan_rx_bytes");
                hb.tx_packets = get("lan_tx_packets") + get("wan_tx_packets");
                hb.rx_packets = get("lan_rx_packets") + get("wan_rx_packets");
                hb.drops = totals
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(k, _)| k.starts_with("drop"))
                            .filter_map(|(_, v)| v.as_u64())
                            .sum()
                    })
                    .unwrap_or(0);
                hb
            };
            // Gateways receive no membership; a push addressed to one is refused.
            client.run(&stop, period, report, |_| false)
        })
        .context("cannot start the control thread")
}

/// This gateway's settings from the cluster configuration, with its private key loaded and
/// checked against the public key the configuration publishes for it.
fn settings_from_config(config: &ClusterConfig, site_name: &str, pair: PairId) -> anyhow::Result<GatewaySettings> {
    let site = config.site(site_name)?;
    let peer_site_name = config.peer_site_name(site_name)?;
    let peer_site = config.site(peer_site_name)?;
    let gateway = config.gateway(site_name, pair)?;
    let peer = config.gateway(peer_site_name, pair)?;
    let field = format!("pairs[id={pair}].gateways.{site_name}");

    let key_file = gateway.private_key_file.as_deref().ok_or_else(|| {
        anyhow!(
            "{}: {field}.private_key_file is not set; the gateway being run needs its private key",
            config.path.display()
        )
    })?;
    let private_key = PrivateKey::load(key_file).with_context(|| format!("cannot load {field}.private_key_file"))?;
    check_key_pair(&private_key, key_file, &gateway.public_key, &config.path, &field)?;

    Ok(GatewaySettings {
        pair_id: pair,
        local_prefixes: site.prefixes.clone(),
        peer_prefixes: peer_site.prefixes.clone(),
        lan_bind: gateway.geneve,
        demux: site.demux.geneve,
        wan_bind: gateway.wan,
        peer_endpoint: peer.wan,
        private_key,
        peer_public_key: peer.public_key,
        mtu: usize::from(config.cluster.mtu),
        batch_size: DEFAULT_BATCH_SIZE,
        socket_buffer_bytes: DEFAULT_SOCKET_BUFFER_BYTES,
    })
}

/// Refuses a private key whose public key is not the one the configuration publishes: the peer
/// would reject every handshake, and the pair would stay down with no other clue.
fn check_key_pair(
    private_key: &PrivateKey,
    key_file: &Path,
    configured: &braid_core::keys::PublicKey,
    config_path: &Path,
    field: &str,
) -> anyhow::Result<()> {
    let derived = private_key.public_key();
    if derived.as_bytes() != configured.as_bytes() {
        bail!(
            "the private key in {} belongs to public key {}, but {} sets {field}.public_key to {}",
            key_file.display(),
            derived.to_base64(),
            config_path.display(),
            configured.to_base64(),
        );
    }
    Ok(())
}
