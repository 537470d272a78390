//! The client: runs one test against a server and returns its report.
//!
//! ```text
//! connect control → Hello{spec} → Accepted → (TCP: open data streams) → Started
//! → run streams or flows, sample at every tick, merge with the server's samples
//! → (UDP: UdpDone{sent}) → the server's result → merged report
//! ```
//! A reader thread forwards the server's control messages into a channel so the tick loop never
//! blocks on the network. Each finished interval is handed to the caller's callback as soon as
//! both ends have sampled it.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::clock::{boot_id, monotonic_ns, random_u64};
use crate::control::{
    client_control, ControlReader, ControlWriter, DataHeader, Message, ProtocolError, Sample, StreamReceipt,
    TcpSideResult, VERSION,
};
use crate::intervals::{mbps, run_ticks, IntervalAssembler, IntervalReport};
use crate::report::{FlowReport, StreamReport, TcpReport, UdpReport, UdpTotals};
use crate::spec::{Direction, Side, SpecError, TestSpec, UdpSpec};
use crate::tcp::{TcpSession, STALL_GRACE};
use crate::udp::UdpFlows;

/// How long to wait for the server to connect and answer the handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a test could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("invalid test parameters: {0}")]
    Spec(#[from] SpecError),
    #[error("local I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the server sent no result in time")]
    NoResult,
}

/// Parameters of a TCP test.
#[derive(Debug, Clone)]
pub struct TcpOptions {
    pub server: SocketAddr,
    pub streams: u32,
    pub duration: Duration,
    pub interval: Duration,
    pub direction: Direction,
    /// Bits per second per direction over all streams; `None` is as fast as TCP goes.
    pub rate_bps: Option<u64>,
}

/// Parameters of a UDP test.
#[derive(Debug, Clone)]
pub struct UdpOptions {
    pub server: SocketAddr,
    pub flows: u32,
    pub duration: Duration,
    pub interval: Duration,
    pub rate_bps: u64,
    /// UDP payload bytes per datagram, header included.
    pub size: usize,
    /// How long the server waits for stragglers after the last datagram was sent.
    pub drain: Duration,
}

fn spec(
    streams: u32,
    duration: Duration,
    interval: Duration,
    direction: Direction,
    udp: Option<UdpSpec>,
    tcp_rate_bps: Option<u64>,
) -> Result<TestSpec, ClientError> {
    let spec = TestSpec {
        test_id: random_u64()?,
        streams,
        duration_ms: duration.as_millis() as u64,
        interval_ms: interval.as_millis() as u64,
        direction,
        udp,
        tcp_rate_bps,
        boot_id: boot_id(),
    };
    spec.validate()?;
    Ok(spec)
}

/// The control connection of a test in progress.
struct Control {
    writer: ControlWriter,
    inbox: Receiver<Result<Message, ProtocolError>>,
    clocks_shared: bool,
}

fn connect(addr: SocketAddr) -> Result<TcpStream, ClientError> {
    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|source| ClientError::Connect { addr, source })
}

/// Connects, says hello, and waits for the server to accept.
fn open_control(addr: SocketAddr, spec: &TestSpec) -> Result<(ControlReader, Control), ClientError> {
    let stream = connect(addr)?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let (mut reader, mut writer) = client_control(stream)?;
    writer.send(&Message::Hello {
        version: VERSION,
        spec: spec.clone(),
    })?;
    let clocks_shared = match reader.recv()? {
        Message::Accepted { clocks_shared } => clocks_shared,
        other => return Err(other.unexpected("accepted").into()),
    };
    let (_, inbox) = mpsc::channel();
    Ok((
        reader,
        Control {
            writer,
            inbox,
            clocks_shared,
        },
    ))
}

/// Waits for `Started`, then forwards every later message to the control's inbox.
fn await_start(mut reader: ControlReader, control: &mut Control, quiet_limit: Duration) -> Result<(), ClientError> {
    match reader.recv()? {
        Message::Started => {}
        other => return Err(other.unexpected("started").into()),
    }
    reader.set_read_timeout(Some(quiet_limit))?;
    let (forward, inbox) = mpsc::channel();
    control.inbox = inbox;
    thread::Builder::new()
        .name("bench-control".into())
        .spawn(move || loop {
            let message = reader.recv();
            let failed = message.is_err();
            if forward.send(message).is_err() || failed {
                return;
            }
        })?;
    Ok(())
}

