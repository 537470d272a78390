//! The operator's restart hooks (`sh -c <command>`) for daemons on other hosts, run as children
//! that are watched to the end.
//!
//! Design: a hook runs in its own process group, without the controller waiting for it. The
//! supervisor loop calls [`RestartHooks::tick`] every turn, which reaps each finished hook
//! (`try_wait`, so no zombie is left), logs its exit status (a failure is a warning), and kills a
//! hook still running at its deadline with SIGKILL to its whole process group (the shell and
//! whatever it started: `ssh`, `systemctl`, …). At most one hook runs per daemon: a restart
//! asked for while that daemon's hook still runs is logged and skipped. Every outcome is counted
//! ([`HookCounts`]) for `/metrics`.

use std::collections::BTreeMap;
use std::io;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

use crate::status::HookCounts;

/// How long a hook may run before it is killed.
pub const HOOK_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Hook {
    child: Child,
    command: String,
    started: Instant,
    /// Killed at the deadline, not reaped yet.
    killed: bool,
}

/// The restart hooks running now, one at most per daemon, and the count of every outcome.
#[derive(Debug)]
pub struct RestartHooks {
    deadline: Duration,
    running: BTreeMap<String, Hook>,
    counts: HookCounts,
}

impl Default for RestartHooks {
    fn default() -> Self {
        RestartHooks::with_deadline(HOOK_DEADLINE)
    }
}

impl RestartHooks {
    pub fn with_deadline(deadline: Duration) -> RestartHooks {
        RestartHooks {
            deadline,
            running: BTreeMap::new(),
            counts: HookCounts::default(),
        }
    }

    pub fn counts(&self) -> HookCounts {
        HookCounts {
            running: self.running.len() as u64,
            ..self.counts
        }
    }

    /// Runs `command` (already filled in) to restart `daemon` on its host, unless the previous
    /// hook for `daemon` still runs. Returns the hook's pid if it started.
    pub fn start(&mut self, daemon: &str, command: &str) -> Option<u32> {
        if let Some(hook) = self.running.get(daemon) {
            self.counts.skipped += 1;
            tracing::warn!(
                daemon,
                pid = hook.child.id(),
                running_s = hook.started.elapsed().as_secs(),
                "restart hook not run: the previous one for this daemon still runs"
            );
            return None;
        }
        tracing::warn!(daemon, %command, "running the restart hook");
        match spawn(command) {
            Ok(child) => {
                let pid = child.id();
                self.counts.started += 1;
                let hook = Hook {
                    child,
                    command: command.to_string(),
                    started: Instant::now(),
                    killed: false,
                };
                self.running.insert(daemon.to_string(), hook);
                Some(pid)
            }
            Err(e) => {
                self.counts.failed += 1;
                tracing::error!(daemon, %command, "restart hook failed to start: {e}");
                None
            }
        }
    }

    /// Reaps the hooks that finished and kills those past the deadline. Never blocks.
    pub fn tick(&mut self) {
        let deadline = self.deadline;
        let counts = &mut self.counts;
        self.running.retain(|daemon, hook| match hook.child.try_wait() {
            Ok(None) => {
                if !hook.killed && hook.started.elapsed() >= deadline {
                    kill_group(daemon, hook, deadline);
                }
                true
            }
            Ok(Some(status)) => {
                finished(daemon, hook, status, counts);
                false
            }
            Err(e) => {
                counts.failed += 1;
                tracing::error!(daemon, command = %hook.command, "cannot wait for the restart hook: {e}");
                false
            }
        });
    }
}

fn spawn(command: &str) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("sh");
    for name in braid_core::service::NOTIFY_ENV {
        cmd.env_remove(name);
    }
    cmd.args(["-c", command]).stdin(Stdio::null()).process_group(0).spawn()
}

/// SIGKILL to the hook's process group (its shell leads it: our unreaped child, so the group
/// id cannot have been reused).
fn kill_group(daemon: &str, hook: &mut Hook, deadline: Duration) {
    hook.killed = true;
    tracing::warn!(
        daemon, command = %hook.command, deadline_s = deadline.as_secs_f64(),
        "restart hook still running at its deadline: killing it"
    );
    let group = i32::try_from(hook.child.id()).ok().and_then(Pid::from_raw);
    let killed = match group {
        Some(group) => kill_process_group(group, Signal::KILL).map_err(io::Error::from),
        None => hook.child.kill(),
    };
    if let Err(e) = killed {
        tracing::error!(daemon, "cannot kill the restart hook's process group: {e}");
        let _ = hook.child.kill();
    }
}

fn finished(daemon: &str, hook: &Hook, status: ExitStatus, counts: &mut HookCounts) {
    let took_ms = hook.started.elapsed().as_millis() as u64;
    let command = &hook.command;
    if hook.killed {
        counts.timed_out += 1;
        tracing::warn!(daemon, %command, %status, took_ms, "restart hook killed at its deadline");
    } else if status.success() {
        counts.succeeded += 1;
        tracing::info!(daemon, %command, took_ms, "restart hook succeeded");
    } else {
        counts.failed += 1;
        tracing::warn!(daemon, %command, %status, took_ms, "restart hook failed");
    }
}

#[cfg(test)]
#[path = "hooks_tests.rs"]
mod tests;
