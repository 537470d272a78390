//! `braid-demux`: the site's steering point. See the crate docs for the design.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use braid_core::config::ClusterConfig;
use braid_core::control::{ControlClient, DaemonId, Keyring};
use braid_core::daemon::{self, run_reporter, StatusWriter, StopFlag};
use braid_core::service::{all_progressing, all_started, Progress, ServiceNotifier};
use braid_core::udp;
use braid_demux::canary::Canary;
use braid_demux::control::DemuxControl;
use braid_demux::datapath::{
    DataPath, GatewayMap, InboundFilter, Lane, LaneIo, Mesh, MeshSizes, Processor, Published, Rules, SnapshotCell,
    StatsSet,
};
use braid_demux::offload::{MAX_SUPER_PACKET, VNET_HEADER_LEN};
use braid_demux::settings::DemuxSettings;
use braid_demux::steer::{
    FlowHasher, FragmentTable, IdleTimeouts, MaglevTable, Steering, DEFAULT_FRAGMENT_CAPACITY, DEFAULT_FRAGMENT_TTL_MS,
};
use braid_demux::tun::Tun;
use braid_sys::steer::OwnerProgram;
use clap::Parser;

/// braid-demux owns a TUN device for one site. Every packet routed into it is hashed on its
/// 5-tuple (symmetric, keyed with the flow-hash key both sites' demuxes share), pinned to a
/// gateway pair and sent to that pair's gateway in GENEVE over UDP; GENEVE coming back from the
/// gateways is written to the TUN.
#[derive(Parser, Debug)]
#[command(name = "braid-demux", version, about)]
struct Args {
    /// The cluster YAML.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Which site of the cluster this demux serves.
    #[arg(long)]
    site: String,
    /// Write counters as JSON to FILE every 500 ms.
    #[arg(long, value_name = "FILE")]
    status_file: Option<PathBuf>,
    /// Do not install routes to the other site's prefixes through the TUN (manage them yourself).
    #[arg(long)]
    no_routes: bool,
    /// Do not use TUN offloads (virtio-net headers, TCP super-packets): one packet per read
    /// and write.
    #[arg(long, env = "BRAID_DEMUX_NO_OFFLOAD", value_parser = clap::builder::BoolishValueParser::new())]
    no_offload: bool,
    /// Write UDP datagrams to the TUN one by one instead of as UDP super-packets (for
    /// receivers whose socket buffers cannot take a burst of a whole run at once).
    #[arg(long, env = "BRAID_DEMUX_NO_UDP_COALESCING", value_parser = clap::builder::BoolishValueParser::new())]
    no_udp_coalescing: bool,
    /// Packets the kernel holds in each TUN queue for its data thread before it drops (counted
    /// as drop_tun_queue_full). The kernel's default, 500, overflows on a scheduling hiccup of
    /// a few milliseconds at small-packet rates; more absorbs bursts at the price of queueing
    /// delay when the demux is overloaded for longer.
    #[arg(long, env = "BRAID_DEMUX_TUN_QUEUE_LEN", value_name = "PACKETS", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(16..=65536))]
    tun_queue_len: u32,
    /// Data threads, each owning one TUN queue and one GENEVE socket (overrides the site's
    /// `demux.data_threads`; default one per CPU core).
    #[arg(long, env = "BRAID_DEMUX_DATA_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    data_threads: Option<u16>,
    /// Let the kernel pick each outgoing packet's TUN queue by its own hash instead of by the
    /// flow's owner thread (an eBPF program, which needs CAP_BPF): about half the packets then
    /// reach a thread that hands them to their owner. For measuring; the default steers.
    #[arg(long, env = "BRAID_DEMUX_NO_KERNEL_STEERING", value_parser = clap::builder::BoolishValueParser::new())]
    no_kernel_steering: bool,
    /// Microseconds an idle data thread keeps polling before it sleeps (0: sleep at once).
    /// Lowers latency and wake-ups on a host with cores to spare; burns a core per thread
    /// while traffic trickles.
    #[arg(long, env = "BRAID_DEMUX_BUSY_POLL_US", value_name = "US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    busy_poll_us: u64,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    daemon::init_logging(args.verbose);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, through the log (a terminal gets colours, a file or the journal none).
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let cfg = ClusterConfig::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = DemuxSettings::from_config(&cfg, &args.site)?;
    let stop = StopFlag::from_signals().context("cannot install signal handlers")?;

    let threads = args
        .data_threads
        .map(usize::from)
        .unwrap_or(settings.data_threads)
        .max(1);

