//! The server: answers tests from any number of clients, one thread per connection.
//!
//! One TCP listener and one UDP socket share the port. A TCP connection announces itself with
//! its preamble (see [`control`](crate::control)): a control connection runs one test in its own
//! thread; a data connection is handed, by test id, to the control thread that waits for it.
//! The UDP socket belongs to the [`UdpReceiver`] thread, which also echoes probes. Every refusal —
//! a foreign protocol, a bad spec, a data connection for no test, a stray datagram — increments
//! a [`ServerCounters`] field and is logged to stderr; it never stops the server.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clock::{boot_id, clocks_shared};
use crate::control::{
    read_preamble, server_control, ControlReader, ControlWriter, Count, DataHeader, Message, Preamble, ProtocolError,
    Sample, VERSION,
};
use crate::intervals::run_ticks;
use crate::spec::{Side, TestSpec};
use crate::tcp::{TcpSession, STALL_GRACE};
use crate::udp::{new_progress, FlowProgress, UdpReceiver};

/// How long a new connection may take to say what it is, and a client to open its streams.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server refused or dropped something.
#[derive(Debug, Default, Serialize)]
pub struct ServerCounters {
    pub tests_completed: AtomicU64,
    pub tests_failed: AtomicU64,
    /// Connections that did not open with a braid-bench preamble.
    pub foreign_connections: AtomicU64,
    /// Control connections whose hello was malformed, of another version, or out of range.
    pub hellos_rejected: AtomicU64,
    /// Data connections naming no waiting test, or a stream out of range or already open.
    pub data_connections_rejected: AtomicU64,
    pub udp_malformed: AtomicU64,
    pub udp_unknown_test: AtomicU64,
    pub udp_unknown_flow: AtomicU64,
    pub udp_receive_errors: AtomicU64,
    pub udp_send_errors: AtomicU64,
    pub probes_echoed: AtomicU64,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl ServerCounters {
    /// The counters as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

type DataStream = (u32, TcpStream);
type Waiting = Arc<Mutex<HashMap<u64, Sender<DataStream>>>>;

/// Everything a connection thread needs.
#[derive(Debug, Clone)]
struct Shared {
    counters: Arc<ServerCounters>,
    waiting: Waiting,
    udp: Arc<UdpReceiver>,
    boot_id: Arc<str>,
}

/// A bound server, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    shared: Shared,
}

/// A server serving on a background thread.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    counters: Arc<ServerCounters>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Server {
    /// Binds TCP and UDP on `addr`; port 0 picks a port free for both.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let (listener, udp) = bind_pair(addr)?;
        let counters = Arc::new(ServerCounters::default());
        let udp = UdpReceiver::start(udp, Arc::clone(&counters))?;
        Ok(Server {
            listener,
            shared: Shared {
                counters,
                waiting: Arc::default(),
                udp: Arc::new(udp),
                boot_id: boot_id().into(),
            },
        })
    }

    /// The address both sockets listen on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The refusal and drop counters.
    pub fn counters(&self) -> Arc<ServerCounters> {
        Arc::clone(&self.shared.counters)
    }

    /// Serves until the process ends.
    pub fn serve(self) -> io::Result<()> {
        self.serve_until(&AtomicBool::new(false))
    }

    fn serve_until(self, stop: &AtomicBool) -> io::Result<()> {
        for connection in self.listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(stream) = connection else { continue };
            let shared = self.shared.clone();
            let spawned = thread::Builder::new()
                .name("bench-conn".into())
                .spawn(move || handle_connection(stream, &shared));
            if let Err(e) = spawned {
                eprintln!("braid-bench server: cannot start a connection thread: {e}");
            }
        }
        Ok(())
    }

    /// Serves on a background thread.
    pub fn spawn(self) -> io::Result<ServerHandle> {
        let addr = self.local_addr()?;
        let counters = self.counters();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new().name("bench-server".into()).spawn(move || {
            let udp = Arc::clone(&self.shared.udp);
            let _ = self.serve_until(&flag);
            if let Ok(udp) = Arc::try_unwrap(udp) {
                udp.stop();
            }
        })?;
        Ok(ServerHandle {
            addr,
            counters,
            stop,
            thread,
        })
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The refusal and drop counters.
    pub fn counters(&self) -> &ServerCounters {
        &self.counters
    }

    /// Stops accepting connections (tests already running finish on their own threads).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(wake) = TcpStream::connect(self.addr) {
            let _ = wake.shutdown(Shutdown::Both);
        }
        let _ = self.thread.join();
    }
}

