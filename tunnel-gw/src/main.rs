//! `braid-gw`: runs one gateway of a braid cluster.
//!
//! Design: the binary is glue. It reads the cluster YAML, finds this gateway (`--site`,
//! `--pair`) and its peer in the other site, loads and checks the private key, and hands plain
//! [`GatewaySettings`] to the library. The data path runs on its own thread (two with IPsec's
//! `seal_thread`); the main thread writes the status file every 500 ms until SIGTERM or SIGINT,
//! then the data threads finish their current batch and the process exits 0. Key material is
//! never logged.
//!
//! Under systemd (`Type=notify`) the main thread also speaks `sd_notify`
//! ([`braid_core::service`]): `READY=1` once the data thread has started the session and the
//! control thread has sent its first heartbeat, `STATUS=` with the session state, `WATCHDOG=1`
//! only while both threads keep finishing rounds, `STOPPING=1` on the way out.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use braid_core::config::ClusterConfig;
use braid_core::config::Suite;
use braid_core::control::{ControlClient, DaemonId, Heartbeat, Keyring};
use braid_core::daemon::{init_logging, run_reporter, StatusWriter, StopFlag};
use braid_core::flow::PairId;
use braid_core::keys::PresharedKey;
use braid_core::keys::{credentials, KeyKind, PrivateKey, RoleKey};
use braid_core::service::{all_progressing, all_started, Progress, ServiceNotifier};
use braid_core::udp::DEFAULT_SOCKET_BUFFER_BYTES;
use braid_gw::counters::HANDSHAKE_LIMIT_DROPS;
use braid_gw::datapath::DataPath;
use braid_gw::settings::{GatewaySettings, TunnelSettings, DEFAULT_BATCH_SIZE};
use braid_gw::suite::{SessionState, SuiteError, TunnelSuite, SUITE_DROP_COUNTERS};
use braid_gw::Gateway;
use braid_ipsec::ike::crypto::Secret;
use braid_ipsec::ike::negotiate::selector_for_prefix;
use braid_ipsec::ike::wire::Identification;
use braid_ipsec::ike::IkeConfig;
use clap::Parser;

const STATUS_PERIOD: Duration = Duration::from_millis(500);

/// Runs one braid gateway: GENEVE from the site's demux on the LAN side, an encrypted tunnel to
/// the peer gateway of the same pair in the other site on the WAN side (WireGuard, or IPsec:
/// ESP keyed by IKEv2, as the cluster file's `cluster.suite` says).
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
    // The error names the file and, for YAML, the line and column; its source is in its text.
    let config = ClusterConfig::load(&args.config).map_err(|e| anyhow!("{e}"))?;
    let settings = settings_from_config(&config, &args.site, args.pair)?;
    let stop = StopFlag::from_signals().context("cannot install SIGTERM/SIGINT handlers")?;
    let gateway = braid_gw::bind(settings.clone()).with_context(|| {
        format!(
            "cannot bind the gateway sockets (LAN {}, WAN {}){}",
            settings.lan_bind,
            settings.wan_bind,
            if binds_advertised_wan(&config, args) {
                "; if the WAN address is a NAT's public one, set wan_listen to the local address it forwards to"
            } else {
                ""
            }
        )
    })?;
    match gateway {
        Gateway::WireGuard(datapath) => serve(*datapath, &config, args, &settings, &stop),
        Gateway::Ipsec(datapath) => serve(*datapath, &config, args, &settings, &stop),
    }
}

/// Whether this gateway binds the WAN address it advertises (no `wan_listen`).
fn binds_advertised_wan(config: &ClusterConfig, args: &Args) -> bool {
    config
        .gateway(&args.site, args.pair)
        .is_ok_and(|g| g.wan_listen.is_none())
}

