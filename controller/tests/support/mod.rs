//! What the lab tests share: privilege checks, a guard that always tears the lab down, running
//! code inside a namespace, and a minimal pcap reader for WAN captures.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use braid::lab::{self, LabInfo, UpOptions};

/// Why lab tests cannot run here, if they cannot.
pub fn lab_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: the lab needs root (or CAP_NET_ADMIN) for network namespaces and TUN".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    let bin = bin_dir();
    for b in ["braid-demux", "braid-gw", "braid-bench"] {
        if !bin.join(b).is_file() {
            return Some(format!(
                "{b} is not built in {} — build all binaries first (`cargo build --workspace --bins`, as scripts/test does)",
                bin.display()
            ));
        }
    }
    None
}

/// Prints a loud skip notice and returns true when the lab cannot run. Under CI (CI=true) a
/// missing prerequisite is a failure, not a skip.
pub fn skip_without_lab(test: &str) -> bool {
    match lab_unavailable() {
        None => false,
        Some(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: the lab cannot run under CI: {why}");
            }
            eprintln!("\n======== SKIPPED {test}: {why} ========\n");
            true
        }
    }
}

/// The directory holding the workspace's binaries (the one this test's `braid` was built in).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_braid"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// A running lab, removed when dropped (also when the test panics).
pub struct Lab {
    pub info: LabInfo,
}

impl Lab {
    pub fn up(name: &str, gateways: u16) -> Lab {
        let _ = lab::down(name);
        let opts = UpOptions {
            name: name.into(),
            gateways,
            bin_dir: bin_dir(),
            ready_timeout: Duration::from_secs(30),
        };
        let info = lab::up(&opts).unwrap_or_else(|e| panic!("lab up failed: {e:#}"));
        Lab { info }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.info.name) {
            eprintln!("lab down failed: {e:#}");
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
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

/// One captured frame's IPv4/UDP view, if it is one.
#[derive(Debug)]
pub struct UdpFrame {
    pub src: std::net::Ipv4Addr,
    pub dst: std::net::Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// What a capture file held.
#[derive(Debug, Default)]
pub struct Capture {
    pub frames: usize,
    pub udp: Vec<UdpFrame>,
    /// IPv4 frames that were not UDP.
    pub other_ipv4: usize,
    pub raw: Vec<u8>,
}

/// Reads a classic pcap file of Ethernet (linktype 1) or Linux cooked (113) frames.
pub fn read_pcap(path: &Path) -> Capture {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(raw.len() >= 24, "capture {} is empty", path.display());
    let magic = u32::from_le_bytes(raw[0..4].try_into().unwrap());
    assert!(
        magic == 0xa1b2c3d4 || magic == 0xa1b23c4d,
        "not a little-endian pcap file"
    );
    let linktype = u32::from_le_bytes(raw[20..24].try_into().unwrap());
    let link_len = match linktype {
        1 => 14,
        113 => 16,
        other => panic!("unsupported pcap link type {other}"),
    };
    let mut cap = Capture::default();
    let mut off = 24;
    while off + 16 <= raw.len() {
        let incl = u32::from_le_bytes(raw[off + 8..off + 12].try_into().unwrap()) as usize;
        let frame = &raw[off + 16..(off + 16 + incl).min(raw.len())];
        off += 16 + incl;
        cap.frames += 1;
        if frame.len() < link_len + 20 || frame[link_len - 2..link_len] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[link_len..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 17 {
            cap.other_ipv4 += 1;
            continue;
        }
        if ip.len() < ihl + 8 {
            continue;
        }
        let udp = &ip[ihl..];
        cap.udp.push(UdpFrame {
            src: std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst: std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            src_port: u16::from_be_bytes([udp[0], udp[1]]),
            dst_port: u16::from_be_bytes([udp[2], udp[3]]),
            payload: udp[8..].to_vec(),
        });
    }
    cap.raw = raw;
    cap
}

/// Whether `payload` is a well-formed WireGuard message (type, reserved zeros, length).
pub fn is_wireguard_message(payload: &[u8]) -> bool {
    if payload.len() < 4 || payload[1..4] != [0, 0, 0] {
        return false;
    }
    match payload[0] {
        1 => payload.len() == 148,
        2 => payload.len() == 92,
        3 => payload.len() == 64,
        // Header, counter and tag; boringtun does not pad the inner packet to 16 bytes.
        4 => payload.len() >= 32,
        _ => false,
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends one IPv4/UDP datagram with a forged source through a raw socket (IP_HDRINCL), from the
/// calling thread's namespace. The UDP checksum is left zero (allowed for IPv4).
pub fn send_forged_udp(src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4, payload: &[u8]) {
    let mut pkt = vec![0u8; 28 + payload.len()];
    pkt[0] = 0x45;
    let total = pkt.len() as u16;
    pkt[2..4].copy_from_slice(&total.to_be_bytes());
    pkt[8] = 64;
    pkt[9] = 17;
    pkt[12..16].copy_from_slice(&src.ip().octets());
    pkt[16..20].copy_from_slice(&dst.ip().octets());
    pkt[20..22].copy_from_slice(&src.port().to_be_bytes());
    pkt[22..24].copy_from_slice(&dst.port().to_be_bytes());
    pkt[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    pkt[28..].copy_from_slice(payload);
    send_raw_ipv4(&pkt, *dst.ip());
}

/// Sends a hand-made IPv4 packet (header included) through a raw socket. The kernel fills in the
/// header checksum and total length.
pub fn send_raw_ipv4(packet: &[u8], dst: std::net::Ipv4Addr) {
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the buffer and address are valid for the lengths given; fd is ours and closed after.
    let rc = unsafe {
        let rc = libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        libc::close(fd);
        rc
    };
    assert!(rc >= 0, "raw sendto: {}", std::io::Error::last_os_error());
}

/// A daemon's counter from its status file (0 when absent).
pub fn counter(info: &LabInfo, role: &str, site: &str, index: u16, name: &str) -> u64 {
    let p = info
        .processes
        .iter()
        .find(|p| p.role == role && p.site == site && p.index == index)
        .unwrap_or_else(|| panic!("no {role} {site}{index} in the lab"));
    lab::read_status(&p.status_file)
        .and_then(|s| s["counters"][name].as_u64())
        .unwrap_or(0)
}

/// Waits (up to 3 s, the status files refresh every 500 ms) until `check` holds.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}");
}
