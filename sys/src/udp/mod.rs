//! Batched UDP socket I/O for data-path threads, with UDP segmentation offload both ways.
//!
//! Design: a data-path thread moves packets in batches, one system call per batch in each
//! direction (`recvmmsg(2)` / `sendmmsg(2)`), over buffers allocated once when the batch is
//! built. Nothing here allocates after construction.
//!
//! Most of the cost of a datagram is the kernel's per-packet path (routing, bridges, veth,
//! socket queues), so both directions let one kernel packet carry many datagrams:
//!
//! * **Send (GSO).** A [`SendBatch`] owns `slots` buffers which the caller fills in place
//!   ([`SendBatch::next_buf`] then [`SendBatch::commit`]), so a packet is written once, straight
//!   into the memory the kernel reads. [`SendBatch::flush`] turns each run of consecutive
//!   datagrams to the same destination with the same length (the last of a run may be shorter)
//!   into one `sendmmsg` message whose iovecs are the run's buffers, tagged with a
//!   `UDP_SEGMENT` control message: the kernel carries the run as one super-packet through the
//!   stack and cuts it into datagrams as late as possible. A run holds at most
//!   [`MAX_GSO_SEGMENTS`] datagrams and at most one maximal UDP datagram of payload. If the
//!   kernel refuses segmentation for this socket or path, the batch turns it off for good and
//!   resends, datagram by datagram, whatever had not gone out; if a segment is larger than the
//!   path MTU, runs of that size and larger are sent as plain datagrams from then on.
//! * **Receive (GRO).** [`bind_data_socket`] enables `UDP_GRO`, so the kernel may hand over a
//!   train of equal-size datagrams from one source as one message (the last may be shorter),
//!   its segment size in a `UDP_GRO` control message. A [`RecvBatch`] therefore receives into
//!   message buffers of 64 KiB and splits every message into datagrams through a preallocated
//!   index, so callers see datagrams only: [`RecvBatch::len`], [`RecvBatch::get`] and
//!   [`RecvBatch::truncated`] index datagrams, whatever the kernel coalesced.
//!
//! Failure policy: a datagram that cannot be sent (socket buffer full, ICMP-refused or
//! unreachable peer, oversize) is dropped and reported in a [`SendReport`]; it is never fatal.
//! A receive on a non-blocking socket with nothing queued yields `Ok(0)`; `EINTR` is retried.
//! Both IPv4 and IPv6 peers are supported on the matching socket family.
//!
//! [`bind_data_socket`] makes the sockets this module expects: bound, non-blocking, with large
//! kernel buffers (reporting what the kernel actually granted) and GRO on where the kernel has
//! it, and [`poll_readable`] waits for any of several sockets to become readable with a timeout.
//! [`ReceiveDrops`] reads what a socket's kernel dropped because its receive buffer was full,
//! which no receive call reports.

mod cmsg;
mod drops;
mod recv;
mod send;
#[cfg(test)]
mod tests;

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub use drops::{receive_drops, ReceiveDrops};
pub use recv::RecvBatch;
pub use send::{SendBatch, SendReport};

/// Kernel socket buffer size data-plane sockets ask for by default (4 MiB).
pub const DEFAULT_SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Most datagrams one GSO message carries: the kernel's `UDP_MAX_SEGMENTS`, 64 before Linux
/// 6.11 raised it to 128; 64 is accepted everywhere.
pub const MAX_GSO_SEGMENTS: usize = 64;

/// Largest UDP payload of one IPv4 datagram: 65535 − 20 (IPv4 header) − 8 (UDP header). A GSO
/// message is built as one such datagram before it is segmented, so this caps a run's bytes.
const MAX_UDP_PAYLOAD_V4: usize = 65_535 - 20 - 8;

/// Largest UDP payload over IPv6 without jumbograms: the 16-bit payload length covers the
/// 8-byte UDP header and the data, not the 40-byte IPv6 header.
const MAX_UDP_PAYLOAD_V6: usize = 65_535 - 8;

/// Largest message one receive can return: a GRO message is bounded by the UDP length field.
const GRO_MESSAGE_BYTES: usize = 65_535;

/// Memory budget for the message buffers of one [`RecvBatch`]: 64 messages of 64 KiB, the
/// default batch size, so large batches get fewer, not larger, buffers.
const RECV_BUFFER_BUDGET: usize = 4 << 20;