/// A TCP listener and a UDP socket on the same port.
fn bind_pair(addr: SocketAddr) -> io::Result<(TcpListener, UdpSocket)> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let listener = TcpListener::bind(addr)?;
        match UdpSocket::bind(listener.local_addr()?) {
            Ok(udp) => return Ok((listener, udp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no port free for both TCP and UDP")))
}

fn handle_connection(mut stream: TcpStream, shared: &Shared) {
    let peer = stream.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
    let timeouts = stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)));
    if timeouts.is_err() {
        return;
    }
    match read_preamble(&mut stream) {
        Ok(Preamble::Control) => run_control(stream, &peer, shared),
        Ok(Preamble::Data) => hand_over_data(stream, &peer, shared),
        Err(e) => {
            bump(&shared.counters.foreign_connections);
            eprintln!("braid-bench server: refused {peer}: {e}");
        }
    }
}

fn hand_over_data(mut stream: TcpStream, peer: &str, shared: &Shared) {
    let Ok(header) = DataHeader::read_from(&mut stream) else {
        bump(&shared.counters.data_connections_rejected);
        eprintln!("braid-bench server: data connection from {peer} closed before its header");
        return;
    };
    let waiting = shared.waiting.lock().unwrap_or_else(PoisonError::into_inner);
    let delivered = waiting
        .get(&header.test_id)
        .is_some_and(|test| test.send((header.stream, stream)).is_ok());
    if !delivered {
        bump(&shared.counters.data_connections_rejected);
        eprintln!("braid-bench server: data connection from {peer} names no waiting test");
    }
}

fn run_control(stream: TcpStream, peer: &str, shared: &Shared) {
    let Ok((mut reader, mut writer)) = server_control(stream) else {
        return;
    };
    let spec = match read_hello(&mut reader) {
        Ok(spec) => spec,
        Err(e) => {
            bump(&shared.counters.hellos_rejected);
            eprintln!("braid-bench server: rejected test from {peer}: {e}");
            writer.send_error(&e);
            return;
        }
    };
    let outcome = if spec.udp.is_some() {
        run_udp_test(&spec, &mut reader, &mut writer, shared)
    } else {
        run_tcp_test(&spec, &mut writer, shared)
    };
    match outcome {
        Ok(()) => bump(&shared.counters.tests_completed),
        Err(e) => {
            bump(&shared.counters.tests_failed);
            eprintln!("braid-bench server: test {:016x} from {peer} failed: {e}", spec.test_id);
            writer.send_error(&e);
        }
    }
}

fn read_hello(reader: &mut ControlReader) -> Result<TestSpec, ProtocolError> {
    match reader.recv()? {
        Message::Hello { version, spec } => {
            if version != VERSION {
                return Err(ProtocolError::Version(version));
            }
            spec.validate().map_err(|e| ProtocolError::Malformed(e.to_string()))?;
            Ok(spec)
        }
        other => Err(other.unexpected("hello")),
    }
}

/// Removes a test from the waiting table when dropped.
struct WaitingEntry<'a> {
    waiting: &'a Waiting,
    test_id: u64,
}

impl Drop for WaitingEntry<'_> {
    fn drop(&mut self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.remove(&self.test_id);
    }
}

