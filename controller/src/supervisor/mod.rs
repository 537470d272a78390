//! `braid up`: the controller's supervisor loop.
//!
//! One thread owns all controller state and runs a short loop (≤ 10 ms a turn):
//!
//! 1. authenticated control messages in ([`ControlServer`]): heartbeats feed the failure
//!    [`Detector`] and the [`MembershipMachine`] (pinned flows, canary results), acks close
//!    membership pushes;
//! 2. child processes reaped: an exit is a failure at once (no waiting for heartbeats);
//! 3. detector events: a pair going down or up changes membership; a daemon that stopped
//!    heartbeating while its process still exists is hung (frozen, livelocked) and is killed;
//! 4. restarts that are due, with backoff ([`RestartTracker`]);
//! 5. membership pushes (new epochs, and resends until every demux acked), each carrying the
//!    GENEVE address of every named pair's gateway in the receiving site;
//! 6. operator commands from the admin channel ([`crate::admin`]: the local socket, and the
//!    signed TCP channel if configured), SIGHUP reloads, and a status snapshot for readers
//!    (served read-only over HTTP);
//! 7. under systemd, `sd_notify` ([`braid_core::service`]): `READY=1` after the first turn,
//!    `STATUS=` with the pairs and epoch, `WATCHDOG=1` from this loop only (a wedged loop stops
//!    the pings), `STOPPING=1` once it ends. Launched daemons do not inherit `NOTIFY_SOCKET`.
//!
//! The data plane never depends on this loop: daemons run in their own process groups and keep
//! forwarding with their last membership if the controller dies; a new controller adopts them
//! (`fleet.json`, verified through `/proc`) and only starts pushing membership once it has heard
//! from the fleet for long enough to know which pairs are healthy.

mod daemon;
mod hooks;
mod signals;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use braid_core::config::{ClusterConfig, Suite};
use braid_core::control::{Body, ControlServer, DaemonId, Inbound, Keyring, PairGateway, Role as WireRole};
use braid_core::daemon::StopFlag;
use braid_core::flow::PairId;
use braid_core::keys::{AdminKey, ClusterSecret};
use braid_core::service::ServiceNotifier;

use crate::admin::{self, Command, CommandRequest};
use crate::fleet::{self, spec};
use crate::health::detector::{Detector, DetectorConfig, GatewayFacts, HealthEvent};
use crate::health::membership::{AdminState, MembershipMachine};
use crate::health::restart::RunState;
use crate::health::{DaemonKey, FailureReason, Role, SiteIndex};
use crate::http;
use crate::leader::{self, Leadership};
use crate::status::StatusSnapshot;
use daemon::Daemon;

pub use signals::install_reload_signal;

/// How `braid up` was asked to run.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub config: PathBuf,
    /// Sites whose daemons this controller starts itself; empty = all (one host).
    pub sites: Vec<String>,
    /// Which member of the controller set this is (`controller.members`).
    pub member: u16,
    /// Whether to start daemons at all (false: another supervisor runs them).
    pub launch: bool,
    pub bin_dir: PathBuf,
    /// Logs, status files and `fleet.json`.
    pub state_dir: PathBuf,
}

/// How often membership is resent to a demux that has not acknowledged it.
const RESEND_MS: u64 = 50;

/// The controller.
struct Supervisor {
    opts: UpOptions,
    cfg: ClusterConfig,
    started: Instant,
    daemons: BTreeMap<DaemonKey, Daemon>,
    detector: Detector,
    membership: MembershipMachine,
    server: ControlServer,
    /// Pairs leaving the configuration: drained, then their gateways stopped.
    leaving: Vec<PairId>,
    /// Membership is pushed only after this (ms since start), once the fleet has been heard.
    push_after_ms: u64,
    heartbeats: u64,
    snapshot: Arc<RwLock<StatusSnapshot>>,
    pids_dirty: bool,
    /// The cluster secret: the daemons' role keys are derived from it.
    secret: ClusterSecret,
    /// The membership epoch last recorded in the state directory.
    saved_epoch: u64,
    /// Restart hooks run for daemons on other hosts, reaped every turn.
    hooks: hooks::RestartHooks,
    /// Who leads the controller set (always this controller without etcd), fed by the etcd
    /// driver thread.
    leadership: Arc<Mutex<Leadership>>,
    /// The term this controller acts under, while it leads.
    acting_term: Option<u64>,
    /// The operator's standing orders as last recorded in the state directory.
    saved_admin: fleet::AdminRecord,
}

/// How old the keys a gateway sends with (its SA) may be for its pair to count as up. WireGuard
/// refuses keys 180 s after their handshake, the detector's default; an IPsec CHILD SA is valid
/// for its configured lifetime, and rekeyed well before it ends.
fn max_sa_age_ms(cfg: &ClusterConfig) -> u64 {
    match &cfg.cluster.ipsec {
        Some(ipsec) if cfg.cluster.suite == Suite::Ipsec => ipsec.child_lifetime_s.saturating_mul(1000),
        _ => DetectorConfig::default().max_handshake_age_ms,
    }
}

