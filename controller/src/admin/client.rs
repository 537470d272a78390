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

/// Runs `command` on a controller set, `channels[i]` reaching member `i`. A reload goes to
/// every member (each re-reads its file). Any other command goes to the leader: members are
/// asked in turn, a standby's refusal names the leader, which is asked next; the first member
/// that accepts answers. A member that is down or refuses changes nothing, so asking several
/// is safe. Fails with every member's answer when none accepted.
///
/// Members on several hosts usually share one admin socket path (each host's own): from one
/// host, that path reaches only the member on it. A channel that repeats an earlier member's
/// socket is never sent to; its line says it was not reached and how to reach it.
pub fn send_to_set(channels: &[Channel], command: &Command) -> Result<String> {
    if let [only] = channels {
        return send(only, command);
    }
    let send = |i: usize| match same_socket_as(channels, i) {
        Some(first) => Err(not_reached(channels, i, first)),
        None => send(&channels[i], command),
    };
    if *command == Command::Reload {
        let answers: Vec<(usize, Result<String>)> = (0..channels.len()).map(|i| (i, send(i))).collect();
        let lines: Vec<String> = answers
            .iter()
            .map(|(i, a)| match a {
                Ok(message) => format!("member {i}: {}", message.trim()),
                Err(e) => format!("member {i}: {e:#}"),
            })
            .collect();
        if answers.iter().any(|(_, a)| a.is_ok()) {
            return Ok(lines.join("\n"));
        }
        bail!("no member of the controller set reloaded:\n{}", lines.join("\n"));
    }
    let mut asked = vec![false; channels.len()];
    let mut next = Some(0);
    let mut refusals = Vec::new();
    while let Some(i) = next {
        asked[i] = true;
        match send(i) {
            Ok(message) => return Ok(message),
            Err(e) => {
                let hint = named_leader(&format!("{e:#}")).filter(|&n| n < channels.len() && !asked[n]);
                refusals.push(format!("member {i}: {e:#}"));
                next = hint.or_else(|| asked.iter().position(|&a| !a));
            }
        }
    }
    bail!(
        "no member of the controller set took the command:\n{}",
        refusals.join("\n")
    )
}

/// The first member before `i` whose channel is the same local admin socket as member `i`'s.
fn same_socket_as(channels: &[Channel], i: usize) -> Option<usize> {
    let Channel::Local(path) = &channels[i] else {
        return None;
    };
    channels[..i]
        .iter()
        .position(|c| matches!(c, Channel::Local(p) if p == path))
}

/// Why member `i`, whose admin socket is member `first`'s, was not asked.
fn not_reached(channels: &[Channel], i: usize, first: usize) -> anyhow::Error {
    let shown = match &channels[i] {
        Channel::Local(path) => path.display().to_string(),
        Channel::Remote { addr, .. } => addr.to_string(),
    };
    anyhow::anyhow!(
        "not reached: its admin socket {shown} is member {first}'s too, so it is on another host; \
         reach it with --remote HOST:PORT --admin-key FILE (its controller.admin_listen)"
    )
}

/// The leader a standby's refusal names ("... member N leads ...").
fn named_leader(refusal: &str) -> Option<usize> {
    let (before, _) = refusal.split_once(" leads")?;
    before.rsplit_once("member ")?.1.trim().parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_standby_refusal_names_the_leader() {
        let refusal = "the controller answered: this controller (member 0) stands by: member 2 leads (term 9); send the command there";
        assert_eq!(named_leader(refusal), Some(2));
        assert_eq!(named_leader("member 1: no admin socket at /x"), None);
        assert_eq!(named_leader("stands by and no leader is known yet"), None);
    }

    /// A fake member on a unix socket: answers one request with `answer`; returns how many it
    /// served (0 when nobody asked within 5 s).
    fn member(dir: &Path, i: usize, answer: &'static str) -> (PathBuf, std::thread::JoinHandle<usize>) {
        let path = dir.join(format!("admin-{i}.sock"));
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let handle = std::thread::spawn(move || {
            let mut served = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while served == 0 && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let mut line = Vec::new();
                        BufReader::new(&mut stream).read_until(b'\n', &mut line).unwrap();
                        stream.write_all(format!("{}\n", answer.trim_end()).as_bytes()).unwrap();
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            served
        });
        (path, handle)
    }

    fn answer(ok: bool, message: &str) -> &'static str {
        Box::leak(
            Response {
                ok,
                message: message.into(),
            }
            .encode()
            .into_boxed_str(),
        )
    }

    #[test]
    fn a_command_reaches_the_leader_through_a_standby_and_past_a_dead_member() {
        let scratch = braid_core::testing::ScratchDir::new("admin-set");
        let dir = scratch.path();
        // Member 0 stands by and names member 2; member 1 is down (no socket); member 2 leads.
        let standby = answer(
            false,
            "this controller (member 0) stands by: member 2 leads (term 9); send the command there",
        );
        let (s0, h0) = member(dir, 0, standby);
        let (s2, h2) = member(dir, 2, answer(true, "pair 1 draining (deadline 30 s)"));
        let channels = [
            Channel::Local(s0),
            Channel::Local(dir.join("admin-1.sock")),
            Channel::Local(s2),
        ];
        let got = send_to_set(&channels, &Command::Drain(1)).unwrap();
        assert_eq!(got, "pair 1 draining (deadline 30 s)");
        assert_eq!((h0.join().unwrap(), h2.join().unwrap()), (1, 1), "each asked once");
    }

    #[test]
    fn without_a_leader_every_members_answer_is_reported() {
        let scratch = braid_core::testing::ScratchDir::new("admin-noleader");
        let dir = scratch.path();
        let none = answer(false, "this controller (member 0) stands by and no leader is known yet");
        let (s0, h0) = member(dir, 0, none);
        let channels = [Channel::Local(s0), Channel::Local(dir.join("admin-1.sock"))];
        let err = format!("{:#}", send_to_set(&channels, &Command::Remove(2)).unwrap_err());
        assert!(err.contains("member 0:") && err.contains("no leader is known"), "{err}");
        assert!(err.contains("member 1:") && err.contains("no admin socket"), "{err}");
        assert_eq!(h0.join().unwrap(), 1);
    }

    #[test]
    fn members_sharing_one_socket_path_are_asked_once_and_said_not_reached() {
        let scratch = braid_core::testing::ScratchDir::new("admin-shared");
        let dir = scratch.path();
        // Three members on three hosts, each with the default admin socket: from this host the
        // path reaches member 0 only.
        let (s0, h0) = member(dir, 0, answer(true, "reloaded: 2 pairs"));
        let channels = [
            Channel::Local(s0.clone()),
            Channel::Local(s0.clone()),
            Channel::Local(s0),
        ];
        let got = send_to_set(&channels, &Command::Reload).unwrap();
        assert!(got.contains("member 0: reloaded: 2 pairs"), "{got}");
        for i in [1, 2] {
            assert!(
                got.contains(&format!("member {i}: not reached")) && got.contains("--remote HOST:PORT"),
                "{got}"
            );
        }
        assert_eq!(h0.join().unwrap(), 1, "the shared socket was asked once");
    }
}