/// Registers `spec` as waiting for data connections and collects all of them.
fn collect_streams(
    spec: &TestSpec,
    writer: &mut ControlWriter,
    shared: &Shared,
) -> Result<Vec<DataStream>, ProtocolError> {
    let (deliver, arrivals): (Sender<DataStream>, Receiver<DataStream>) = mpsc::channel();
    {
        let mut waiting = shared.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.contains_key(&spec.test_id) {
            return Err(ProtocolError::Malformed("test id already in use".into()));
        }
        waiting.insert(spec.test_id, deliver);
    }
    let _entry = WaitingEntry {
        waiting: &shared.waiting,
        test_id: spec.test_id,
    };
    writer.send(&Message::Accepted {
        clocks_shared: clocks_shared(&spec.boot_id, &shared.boot_id),
    })?;

    let total = spec.total_streams() as usize;
    let mut streams: Vec<Option<TcpStream>> = (0..total).map(|_| None).collect();
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut arrived = 0;
    while arrived < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let (index, stream) = arrivals
            .recv_timeout(left)
            .map_err(|_| ProtocolError::Malformed(format!("only {arrived} of {total} data streams arrived")))?;
        match streams.get_mut(index as usize) {
            Some(slot @ None) => {
                *slot = Some(stream);
                arrived += 1;
            }
            _ => bump(&shared.counters.data_connections_rejected),
        }
    }
    Ok(streams
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i as u32, s?)))
        .collect())
}

fn run_tcp_test(spec: &TestSpec, writer: &mut ControlWriter, shared: &Shared) -> Result<(), ProtocolError> {
    let streams = collect_streams(spec, writer, shared)?;
    writer.send(&Message::Started)?;
    let start = Instant::now();
    let session = TcpSession::start(spec, Side::Server, streams, start)?;
    let mut sent = Ok(());
    run_ticks(spec, start, |tick| {
        sent = writer.send(&Message::Sample(session.sample(tick)));
        sent.is_ok()
    });
    if sent.is_err() {
        session.abort();
    }
    let result = session.finish();
    sent?;
    writer.send(&Message::TcpResult(result))
}

fn run_udp_test(
    spec: &TestSpec,
    reader: &mut ControlReader,
    writer: &mut ControlWriter,
    shared: &Shared,
) -> Result<(), ProtocolError> {
    let drain = Duration::from_millis(spec.udp.map_or(0, |u| u.drain_ms));
    let progress = new_progress(spec.streams);
    let shared_clock = clocks_shared(&spec.boot_id, &shared.boot_id);
    shared.udp.register(spec, shared_clock, Arc::clone(&progress))?;
    match exchange_udp(spec, &progress, shared_clock, reader, writer) {
        Ok(sent) => {
            thread::sleep(drain);
            let flows = shared.udp.finish(spec.test_id, sent)?;
            writer.send(&Message::UdpResult { flows })
        }
        Err(e) => {
            let _ = shared.udp.finish(spec.test_id, Vec::new());
            Err(e)
        }
    }
}

/// The control exchange of a registered UDP test; returns the client's per-flow sent counts.
fn exchange_udp(
    spec: &TestSpec,
    progress: &FlowProgress,
    clocks_shared: bool,
    reader: &mut ControlReader,
    writer: &mut ControlWriter,
) -> Result<Vec<u64>, ProtocolError> {
    writer.send(&Message::Accepted { clocks_shared })?;
    writer.send(&Message::Started)?;
    let start = Instant::now();
    let mut sent = Ok(());
    run_ticks(spec, start, |tick| {
        let received = progress
            .iter()
            .enumerate()
            .map(|(i, p)| Count {
                stream: i as u32,
                value: p.load(Ordering::Relaxed),
            })
            .collect();
        sent = writer.send(&Message::Sample(Sample {
            tick,
            received,
            retransmits: Vec::new(),
        }));
        sent.is_ok()
    });
    sent?;
    reader.set_read_timeout(Some(STALL_GRACE))?;
    match reader.recv()? {
        Message::UdpDone { sent } => Ok(sent),
        other => Err(other.unexpected("udp_done")),
    }
}
