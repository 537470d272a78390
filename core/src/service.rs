//! Telling the service manager how a daemon is doing: the `sd_notify` protocol.
//!
//! Design: a daemon's data threads and control thread each hold a [`Progress`] marker and mark
//! it once per round of their loop (every round ends within about 100 ms even when idle). The
//! daemon's main thread owns the [`ServiceNotifier`] and, in its status loop, asks
//! [`ServiceNotifier::tick`] to feed the watchdog only when every marker is fresh
//! ([`Progress::stalled`]): a wedged data thread stops its marks, the pings stop, and systemd's
//! `WatchdogSec=` restarts the daemon. No thread exists just to ping, so nothing keeps feeding
//! the watchdog while the data path is stuck.
//!
//! Messages: `READY=1` once the daemon serves (sockets bound, TUN up, first round of every
//! thread done), `STATUS=` a one-line summary whenever it changes, `WATCHDOG=1` at half the
//! interval systemd asks for in `WATCHDOG_USEC` (only if `WATCHDOG_PID` is unset or names this
//! process), `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` (not under systemd) every call
//! does nothing. The datagrams go through the `sd-notify` crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// A thread whose rounds come at most every 100 ms and that has not finished one for this long
/// is wedged. A thread with a slower round (a heartbeat period) gets three of its periods.
pub const STALL_AFTER: Duration = Duration::from_secs(1);

/// Environment variables of the protocol, removed from the environment of a child process so
/// it never speaks for its parent.
pub const NOTIFY_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// When one thread last finished a round of its loop. Cloning shares the marker.
#[derive(Clone, Debug)]
pub struct Progress {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last mark, plus one; 0: never marked.
    last: Arc<AtomicU64>,
    stall_after: Duration,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    /// A marker not yet marked, for a thread whose rounds end every 100 ms or sooner.
    pub fn new() -> Self {
        Progress::every(Duration::ZERO)
    }

    /// A marker for a thread that marks once per `period`: stalled after three periods
    /// (at least [`STALL_AFTER`]).
    pub fn every(period: Duration) -> Self {
        Progress {
            epoch: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            stall_after: STALL_AFTER.max(period.saturating_mul(3)),
        }
    }

    /// Records that the thread finished a round just now.
    pub fn mark(&self) {
        let millis = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last.store(millis + 1, Ordering::Relaxed);
    }

    /// Whether the thread has finished a round at all.
    pub fn started(&self) -> bool {
        self.last.load(Ordering::Relaxed) != 0
    }

    /// How long ago the last round finished (`None` before the first).
    pub fn age(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            last => Some(self.epoch.elapsed().saturating_sub(Duration::from_millis(last - 1))),
        }
    }

    /// Whether the thread has not finished a round for longer than its limit (or never).
    pub fn stalled(&self) -> bool {
        self.age().is_none_or(|age| age > self.stall_after)
    }
}

/// Whether every marker in `markers` is fresh.
pub fn all_progressing<'a>(markers: impl IntoIterator<Item = &'a Progress>) -> bool {
    markers.into_iter().all(|p| !p.stalled())
}

/// Whether every marker in `markers` has been marked once.
pub fn all_started<'a>(markers: impl IntoIterator<Item = &'a Progress>) -> bool {
    markers.into_iter().all(Progress::started)
}

/// The daemon's side of `sd_notify`. Owned by the main thread.
#[derive(Debug)]
pub struct ServiceNotifier {
    /// Half of `WATCHDOG_USEC`, when systemd asked for watchdog pings.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    status: String,
    ready: bool,
}