/// The names of the sites that run no braid.
fn external_sites(cfg: &ClusterConfig) -> Vec<&str> {
    cfg.sites
        .iter()
        .filter(|(_, s)| s.is_external())
        .map(|(n, _)| n.as_str())
        .collect()
}

/// Runs the controller until `stop` is set; on stop, every daemon it runs is stopped too.
pub fn run(opts: UpOptions, stop: StopFlag) -> Result<()> {
    let cfg = load_as_member(&opts)?;
    for site in &opts.sites {
        if cfg
            .site(site)
            .map_err(|e| anyhow::anyhow!("--site {site}: {e}"))?
            .is_external()
        {
            anyhow::bail!("--site {site}: the site is external (external: true): it runs no braid daemons");
        }
    }
    std::fs::create_dir_all(&opts.state_dir).with_context(|| format!("cannot create {}", opts.state_dir.display()))?;
    create_private_dir(&cfg.controller.state_dir)
        .with_context(|| format!("controller.state_dir {}", cfg.controller.state_dir.display()))?;
    let secret = ClusterSecret::load(&cfg.cluster.secret_file)
        .with_context(|| format!("{}: cluster.secret_file", cfg.path.display()))?;
    let settings = cfg.controller.clone();
    // First, so a second controller for the same cluster stops here, before it touches
    // anything the running one uses.
    let admin_socket = admin::server::AdminSocket::bind(&settings.admin_socket)
        .with_context(|| format!("controller.admin_socket {}", settings.admin_socket.display()))?;
    let remote_admin = match (settings.admin_listen, &settings.admin_key_file) {
        (Some(addr), Some(key_file)) => {
            let key = AdminKey::load(key_file)
                .with_context(|| format!("{}: controller.admin_key_file", cfg.path.display()))?;
            let listener = TcpListener::bind(addr)
                .with_context(|| format!("cannot listen for signed admin requests on {addr}"))?;
            Some((listener, key))
        }
        _ => None,
    };
    let keys = Keyring::controller_member(opts.member, secret.clone(), cfg.daemons());
    let control_bind = settings.bind_address();
    let server = ControlServer::bind(keys, control_bind.clone())
        .with_context(|| format!("cannot listen for control messages on {control_bind}"))?;
    let listener = TcpListener::bind(settings.metrics)
        .with_context(|| format!("cannot listen for /metrics on {}", settings.metrics))?;
    let snapshot = Arc::new(RwLock::new(StatusSnapshot::default()));
    let (commands_tx, commands) = mpsc::channel::<CommandRequest>();
    let counters = http::Counters::default();
    let mut threads = Vec::new();
    {
        let (snapshot, stop, counters) = (snapshot.clone(), stop.clone(), counters.clone());
        threads.push(
            std::thread::Builder::new()
                .name("http".into())
                .spawn(move || http::serve(listener, snapshot, counters, stop))?,
        );
    }
    {
        let (commands, refused, stop) = (commands_tx.clone(), counters.admin_refused.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name("admin-socket".into())
                .spawn(move || admin::server::serve_unix(admin_socket, commands, refused, stop))?,
        );
    }
    if let Some((listener, key)) = remote_admin {
        let (refused, stop) = (counters.admin_refused.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name("admin-tcp".into())
                .spawn(move || admin::server::serve_tcp(listener, key, commands_tx, refused, stop))?,
        );
    }

    // A site that runs no braid has no daemons to hear from and no demux to push to.
    let external_site = cfg.sites.values().position(|s| s.is_external()).map(|i| i as SiteIndex);
    let detector = Detector::new(DetectorConfig {
        failure_timeout_ms: settings.failure_timeout_ms,
        heartbeat_ms: settings.heartbeat_ms,
        recovery_ms: settings.recovery_ms,
        max_handshake_age_ms: max_sa_age_ms(&cfg),
        // The loop calls the detector every few tens of ms; half a failure timeout without a
        // call means this controller was not running.
        pause_ms: settings.failure_timeout_ms / 2,
        ..DetectorConfig::default()
    })
    .with_external_site(external_site);
    let demuxes = [0, 1].into_iter().filter(|&s| Some(s) != external_site);
    // Epochs only move forward: on from the highest this controller's predecessors recorded
    // (and past what the demuxes report having applied, once they are heard).
    let saved_epoch = fleet::load_epoch(&cfg.controller.state_dir);
    let membership = MembershipMachine::new(demuxes, RESEND_MS, saved_epoch + 1);
    let started = Instant::now();
    let leadership = Arc::new(Mutex::new(match &cfg.controller.etcd {
        Some(etcd) => Leadership::elected(opts.member, etcd.lease_ttl_s * 1000),
        None => Leadership::lone(),
    }));
    if let Some(etcd) = &cfg.controller.etcd {
        threads.push(leader::etcd::spawn(
            etcd.clone(),
            opts.member,
            leadership.clone(),
            started,
            stop.clone(),
        )?);
    }
    let mut sup = Supervisor {
        push_after_ms: settings.failure_timeout_ms + settings.recovery_ms + 200,
        opts,
        cfg,
        started,
        daemons: BTreeMap::new(),
        detector,
        membership,
        server,
        leaving: Vec::new(),
        heartbeats: 0,
        snapshot,
        pids_dirty: true,
        secret,
        saved_epoch,
        hooks: hooks::RestartHooks::default(),
        leadership,
        acting_term: None,
        saved_admin: fleet::AdminRecord::default(),
    };
    sup.enlist_fleet();
    sup.restore_admin();
    sup.sync_members();
    tracing::info!(
        cluster = %sup.cfg.cluster.name, control = %settings.address, control_bind = %control_bind, metrics = %settings.metrics,
        admin_socket = %settings.admin_socket.display(), state_dir = %settings.state_dir.display(),
        daemons = sup.daemons.len(), "controller running"
    );
    let result = sup.run_loop(&stop, &commands);
    sup.shutdown();
    for thread in threads {
        let _ = thread.join();
    }
    result
}

