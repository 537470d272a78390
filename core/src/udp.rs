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

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::ptr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

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

/// Control-message buffer of one message: room for a `UDP_GRO` int or a `UDP_SEGMENT` u16 and
/// some slack, aligned as `cmsghdr` requires.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct ControlBuf([u8; 64]);

impl ControlBuf {
    const EMPTY: ControlBuf = ControlBuf([0; 64]);
}

/// One datagram of the last receive: where it lies in which message buffer.
#[derive(Clone, Copy, Debug)]
struct DatagramRef {
    message: u32,
    offset: u32,
    len: u32,
    truncated: bool,
}

/// A batch of receive buffers filled by one `recvmmsg(2)` call, split into datagrams.
pub struct RecvBatch {
    max_datagram: usize,
    message_bytes: usize,
    buffers: Vec<u8>,
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<ControlBuf>,
    sources: Vec<SocketAddr>,
    /// Datagrams of the last receive; its capacity, fixed at construction, is never exceeded.
    datagrams: Vec<DatagramRef>,
    messages: usize,
    coalesced_messages: u64,
    overflow_drops: u64,
}

// SAFETY: the raw pointers inside `headers` and `iovecs` only ever point into this batch's own
// heap buffers, are rewritten before every system call and are never dereferenced by Rust code
// outside `recv`, so moving the batch to another thread cannot create shared access.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.slots())
            .field("buf_size", &self.max_datagram)
            .field("message_bytes", &self.message_bytes)
            .field("datagrams", &self.datagrams.len())
            .field("messages", &self.messages)
            .finish()
    }
}

impl RecvBatch {
    /// A batch receiving datagrams of up to `buf_size` bytes, up to `slots` messages per call.
    ///
    /// Each message buffer holds a whole GRO train (at least 64 KiB), and all of them together
    /// stay within 4 MiB, so `slots` above 64 is reduced (see [`Self::slots`]). Both arguments
    /// are at least 1.
    pub fn new(slots: usize, buf_size: usize) -> Self {
        let max_datagram = buf_size.max(1);
        let message_bytes = max_datagram.max(GRO_MESSAGE_BYTES);
        let slots = slots.min(RECV_BUFFER_BUDGET / message_bytes).max(1);
        RecvBatch {
            max_datagram,
            message_bytes,
            buffers: vec![0; slots * message_bytes],
            // SAFETY: `mmsghdr`, `iovec` and `sockaddr_storage` are plain C structs for which
            // all-zero bytes (null pointers, zero lengths) is a valid value.
            headers: (0..slots).map(|_| unsafe { mem::zeroed() }).collect(),
            // SAFETY: as above.
            iovecs: (0..slots).map(|_| unsafe { mem::zeroed() }).collect(),
            // SAFETY: as above.
            names: (0..slots).map(|_| unsafe { mem::zeroed() }).collect(),
            controls: vec![ControlBuf::EMPTY; slots],
            sources: vec![unspecified_addr(); slots],
            datagrams: Vec::with_capacity(slots * MAX_SEGMENTS_PER_MESSAGE),
            messages: 0,
            coalesced_messages: 0,
            overflow_drops: 0,
        }
    }

    /// How many messages one call can receive; each may carry several datagrams.
    pub fn slots(&self) -> usize {
        self.headers.len()
    }

    /// The largest datagram kept whole; longer ones are truncated (see [`Self::truncated`]).
    pub fn buf_size(&self) -> usize {
        self.max_datagram
    }

    /// How many datagrams the last [`Self::recv`] returned.
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// Whether the last [`Self::recv`] returned nothing.
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// How many kernel messages the last [`Self::recv`] returned (at most [`Self::len`]).
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Messages received so far that carried more than one datagram (GRO trains).
    pub fn coalesced_messages(&self) -> u64 {
        self.coalesced_messages
    }

    /// Datagrams received so far but dropped because a message held more of them than the
    /// kernel ever coalesces; stays zero unless the kernel's limits grow.
    pub fn overflow_drops(&self) -> u64 {
        self.overflow_drops
    }

