//! The operator's end of the admin channel: one request, one answer, and errors that say what
//! to do (run as root, start the controller, check the key or the clocks).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use braid_core::control::unix_now_ms;
use braid_core::keys::AdminKey;
use ring::rand::{SecureRandom, SystemRandom};

use super::protocol::{self, Request, Response, MAX_LINE};
use super::{Command, COMMAND_TIMEOUT};

/// Where to send administration requests.
#[derive(Debug)]
pub enum Channel {
    /// The controller's local admin socket.
    Local(PathBuf),
    /// The controller's signed TCP channel, with the admin key.
    Remote { addr: SocketAddr, key: AdminKey },
}

impl Channel {
    /// The signed channel at `addr`, with the admin key read from `key_file` (mode 0600).
    pub fn remote(addr: SocketAddr, key_file: &Path) -> Result<Channel> {
        let key = AdminKey::load(key_file).context("--admin-key")?;
        Ok(Channel::Remote { addr, key })
    }
}

/// Asks the controller to run `command`; returns its answer, or an error with its reason.
pub fn send(channel: &Channel, command: &Command) -> Result<String> {
    let request = Request::new(command, unix_now_ms(), nonce()?);
    let answer = match channel {
        Channel::Local(path) => {
            let stream = connect_local(path)?;
            exchange(stream, &request.encode())
                .with_context(|| format!("talking to the controller on {}", path.display()))?
        }
        Channel::Remote { addr, key } => {
            let stream = TcpStream::connect_timeout(addr, Duration::from_secs(5)).with_context(|| {
                format!("cannot reach the controller's admin channel at {addr} (is controller.admin_listen set?)")
            })?;
            stream.set_read_timeout(Some(COMMAND_TIMEOUT + Duration::from_secs(5)))?;
            exchange(stream, &protocol::sign(&request, key))
                .with_context(|| format!("talking to the controller at {addr}"))?
        }
    };
    if answer.ok {
        Ok(answer.message)
    } else if answer.message.starts_with("refused:") {
        bail!("the controller {}", answer.message)
    } else {
        bail!("the controller answered: {}", answer.message)
    }
}

fn connect_local(path: &Path) -> Result<UnixStream> {
    let shown = path.display();
    match UnixStream::connect(path) {
        Ok(stream) => {
            stream.set_read_timeout(Some(COMMAND_TIMEOUT + Duration::from_secs(5)))?;
            Ok(stream)
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let owner = std::fs::metadata(path)
                .map(|m| format!(" (uid {})", m.uid()))
                .unwrap_or_default();
            bail!(
                "permission denied on the admin socket {shown}: administering this controller needs root or \
                 the controller's user{owner}; run the command as one of them (e.g. with sudo)"
            )
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("no admin socket at {shown}: is the controller (`braid up`) running with this cluster file?")
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            bail!("nothing listens on the admin socket {shown}: the controller is not running")
        }
        Err(e) => Err(e).with_context(|| format!("cannot connect to the admin socket {shown}")),
    }
}

fn exchange<S: Read + Write>(mut stream: S, line: &str) -> Result<Response> {
    stream.write_all(line.as_bytes())?;
    stream.write_all(b"\n")?;
    stream.flush()?;
    let mut answer = Vec::new();
    BufReader::new(stream.take(MAX_LINE as u64 * 4))
        .read_until(b'\n', &mut answer)
        .context("reading the answer")?;
    if answer.is_empty() {
        bail!("the controller closed the connection without an answer");
    }
    Response::decode(&answer).map_err(|e| anyhow::anyhow!("{e}"))
}

/// 16 random bytes in hex.
fn nonce() -> Result<String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
