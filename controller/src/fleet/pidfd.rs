//! A handle on a process that is not our child, immune to pid reuse.
//!
//! Design: a bare pid names whichever process holds that number *now*; once the process it meant
//! has exited, the kernel may give the number to another. A pidfd (`pidfd_open(2)`, Linux ≥ 5.3)
//! names one process for as long as the fd is open: it turns readable when that process exits,
//! and `pidfd_send_signal(2)` on it fails with `ESRCH` afterwards instead of reaching a newcomer
//! with the same number. [`ProcessFd`] wraps one; the syscalls go through `rustix`, so this
//! module has no `unsafe`.
//!
//! A kernel without pidfds (`ENOSYS`) gets the old behaviour, `kill(pid, …)` on the bare pid,
//! and one loud warning per controller: the pid-reuse race is then open again.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Once;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::{kill_process, pidfd_open, pidfd_send_signal, test_kill_process, Pid, PidfdFlags, Signal};

/// One process, named by a pidfd where the kernel has them, else by its bare pid.
#[derive(Debug)]
pub struct ProcessFd {
    pid: u32,
    /// `None` on a kernel without pidfds.
    fd: Option<OwnedFd>,
}

fn raw_pid(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .and_then(Pid::from_raw)
        .ok_or_else(|| Errno::SRCH.into())
}

fn warn_no_pidfd_once() {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        tracing::error!(
            "this kernel has no pidfd_open(2) (Linux < 5.3): adopted daemons are watched and signalled \
             by bare pid, which the kernel may reuse after they exit; upgrade the kernel"
        );
    });
}

impl ProcessFd {
    /// Opens a handle on the process `pid` is now. `ESRCH` if there is none.
    pub fn open(pid: u32) -> io::Result<ProcessFd> {
        let raw = raw_pid(pid)?;
        match pidfd_open(raw, PidfdFlags::empty()) {
            Ok(fd) => Ok(ProcessFd { pid, fd: Some(fd) }),
            Err(Errno::NOSYS) => {
                warn_no_pidfd_once();
                test_kill_process(raw)?;
                Ok(ProcessFd { pid, fd: None })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The pid the process had when the handle was opened.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the handle is a pidfd (else a bare pid, on an old kernel).
    pub fn is_pidfd(&self) -> bool {
        self.fd.is_some()
    }

    /// Whether the process has exited (a zombie counts as exited). Never blocks.
    pub fn has_exited(&self) -> bool {
        let Some(fd) = &self.fd else {
            // The old behaviour: any failure of kill(pid, 0) means gone.
            return raw_pid(self.pid)
                .and_then(|p| test_kill_process(p).map_err(io::Error::from))
                .is_err();
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        let now = Timespec { tv_sec: 0, tv_nsec: 0 };
        match poll(&mut fds, Some(&now)) {
            Ok(ready) => ready > 0,
            Err(Errno::INTR) => false,
            Err(e) => {
                tracing::warn!(pid = self.pid, "cannot poll the process's pidfd: {e}");
                false
            }
        }
    }

    /// Sends signal number `signal` to the process. `ESRCH` once it has exited (with a pidfd,
    /// even if its pid now belongs to another process); `EINVAL` for an unknown signal.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        let signal = Signal::from_named_raw(signal).ok_or(Errno::INVAL)?;
        match &self.fd {
            Some(fd) => pidfd_send_signal(fd, signal)?,
            None => kill_process(raw_pid(self.pid)?, signal)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::*;

    fn wait_exited(p: &ProcessFd) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if p.has_exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_pidfd_sees_its_process_exit_and_never_signals_a_successor() {
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let p = ProcessFd::open(child.id()).unwrap();
        assert!(p.is_pidfd(), "this kernel has pidfds");
        assert_eq!(p.pid(), child.id());
        assert!(!p.has_exited());
        p.signal(0).expect_err("0 is no signal to send");
        p.signal(libc::SIGTERM).unwrap();
        assert!(
            wait_exited(&p),
            "readable once the process exits, even as an unreaped zombie"
        );
        child.wait().unwrap();
        assert!(p.has_exited());
        let e = p.signal(libc::SIGTERM).expect_err("the process is gone");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }

    #[test]
    fn no_handle_on_a_process_that_is_gone_or_never_was() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        // The pid could have been reused already; then the handle is on that process instead.
        if let Err(e) = ProcessFd::open(pid) {
            assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        }
        for pid in [0, u32::MAX, i32::MAX as u32] {
            assert!(ProcessFd::open(pid).is_err(), "pid {pid}");
        }
    }
}
