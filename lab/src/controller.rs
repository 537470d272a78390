//! The lab's controller: `braid up` on the lab's cluster file, in the root namespace, run as
//! a process like on a real host. The lab reads it the way an operator's tools do: its status
//! document over HTTP, and `braid reload` for a changed cluster file.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use braid_core::status::{self, StatusSnapshot};

use braid_sys::process::Detach;

/// A loopback address with a port nobody listens on right now, for the controller's HTTP.
pub fn free_loopback_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?)
}

/// Starts `braid up` [detached](Detach::detached): it survives the command that started it.
pub fn start(bin_dir: &Path, config: &Path, state_dir: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join("logs").join("controller.log"))?;
    let child = Command::new(bin_dir.join("braid"))
        .args(["up", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--bin-dir")
        .arg(bin_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .detached()
        .spawn()
        .with_context(|| format!("cannot start {}", bin_dir.join("braid").display()))?;
    std::fs::write(state_dir.join("controller.pid"), child.id().to_string())?;
    Ok(child)
}

/// Stops the lab's controller (SIGTERM: it stops its daemons in order), if one is running.
pub fn stop(state_dir: &Path) {
    if let Some(pid) = std::fs::read_to_string(state_dir.join("controller.pid"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    {
        stop_pid(pid, state_dir);
    }
}

/// Stops process `pid` (SIGTERM, SIGKILL after 6 s) if its command line names `state_dir`:
/// a process of this lab, not one that reused the pid.
pub fn stop_pid(pid: u32, state_dir: &Path) {
    let is_ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(&*state_dir.to_string_lossy()))
        .unwrap_or(false);
    if !is_ours {
        return;
    }
    let pid = pid as i32;
    // SAFETY: kill(2) on a pid this lab recorded and verified through /proc; SIGCONT wakes a
    // frozen one so it can take the SIGTERM.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        libc::kill(pid, libc::SIGCONT);
    }
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above; the process did not stop in time.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// The controller's status.
pub fn status(metrics: SocketAddr) -> Result<StatusSnapshot> {
    let body = status::http_get(metrics, "/status")?;
    serde_json::from_str(&body).context("the controller's /status is not a status document")
}

/// Asks the controller listening on `admin_socket` to re-read its cluster file, with
/// `braid reload` from `bin_dir`; returns the controller's answer.
pub fn reload(bin_dir: &Path, admin_socket: &Path) -> Result<String> {
    let args = [
        "reload".to_string(),
        "--admin-socket".into(),
        admin_socket.display().to_string(),
    ];
    Ok(crate::netns::run(&bin_dir.join("braid"), &args)?.trim().to_string())
}

/// Whether every pair of `pairs` is up, active, answering canaries, and every demux has the
/// latest membership.
pub fn all_up(s: &StatusSnapshot, mut pairs: impl Iterator<Item = u16>) -> bool {
    s.converged
        && s.epoch > 0
        && pairs.all(|id| {
            s.pairs
                .iter()
                .any(|p| p.index == id && p.state == "up" && p.active && p.canary_rtt_us.is_some())
        })
}

/// Whether the controller process `pid` is still running.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// Polls the controller's status until `check` returns something, the controller (`pid`)
/// exits, or `timeout` passes.
pub fn wait_for<T>(
    metrics: SocketAddr,
    timeout: Duration,
    pid: u32,
    mut check: impl FnMut(&StatusSnapshot) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        if !alive(pid) {
            bail!("the controller (pid {pid}) exited; see its log");
        }
        match status(metrics) {
            Ok(s) => {
                if let Some(found) = check(&s) {
                    return Ok(found);
                }
                let pairs: Vec<String> = s.pairs.iter().map(|p| format!("{}:{}", p.index, p.state)).collect();
                last = format!(
                    "pairs {}, epoch {}, converged {}",
                    pairs.join(" "),
                    s.epoch,
                    s.converged
                );
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            bail!("timed out after {} s ({last})", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
