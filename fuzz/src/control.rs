//! The control envelope target's keys and its independent signer.
//!
//! Design: an unauthenticated datagram never reaches the JSON parser, so the target signs
//! fuzzer bytes itself: [`sign`] appends HMAC-SHA256 under the link key (daemon → controller
//! direction) of the sender the datagram's clear prefix names, computed here from the
//! derivation the envelope and keyring document (role key = HMAC-SHA256(secret,
//! `braid role key v1 <name>`), link key = HMAC-SHA256(role key, `braid control v2 to
//! controller`)), not by calling braid. [`keyring`] is the one place that builds braid's keys.

use braid_core::control::{DaemonId, Keyring};
use braid_core::keys::ClusterSecret;
use ring::hmac;

/// The fixed cluster secret (base64 of 32 bytes 0x07).
pub const SECRET: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
/// Length of the HMAC-SHA256 tag that ends a datagram.
pub const TAG_LEN: usize = 32;
/// The daemons the controller of the target knows.
pub const MEMBERS: [&str; 3] = ["demux/a", "demux/b", "gw/a/1"];

/// braid's controller keyring for [`SECRET`] and [`MEMBERS`].
pub fn keyring() -> Keyring {
    let secret = ClusterSecret::from_base64(SECRET).expect("fixed secret");
    Keyring::controller(secret, MEMBERS.iter().filter_map(|m| DaemonId::from_wire_name(m)))
}

/// The name in a datagram's clear prefix (magic, version, length, name), if it has one.
pub fn claimed_sender(datagram: &[u8]) -> Option<&str> {
    let len = usize::from(*datagram.get(5)?);
    std::str::from_utf8(datagram.get(6..6 + len)?).ok()
}

fn link_key(name: &str) -> hmac::Key {
    let secret = ClusterSecret::from_base64(SECRET).expect("fixed secret");
    let label = [b"braid role key v1 ".as_slice(), name.as_bytes()].concat();
    let role = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), &label);
    let link = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, role.as_ref()),
        b"braid control v2 to controller",
    );
    hmac::Key::new(hmac::HMAC_SHA256, link.as_ref())
}

/// `unsigned` followed by its tag, with the link key of the member it claims to come from
/// (the first member when it names none).
pub fn sign(unsigned: &[u8]) -> Vec<u8> {
    let name = claimed_sender(unsigned)
        .filter(|n| MEMBERS.contains(n))
        .unwrap_or(MEMBERS[0]);
    let tag = hmac::sign(&link_key(name), unsigned);
    [unsigned, tag.as_ref()].concat()
}

/// Whether `datagram` ends in a valid tag over the rest, by the member it names.
pub fn verifies(datagram: &[u8]) -> bool {
    let Some(name) = claimed_sender(datagram).filter(|n| MEMBERS.contains(n)) else {
        return false;
    };
    datagram.len() >= TAG_LEN && {
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        hmac::verify(&link_key(name), signed, tag).is_ok()
    }
}
