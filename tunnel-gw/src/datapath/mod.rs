//! The gateway's data threads: GENEVE from the demux in, tunnel to the peer gateway out, and back.
//!
//! Design: one OS thread owns the tunnel suite, both sockets and four preallocated batches, so
//! the suite needs no lock and nothing is allocated per packet (each suite's unit tests count
//! the heap allocations of transport data and require none). The loop `poll(2)`s the LAN
//! and WAN sockets with a timeout no longer than the timer tick (100 ms), receives a batch
//! from each ready socket, processes it, flushes what it produced, and drives the suite's
//! timers on every tick. Each tick it also counts what the kernel dropped at either socket
//! because its receive buffer was full (`drop_lan_socket_full`, `drop_wan_socket_full`), the
//! loss a thread that falls behind would otherwise cause unseen.
//!
//! With [`GatewaySettings::seal_thread`] and a suite that can split (IPsec), the LAN → WAN
//! direction runs on a second thread ([`sealing`]): it owns the LAN inbox, a WAN outbox of its
//! own (a second handle on the same socket) and the suite's sealer, and reads the peer's
//! endpoint from a snapshot the first thread replaces when the peer roams. The first thread
//! keeps everything else: the WAN inbox, the LAN outbox, handshakes, timers. The two share no
//! lock; the sealer takes new keys once per round ([`crate::suite::Seal::sync`]).
//!
//! LAN → WAN: one walk for both shapes, in [`sealing`].
//!
//! WAN → LAN: the suite decrypts straight into the LAN send batch behind room for the GENEVE
//! header; the inner source must lie inside the peer site (the suite authenticates the peer,
//! not the addresses it claims); the packet leaves in GENEVE with this pair's VNI for the
//! demux. Handshake replies go back to the peer, cookie replies to whoever asked. The peer's
//! endpoint moves only when transport data from a new address authenticates and passes the
//! anti-replay window (roaming, [`Proof::Data`]): never on a handshake, which a restarted
//! gateway accepts again when it is replayed.
//!
//! Handshakes pass the [`HandshakeLimiter`] (per source, and a global cap for all but the peer)
//! before they reach the suite; transport data never does. The clock is read at most once per
//! received batch, and only when the batch holds a handshake. The limiter keeps a handshake
//! flood cheap enough that one thread serves handshakes and data: a flood costs a table
//! look-up per datagram, not a Diffie-Hellman or a cookie reply.
//!
//! Every packet that is not forwarded is counted under its reason in the thread's [`ThreadCounters`];
//! malformed input never panics and never stops the loop.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use braid_core::daemon::StopFlag;
use braid_core::service::Progress;
use braid_core::udp::{poll_readable, SocketBuffers};
use braid_core::wire::geneve::{write_header, ETHERTYPE_IPV4, ETHERTYPE_IPV6, GENEVE_HEADER_LEN};

use crate::counters::{Counter, GatewayCounters, ThreadCounters};
use crate::handshake_limit::HandshakeLimiter;
use crate::settings::GatewaySettings;
use crate::suite::{Action, Proof, SuiteError, TunnelSuite};

mod policy;
mod ports;
pub mod sealing;
mod session;

#[doc(hidden)]
pub use policy::{LanDrop, Policy};
pub use session::SharedSession;

use ports::{Bound, Inbox, Outbox, Side, SocketDrops};
use sealing::{seal_batch, Sealing};

/// How often the suite's timers run; also the longest `poll(2)` wait.
pub const TIMER_TICK: Duration = Duration::from_millis(100);

/// The gateway's data path, bound and ready to [`run`](DataPath::run) on its own thread.
#[derive(Debug)]
pub struct DataPath<S: TunnelSuite> {
    suite: S,
    /// GENEVE from the demux, while this thread seals (`None` once a sealing thread owns it).
    lan: Option<Inbox>,
    to_lan: Outbox,
    wan: Inbox,
    to_wan: Outbox,
    /// The sealing thread's half, until [`DataPath::run`] starts it.
    sealing: Option<Sealing<S::Sealer>>,
    policy: Arc<Policy>,
    peer_endpoint: SocketAddr,
    /// Where the sealing thread reads the peer's endpoint from (split data paths only).
    shared_peer: Option<Arc<ArcSwap<SocketAddr>>>,
    limiter: HandshakeLimiter,
    /// This thread's counters.
    counters: Arc<ThreadCounters>,
    /// Every data thread's counters, summed when read.
    totals: GatewayCounters,
    session: Arc<SharedSession>,
    progress: Progress,
    lan_addr: SocketAddr,
    wan_addr: SocketAddr,
    buffers: (SocketBuffers, SocketBuffers),
    socket_drops: SocketDrops,
}

