//! The controller side: authenticated, replay-checked messages in; replies to wherever each
//! daemon last spoke from.
//!
//! The server accepts heartbeats from demuxes and gateways (whose reported identity must be the
//! envelope's sender) and membership acknowledgements from demuxes; anything else authentic is
//! refused as [`ControlError::Unexpected`]. Each accepted message records the address it came
//! from, so a daemon is reachable by its [`DaemonId`] once it has spoken, wherever it lives.
//! The server is blocking and owns its socket; the controller drives it from one thread.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::counters::{ControlCounter, ControlCounters};
use super::endpoint::{Endpoint, Received};
use super::envelope::ControlKey;
use super::error::ControlError;
use super::message::{Body, DaemonId, Role};
use super::transport::ControlAddr;
use super::unix_now_ms;

/// An accepted message from a daemon.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Inbound {
    pub from: ControlAddr,
    pub sender: DaemonId,
    /// The sender's incarnation: a new value means the daemon restarted.
    pub incarnation: u64,
    pub body: Body,
}

/// The controller's control socket.
#[derive(Debug)]
pub struct ControlServer {
    endpoint: Endpoint,
    addresses: HashMap<DaemonId, ControlAddr>,
}

impl ControlServer {
    /// Listens on `listen` as the controller.
    pub fn bind(key: ControlKey, listen: ControlAddr) -> io::Result<Self> {
        Ok(ControlServer {
            endpoint: Endpoint::bind(key, DaemonId::controller(), &listen)?,
            addresses: HashMap::new(),
        })
    }

    /// The bound address (for UDP, with the port the system picked).
    pub fn local_addr(&self) -> &ControlAddr {
        self.endpoint.local_addr()
    }

    /// The counters, to read from other threads.
    pub fn counters(&self) -> Arc<ControlCounters> {
        Arc::clone(self.endpoint.counters())
    }

    /// Waits up to `timeout` for the next accepted message; refused datagrams are counted and
    /// skipped. `now_unix_ms` is the clock the send times are checked against.
    pub fn recv(&mut self, timeout: Duration, now_unix_ms: u64) -> Option<Inbound> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(received) = self.endpoint.recv(left, now_unix_ms) {
                if let Some(inbound) = self.accept(received) {
                    return Some(inbound);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Sends `body` to daemon `to` at the address it last spoke from; `NotFound` if it has not
    /// spoken yet.
    pub fn send(&mut self, to: &DaemonId, body: &Body) -> io::Result<()> {
        let Some(addr) = self.addresses.get(to).cloned() else {
            self.endpoint.counters().inc(ControlCounter::SendErrors);
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{to} has not reported to the controller yet"),
            ));
        };
        self.send_to(&addr, body)
    }

    /// Sends `body` to `to`.
    pub fn send_to(&mut self, to: &ControlAddr, body: &Body) -> io::Result<()> {
        self.endpoint.send(to, body, unix_now_ms())
    }

    /// Where daemon `id` last spoke from.
    pub fn address_of(&self, id: &DaemonId) -> Option<&ControlAddr> {
        self.addresses.get(id)
    }

    /// Forgets daemon `id` (removed from the cluster): its address and its replay state.
    pub fn forget(&mut self, id: &DaemonId) {
        self.addresses.remove(id);
        self.endpoint.guard_mut().forget(id);
    }

    fn accept(&mut self, received: Received) -> Option<Inbound> {
        let Received { from, header, body } = received;
        let sender = header.sender;
        let expected = match &body {
            Body::Heartbeat(heartbeat) => sender.role != Role::Controller && heartbeat.id == sender,
            Body::MembershipAck { .. } => sender.role == Role::Demux,
            Body::Membership(_) => false,
        };
        if !expected {
            self.endpoint.reject(ControlError::Unexpected, &from);
            return None;
        }
        self.endpoint.counters().inc(ControlCounter::Accepted);
        self.addresses.insert(sender.clone(), from.clone());
        Some(Inbound {
            from,
            sender,
            incarnation: header.incarnation,
            body,
        })
    }
}
