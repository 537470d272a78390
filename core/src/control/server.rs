//! The controller side: authenticated, replay-checked messages in; replies to wherever each
//! daemon last spoke from.
//!
//! The server accepts heartbeats from demuxes and gateways (whose reported identity must be the
//! envelope's sender) and membership acknowledgements from demuxes; a hello only records where
//! its sender lives; anything else authentic is refused as [`ControlError::Unexpected`]. Each
//! accepted message records the address it came from, so a daemon is reachable by its
//! [`DaemonId`] once it has spoken, wherever it lives.
//!
//! Only the cluster's daemons can speak: the keyring derives keys for exactly the members the
//! controller names ([`ControlServer::set_members`]), so the address and replay maps never hold
//! more entries than the cluster has daemons, and a removed daemon's entries go with it. The
//! server is blocking and owns its socket; the controller drives it from one thread.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::counters::{ControlCounter, ControlCounters};
use super::endpoint::{Endpoint, Received};
use super::error::ControlError;
use super::keyring::Keyring;
use super::message::{Body, DaemonId, Role};
use super::transport::ControlAddr;

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
    /// Listens on `listen` as the controller whose keyring is `keys`
    /// ([`Keyring::controller`]).
    pub fn bind(keys: Keyring, listen: ControlAddr) -> io::Result<Self> {
        Ok(ControlServer {
            endpoint: Endpoint::bind(keys, &listen)?,
            addresses: HashMap::new(),
        })
    }

    /// The daemons of the cluster are now exactly `members`: keys are derived for new ones,
    /// and everything known of the others (key, address, replay state) is dropped.
    pub fn set_members(&mut self, members: impl IntoIterator<Item = DaemonId>) {
        let members: HashSet<DaemonId> = members.into_iter().collect();
        let gone: Vec<DaemonId> = self
            .addresses
            .keys()
            .filter(|id| !members.contains(id))
            .cloned()
            .collect();
        for id in gone {
            self.forget(&id);
        }
        self.endpoint.keys_mut().set_members(members);
    }

    /// The life of `id` the server's messages to it echo: its latest authentic incarnation.
    pub fn echo_for(&self, id: &DaemonId) -> u64 {
        self.endpoint.guard().echo_for(id)
    }

    /// How many daemons the server keeps state for: (addresses, replay entries).
    pub fn tracked(&self) -> (usize, usize) {
        (self.addresses.len(), self.endpoint.guard().len())
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
    /// skipped, hellos are taken in silently.
    pub fn recv(&mut self, timeout: Duration) -> Option<Inbound> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(received) = self.endpoint.recv(left) {
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
        self.endpoint.send(to, &addr, body)
    }

    /// Where daemon `id` last spoke from.
    pub fn address_of(&self, id: &DaemonId) -> Option<&ControlAddr> {
        self.addresses.get(id)
    }

    /// Forgets daemon `id`'s address and replay state (it is heard afresh next time).
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
            Body::Hello => true,
            Body::Membership(_) => false,
        };
        if !expected {
            self.endpoint.reject(ControlError::Unexpected, &from);
            return None;
        }
        self.endpoint.counters().inc(ControlCounter::Accepted);
        self.addresses.insert(sender.clone(), from.clone());
        if body == Body::Hello {
            return None;
        }
        Some(Inbound {
            from,
            sender,
            incarnation: header.incarnation,
            body,
        })
    }
}