/// Loads the cluster file as member `opts.member` of the controller set sees it.
fn load_as_member(opts: &UpOptions) -> Result<ClusterConfig> {
    let mut cfg = ClusterConfig::load(&opts.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    cfg.controller = cfg.controller.as_member(opts.member).with_context(|| {
        format!(
            "member {} of a controller set of {} (controller.members)",
            opts.member,
            cfg.controller.members.len()
        )
    })?;
    Ok(cfg)
}

/// Creates `dir` (and missing parents) owner-only, mode 0700, and makes sure the directory
/// itself is 0700 if it already existed.
fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        tracing::info!(dir = %dir.display(), "state directory was mode {mode:04o}; setting 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {} to its owner", dir.display()))?;
    }
    Ok(())
}

impl Supervisor {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether this controller starts (and restarts) the daemons of `site` itself.
    fn runs_locally(&self, site: &str) -> bool {
        self.opts.launch && (self.opts.sites.is_empty() || self.opts.sites.iter().any(|s| s == site))
    }

    fn site_index(&self, site: &str) -> Option<SiteIndex> {
        spec::site_index(&self.cfg, site)
    }

    /// Registers every daemon of the configuration, adopting processes a previous controller
    /// left running, and watches every pair.
    fn enlist_fleet(&mut self) {
        let now = self.now_ms();
        let recorded = fleet::load_pids(&self.opts.state_dir);
        for spec in spec::fleet(&self.cfg, &[], &self.opts.bin_dir, &self.opts.state_dir) {
            let local = self.runs_locally(&spec.site);
            let mut d = Daemon::new(spec, local);
            if let Some(&pid) = recorded.get(&d.spec.name()) {
                if let Some(running) = fleet::process::adopt(&d.spec, pid) {
                    tracing::info!(daemon = %d.spec.name(), pid, "adopted a running daemon");
                    d.running = Some(running);
                }
            }
            self.enlist(d, now);
        }
        for pair in self.cfg.pairs.iter().map(|p| p.id).collect::<Vec<_>>() {
            self.detector.watch_pair(pair, now);
            let _ = self.membership.add_pair(pair);
        }
        for site in [0, 1] {
            self.detector.watch_demux(site, now);
        }
    }

    /// Applies the standing orders a previous controller recorded: pairs the operator removed
    /// stay removed (their gateways are not started), drained pairs drain again with a fresh
    /// deadline. Orders about pairs the cluster file no longer has are dropped.
    fn restore_admin(&mut self) {
        let record = fleet::load_admin(&self.cfg.controller.state_dir);
        self.apply_orders(record, "before the restart");
    }

    /// Carries out standing orders recorded elsewhere (`when` says where they were given):
    /// removed pairs stay removed, draining pairs drain (again), and a pair draining here that
    /// the record does not name is active again (the orders changed under another leader).
    fn apply_orders(&mut self, record: fleet::AdminRecord, when: &str) {
        let now = self.now_ms();
        let timeout = self.cfg.controller.drain_timeout_s * 1000;
        for &pair in &record.removed {
            if self.membership.admin_state(pair).is_some() {
                tracing::info!(pair, "pair stays removed, as the operator ordered {when}");
                self.retire_pair(pair);
            }
        }
        for pair in self.cfg.pairs.iter().map(|p| p.id).collect::<Vec<_>>() {
            let draining = matches!(self.membership.admin_state(pair), Some(AdminState::Draining { .. }));
            if record.draining.contains(&pair) {
                if !draining && self.membership.drain(pair, now, timeout).is_ok() {
                    tracing::info!(pair, "pair drains, as the operator ordered {when}");
                }
            } else if draining && !self.leaving.contains(&pair) && self.membership.reactivate(pair).is_ok() {
                tracing::info!(pair, "pair active again, as the operator ordered {when}");
            }
        }
        self.saved_admin = record;
    }

