//! Administration: every operation that changes the cluster (reload, drain, remove, activate)
//! arrives here, never over HTTP, and only from someone who proved who they are.
//!
//! Two channels, one protocol ([`protocol`]: a JSON line in, a JSON line out):
//!
//! * **local**, always on: a unix stream socket (`controller.admin_socket`, default
//!   `/run/braid/<cluster>/admin.sock`), mode 0600 from the moment it accepts connections, and
//!   every connection's peer checked with `SO_PEERCRED`: only root and the controller's own
//!   user are served. Anyone else (a file mode gone wrong, a socket passed through a
//!   container) gets a refusal line, a warning in the log with their uid and pid, and a count
//!   in `braid_admin_refused_total{reason="peer_uid"}`. A stale socket file from a dead
//!   controller is replaced; a live one (another controller) stops this one from starting.
//! * **remote**, opt-in: `controller.admin_listen` (TCP) with `controller.admin_key_file`. Each
//!   request is signed with the shared admin key (HMAC-SHA256), dated and carries a nonce;
//!   wrong tags, timestamps more than 30 s off and replayed nonces are refused and counted.
//!
//! [`server`] runs both listeners (a thread per connection, capped, a whole-request deadline);
//! [`client`] is what `braid gateway|reload|scale` use. Accepted commands reach the supervisor
//! loop as [`CommandRequest`]s over a channel and wait for its answer, so no listener thread
//! touches live state.

pub mod client;
pub mod protocol;
pub mod server;

use std::sync::mpsc::{self, Sender};
use std::time::Duration;

/// An operator command for the supervisor loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Re-read the cluster file and apply the difference.
    Reload,
    Drain(u16),
    Remove(u16),
    Activate(u16),
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Reload => f.write_str("reload"),
            Command::Drain(pair) => write!(f, "drain pair {pair}"),
            Command::Remove(pair) => write!(f, "remove pair {pair}"),
            Command::Activate(pair) => write!(f, "activate pair {pair}"),
        }
    }
}

/// A command and where to send its answer (`Ok(message)` or `Err(reason)`).
pub type CommandRequest = (Command, Sender<Result<String, String>>);

/// How long a command may wait for the supervisor loop's answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The `reason` labels of `braid_admin_refused_total`, all exported from the start.
pub const REFUSAL_REASONS: &[&str] = &[
    "peer_uid",
    "peer_unknown",
    "bad_signature",
    "stale",
    "replayed",
    "replay_memory_full",
    "malformed",
    "deadline",
    "too_many_connections",
];

/// Hands `command` to the supervisor loop and waits for its answer.
pub fn execute(commands: &Sender<CommandRequest>, command: Command) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    if commands.send((command, tx)).is_err() {
        return Err("the controller is shutting down".into());
    }
    match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "the controller did not answer in {} s",
            COMMAND_TIMEOUT.as_secs()
        )),
    }
}
