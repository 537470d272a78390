//! What the tests of every braid crate share: a scratch directory removed when dropped, and
//! loopback ports that were free a moment ago. No daemon uses it.

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

/// A fresh directory, `braid-NAME-PID` under the system's temporary directory, removed with
/// everything in it when dropped (also when the test panics). One left over from an earlier
/// run of the same name and process id is emptied first. Names must differ between the tests
/// of one test binary, which run in one process.
#[derive(Debug)]
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// Creates the directory; panics if it cannot (a test cannot go on without it).
    pub fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("braid-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        ScratchDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A loopback UDP port that was free a moment ago (another process may take it before the
/// caller binds it; tests accept that).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("bind a loopback UDP socket")
        .port()
}

/// A loopback TCP port that was free a moment ago (see [`free_udp_port`]).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback TCP listener")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_dir_is_created_empty_and_removed_on_drop() {
        let path = {
            let dir = ScratchDir::new("testing-scratch");
            assert!(dir.path().is_dir());
            fs::write(dir.path().join("f"), b"x").unwrap();
            dir.0.clone()
        };
        assert!(!path.exists(), "removed with its contents");
        let dir = ScratchDir::new("testing-scratch");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn free_ports_are_bindable_loopback_ports() {
        assert_ne!(free_udp_port(), 0);
        assert_ne!(free_tcp_port(), 0);
    }
}