    /// Records the operator's standing orders when they changed (the leader only: it is the
    /// one taking orders).
    fn save_admin(&mut self) {
        if !self.leading() {
            return;
        }
        let mut record = fleet::AdminRecord::default();
        for pair in self.cfg.pairs.iter().map(|p| p.id) {
            match self.membership.admin_state(pair) {
                Some(AdminState::Draining { .. }) if !self.leaving.contains(&pair) => record.draining.push(pair),
                Some(AdminState::Removed) => record.removed.push(pair),
                _ => {}
            }
        }
        if record == self.saved_admin {
            return;
        }
        if self.cfg.controller.etcd.is_some() {
            self.share_orders(&record);
        }
        match fleet::save_admin(&self.cfg.controller.state_dir, &record) {
            Ok(()) => self.saved_admin = record,
            Err(e) => tracing::warn!("cannot record the operator's orders: {e}"),
        }
    }

    /// Hands standing orders to the etcd driver, which stores them while this member leads.
    fn share_orders(&self, record: &fleet::AdminRecord) {
        match serde_json::to_vec(record) {
            Ok(bytes) => self
                .leadership
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .store_orders(bytes),
            Err(e) => tracing::warn!("cannot encode the operator's orders: {e}"),
        }
    }

    fn enlist(&mut self, mut d: Daemon, now: u64) {
        if d.running.is_some() {
            self.detector.observe_process_started(d.spec.key, now);
            d.restart.on_started(now);
        }
        self.daemons.insert(d.spec.key, d);
    }

    fn run_loop(&mut self, stop: &StopFlag, commands: &Receiver<CommandRequest>) -> Result<()> {
        let mut last_snapshot = 0;
        // This loop is the controller's own progress: each turn (≤ 10 ms) may feed the watchdog,
        // so a wedged loop stops the pings.
        let mut notifier = ServiceNotifier::from_env();
        while !stop.is_stopped() {
            if signals::take_reload_request() {
                let _ = self.reload();
            }
            self.follow_leadership();
            while let Ok((command, reply)) = commands.try_recv() {
                let _ = reply.send(self.command(command));
            }
            self.receive_control();
            self.reap_children();
            self.hooks.tick();
            self.handle_health_events();
            self.restart_due();
            self.push_membership();
            let now = self.now_ms();
            if now >= last_snapshot + 100 {
                last_snapshot = now;
                self.publish_snapshot();
                self.save_pids();
                self.save_admin();
                let line = self.status_line();
                notifier.ready(&line);
                notifier.status(&line);
            }
            notifier.tick(true);
        }
        notifier.stopping("stopping the controller");
        Ok(())
    }

    /// Takes up or gives up acting as the leader. A new term is pushed to every demux at once
    /// (under a new epoch), which fences off the previous leader.
    fn follow_leadership(&mut self) {
        let now = self.now_ms();
        let term = self.leadership.lock().unwrap_or_else(|e| e.into_inner()).leading(now);
        if term == self.acting_term {
            return;
        }
        self.acting_term = term;
        match term {
            Some(term) => {
                tracing::warn!(
                    term,
                    member = self.opts.member,
                    "acting as the leader of the controller set"
                );
                let stored = self
                    .leadership
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .stored_orders()
                    .map(serde_json::from_slice::<fleet::AdminRecord>);
                match stored {
                    Some(Ok(record)) => self.apply_orders(record, "under an earlier leader"),
                    Some(Err(e)) => tracing::error!("the standing orders in etcd are unreadable, ignored: {e}"),
                    // None stored yet: this member's own record (from its state directory) is.
                    None if self.saved_admin != fleet::AdminRecord::default() => {
                        self.share_orders(&self.saved_admin);
                    }
                    None => {}
                }
                self.membership.republish();
            }
            None => tracing::warn!(
                member = self.opts.member,
                "standing by: another controller leads (or etcd cannot confirm this one does)"
            ),
        }
    }

    /// Whether this controller may act now (see [`crate::leader`]): checked again right before
    /// each action, so a controller that was frozen does nothing on waking.
    fn leading(&self) -> bool {
        self.acting_term.is_some()
            && self
                .leadership
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .leading(self.now_ms())
                == self.acting_term
    }