    let first = Tun::open(&settings.tun_name, true, !args.no_offload)?;
    first
        .set_mtu_and_up(settings.mtu, args.tun_queue_len)
        .with_context(|| format!("cannot configure {}", first.name()))?;
    let offload = first.offload();
    let mut queues = vec![first];
    for _ in 1..threads {
        let queue = Tun::open_queue(&settings.tun_name, offload)
            .with_context(|| format!("cannot open another queue of {}", settings.tun_name))?;
        queues.push(queue);
    }
    let kernel_steering = threads > 1 && !args.no_kernel_steering && steer_to_owners(&queues[0], threads);
    if !args.no_routes {
        for prefix in &settings.peer_prefixes {
            install_route(&prefix.to_string(), &settings.tun_name)?;
        }
    }
    let (sockets, buffers) = udp::bind_data_sockets(settings.geneve_bind, udp::DEFAULT_SOCKET_BUFFER_BYTES, threads)
        .with_context(|| format!("cannot bind the GENEVE socket on {}", settings.geneve_bind))?;
    tracing::info!(
        recv = buffers.recv_bytes,
        send = buffers.send_bytes,
        "GENEVE socket buffers"
    );

    let gateways = GatewayMap::new(settings.gateways.clone());
    let pair_ids = gateways.pair_ids();
    // Until the controller pushes membership, every configured pair is in: the data plane
    // works without a controller.
    let membership =
        MaglevTable::build(&pair_ids, settings.maglev_table_size).map_err(|e| anyhow::anyhow!("maglev table: {e}"))?;
    let mtu = usize::from(settings.mtu);
    let mesh = Mesh::new(
        threads,
        MeshSizes {
            small_bytes: (VNET_HEADER_LEN + mtu + 64).max(2048),
            // About 10 MB per thread: a few milliseconds of an owner falling behind at full
            // speed before the reader sheds.
            small_per_thread: 4096,
            large_bytes: VNET_HEADER_LEN + MAX_SUPER_PACKET + 1,
            large_per_thread: 32,
            inbox: 8192,
        },
    )
    .context("cannot set up the data threads' handoff")?;
    let path = Arc::new(DataPath {
        snapshot: Arc::new(SnapshotCell::new(membership, gateways)),
        mesh,
        rules: Arc::new(Rules {
            local_prefixes: settings.local_prefixes.clone(),
            inbound_filter: InboundFilter::new(
                settings.local_prefixes.clone(),
                settings.peer_prefixes.clone(),
                settings.canary_peer,
                settings.canary_local,
            ),
            mtu: settings.mtu,
        }),
        stats: StatsSet::new(threads),
        published: (0..threads).map(|_| Mutex::new(Published::default())).collect(),
        progress: (0..threads).map(|_| Progress::new()).collect(),
        busy_poll: Duration::from_micros(args.busy_poll_us),
        udp_coalescing: offload && !args.no_udp_coalescing,
        stop: stop.clone(),
        epoch: Instant::now(),
    });
    tracing::info!(
        site = %settings.site, tun = %settings.tun_name, geneve = %settings.geneve_bind,
        pairs = pair_ids.len(), mtu = settings.mtu, offload, data_threads = threads, kernel_steering,
        controller = %settings.controllers[0], controllers = settings.controllers.len(), "demux running"
    );

    let canary = if settings.peer_external {
        Canary::new_echo(settings.canary_local, settings.canary_peer, &pair_ids)
    } else {
        Canary::new(settings.canary_local, settings.canary_peer, &pair_ids)
    };
    let hasher = FlowHasher::from_sip_key(settings.flow_key.sip_key());
    let fragments = Arc::new(Mutex::new(FragmentTable::new(
        DEFAULT_FRAGMENT_CAPACITY,
        DEFAULT_FRAGMENT_TTL_MS,
    )));
    // Each thread's table holds the flows it owns: a 1/threads share, with room for the
    // share's statistical spread.
    let share = settings.flow_table_capacity.div_ceil(threads);
    let per_thread_capacity = share + share / 16 + 256;
    let mut workers = Vec::with_capacity(threads);
    for (id, (tun, socket)) in queues.into_iter().zip(sockets).enumerate() {
        let steering = Steering::with_fragments(
            hasher.clone(),
            per_thread_capacity,
            idle_timeouts(&settings.timeouts),
            fragments.clone(),
        );
        let processor = Processor::new(
            id,
            threads,
            path.rules.clone(),
            path.stats.thread(id).clone(),
            steering,
            canary.clone(),
            path.snapshot.load(),
        );
        let lane = Lane::new(id, path.clone(), LaneIo { tun, socket }, processor);
        workers.push(spawn(&format!("demux-data-{id}"), move || lane.run())?);
    }
    let control_progress = Progress::every(Duration::from_millis(settings.heartbeat_ms));
    let control = start_control(&settings, &args.config, path.clone(), &stop, control_progress.clone())?;
    let status = args.status_file.clone().map(StatusWriter::new);
    // The interface may predate this demux: count only what it drops from now on.
    let tun_drops_at_start = braid_demux::tun::queue_drops(&settings.tun_name);
    let mut notifier = ServiceNotifier::from_env();
    let markers: Vec<&Progress> = path.progress.iter().chain([&control_progress]).collect();
    run_reporter(
        status.as_ref(),
        notifier.loop_period(Duration::from_millis(500)),
        &stop,
        || {
            let mut json = path.stats.to_json(&path.views());
            json["role"] = "demux".into();
            json["site"] = settings.site.clone().into();
            json["pid"] = std::process::id().into();
            json["epoch"] = path.epoch().into();
            json["data_threads"] = threads.into();
            json["kernel_steering"] = kernel_steering.into();
            // What the watchdog goes by, for supervisors without one (a Kubernetes probe).
            json["progressing"] = all_progressing(markers.iter().copied()).into();
            json
        },
        || {
            if let (Some(start), Some(now)) = (tun_drops_at_start, braid_demux::tun::queue_drops(&settings.tun_name)) {
                path.stats
                    .tun_queue_drops
                    .store(now.saturating_sub(start), std::sync::atomic::Ordering::Relaxed);
            }
            let healthy = all_progressing(markers.iter().copied());
            let line = status_line(&settings, &path, threads, healthy);
            if all_started(markers.iter().copied()) {
                notifier.ready(&line);
            }
            notifier.status(&line);
            notifier.tick(healthy);
        },
    );
    notifier.stopping("stopping");
    tracing::info!("stopping");
    for worker in workers {
        let _ = worker.join();
    }
    let _ = control.join();
    Ok(())
}

