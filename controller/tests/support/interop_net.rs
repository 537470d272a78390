//! The IPsec interop topology: a braid gateway's namespace and a strongSwan peer's namespace,
//! joined by one veth pair, plus a WAN capture, a UDP echo responder on the strongSwan site and
//! a UDP round-trip probe.
//!
//! ```text
//!  braid-ix<tag>.gw                                   braid-ix<tag>.ss
//!  [braid side]  wan 198.19.1.1/24 ══veth══ wan 198.19.1.2/24  [strongSwan]
//!                                                    site0 198.18.2.1/24 (echo on :7777)
//! ```
//!
//! Include it with `#[path = "support/interop_net.rs"] mod interop_net;`. It depends on std,
//! libc and `braid_lab::netns`. Every address is in 198.18.0.0/15 inside namespaces made here.
//! This kernel has no `dummy` link type, so a "site" interface is one end of a veth pair whose
//! other end (`site0p`) stays in the same namespace, up and without an address.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use braid_lab::netns::{ip, ip_in, list_namespaces, pids_in, sysctl_in};

/// The braid gateway's WAN address.
pub const GW_WAN: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
/// The strongSwan peer's WAN address.
pub const SS_WAN: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);
/// Prefix length of the WAN link.
pub const WAN_PREFIX_LEN: u8 = 24;
/// The braid site's prefix (the braid side's traffic selector).
pub const BRAID_SITE: &str = "198.18.1.0/24";
/// A host address in the braid site, for when something in the gw namespace must own one
/// (see [`InteropNet::add_site_iface`]).
pub const BRAID_SITE_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The strongSwan site's prefix (strongSwan's traffic selector).
pub const SS_SITE: &str = "198.18.2.0/24";
/// The strongSwan site's host: on `site0` in the ss namespace; the echo responder's address.
pub const SS_SITE_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// The echo responder's UDP port.
pub const ECHO_PORT: u16 = 7777;
/// The WAN interface's name in both namespaces.
pub const WAN_IF: &str = "wan";
/// The site interface's name.
pub const SITE_IF: &str = "site0";

/// The two namespaces, removed when dropped (also when the test panics), with a scratch
/// directory for captures and charon instances (removed too, unless the test failed: then it
/// is kept and its path printed).
#[derive(Debug)]
pub struct InteropNet {
    gw: String,
    ss: String,
    dir: PathBuf,
}

impl InteropNet {
    /// Builds `braid-ix<tag>.gw` and `braid-ix<tag>.ss`. `tag` must be unique per test (short,
    /// `[a-z0-9-]`). Leftovers of an earlier run with the same tag (a killed test) are removed
    /// first. Panics on failure.
    pub fn new(tag: &str) -> InteropNet {
        assert!(
            !tag.is_empty()
                && tag.len() <= 16
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "interop tag {tag:?}: 1-16 characters of [a-z0-9-]"
        );
        let gw = format!("braid-ix{tag}.gw");
        let ss = format!("braid-ix{tag}.ss");
        let dir = std::env::temp_dir().join(format!("braid-ix{tag}"));
        remove_namespaces(&[&gw, &ss]);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let net = InteropNet { gw, ss, dir };
        net.build().unwrap_or_else(|e| panic!("interop net {tag}: {e:#}"));
        net
    }

    fn build(&self) -> anyhow::Result<()> {
        for ns in [&self.gw, &self.ss] {
            ip(&["netns", "add", ns])?;
            // IPv4 only: no router solicitations or MLD in the captures.
            sysctl_in(ns, "net/ipv6/conf/all/disable_ipv6", "1")?;
            sysctl_in(ns, "net/ipv6/conf/default/disable_ipv6", "1")?;
            ip_in(ns, &["link", "set", "lo", "up"])?;
        }
        ip_in(
            &self.gw,
            &[
                "link", "add", WAN_IF, "type", "veth", "peer", "name", WAN_IF, "netns", &self.ss,
            ],
        )?;
        for (ns, addr) in [(&self.gw, GW_WAN), (&self.ss, SS_WAN)] {
            ip_in(ns, &["addr", "add", &format!("{addr}/{WAN_PREFIX_LEN}"), "dev", WAN_IF])?;
            ip_in(ns, &["link", "set", WAN_IF, "up"])?;
        }
        self.try_add_site_iface(&self.ss, &format!("{SS_SITE_HOST}/24"))?;
        Ok(())
    }