impl ServiceNotifier {
    /// Reads `WATCHDOG_USEC`/`WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        ServiceNotifier {
            ping_every: sd_notify::watchdog_enabled().map(|interval| interval / 2),
            last_ping: None,
            status: String::new(),
            ready: false,
        }
    }

    /// How often the watchdog wants a ping (half its interval), if it is on.
    pub fn ping_every(&self) -> Option<Duration> {
        self.ping_every
    }

    /// The longest a status loop may sleep between [`ServiceNotifier::tick`] calls: `period`,
    /// shortened so watchdog pings keep their pace.
    pub fn loop_period(&self, period: Duration) -> Duration {
        match self.ping_every {
            Some(ping) => period.min(ping / 2).max(Duration::from_millis(1)),
            None => period,
        }
    }

    /// Sends `READY=1` with a status line, once.
    pub fn ready(&mut self, status: &str) {
        if !self.ready {
            self.ready = true;
            self.status = status.to_string();
            send(&[NotifyState::Ready, NotifyState::Status(status)]);
        }
    }

    /// Whether `READY=1` was sent.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Sends `STATUS=` when the line differs from the last one sent.
    pub fn status(&mut self, status: &str) {
        if self.status != status {
            self.status = status.to_string();
            send(&[NotifyState::Status(status)]);
        }
    }

    /// Feeds the watchdog if it is due and the daemon is `healthy` (after `READY=1` only).
    /// Returns whether it sent a ping.
    pub fn tick(&mut self, healthy: bool) -> bool {
        let Some(every) = self.ping_every else { return false };
        let due = self.last_ping.is_none_or(|last| last.elapsed() >= every);
        if !self.ready || !healthy || !due {
            return false;
        }
        self.last_ping = Some(Instant::now());
        send(&[NotifyState::Watchdog]);
        true
    }

    /// Sends `STOPPING=1`.
    pub fn stopping(&mut self, status: &str) {
        send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }
}

/// The service manager's end of the protocol: a unix datagram socket that collects the
/// messages a daemon started with `NOTIFY_SOCKET` pointing to it sends, each with its arrival
/// time. For tests and for tools that supervise a daemon the way systemd does.
#[derive(Debug)]
pub struct NotifyListener {
    socket: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifyListener {
    /// Binds the socket at `path` (removing a stale one).
    pub fn bind(path: impl Into<std::path::PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let _ = std::fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path)?;
        Ok(NotifyListener { socket, path })
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The next message's lines, or `None` when none arrives within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<(Instant, Vec<String>)> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .ok()?;
        let mut buf = [0u8; 4096];
        let len = self.socket.recv(&mut buf).ok()?;
        let lines = String::from_utf8_lossy(&buf[..len])
            .lines()
            .map(str::to_string)
            .collect();
        Some((Instant::now(), lines))
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn send(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_stalled_until_marked_and_again_after_a_quiet_second() {
        let progress = Progress::new();
        assert!(!progress.started() && progress.stalled() && progress.age().is_none());
        assert!(!all_started([&progress]));
        progress.mark();
        assert!(progress.started() && !progress.stalled());
        assert!(all_progressing([&progress]) && all_started([&progress]));
        let shared = progress.clone();
        std::thread::sleep(STALL_AFTER + Duration::from_millis(100));
        assert!(progress.stalled(), "age {:?}", progress.age());
        shared.mark();
        assert!(!progress.stalled(), "a clone marks the same marker");
        assert!(!all_progressing([&progress, &Progress::new()]));
        let slow = Progress::every(Duration::from_secs(1));
        slow.mark();
        std::thread::sleep(STALL_AFTER + Duration::from_millis(100));
        assert!(!slow.stalled(), "a 1 s heartbeat thread has three seconds");
    }

    fn watched(every: Duration) -> ServiceNotifier {
        ServiceNotifier {
            ping_every: Some(every),
            last_ping: None,
            status: String::new(),
            ready: false,
        }
    }

    #[test]
    fn the_watchdog_is_fed_only_when_ready_healthy_and_due() {
        let mut notifier = watched(Duration::from_millis(200));
        assert!(!notifier.tick(true), "no ping before READY=1");
        notifier.ready("serving");
        assert!(!notifier.tick(false), "no ping while a thread is stalled");
        assert!(notifier.tick(true));
        assert!(!notifier.tick(true), "not due yet");
        std::thread::sleep(Duration::from_millis(220));
        assert!(!notifier.tick(false), "a stalled thread stops the pings");
        assert!(notifier.tick(true));
        notifier.ping_every = None;
        std::thread::sleep(Duration::from_millis(220));
        assert!(!notifier.tick(true), "no watchdog asked for, no pings");
    }

    #[test]
    fn the_loop_wakes_often_enough_for_the_watchdog() {
        let mut notifier = watched(Duration::from_millis(500));
        assert_eq!(notifier.loop_period(Duration::from_secs(1)), Duration::from_millis(250));
        assert_eq!(
            notifier.loop_period(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
        notifier.ping_every = None;
        assert_eq!(notifier.loop_period(Duration::from_secs(1)), Duration::from_secs(1));
    }
}