/// Runs a bound gateway until SIGTERM or SIGINT: the data thread, heartbeats, the status file.
fn serve<S: TunnelSuite + Send + 'static>(
    datapath: DataPath<S>,
    config: &ClusterConfig,
    args: &Args,
    settings: &GatewaySettings,
    stop: &StopFlag,
) -> anyhow::Result<()> {
    let (lan_buffers, wan_buffers) = datapath.socket_buffers();
    tracing::info!(
        suite = %config.cluster.suite,
        cluster = %config.cluster.name,
        site = %args.site,
        pair = args.pair,
        lan = %settings.lan_bind,
        demux = %settings.demux,
        wan = %settings.wan_bind,
        peer = %settings.peer_endpoint,
        mtu = settings.mtu,
        data_threads = datapath.threads(),
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
    let data_progress = datapath.progress();
    let data_threads = datapath.threads();
    let data_stop = stop.clone();
    let data_thread = thread::Builder::new()
        .name(format!("braid-gw-{}", args.pair))
        .spawn(move || {
            let result = datapath.run(&data_stop);
            data_stop.stop();
            result
        })
        .context("cannot start the data thread")?;

    let started = Instant::now();
    let control_progress = Progress::every(Duration::from_millis(config.controller.heartbeat_ms));
    let control = start_control(
        config,
        args,
        counters.clone(),
        session.clone(),
        started,
        stop,
        control_progress.clone(),
    )?;
    let writer = args.status_file.as_ref().map(StatusWriter::new);
    let me = DaemonId::gateway(&args.site, args.pair);
    let mut notifier = ServiceNotifier::from_env();
    let threads: Vec<&Progress> = data_progress.iter().chain([&control_progress]).collect();
    run_reporter(
        writer.as_ref(),
        notifier.loop_period(STATUS_PERIOD),
        stop,
        || {
            let totals = counters.to_json();
            let hb = heartbeat(&me, config.cluster.suite, started, session.get(), &totals);
            let mut status = status_document(&hb, totals);
            status["data_threads"] = data_threads.into();
            // What the watchdog goes by, for supervisors without one (a Kubernetes probe).
            status["progressing"] = all_progressing(threads.iter().copied()).into();
            status
        },
        || {
            let healthy = all_progressing(threads.iter().copied());
            let line = status_line(args, config.cluster.suite, session.get().established, healthy);
            if all_started(threads.iter().copied()) {
                notifier.ready(&line);
            }
            notifier.status(&line);
            notifier.tick(healthy);
        },
    );
    notifier.stopping("stopping");
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
    counters: braid_gw::counters::GatewayCounters,
    session: std::sync::Arc<braid_gw::datapath::SharedSession>,
    started: Instant,
    stop: &StopFlag,
    progress: Progress,
) -> anyhow::Result<thread::JoinHandle<()>> {
    let me = DaemonId::gateway(&args.site, args.pair);
    let role_key_file = config.role_key_file(&me);
    let role_key = RoleKey::load(&role_key_file).with_context(|| config.key_file_hint(&role_key_file))?;
    let controllers = config.controller.control_addresses();
    let local = config
        .controller
        .address
        .local_for(&format!("gw-{}{}", args.site, args.pair));
    let client = ControlClient::new(Keyring::daemon(me.clone(), &role_key), &controllers, local.clone())
        .with_context(|| format!("cannot open the control socket {local}"))?;
    let period = Duration::from_millis(config.controller.heartbeat_ms);
    let suite = config.cluster.suite;
    let stop = stop.clone();
    thread::Builder::new()
        .name("gw-control".into())
        .spawn(move || {
            let report = || {
                progress.mark();
                heartbeat(&me, suite, started, session.get(), &counters.to_json())
            };
            // Gateways receive no membership; a push addressed to one is refused.
            client.run(&stop, period, report, |_| false)
        })
        .context("cannot start the control thread")
}

/// This gateway's report: its session (suite, SA ages, rekeys), traffic and drops, from the
/// state the data thread published and the counters as JSON (`totals`).
/// The one-line state the service manager shows (`systemctl status`).
fn status_line(args: &Args, suite: Suite, established: bool, healthy: bool) -> String {
    let session = if established { "established" } else { "not established" };
    let threads = if healthy { "" } else { "; a thread is stalled" };
    format!(
        "pair {} of site {}: {} session {session}{threads}",
        args.pair,
        args.site,
        suite.as_str()
    )
}

fn heartbeat(
    me: &DaemonId,
    suite: Suite,
    started: Instant,
    state: SessionState,
    totals: &serde_json::Value,
) -> Heartbeat {
    let get = |name: &str| totals[name].as_u64().unwrap_or(0);
    let suite_drops = |error: SuiteError| get(SUITE_DROP_COUNTERS[error.counter_index()]);
    let millis = |age: Duration| u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
    let mut hb = Heartbeat::new(me.clone());
    hb.uptime_ms = millis(started.elapsed());
    hb.session_established = Some(state.established);
    hb.handshake_age_ms = state.last_handshake_age.map(millis);
    hb.suite = Some(suite.as_str().to_string());
    hb.ike_sa_age_ms = state.ike_sa_age.map(millis);
    hb.rekeys = Some(state.rekeys);
    hb.ike_rekeys = state.ike_rekeys;
    hb.drops_replayed = Some(suite_drops(SuiteError::Replay));
    hb.drops_too_old = Some(suite_drops(SuiteError::TooOld));
    hb.drops_handshake_limited = Some(HANDSHAKE_LIMIT_DROPS.iter().map(|c| get(c.name())).sum());
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
}

/// The status file: the heartbeat's session figures and every counter. `handshake_age_ms` is
/// the SA age under its older name, kept for readers that know only that one.
fn status_document(hb: &Heartbeat, counters: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "role": "gw",
        "site": hb.id.site,
        "pair": hb.id.pair,
        "pid": hb.pid,
        "suite": hb.suite,
        "session_established": hb.session_established.unwrap_or(false),
        "sa_age_ms": hb.handshake_age_ms,
        "handshake_age_ms": hb.handshake_age_ms,
        "ike_sa_age_ms": hb.ike_sa_age_ms,
        "rekeys": hb.rekeys,
        "ike_rekeys": hb.ike_rekeys,
        "drops_replayed": hb.drops_replayed,
        "drops_too_old": hb.drops_too_old,
        "counters": counters,
    })
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

    let tunnel = match config.cluster.suite {
        Suite::WireGuard => {
            // The file actually read: the service manager's `private-key` credential when it
            // gave one, so errors name the key that was loaded.
            let key_file = credentials::key_path(KeyKind::PrivateKey, gateway.private_key_file.as_deref())
                .ok_or_else(|| {
                    anyhow!(
                        "{}: {field}.private_key_file is not set and no `private-key` credential was given; the gateway being run needs its private key",
                        config.path.display()
                    )
                })?;
            let key_file = key_file.as_path();
            let private_key = PrivateKey::load(key_file)
                .with_context(|| format!("cannot load the private key of {field} from {}", key_file.display()))?;
            let missing_key = |field: &str| anyhow!("{}: {field}.public_key is not set", config.path.display());
            let public_key = gateway.public_key.ok_or_else(|| missing_key(&field))?;
            check_key_pair(&private_key, key_file, &public_key, &config.path, &field)?;
            let peer_public_key = peer
                .public_key
                .ok_or_else(|| missing_key(&format!("pairs[id={pair}].gateways.{peer_site_name}")))?;
            TunnelSettings::WireGuard {
                private_key,
                peer_public_key,
            }
        }
        Suite::Ipsec => {
            let ipsec = config.cluster.ipsec.as_ref().ok_or_else(|| {
                anyhow!(
                    "{}: cluster.suite is ipsec but there is no ipsec: section",
                    config.path.display()
                )
            })?;
            let psk = PresharedKey::load(&ipsec.psk_file).context("cannot load ipsec.psk_file")?;
            // Exactly one side of a pair is preferred: the site whose name sorts first.
            let preferred = config.sites.keys().next().map(String::as_str) == Some(site_name);
            TunnelSettings::Ipsec(Box::new(IkeConfig {
                // Our own end for the NAT detection hashes: the bound address, so a peer sees
                // a NAT in front of us when there is one; identities stay the advertised ones.
                local_addr: gateway.wan_bind(),
                remote_addr: peer.wan,
                local_id: ike_identity(gateway.ike_id.as_deref(), gateway.wan),
                remote_id: ike_identity(peer.ike_id.as_deref(), peer.wan),
                psk: Secret::new(psk.as_bytes().to_vec()),
                ike_proposals: ipsec.ike_proposals.clone(),
                esp_proposals: ipsec.esp_proposals.clone(),
                local_ts: selectors(&site.prefixes),
                remote_ts: selectors(&peer_site.prefixes),
                ike_lifetime: Duration::from_secs(ipsec.ike_lifetime_s),
                child_lifetime: Duration::from_secs(ipsec.child_lifetime_s),
                liveness: Duration::from_secs(ipsec.liveness_s),
                replay_window: ipsec.replay_window,
                initiate: ipsec.initiates(site_name),
                preferred,
            }))
        }
    };

    Ok(GatewaySettings {
        pair_id: pair,
        local_prefixes: site.prefixes.clone(),
        peer_prefixes: peer_site.prefixes.clone(),
        lan_bind: gateway
            .geneve
            .with_context(|| format!("site {site_name} is external: its gateways are not braid gateways"))?,
        demux: site
            .demux
            .as_ref()
            .with_context(|| format!("site {site_name} is external: it runs no braid gateway"))?
            .geneve,
        wan_bind: gateway.wan_bind(),
        peer_endpoint: peer.wan,
        tunnel,
        mtu: usize::from(config.cluster.mtu),
        batch_size: DEFAULT_BATCH_SIZE,
        socket_buffer_bytes: DEFAULT_SOCKET_BUFFER_BYTES,
        seal_thread: config.cluster.ipsec.as_ref().is_some_and(|ipsec| ipsec.seal_thread),
    })
}