    /// The braid gateway's namespace.
    pub fn gw_ns(&self) -> &str {
        &self.gw
    }

    /// The strongSwan peer's namespace.
    pub fn ss_ns(&self) -> &str {
        &self.ss
    }

    /// The scratch directory (e.g. `dir().join("ss")` for a charon instance).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds `site0` holding `cidr` (e.g. `198.18.1.2/24`) to namespace `ns`.
    pub fn add_site_iface(&self, ns: &str, cidr: &str) {
        self.try_add_site_iface(ns, cidr)
            .unwrap_or_else(|e| panic!("site interface {cidr} in {ns}: {e:#}"));
    }

    fn try_add_site_iface(&self, ns: &str, cidr: &str) -> anyhow::Result<()> {
        ip_in(ns, &["link", "add", SITE_IF, "type", "veth", "peer", "name", "site0p"])?;
        ip_in(ns, &["addr", "add", cidr, "dev", SITE_IF])?;
        ip_in(ns, &["link", "set", "site0p", "up"])?;
        ip_in(ns, &["link", "set", SITE_IF, "up"])?;
        Ok(())
    }

    /// Captures on `wan` in `ns` into `dir()/file` with the tcpdump `filter` (e.g. `ip`, or
    /// `udp`; `ip` also shows plain ESP, protocol 50, should any leave a host).
    pub fn capture(&self, ns: &str, file: &str, filter: &str) -> Tcpdump {
        Tcpdump::start(ns, WAN_IF, &self.dir.join(file), filter).unwrap_or_else(|e| panic!("capture in {ns}: {e}"))
    }

    /// The UDP echo responder on the strongSwan site (SS_SITE_HOST:ECHO_PORT in the ss
    /// namespace).
    pub fn start_echo(&self) -> UdpEcho {
        UdpEcho::start(&self.ss, SocketAddrV4::new(SS_SITE_HOST, ECHO_PORT))
            .unwrap_or_else(|e| panic!("echo responder in {}: {e}", self.ss))
    }
}

impl Drop for InteropNet {
    fn drop(&mut self) {
        remove_namespaces(&[&self.gw, &self.ss]);
        if std::thread::panicking() {
            eprintln!("interop net: kept {} for inspection", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Deletes these namespaces if they exist, after SIGKILLing any process still in them (only
/// ever ours: the names are this test's own, and a guard normally stopped them already).
fn remove_namespaces(names: &[&str]) {
    let existing = list_namespaces("braid-ix").unwrap_or_default();
    let me = std::process::id() as i32;
    for ns in names.iter().filter(|n| existing.iter().any(|e| e == *n)) {
        for pid in pids_in(ns).into_iter().filter(|p| *p != me) {
            eprintln!("interop net: pid {pid} was still running in {ns}: SIGKILL");
            // SAFETY: kill(2) on a pid listed in a namespace this test created.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Err(e) = ip(&["netns", "del", ns]) {
            eprintln!("interop net: {e:#}");
        }
    }
}

/// Runs `f` on a new thread that has entered network namespace `ns` (sockets it creates live
/// there). The same as `support::in_netns`, kept here so this file stands alone.
pub fn spawn_in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file descriptor only changes this thread's namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Sends `payload` from a UDP socket bound to `from` in namespace `ns` to `to` and waits for it
/// to come back unchanged, up to `tries` times, `per_try` each (the first packet through a trap
/// only starts the SA). Returns the round-trip time of the answered try.
pub fn udp_roundtrip(
    ns: &str,
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: &[u8],
    tries: u32,
    per_try: Duration,
) -> Result<Duration, String> {
    let payload = payload.to_vec();
    let ns_name = ns.to_string();
    spawn_in_netns(ns, move || -> Result<Duration, String> {
        let sock = UdpSocket::bind(from).map_err(|e| format!("bind {from}: {e}"))?;
        sock.set_read_timeout(Some(per_try)).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65536];
        let mut last_error = String::from("no try made");
        for attempt in 1..=tries.max(1) {
            let sent = Instant::now();
            sock.send_to(&payload, to).map_err(|e| format!("send to {to}: {e}"))?;
            while sent.elapsed() < per_try {
                match sock.recv_from(&mut buf) {
                    Ok((n, peer)) if peer == SocketAddr::V4(to) && buf[..n] == payload[..] => {
                        return Ok(sent.elapsed());
                    }
                    Ok((n, peer)) => last_error = format!("try {attempt}: unexpected {n} bytes from {peer}"),
                    Err(e) => {
                        last_error = format!("try {attempt}: no echo within {per_try:?} ({e})");
                        break;
                    }
                }
            }
        }
        Err(format!("UDP {from} -> {to} in {ns_name}: {last_error}"))
    })
    .join()
    .unwrap_or_else(|_| Err("the round-trip thread panicked".into()))
}

/// A UDP echo responder on a thread that entered a namespace: echoes every datagram to its
/// sender and counts them. Stopped when dropped.
#[derive(Debug)]
pub struct UdpEcho {
    addr: SocketAddrV4,
    count: Arc<AtomicU64>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Binds `addr` in `ns` and serves it.
    pub fn start(ns: &str, addr: SocketAddrV4) -> Result<UdpEcho, String> {
        let count = Arc::new(AtomicU64::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (count, peers, stop) = (count.clone(), peers.clone(), stop.clone());
            spawn_in_netns(ns, move || {
                let sock = match UdpSocket::bind(addr) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("bind {addr}: {e}")));
                        return;
                    }
                };
                let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
                let _ = ready_tx.send(Ok(()));
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                        count.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut p) = peers.lock() {
                            if !p.contains(&peer) {
                                p.push(peer);
                            }
                        }
                        let _ = sock.send_to(&buf[..n], peer);
                    }
                }
            })
        };
        let ready = ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|e| format!("echo responder did not start: {e}"))?;
        let echo = UdpEcho {
            addr,
            count,
            peers,
            stop,
            thread: Some(thread),
        };
        ready.map(|()| echo)
    }

    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Datagrams received (and echoed) so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Every distinct source seen.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `tcpdump -w FILE` on one interface of a namespace. Stopped when dropped.
