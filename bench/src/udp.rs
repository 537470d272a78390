//! The UDP data path: paced senders on the client, one receiving thread on the server.
//!
//! **Sending** ([`UdpFlows`]): every flow owns a socket with its own source port, connected to
//! the server, so each flow is a distinct 5-tuple that braid may place on a different gateway
//! pair. One thread sends for all flows, round-robin, on one [`Pacer`] schedule; it sleeps
//! between bursts instead of spinning. A datagram's header and pattern payload are written into
//! one reused buffer.
//!
//! **Receiving** ([`UdpReceiver`]): one thread owns the server's UDP socket and a table of the
//! registered tests. It echoes probes, feeds each test datagram to its flow's [`FlowStats`], and
//! publishes per-flow byte counts in atomics for the interval sampler. Tests are registered and
//! finished through a command channel, so the receive loop takes no locks. Foreign datagrams and
//! datagrams naming an unknown test or flow are counted and dropped.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::clock::monotonic_ns;
use crate::datagram::{self, check_payload, Datagram, TestHeader, MAX_DATAGRAM};
use crate::pace::Pacer;
use crate::pattern::Pattern;
use crate::server::{bump, ServerCounters};
use crate::spec::{TestSpec, UdpSpec};
use crate::stats::{Arrival, FlowStats, FlowSummary};

const RECEIVE_POLL: Duration = Duration::from_millis(100);
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// What the sending side counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendTotals {
    /// Datagrams handed to the kernel, per flow.
    pub sent: Vec<u64>,
    /// Sends the kernel refused (buffer full, ICMP unreachable reported back).
    pub send_errors: u64,
}

/// The client's sockets, one per flow.
#[derive(Debug)]
pub struct UdpFlows {
    sockets: Vec<UdpSocket>,
}