    /// Receives up to [`Self::slots`] messages in one system call, splits them into datagrams
    /// and returns how many datagrams arrived.
    ///
    /// Waits for the first message only if the socket is blocking; never waits for more.
    /// `Ok(0)` means nothing was queued on a non-blocking socket.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.datagrams.clear();
        self.messages = 0;
        let slots = self.slots();
        for i in 0..slots {
            let buffer = &mut self.buffers[i * self.message_bytes..(i + 1) * self.message_bytes];
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
            header.msg_hdr.msg_control = self.controls[i].0.as_mut_ptr().cast();
            header.msg_hdr.msg_controllen = mem::size_of::<ControlBuf>() as _;
            header.msg_hdr.msg_flags = 0;
        }
        let count = loop {
            // SAFETY: every header points at this batch's own name storage, control buffer and
            // iovec, each iovec at a distinct `message_bytes` region of `buffers`; all live for
            // the duration of the call and `slots` is the length of `headers`.
            let rc = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    slots as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    ptr::null_mut(),
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
            self.index_message(i);
        }
        self.messages = count;
        Ok(self.datagrams.len())
    }

    /// Records message `i` of the last `recvmmsg` and appends its datagrams to the index.
    fn index_message(&mut self, i: usize) {
        let header = &self.headers[i].msg_hdr;
        // SAFETY: the kernel initialised `names[i]` up to `msg_namelen` bytes and set the family
        // to match.
        let name = unsafe { SockAddr::new(self.names[i], header.msg_namelen) };
        self.sources[i] = name.as_socket().unwrap_or_else(unspecified_addr);
        let segments = Segments {
            len: (self.headers[i].msg_len as usize).min(self.message_bytes),
            segment_size: gro_segment_size(header),
            max_datagram: self.max_datagram,
            message_truncated: header.msg_flags & libc::MSG_TRUNC != 0,
            offset: 0,
        };
        let mut held = 0;
        for (offset, len, truncated) in segments {
            held += 1;
            if self.datagrams.len() == self.datagrams.capacity() {
                self.overflow_drops += 1;
                continue;
            }
            // Offsets and lengths fit in u32: they lie within one message buffer.
            self.datagrams.push(DatagramRef {
                message: i as u32,
                offset: offset as u32,
                len: len as u32,
                truncated,
            });
        }
        if held > 1 {
            self.coalesced_messages += 1;
        }
    }

    fn datagram(&self, i: usize) -> DatagramRef {
        match self.datagrams.get(i) {
            Some(datagram) => *datagram,
            None => panic!("datagram {i} of {} requested", self.datagrams.len()),
        }
    }

    fn range_of(&self, datagram: DatagramRef) -> std::ops::Range<usize> {
        let start = datagram.message as usize * self.message_bytes + datagram.offset as usize;
        start..start + datagram.len as usize
    }

    /// Datagram `i` of the last receive and its source address.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let datagram = self.datagram(i);
        let source = self.sources[datagram.message as usize];
        (&self.buffers[self.range_of(datagram)], source)
    }

    /// Datagram `i` of the last receive, writable in place, and its source address.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get_mut(&mut self, i: usize) -> (&mut [u8], SocketAddr) {
        let datagram = self.datagram(i);
        let source = self.sources[datagram.message as usize];
        let range = self.range_of(datagram);
        (&mut self.buffers[range], source)
    }

    /// Whether datagram `i` was longer than [`Self::buf_size`] (or than its message buffer)
    /// and arrived truncated.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn truncated(&self, i: usize) -> bool {
        self.datagram(i).truncated
    }
}

/// The segment size of a GRO message, from its `SOL_UDP`/`UDP_GRO` control message; 0 if the
/// message is a single datagram.
fn gro_segment_size(header: &libc::msghdr) -> usize {
    let control_end = header.msg_control as usize + header.msg_controllen;
    let mut size = 0;
    // SAFETY: `msg_control` and `msg_controllen` describe this message's control buffer, which
    // the kernel filled and set the length of; CMSG_FIRSTHDR/NXTHDR only return headers that lie
    // inside it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(header) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is a non-null header inside the control buffer (see above), aligned
        // because the buffer is and the kernel pads every entry to CMSG_ALIGN.
        let entry = unsafe { &*cmsg };
        // SAFETY: CMSG_DATA only computes an address past the header.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        let data_len = (entry.cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
        let complete = data as usize + mem::size_of::<libc::c_int>() <= control_end;
        if entry.cmsg_level == libc::SOL_UDP
            && entry.cmsg_type == libc::UDP_GRO
            && data_len >= mem::size_of::<libc::c_int>()
            && complete
        {
            // SAFETY: the int lies wholly inside the control buffer (checked just above).
            let value = unsafe { ptr::read_unaligned(data.cast::<libc::c_int>()) };
            size = usize::try_from(value).unwrap_or(0);
        }
        // SAFETY: `header` and `cmsg` are valid as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(header, cmsg) };
    }
    size
}

/// The datagrams of one received message, as `(offset, len, truncated)`: one per
/// `segment_size` bytes (the last may be shorter), or the whole message if it is not a GRO
/// train. Datagrams longer than `max_datagram` are cut to it and flagged truncated, as is the
/// last one of a message the kernel had to truncate.
#[derive(Clone, Copy, Debug)]
struct Segments {
    len: usize,
    segment_size: usize,
    max_datagram: usize,
    message_truncated: bool,
    offset: usize,
}

impl Iterator for Segments {
    type Item = (usize, usize, bool);

