//! The control envelope target's key and its independent signer.
//!
//! Design: an unauthenticated datagram never reaches the JSON parser, so the target signs
//! fuzzer bytes itself: [`sign`] appends HMAC-SHA256 under the key `ControlKey::derive` makes
//! from [`SECRET`], computed here from the derivation the envelope documents (HMAC-SHA256 of
//! the label `braid control v1` keyed with the cluster secret), not by calling braid. [`key`]
//! is the one place that builds braid's key, so a change of key type touches only it.

use braid_core::control::ControlKey;
use braid_core::keys::ClusterSecret;
use ring::hmac;

/// The fixed cluster secret (base64 of 32 bytes 0x07).
pub const SECRET: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const LABEL: &[u8] = b"braid control v1";
/// Length of the HMAC-SHA256 tag that ends a datagram.
pub const TAG_LEN: usize = 32;

/// braid's control key for [`SECRET`].
pub fn key() -> ControlKey {
    ControlKey::derive(&ClusterSecret::from_base64(SECRET).expect("fixed secret"))
}

fn hmac_key() -> hmac::Key {
    let secret = ClusterSecret::from_base64(SECRET).expect("fixed secret");
    let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), LABEL);
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

/// `unsigned` followed by its tag.
pub fn sign(unsigned: &[u8]) -> Vec<u8> {
    let tag = hmac::sign(&hmac_key(), unsigned);
    [unsigned, tag.as_ref()].concat()
}

/// Whether `datagram` ends in a valid tag over the rest.
pub fn verifies(datagram: &[u8]) -> bool {
    datagram.len() >= TAG_LEN && {
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        hmac::verify(&hmac_key(), signed, tag).is_ok()
    }
}
