//! Real processes through both kinds of [`Running`]: started here, and adopted by pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::*;
use crate::health::DaemonKey;

/// A daemon whose log and status file would go in `/nonexistent` (for tests that start none).
fn spec(program: &str, args: &[&str]) -> DaemonSpec {
    spec_in(Path::new("/nonexistent"), program, args)
}

fn spec_in(dir: &Path, program: &str, args: &[&str]) -> DaemonSpec {
    DaemonSpec {
        key: DaemonKey::demux(0),
        site: "a".into(),
        program: PathBuf::from(program),
        args: args.iter().map(|a| a.to_string()).collect(),
        netns: None,
        log: dir.join("daemon.log"),
        status_file: dir.join("daemon.status"),
    }
}

/// `sleep` with an argument no other test uses, so its command line is its own. Returns once
/// `/proc` shows that command line: `spawn` can return while the new program is still being
/// loaded, its command line still empty (daemons are adopted long after that).
fn sleeper(seconds: &str) -> Child {
    let child = Command::new("sleep").arg(seconds).spawn().unwrap();
    let path = format!("/proc/{}/cmdline", child.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read(&path)
        .unwrap_or_default()
        .ends_with(format!("{seconds}\0").as_bytes())
    {
        assert!(
            Instant::now() < deadline,
            "sleep {seconds} never showed its command line"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child
}

fn exits_within(r: &mut Running, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if r.has_exited() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The state letter of `/proc/<pid>/stat` (`Z` for a zombie), if the process exists.
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[test]
fn an_adopted_process_is_watched_and_signalled_through_its_pidfd() {
    let mut child = sleeper("60.101");
    let pid = child.id();
    let mut r = adopt(&spec("/usr/bin/sleep", &["60.101"]), pid).expect("adopted");
    assert!(r.is_adopted());
    assert_eq!(r.pid(), pid);
    assert!(!r.has_exited());
    r.signal(libc::SIGTERM);
    assert!(
        exits_within(&mut r, Duration::from_secs(5)),
        "exit seen before anyone reaped it"
    );
    assert!(child.wait().unwrap().code().is_none(), "killed by the signal");
    assert!(r.has_exited());
    r.signal(libc::SIGTERM); // a no-op now, whoever holds the pid
}

#[test]
fn a_process_running_something_else_is_not_adopted() {
    let mut child = sleeper("60.102");
    let pid = child.id();
    assert!(
        adopt(&spec("/usr/bin/sleep", &["60.999"]), pid).is_none(),
        "other arguments"
    );
    assert!(
        adopt(&spec("/opt/braid/braid-gw", &["60.102"]), pid).is_none(),
        "another program"
    );
    assert!(adopt(&spec("/usr/bin/sleep", &["60.102"]), pid).is_some());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_process_that_exited_before_adoption_is_not_adopted() {
    // Exited and reaped: the pid names nothing (or, if already reused, something else).
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(adopt(&spec("/usr/bin/true", &[]), pid).is_none());

    // Exited, not yet reaped: a zombie has no command line and counts as exited.
    let mut child = sleeper("60.103");
    let pid = child.id();
    child.kill().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while state_of(pid) != Some('Z') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(state_of(pid), Some('Z'));
    assert!(adopt(&spec("/usr/bin/sleep", &["60.103"]), pid).is_none());
    child.wait().unwrap();
}

#[test]
fn a_started_daemon_is_signalled_reaped_and_then_left_alone() {
    let dir = braid_core::testing::ScratchDir::new("process-started");
    let s = spec_in(dir.path(), "sleep", &["60.104"]);
    let mut r = start(&s).unwrap();
    assert!(!r.is_adopted());
    assert!(!r.has_exited());
    r.signal(libc::SIGTERM);
    assert!(exits_within(&mut r, Duration::from_secs(5)));
    assert_eq!(state_of(r.pid()), None, "reaped: no zombie left");
    r.signal(libc::SIGTERM); // never sent: the pid may belong to another process by now

    let mut r = start(&s).unwrap();
    r.kill_now();
    assert!(r.has_exited());
    assert_eq!(state_of(r.pid()), None);
}

/// A daemon holds none of the descriptors the controller was started with: a pipe end the
/// controller holds without close-on-exec (as a `flock` lock or a runner's pipe is) is not open
/// in the daemon, and the daemon has its own process group.
#[test]
fn a_started_daemon_holds_none_of_the_controllers_stray_descriptors() {
    use std::os::fd::AsRawFd;
    let dir = braid_core::testing::ScratchDir::new("process-descriptors");
    // pipe(2) without close-on-exec: a process started without the detaching hook would
    // inherit both ends.
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    let report = format!(
        "for fd in {} {}; do if [ -e /proc/self/fd/$fd ]; then echo held $fd; fi; done; \
         echo pgid $(cut -d' ' -f5 /proc/self/stat) pid $$",
        reader.as_raw_fd(),
        writer.as_raw_fd()
    );
    let s = spec_in(dir.path(), "/bin/sh", &["-c", &report]);
    let mut r = start(&s).unwrap();
    assert!(exits_within(&mut r, Duration::from_secs(5)));
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        !log.contains("held"),
        "the daemon inherited the controller's descriptors: {log}"
    );
    let words: Vec<&str> = log.split_whitespace().collect();
    assert!(
        matches!(words.as_slice(), ["pgid", group, "pid", pid] if group == pid),
        "a process group of its own: {log}"
    );
}

#[test]
fn command_lines_match_by_program_file_name_and_trailing_arguments() {
    let s = spec("/opt/braid/braid-gw", &["--config", "c.yaml"]);
    assert!(runs_spec(&s, b"/opt/braid/braid-gw\0--config\0c.yaml\0"));
    assert!(runs_spec(&s, b"./braid-gw\0--config\0c.yaml\0"));
    assert!(!runs_spec(&s, b"/opt/braid/braid-gw\0--config\0d.yaml\0"));
    assert!(!runs_spec(&s, b"/opt/braid/braid-demux\0--config\0c.yaml\0"));
    assert!(!runs_spec(&s, b"--config\0c.yaml\0"));
    assert!(!runs_spec(&s, b""));
}
