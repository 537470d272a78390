//! The TCP data streams of one end of a test.
//!
//! A [`TcpSession`] owns one thread per data stream. A sending thread writes the stream's
//! [`Pattern`] until the test's end, shuts its side down and waits for the receiver to close, so
//! that the final `TCP_INFO` retransmit count covers the whole stream. A receiving thread checks
//! every byte against the pattern and publishes its byte count in an atomic that the interval
//! sampler reads; it ends at the sender's FIN, or gives up [`STALL_GRACE`] after the test's end.
//! The same session runs on the client and on the server, for whichever streams that end sends or
//! receives.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::control::{Count, Sample, StreamReceipt, TcpSideResult};
use crate::pattern::{Check, Pattern};
use crate::spec::{Side, TestSpec};
use crate::tcp_info::total_retransmits;

/// How long after the test's end a receiver keeps waiting for a stalled stream.
pub const STALL_GRACE: Duration = Duration::from_secs(15);
const BUFFER_BYTES: usize = 128 * 1024;
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Receiving {
    stream: u32,
    progress: Arc<AtomicU64>,
    thread: JoinHandle<StreamReceipt>,
}

#[derive(Debug)]
struct Sending {
    stream: u32,
    socket: Arc<TcpStream>,
    thread: Option<JoinHandle<()>>,
}

impl Sending {
    fn retransmits(&self) -> Count {
        Count {
            stream: self.stream,
            value: total_retransmits(&self.socket).unwrap_or(0),
        }
    }
}

/// The running data streams of one end.
#[derive(Debug)]
pub struct TcpSession {
    receiving: Vec<Receiving>,
    sending: Vec<Sending>,
    stop: Arc<AtomicBool>,
}

/// Times every stream thread works against.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    end: Instant,
    give_up: Instant,
}

