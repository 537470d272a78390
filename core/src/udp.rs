//! Batched UDP socket I/O for data-path threads.
//!
//! Design: a data-path thread moves packets in batches, one system call per batch in each
//! direction (`recvmmsg(2)` / `sendmmsg(2)`), over buffers allocated once when the batch is
//! built. A [`RecvBatch`] owns `slots` receive buffers of `buf_size` bytes each plus one
//! source-address slot per buffer; a [`SendBatch`] owns the same for outgoing datagrams, which
//! the caller fills in place ([`SendBatch::next_buf`] then [`SendBatch::commit`]) so a packet is
//! written once, straight into the buffer the kernel reads. Nothing here allocates after
//! construction.
//!
//! Failure policy: a datagram that cannot be sent (socket buffer full, ICMP-refused or
//! unreachable peer, oversize) is dropped and reported in a [`SendReport`]; it is never fatal.
//! A receive on a non-blocking socket with nothing queued yields `Ok(0)`; `EINTR` is retried.
//! Both IPv4 and IPv6 peers are supported on the matching socket family.
//!
//! [`bind_data_socket`] makes the sockets this module expects: bound, non-blocking, with large
//! kernel buffers (reporting what the kernel actually granted), and [`poll_readable`] waits for
//! any of several sockets to become readable with a timeout.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Kernel socket buffer size data-plane sockets ask for by default (4 MiB).
pub const DEFAULT_SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// A batch of receive buffers filled by one `recvmmsg(2)` call.
pub struct RecvBatch {
    buf_size: usize,
    buffers: Vec<u8>,
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    sources: Vec<SocketAddr>,
    truncated: Vec<bool>,
    filled: usize,
}

// SAFETY: the raw pointers inside `headers` and `iovecs` only ever point into this batch's own
// heap buffers, are rewritten before every system call and are never dereferenced by Rust code,
// so moving the batch to another thread cannot create shared access.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.slots())
            .field("buf_size", &self.buf_size)
            .field("filled", &self.filled)
            .finish()
    }
}

impl RecvBatch {
    /// A batch of `slots` buffers of `buf_size` bytes each (both at least 1).
    pub fn new(slots: usize, buf_size: usize) -> Self {
        let slots = slots.max(1);
        let buf_size = buf_size.max(1);
        RecvBatch {
            buf_size,
            buffers: vec![0; slots * buf_size],
            // SAFETY: `mmsghdr`, `iovec` and `sockaddr_storage` are plain C structs for which
            // all-zero bytes (null pointers, zero lengths) is a valid value.
            headers: (0..slots).map(|_| unsafe { mem::zeroed() }).collect(),
            // SAFETY: as above.
            iovecs: (0..slots).map(|_| unsafe { mem::zeroed() }).collect(),
            // SAFETY: as above.
            names: (0..slots).map(|_| unsafe { mem::zeroed() }).collect(),
            sources: vec![unspecified_addr(); slots],
            truncated: vec![false; slots],
            filled: 0,
        }
    }

    /// How many datagrams one call can receive.
    pub fn slots(&self) -> usize {
        self.headers.len()
    }

