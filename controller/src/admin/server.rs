//! The admin listeners: the local socket ([`AdminSocket`], [`serve_unix`]) and the signed TCP
//! channel ([`serve_tcp`]).
//!
//! Each accepts without blocking (so it notices the stop flag) and serves every connection on
//! its own thread, at most [`MAX_CONNECTIONS`] at once; the request line must arrive whole
//! within [`REQUEST_DEADLINE`]. The local socket checks the peer's credentials before it reads
//! a byte; the TCP channel verifies the signature, timestamp and nonce before it believes one.
//! Every refusal is answered with a `refused:` line, logged with who asked, and counted.

use std::fs::{self, Permissions};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use braid_core::control::unix_now_ms;
use braid_core::daemon::StopFlag;
use braid_core::keys::AdminKey;

use super::protocol::{self, ProtocolError, ReplayMemory, Response, MAX_LINE};
use super::{execute, Command, CommandRequest};
use crate::conn::{self, ReadError, Slots, Tally};

/// Connections served at once per listener; more are refused and counted.
pub const MAX_CONNECTIONS: usize = 16;
/// The whole request line must arrive within this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Whether a local peer running as `uid` may administer a controller running as `own_euid`.
pub fn may_administer(uid: u32, own_euid: u32) -> bool {
    uid == 0 || uid == own_euid
}

/// The local admin socket, listening. Dropping it removes the socket file if it is still the
/// one this controller made.
#[derive(Debug)]
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file this controller bound.
    identity: (u64, u64),
}