/// Starts the thread that heartbeats to the controller and applies its membership pushes.
fn start_control(
    settings: &DemuxSettings,
    config: &std::path::Path,
    path: Arc<DataPath>,
    stop: &StopFlag,
    progress: Progress,
) -> Result<std::thread::JoinHandle<()>> {
    let me = DaemonId::demux(&settings.site);
    let local = settings.controllers[0].local_for(&format!("demux-{}", settings.site));
    let keys = Keyring::daemon(me.clone(), &settings.role_key);
    let client = ControlClient::new(keys, &settings.controllers, local.clone())
        .with_context(|| format!("cannot open the control socket {local}"))?;
    let control = DemuxControl {
        me,
        path,
        started: Instant::now(),
        maglev_table_size: settings.maglev_table_size,
        config: config.to_path_buf(),
        control: client.counters(),
    };
    let period = Duration::from_millis(settings.heartbeat_ms);
    let stop = stop.clone();
    spawn("demux-control", move || {
        let report = || {
            progress.mark();
            control.heartbeat()
        };
        client.run(&stop, period, report, |m| control.apply(m))
    })
}

/// The one-line state the service manager shows (`systemctl status`).
fn status_line(settings: &DemuxSettings, path: &DataPath, threads: usize, healthy: bool) -> String {
    let pairs = path.views().len();
    let stalled = if healthy { "" } else { "; a thread is stalled" };
    format!(
        "site {}: {} on {}, {pairs} pairs, membership epoch {}, {threads} data threads{stalled}",
        settings.site,
        settings.tun_name,
        settings.geneve_bind,
        path.epoch()
    )
}

fn idle_timeouts(t: &braid_core::config::Timeouts) -> IdleTimeouts {
    IdleTimeouts {
        tcp_ms: t.tcp_idle * 1000,
        tcp_half_open_ms: t.tcp_half_open * 1000,
        tcp_closing_ms: t.tcp_closing * 1000,
        udp_ms: t.udp_idle * 1000,
        other_ms: t.other_idle * 1000,
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("cannot start thread {name}"))
}

fn install_route(prefix: &str, dev: &str) -> Result<()> {
    let status = Command::new("ip")
        .args(["route", "replace", prefix, "dev", dev])
        .status()
        .context("cannot run `ip route` (install iproute2, or pass --no-routes)")?;
    if !status.success() {
        bail!("`ip route replace {prefix} dev {dev}` failed");
    }
    tracing::info!(%prefix, %dev, "route installed");
    Ok(())
}

/// Makes the kernel queue each packet the site sends on the TUN queue of the thread owning its
/// flow ([`braid_sys::steer`]). Without the privilege or kernel support for it, says why and
/// leaves the kernel's choice: the threads then hand packets to each other.
fn steer_to_owners(tun: &Tun, threads: usize) -> bool {
    let attached = u32::try_from(threads)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        .and_then(OwnerProgram::load)
        .and_then(|program| program.steer_tun(tun));
    match attached {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "the kernel will pick TUN queues by its own hash, so the data threads hand about half the \
                 packets to each other: {e}"
            );
            false
        }
    }
}
