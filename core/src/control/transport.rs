//! Datagram sockets for control traffic, over UDP or unix paths.
//!
//! A [`ControlAddr`] is written `198.18.0.1:7400`, `[::1]:7400` or `unix:/run/braid/ctl.sock`.
//! Unix datagram sockets are reachable from every network namespace that shares the file
//! system, so daemons inside lab namespaces reach a controller in the root namespace by path.
//! A unix socket file is created mode 0600 in a directory made on demand; a leftover file from
//! a dead process is replaced, but a socket another live process is bound to is not, and a
//! socket removes its file when dropped (if the file is still its own).
//!
//! A send never waits long: a unix datagram sender blocks while the receiver's queue is full
//! (`net.unix.max_dgram_qlen`, 10 by default), which a frozen peer never empties. Every send
//! gives up after [`SEND_WAIT`], so a frozen controller costs its heartbeats, not the control
//! thread of every daemon that heartbeats to it (nor the other controllers' heartbeats).

use std::fmt;
use std::fs;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

const UNIX_PREFIX: &str = "unix:";
/// Socket timeouts are whole microseconds, and zero means "block forever": the shortest wait.
const MIN_WAIT: Duration = Duration::from_millis(1);
/// The longest a send waits for room in the receiver's queue.
pub const SEND_WAIT: Duration = MIN_WAIT;

/// Where a control socket listens or sends.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum ControlAddr {
    Udp(SocketAddr),
    Unix(PathBuf),
}

/// A control address that does not parse.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("expected a control address like 198.18.0.1:7400, \"[::1]:7400\" or unix:/run/braid/control.sock, got {0:?}")]
pub struct ControlAddrError(pub String);

impl FromStr for ControlAddr {
    type Err = ControlAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ControlAddrError(text.to_string());
        match text.strip_prefix(UNIX_PREFIX) {
            Some("") => Err(error()),
            Some(path) => Ok(ControlAddr::Unix(PathBuf::from(path))),
            None => text.parse().map(ControlAddr::Udp).map_err(|_| error()),
        }
    }
}

impl ControlAddr {
    /// Where a daemon called `name` (e.g. `gw-a1`) listens for a controller at `self`: a
    /// sibling socket file in the controller's directory, or an ephemeral UDP port on the
    /// unspecified address of the controller's family.
    pub fn local_for(&self, name: &str) -> ControlAddr {
        match self {
            ControlAddr::Unix(path) => {
                let dir = path.parent().unwrap_or_else(|| std::path::Path::new("/"));
                ControlAddr::Unix(dir.join(format!("{name}.sock")))
            }
            ControlAddr::Udp(addr) => {
                let ip: std::net::IpAddr = if addr.is_ipv4() {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                };
                ControlAddr::Udp(SocketAddr::new(ip, 0))
            }
        }
    }
}

impl fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlAddr::Udp(addr) => write!(f, "{addr}"),
            ControlAddr::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

impl Serialize for ControlAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ControlAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ControlAddrText;
        impl serde::de::Visitor<'_> for ControlAddrText {
            type Value = ControlAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a control address")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ControlAddr, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(ControlAddrText)
    }
}

/// A bound control socket.
#[derive(Debug)]
pub struct ControlSocket {
    socket: Socket,
    local: ControlAddr,
}

#[derive(Debug)]
enum Socket {
    Udp(UdpSocket),
    /// With the device and inode of the socket file it created.
    Unix(UnixDatagram, (u64, u64)),
}