    fn next(&mut self) -> Option<Self::Item> {
        let first = self.offset == 0;
        if self.offset >= self.len && !(first && self.len == 0) {
            return None;
        }
        let stride = if self.segment_size == 0 {
            self.len
        } else {
            self.segment_size
        };
        let whole = stride.min(self.len - self.offset);
        let start = self.offset;
        // A zero-length datagram still counts once; `max(1)` moves past it.
        self.offset += whole.max(1);
        let last = self.offset >= self.len;
        let truncated = whole > self.max_datagram || (last && self.message_truncated);
        Some((start, whole.min(self.max_datagram), truncated))
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

/// Whether a [`SendBatch`] coalesces runs into GSO messages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Gso {
    /// Not yet asked whether the kernel knows `UDP_SEGMENT`.
    Unprobed,
    On,
    Off,
}

/// The datagrams one `sendmmsg` message carries: `count` slots from `first`.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    first: usize,
    count: usize,
}

/// A batch of outgoing datagrams sent by `sendmmsg(2)`, coalesced with GSO where possible.
pub struct SendBatch {
    buf_size: usize,
    buffers: Vec<u8>,
    lens: Vec<usize>,
    destinations: Vec<SocketAddr>,
    names: Vec<SockAddr>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    controls: Vec<ControlBuf>,
    spans: Vec<Span>,
    committed: usize,
    gso: Gso,
    /// Segments larger than this go out as plain datagrams (lowered when the path MTU refuses).
    max_gso_segment: usize,
    gso_messages: u64,
    gso_datagrams: u64,
}

// SAFETY: the raw pointers inside `headers` and `iovecs` only ever point into this batch's own
// heap buffers, are rewritten before every system call and are never dereferenced by Rust code
// outside `flush`.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("slots", &self.slots())
            .field("buf_size", &self.buf_size)
            .field("committed", &self.committed)
            .field("gso", &self.gso)
            .field("max_gso_segment", &self.max_gso_segment)
            .finish()
    }
}

