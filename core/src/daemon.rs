//! What every braid daemon shares: graceful stop, status files and logging.
//!
//! Design: daemons run their data path on plain OS threads that check a [`StopFlag`] at least
//! every 100 ms, so stopping needs no async runtime and no channel. A flag made by
//! [`StopFlag::from_signals`] is also raised by SIGTERM or SIGINT: the handler
//! ([`braid_sys::signal`]) only stores to a static atomic (async-signal-safe) and is installed
//! with `SA_RESETHAND`, so a second signal falls through to the default action and kills a
//! daemon that is stuck.
//!
//! Status goes to a JSON file that supervisors and the controller read: [`StatusWriter`]
//! replaces it atomically (write a temporary file in the same directory, then `rename(2)`), so a
//! reader never sees a half-written document, and [`run_reporter`] rewrites it on a fixed
//! period until the daemon stops. Logging goes to stderr through `tracing-subscriber`, coloured
//! only when stderr is a terminal and `NO_COLOR` is unset or empty ([`log_colours`]): a journal,
//! a file or a log collector gets plain text without escape codes.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Tells long-running threads to finish. Cloning shares the flag.
#[derive(Clone, Debug, Default)]
pub struct StopFlag {
    requested: Arc<AtomicBool>,
    follows_signals: bool,
}

impl StopFlag {
    /// A flag raised only by [`StopFlag::stop`].
    pub fn new() -> Self {
        StopFlag::default()
    }

    /// A flag also raised by SIGTERM and SIGINT, whose handlers this installs for the process.
    pub fn from_signals() -> io::Result<Self> {
        braid_sys::signal::install_stop_handlers()?;
        Ok(StopFlag {
            requested: Arc::new(AtomicBool::new(false)),
            follows_signals: true,
        })
    }

    /// Raises the flag.
    pub fn stop(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Whether the flag was raised (or, if it follows signals, a stop signal arrived).
    pub fn is_stopped(&self) -> bool {
        self.requested.load(Ordering::Relaxed) || (self.follows_signals && braid_sys::signal::stop_requested())
    }

    /// Sleeps up to `duration`, waking early (within 50 ms) once the flag is raised. Returns
    /// whether the flag is raised.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.is_stopped() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// Writes a JSON status document to a file, replacing it atomically.
#[derive(Debug)]
pub struct StatusWriter {
    path: PathBuf,
    temp_path: PathBuf,
}

impl StatusWriter {
    /// A writer for `path`; its temporary file sits next to it so `rename(2)` stays atomic.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
        temp_name.push(format!(".tmp.{}", std::process::id()));
        let temp_path = path.with_file_name(temp_name);
        StatusWriter { path, temp_path }
    }

    /// The file readers look at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file's contents with `status` (pretty-printed JSON and a newline).
    pub fn write(&self, status: &serde_json::Value) -> io::Result<()> {
        let mut text = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
        text.push(b'\n');
        let mut file = fs::File::create(&self.temp_path)?;
        file.write_all(&text)?;
        file.sync_data()?;
        drop(file);
        fs::rename(&self.temp_path, &self.path)
    }
}

/// At once, then every `period` until `stop` is raised, then once more: calls `each_round` (the
/// daemon's own upkeep, such as its service-manager notifications) and, with a `writer`, writes
/// the result of `status`. Writing at once replaces a previous instance's file (its pid and
/// counters) as soon as a restarted daemon runs; the last write leaves the final counters.
/// Write failures are logged once per run of failures, never fatal.
pub fn run_reporter(
    writer: Option<&StatusWriter>,
    period: Duration,
    stop: &StopFlag,
    mut status: impl FnMut() -> serde_json::Value,
    mut each_round: impl FnMut(),
) {
    let mut failing = false;
    let mut stopping = false;
    loop {
        each_round();
        if let Some(writer) = writer {
            match writer.write(&status()) {
                Ok(()) => failing = false,
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(path = %writer.path().display(), error = %err, "cannot write status file");
                }
                Err(_) => {}
            }
        }
        if stopping {
            return;
        }
        stopping = stop.sleep(period);
    }
}