    /// The size of each receive buffer; longer datagrams are truncated (see [`Self::truncated`]).
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// How many datagrams the last [`Self::recv`] returned.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Whether the last [`Self::recv`] returned nothing.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Receives up to [`Self::slots`] datagrams in one system call and returns how many arrived.
    ///
    /// Waits for the first datagram only if the socket is blocking; never waits for more.
    /// `Ok(0)` means nothing was queued on a non-blocking socket.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.filled = 0;
        let slots = self.slots();
        for i in 0..slots {
            let buffer = &mut self.buffers[i * self.buf_size..(i + 1) * self.buf_size];
            self.iovecs[i] = libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            };
            let header = &mut self.headers[i];
            header.msg_len = 0;
            header.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = &mut self.iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
        }
        let count = loop {
            // SAFETY: every header points at this batch's own name storage and iovec, each iovec
            // at a distinct `buf_size` region of `buffers`; all live for the duration of the call
            // and `slots` is the length of `headers`.
            let rc = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    slots as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(err),
            }
        };
        for i in 0..count {
            let header = &self.headers[i];
            self.truncated[i] = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // SAFETY: the kernel initialised `names[i]` up to `msg_namelen` bytes and set the
            // family to match.
            let name = unsafe { SockAddr::new(self.names[i], header.msg_hdr.msg_namelen) };
            self.sources[i] = name.as_socket().unwrap_or_else(unspecified_addr);
        }
        self.filled = count;
        Ok(count)
    }

    /// Datagram `i` of the last receive and its source address.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        assert!(i < self.filled, "datagram {i} of {} requested", self.filled);
        let start = i * self.buf_size;
        let len = (self.headers[i].msg_len as usize).min(self.buf_size);
        (&self.buffers[start..start + len], self.sources[i])
    }

    /// Datagram `i` of the last receive, writable in place, and its source address.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get_mut(&mut self, i: usize) -> (&mut [u8], SocketAddr) {
        assert!(i < self.filled, "datagram {i} of {} requested", self.filled);
        let start = i * self.buf_size;
        let len = (self.headers[i].msg_len as usize).min(self.buf_size);
        (&mut self.buffers[start..start + len], self.sources[i])
    }

    /// Whether datagram `i` was longer than the buffer and arrived truncated.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn truncated(&self, i: usize) -> bool {
        assert!(i < self.filled, "datagram {i} of {} requested", self.filled);
        self.truncated[i]
    }
}

/// What one [`SendBatch::flush`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SendReport {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// Payload bytes of the datagrams the kernel accepted.
    pub sent_bytes: usize,
    /// Datagrams dropped: socket buffer full, peer refused or unreachable, too large.
    pub dropped: usize,
}

/// A batch of outgoing datagrams sent by `sendmmsg(2)`.
pub struct SendBatch {
    buf_size: usize,
    buffers: Vec<u8>,
    lens: Vec<usize>,
    destinations: Vec<SockAddr>,
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    committed: usize,
}

// SAFETY: the raw pointers inside `headers` and `iovecs` only ever point into this batch's own
// heap buffers, are rewritten before every system call and are never dereferenced by Rust code.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("slots", &self.slots())
            .field("buf_size", &self.buf_size)
            .field("committed", &self.committed)
            .finish()
    }
}

impl SendBatch {
    /// A batch of `slots` buffers of `buf_size` bytes each (both at least 1).
    pub fn new(slots: usize, buf_size: usize) -> Self {
        let slots = slots.max(1);
        let buf_size = buf_size.max(1);
        SendBatch {
            buf_size,
            buffers: vec![0; slots * buf_size],
            lens: vec![0; slots],
            destinations: vec![SockAddr::from(unspecified_addr()); slots],
            // SAFETY: `mmsghdr` and `iovec` are plain C structs for which all-zero bytes is valid.
            headers: (0..slots).map(|_| unsafe { mem::zeroed() }).collect(),
            // SAFETY: as above.
            iovecs: (0..slots).map(|_| unsafe { mem::zeroed() }).collect(),
            committed: 0,
        }
    }

    /// How many datagrams the batch holds.
    pub fn slots(&self) -> usize {
        self.lens.len()
    }

    /// The size of each send buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// How many datagrams are committed and waiting for [`Self::flush`].
    pub fn len(&self) -> usize {
        self.committed
    }

