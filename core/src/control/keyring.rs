//! Which keys one end of the control protocol holds, and which it seals and opens with.
//!
//! Every daemon has one link with the controller, keyed from its [`RoleKey`] with one
//! HMAC-SHA256 key per direction (HMAC(role key, `to controller`) and HMAC(role key, `from
//! controller`)), so a message can never be reflected back as if sent the other way.
//!
//! * A daemon's [`Keyring::daemon`] holds only its own link: it seals to the controller and
//!   opens what the controller sends it, and nothing else. A stolen gateway key lets the thief
//!   report as that gateway and nothing more: it opens no other daemon's traffic and seals no
//!   push any demux accepts.
//! * A controller's [`Keyring::controller`] (or, in a controller set, [`Keyring::controller_member`])
//!   holds the cluster secret and derives the link of
//!   each daemon of the cluster ([`Keyring::set_members`] when the fleet changes). A sender
//!   outside that set is refused before any cryptography, which also bounds every per-sender
//!   map behind the keyring.

use std::collections::HashMap;
use std::fmt;

use ring::hmac;

use super::message::{DaemonId, Role};
use crate::keys::{ClusterSecret, RoleKey};

/// One daemon's link with the controller: a key per direction.
#[derive(Clone)]
pub struct LinkKeys {
    to_controller: hmac::Key,
    from_controller: hmac::Key,
}

impl LinkKeys {
    /// The link keyed by `role_key`.
    pub fn new(role_key: &RoleKey) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, role_key.as_bytes());
        let direction = |label: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label).as_ref());
        LinkKeys {
            to_controller: direction(b"braid control v2 to controller"),
            from_controller: direction(b"braid control v2 from controller"),
        }
    }
}

/// What one end holds; see the module docs.
#[derive(Clone)]
pub enum Keyring {
    Daemon {
        me: DaemonId,
        link: Box<LinkKeys>,
    },
    Controller {
        /// Which member of the controller set this is.
        me: DaemonId,
        secret: ClusterSecret,
        links: HashMap<DaemonId, LinkKeys>,
    },
}

impl Keyring {
    /// Daemon `me`, holding its own role key.
    pub fn daemon(me: DaemonId, role_key: &RoleKey) -> Self {
        Keyring::Daemon {
            me,
            link: Box::new(LinkKeys::new(role_key)),
        }
    }

    /// The controller of a cluster whose daemons are `members`.
    pub fn controller(secret: ClusterSecret, members: impl IntoIterator<Item = DaemonId>) -> Self {
        Keyring::controller_member(0, secret, members)
    }

    /// Member `index` of the cluster's controller set (every member holds the same keys).
    pub fn controller_member(index: u16, secret: ClusterSecret, members: impl IntoIterator<Item = DaemonId>) -> Self {
        let mut keyring = Keyring::Controller {
            me: DaemonId::controller_member(index),
            secret,
            links: HashMap::new(),
        };
        keyring.set_members(members);
        keyring
    }

    /// The controller: the daemons it talks to are now exactly `members` (a daemon's own
    /// keyring ignores this).
    pub fn set_members(&mut self, members: impl IntoIterator<Item = DaemonId>) {
        let Keyring::Controller { secret, links, .. } = self else {
            return;
        };
        let members: Vec<DaemonId> = members.into_iter().filter(|id| id.role != Role::Controller).collect();
        links.retain(|id, _| members.contains(id));
        for id in members {
            links
                .entry(id)
                .or_insert_with_key(|id| LinkKeys::new(&secret.role_key(&id.wire_name())));
        }
    }

    /// Who this end is.
    pub fn me(&self) -> DaemonId {
        match self {
            Keyring::Daemon { me, .. } => me.clone(),
            Keyring::Controller { me, .. } => me.clone(),
        }
    }

    /// How many peers this end can talk to.
    pub fn peers(&self) -> usize {
        match self {
            Keyring::Daemon { .. } => 1,
            Keyring::Controller { links, .. } => links.len(),
        }
    }

    /// The key to seal a message to `to` with; `None` if this end does not talk to `to`.
    pub fn sealing_key(&self, to: &DaemonId) -> Option<&hmac::Key> {
        match self {
            Keyring::Daemon { link, .. } => (to.role == Role::Controller).then_some(&link.to_controller),
            Keyring::Controller { links, .. } => links.get(to).map(|link| &link.from_controller),
        }
    }

    /// The key a message from `from` must be sealed with; `None` if this end does not talk to
    /// `from`.
    pub fn opening_key(&self, from: &DaemonId) -> Option<&hmac::Key> {
        match self {
            Keyring::Daemon { link, .. } => (from.role == Role::Controller).then_some(&link.from_controller),
            Keyring::Controller { links, .. } => links.get(from).map(|link| &link.to_controller),
        }
    }
}

impl fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkKeys(<redacted>)")
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keyring::Daemon { me, .. } => write!(f, "Keyring::Daemon({me}, <redacted>)"),
            Keyring::Controller { links, .. } => write!(f, "Keyring::Controller({} links, <redacted>)", links.len()),
        }
    }
}