/// Most datagrams one received message may hold: a GRO message holds at most 64
/// (`UDP_GRO_CNT_MAX`), a looped-back GSO message at most the sender's `UDP_MAX_SEGMENTS`
/// (128 on current kernels).
const MAX_SEGMENTS_PER_MESSAGE: usize = 128;

/// Turns UDP receive coalescing (`UDP_GRO`, Linux 5.0 and later) on or off for `socket`.
/// A [`RecvBatch`] splits coalesced messages back into datagrams.
pub fn set_gro(socket: &UdpSocket, enabled: bool) -> io::Result<()> {
    let value = libc::c_int::from(enabled);
    // SAFETY: `value` is a live c_int and its size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `socket` has UDP receive coalescing on.
pub fn gro_enabled(socket: &UdpSocket) -> io::Result<bool> {
    Ok(get_udp_option(socket, libc::UDP_GRO)? != 0)
}

fn get_udp_option(socket: &UdpSocket, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and `len` holds the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Kernel buffer sizes granted to a socket (Linux reports twice the requested value, capped by
/// `net.core.rmem_max` / `wmem_max`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SocketBuffers {
    pub recv_bytes: usize,
    pub send_bytes: usize,
}

/// Binds a non-blocking UDP socket for the data path at `addr`, asking for `buffer_bytes` of
/// kernel receive and send buffer, and reports what the kernel granted. Receive coalescing
/// (GRO) is turned on where the kernel has it; [`gro_enabled`] tells.
pub fn bind_data_socket(addr: SocketAddr, buffer_bytes: usize) -> io::Result<(UdpSocket, SocketBuffers)> {
    bind_one(addr, buffer_bytes, false)
}

/// `count` sockets as [`bind_data_socket`] makes them, all bound to `addr` with
/// `SO_REUSEPORT`, so the kernel spreads arriving datagrams over them (by their 4-tuple: one
/// sender's datagrams always reach the same socket) and one data thread can own each. A single
/// socket is bound without it. Only sockets of the same user may join a `SO_REUSEPORT`
/// group, so no other local user can take a share of the traffic.
pub fn bind_data_sockets(
    addr: SocketAddr,
    buffer_bytes: usize,
    count: usize,
) -> io::Result<(Vec<UdpSocket>, SocketBuffers)> {
    let reuse = count > 1;
    let mut sockets = Vec::with_capacity(count.max(1));
    let mut granted = None;
    for _ in 0..count.max(1) {
        let (socket, buffers) = bind_one(addr, buffer_bytes, reuse)?;
        granted.get_or_insert(buffers);
        sockets.push(socket);
    }
    Ok((sockets, granted.expect("at least one socket")))
}

fn bind_one(addr: SocketAddr, buffer_bytes: usize, reuse_port: bool) -> io::Result<(UdpSocket, SocketBuffers)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Oversized requests are capped by the kernel, not refused; a failure here is not fatal
    // either: the granted sizes are reported below.
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.bind(&SockAddr::from(addr))?;
    let granted = SocketBuffers {
        recv_bytes: socket.recv_buffer_size()?,
        send_bytes: socket.send_buffer_size()?,
    };
    let socket = UdpSocket::from(socket);
    if let Err(err) = set_gro(&socket, true) {
        tracing::info!(error = %err, "no UDP receive coalescing in this kernel; receiving datagram by datagram");
    }
    Ok((socket, granted))
}

/// Waits up to `timeout` until any of `sockets` is readable and says which are. An interrupted
/// wait returns all `false`.
pub fn poll_readable<const N: usize>(sockets: [&UdpSocket; N], timeout: Duration) -> io::Result<[bool; N]> {
    let mut fds = sockets.map(|s| libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let timeout_ms = poll_timeout_ms(timeout);
    // SAFETY: `fds` is a valid array of `N` pollfd structs for the duration of the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok([false; N])
        } else {
            Err(err)
        };
    }
    // An error or hang-up condition also counts as readable: the next receive reports it.
    Ok(fds.map(|fd| fd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0))
}

/// `poll`'s timeout for a wait of `timeout`: whole milliseconds, rounded up. Rounding down
/// would turn the last millisecond before a deadline into a busy loop of zero-timeout polls
/// (a caller waiting for its next timer tick would spin there on every tick).
fn poll_timeout_ms(timeout: Duration) -> libc::c_int {
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    libc::c_int::try_from(millis).unwrap_or(libc::c_int::MAX)
}

fn unspecified_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
}