#[derive(Debug)]
pub struct Tcpdump {
    child: Option<Child>,
    path: PathBuf,
    stderr: PathBuf,
}

impl Tcpdump {
    /// Starts `tcpdump -i IFACE -n -U --immediate-mode -s 65535 -B 131072 -Z root -w PATH
    /// FILTER` in `ns` and waits until it listens (so no early packet is missed). Immediate mode
    /// matters: without it packets wait in the capture ring for up to a second and a short
    /// test's SIGTERM loses them all. In immediate mode the ring is cut into one slot per
    /// snapshot length, so with tcpdump's defaults (2 MiB, 256 KiB snapshots) it holds 8
    /// packets, and a tcpdump kept off the CPU for a moment by parallel tests lost most of a
    /// short test's packets; 128 MiB of 64 KiB slots hold 2,048.
    pub fn start(ns: &str, iface: &str, path: &Path, filter: &str) -> Result<Tcpdump, String> {
        let stderr = path.with_extension("tcpdump.log");
        let err = std::fs::File::create(&stderr).map_err(|e| format!("create {}: {e}", stderr.display()))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "-i",
                iface,
                "-n",
                "-U",
                "--immediate-mode",
                "-s",
                "65535",
                "-B",
                "131072",
                "-Z",
                "root",
                "-w",
            ])
            .arg(path)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start tcpdump: {e}"))?;
        let mut dump = Tcpdump {
            child: Some(child),
            path: path.to_path_buf(),
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let said = std::fs::read_to_string(&dump.stderr).unwrap_or_default();
            if said.contains("listening on") {
                return Ok(dump);
            }
            let exited = dump.child.as_mut().map(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited == Some(true) || Instant::now() > deadline {
                return Err(format!("tcpdump in {ns} did not start: {said}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the capture (SIGTERM; tcpdump flushes) and returns the file's path. Warns when
    /// tcpdump wrote fewer packets than its filter matched.
    pub fn stop(mut self) -> PathBuf {
        // Let the last packets of the test reach the file.
        std::thread::sleep(Duration::from_millis(100));
        self.halt();
        let said = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let count = |what: &str| {
            said.lines()
                .find(|l| l.ends_with(what))
                .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        };
        if let (Some(captured), Some(matched)) = (count("packets captured"), count("packets received by filter")) {
            if captured < matched {
                eprintln!(
                    "tcpdump {}: only {captured} of {matched} matching packets captured",
                    self.path.display()
                );
            }
        }
        self.path.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn halt(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        self.halt();
    }
}
