//! Network namespaces and links, through iproute2's `ip`.
//!
//! The lab is control-plane work done once, so it shells out to `ip` rather than speaking
//! netlink: every command is logged at debug level and every failure names the command and what
//! `ip` said.

use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use braid_sys::process::Detach;

/// Runs `ip ARGS…`, failing with the command line and `ip`'s stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    tracing::debug!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `ip ARGS…` in namespace `ns`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Writes a sysctl inside namespace `ns` (e.g. `net/ipv4/ip_forward`).
pub fn sysctl_in(ns: &str, key: &str, value: &str) -> Result<()> {
    let script = format!("echo {value} > /proc/sys/{key}");
    let status = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", &script])
        .stdin(Stdio::null())
        .status()
        .context("cannot run `ip netns exec`")?;
    if !status.success() {
        bail!("setting {key}={value} in namespace {ns} failed");
    }
    Ok(())
}

/// All namespaces whose name starts with `prefix`.
pub fn list_namespaces(prefix: &str) -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("cannot run `ip netns list`")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect())
}

/// The pids of every process inside namespace `ns`.
pub fn pids_in(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends SIGTERM to every process in `namespaces`, waits up to `grace` for them to exit, then
/// SIGKILLs what is left.
pub fn stop_processes_in(namespaces: &[String], grace: Duration) {
    let signal_all = |sig: i32| {
        let mut any = false;
        for ns in namespaces {
            for pid in pids_in(ns) {
                any = true;
                // SAFETY: kill(2) with a pid read from the namespace's process list.
                unsafe { libc::kill(pid, sig) };
            }
        }
        any
    };
    if !signal_all(libc::SIGTERM) {
        return;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if namespaces.iter().all(|ns| pids_in(ns).is_empty()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal_all(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(100));
}

/// Starts `program ARGS…` inside namespace `ns`, [detached](Detach::detached) so it outlives
/// the command that started it, with stdout and stderr appended to `log`.
pub fn spawn_in(ns: &str, program: &Path, args: &[String], log: &Path) -> io::Result<Child> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .detached()
        .spawn()
}

/// Runs `program ARGS…` inside namespace `ns` to completion and returns its stdout.
pub fn run_in(ns: &str, program: &Path, args: &[String]) -> Result<String> {
    let shown = format!("{} {} in {ns}", program.display(), args.join(" "));
    finish(
        Command::new("ip").args(["netns", "exec", ns]).arg(program).args(args),
        &shown,
    )
}

/// UDP datagrams the kernel of namespace `ns` dropped because a socket's receive buffer was
/// full (`RcvbufErrors` in its `/proc/net/snmp`; a GRO train dropped whole counts once).
pub fn udp_receive_buffer_errors(ns: &str) -> Result<u64> {
    let snmp = run_in(ns, Path::new("cat"), &["/proc/net/snmp".into()])?;
    parse_udp_receive_buffer_errors(&snmp).with_context(|| format!("no Udp RcvbufErrors in {ns}'s /proc/net/snmp"))
}

/// `RcvbufErrors` from the two `Udp:` lines (names, then values) of `/proc/net/snmp`.
fn parse_udp_receive_buffer_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Runs `program ARGS…` in this process's namespace to completion and returns its stdout.
pub fn run(program: &Path, args: &[String]) -> Result<String> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    finish(Command::new(program).args(args), &shown)
}

/// Runs `command` (shown in errors as `shown`) with no stdin; its stdout, or its stderr in
/// the error when it fails.
fn finish(command: &mut Command, shown: &str) -> Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process may build the lab: it must be root (the lab creates network namespaces,
/// sets sysctls in them and starts every daemon).
pub fn check_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab needs root to create network namespaces and start its daemons; run it with sudo");
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!("/dev/net/tun is missing: load the tun module (modprobe tun)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rcvbuf_errors_from_the_udp_lines() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
                    Udp: 100 3 57 90 55 0 0 0 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
                    UdpLite: 0 0 0 0 9 0 0 0 0\n";
        assert_eq!(parse_udp_receive_buffer_errors(snmp), Some(55));
        assert_eq!(parse_udp_receive_buffer_errors("Udp: InDatagrams\nUdp: 1\n"), None);
        assert_eq!(parse_udp_receive_buffer_errors(""), None);
    }
}