impl ControlSocket {
    /// Binds `local`. For UDP, port 0 picks an ephemeral port. For a unix path: creates the
    /// parent directory, replaces a stale socket file, refuses a live one or any other file,
    /// and makes the socket mode 0600.
    pub fn bind(local: &ControlAddr) -> io::Result<Self> {
        match local {
            ControlAddr::Udp(addr) => {
                let socket = UdpSocket::bind(addr)?;
                socket.set_write_timeout(Some(SEND_WAIT))?;
                let local = ControlAddr::Udp(socket.local_addr()?);
                Ok(ControlSocket {
                    socket: Socket::Udp(socket),
                    local,
                })
            }
            ControlAddr::Unix(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent)?;
                }
                remove_stale_socket(path)?;
                let socket = UnixDatagram::bind(path)?;
                socket.set_write_timeout(Some(SEND_WAIT))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
                let metadata = fs::symlink_metadata(path)?;
                Ok(ControlSocket {
                    socket: Socket::Unix(socket, (metadata.dev(), metadata.ino())),
                    local: local.clone(),
                })
            }
        }
    }

    /// The bound address (for UDP, with the port the system picked).
    pub fn local_addr(&self) -> &ControlAddr {
        &self.local
    }

    /// Sends one datagram to `to`, which must be of the socket's kind. A receiver whose queue
    /// stays full for [`SEND_WAIT`] makes it fail (`WouldBlock`) instead of waiting.
    pub fn send_to(&self, datagram: &[u8], to: &ControlAddr) -> io::Result<()> {
        let sent = match (&self.socket, to) {
            (Socket::Udp(socket), ControlAddr::Udp(addr)) => socket.send_to(datagram, addr)?,
            (Socket::Unix(socket, _), ControlAddr::Unix(path)) => socket.send_to(datagram, path)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot send to {to} from a socket bound to {}", self.local),
                ))
            }
        };
        if sent != datagram.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes to {to}", datagram.len()),
            ));
        }
        Ok(())
    }

    /// Waits up to `timeout` (at least 1 ms) for one datagram. `Ok(None)` when none came. A
    /// datagram from an unnamed unix socket, which has no address to answer, is an
    /// `InvalidData` error.
    pub fn recv_from(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<(usize, ControlAddr)>> {
        let wait = Some(timeout.max(MIN_WAIT));
        let received = match &self.socket {
            Socket::Udp(socket) => {
                socket.set_read_timeout(wait)?;
                socket
                    .recv_from(buf)
                    .map(|(len, from)| (len, Some(ControlAddr::Udp(from))))
            }
            Socket::Unix(socket, _) => {
                socket.set_read_timeout(wait)?;
                socket.recv_from(buf).map(|(len, from)| {
                    let from = from.as_pathname().map(|p| ControlAddr::Unix(p.to_path_buf()));
                    (len, from)
                })
            }
        };
        match received {
            Ok((len, Some(from))) => Ok(Some((len, from))),
            Ok((_, None)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram from an unnamed unix socket, which cannot be answered",
            )),
            Err(error) if is_timeout(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let (Socket::Unix(_, identity), ControlAddr::Unix(path)) = (&self.socket, &self.local) {
            let still_ours =
                fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == *identity);
            if still_ours {
                // Best effort: a leftover file is replaced by the next bind anyway.
                let _ = fs::remove_file(path);
            }
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Removes a socket file nobody listens on; refuses a live socket or a file of another kind.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    let probe = UnixDatagram::unbound()?;
    if probe.connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running process", path.display()),
        ));
    }
    fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ScratchDir;

    #[test]
    fn addresses_parse_and_display_round_trip() {
        for text in [
            "198.18.0.1:7400",
            "[::1]:7400",
            "unix:/run/braid/ctl.sock",
            "unix:rel/ctl.sock",
        ] {
            let addr: ControlAddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(
            "unix:/run/x.sock".parse(),
            Ok(ControlAddr::Unix(PathBuf::from("/run/x.sock")))
        );
        assert_eq!(
            "[::1]:7400".parse(),
            Ok(ControlAddr::Udp("[::1]:7400".parse().unwrap()))
        );
        for bad in ["", "unix:", "198.18.0.1", "::1:7400", "localhost:7400", "udp:1.2.3.4:5"] {
            assert_eq!(
                bad.parse::<ControlAddr>(),
                Err(ControlAddrError(bad.to_string())),
                "{bad}"
            );
        }
    }

    fn temp_dir(name: &str) -> ScratchDir {
        ScratchDir::new(&format!("transport-{name}"))
    }

    #[test]
    fn unix_bind_creates_dir_mode_0600_and_replaces_only_stale_sockets() {
        let dir = temp_dir("bind");
        let path = dir.join("sub/ctl.sock");
        let addr = ControlAddr::Unix(path.clone());
        let socket = ControlSocket::bind(&addr).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let live = ControlSocket::bind(&addr).unwrap_err();
        assert_eq!(live.kind(), io::ErrorKind::AddrInUse);

        // A socket file left by a process that died without cleaning up.
        let stale = UnixDatagram::bind(dir.join("stale.sock")).unwrap();
        drop(stale);
        assert!(dir.join("stale.sock").exists());
        ControlSocket::bind(&ControlAddr::Unix(dir.join("stale.sock"))).unwrap();

        fs::write(dir.join("plain"), b"x").unwrap();
        let plain = ControlSocket::bind(&ControlAddr::Unix(dir.join("plain"))).unwrap_err();
        assert_eq!(plain.kind(), io::ErrorKind::AlreadyExists);

        drop(socket);
        assert!(!path.exists(), "a dropped socket removes its file");
    }

    #[test]
    fn a_receiver_that_stopped_reading_costs_dropped_sends_not_a_stalled_sender() {
        let dir = temp_dir("frozen");
        let frozen = ControlSocket::bind(&ControlAddr::Unix(dir.join("frozen.sock"))).unwrap();
        let alive = ControlSocket::bind(&ControlAddr::Unix(dir.join("alive.sock"))).unwrap();
        let sender = ControlSocket::bind(&ControlAddr::Unix(dir.join("sender.sock"))).unwrap();
        // Far more than any receive queue holds: without a bounded send this never returns.
        let mut refused = 0;
        for _ in 0..200 {
            match sender.send_to(b"heartbeat", frozen.local_addr()) {
                Ok(()) => {}
                Err(e) => {
                    assert!(is_timeout(&e), "a full queue fails as a timeout, not {e:?}");
                    refused += 1;
                }
            }
        }
        assert!(
            refused > 0,
            "the frozen receiver's queue filled and later sends were refused"
        );
        // The sender still reaches a receiver that reads.
        sender.send_to(b"heartbeat", alive.local_addr()).unwrap();
        let mut buf = [0u8; 64];
        let got = alive.recv_from(&mut buf, Duration::from_secs(5)).unwrap();
        assert_eq!(got.map(|(len, _)| &buf[..len]), Some(&b"heartbeat"[..]));
        drop((frozen, alive, sender));
    }

    #[test]
    fn datagrams_cross_unix_and_udp_and_time_out() {
        let dir = temp_dir("cross");
        let unix_a = ControlSocket::bind(&ControlAddr::Unix(dir.join("a.sock"))).unwrap();
        let unix_b = ControlSocket::bind(&ControlAddr::Unix(dir.join("b.sock"))).unwrap();
        let udp_a = ControlSocket::bind(&"127.0.0.1:0".parse().unwrap()).unwrap();
        let udp_b = ControlSocket::bind(&"127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(matches!(udp_a.local_addr(), ControlAddr::Udp(a) if a.port() != 0));

        let mut buf = [0; 64];
        for (from, to) in [(&unix_a, &unix_b), (&udp_a, &udp_b)] {
            from.send_to(b"hello", to.local_addr()).unwrap();
            let (len, sender) = to.recv_from(&mut buf, Duration::from_secs(5)).unwrap().unwrap();
            assert_eq!(&buf[..len], b"hello");
            assert_eq!(&sender, from.local_addr());
            assert_eq!(to.recv_from(&mut buf, Duration::ZERO).unwrap(), None);
        }
        let mismatch = udp_a.send_to(b"x", unix_b.local_addr()).unwrap_err();
        assert_eq!(mismatch.kind(), io::ErrorKind::InvalidInput);

        let unnamed = UnixDatagram::unbound().unwrap();
        unnamed.send_to(b"anon", dir.join("b.sock")).unwrap();
        let error = unix_b.recv_from(&mut buf, Duration::from_secs(5)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        drop((unix_a, unix_b));
    }

    #[test]
    fn daemons_listen_beside_the_controller() {
        let unix: ControlAddr = "unix:/run/braid/lab/x/control.sock".parse().unwrap();
        assert_eq!(unix.local_for("gw-a1").to_string(), "unix:/run/braid/lab/x/gw-a1.sock");
        let v6: ControlAddr = "[::1]:7400".parse().unwrap();
        assert_eq!(v6.local_for("demux-a").to_string(), "[::]:0");
        let v4: ControlAddr = "127.0.0.1:7400".parse().unwrap();
        assert_eq!(v4.local_for("demux-a").to_string(), "0.0.0.0:0");
    }
}
