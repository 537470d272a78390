//! Starting, watching, stopping and adopting daemon processes.
//!
//! A daemon is started in its own process group (so a controller that dies, or a terminal's ^C,
//! does not take the data plane with it), inside its network namespace when it has one, with
//! stdout and stderr appended to its log file.
//!
//! Every daemon process, whoever started it, is a [`Running`]: `pid`, `has_exited`, `signal`,
//! `kill_now`. Underneath, a process is either our child (a std [`Child`]: its pid cannot be
//! reused before we reap it, and once reaped it is never signalled again) or *adopted* from a
//! previous controller. Adoption opens a pidfd ([`ProcessFd`]) on the recorded pid *first*, then
//! checks `/proc/<pid>/cmdline` against the daemon's spec, then checks the pidfd's process is
//! still alive: alive after the read means it held that pid throughout the read, so the verified
//! command line is the fd's process, and every later liveness check and signal goes to exactly
//! that process, never to a stranger that inherits the pid after it exits.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rustix::io::Errno;
use rustix::process::{kill_process, Pid, Signal};

use super::pidfd::ProcessFd;
use super::spec::DaemonSpec;

/// A running daemon process.
#[derive(Debug)]
pub struct Running {
    process: Process,
    /// Seen exited (and reaped, if ours): never signalled again.
    exited: bool,
}

#[derive(Debug)]
enum Process {
    /// Started by this controller.
    Child(Child),
    /// Started by an earlier controller and adopted.
    Adopted(ProcessFd),
}

/// kill(2) on our own unreaped child.
fn signal_child(child: &Child, signal: i32) -> io::Result<()> {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(Errno::SRCH)?;
    let signal = Signal::from_named_raw(signal).ok_or(Errno::INVAL)?;
    Ok(kill_process(pid, signal)?)
}

impl Running {
    fn new(process: Process) -> Running {
        Running { process, exited: false }
    }

    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Child(c) => c.id(),
            Process::Adopted(p) => p.pid(),
        }
    }

    /// Whether this controller adopted the process rather than starting it.
    pub fn is_adopted(&self) -> bool {
        matches!(self.process, Process::Adopted(_))
    }

    /// Whether the process has exited (reaping it if it was our child).
    pub fn has_exited(&mut self) -> bool {
        if !self.exited {
            self.exited = match &mut self.process {
                Process::Child(c) => !matches!(c.try_wait(), Ok(None)),
                Process::Adopted(p) => p.has_exited(),
            };
        }
        self.exited
    }

    /// Sends `signal` to the process, unless it was seen exiting. Failures are logged.
    pub fn signal(&self, signal: i32) {
        if self.exited {
            return;
        }
        let sent = match &self.process {
            Process::Child(c) => signal_child(c, signal),
            Process::Adopted(p) => p.signal(signal),
        };
        match sent {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                tracing::debug!(pid = self.pid(), signal, "not signalled: the process has exited");
            }
            Err(e) => tracing::warn!(pid = self.pid(), signal, "cannot signal the process: {e}"),
        }
    }

    /// SIGKILL and reap (for children); used on hung processes before a restart.
    pub fn kill_now(&mut self) {
        self.signal(libc::SIGKILL);
        if let Process::Child(c) = &mut self.process {
            if let Err(e) = c.wait() {
                tracing::warn!(pid = c.id(), "cannot reap the killed process: {e}");
            }
        }
        self.exited = true;
    }
}

/// Starts the daemon described by `spec`.
pub fn start(spec: &DaemonSpec) -> io::Result<Running> {
    use braid_sys::process::Detach;
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = OpenOptions::new().create(true).append(true).open(&spec.log)?;
    let err = out.try_clone()?;
    let mut cmd = match &spec.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&spec.program);
            c
        }
        None => Command::new(&spec.program),
    };
    // The daemons speak for themselves, never as the controller's service, read their own
    // keys, not the controller's credentials, and hold none of the descriptors the controller
    // was started with.
    for name in braid_core::service::NOTIFY_ENV {
        cmd.env_remove(name);
    }
    cmd.env_remove(braid_core::keys::credentials::CREDENTIALS_DIRECTORY);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .detached();
    Ok(Running::new(Process::Child(cmd.spawn()?)))
}

/// Adopts `pid` if it is alive and runs `spec`'s program with `spec`'s arguments (see the
/// module docs for why the order of the checks matters).
pub fn adopt(spec: &DaemonSpec, pid: u32) -> Option<Running> {
    let process = match ProcessFd::open(pid) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(daemon = %spec.name(), pid, "not adopted: no such process ({e})");
            return None;
        }
    };
    if process.has_exited() {
        tracing::info!(daemon = %spec.name(), pid, "not adopted: the process has exited");
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !runs_spec(spec, &cmdline) {
        tracing::info!(daemon = %spec.name(), pid, "not adopted: the process runs something else");
        return None;
    }
    // Alive now, so it held `pid` all along: the command line read was its own.
    if process.has_exited() {
        tracing::info!(daemon = %spec.name(), pid, "not adopted: the process exited while being checked");
        return None;
    }
    Some(Running::new(Process::Adopted(process)))
}

/// Whether the NUL-separated command line `cmdline` runs `spec`'s program (by file name, from
/// whichever directory it was started) and ends with `spec`'s arguments.
fn runs_spec(spec: &DaemonSpec, cmdline: &[u8]) -> bool {
    let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|w| !w.is_empty()).collect();
    let Some(program) = spec.program.file_name() else {
        return false;
    };
    let program = program.to_string_lossy();
    let runs_program = words
        .first()
        .is_some_and(|w| Path::new(&*String::from_utf8_lossy(w)).ends_with(&*program));
    let same_args = words.len() > spec.args.len()
        && words[words.len() - spec.args.len()..]
            .iter()
            .zip(&spec.args)
            .all(|(w, a)| *w == a.as_bytes());
    runs_program && same_args
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