impl SendBatch {
    /// A batch of `slots` buffers of `buf_size` bytes each (both at least 1), GSO on.
    pub fn new(slots: usize, buf_size: usize) -> Self {
        let slots = slots.max(1);
        let buf_size = buf_size.max(1);
        SendBatch {
            buf_size,
            buffers: vec![0; slots * buf_size],
            lens: vec![0; slots],
            destinations: vec![unspecified_addr(); slots],
            names: vec![SockAddr::from(unspecified_addr()); slots],
            // SAFETY: `mmsghdr` and `iovec` are plain C structs for which all-zero bytes is valid.
            iovecs: (0..slots).map(|_| unsafe { mem::zeroed() }).collect(),
            // SAFETY: as above.
            headers: (0..slots).map(|_| unsafe { mem::zeroed() }).collect(),
            controls: vec![ControlBuf::EMPTY; slots],
            spans: vec![Span::default(); slots],
            committed: 0,
            gso: Gso::Unprobed,
            max_gso_segment: usize::MAX,
            gso_messages: 0,
            gso_datagrams: 0,
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

    /// Turns GSO coalescing on (checked against the kernel at the next flush) or off.
    pub fn set_gso(&mut self, enabled: bool) {
        self.gso = if enabled { Gso::Unprobed } else { Gso::Off };
        self.max_gso_segment = usize::MAX;
    }

    /// Whether flushes still coalesce: false once switched off or refused by the kernel.
    pub fn gso_enabled(&self) -> bool {
        self.gso != Gso::Off
    }

    /// GSO messages (runs of more than one datagram) the kernel accepted so far.
    pub fn gso_messages(&self) -> u64 {
        self.gso_messages
    }

    /// Datagrams that went out inside GSO messages so far.
    pub fn gso_datagrams(&self) -> u64 {
        self.gso_datagrams
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
        if self.destinations[self.committed] != dst {
            self.destinations[self.committed] = dst;
            self.names[self.committed] = SockAddr::from(dst);
        }
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
        if count == 0 {
            return report;
        }
        if self.gso == Gso::Unprobed {
            self.gso = probe_gso(socket);
        }
        for i in 0..count {
            self.iovecs[i] = libc::iovec {
                iov_base: self.buffers[i * self.buf_size..].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
        }
        let mut messages = self.build_messages(0, count);
        let mut next = 0;
        while next < messages {
            // SAFETY: headers `next..messages` were built by `build_messages` and point at this
            // batch's own names, iovecs, control buffers and slot buffers, all alive and unmoved
            // during the call.
            let rc = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers[next..].as_mut_ptr(),
                    (messages - next) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                let accepted = rc as usize;
                for span in &self.spans[next..next + accepted] {
                    report.sent += span.count;
                    report.sent_bytes += self.lens[span.first..span.first + span.count].iter().sum::<usize>();
                    if span.count > 1 {
                        self.gso_messages += 1;
                        self.gso_datagrams += span.count as u64;
                    }
                }
                next += accepted;
                continue;
            }
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            let span = self.spans[next];
            match errno {
                libc::EINTR => {}
                // The socket buffer is full: the rest of the batch would fail the same way.
                libc::EAGAIN | libc::ENOBUFS => {
                    report.dropped += count - span.first;
                    break;
                }
                // Segmentation itself was refused: rebuild the unsent rest without it.
                _ if span.count > 1 && self.refuse_gso(errno, self.lens[span.first]) => {
                    messages = self.build_messages(span.first, count);
                    next = 0;
                }
                // Anything else concerns the first message only (refused, unreachable, too big).
                _ => {
                    report.dropped += span.count;
                    next += 1;
                }
            }
        }
        report
    }

    /// Lays out `sendmmsg` messages for datagrams `first..count` from the start of `headers`
    /// and returns how many there are. The iovecs must already describe the datagrams.
    fn build_messages(&mut self, first: usize, count: usize) -> usize {
        let mut message = 0;
        let mut datagram = first;
        while datagram < count {
            let run = if self.gso == Gso::On {
                gso_run(
                    &self.lens[datagram..count],
                    &self.destinations[datagram..count],
                    self.max_gso_segment,
                )
            } else {
                1
            };
            let header = &mut self.headers[message].msg_hdr;
            header.msg_name = self.names[datagram].as_ptr() as *mut libc::c_void;
            header.msg_namelen = self.names[datagram].len();
            header.msg_iov = self.iovecs[datagram..].as_mut_ptr();
            header.msg_iovlen = run;
            header.msg_flags = 0;
            if run > 1 {
                write_segment_size(header, &mut self.controls[message], self.lens[datagram]);
            } else {
                header.msg_control = ptr::null_mut();
                header.msg_controllen = 0;
            }
            self.headers[message].msg_len = 0;
            self.spans[message] = Span {
                first: datagram,
                count: run,
            };
            message += 1;
            datagram += run;
        }
        message
    }

    /// Reacts to the kernel refusing a GSO message of `segment`-byte datagrams with `errno`;
    /// returns whether the refusal concerned segmentation (so a resend without it can work).
    fn refuse_gso(&mut self, errno: i32, segment: usize) -> bool {
        match errno {
            // No UDP GSO for this kernel, socket (e.g. checksums off) or path (e.g. IPsec).
            libc::EIO | libc::EINVAL | libc::ENOPROTOOPT => {
                tracing::warn!(
                    errno,
                    "the kernel refused UDP segmentation offload; sending datagram by datagram"
                );
                self.gso = Gso::Off;
                true
            }
            // A segment larger than the path MTU: only smaller segments can be coalesced.
            libc::EMSGSIZE => {
                tracing::debug!(
                    segment,
                    "UDP segment larger than the path MTU; sending such datagrams one by one"
                );
                self.max_gso_segment = segment - 1;
                true
            }
            _ => false,
        }
    }
}

/// How many datagrams from the start of `lens`/`destinations` one GSO message can carry: the
/// first and every following datagram to the same destination with the same length, plus one
/// shorter (non-empty) last, at most [`MAX_GSO_SEGMENTS`] and one maximal UDP datagram of
/// payload in all. 1 means "send the first datagram on its own".
fn gso_run(lens: &[usize], destinations: &[SocketAddr], max_segment: usize) -> usize {
    let (Some(&segment), Some(destination)) = (lens.first(), destinations.first()) else {
        return 0;
    };
    if segment == 0 || segment > max_segment {
        return 1;
    }
    let max_bytes = max_udp_payload(destination);
    let max_count = MAX_GSO_SEGMENTS.min(lens.len());
    let (mut run, mut total) = (1, segment);
    while run < max_count && destinations[run] == *destination {
        let len = lens[run];
        if len == 0 || len > segment || total + len > max_bytes {
            break;
        }
        run += 1;
        total += len;
        if len < segment {
            break;
        }
    }
    run
}

/// The largest UDP payload one datagram to `destination` may carry.
fn max_udp_payload(destination: &SocketAddr) -> usize {
    match destination {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => MAX_UDP_PAYLOAD_V6,
        _ => MAX_UDP_PAYLOAD_V4,
    }
}

/// Attaches a `SOL_UDP`/`UDP_SEGMENT` control message of `segment` bytes to `header`.
fn write_segment_size(header: &mut libc::msghdr, control: &mut ControlBuf, segment: usize) {
    const VALUE_LEN: libc::c_uint = mem::size_of::<u16>() as libc::c_uint;
    // SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic on a constant.
    let (space, len) = unsafe { (libc::CMSG_SPACE(VALUE_LEN), libc::CMSG_LEN(VALUE_LEN)) };
    header.msg_control = control.0.as_mut_ptr().cast();
    header.msg_controllen = space as _;
    // SAFETY: the control buffer is aligned for `cmsghdr` and longer than `space`, so the first
    // header and its two data bytes lie inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(header);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = len as _;
        // A run's segment is at most one maximal UDP payload, so it fits in u16.
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment as u16);
    }
}

