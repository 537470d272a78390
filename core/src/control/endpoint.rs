//! One end of the control protocol, shared by the daemon client and the controller server:
//! seals and sends with its own [`Sender`], and receives, authenticates and replay-checks,
//! counting every outcome.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::counters::{ControlCounter, ControlCounters};
use super::envelope::{self, ControlKey, Header, Sender, MAX_DATAGRAM};
use super::error::ControlError;
use super::message::{Body, DaemonId};
use super::replay::ReplayGuard;
use super::transport::{ControlAddr, ControlSocket};

/// An authenticated, fresh datagram.
#[derive(Debug)]
pub(super) struct Received {
    pub from: ControlAddr,
    pub header: Header,
    pub body: Body,
}

#[derive(Debug)]
pub(super) struct Endpoint {
    key: ControlKey,
    socket: ControlSocket,
    sender: Sender,
    guard: ReplayGuard,
    counters: Arc<ControlCounters>,
    /// One byte more than the largest datagram, so an oversized one is seen as such.
    buf: Box<[u8]>,
}

impl Endpoint {
    pub fn bind(key: ControlKey, me: DaemonId, local: &ControlAddr) -> io::Result<Self> {
        Ok(Endpoint {
            key,
            socket: ControlSocket::bind(local)?,
            sender: Sender::new(me),
            guard: ReplayGuard::default(),
            counters: Arc::default(),
            buf: vec![0; MAX_DATAGRAM + 1].into_boxed_slice(),
        })
    }

    pub fn local_addr(&self) -> &ControlAddr {
        self.socket.local_addr()
    }

    pub fn me(&self) -> &DaemonId {
        self.sender.id()
    }

    pub fn counters(&self) -> &Arc<ControlCounters> {
        &self.counters
    }

    pub fn guard_mut(&mut self) -> &mut ReplayGuard {
        &mut self.guard
    }

    /// Seals `body` and sends it to `to`; counts the datagram as sent or failed.
    pub fn send(&mut self, to: &ControlAddr, body: &Body, now_unix_ms: u64) -> io::Result<()> {
        let header = self.sender.stamp(now_unix_ms);
        let result = envelope::seal(&self.key, &header, body)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))
            .and_then(|datagram| self.socket.send_to(&datagram, to));
        self.counters.inc(match result {
            Ok(()) => ControlCounter::Sent,
            Err(_) => ControlCounter::SendErrors,
        });
        result
    }

    /// Waits up to `timeout` for one datagram and returns it if it is authentic and fresh.
    /// `None` when nothing came, or what came was refused (counted by reason) or could not be
    /// received (counted as a receive error).
    pub fn recv(&mut self, timeout: Duration, now_unix_ms: u64) -> Option<Received> {
        let (len, from) = match self.socket.recv_from(&mut self.buf, timeout) {
            Ok(Some(received)) => received,
            Ok(None) => return None,
            Err(error) => {
                tracing::debug!(%error, "control receive failed");
                self.counters.inc(ControlCounter::RecvErrors);
                return None;
            }
        };
        let checked = envelope::open(&self.key, &self.buf[..len]).and_then(|(header, body)| {
            self.guard.check(&header, now_unix_ms)?;
            Ok((header, body))
        });
        match checked {
            Ok((header, body)) => Some(Received { from, header, body }),
            Err(reason) => {
                self.reject(reason, &from);
                None
            }
        }
    }

    /// Counts a refused datagram from `from`.
    pub fn reject(&self, reason: ControlError, from: &ControlAddr) {
        tracing::debug!(%from, %reason, "control datagram refused");
        self.counters.reject(reason);
    }
}
