//! What the controller's listeners (HTTP, the admin socket, the signed admin channel) share to
//! stay answerable under abuse: a cap on connections served at once ([`Slots`]), a deadline on
//! the whole request rather than on each read ([`read_until`]: a client trickling one byte at a
//! time is cut off when the deadline passes, not kept forever by one byte per read timeout),
//! and named refusal counters ([`Tally`]) that `/metrics` exports.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts of refusals by reason. Known reasons are listed up front so they export as 0.
#[derive(Debug, Default)]
pub struct Tally(Mutex<BTreeMap<&'static str, u64>>);

impl Tally {
    /// A tally with every reason in `known` at zero.
    pub fn new(known: &[&'static str]) -> Self {
        Tally(Mutex::new(known.iter().map(|&r| (r, 0)).collect()))
    }

    pub fn count(&self, reason: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Every reason and its count, by reason.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(reason, n)| (reason.to_string(), *n)).collect()
    }

    /// The count of one reason.
    pub fn get(&self, reason: &str) -> u64 {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(reason).copied().unwrap_or(0)
    }
}

/// At most `cap` connections served at once; a [`Slot`] is held while one is.
#[derive(Debug, Clone)]
pub struct Slots {
    busy: Arc<AtomicUsize>,
    cap: usize,
}

/// One connection being served; frees its slot when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Slots {
    pub fn new(cap: usize) -> Self {
        Slots {
            busy: Arc::new(AtomicUsize::new(0)),
            cap,
        }
    }

    /// A slot, or `None` when `cap` connections are already being served.
    pub fn take(&self) -> Option<Slot> {
        self.busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.cap).then_some(n + 1))
            .ok()
            .map(|_| Slot(self.busy.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream whose reads can time out.
pub trait TimedRead: Read {
    fn set_read_deadline_in(&self, left: Duration) -> io::Result<()>;
}

impl TimedRead for TcpStream {
    fn set_read_deadline_in(&self, left: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(left))
    }
}

impl TimedRead for UnixStream {
    fn set_read_deadline_in(&self, left: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(left))
    }
}

/// Why [`read_until`] gave up.
#[derive(Debug)]
pub enum ReadError {
    /// The deadline passed before the request was complete.
    Deadline,
    /// The request grew past its bound.
    TooLarge,
    /// The peer closed before the request was complete.
    Closed,
    Io(io::Error),
}

/// Reads from `stream` until `complete` says the bytes so far are a whole request, at most
/// `max` bytes, all before `deadline` (each read waits only for what is left of it).
pub fn read_until(
    stream: &mut impl TimedRead,
    deadline: Instant,
    max: usize,
    complete: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Deadline);
        }
        stream.set_read_deadline_in(left).map_err(ReadError::Io)?;
        let room = (max + 1 - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(ReadError::Deadline)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        }
        if complete(&buf) {
            return Ok(buf);
        }
        if buf.len() > max {
            return Err(ReadError::TooLarge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_connections_and_free_on_drop() {
        let slots = Slots::new(2);
        let (a, b) = (slots.take().unwrap(), slots.take().unwrap());
        assert!(slots.take().is_none());
        drop(a);
        assert!(slots.take().is_some());
        drop(b);
    }

    #[test]
    fn a_trickling_peer_is_cut_off_at_the_deadline_not_per_read() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            for _ in 0..20 {
                if theirs.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let result = read_until(&mut ours, started + Duration::from_millis(300), 4096, |b| {
            b.ends_with(b"\n")
        });
        assert!(matches!(result, Err(ReadError::Deadline)), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "{:?}",
            started.elapsed()
        );
        drop(ours);
        writer.join().unwrap();
    }

    #[test]
    fn an_oversized_request_is_refused() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        use std::io::Write;
        theirs.write_all(&[b'a'; 300]).unwrap();
        let result = read_until(&mut ours, Instant::now() + Duration::from_secs(1), 100, |b| {
            b.ends_with(b"\n")
        });
        assert!(matches!(result, Err(ReadError::TooLarge)), "{result:?}");
    }
}