/// Whether the kernel knows UDP GSO: `UDP_SEGMENT` is a socket option on every kernel that
/// accepts it as a control message (Linux 4.18 and later).
fn probe_gso(socket: &UdpSocket) -> Gso {
    match get_udp_option(socket, libc::UDP_SEGMENT) {
        Ok(_) => Gso::On,
        Err(err) => {
            tracing::info!(error = %err, "no UDP segmentation offload in this kernel; sending datagram by datagram");
            Gso::Off
        }
    }
}

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
        recv_counting_messages(socket, batch, want).0
    }

    /// As [`recv_all`], also counting the kernel messages the datagrams came in.
    fn recv_counting_messages(
        socket: &UdpSocket,
        batch: &mut RecvBatch,
        want: usize,
    ) -> (Vec<(Vec<u8>, SocketAddr)>, usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut got, mut messages) = (Vec::new(), 0);
        while got.len() < want && Instant::now() < deadline {
            poll_readable([socket], Duration::from_millis(100)).unwrap();
            let n = batch.recv(socket).unwrap();
            assert_eq!(n, batch.len());
            messages += batch.messages();
            for i in 0..n {
                assert!(!batch.truncated(i));
                let (data, src) = batch.get(i);
                got.push((data.to_vec(), src));
            }
        }
        (got, messages)
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

    /// A datagram of `len` bytes (at least 3) saying who sent it (`tag`) and in which order.
    fn tagged(tag: u8, seq: u16, len: usize) -> Vec<u8> {
        let mut data: Vec<u8> = (0..len).map(|b| (b as u8).wrapping_mul(31) ^ tag).collect();
        data[0] = tag;
        data[1..3].copy_from_slice(&seq.to_be_bytes());
        data
    }

    /// A plain socket without GRO, as any non-braid peer would have.
    fn plain_receiver(ip: IpAddr) -> UdpSocket {
        let socket = UdpSocket::bind(loopback(ip)).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(!gro_enabled(&socket).unwrap());
        socket
    }

    fn gro_receiver(ip: IpAddr) -> UdpSocket {
        let (socket, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
        assert!(gro_enabled(&socket).unwrap(), "this kernel should have UDP_GRO");
        socket
    }

    fn plain_recv_all(socket: &UdpSocket, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0; 65_536];
        (0..want)
            .map(|_| {
                let (n, src) = socket.recv_from(&mut buf).unwrap();
                (buf[..n].to_vec(), src)
            })
            .collect()
    }

    /// Queues every datagram in `datagrams` for `dst` and flushes; asserts nothing was lost.
    fn send_all(batch: &mut SendBatch, socket: &UdpSocket, datagrams: &[(Vec<u8>, SocketAddr)]) {
        for (data, dst) in datagrams {
            assert!(batch.push(data, *dst));
        }
        let report = batch.flush(socket);
        let bytes: usize = datagrams.iter().map(|(d, _)| d.len()).sum();
        assert_eq!(
            report,
            SendReport {
                sent: datagrams.len(),
                sent_bytes: bytes,
                dropped: 0
            }
        );
    }

    fn equal_run_is_one_gso_message_and_arrives_whole(ip: IpAddr) {
        let (sender, _) = bind_data_socket(loopback(ip), 1 << 20).unwrap();
        let source = sender.local_addr().unwrap();
        let mut batch = SendBatch::new(64, 2048);
        let mut recv = RecvBatch::new(64, 2048);

        let gro = gro_receiver(ip);
        let to_gro: Vec<_> = (0..64)
            .map(|i| (tagged(1, i, 1000), gro.local_addr().unwrap()))
            .collect();
        send_all(&mut batch, &sender, &to_gro);
        assert_eq!((batch.gso_messages(), batch.gso_datagrams()), (1, 64));
        let (got, messages) = recv_counting_messages(&gro, &mut recv, 64);
        let expected: Vec<_> = to_gro.iter().map(|(d, _)| (d.clone(), source)).collect();
        assert_eq!(got, expected, "64 intact datagrams, in order, from the sender");
        assert_eq!(messages, 1, "the GSO train stays one message up to the GRO socket");
        assert_eq!(recv.coalesced_messages(), 1);

        let plain = plain_receiver(ip);
        let to_plain: Vec<_> = (0..64)
            .map(|i| (tagged(2, i, 1000), plain.local_addr().unwrap()))
            .collect();
        send_all(&mut batch, &sender, &to_plain);
        assert_eq!((batch.gso_messages(), batch.gso_datagrams()), (2, 128));
        let expected: Vec<_> = to_plain.iter().map(|(d, _)| (d.clone(), source)).collect();
        assert_eq!(plain_recv_all(&plain, 64), expected);
    }

    #[test]
    fn equal_run_is_one_gso_message_over_ipv4() {
        equal_run_is_one_gso_message_and_arrives_whole(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn equal_run_is_one_gso_message_over_ipv6() {
        equal_run_is_one_gso_message_and_arrives_whole(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn mixed_sizes_and_destinations_arrive_in_order_per_destination() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (sender, _) = bind_data_socket(loopback(ip), 1 << 20).unwrap();
        let (gro, plain) = (gro_receiver(ip), plain_receiver(ip));
        let (a, b) = (gro.local_addr().unwrap(), plain.local_addr().unwrap());
        // (destination, length): runs of 5, 3, 4 + a shorter last and 2 + a shorter last coalesce;
        // the rest go alone.
        let plan: Vec<(SocketAddr, usize)> = [(a, 800); 5]
            .into_iter()
            .chain([(b, 600); 3])
            .chain([(a, 800); 4])
            .chain([(a, 300), (b, 600), (a, 1200), (a, 1200), (a, 50), (b, 3), (a, 900)])
            .collect();
        let datagrams: Vec<_> = plan
            .iter()
            .enumerate()
            .map(|(i, &(dst, len))| (tagged(u8::from(dst == a), i as u16, len), dst))
            .collect();
        let mut batch = SendBatch::new(32, 2048);
        send_all(&mut batch, &sender, &datagrams);
        assert_eq!((batch.gso_messages(), batch.gso_datagrams()), (4, 5 + 3 + 5 + 3));

        let source = sender.local_addr().unwrap();
        let for_dst = |dst| -> Vec<_> {
            datagrams
                .iter()
                .filter(|(_, d)| *d == dst)
                .map(|(data, _)| (data.clone(), source))
                .collect()
        };
        let (to_a, to_b) = (for_dst(a), for_dst(b));
        let mut recv = RecvBatch::new(8, 2048);
        assert_eq!(recv_all(&gro, &mut recv, to_a.len()), to_a);
        assert_eq!(plain_recv_all(&plain, to_b.len()), to_b);
    }

    #[test]
    fn runs_longer_than_the_segment_cap_are_split() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (sender, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
        let gro = gro_receiver(ip);
        let dst = gro.local_addr().unwrap();
        let datagrams: Vec<_> = (0..100).map(|i| (tagged(3, i, 500), dst)).collect();
        let mut batch = SendBatch::new(100, 600);
        send_all(&mut batch, &sender, &datagrams);
        assert_eq!((batch.gso_messages(), batch.gso_datagrams()), (2, 100), "64 + 36");

        let mut recv = RecvBatch::new(16, 2048);
        let (got, messages) = recv_counting_messages(&gro, &mut recv, 100);
        let data: Vec<_> = got.into_iter().map(|(d, _)| d).collect();
        assert_eq!(data, datagrams.into_iter().map(|(d, _)| d).collect::<Vec<_>>());
        assert_eq!(messages, 2);
    }

    /// 43 segments of 1489 bytes fill an IPv4 datagram up to 64027 bytes, 44 an IPv6 one up to
    /// 65516: a run that ends with a shorter segment can use the last bytes exactly.
    fn runs_fill_the_largest_datagram_exactly(ip: IpAddr, max_payload: usize) {
        let (sender, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
        let gro = gro_receiver(ip);
        let dst = gro.local_addr().unwrap();
        let segments = max_payload / 1489;
        let last = max_payload - segments * 1489;
        let mut datagrams: Vec<_> = (0..segments as u16).map(|i| (tagged(4, i, 1489), dst)).collect();
        datagrams.push((tagged(4, segments as u16, last), dst));
        // One byte more no longer fits: the run closes before it.
        datagrams.push((tagged(4, 99, 1489), dst));
        let mut batch = SendBatch::new(64, 1500);
        send_all(&mut batch, &sender, &datagrams);
        assert_eq!(
            (batch.gso_messages(), batch.gso_datagrams()),
            (1, segments as u64 + 1),
            "the kernel took a GSO message of exactly {max_payload} bytes"
        );
        let mut recv = RecvBatch::new(16, 2048);
        let got: Vec<_> = recv_all(&gro, &mut recv, datagrams.len())
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(got, datagrams.into_iter().map(|(d, _)| d).collect::<Vec<_>>());
    }

    #[test]
    fn runs_fill_the_largest_ipv4_datagram_exactly() {
        runs_fill_the_largest_datagram_exactly(IpAddr::V4(Ipv4Addr::LOCALHOST), MAX_UDP_PAYLOAD_V4);
    }

    #[test]
    fn runs_fill_the_largest_ipv6_datagram_exactly() {
        runs_fill_the_largest_datagram_exactly(IpAddr::V6(Ipv6Addr::LOCALHOST), MAX_UDP_PAYLOAD_V6);
    }

    #[test]
    fn full_size_datagrams_are_split_by_the_byte_cap() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (sender, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
        let plain = plain_receiver(ip);
        let dst = plain.local_addr().unwrap();
        let datagrams: Vec<_> = (0..64).map(|i| (tagged(5, i, 1400), dst)).collect();
        let mut batch = SendBatch::new(64, 1400);
        send_all(&mut batch, &sender, &datagrams);
        assert_eq!(batch.gso_messages(), 2, "46 + 18 datagrams of 1400 bytes");
        let got: Vec<_> = plain_recv_all(&plain, 64).into_iter().map(|(d, _)| d).collect();
        assert_eq!(got, datagrams.into_iter().map(|(d, _)| d).collect::<Vec<_>>());
    }

    #[test]
    fn gro_messages_split_into_datagrams_with_their_source() {
        let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let gro = gro_receiver(ip);
        let dst = gro.local_addr().unwrap();
        let senders: Vec<UdpSocket> = (0..2)
            .map(|_| bind_data_socket(loopback(ip), 1 << 20).unwrap().0)
            .collect();
        let mut expected = Vec::new();
        for (tag, sender) in senders.iter().enumerate() {
            // Ten of 700 bytes then a shorter last of 123.
            let mut datagrams: Vec<_> = (0..10).map(|i| (tagged(tag as u8, i, 700), dst)).collect();
            datagrams.push((tagged(tag as u8, 10, 123), dst));
            let mut batch = SendBatch::new(16, 1024);
            send_all(&mut batch, sender, &datagrams);
            assert_eq!(batch.gso_messages(), 1);
            let source = sender.local_addr().unwrap();
            expected.extend(datagrams.into_iter().map(|(d, _)| (d, source)));
        }

        let mut recv = RecvBatch::new(8, 2048);
        let (got, messages) = recv_counting_messages(&gro, &mut recv, 22);
        assert_eq!(got, expected);
        assert_eq!(messages, 2);
        assert_eq!(got[10].0.len(), 123);
        assert_eq!(recv.overflow_drops(), 0);
    }

    #[test]
    fn segments_longer_than_buf_size_are_flagged_truncated() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let gro = gro_receiver(ip);
        let (sender, _) = bind_data_socket(loopback(ip), 1 << 20).unwrap();
        let dst = gro.local_addr().unwrap();
        let mut batch = SendBatch::new(8, 1024);
        let datagrams: Vec<_> = (0..3).map(|i| (tagged(6, i, 700), dst)).collect();
        send_all(&mut batch, &sender, &datagrams);

        let mut recv = RecvBatch::new(4, 500);
        poll_readable([&gro], Duration::from_secs(2)).unwrap();
        assert_eq!(recv.recv(&gro).unwrap(), 3);
        assert_eq!(recv.messages(), 1);
        for (i, (data, _)) in datagrams.iter().enumerate() {
            assert!(recv.truncated(i));
            assert_eq!(recv.get(i).0, &data[..500]);
        }
    }

    #[test]
    fn refused_segmentation_falls_back_without_loss() {
        // With UDP checksums off (SO_NO_CHECK, 11 on common architectures) the kernel refuses
        // GSO with EINVAL.
        const SO_NO_CHECK: libc::c_int = 11;
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (sender, _) = bind_data_socket(loopback(ip), 1 << 20).unwrap();
        let one: libc::c_int = 1;
        // SAFETY: `one` is a live c_int and its size is passed alongside.
        let rc = unsafe {
            libc::setsockopt(
                sender.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NO_CHECK,
                (&one as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let plain = plain_receiver(ip);
        let dst = plain.local_addr().unwrap();
        let datagrams: Vec<_> = (0..40)
            .map(|i| (tagged(7, i, if i < 20 { 3 } else { 1000 }), dst))
            .collect();
        let mut batch = SendBatch::new(40, 1024);
        assert!(batch.gso_enabled());
        send_all(&mut batch, &sender, &datagrams);
        assert!(!batch.gso_enabled(), "the refusal turned GSO off for good");
        assert_eq!(batch.gso_messages(), 0);
        let got: Vec<_> = plain_recv_all(&plain, 40).into_iter().map(|(d, _)| d).collect();
        assert_eq!(got, datagrams.into_iter().map(|(d, _)| d).collect::<Vec<_>>());
    }

    #[test]
    fn gso_can_be_switched_off() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (sender, _) = bind_data_socket(loopback(ip), 1 << 20).unwrap();
        let plain = plain_receiver(ip);
        let dst = plain.local_addr().unwrap();
        let datagrams: Vec<_> = (0..8).map(|i| (tagged(8, i, 100), dst)).collect();
        let mut batch = SendBatch::new(8, 128);
        batch.set_gso(false);
        send_all(&mut batch, &sender, &datagrams);
        assert_eq!(batch.gso_messages(), 0);
        assert_eq!(plain_recv_all(&plain, 8).len(), 8);
        batch.set_gso(true);
        send_all(&mut batch, &sender, &datagrams);
        assert_eq!(batch.gso_messages(), 1);
        assert_eq!(plain_recv_all(&plain, 8).len(), 8);
    }

    #[test]
    fn gso_runs_follow_destination_length_and_caps() {
        let a: SocketAddr = "192.0.2.1:6081".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:6081".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:6081".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:6081".parse().unwrap();
        let run = |lens: &[usize], dsts: &[SocketAddr]| gso_run(lens, dsts, usize::MAX);

        assert_eq!(run(&[], &[]), 0);
        assert_eq!(run(&[100, 100, 100], &[a, a, a]), 3);
        assert_eq!(run(&[100, 100, 100], &[a, b, a]), 1, "another destination ends the run");
        assert_eq!(run(&[100, 100, 50, 50], &[a; 4]), 3, "a shorter datagram ends it");
        assert_eq!(run(&[100, 100, 150], &[a; 3]), 2, "a longer one is not part of it");
        assert_eq!(run(&[100, 0, 100], &[a; 3]), 1, "an empty datagram cannot be a segment");
        assert_eq!(run(&[0, 0], &[a; 2]), 1);
        assert_eq!(run(&[10; 100], &[a; 100]), MAX_GSO_SEGMENTS);
        assert_eq!(run(&[1489; 64], &[a; 64]), 43, "65507 bytes over IPv4");
        assert_eq!(run(&[1489; 64], &[mapped; 64]), 43, "IPv4-mapped addresses are IPv4");
        assert_eq!(run(&[1489; 64], &[v6; 64]), 44, "65527 bytes over IPv6");
        let mut lens = [1489; 45];
        lens[43] = MAX_UDP_PAYLOAD_V4 - 43 * 1489;
        assert_eq!(run(&lens, &[a; 45]), 44, "a shorter last may fill the datagram exactly");
        lens[43] += 1;
        assert_eq!(run(&lens, &[a; 45]), 43, "but not overfill it");
        assert_eq!(gso_run(&[1400, 1400], &[a; 2], 1399), 1, "above the MTU ceiling");
        assert_eq!(gso_run(&[1400, 1400], &[a; 2], 1400), 2);
    }

    #[test]
    fn messages_split_into_segments() {
        let split = |len, segment_size, max_datagram, message_truncated| -> Vec<(usize, usize, bool)> {
            Segments {
                len,
                segment_size,
                max_datagram,
                message_truncated,
                offset: 0,
            }
            .collect()
        };
        assert_eq!(split(300, 0, 2048, false), [(0, 300, false)], "no GRO: one datagram");
        assert_eq!(split(0, 0, 2048, false), [(0, 0, false)], "an empty datagram counts");
        assert_eq!(split(3000, 0, 2048, false), [(0, 2048, true)]);
        assert_eq!(split(100, 0, 2048, true), [(0, 100, true)], "the kernel truncated it");
        assert_eq!(
            split(2500, 1000, 2048, false),
            [(0, 1000, false), (1000, 1000, false), (2000, 500, false)]
        );
        assert_eq!(split(2000, 1000, 2048, false), [(0, 1000, false), (1000, 1000, false)]);
        assert_eq!(split(1500, 1000, 600, false), [(0, 600, true), (1000, 500, false)]);
        assert_eq!(split(1500, 1000, 2048, true), [(0, 1000, false), (1000, 500, true)]);
        assert_eq!(split(500, 1000, 2048, false), [(0, 500, false)], "one short segment");
    }

    /// Datagrams per second of 1400 bytes over IPv4 loopback, with and without offload. A
    /// measurement, not a check: `cargo test -p braid-core --release -- --ignored
    /// offload_throughput --nocapture`.
    #[test]
    #[ignore = "measurement; run in release mode with --ignored --nocapture"]
    fn offload_throughput() {
        for (gso, gro) in [(false, false), (true, false), (true, true)] {
            let (sent, received) = measure_loopback(gso, gro, Duration::from_secs(2));
            println!(
                "GSO {:>3}, GRO {:>3}: sent {:>9.0} datagrams/s, received {:>9.0} datagrams/s ({:.2} Gbit/s)",
                if gso { "on" } else { "off" },
                if gro { "on" } else { "off" },
                sent,
                received,
                received * 1400.0 * 8.0 / 1e9
            );
        }
    }

    /// Sends 1400-byte datagrams from a blocking socket for `duration` while another thread
    /// receives them; returns datagrams per second sent and received.
    fn measure_loopback(gso: bool, gro: bool, duration: Duration) -> (f64, f64) {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;

        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (receiver, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
        set_gro(&receiver, gro).unwrap();
        let (sender, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
        sender.set_nonblocking(false).unwrap();
        let dst = receiver.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let counting = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut recv = RecvBatch::new(64, 2048);
                let mut received = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if poll_readable([&receiver], Duration::from_millis(50)).unwrap()[0] {
                        received += recv.recv(&receiver).unwrap() as u64;
                    }
                }
                received
            })
        };
        let mut batch = SendBatch::new(64, 1400);
        batch.set_gso(gso);
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < duration {
            while let Some(buf) = batch.next_buf() {
                buf.fill(0x5a);
                batch.commit(1400, dst);
            }
            sent += batch.flush(&sender).sent as u64;
        }
        let elapsed = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        let received = counting.join().unwrap();
        (sent as f64 / elapsed, received as f64 / elapsed)
    }
}
