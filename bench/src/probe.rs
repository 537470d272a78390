//! Reachability probes: does every flow get through?
//!
//! One socket per flow, each on its own source port, sends a probe datagram to the server's UDP
//! port; the server echoes it. A flow counts as answered when its own probe (same probe id and
//! flow number) comes back on its socket. Probes that go unanswered are resent `attempts` times,
//! evenly spread over the timeout, from the same source port (so the same flow). Waiting uses
//! `poll(2)` over the unanswered sockets, never a spinning loop.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clock::random_u64;
use crate::datagram::{self, Datagram, ProbeHeader, PROBE_LEN};
use crate::udp::unspecified_for;

/// Parameters of a probe run.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub server: SocketAddr,
    pub flows: u32,
    pub timeout: Duration,
    pub attempts: u32,
}

/// What a probe run found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    pub flows: u32,
    pub answered: u32,
    /// Indices of flows that got no answer.
    pub unanswered: Vec<u32>,
    pub all_answered: bool,
    /// Round-trip time of the slowest answered flow, from its first probe.
    pub max_rtt_ms: Option<f64>,
}

struct Flow {
    socket: UdpSocket,
    probe: [u8; PROBE_LEN],
    rtt: Option<Duration>,
}

/// Probes `options.flows` flows and reports which were answered.
pub fn run_probe(options: &ProbeOptions) -> io::Result<ProbeReport> {
    let probe_id = random_u64()?;
    let mut flows = (0..options.flows)
        .map(|flow| {
            let socket = UdpSocket::bind(unspecified_for(&options.server))?;
            socket.connect(options.server)?;
            socket.set_nonblocking(true)?;
            let mut probe = [0u8; PROBE_LEN];
            ProbeHeader { probe_id, flow }.write(&mut probe);
            Ok(Flow {
                socket,
                probe,
                rtt: None,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;

    let start = Instant::now();
    let attempts = options.attempts.max(1);
    for attempt in 0..attempts {
        for flow in flows.iter().filter(|f| f.rtt.is_none()) {
            // A refused send (ICMP unreachable from an earlier attempt) is just no answer yet.
            let _ = flow.socket.send(&flow.probe);
        }
        let until = start + options.timeout.mul_f64(f64::from(attempt + 1) / f64::from(attempts));
        wait_for_answers(&mut flows, probe_id, start, until)?;
        if flows.iter().all(|f| f.rtt.is_some()) {
            break;
        }
    }
    let unanswered: Vec<u32> = (0..options.flows)
        .filter(|&i| flows[i as usize].rtt.is_none())
        .collect();
    Ok(ProbeReport {
        flows: options.flows,
        answered: options.flows - unanswered.len() as u32,
        all_answered: unanswered.is_empty(),
        unanswered,
        max_rtt_ms: flows.iter().filter_map(|f| f.rtt).max().map(|d| d.as_secs_f64() * 1e3),
    })
}

/// Collects answers until every flow answered or `until` passes.
fn wait_for_answers(flows: &mut [Flow], probe_id: u64, start: Instant, until: Instant) -> io::Result<()> {
    let mut buf = [0u8; 64];
    let mut fds = Vec::with_capacity(flows.len());
    loop {
        let waiting: Vec<usize> = (0..flows.len()).filter(|&i| flows[i].rtt.is_none()).collect();
        let left = until.saturating_duration_since(Instant::now());
        if waiting.is_empty() || left.is_zero() {
            return Ok(());
        }
        fds.clear();
        fds.extend(waiting.iter().map(|&i| libc::pollfd {
            fd: flows[i].socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let timeout_ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is a live, correctly sized array of pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        for (pollfd, &i) in fds.iter().zip(&waiting) {
            if pollfd.revents == 0 {
                continue;
            }
            let flow = &mut flows[i];
            // Drain the socket: stray or refused datagrams are skipped, only our echo counts.
            while let Ok(len) = flow.socket.recv(&mut buf) {
                let echoed = matches!(
                    datagram::parse(&buf[..len]),
                    Ok(Datagram::Probe(p)) if p.probe_id == probe_id && p.flow == i as u32
                );
                if echoed && flow.rtt.is_none() {
                    flow.rtt = Some(start.elapsed());
                }
            }
        }
    }
}