/// An IKE identity: the configured one (an IP address, or else an FQDN), by default the
/// gateway's WAN address, as strongSwan and the cloud VPN gateways default to.
fn ike_identity(configured: Option<&str>, wan: std::net::SocketAddr) -> Identification {
    match configured {
        Some(text) => match text.parse::<std::net::IpAddr>() {
            Ok(ip) => Identification::from_ip(ip),
            Err(_) => Identification::fqdn(text),
        },
        None => Identification::from_ip(wan.ip()),
    }
}

/// One traffic selector per site prefix, every protocol and port.
fn selectors(prefixes: &[braid_core::config::Prefix]) -> Vec<braid_ipsec::ike::wire::TrafficSelector> {
    prefixes.iter().map(|p| selector_for_prefix(p.addr, p.len)).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use braid_gw::counters::{GatewayCounters, ThreadCounters};
    use std::sync::Arc;

    #[test]
    fn heartbeat_and_status_file_report_suite_sa_ages_rekeys_and_replay_drops() {
        // Two data threads (a gateway with a sealing thread): the reports sum them.
        let (main, sealing) = (Arc::<ThreadCounters>::default(), Arc::<ThreadCounters>::default());
        let counters = GatewayCounters::new(vec![Arc::clone(&main), Arc::clone(&sealing)]);
        main.suite_drop(SuiteError::Replay);
        sealing.suite_drop(SuiteError::Replay);
        main.suite_drop(SuiteError::TooOld);
        let state = SessionState {
            established: true,
            last_handshake_age: Some(Duration::from_millis(42_000)),
            ike_sa_age: Some(Duration::from_secs(600)),
            rekeys: 3,
            ike_rekeys: Some(1),
        };
        let me = DaemonId::gateway("a", 2);
        let hb = heartbeat(&me, Suite::Ipsec, Instant::now(), state, &counters.to_json());
        assert_eq!(hb.id, me);
        assert_eq!(hb.suite.as_deref(), Some("ipsec"));
        assert_eq!((hb.handshake_age_ms, hb.ike_sa_age_ms), (Some(42_000), Some(600_000)));
        assert_eq!((hb.rekeys, hb.ike_rekeys), (Some(3), Some(1)));
        assert_eq!((hb.drops_replayed, hb.drops_too_old, hb.drops), (Some(2), Some(1), 3));

        let status = status_document(&hb, counters.to_json());
        assert_eq!((&status["site"], &status["pair"]), (&"a".into(), &2.into()));
        assert_eq!(status["suite"], "ipsec");
        assert_eq!(status["session_established"], true);
        assert_eq!(status["sa_age_ms"], 42_000);
        assert_eq!(status["handshake_age_ms"], 42_000);
        assert_eq!(status["ike_sa_age_ms"], 600_000);
        assert_eq!((&status["rekeys"], &status["ike_rekeys"]), (&3.into(), &1.into()));
        assert_eq!(
            (&status["drops_replayed"], &status["drops_too_old"]),
            (&2.into(), &1.into())
        );
        assert_eq!(status["counters"]["drop_suite_too_old"], 1);
    }

    #[test]
    fn wireguard_reports_no_ike_figures() {
        let state = SessionState {
            established: true,
            last_handshake_age: Some(Duration::from_secs(5)),
            rekeys: 2,
            ..SessionState::default()
        };
        let counters = GatewayCounters::new(vec![Arc::default()]).to_json();
        let hb = heartbeat(
            &DaemonId::gateway("b", 1),
            Suite::WireGuard,
            Instant::now(),
            state,
            &counters,
        );
        assert_eq!(hb.suite.as_deref(), Some("wireguard"));
        assert_eq!((hb.rekeys, hb.ike_rekeys, hb.ike_sa_age_ms), (Some(2), None, None));
        assert_eq!((hb.drops_replayed, hb.drops_too_old), (Some(0), Some(0)));
        let status = status_document(&hb, counters);
        assert!(status["ike_rekeys"].is_null() && status["ike_sa_age_ms"].is_null());
    }
}
