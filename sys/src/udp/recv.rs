//! Receiving: [`RecvBatch`] fills 64 KiB message buffers with one `recvmmsg(2)` call and
//! splits every message, GRO train or single datagram, into datagrams through an index
//! preallocated at construction.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::ptr;

use socket2::SockAddr;

use super::cmsg::{gro_segment_size, ControlBuf};
use super::{unspecified_addr, GRO_MESSAGE_BYTES, MAX_SEGMENTS_PER_MESSAGE, RECV_BUFFER_BUDGET};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
