//! The gateway's data thread: GENEVE from the demux in, tunnel to the peer gateway out, and back.
//!
//! Design: one OS thread owns the tunnel suite, both sockets and four preallocated batches, so
//! the suite needs no lock and nothing is allocated per packet. The loop `poll(2)`s the LAN
//! and WAN sockets with a timeout no longer than the timer tick (100 ms), receives a batch
//! from each ready socket, processes it, flushes what it produced, and drives the suite's
//! timers on every tick.
//!
//! LAN → WAN: accept GENEVE only from the configured demux, parse it as untrusted input,
//! require this pair's VNI and an inner source inside the local site, then encrypt straight
//! into the WAN send batch for the peer's current endpoint.
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
//! Every packet that is not forwarded is counted under its reason in [`GatewayCounters`];
//! malformed input never panics and never stops the loop.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_core::daemon::StopFlag;
use braid_core::service::Progress;
use braid_core::udp::{bind_data_socket, poll_readable, RecvBatch, SendBatch, SendReport, SocketBuffers};
use braid_core::wire::geneve::{
    self, write_header, GeneveData, GeneveRefusal, InnerProtocol, ETHERTYPE_IPV4, ETHERTYPE_IPV6, GENEVE_HEADER_LEN,
};
use braid_core::wire::ipv4::Ipv4Packet;
use braid_core::wire::ipv6::Ipv6Packet;
use braid_core::wire::WireError;

use crate::counters::{Counter, GatewayCounters};
use crate::handshake_limit::HandshakeLimiter;
use crate::settings::GatewaySettings;
use crate::suite::{Action, Proof, SessionState, SuiteError, TunnelSuite};

/// How often the suite's timers run; also the longest `poll(2)` wait.
pub const TIMER_TICK: Duration = Duration::from_millis(100);

/// The session state as last published by the data thread, readable from any thread.
///
/// One atomic per figure, so publishing takes no lock and allocates nothing; a reader may see
/// figures from two consecutive ticks, which status can live with. Absent values are stored as
/// [`ABSENT`].
#[derive(Debug)]
pub struct SharedSession {
    established: AtomicBool,
    /// Milliseconds since the last handshake (the SA age).
    handshake_age_ms: AtomicU64,
    ike_sa_age_ms: AtomicU64,
    rekeys: AtomicU64,
    ike_rekeys: AtomicU64,
}

/// What a [`SharedSession`] figure holds when it has no value.
const ABSENT: u64 = u64::MAX;

fn store(cell: &AtomicU64, value: Option<u64>) {
    cell.store(value.unwrap_or(ABSENT), Ordering::Relaxed);
}

fn load(cell: &AtomicU64) -> Option<u64> {
    Some(cell.load(Ordering::Relaxed)).filter(|v| *v != ABSENT)
}

fn millis(age: Duration) -> u64 {
    u64::try_from(age.as_millis()).unwrap_or(ABSENT - 1)
}

/// Before the first tick: no session, nothing to report.
impl Default for SharedSession {
    fn default() -> Self {
        SharedSession {
            established: AtomicBool::new(false),
            handshake_age_ms: AtomicU64::new(ABSENT),
            ike_sa_age_ms: AtomicU64::new(ABSENT),
            rekeys: AtomicU64::new(0),
            ike_rekeys: AtomicU64::new(ABSENT),
        }
    }
}

impl SharedSession {
    fn publish(&self, state: SessionState) {
        self.established.store(state.established, Ordering::Relaxed);
        store(&self.handshake_age_ms, state.last_handshake_age.map(millis));
        store(&self.ike_sa_age_ms, state.ike_sa_age.map(millis));
        self.rekeys.store(state.rekeys, Ordering::Relaxed);
        store(&self.ike_rekeys, state.ike_rekeys);
    }

    /// The last published state (at most one timer tick old), ages to the millisecond.
    pub fn get(&self) -> SessionState {
        SessionState {
            established: self.established.load(Ordering::Relaxed),
            last_handshake_age: load(&self.handshake_age_ms).map(Duration::from_millis),
            ike_sa_age: load(&self.ike_sa_age_ms).map(Duration::from_millis),
            rekeys: self.rekeys.load(Ordering::Relaxed),
            ike_rekeys: load(&self.ike_rekeys),
        }
    }
}

/// One socket with its receive and send batches.
#[derive(Debug)]
struct Port {
    socket: UdpSocket,
    rx: RecvBatch,
    tx: SendBatch,
    buffers: SocketBuffers,
}