impl Control {
    /// Feeds arrived samples to `assembler`; returns a result message if one arrived.
    fn absorb(
        &self,
        assembler: &mut IntervalAssembler,
        wait: Option<Duration>,
    ) -> Result<Option<Message>, ClientError> {
        loop {
            let next = match wait {
                Some(wait) => match self.inbox.recv_timeout(wait) {
                    Ok(next) => next,
                    Err(RecvTimeoutError::Timeout) => return Err(ClientError::NoResult),
                    Err(RecvTimeoutError::Disconnected) => return Err(ProtocolError::Closed.into()),
                },
                None => match self.inbox.try_recv() {
                    Ok(next) => next,
                    Err(_) => return Ok(None),
                },
            };
            match next? {
                Message::Sample(sample) => assembler.push_remote(sample),
                result @ (Message::TcpResult(_) | Message::UdpResult { .. }) => return Ok(Some(result)),
                other => return Err(other.unexpected("sample or result").into()),
            }
        }
    }
}

/// Collects every interval both ends have sampled.
fn drain_intervals(
    assembler: &mut IntervalAssembler,
    intervals: &mut Vec<IntervalReport>,
    on_interval: &mut dyn FnMut(&IntervalReport),
) {
    while let Some(interval) = assembler.next_ready() {
        on_interval(&interval);
        intervals.push(interval);
    }
}

/// Runs a TCP test; `on_interval` sees each interval as it completes.
pub fn run_tcp(options: &TcpOptions, on_interval: &mut dyn FnMut(&IntervalReport)) -> Result<TcpReport, ClientError> {
    let spec = spec(
        options.streams,
        options.duration,
        options.interval,
        options.direction,
        None,
        options.rate_bps,
    )?;
    let (reader, mut control) = open_control(options.server, &spec)?;
    let mut streams = Vec::new();
    for stream in 0..spec.total_streams() {
        let mut socket = connect(options.server)?;
        DataHeader {
            test_id: spec.test_id,
            stream,
        }
        .write_to(&mut socket)?;
        streams.push((stream, socket));
    }
    await_start(reader, &mut control, STALL_GRACE * 2)?;
    let start = Instant::now();
    let session = TcpSession::start(&spec, Side::Client, streams, start)?;
    let mut assembler = IntervalAssembler::new(&spec);
    let mut intervals = Vec::new();
    let mut result = None;
    let mut failure = None;
    run_ticks(&spec, start, |tick| {
        assembler.push_local(session.sample(tick));
        match control.absorb(&mut assembler, None) {
            Ok(early) => result = result.take().or(early),
            Err(e) => failure = Some(e),
        }
        drain_intervals(&mut assembler, &mut intervals, on_interval);
        failure.is_none()
    });
    if let Some(e) = failure {
        session.abort();
        session.finish();
        return Err(e);
    }
    let mine = session.finish();
    let theirs = match result {
        Some(message) => message,
        None => control
            .absorb(&mut assembler, Some(STALL_GRACE * 2))?
            .ok_or(ClientError::NoResult)?,
    };
    drain_intervals(&mut assembler, &mut intervals, on_interval);
    let Message::TcpResult(theirs) = theirs else {
        return Err(theirs.unexpected("tcp_result").into());
    };
    let streams = merge_streams(&spec, &mine, &theirs);
    Ok(TcpReport::new(
        spec.test_id,
        spec.direction,
        spec.duration_ms as f64 / 1e3,
        streams,
        intervals,
    ))
}