    /// Whether nothing is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.committed == 0
    }

    /// Whether every slot is committed (flush before writing more).
    pub fn is_full(&self) -> bool {
        self.committed == self.slots()
    }

    /// The next free buffer (all [`Self::buf_size`] bytes, old contents), or `None` if the
    /// batch is full. Nothing is queued until [`Self::commit`].
    pub fn next_buf(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let start = self.committed * self.buf_size;
        Some(&mut self.buffers[start..start + self.buf_size])
    }

    /// Queues the first `len` bytes of the buffer last returned by [`Self::next_buf`] for `dst`.
    ///
    /// # Panics
    /// If the batch is full or `len` exceeds [`Self::buf_size`]: both are caller bugs.
    pub fn commit(&mut self, len: usize, dst: SocketAddr) {
        assert!(!self.is_full(), "commit on a full send batch");
        assert!(
            len <= self.buf_size,
            "datagram of {len} bytes in {}-byte slot",
            self.buf_size
        );
        self.lens[self.committed] = len;
        self.destinations[self.committed] = SockAddr::from(dst);
        self.committed += 1;
    }

    /// Copies `datagram` into the next slot and commits it; returns false (nothing queued) if
    /// the batch is full or the datagram does not fit a slot.
    pub fn push(&mut self, datagram: &[u8], dst: SocketAddr) -> bool {
        let Some(buf) = self.next_buf() else {
            return false;
        };
        let Some(slot) = buf.get_mut(..datagram.len()) else {
            return false;
        };
        slot.copy_from_slice(datagram);
        self.commit(datagram.len(), dst);
        true
    }

    /// Sends every committed datagram and empties the batch. Datagrams the kernel refuses are
    /// dropped and counted; the error is never returned.
    pub fn flush(&mut self, socket: &UdpSocket) -> SendReport {
        let count = self.committed;
        self.committed = 0;
        let mut report = SendReport::default();
        for i in 0..count {
            let start = i * self.buf_size;
            self.iovecs[i] = libc::iovec {
                iov_base: self.buffers[start..].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
            let header = &mut self.headers[i];
            header.msg_len = 0;
            header.msg_hdr.msg_name = self.destinations[i].as_ptr() as *mut libc::c_void;
            header.msg_hdr.msg_namelen = self.destinations[i].len();
            header.msg_hdr.msg_iov = &mut self.iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
        }
        let mut next = 0;
        while next < count {
            // SAFETY: headers `next..count` were initialised above and point at this batch's own
            // destination addresses, iovecs and buffers, all alive and unmoved during the call.
            let rc = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers[next..].as_mut_ptr(),
                    (count - next) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                let sent = rc as usize;
                report.sent += sent;
                report.sent_bytes += self.lens[next..next + sent].iter().sum::<usize>();
                next += sent;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The socket buffer is full: the rest of the batch would fail the same way.
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    report.dropped += count - next;
                    break;
                }
                // Anything else concerns the first datagram only (refused, unreachable, too big).
                _ => {
                    report.dropped += 1;
                    next += 1;
                }
            }
        }
        report
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
/// kernel receive and send buffer, and reports what the kernel granted.
pub fn bind_data_socket(addr: SocketAddr, buffer_bytes: usize) -> io::Result<(UdpSocket, SocketBuffers)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    // Oversized requests are capped by the kernel, not refused; a failure here is not fatal
    // either: the granted sizes are reported below.
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.bind(&SockAddr::from(addr))?;
    let granted = SocketBuffers {
        recv_bytes: socket.recv_buffer_size()?,
        send_bytes: socket.send_buffer_size()?,
    };
    Ok((socket.into(), granted))
}