/// Whether logs get ANSI colours: only on a terminal, and never when `NO_COLOR` is set to a
/// non-empty value (<https://no-color.org>).
pub fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Sends logs to stderr, coloured only as [`log_colours`] allows. `RUST_LOG` (e.g.
/// `braid_gw=debug,info`) wins when set; otherwise `verbosity` picks the level: 0 → info,
/// 1 → debug, 2 or more → trace.
pub fn init_logging(verbosity: u8) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let default_level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // A second initialisation (tests, embedding) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(log_colours(
            io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ScratchDir;

    fn temp_dir(name: &str) -> ScratchDir {
        ScratchDir::new(&format!("daemon-{name}"))
    }

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some(OsStr::new(""))), "an empty NO_COLOR is unset");
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(!log_colours(false, None));
        assert!(!log_colours(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn stop_flag_is_shared_by_clones_and_wakes_sleepers() {
        let flag = StopFlag::new();
        let clone = flag.clone();
        assert!(!clone.is_stopped());
        let sleeper = thread::spawn(move || {
            let start = Instant::now();
            (clone.sleep(Duration::from_secs(10)), start.elapsed())
        });
        thread::sleep(Duration::from_millis(20));
        flag.stop();
        let (stopped, slept) = sleeper.join().unwrap();
        assert!(stopped);
        assert!(slept < Duration::from_secs(2));
        assert!(!StopFlag::new().sleep(Duration::from_millis(1)));
    }

    #[test]
    fn sigterm_raises_a_signal_following_flag() {
        let independent = StopFlag::new();
        let flag = StopFlag::from_signals().unwrap();
        assert!(!flag.is_stopped());
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM).unwrap();
        // A process-directed signal may be handled by another thread of the test harness.
        assert!(flag.sleep(Duration::from_secs(5)));
        assert!(!independent.is_stopped(), "plain flags ignore signals");
    }

    #[test]
    fn status_writer_replaces_the_file_whole() {
        let dir = temp_dir("status");
        let writer = StatusWriter::new(dir.join("gw.json"));
        writer.write(&serde_json::json!({"n": 1})).unwrap();
        writer.write(&serde_json::json!({"n": 2, "role": "gw"})).unwrap();
        let read: serde_json::Value = serde_json::from_str(&fs::read_to_string(writer.path()).unwrap()).unwrap();
        assert_eq!(read, serde_json::json!({"n": 2, "role": "gw"}));
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn reporter_writes_at_once_not_after_a_period() {
        let dir = temp_dir("reporter-at-once");
        let writer = StatusWriter::new(dir.join("s.json"));
        let stop = StopFlag::new();
        let stopper = stop.clone();
        let path = writer.path().to_path_buf();
        let watcher = thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !path.exists() && std::time::Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            let written = path.exists();
            stopper.stop();
            written
        });
        run_reporter(
            Some(&writer),
            Duration::from_secs(3600),
            &stop,
            || serde_json::json!({}),
            || {},
        );
        assert!(
            watcher.join().unwrap(),
            "no status file within 5 s of start with a one-hour period"
        );
    }

    #[test]
    fn reporter_writes_periodically_and_once_more_on_stop() {
        let dir = temp_dir("reporter");
        let writer = StatusWriter::new(dir.join("s.json"));
        let stop = StopFlag::new();
        let stopper = stop.clone();
        let mut calls = 0u32;
        let mut rounds = 0u32;
        let handle = thread::spawn(move || {
            thread::sleep(Duration::from_millis(120));
            stopper.stop();
        });
        run_reporter(
            Some(&writer),
            Duration::from_millis(30),
            &stop,
            || {
                calls += 1;
                serde_json::json!({ "calls": calls })
            },
            || rounds += 1,
        );
        handle.join().unwrap();
        assert!(calls >= 3, "wrote {calls} times");
        assert_eq!(rounds, calls, "one round per write");
        let read: serde_json::Value = serde_json::from_str(&fs::read_to_string(writer.path()).unwrap()).unwrap();
        assert_eq!(read["calls"], calls);
    }
}