impl TcpSession {
    /// Starts a thread for each of `streams` (index, connected socket), sending on those that
    /// `me` sends per `spec` and receiving on the others. `start` is the test's time zero.
    pub fn start(spec: &TestSpec, me: Side, streams: Vec<(u32, TcpStream)>, start: Instant) -> io::Result<Self> {
        let end = start + Duration::from_millis(spec.duration_ms);
        let clock = Clock {
            start,
            end,
            give_up: end + STALL_GRACE,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut session = TcpSession {
            receiving: Vec::new(),
            sending: Vec::new(),
            stop,
        };
        for (stream, socket) in streams {
            let pattern = Pattern::new(spec.test_id, stream);
            socket.set_read_timeout(Some(POLL))?;
            socket.set_write_timeout(Some(POLL))?;
            let stop = Arc::clone(&session.stop);
            if spec.sender_of(stream) == me {
                if let Some(bytes_per_second) = spec.stream_pacing_bytes() {
                    set_pacing_rate(&socket, bytes_per_second)?;
                }
                let socket = Arc::new(socket);
                let for_thread = Arc::clone(&socket);
                let thread = thread::Builder::new()
                    .name(format!("tcp-send-{stream}"))
                    .spawn(move || send_stream(&for_thread, pattern, clock, &stop))?;
                session.sending.push(Sending {
                    stream,
                    socket,
                    thread: Some(thread),
                });
            } else {
                let progress = Arc::new(AtomicU64::new(0));
                let for_thread = Arc::clone(&progress);
                let thread = thread::Builder::new()
                    .name(format!("tcp-recv-{stream}"))
                    .spawn(move || receive_stream(socket, stream, pattern, clock, &for_thread, &stop))?;
                session.receiving.push(Receiving {
                    stream,
                    progress,
                    thread,
                });
            }
        }
        Ok(session)
    }

    /// This end's cumulative counters, labelled as tick `tick`.
    pub fn sample(&self, tick: u32) -> Sample {
        Sample {
            tick,
            received: self
                .receiving
                .iter()
                .map(|r| Count {
                    stream: r.stream,
                    value: r.progress.load(Ordering::Relaxed),
                })
                .collect(),
            retransmits: self.sending.iter().map(Sending::retransmits).collect(),
        }
    }

    /// Asks every stream thread to stop early (the test was abandoned).
    pub fn abort(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for every stream to end and returns this end's final figures.
    pub fn finish(self) -> TcpSideResult {
        let received = self
            .receiving
            .into_iter()
            .map(|r| {
                r.thread.join().unwrap_or(StreamReceipt {
                    stream: r.stream,
                    bytes: r.progress.load(Ordering::Relaxed),
                    seconds: 0.0,
                    corrupted_bytes: 0,
                    first_bad_offset: None,
                    complete: false,
                })
            })
            .collect();
        let retransmits = self
            .sending
            .into_iter()
            .map(|mut s| {
                if let Some(thread) = s.thread.take() {
                    let _ = thread.join();
                }
                s.retransmits()
            })
            .collect();
        TcpSideResult { received, retransmits }
    }
}

/// Caps `socket`'s sending rate (`SO_MAX_PACING_RATE`): the kernel's TCP pacing spreads the
/// stream's segments evenly at this rate, with or without the `fq` qdisc. Unsent data is held
/// to about [`PACED_BACKLOG`] of it (`TCP_NOTSENT_LOWAT`), so that the stream stops when the
/// test does instead of draining a large send buffer at the paced rate afterwards.
fn set_pacing_rate(socket: &TcpStream, bytes_per_second: u64) -> io::Result<()> {
    // Kernels before 4.20 take a 32-bit rate; later ones take either width.
    match u32::try_from(bytes_per_second) {
        Ok(narrow) => set_socket_option(socket, libc::SOL_SOCKET, libc::SO_MAX_PACING_RATE, narrow)?,
        Err(_) => set_socket_option(socket, libc::SOL_SOCKET, libc::SO_MAX_PACING_RATE, bytes_per_second)?,
    }
    let backlog = bytes_per_second.saturating_mul(PACED_BACKLOG.as_millis() as u64) / 1000;
    let lowat = u32::try_from(backlog.max(16 * 1024)).unwrap_or(u32::MAX);
    set_socket_option(socket, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, lowat)
}

/// How much unsent data a paced stream may queue, in time at its rate.
const PACED_BACKLOG: Duration = Duration::from_millis(20);

/// `setsockopt(level, name, value)` for an integer option.
fn set_socket_option<T: Copy>(socket: &TcpStream, level: i32, name: i32, value: T) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `value` is a plain integer that lives across the call; the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

fn send_stream(socket: &TcpStream, pattern: Pattern, clock: Clock, stop: &AtomicBool) {
    let mut buf = vec![0u8; BUFFER_BYTES];
    let mut offset = 0u64;
    let mut pos = buf.len();
    let mut writer = socket;
    while Instant::now() < clock.end && !stop.load(Ordering::Relaxed) {
        if pos == buf.len() {
            pattern.fill(offset, &mut buf);
            pos = 0;
        }
        match writer.write(&buf[pos..]) {
            Ok(n) => {
                pos += n;
                offset += n as u64;
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
    let _ = socket.shutdown(Shutdown::Write);
    // Wait for the receiver to close, so the final retransmit count covers the whole stream.
    let mut sink = [0u8; 512];
    let mut reader = socket;
    while Instant::now() < clock.give_up && !stop.load(Ordering::Relaxed) {
        match reader.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

fn receive_stream(
    mut socket: TcpStream,
    stream: u32,
    pattern: Pattern,
    clock: Clock,
    progress: &AtomicU64,
    stop: &AtomicBool,
) -> StreamReceipt {
    let mut buf = vec![0u8; BUFFER_BYTES];
    let mut offset = 0u64;
    let mut check = Check::default();
    let mut last_byte = clock.start;
    let mut complete = false;
    while !stop.load(Ordering::Relaxed) {
        match socket.read(&mut buf) {
            Ok(0) => {
                complete = true;
                break;
            }
            Ok(n) => {
                check.merge(pattern.check(offset, &buf[..n]));
                offset += n as u64;
                progress.store(offset, Ordering::Relaxed);
                last_byte = Instant::now();
            }
            Err(e) if is_timeout(&e) => {
                if Instant::now() >= clock.give_up {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    StreamReceipt {
        stream,
        bytes: offset,
        seconds: last_byte.saturating_duration_since(clock.start).as_secs_f64(),
        corrupted_bytes: check.corrupted_bytes,
        first_bad_offset: check.first_bad_offset,
        complete,
    }
}