    /// The one-line state the service manager shows (`systemctl status`).
    fn status_line(&self) -> String {
        let membership = self.membership.current();
        let pairs = self.cfg.pairs.len();
        let converged = if self.membership.converged() {
            "acknowledged"
        } else {
            "being pushed"
        };
        let role = match (&self.cfg.controller.etcd, self.acting_term) {
            (None, _) => String::new(),
            (Some(_), Some(term)) => format!(" (member {} leading, term {term})", self.opts.member),
            (Some(_), None) => format!(" (member {} standing by)", self.opts.member),
        };
        format!(
            "cluster {}{role}: {} of {pairs} pairs active, membership epoch {} {converged}, {} heartbeats",
            self.cfg.cluster.name,
            membership.active.len(),
            membership.epoch,
            self.heartbeats
        )
    }

    fn receive_control(&mut self) {
        let mut timeout = Duration::from_millis(10);
        for _ in 0..1000 {
            let Some(inbound) = self.server.recv(timeout) else {
                return;
            };
            timeout = Duration::ZERO;
            self.on_message(inbound);
        }
    }

    fn key_of(&self, id: &DaemonId) -> Option<DaemonKey> {
        let site = self.site_index(&id.site)?;
        match id.role {
            WireRole::Demux => Some(DaemonKey::demux(site)),
            WireRole::Gateway => Some(DaemonKey::gateway(site, id.pair)),
            WireRole::Controller => None,
        }
    }

    fn on_message(&mut self, inbound: Inbound) {
        let now = self.now_ms();
        let Some(key) = self.key_of(&inbound.sender) else {
            tracing::debug!(sender = %inbound.sender, "control message from a daemon not in the configuration");
            return;
        };
        match inbound.body {
            Body::Heartbeat(hb) => {
                self.heartbeats += 1;
                let Some(d) = self.daemons.get_mut(&key) else { return };
                if d.incarnation != inbound.incarnation {
                    if d.incarnation != 0 && key.role == Role::Demux {
                        self.membership.on_demux_restart(key.site);
                    }
                    d.incarnation = inbound.incarnation;
                }
                if d.running.is_none() && d.local {
                    if let Some(running) = fleet::process::adopt(&d.spec, hb.pid) {
                        tracing::info!(daemon = %d.spec.name(), pid = hb.pid, "adopted a running daemon");
                        d.running = Some(running);
                        d.restart.on_started(now);
                        self.detector.observe_process_started(key, now);
                        self.pids_dirty = true;
                    }
                }
                let facts = GatewayFacts {
                    session_established: hb.session_established.unwrap_or(false),
                    handshake_age_ms: hb.handshake_age_ms,
                };
                self.detector.observe_heartbeat(key, now, facts);
                if key.role == Role::Demux {
                    if self.membership.observe_applied(key.site, hb.membership_epoch) {
                        tracing::warn!(
                            demux = %inbound.sender, applied = hb.membership_epoch, epoch = self.membership.current().epoch,
                            "a demux has applied a newer membership epoch than this controller's: moving past it"
                        );
                    }
                    for report in &hb.pairs {
                        self.membership
                            .observe_pinned_flows(key.site, report.id, report.pinned_flows, now);
                        let (answered, lost) = d.canary_progress(report);
                        for _ in 0..lost.min(8) {
                            self.detector.observe_canary(report.id, now, false, 0);
                        }
                        if answered > 0 {
                            let rtt = report.canary_rtt_us.unwrap_or(0).min(u64::from(u32::MAX)) as u32;
                            self.detector.observe_canary(report.id, now, true, rtt);
                        }
                    }
                }
                d.last = Some(*hb);
            }
            Body::MembershipAck { epoch, term } if key.role == Role::Demux => {
                if Some(term) == self.acting_term {
                    self.membership.on_ack(key.site, epoch);
                }
            }
            other => tracing::debug!(sender = %inbound.sender, "unexpected control message {other:?}"),
        }
    }

    fn reap_children(&mut self) {
        let now = self.now_ms();
        for (key, d) in self.daemons.iter_mut() {
            if let Some(running) = d.running.as_mut() {
                if running.has_exited() {
                    tracing::warn!(daemon = %d.spec.name(), pid = running.pid(), "daemon exited");
                    d.running = None;
                    d.last_failure = Some(FailureReason::ProcessExited);
                    self.detector.observe_process_exit(*key, now);
                    if !d.retired {
                        let at = d.restart.on_exit(now);
                        tracing::info!(daemon = %d.spec.name(), in_ms = at.saturating_sub(now), "restart scheduled");
                    }
                    self.pids_dirty = true;
                }
            }
        }
    }