impl AdminSocket {
    /// Listens at `path`, owner-only (mode 0600) before the first connection can be accepted.
    /// A socket file nobody listens on (left by a controller that died) is replaced; one that
    /// answers belongs to a running controller, and this one refuses to start.
    pub fn bind(path: &Path) -> Result<AdminSocket> {
        let shown = path.display();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                bail!("{shown} exists and is not a socket; move it away or set another controller.admin_socket")
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => bail!(
                    "another controller is serving the admin socket {shown}; stop it first, or give this \
                     cluster its own controller.admin_socket"
                ),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %shown, "replacing a stale admin socket (nothing listens on it)");
                    fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {shown}"))?;
                }
                Err(e) => bail!("{shown}: cannot tell whether another controller listens on it: {e}"),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => bail!("{shown}: {e}"),
        }
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
            .context("cannot create the admin socket")?;
        socket
            .bind(&socket2::SockAddr::unix(path)?)
            .with_context(|| format!("cannot bind the admin socket {shown}"))?;
        // Bound but not yet listening: a connect now is refused, so tightening the mode here
        // leaves no moment in which another user could get in.
        let listening = fs::set_permissions(path, Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {shown} to its owner"))
            .and_then(|()| socket.listen(64).context("cannot listen on the admin socket"))
            .and_then(|()| fs::metadata(path).context("cannot stat the admin socket"));
        let meta = match listening {
            Ok(meta) => meta,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(e);
            }
        };
        let listener = UnixListener::from(OwnedFd::from(socket));
        listener.set_nonblocking(true)?;
        Ok(AdminSocket {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What every connection handler needs.
struct Shared {
    commands: Sender<CommandRequest>,
    refused: Arc<Tally>,
}

impl Shared {
    /// Answers a refusal, counts it under `reason`.
    fn refuse(&self, stream: &mut impl Write, reason: &'static str, why: impl std::fmt::Display) {
        self.refused.count(reason);
        let _ = stream.write_all(Response::refused(why).encode().as_bytes());
    }

    fn run(&self, stream: &mut impl Write, command: Command) {
        let answer = match execute(&self.commands, command) {
            Ok(message) => Response::ok(message),
            Err(reason) => Response::error(reason),
        };
        let _ = stream.write_all(answer.encode().as_bytes());
    }
}

/// Serves the local admin socket until `stop` is set; counts refusals in `refused`.
pub fn serve_unix(socket: AdminSocket, commands: Sender<CommandRequest>, refused: Arc<Tally>, stop: StopFlag) {
    let shared = Arc::new(Shared { commands, refused });
    let own_euid = rustix::process::geteuid().as_raw();
    let slots = Slots::new(MAX_CONNECTIONS);
    tracing::info!(socket = %socket.path.display(), "admin socket ready (root and uid {own_euid} only)");
    while !stop.is_stopped() {
        match socket.listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                let Some(slot) = slots.take() else {
                    tracing::warn!("admin socket: {MAX_CONNECTIONS} connections already open; refused one");
                    shared.refuse(&mut stream, "too_many_connections", "too many connections");
                    continue;
                };
                let shared = shared.clone();
                let spawned = std::thread::Builder::new().name("admin-local".into()).spawn(move || {
                    let _slot = slot;
                    local_connection(stream, &shared, own_euid);
                });
                if let Err(e) = spawned {
                    tracing::warn!("admin socket: cannot start a thread: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                tracing::warn!("admin socket accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn local_connection(mut stream: UnixStream, shared: &Shared, own_euid: u32) {
    let (uid, pid) = match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(cred) => (cred.uid.as_raw(), rustix::process::Pid::as_raw(Some(cred.pid))),
        Err(e) => {
            tracing::warn!("admin socket: refused a connection whose peer is unknown ({e})");
            shared.refuse(&mut stream, "peer_unknown", "cannot identify the connecting process");
            return;
        }
    };
    if !may_administer(uid, own_euid) {
        tracing::warn!(
            uid,
            pid,
            "admin socket: refused uid {uid} (pid {pid}): only root and uid {own_euid} may administer this controller"
        );
        shared.refuse(
            &mut stream,
            "peer_uid",
            format_args!("uid {uid} may not administer this controller (only root and uid {own_euid})"),
        );
        return;
    }
    let line = match read_line(&mut stream) {
        Ok(line) => line,
        Err((reason, why)) => {
            tracing::warn!(uid, pid, "admin socket: {why}");
            shared.refuse(&mut stream, reason, why);
            return;
        }
    };
    let command = match protocol::parse_local(&line).and_then(|r| r.command()) {
        Ok(command) => command,
        Err(e) => {
            tracing::warn!(uid, pid, "admin socket: {e}");
            shared.refuse(&mut stream, e.reason(), e);
            return;
        }
    };
    tracing::info!(uid, pid, "admin: {command} (local socket)");
    shared.run(&mut stream, command);
}

/// Serves signed requests on `listener` until `stop` is set; counts refusals in `refused`.
pub fn serve_tcp(
    listener: TcpListener,
    key: AdminKey,
    commands: Sender<CommandRequest>,
    refused: Arc<Tally>,
    stop: StopFlag,
) {
    let shared = Arc::new(Shared { commands, refused });
    let key = Arc::new(key);
    let memory = Arc::new(Mutex::new(ReplayMemory::default()));
    let slots = Slots::new(MAX_CONNECTIONS);
    let _ = listener.set_nonblocking(true);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "signed admin channel ready");
    }
    while !stop.is_stopped() {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                let Some(slot) = slots.take() else {
                    tracing::warn!(%peer, "admin channel: {MAX_CONNECTIONS} connections already open; refused one");
                    shared.refuse(&mut stream, "too_many_connections", "too many connections");
                    continue;
                };
                let (shared, key, memory) = (shared.clone(), key.clone(), memory.clone());
                let spawned = std::thread::Builder::new().name("admin-remote".into()).spawn(move || {
                    let _slot = slot;
                    remote_connection(stream, peer, &shared, &key, &memory);
                });
                if let Err(e) = spawned {
                    tracing::warn!("admin channel: cannot start a thread: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                tracing::warn!("admin channel accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn remote_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    key: &AdminKey,
    memory: &Mutex<ReplayMemory>,
) {
    let line = match read_line(&mut stream) {
        Ok(line) => line,
        Err((reason, why)) => {
            tracing::warn!(%peer, "admin channel: {why}");
            shared.refuse(&mut stream, reason, why);
            return;
        }
    };
    let verified = {
        let mut memory = memory.lock().unwrap_or_else(|p| p.into_inner());
        protocol::verify(&line, key, unix_now_ms(), &mut memory)
    };
    let command = match verified.and_then(|r| r.command()) {
        Ok(command) => command,
        Err(e) => {
            tracing::warn!(%peer, reason = e.reason(), "admin channel: refused a request from {peer}: {e}");
            shared.refuse(&mut stream, e.reason(), e);
            return;
        }
    };
    tracing::info!(%peer, "admin: {command} (signed, from {peer})");
    shared.run(&mut stream, command);
}

/// The request line, whole, within the deadline; or the refusal reason and why.
fn read_line(stream: &mut impl conn::TimedRead) -> Result<Vec<u8>, (&'static str, String)> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    match conn::read_until(stream, deadline, MAX_LINE + 2, |b| b.contains(&b'\n')) {
        Ok(mut bytes) => {
            let end = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
            bytes.truncate(end);
            Ok(bytes)
        }
        Err(ReadError::Deadline) => Err((
            "deadline",
            format!("no whole request line within {} s", REQUEST_DEADLINE.as_secs()),
        )),
        Err(ReadError::TooLarge) => Err(("malformed", ProtocolError::TooLong.to_string())),
        Err(ReadError::Closed) => Err(("malformed", "the connection closed before a whole request line".into())),
        Err(ReadError::Io(e)) => Err(("malformed", format!("reading the request: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_controllers_user_may_administer() {
        assert!(may_administer(0, 1000));
        assert!(may_administer(1000, 1000));
        assert!(!may_administer(65534, 1000));
        assert!(!may_administer(65534, 0));
    }

    #[test]
    fn a_live_socket_is_not_replaced_and_a_stale_one_is() {
        let dir = std::env::temp_dir().join(format!("braid-admin-bind-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("admin.sock");
        let first = AdminSocket::bind(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let error = AdminSocket::bind(&path).unwrap_err().to_string();
        assert!(error.contains("another controller"), "{error}");
        // A dead controller's socket: the file stays, nothing listens.
        let stale = std::os::unix::net::UnixListener::bind(dir.join("stale.sock")).unwrap();
        drop(stale);
        let second = AdminSocket::bind(&dir.join("stale.sock")).unwrap();
        drop(first);
        assert!(!path.exists(), "a controller removes its socket when it stops");
        fs::write(dir.join("file"), "x").unwrap();
        let error = AdminSocket::bind(&dir.join("file")).unwrap_err().to_string();
        assert!(error.contains("not a socket"), "{error}");
        drop(second);
        let _ = fs::remove_dir_all(&dir);
    }
}
