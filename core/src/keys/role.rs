//! Keys derived from the cluster secret, one per role, so no daemon holds more than its job
//! needs.
//!
//! The cluster secret stays with the controller (and `braid keygen`). From it come:
//!
//! * a [`RoleKey`] per daemon (`demux/<site>`, `gw/<site>/<pair>`): HMAC-SHA256(secret,
//!   `braid role key v1 ` ‖ daemon name). The daemon authenticates its reports with it and
//!   checks the controller's pushes with it (the control envelope derives one key per
//!   direction from it). The controller derives every daemon's role key on demand, so it can
//!   talk to all of them; a daemon holding its own key can speak only as itself, and only to
//!   the controller;
//! * the [`FlowHashKey`] both demuxes share: HMAC-SHA256(secret, `braid flow hash v1`), the
//!   key of the symmetric flow hash (steering is unchanged from when demuxes derived it
//!   themselves from the secret).
//!
//! Each lives in its own 0600 file in the role-key directory ([`role_key_file`],
//! [`flow_hash_key_file`]): `role-keys/` beside the cluster secret file. `braid keygen
//! --role-keys` writes them all; a controller writes the missing ones of the daemons it launches.

use std::path::{Path, PathBuf};

use ring::hmac;

use super::{decode_key, load_key_file, random_bytes, wipe, ClusterSecret, KeyError, KeyKind, KEY_LEN};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::fmt;

const ROLE_KEY_LABEL: &str = "braid role key v1 ";
/// The label the flow-hash key is derived with; the demux's `FlowHasher::from_secret` uses the
/// same one, so a hasher keyed either way steers identically.
pub const FLOW_HASH_LABEL: &[u8] = b"braid flow hash v1";
/// The directory of role-key files, beside the cluster secret file.
pub const ROLE_KEY_DIR: &str = "role-keys";
/// The flow-hash key's file name in [`ROLE_KEY_DIR`].
pub const FLOW_HASH_KEY_FILE: &str = "flow-hash.key";

secret_key!(
    /// One daemon's control key: what its role-key file holds.
    RoleKey,
    KeyKind::RoleKey
);

secret_key!(
    /// The key of the demuxes' flow hash.
    FlowHashKey,
    KeyKind::FlowHashKey
);

impl FlowHashKey {
    /// The SipHash key of the flow hash: the first 16 bytes.
    pub fn sip_key(&self) -> [u8; 16] {
        let mut key = [0; 16];
        key.copy_from_slice(&self.0[..16]);
        key
    }
}

impl ClusterSecret {
    /// The role key of the daemon named `daemon` (`demux/a`, `gw/a/1`; see
    /// `DaemonId::wire_name`).
    pub fn role_key(&self, daemon: &str) -> RoleKey {
        let mut label = Vec::with_capacity(ROLE_KEY_LABEL.len() + daemon.len());
        label.extend_from_slice(ROLE_KEY_LABEL.as_bytes());
        label.extend_from_slice(daemon.as_bytes());
        RoleKey(self.derive(&label))
    }

    /// The demuxes' flow-hash key.
    pub fn flow_hash_key(&self) -> FlowHashKey {
        FlowHashKey(self.derive(FLOW_HASH_LABEL))
    }

    fn derive(&self, label: &[u8]) -> [u8; KEY_LEN] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, self.as_bytes()), label);
        let mut key = [0; KEY_LEN];
        key.copy_from_slice(tag.as_ref());
        key
    }
}

/// The role-key directory of a cluster whose secret is at `secret_file`.
pub fn role_key_dir(secret_file: &Path) -> PathBuf {
    secret_file.parent().unwrap_or(Path::new(".")).join(ROLE_KEY_DIR)
}

/// Where the role key of the daemon named `daemon` lives: `role-keys/demux-a.key`,
/// `role-keys/gw-a-1.key` (the name's `/` become `-`).
pub fn role_key_file(secret_file: &Path, daemon: &str) -> PathBuf {
    role_key_dir(secret_file).join(format!("{}.key", daemon.replace('/', "-")))
}

/// Where the demuxes' flow-hash key lives.
pub fn flow_hash_key_file(secret_file: &Path) -> PathBuf {
    role_key_dir(secret_file).join(FLOW_HASH_KEY_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> ClusterSecret {
        ClusterSecret::from_base64(&STANDARD.encode([byte; 32])).unwrap()
    }

    #[test]
    fn role_keys_differ_per_daemon_and_per_secret() {
        let s = secret(1);
        assert_eq!(s.role_key("gw/a/1"), s.role_key("gw/a/1"));
        assert_ne!(s.role_key("gw/a/1"), s.role_key("gw/a/2"));
        assert_ne!(s.role_key("gw/a/1"), s.role_key("demux/a"));
        assert_ne!(s.role_key("gw/a/1"), secret(2).role_key("gw/a/1"));
        assert_ne!(s.role_key("gw/a/1").as_bytes(), s.as_bytes());
        assert_ne!(s.flow_hash_key().as_bytes(), s.role_key("demux/a").as_bytes());
    }

    /// The flow-hash key is what the demux derived from the secret before role keys: steering
    /// does not change.
    #[test]
    fn flow_hash_key_is_the_historical_derivation() {
        let s = secret(9);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes()), b"braid flow hash v1");
        assert_eq!(&s.flow_hash_key().sip_key()[..], &tag.as_ref()[..16]);
    }

    #[test]
    fn file_names() {
        let secret_file = Path::new("/etc/braid/secret.key");
        assert_eq!(
            role_key_file(secret_file, "gw/a/12"),
            Path::new("/etc/braid/role-keys/gw-a-12.key")
        );
        assert_eq!(
            flow_hash_key_file(secret_file),
            Path::new("/etc/braid/role-keys/flow-hash.key")
        );
    }

    #[test]
    fn debug_is_redacted() {
        let key = secret(3).role_key("demux/a");
        assert_eq!(format!("{key:?}"), "RoleKey(<redacted>)");
    }
}
