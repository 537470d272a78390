//! One end of the control protocol, shared by the daemon client and the controller server:
//! seals and sends with its own [`Sender`], and receives, authenticates and replay-checks,
//! counting every outcome. An authentic message that is not yet fresh is answered here with a
//! [`Body::Hello`] (see [`super::replay`]), so both ends converge within one round trip.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::counters::{ControlCounter, ControlCounters};
use super::envelope::{self, Header, Sender, MAX_DATAGRAM};
use super::error::ControlError;
use super::keyring::Keyring;
use super::message::{Body, DaemonId};
use super::replay::ReplayGuard;
use super::transport::{ControlAddr, ControlSocket};

/// The most peers whose replay state one end keeps (beyond the keyring's own limit).
const MAX_PEERS: usize = 16_384;

/// An authenticated, fresh datagram.
#[derive(Debug)]
pub(super) struct Received {
    pub from: ControlAddr,
    pub header: Header,
    pub body: Body,
}

#[derive(Debug)]
pub(super) struct Endpoint {
    keys: Keyring,
    socket: ControlSocket,
    sender: Sender,
    guard: ReplayGuard,
    counters: Arc<ControlCounters>,
    /// One byte more than the largest datagram, so an oversized one is seen as such.
    buf: Box<[u8]>,
}

impl Endpoint {
    pub fn bind(keys: Keyring, local: &ControlAddr) -> io::Result<Self> {
        let sender = Sender::new(keys.me());
        Ok(Endpoint {
            guard: ReplayGuard::new(sender.incarnation(), MAX_PEERS),
            keys,
            socket: ControlSocket::bind(local)?,
            sender,
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

    pub fn keys_mut(&mut self) -> &mut Keyring {
        &mut self.keys
    }

    pub fn guard(&self) -> &ReplayGuard {
        &self.guard
    }

    pub fn guard_mut(&mut self) -> &mut ReplayGuard {
        &mut self.guard
    }

    /// Seals `body` for peer `to` and sends it to `addr`; counts the datagram as sent or
    /// failed.
    pub fn send(&mut self, to: &DaemonId, addr: &ControlAddr, body: &Body) -> io::Result<()> {
        let header = self.sender.stamp(self.guard.echo_for(to));
        let result = match self.keys.sealing_key(to) {
            None => Err(io::Error::new(io::ErrorKind::NotFound, format!("no key for {to}"))),
            Some(key) => envelope::seal(key, &header, body)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))
                .and_then(|datagram| self.socket.send_to(&datagram, addr)),
        };
        self.counters.inc(match result {
            Ok(()) => ControlCounter::Sent,
            Err(_) => ControlCounter::SendErrors,
        });
        result
    }

    /// Waits up to `timeout` for one datagram and returns it if it is authentic and fresh.
    /// `None` when nothing came, or what came was refused (counted by reason; an authentic
    /// unfresh one is answered with a hello) or could not be received (counted as a receive
    /// error).
    pub fn recv(&mut self, timeout: Duration) -> Option<Received> {
        let (len, from) = match self.socket.recv_from(&mut self.buf, timeout) {
            Ok(Some(received)) => received,
            Ok(None) => return None,
            Err(error) => {
                tracing::debug!(%error, "control receive failed");
                self.counters.inc(ControlCounter::RecvErrors);
                return None;
            }
        };
        let keys = &self.keys;
        let (header, body) = match envelope::open(|sender| keys.opening_key(sender), &self.buf[..len]) {
            Ok(opened) => opened,
            Err(reason) => {
                self.reject(reason, &from);
                return None;
            }
        };
        match self.guard.check(&header) {
            Ok(()) => Some(Received { from, header, body }),
            Err(ControlError::Unfresh) => {
                self.reject(ControlError::Unfresh, &from);
                if self.send(&header.sender, &from, &Body::Hello).is_ok() {
                    self.counters.inc(ControlCounter::HellosSent);
                }
                None
            }
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
