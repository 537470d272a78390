//! Starting, watching, stopping and adopting daemon processes.
//!
//! A daemon is started in its own process group (so a controller that dies, or a terminal's ^C,
//! does not take the data plane with it), inside its network namespace when it has one, with
//! stdout and stderr appended to its log file. A process is either our child (reaped with
//! `try_wait`) or *adopted* from a previous controller (checked with `kill(pid, 0)`, its command
//! line verified through `/proc` so a recycled pid is never mistaken for a daemon).

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::spec::DaemonSpec;

/// A running daemon process.
#[derive(Debug)]
pub enum Running {
    /// Started by this controller.
    Child(Child),
    /// Started by an earlier controller and adopted.
    Adopted(u32),
}

impl Running {
    pub fn pid(&self) -> u32 {
        match self {
            Running::Child(c) => c.id(),
            Running::Adopted(pid) => *pid,
        }
    }

    /// Whether the process has exited (reaping it if it was our child).
    pub fn has_exited(&mut self) -> bool {
        match self {
            Running::Child(c) => !matches!(c.try_wait(), Ok(None)),
            Running::Adopted(pid) => {
                // SAFETY: signal 0 only checks that the pid exists.
                let rc = unsafe { libc::kill(*pid as i32, 0) };
                rc != 0
            }
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a pid this controller started or verified.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// SIGKILL and reap (for children); used on hung processes before a restart.
    pub fn kill_now(&mut self) {
        self.signal(libc::SIGKILL);
        if let Running::Child(c) = self {
            let _ = c.wait();
        }
    }
}

/// Starts the daemon described by `spec`.
pub fn start(spec: &DaemonSpec) -> io::Result<Running> {
    use std::os::unix::process::CommandExt;
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
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    Ok(Running::Child(cmd.spawn()?))
}

/// Adopts `pid` if it is alive and runs `spec`'s program with `spec`'s arguments.
pub fn adopt(spec: &DaemonSpec, pid: u32) -> Option<Running> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|w| !w.is_empty()).collect();
    let program = spec.program.file_name()?.to_string_lossy().into_owned();
    let runs_program = words
        .first()
        .is_some_and(|w| Path::new(&*String::from_utf8_lossy(w)).ends_with(&program));
    let same_args = words.len() > spec.args.len()
        && words[words.len() - spec.args.len()..]
            .iter()
            .zip(&spec.args)
            .all(|(w, a)| *w == a.as_bytes());
    (runs_program && same_args).then_some(Running::Adopted(pid))
}