/// Waits up to `timeout` until any of `sockets` is readable and says which are. An interrupted
/// wait returns all `false`.
pub fn poll_readable<const N: usize>(sockets: [&UdpSocket; N], timeout: Duration) -> io::Result<[bool; N]> {
    let mut fds = sockets.map(|s| libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
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

fn unspecified_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv6Addr};
    use std::time::Instant;

    fn loopback(ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, 0)
    }

    /// Receives until `want` datagrams arrived, polling, for at most a few seconds.
    fn recv_all(socket: &UdpSocket, batch: &mut RecvBatch, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            poll_readable([socket], Duration::from_millis(100)).unwrap();
            let n = batch.recv(socket).unwrap();
            for i in 0..n {
                assert!(!batch.truncated(i));
                let (data, src) = batch.get(i);
                got.push((data.to_vec(), src));
            }
        }
        got
    }

    fn payload(i: usize) -> Vec<u8> {
        // Sizes from 1 to ~1400 bytes, contents unique per datagram.
        (0..1 + (i * 37) % 1400)
            .map(|b| (b as u8).wrapping_mul(7) ^ i as u8)
            .collect()
    }

    fn round_trip_batch(ip: IpAddr) {
        let (receiver, granted) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
        assert!(granted.recv_bytes > 0 && granted.send_bytes > 0);
        let dst = receiver.local_addr().unwrap();
        let senders: Vec<UdpSocket> = (0..2)
            .map(|_| bind_data_socket(loopback(ip), 1 << 20).unwrap().0)
            .collect();

        let mut send = [SendBatch::new(32, 2048), SendBatch::new(32, 2048)];
        let mut expected = Vec::new();
        for i in 0..64 {
            let which = i % 2;
            let data = payload(i);
            let buf = send[which].next_buf().unwrap();
            buf[..data.len()].copy_from_slice(&data);
            send[which].commit(data.len(), dst);
            expected.push((data, senders[which].local_addr().unwrap()));
        }
        assert!(send[0].is_full() && send[0].next_buf().is_none());
        for (batch, socket) in send.iter_mut().zip(&senders) {
            let report = batch.flush(socket);
            assert_eq!(report.sent, 32);
            assert_eq!(report.dropped, 0);
            assert!(batch.is_empty());
        }
        let expected_bytes: usize = expected.iter().map(|(d, _)| d.len()).sum();
        assert!(expected_bytes > 64);

        let mut recv = RecvBatch::new(16, 2048);
        let mut got = recv_all(&receiver, &mut recv, 64);
        assert_eq!(got.len(), 64);
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
        assert_eq!(recv.recv(&receiver).unwrap(), 0, "nothing left, non-blocking");
    }

    #[test]
    fn batch_round_trips_over_ipv4_loopback() {
        round_trip_batch(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn batch_round_trips_over_ipv6_loopback() {
        round_trip_batch(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn oversize_datagram_is_flagged_truncated() {
        let (receiver, _) = bind_data_socket(loopback(Ipv4Addr::LOCALHOST.into()), 1 << 20).unwrap();
        let (sender, _) = bind_data_socket(loopback(Ipv4Addr::LOCALHOST.into()), 1 << 20).unwrap();
        sender.send_to(&[9u8; 300], receiver.local_addr().unwrap()).unwrap();
        let mut recv = RecvBatch::new(4, 100);
        poll_readable([&receiver], Duration::from_secs(2)).unwrap();
        assert_eq!(recv.recv(&receiver).unwrap(), 1);
        assert!(recv.truncated(0));
        assert_eq!(recv.get(0).0, &[9u8; 100][..]);
        recv.get_mut(0).0[0] = 1;
        assert_eq!(recv.get(0).0[0], 1);
    }

    #[test]
    fn unsendable_datagrams_are_counted_not_fatal() {
        let (sender, _) = bind_data_socket(loopback(Ipv4Addr::LOCALHOST.into()), 1 << 20).unwrap();
        let (receiver, _) = bind_data_socket(loopback(Ipv4Addr::LOCALHOST.into()), 1 << 20).unwrap();
        let mut batch = SendBatch::new(4, 64);
        // An IPv6 destination on an IPv4 socket is refused by the kernel.
        assert!(batch.push(b"lost", SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 9)));
        assert!(batch.push(b"kept", receiver.local_addr().unwrap()));
        assert!(
            !batch.push(&[0; 65], receiver.local_addr().unwrap()),
            "larger than a slot"
        );
        let report = batch.flush(&sender);
        assert_eq!(
            report,
            SendReport {
                sent: 1,
                sent_bytes: 4,
                dropped: 1
            }
        );
        let mut recv = RecvBatch::new(4, 64);
        let got = recv_all(&receiver, &mut recv, 1);
        assert_eq!(got[0].0, b"kept");
    }

    #[test]
    fn poll_times_out_when_idle() {
        let (socket, _) = bind_data_socket(loopback(Ipv4Addr::LOCALHOST.into()), 1 << 20).unwrap();
        let start = Instant::now();
        assert_eq!(poll_readable([&socket], Duration::from_millis(30)).unwrap(), [false]);
        assert!(start.elapsed() >= Duration::from_millis(25));
    }
}
