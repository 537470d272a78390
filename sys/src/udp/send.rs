//! Sending: [`SendBatch`] holds datagrams written in place, cuts them into GSO runs (same
//! destination, same length, a shorter last) and sends them with one `sendmmsg(2)` call,
//! falling back to datagram-by-datagram sending where the kernel refuses segmentation.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::ptr;

use socket2::SockAddr;

use super::cmsg::{write_segment_size, ControlBuf};
use super::{get_udp_option, unspecified_addr, MAX_GSO_SEGMENTS, MAX_UDP_PAYLOAD_V4, MAX_UDP_PAYLOAD_V6};

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
    /// Send order: slot indices grouped by destination (see [`SendBatch::flush`]).
    order: Vec<usize>,
    placed: Vec<bool>,
    /// Lengths and destinations in send order.
    sorted_lens: Vec<usize>,
    sorted_destinations: Vec<SocketAddr>,
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
            order: Vec::with_capacity(slots),
            placed: vec![false; slots],
            sorted_lens: vec![0; slots],
            sorted_destinations: vec![unspecified_addr(); slots],
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
    ///
    /// The datagrams go out grouped by destination, each destination's in the order they were
    /// committed (a stable grouping): a batch that alternates between gateways still makes one
    /// long GSO run per gateway, and nothing is reordered towards any one destination.
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
        self.group_by_destination(count);
        for (position, &slot) in self.order.iter().enumerate() {
            self.iovecs[position] = libc::iovec {
                iov_base: self.buffers[slot * self.buf_size..].as_mut_ptr().cast(),
                iov_len: self.lens[slot],
            };
            self.sorted_lens[position] = self.lens[slot];
            self.sorted_destinations[position] = self.destinations[slot];
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
                    report.sent_bytes += self.sorted_lens[span.first..span.first + span.count]
                        .iter()
                        .sum::<usize>();
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
                _ if span.count > 1 && self.refuse_gso(errno, self.sorted_lens[span.first]) => {
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

    /// Fills `order` with slots `0..count` grouped by destination, stably. Quadratic in the
    /// number of destinations a batch holds, which is small (one per gateway).
    fn group_by_destination(&mut self, count: usize) {
        self.order.clear();
        self.placed[..count].fill(false);
        for first in 0..count {
            if self.placed[first] {
                continue;
            }
            let destination = self.destinations[first];
            for slot in first..count {
                if !self.placed[slot] && self.destinations[slot] == destination {
                    self.placed[slot] = true;
                    self.order.push(slot);
                }
            }
        }
    }

    /// Lays out `sendmmsg` messages for datagrams `first..count` (in send order) from the
    /// start of `headers` and returns how many there are. The iovecs must already describe
    /// the datagrams.
    fn build_messages(&mut self, first: usize, count: usize) -> usize {
        let mut message = 0;
        let mut datagram = first;
        while datagram < count {
            let run = if self.gso == Gso::On {
                gso_run(
                    &self.sorted_lens[datagram..count],
                    &self.sorted_destinations[datagram..count],
                    self.max_gso_segment,
                )
            } else {
                1
            };
            let header = &mut self.headers[message].msg_hdr;
            let name = &self.names[self.order[datagram]];
            header.msg_name = name.as_ptr() as *mut libc::c_void;
            header.msg_namelen = name.len();
            header.msg_iov = self.iovecs[datagram..].as_mut_ptr();
            header.msg_iovlen = run;
            header.msg_flags = 0;
            if run > 1 {
                write_segment_size(header, &mut self.controls[message], self.sorted_lens[datagram]);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