    fn handle_health_events(&mut self) {
        let now = self.now_ms();
        for event in self.detector.tick(now) {
            match event {
                HealthEvent::PairDown { pair, reason, .. } => {
                    tracing::warn!(pair, %reason, "pair down");
                    self.membership.set_health(pair, false);
                }
                HealthEvent::PairUp { pair } => {
                    tracing::info!(pair, "pair up");
                    self.membership.set_health(pair, true);
                }
                HealthEvent::DaemonDead { daemon, reason } => self.on_daemon_dead(daemon, reason, now),
                HealthEvent::DaemonAlive { daemon } => {
                    if let Some(d) = self.daemons.get(&daemon) {
                        tracing::info!(daemon = %d.spec.name(), "daemon alive");
                    }
                }
                HealthEvent::SiteUnreachable { site } => tracing::error!(
                    site = spec::site_name(&self.cfg, site),
                    "site unreachable: most of its daemons went silent at once; its pairs stay in \
                     service while the other site's canaries cross them, and its daemons are \
                     neither killed nor restarted until it is heard again"
                ),
                HealthEvent::MonitorPaused { gap_ms } => tracing::warn!(
                    gap_ms,
                    "this controller did not run for {gap_ms} ms (frozen, suspended or starved): \
                     that silence is not held against any daemon or pair"
                ),
                HealthEvent::SiteReachable { site } => {
                    tracing::warn!(site = spec::site_name(&self.cfg, site), "site heard again")
                }
            }
        }
    }

    /// A daemon stopped heartbeating. If its process is still there it is hung: kill it so it
    /// can be restarted. Daemons on other hosts get the configured restart hook. A daemon
    /// unheard because its whole site is (a partition) is left alone: killing or restarting
    /// what may be a working gateway would turn a monitoring fault into an outage.
    fn on_daemon_dead(&mut self, key: DaemonKey, reason: FailureReason, now: u64) {
        let Some(d) = self.daemons.get_mut(&key) else { return };
        if matches!(reason, FailureReason::SiteUnreachable { .. }) {
            tracing::warn!(daemon = %d.spec.name(), %reason, "daemon unheard; left alone while its site is unreachable");
            d.last_failure = Some(reason);
            return;
        }
        let id = match key.role {
            Role::Demux => DaemonId::demux(&d.spec.site),
            Role::Gateway(pair) => DaemonId::gateway(&d.spec.site, pair),
        };
        let hook = self.cfg.controller.restart_command(&id);
        tracing::warn!(daemon = %d.spec.name(), %reason, "daemon dead");
        d.last_failure = Some(reason);
        if !self.leading() {
            // The leader kills and restarts; a standby only keeps count.
            return;
        }
        let Some(d) = self.daemons.get_mut(&key) else { return };
        if let Some(mut running) = d.running.take() {
            tracing::warn!(daemon = %d.spec.name(), pid = running.pid(), "killing the hung process");
            running.kill_now();
            self.detector.observe_process_exit(key, now);
            if !d.retired {
                d.restart.on_exit(now);
            }
            self.pids_dirty = true;
        } else if !d.local {
            if let Some(hook) = hook {
                self.hooks.start(&d.spec.name(), &hook);
            }
        }
    }

    /// Starts daemons never started (after a short grace in which running daemons a previous
    /// controller left can still announce themselves and be adopted), and restarts those whose
    /// backoff has passed.
    fn restart_due(&mut self) {
        if !self.leading() {
            return;
        }
        let now = self.now_ms();
        let first_start_ok = now >= 3 * self.cfg.controller.heartbeat_ms;
        for (key, d) in self.daemons.iter_mut() {
            let never_started = d.restart.state() == RunState::Idle;
            if !d.local || d.retired || d.running.is_some() {
                continue;
            }
            if !(d.restart.due(now) || (never_started && first_start_ok)) {
                continue;
            }
            if let Err(e) = braid_core::keys::provision::ensure(&self.cfg, &self.secret, &d.spec.daemon_id()) {
                tracing::error!(daemon = %d.spec.name(), "cannot write its keys: {e}");
            }
            match fleet::process::start(&d.spec) {
                Ok(running) => {
                    d.restart.on_started(now);
                    tracing::info!(daemon = %d.spec.name(), pid = running.pid(), restarts = d.restart.restarts(), "daemon started");
                    d.running = Some(running);
                    self.detector.observe_process_started(*key, now);
                    self.pids_dirty = true;
                }
                Err(e) => {
                    tracing::error!(daemon = %d.spec.name(), "cannot start: {e}");
                    d.restart.on_exit(now);
                }
            }
        }
    }