impl Port {
    fn bind(addr: SocketAddr, settings: &GatewaySettings, recv: usize, send: usize) -> io::Result<Port> {
        let (socket, buffers) = bind_data_socket(addr, settings.socket_buffer_bytes)?;
        Ok(Port {
            socket,
            rx: RecvBatch::new(settings.batch_size, recv),
            tx: SendBatch::new(settings.batch_size, send),
            buffers,
        })
    }

    /// Sends the pending batch, counting what went out and what the kernel refused.
    fn flush(&mut self, counters: &GatewayCounters, side: Side) {
        if self.tx.is_empty() {
            return;
        }
        let SendReport {
            sent,
            sent_bytes,
            dropped,
        } = self.tx.flush(&self.socket);
        let (packets, bytes, failed) = match side {
            Side::Lan => (Counter::LanTxPackets, Counter::LanTxBytes, Counter::DropLanTxFailed),
            Side::Wan => (Counter::WanTxPackets, Counter::WanTxBytes, Counter::DropWanTxFailed),
        };
        counters.add(packets, sent as u64);
        counters.add(bytes, sent_bytes as u64);
        counters.add(failed, dropped as u64);
    }

    /// Flushes first if the send batch is full, so a slot is always free afterwards.
    fn make_room(&mut self, counters: &GatewayCounters, side: Side) {
        if self.tx.is_full() {
            self.flush(counters, side);
        }
    }