/// A wildcard address of the same family as `peer`.
pub fn unspecified_for(peer: &SocketAddr) -> SocketAddr {
    let ip = match peer {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

impl UdpFlows {
    /// Opens `flows` sockets on distinct ephemeral ports, each connected to `server`.
    pub fn open(server: SocketAddr, flows: u32) -> io::Result<Self> {
        let sockets = (0..flows)
            .map(|_| {
                let socket = UdpSocket::bind(unspecified_for(&server))?;
                socket.connect(server)?;
                let _ = socket2::SockRef::from(&socket).set_send_buffer_size(SOCKET_BUFFER_BYTES);
                Ok(socket)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(UdpFlows { sockets })
    }

    /// The source address of each flow.
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.sockets.iter().map(UdpSocket::local_addr).collect()
    }

    /// Sends the test's datagrams from `start_ns` until `end_ns` (monotonic clock) or `stop`.
    pub fn run(&self, spec: &TestSpec, udp: &UdpSpec, start_ns: u64, end_ns: u64, stop: &AtomicBool) -> SendTotals {
        let flows = self.sockets.len();
        let patterns: Vec<Pattern> = (0..flows as u32).map(|f| Pattern::new(spec.test_id, f)).collect();
        let mut totals = SendTotals {
            sent: vec![0; flows],
            send_errors: 0,
        };
        let mut next_seq = vec![0u64; flows];
        let mut buf = vec![0u8; udp.size];
        let mut pacer = Pacer::new(start_ns, udp.rate_bps, udp.size);
        let mut next_flow = 0usize;
        if flows == 0 {
            return totals;
        }
        loop {
            let now = monotonic_ns();
            if now >= end_ns || stop.load(Ordering::Relaxed) {
                return totals;
            }
            let due = pacer.due(now);
            if due == 0 {
                let wait = pacer.wait_ns(now).min(end_ns - now);
                thread::sleep(Duration::from_nanos(wait));
                continue;
            }
            for _ in 0..due {
                let flow = next_flow;
                next_flow = (next_flow + 1) % flows;
                let header = TestHeader {
                    test_id: spec.test_id,
                    flow: flow as u32,
                    seq: next_seq[flow],
                    sent_ns: monotonic_ns(),
                };
                header.write(&patterns[flow], &mut buf);
                next_seq[flow] += 1;
                match self.sockets[flow].send(&buf) {
                    Ok(_) => totals.sent[flow] += 1,
                    Err(_) => totals.send_errors += 1,
                }
            }
            pacer.sent(due);
        }
    }
}

/// Per-flow received byte counts, readable while the test runs.
pub type FlowProgress = Arc<[AtomicU64]>;

/// Zeroed progress counters for `flows` flows.
pub fn new_progress(flows: u32) -> FlowProgress {
    (0..flows).map(|_| AtomicU64::new(0)).collect()
}

#[derive(Debug)]
enum Command {
    Register {
        spec: TestSpec,
        clocks_shared: bool,
        progress: FlowProgress,
        done: Sender<()>,
    },
    Finish {
        test_id: u64,
        sent: Vec<u64>,
        reply: Sender<Vec<FlowSummary>>,
    },
}

struct ReceivingTest {
    patterns: Vec<Pattern>,
    flows: Vec<FlowStats>,
    progress: FlowProgress,
}

/// The server's UDP receiving thread.
#[derive(Debug)]
pub struct UdpReceiver {
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl UdpReceiver {
    /// Starts the receiving thread on `socket`.
    pub fn start(socket: UdpSocket, counters: Arc<ServerCounters>) -> io::Result<Self> {
        socket.set_read_timeout(Some(RECEIVE_POLL))?;
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let (commands, inbox) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("udp-recv".into())
            .spawn(move || receive_loop(&socket, &inbox, &counters))?;
        Ok(UdpReceiver {
            commands,
            thread: Some(thread),
        })
    }

    /// Starts accounting datagrams of `spec`'s test; returns once the receiver knows it.
    pub fn register(&self, spec: &TestSpec, clocks_shared: bool, progress: FlowProgress) -> io::Result<()> {
        let (done, wait) = mpsc::channel();
        self.send(Command::Register {
            spec: spec.clone(),
            clocks_shared,
            progress,
            done,
        })?;
        wait.recv().map_err(|_| stopped())
    }

    /// Ends the test and returns each flow's figures; `sent` is the client's per-flow count.
    pub fn finish(&self, test_id: u64, sent: Vec<u64>) -> io::Result<Vec<FlowSummary>> {
        let (reply, wait) = mpsc::channel();
        self.send(Command::Finish { test_id, sent, reply })?;
        wait.recv().map_err(|_| stopped())
    }

    fn send(&self, command: Command) -> io::Result<()> {
        self.commands.send(command).map_err(|_| stopped())
    }

    /// Stops the thread.
    pub fn stop(mut self) {
        let (commands, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.commands, commands));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> io::Error {
    io::Error::new(ErrorKind::BrokenPipe, "UDP receiver stopped")
}

/// Applies pending commands; false once the owner is gone.
fn apply_commands(inbox: &Receiver<Command>, tests: &mut HashMap<u64, ReceivingTest>) -> bool {
    loop {
        match inbox.try_recv() {
            Ok(Command::Register {
                spec,
                clocks_shared,
                progress,
                done,
            }) => {
                let flows = spec.streams;
                tests.insert(
                    spec.test_id,
                    ReceivingTest {
                        patterns: (0..flows).map(|f| Pattern::new(spec.test_id, f)).collect(),
                        flows: (0..flows).map(|_| FlowStats::new(clocks_shared)).collect(),
                        progress,
                    },
                );
                let _ = done.send(());
            }
            Ok(Command::Finish { test_id, sent, reply }) => {
                let summaries = tests.remove(&test_id).map_or_else(Vec::new, |test| {
                    test.flows
                        .iter()
                        .enumerate()
                        .map(|(i, f)| f.summary(sent.get(i).copied()))
                        .collect()
                });
                let _ = reply.send(summaries);
            }
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
}

fn receive_loop(socket: &UdpSocket, inbox: &Receiver<Command>, counters: &ServerCounters) {
    let mut tests: HashMap<u64, ReceivingTest> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    while apply_commands(inbox, &mut tests) {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => {
                bump(&counters.udp_receive_errors);
                continue;
            }
        };
        let arrived_ns = monotonic_ns();
        match datagram::parse(&buf[..len]) {
            Ok(Datagram::Probe(_)) => match socket.send_to(&buf[..len], from) {
                Ok(_) => bump(&counters.probes_echoed),
                Err(_) => bump(&counters.udp_send_errors),
            },
            Ok(Datagram::Test(header, payload)) => {
                let Some(test) = tests.get_mut(&header.test_id) else {
                    bump(&counters.udp_unknown_test);
                    continue;
                };
                let flow = header.flow as usize;
                let (Some(stats), Some(pattern)) = (test.flows.get_mut(flow), test.patterns.get(flow)) else {
                    bump(&counters.udp_unknown_flow);
                    continue;
                };
                let intact = check_payload(pattern, header.seq, payload).corrupted_bytes == 0;
                stats.record(Arrival {
                    seq: header.seq,
                    sent_ns: header.sent_ns,
                    arrived_ns,
                    bytes: len as u64,
                    intact,
                });
                test.progress[flow].store(stats.bytes(), Ordering::Relaxed);
            }
            Err(_) => bump(&counters.udp_malformed),
        }
    }
}