/// One report line per stream: bytes from its receiver, retransmits from its sender.
fn merge_streams(spec: &TestSpec, mine: &TcpSideResult, theirs: &TcpSideResult) -> Vec<StreamReport> {
    (0..spec.total_streams())
        .map(|index| {
            let find_receipt = |side: &TcpSideResult| side.received.iter().find(|r| r.stream == index).cloned();
            let find_retrans =
                |side: &TcpSideResult| side.retransmits.iter().find(|c| c.stream == index).map(|c| c.value);
            let sender = spec.sender_of(index);
            let (receiver_side, sender_side) = match sender {
                Side::Client => (theirs, mine),
                Side::Server => (mine, theirs),
            };
            let receipt = find_receipt(receiver_side).unwrap_or(StreamReceipt {
                stream: index,
                bytes: 0,
                seconds: 0.0,
                corrupted_bytes: 0,
                first_bad_offset: None,
                complete: false,
            });
            StreamReport {
                index,
                sender,
                bytes: receipt.bytes,
                seconds: receipt.seconds,
                mbps: mbps(receipt.bytes, receipt.seconds),
                retransmits: find_retrans(sender_side).unwrap_or(0),
                corrupted_bytes: receipt.corrupted_bytes,
                first_bad_offset: receipt.first_bad_offset,
                complete: receipt.complete,
            }
        })
        .collect()
}

/// Runs a UDP test; `on_interval` sees each interval as it completes.
pub fn run_udp(options: &UdpOptions, on_interval: &mut dyn FnMut(&IntervalReport)) -> Result<UdpReport, ClientError> {
    let udp = UdpSpec {
        rate_bps: options.rate_bps,
        size: options.size,
        drain_ms: options.drain.as_millis() as u64,
    };
    let spec = spec(
        options.flows,
        options.duration,
        options.interval,
        Direction::Forward,
        Some(udp),
        None,
    )?;
    let flows = UdpFlows::open(options.server, options.flows)?;
    let (reader, mut control) = open_control(options.server, &spec)?;
    await_start(reader, &mut control, STALL_GRACE * 2 + options.drain)?;
    let start = Instant::now();
    let start_ns = monotonic_ns();
    let end_ns = start_ns + spec.duration_ms * 1_000_000;
    let stop = AtomicBool::new(false);
    let mut assembler = IntervalAssembler::new(&spec);
    let mut intervals = Vec::new();
    let mut failure = None;
    let totals = thread::scope(|scope| {
        let sender = scope.spawn(|| flows.run(&spec, &udp, start_ns, end_ns, &stop));
        run_ticks(&spec, start, |tick| {
            assembler.push_local(Sample {
                tick,
                ..Default::default()
            });
            if let Err(e) = control.absorb(&mut assembler, None) {
                failure = Some(e);
                stop.store(true, Ordering::Relaxed);
            }
            drain_intervals(&mut assembler, &mut intervals, on_interval);
            failure.is_none()
        });
        sender.join().unwrap_or_default()
    });
    if let Some(e) = failure {
        return Err(e);
    }
    control.writer.send(&Message::UdpDone {
        sent: totals.sent.clone(),
    })?;
    let result = control
        .absorb(&mut assembler, Some(STALL_GRACE + options.drain))?
        .ok_or(ClientError::NoResult)?;
    drain_intervals(&mut assembler, &mut intervals, on_interval);
    let Message::UdpResult { flows: summaries } = result else {
        return Err(result.unexpected("udp_result").into());
    };
    let flows: Vec<FlowReport> = totals
        .sent
        .iter()
        .enumerate()
        .map(|(i, &sent)| {
            let s = summaries.get(i).cloned().unwrap_or_default();
            FlowReport {
                index: i as u32,
                sent,
                received: s.received,
                bytes: s.bytes,
                lost: s.lost.max(sent.saturating_sub(s.received.saturating_sub(s.duplicates))),
                reordered: s.reordered,
                duplicates: s.duplicates,
                late: s.late,
                corrupted: s.corrupted,
                jitter_ms: s.jitter_ms,
                max_gap_ms: s.max_gap_ms,
                latency_us: s.latency_us,
            }
        })
        .collect();
    let totals = UdpTotals::of(&flows, totals.send_errors);
    let seconds = spec.duration_ms as f64 / 1e3;
    Ok(UdpReport {
        test_id: spec.test_id,
        duration_s: seconds,
        rate_bps: udp.rate_bps,
        size: udp.size,
        aggregate_mbps: mbps(totals.bytes, seconds),
        clocks_shared: control.clocks_shared,
        integrity_ok: totals.corrupted == 0,
        flows,
        totals,
        intervals,
    })
}