    /// Receives one batch; errors are counted, and the loop goes on.
    fn receive(&mut self, counters: &GatewayCounters, side: Side) -> usize {
        let (packets, bytes, errors) = match side {
            Side::Lan => (Counter::LanRxPackets, Counter::LanRxBytes, Counter::LanSocketErrors),
            Side::Wan => (Counter::WanRxPackets, Counter::WanRxBytes, Counter::WanSocketErrors),
        };
        match self.rx.recv(&self.socket) {
            Ok(count) => {
                let total: usize = (0..count).map(|i| self.rx.get(i).0.len()).sum();
                counters.add(packets, count as u64);
                counters.add(bytes, total as u64);
                count
            }
            Err(err) => {
                counters.inc(errors);
                tracing::debug!(?side, error = %err, "receive failed");
                0
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Side {
    Lan,
    Wan,
}

/// What the data thread checks packets against. Public (hidden) only so the fuzz targets can
/// feed [`Policy::accept_from_lan`] without sockets.
#[doc(hidden)]
#[derive(Debug)]
pub struct Policy {
    settings: GatewaySettings,
    vni: u32,
}

/// The gateway's data path, bound and ready to [`run`](DataPath::run) on its own thread.
#[derive(Debug)]
pub struct DataPath<S: TunnelSuite> {
    suite: S,
    lan: Port,
    wan: Port,
    policy: Policy,
    peer_endpoint: SocketAddr,
    limiter: HandshakeLimiter,
    counters: Arc<GatewayCounters>,
    session: Arc<SharedSession>,
    progress: Progress,
}

impl<S: TunnelSuite> DataPath<S> {
    /// Binds the LAN and WAN sockets and allocates every buffer the loop will use.
    pub fn bind(settings: GatewaySettings, suite: S) -> io::Result<Self> {
        let sizes = settings.buffer_sizes(suite.overhead());
        let lan = Port::bind(settings.lan_bind, &settings, sizes.lan_recv, sizes.lan_send)?;
        let wan = Port::bind(settings.wan_bind, &settings, sizes.wan_recv, sizes.wan_send)?;
        Ok(DataPath {
            suite,
            lan,
            wan,
            peer_endpoint: settings.peer_endpoint,
            limiter: HandshakeLimiter::new(Instant::now()),
            policy: Policy::new(settings),
            counters: Arc::default(),
            session: Arc::default(),
            progress: Progress::new(),
        })
    }

    /// The address the LAN (GENEVE) socket is bound to.
    pub fn lan_addr(&self) -> io::Result<SocketAddr> {
        self.lan.socket.local_addr()
    }

    /// The address the WAN socket is bound to.
    pub fn wan_addr(&self) -> io::Result<SocketAddr> {
        self.wan.socket.local_addr()
    }

    /// Kernel buffer sizes granted to the LAN and WAN sockets.
    pub fn socket_buffers(&self) -> (SocketBuffers, SocketBuffers) {
        (self.lan.buffers, self.wan.buffers)
    }

    /// The counters, shared with the data thread.
    pub fn counters(&self) -> Arc<GatewayCounters> {
        Arc::clone(&self.counters)
    }

    /// The session state, published by the data thread every tick.
    pub fn session(&self) -> Arc<SharedSession> {
        Arc::clone(&self.session)
    }

    /// The data thread's progress marker, marked every tick (the daemon's watchdog reads it).
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Runs until `stop` is raised. Starts the session handshake at once. Returns an error only
    /// if waiting on the sockets fails, which no input can cause.
    pub fn run(mut self, stop: &StopFlag) -> io::Result<()> {
        self.run_timer_action(Timer::Start);
        self.wan.flush(&self.counters, Side::Wan);
        let mut next_tick = Instant::now() + TIMER_TICK;
        while !stop.is_stopped() {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let [lan_ready, wan_ready] = poll_readable([&self.lan.socket, &self.wan.socket], wait)?;
            if wan_ready {
                self.wan_to_lan();
            }
            if lan_ready {
                self.lan_to_wan();
            }
            if Instant::now() >= next_tick {
                self.run_timer_action(Timer::Tick);
                self.session.publish(self.suite.session());
                self.progress.mark();
                next_tick = Instant::now() + TIMER_TICK;
            }
            self.lan.flush(&self.counters, Side::Lan);
            self.wan.flush(&self.counters, Side::Wan);
        }
        Ok(())
    }

    fn run_timer_action(&mut self, timer: Timer) {
        self.wan.make_room(&self.counters, Side::Wan);
        let Some(out) = self.wan.tx.next_buf() else {
            return;
        };
        let action = match timer {
            Timer::Start => self.suite.start(out),
            Timer::Tick => self.suite.timers(out),
        };
        match action {
            Action::SendToPeer { len } => {
                self.wan.tx.commit(len, self.peer_endpoint);
                self.drain_queued();
            }
            Action::Done => {}
            Action::Drop(error) => self.counters.suite_drop(error),
            Action::ReplyToSender { .. } | Action::Deliver { .. } => self.counters.suite_drop(SuiteError::Protocol),
        }
    }

    /// Processes one batch from the demux.
    fn lan_to_wan(&mut self) {
        let count = self.lan.receive(&self.counters, Side::Lan);
        for i in 0..count {
            if self.lan.rx.truncated(i) {
                self.counters.inc(Counter::DropLanTruncated);
                continue;
            }
            let (datagram, source) = self.lan.rx.get(i);
            let inner = match self.policy.accept_from_lan(datagram, source) {
                Ok(inner) => inner,
                Err(drop) => {
                    drop.count(&self.counters);
                    continue;
                }
            };
            self.wan.make_room(&self.counters, Side::Wan);
            let Some(out) = self.wan.tx.next_buf() else {
                continue;
            };
            match self.suite.encapsulate(inner, out) {
                Action::SendToPeer { len } => self.wan.tx.commit(len, self.peer_endpoint),
                Action::Done => self.counters.inc(Counter::LanQueuedForSession),
                Action::Drop(error) => self.counters.suite_drop(error),
                Action::ReplyToSender { .. } | Action::Deliver { .. } => self.counters.suite_drop(SuiteError::Protocol),
            }
        }
    }

    /// Processes one batch from the peer gateway.
    fn wan_to_lan(&mut self) {
        let count = self.wan.receive(&self.counters, Side::Wan);
        let mut batch_time = None;
        for i in 0..count {
            if self.wan.rx.truncated(i) {
                self.counters.inc(Counter::DropWanTruncated);
                continue;
            }
            let (datagram, source) = self.wan.rx.get(i);
            if self.suite.is_handshake(datagram) {
                let now = *batch_time.get_or_insert_with(Instant::now);
                let from_peer = source.ip() == self.peer_endpoint.ip();
                if let Err(refusal) = self.limiter.admit(source.ip(), from_peer, now) {
                    self.counters.inc(refusal.into());
                    continue;
                }
            }
            self.lan.make_room(&self.counters, Side::Lan);
            let (datagram, source) = self.wan.rx.get(i);
            let Some(out) = self.lan.tx.next_buf() else {
                continue;
            };
            let result = self.suite.decapsulate(source, datagram, &mut out[GENEVE_HEADER_LEN..]);
            match result.proof {
                Proof::None => self.counters.inc(Counter::WanUnauthenticated),
                Proof::Control => {}
                Proof::Data if source != self.peer_endpoint => {
                    tracing::info!(from = %self.peer_endpoint, to = %source, "peer WAN endpoint moved");
                    self.peer_endpoint = source;
                    self.counters.inc(Counter::WanEndpointRoamed);
                }
                Proof::Data => {}
            }
            match result.action {
                Action::Deliver {
                    len,
                    source: inner_source,
                } => {
                    if !self.policy.settings.is_peer_source(inner_source) {
                        self.counters.inc(Counter::DropInnerSrcNotPeerSite);
                        continue;
                    }
                    let protocol = match inner_source {
                        IpAddr::V4(_) => ETHERTYPE_IPV4,
                        IpAddr::V6(_) => ETHERTYPE_IPV6,
                    };
                    write_header(out, self.policy.vni, protocol);
                    self.lan.tx.commit(GENEVE_HEADER_LEN + len, self.policy.settings.demux);
                }
                Action::SendToPeer { len } => {
                    let reply = &out[GENEVE_HEADER_LEN..GENEVE_HEADER_LEN + len];
                    self.wan.make_room(&self.counters, Side::Wan);
                    self.wan.tx.push(reply, self.peer_endpoint);
                    self.drain_queued();
                }
                Action::ReplyToSender { len } => {
                    let reply = &out[GENEVE_HEADER_LEN..GENEVE_HEADER_LEN + len];
                    self.wan.make_room(&self.counters, Side::Wan);
                    self.wan.tx.push(reply, source);
                }
                Action::Done => {}
                Action::Drop(error) => self.counters.suite_drop(error),
            }
        }
    }

    /// Sends the packets the suite queued while the session was coming up.
    fn drain_queued(&mut self) {
        loop {
            self.wan.make_room(&self.counters, Side::Wan);
            let Some(out) = self.wan.tx.next_buf() else {
                return;
            };
            match self.suite.drain(out) {
                Action::SendToPeer { len } => self.wan.tx.commit(len, self.peer_endpoint),
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

/// Why a LAN datagram is not forwarded.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum LanDrop {
    Counter(Counter),
    Wire(WireError),
}

impl LanDrop {
    fn count(self, counters: &GatewayCounters) {
        match self {
            LanDrop::Counter(counter) => counters.inc(counter),
            LanDrop::Wire(error) => counters.wire_drop(error),
        }
    }
}

impl From<WireError> for LanDrop {
    fn from(error: WireError) -> Self {
        LanDrop::Wire(error)
    }
}

impl Policy {
    /// The policy of the gateway `settings` describe: its pair id is the GENEVE VNI.
    pub fn new(settings: GatewaySettings) -> Self {
        Policy {
            vni: u32::from(settings.pair_id),
            settings,
        }
    }

    /// The inner packet of a GENEVE datagram from the LAN, if it may enter the tunnel.
    pub fn accept_from_lan<'a>(&self, datagram: &'a [u8], source: SocketAddr) -> Result<&'a [u8], LanDrop> {
        if source != self.settings.demux {
            return Err(LanDrop::Counter(Counter::DropLanUnknownSource));
        }
        let GeneveData { header_len, protocol } =
            geneve::accept_data(datagram, self.vni).map_err(|refusal| match refusal {
                GeneveRefusal::Wire(e) => LanDrop::Wire(e),
                GeneveRefusal::Oam => LanDrop::Counter(Counter::DropLanOam),
                GeneveRefusal::WrongVni => LanDrop::Counter(Counter::DropLanWrongVni),
            })?;
        let inner = &datagram[header_len..];
        if inner.len() > self.settings.mtu {
            return Err(LanDrop::Counter(Counter::DropLanInnerTooBig));
        }
        let inner_source = match protocol {
            InnerProtocol::Ipv4 => IpAddr::V4(Ipv4Packet::new_checked(inner)?.src_addr()),
            InnerProtocol::Ipv6 => IpAddr::V6(Ipv6Packet::new_checked(inner)?.src_addr()),
        };
        if !self.settings.is_local_source(inner_source) {
            return Err(LanDrop::Counter(Counter::DropInnerSrcNotLocalSite));
        }
        Ok(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_session_returns_what_was_published() {
        let shared = SharedSession::default();
        assert_eq!(shared.get(), SessionState::default(), "nothing published yet");
        let states = [
            SessionState::default(),
            SessionState {
                established: true,
                last_handshake_age: Some(Duration::from_millis(42_007)),
                ike_sa_age: Some(Duration::from_secs(3_600)),
                rekeys: 5,
                ike_rekeys: Some(0),
            },
            SessionState {
                established: true,
                last_handshake_age: Some(Duration::ZERO),
                ike_sa_age: None,
                rekeys: u64::MAX - 1,
                ike_rekeys: None,
            },
        ];
        for state in states {
            shared.publish(state);
            assert_eq!(shared.get(), state);
        }
    }

    #[test]
    fn ages_are_kept_to_the_millisecond() {
        let shared = SharedSession::default();
        shared.publish(SessionState {
            last_handshake_age: Some(Duration::from_micros(1_999)),
            ..SessionState::default()
        });
        assert_eq!(shared.get().last_handshake_age, Some(Duration::from_millis(1)));
    }
}