    fn push_membership(&mut self) {
        if !self.leading() {
            return;
        }
        let term = self.acting_term.unwrap_or(0);
        let now = self.now_ms();
        for finished in self.membership.tick(now) {
            tracing::info!(pair = finished.pair, end = ?finished.end, "drain finished");
            if self.leaving.contains(&finished.pair) {
                self.retire_pair(finished.pair);
            }
        }
        if now < self.push_after_ms {
            return;
        }
        self.record_epoch();
        for (site, m) in self.membership.pending(now) {
            let site_name = spec::site_name(&self.cfg, site);
            let to = DaemonId::demux(site_name);
            let mut push = braid_core::control::Membership {
                term,
                epoch: m.epoch,
                active: m.active.clone(),
                serving: m.serving.clone(),
                probing: m.probing.clone(),
                gateways: Vec::new(),
            };
            push.gateways = pair_gateways(&self.cfg, site_name, &push.named_pairs());
            let mut result = self.server.send(&to, &Body::Membership(push.clone()));
            if matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::InvalidInput) {
                // Too many pairs for their addresses to fit one datagram: the demux looks
                // pairs it does not know up in its own cluster file instead.
                tracing::warn!(demux = %to, pairs = push.gateways.len(), "membership push too large with every gateway's address; sent without");
                push.gateways.clear();
                result = self.server.send(&to, &Body::Membership(push));
            }
            if let Err(e) = result {
                tracing::debug!(demux = %to, "membership push not sent yet: {e}");
            }
        }
    }

    /// Records the current membership epoch before it is pushed, so a restarted controller
    /// never pushes an older one.
    fn record_epoch(&mut self) {
        let epoch = self.membership.current().epoch;
        if epoch <= self.saved_epoch {
            return;
        }
        match fleet::save_epoch(&self.cfg.controller.state_dir, epoch) {
            Ok(()) => self.saved_epoch = epoch,
            Err(e) => tracing::warn!(epoch, "cannot record the membership epoch: {e}"),
        }
    }

    /// The control server talks to exactly the daemons not retired.
    fn sync_members(&mut self) {
        let members: Vec<DaemonId> = self
            .daemons
            .values()
            .filter(|d| !d.retired)
            .map(|d| d.spec.daemon_id())
            .collect();
        self.server.set_members(members);
    }

    /// Stops a pair's gateways for good and forgets the pair.
    fn retire_pair(&mut self, pair: PairId) {
        let _ = self.membership.remove(pair);
        self.detector.unwatch_pair(pair);
        self.leaving.retain(|p| *p != pair);
        for d in self
            .daemons
            .values_mut()
            .filter(|d| d.spec.key.role == Role::Gateway(pair))
        {
            d.retired = true;
            if let Some(running) = d.running.as_mut() {
                running.signal(libc::SIGTERM);
            }
        }
        self.sync_members();
        tracing::info!(pair, "pair retired; its gateways are stopping");
    }

    fn command(&mut self, command: Command) -> Result<String, String> {
        if !self.leading() && !matches!(command, Command::Reload) {
            let leader = self
                .leadership
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .leader(self.now_ms());
            return Err(match leader {
                Some(l) => format!(
                    "this controller (member {}) stands by: member {} leads (term {}); send the command there",
                    self.opts.member, l.member, l.term
                ),
                None => format!(
                    "this controller (member {}) stands by and no leader is known yet (etcd unreachable, or an \
                     election under way); try again",
                    self.opts.member
                ),
            });
        }
        let now = self.now_ms();
        let timeout = self.cfg.controller.drain_timeout_s * 1000;
        match command {
            Command::Reload => self.reload(),
            Command::Drain(pair) => self
                .membership
                .drain(pair, now, timeout)
                .map(|()| format!("pair {pair} draining (deadline {} s)", timeout / 1000))
                .map_err(|e| format!("pair {pair}: {e:?}")),
            Command::Remove(pair) => {
                if self.membership.admin_state(pair).is_none() {
                    return Err(format!("pair {pair} is not in the cluster"));
                }
                self.retire_pair(pair);
                Ok(format!("pair {pair} removed"))
            }
            Command::Activate(pair) => self
                .membership
                .reactivate(pair)
                .map(|()| format!("pair {pair} active"))
                .map_err(|e| format!("pair {pair}: {e:?}")),
        }
    }

    /// Re-reads the cluster file: new pairs join (new flows only, once healthy); pairs no longer
    /// listed are drained and then stopped. Other changes need a restart and are reported.
    fn reload(&mut self) -> Result<String, String> {
        let cfg = load_as_member(&self.opts).map_err(|e| {
            tracing::error!("reload refused: {e:#}");
            format!("reload refused: {e:#}")
        })?;
        if external_sites(&cfg) != external_sites(&self.cfg) {
            let message = format!(
                "reload refused: which site is external changed ({:?} to {:?}); restart the controller for that",
                external_sites(&self.cfg),
                external_sites(&cfg)
            );
            tracing::error!("{message}");
            return Err(message);
        }
        let now = self.now_ms();
        let old: Vec<PairId> = self.cfg.pairs.iter().map(|p| p.id).collect();
        let new: Vec<PairId> = cfg.pairs.iter().map(|p| p.id).collect();
        let added: Vec<PairId> = new.iter().copied().filter(|p| !old.contains(p)).collect();
        let removed: Vec<PairId> = old.iter().copied().filter(|p| !new.contains(p)).collect();
        self.cfg = cfg;
        for spec in spec::fleet(&self.cfg, &[], &self.opts.bin_dir, &self.opts.state_dir) {
            if let Role::Gateway(pair) = spec.key.role {
                if added.contains(&pair) {
                    let local = self.runs_locally(&spec.site);
                    self.enlist(Daemon::new(spec, local), now);
                }
            }
        }
        for &pair in &added {
            self.detector.watch_pair(pair, now);
            let _ = self.membership.add_pair(pair);
        }
        let timeout = self.cfg.controller.drain_timeout_s * 1000;
        for &pair in &removed {
            match self.membership.admin_state(pair) {
                Some(AdminState::Removed) | None => self.retire_pair(pair),
                _ => {
                    let _ = self.membership.drain(pair, now, timeout);
                    self.leaving.push(pair);
                }
            }
        }
        self.sync_members();
        let message = format!("reloaded: pairs added {added:?}, draining {removed:?}");
        tracing::info!("{message}");
        Ok(message)
    }

    fn save_pids(&mut self) {
        // In a controller set the leader's view is the record.
        if !self.pids_dirty || !self.leading() {
            return;
        }
        let pids = self
            .daemons
            .values()
            .filter_map(|d| Some((d.spec.name(), d.running.as_ref()?.pid())))
            .collect();
        if let Err(e) = fleet::save_pids(&self.opts.state_dir, &pids) {
            tracing::warn!("cannot record the fleet's pids: {e}");
        }
        self.pids_dirty = false;
    }

    /// Orderly shutdown: SIGTERM to every daemon this controller runs, SIGKILL after 3 s. A
    /// member of a controller set stops nothing: the fleet is the set's, and the next leader
    /// adopts it.
    fn shutdown(&mut self) {
        if self.leadership.lock().unwrap_or_else(|e| e.into_inner()).is_elected() {
            tracing::info!("stopping; the fleet keeps running for the controller set");
            return;
        }
        tracing::info!("stopping the fleet");
        for d in self.daemons.values() {
            if let Some(r) = &d.running {
                r.signal(libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline
            && self
                .daemons
                .values_mut()
                .any(|d| d.running.as_mut().is_some_and(|r| !r.has_exited()))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for d in self.daemons.values_mut() {
            if let Some(mut r) = d.running.take() {
                if !r.has_exited() {
                    r.kill_now();
                }
            }
        }
        let _ = fleet::save_pids(&self.opts.state_dir, &BTreeMap::new());
    }
}

/// The GENEVE address of `site`'s gateway of each of `pairs` that has one in `cfg`: what a
/// membership push tells a demux about pairs its own cluster file may lack.
fn pair_gateways(cfg: &ClusterConfig, site: &str, pairs: &BTreeSet<PairId>) -> Vec<PairGateway> {
    pairs
        .iter()
        .filter_map(|&pair| {
            let geneve = cfg.gateway(site, pair).ok()?.geneve?;
            Some(PairGateway { pair, geneve })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn example(name: &str) -> ClusterConfig {
        ClusterConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)).unwrap()
    }

    /// An IPsec CHILD SA lives for an hour by default: a pair must not go down at 180 s.
    #[test]
    fn the_state_dir_is_created_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("braid-state-dir-{}", std::process::id()));
        let dir = root.join("lab").join("state");
        create_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn pushes_give_each_named_pair_s_gateway_in_the_receiving_site() {
        let cfg = example("two-site.yaml");
        let pairs: BTreeSet<PairId> = [1, 3, 9].into();
        let b = pair_gateways(&cfg, "b", &pairs);
        let shown: Vec<(PairId, String)> = b.iter().map(|g| (g.pair, g.geneve.to_string())).collect();
        assert_eq!(
            shown,
            [
                (1, "198.18.20.11:6081".to_string()),
                (3, "198.18.20.13:6081".to_string())
            ],
            "pair 9 is not in the file, so it has no address to give"
        );
        assert_eq!(
            pair_gateways(&cfg, "a", &pairs)[0].geneve.to_string(),
            "198.18.10.11:6081"
        );
    }

    #[test]
    fn the_sa_age_a_pair_tolerates_follows_the_suite() {
        assert_eq!(max_sa_age_ms(&example("two-site.yaml")), 180_000);
        let ipsec = example("ipsec-two-site.yaml");
        let lifetime_s = ipsec.cluster.ipsec.as_ref().unwrap().child_lifetime_s;
        assert!(lifetime_s > 180);
        assert_eq!(max_sa_age_ms(&ipsec), lifetime_s * 1000);
    }
}