impl<S: TunnelSuite> DataPath<S> {
    /// Binds the LAN and WAN sockets and allocates every buffer the loop (or loops, with
    /// [`GatewaySettings::seal_thread`]) will use. Fails if a socket cannot be bound, or if
    /// the settings ask for a sealing thread and the suite cannot split.
    pub fn bind(settings: GatewaySettings, mut suite: S) -> io::Result<Self> {
        let sizes = settings.buffer_sizes(suite.overhead(), suite.largest_control_datagram());
        let lan = Bound::bind(settings.lan_bind, &settings)?;
        let wan = Bound::bind(settings.wan_bind, &settings)?;
        let lan_inbox = lan.inbox(Side::Lan, &settings, sizes.lan_recv)?;
        let counters = Arc::<ThreadCounters>::default();
        let policy = Arc::new(Policy::new(settings.clone()));
        let (lan_inbox, sealing, shared_peer) = if settings.seal_thread {
            let sealer = suite.split_sealer().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "this tunnel suite cannot seal on a thread of its own",
                )
            })?;
            let peer = Arc::new(ArcSwap::from_pointee(settings.peer_endpoint));
            let sealing = Sealing {
                lan: lan_inbox,
                to_wan: wan.outbox(Side::Wan, &settings, sizes.wan_send)?,
                sealer,
                policy: Arc::clone(&policy),
                peer: Arc::clone(&peer),
                counters: Arc::default(),
                progress: Progress::new(),
            };
            (None, Some(sealing), Some(peer))
        } else {
            (Some(lan_inbox), None, None)
        };
        let mut threads = vec![Arc::clone(&counters)];
        threads.extend(sealing.as_ref().map(|s| Arc::clone(&s.counters)));
        Ok(DataPath {
            suite,
            lan: lan_inbox,
            to_lan: lan.outbox(Side::Lan, &settings, sizes.lan_send)?,
            wan: wan.inbox(Side::Wan, &settings, sizes.wan_recv)?,
            to_wan: wan.outbox(Side::Wan, &settings, sizes.wan_send)?,
            sealing,
            policy,
            peer_endpoint: settings.peer_endpoint,
            shared_peer,
            limiter: HandshakeLimiter::new(Instant::now()),
            counters,
            totals: GatewayCounters::new(threads),
            session: Arc::default(),
            progress: Progress::new(),
            lan_addr: lan.socket.local_addr()?,
            wan_addr: wan.socket.local_addr()?,
            buffers: (lan.buffers, wan.buffers),
            socket_drops: SocketDrops::new(&lan.socket, &wan.socket)?,
        })
    }

    /// The address the LAN (GENEVE) socket is bound to.
    pub fn lan_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.lan_addr)
    }

    /// The address the WAN socket is bound to.
    pub fn wan_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.wan_addr)
    }

    /// Kernel buffer sizes granted to the LAN and WAN sockets.
    pub fn socket_buffers(&self) -> (SocketBuffers, SocketBuffers) {
        self.buffers
    }

    /// The counters of every data thread, summed when read.
    pub fn counters(&self) -> GatewayCounters {
        self.totals.clone()
    }

    /// The session state, published by the data thread every tick.
    pub fn session(&self) -> Arc<SharedSession> {
        Arc::clone(&self.session)
    }

    /// The data threads' progress markers (the daemon's watchdog reads them): the main data
    /// thread's, marked every tick, then the sealing thread's, marked every round, if there is
    /// one.
    pub fn progress(&self) -> Vec<Progress> {
        let sealing = self.sealing.as_ref().map(|s| s.progress.clone());
        std::iter::once(self.progress.clone()).chain(sealing).collect()
    }

    /// How many threads [`DataPath::run`] uses: 2 with a sealing thread, else 1.
    pub fn threads(&self) -> usize {
        1 + usize::from(self.sealing.is_some())
    }

    /// Runs until `stop` is raised (and raises it if a data thread fails, so the other ends
    /// too). Starts the session handshake at once. With a sealing thread, runs it beside this
    /// one and returns once both have ended. Returns an error only if waiting on a socket
    /// fails, which no input can cause.
    pub fn run(mut self, stop: &StopFlag) -> io::Result<()> {
        let Some(sealing) = self.sealing.take() else {
            return self.run_loop(stop);
        };
        std::thread::scope(|scope| {
            let sealer = std::thread::Builder::new()
                .name(format!("braid-gw-seal-{}", self.policy.vni()))
                .spawn_scoped(scope, || {
                    let result = sealing.run(stop);
                    stop.stop();
                    result
                })?;
            let result = self.run_loop(stop);
            stop.stop();
            let sealed = sealer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the sealing thread panicked")));
            result.and(sealed)
        })
    }

    fn run_loop(&mut self, stop: &StopFlag) -> io::Result<()> {
        self.run_timer_action(Timer::Start);
        self.to_wan.flush(&self.counters);
        let mut next_tick = Instant::now() + TIMER_TICK;
        while !stop.is_stopped() {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let (lan_ready, wan_ready) = match &self.lan {
                Some(lan) => {
                    let [lan_ready, wan_ready] = poll_readable([&lan.socket, &self.wan.socket], wait)?;
                    (lan_ready, wan_ready)
                }
                None => (false, poll_readable([&self.wan.socket], wait)?[0]),
            };
            if wan_ready {
                self.wan_to_lan();
            }
            if let (true, Some(lan)) = (lan_ready, &mut self.lan) {
                seal_batch(
                    lan,
                    &mut self.to_wan,
                    &self.policy,
                    &mut self.suite,
                    self.peer_endpoint,
                    &self.counters,
                );
            }
            if Instant::now() >= next_tick {
                self.run_timer_action(Timer::Tick);
                self.socket_drops.count(&self.counters);
                self.session.publish(self.suite.session());
                self.progress.mark();
                next_tick = Instant::now() + TIMER_TICK;
            }
            self.to_lan.flush(&self.counters);
            self.to_wan.flush(&self.counters);
        }
        Ok(())
    }

    fn run_timer_action(&mut self, timer: Timer) {
        self.to_wan.make_room(&self.counters);
        let Some(out) = self.to_wan.batch.next_buf() else {
            return;
        };
        let action = match timer {
            Timer::Start => self.suite.start(out),
            Timer::Tick => self.suite.timers(out),
        };
        match action {
            Action::SendToPeer { len } => {
                self.to_wan.batch.commit(len, self.peer_endpoint);
                self.drain_queued();
            }
            Action::Done => {}
            Action::Drop(error) => self.counters.suite_drop(error),
            Action::ReplyToSender { .. } | Action::Deliver { .. } => self.counters.suite_drop(SuiteError::Protocol),
        }
    }

    /// Processes one batch from the peer gateway.
    fn wan_to_lan(&mut self) {
        let count = self.wan.receive(&self.counters);
        let mut batch_time = None;
        for i in 0..count {
            if self.wan.batch.truncated(i) {
                self.counters.inc(Counter::DropWanTruncated);
                continue;
            }
            let (datagram, source) = self.wan.batch.get(i);
            if self.suite.is_handshake(datagram) {
                let now = *batch_time.get_or_insert_with(Instant::now);
                let from_peer = source.ip() == self.peer_endpoint.ip();
                if let Err(refusal) = self.limiter.admit(source.ip(), from_peer, now) {
                    self.counters.inc(refusal.into());
                    continue;
                }
            }
            self.to_lan.make_room(&self.counters);
            let (datagram, source) = self.wan.batch.get(i);
            let Some(out) = self.to_lan.batch.next_buf() else {
                continue;
            };
            let result = self.suite.decapsulate(source, datagram, &mut out[GENEVE_HEADER_LEN..]);
            match result.proof {
                Proof::None => self.counters.inc(Counter::WanUnauthenticated),
                Proof::Control => {}
                Proof::Data if source != self.peer_endpoint => {
                    tracing::info!(from = %self.peer_endpoint, to = %source, "peer WAN endpoint moved");
                    self.peer_endpoint = source;
                    if let Some(shared) = &self.shared_peer {
                        shared.store(Arc::new(source));
                    }
                    self.counters.inc(Counter::WanEndpointRoamed);
                }
                Proof::Data => {}
            }
            match result.action {
                Action::Deliver {
                    len,
                    source: inner_source,
                } => {
                    if !self.policy.settings().is_peer_source(inner_source) {
                        self.counters.inc(Counter::DropInnerSrcNotPeerSite);
                        continue;
                    }
                    let protocol = match inner_source {
                        IpAddr::V4(_) => ETHERTYPE_IPV4,
                        IpAddr::V6(_) => ETHERTYPE_IPV6,
                    };
                    write_header(out, self.policy.vni(), protocol);
                    self.to_lan
                        .batch
                        .commit(GENEVE_HEADER_LEN + len, self.policy.settings().demux);
                }
                Action::SendToPeer { len } => {
                    let reply = &out[GENEVE_HEADER_LEN..GENEVE_HEADER_LEN + len];
                    self.to_wan.make_room(&self.counters);
                    self.to_wan.batch.push(reply, self.peer_endpoint);
                    self.drain_queued();
                }
                Action::ReplyToSender { len } => {
                    let reply = &out[GENEVE_HEADER_LEN..GENEVE_HEADER_LEN + len];
                    self.to_wan.make_room(&self.counters);
                    self.to_wan.batch.push(reply, source);
                }
                Action::Done => {}
                Action::Drop(error) => self.counters.suite_drop(error),
            }
        }
    }

    /// Sends the packets the suite queued while the session was coming up.
    fn drain_queued(&mut self) {
        loop {
            self.to_wan.make_room(&self.counters);
            let Some(out) = self.to_wan.batch.next_buf() else {
                return;
            };
            match self.suite.drain(out) {
                Action::SendToPeer { len } => self.to_wan.batch.commit(len, self.peer_endpoint),
                Action::Done => return,
                Action::Drop(error) => {
                    self.counters.suite_drop(error);
                    return;
                }
                Action::ReplyToSender { .. } | Action::Deliver { .. } => {
                    self.counters.suite_drop(SuiteError::Protocol);
                    return;
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Timer {
    Start,
    Tick,
}
