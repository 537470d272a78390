//! `braid-bench flood`: many concurrent UDP flows at a fixed packet rate, from one process.
//!
//! Seed 003's production mix is about 250 000 long-lived flows at 100–200 Kpps, 206-byte
//! packets on average: far more flows than a process has sockets for. The sender therefore
//! writes whole IPv4/UDP packets on one raw socket (`IPPROTO_RAW`): flow k gets source address
//! `base + k / PORTS_PER_ADDRESS` and source port `FIRST_PORT + k % PORTS_PER_ADDRESS`, so
//! every flow is a distinct 5-tuple from the sender's own prefix. Packets go round-robin over
//! the flows (each flow sends every `flows / pps` seconds, a long-lived flow) in batches of
//! [`BATCH`] through one `sendmmsg`, paced against the clock. The batch buffer is built once;
//! per packet only the source address, the source port and nothing else is rewritten. The UDP
//! checksum is zero (allowed over IPv4) and the kernel fills the IP checksum.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Packets per `sendmmsg`.
pub const BATCH: usize = 64;
/// Source ports per source address.
pub const PORTS_PER_ADDRESS: u32 = 50_000;
/// The first source port of every address.
pub const FIRST_PORT: u16 = 10_000;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct FloodOptions {
    pub source_base: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub port: u16,
    pub flows: u32,
    pub pps: u64,
    /// IPv4 packet size in bytes (headers included).
    pub size: usize,
    pub duration: Duration,
}

/// What was sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloodReport {
    pub flows: u32,
    pub offered_pps: u64,
    pub sent: u64,
    pub send_errors: u64,
    pub seconds: f64,
    pub achieved_pps: f64,
}

/// How many source addresses `flows` flows need.
pub fn addresses_needed(flows: u32) -> u32 {
    flows.div_ceil(PORTS_PER_ADDRESS)
}

/// The source address and port of flow `k`.
pub fn flow_source(base: Ipv4Addr, k: u32) -> (Ipv4Addr, u16) {
    let address = Ipv4Addr::from(u32::from(base).wrapping_add(k / PORTS_PER_ADDRESS));
    (address, FIRST_PORT + (k % PORTS_PER_ADDRESS) as u16)
}

/// Writes an IPv4/UDP packet of `buf.len()` bytes to `destination:port` (source fields are
/// filled per packet by [`set_source`]).
pub fn write_template(buf: &mut [u8], destination: Ipv4Addr, port: u16) {
    let total = buf.len() as u16;
    buf.fill(0);
    buf[0] = 0x45;
    buf[2..4].copy_from_slice(&total.to_be_bytes());
    buf[8] = 64;
    buf[9] = libc::IPPROTO_UDP as u8;
    buf[16..20].copy_from_slice(&destination.octets());
    buf[IPV4_HEADER + 2..IPV4_HEADER + 4].copy_from_slice(&port.to_be_bytes());
    let udp_len = (buf.len() - IPV4_HEADER) as u16;
    buf[IPV4_HEADER + 4..IPV4_HEADER + 6].copy_from_slice(&udp_len.to_be_bytes());
}

/// Sets a packet's source address and port.
pub fn set_source(buf: &mut [u8], (address, port): (Ipv4Addr, u16)) {
    buf[12..16].copy_from_slice(&address.octets());
    buf[IPV4_HEADER..IPV4_HEADER + 2].copy_from_slice(&port.to_be_bytes());
}

/// A raw IPv4 socket that sends whole packets.
struct RawSocket(libc::c_int);

impl RawSocket {
    fn open() -> io::Result<RawSocket> {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned by the result.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt(2) on our descriptor with a pointer to a live c_int.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(RawSocket(fd))
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value owns, once.
        unsafe { libc::close(self.0) };
    }
}

/// Sends the flood and returns what went out.
pub fn run(options: &FloodOptions) -> io::Result<FloodReport> {
    if options.flows == 0 || options.pps == 0 || options.size < IPV4_HEADER + UDP_HEADER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "flows, pps and size (≥ 28) must be positive",
        ));
    }
    let socket = RawSocket::open()?;
    let size = options.size;
    let mut buffer = vec![0u8; BATCH * size];
    for packet in buffer.chunks_mut(size) {
        write_template(packet, options.destination, options.port);
    }
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value that is then filled in.
    let mut dst: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    dst.sin_family = libc::AF_INET as libc::sa_family_t;
    dst.sin_addr.s_addr = u32::from(options.destination).to_be();
    let mut iovecs: Vec<libc::iovec> = buffer
        .chunks_mut(size)
        .map(|p| libc::iovec {
            iov_base: p.as_mut_ptr().cast(),
            iov_len: size,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is valid and the pointers are set below.
    let mut messages: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in messages.iter_mut().zip(iovecs.iter_mut()) {
        m.msg_hdr.msg_name = (&mut dst as *mut libc::sockaddr_in).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let (mut sent, mut errors, mut next_flow) = (0u64, 0u64, 0u32);
    let start = Instant::now();
    while start.elapsed() < options.duration {
        let due = (start.elapsed().as_secs_f64() * options.pps as f64) as u64;
        if due < sent + errors + BATCH as u64 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        for packet in buffer.chunks_mut(size) {
            set_source(packet, flow_source(options.source_base, next_flow));
            next_flow = (next_flow + 1) % options.flows;
        }
        // SAFETY: `messages` points into `buffer`, `iovecs` and `dst`, all alive and unmoved.
        let n = unsafe { libc::sendmmsg(socket.0, messages.as_mut_ptr(), BATCH as libc::c_uint, 0) };
        if n < 0 {
            errors += BATCH as u64;
        } else {
            sent += n as u64;
            errors += (BATCH - n as usize) as u64;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(FloodReport {
        flows: options.flows,
        offered_pps: options.pps,
        sent,
        send_errors: errors,
        seconds,
        achieved_pps: sent as f64 / seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_get_distinct_sources() {
        let base = Ipv4Addr::new(198, 18, 1, 100);
        assert_eq!(flow_source(base, 0), (base, FIRST_PORT));
        assert_eq!(flow_source(base, PORTS_PER_ADDRESS - 1), (base, FIRST_PORT + 49_999));
        assert_eq!(
            flow_source(base, PORTS_PER_ADDRESS),
            (Ipv4Addr::new(198, 18, 1, 101), FIRST_PORT)
        );
        assert_eq!(addresses_needed(250_000), 5);
        assert_eq!(addresses_needed(250_001), 6);
    }

    #[test]
    fn template_is_a_valid_udp_packet() {
        let mut p = vec![0xAA; 206];
        write_template(&mut p, Ipv4Addr::new(198, 18, 2, 2), 9);
        set_source(&mut p, (Ipv4Addr::new(198, 18, 1, 100), 12345));
        assert_eq!(p[0], 0x45);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 206);
        assert_eq!(p[9], 17);
        assert_eq!(&p[12..16], &[198, 18, 1, 100]);
        assert_eq!(&p[16..20], &[198, 18, 2, 2]);
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 12345);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 9);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 186);
        assert!(p[28..].iter().all(|&b| b == 0));
    }
}
