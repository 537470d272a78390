//! `braid_core::control::open` at a controller on any datagram, and on any bytes signed with
//! the link key of the daemon they name (so they pass the HMAC and reach the header checks and
//! the JSON body parser).
//!
//! Input: a mode byte (bit 0: sign the rest with `braid_fuzz::control::sign`; bit 1: then flip
//! one bit at the offset the next two bytes name), then the datagram.
//!
//! Checks: whatever opens carries a valid tag (checked independently); a flipped bit never
//! opens; what opens re-seals (`seal`) to a datagram with the same fixed header fields
//! (magic, version, sender, incarnation, sequence number, echo) that opens to the same header and
//! body, and re-sealing that is a fixpoint (the JSON of the input may differ from serde's in
//! spacing, escapes or field order, so the input itself is not compared).

#![no_main]

use braid_core::control::{open, seal, ControlError};
use braid_fuzz::control::{claimed_sender, keyring, sign, verifies};
use braid_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

/// magic, version, name length (the name, then incarnation, seq and echo follow).
const PREFIX: usize = 4 + 1 + 1;
const FIELDS: usize = 8 + 8 + 8;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let mode = input.u8();
    let flip = usize::from(input.u16());
    let rest = input.rest();
    let mut datagram = if mode & 1 != 0 { sign(rest) } else { rest.to_vec() };
    let flipped = mode & 2 != 0 && !datagram.is_empty();
    if flipped {
        let at = flip % datagram.len();
        datagram[at] ^= 1 << (flip >> 13);
    }
    let keys = keyring();
    let Ok((header, body)) = open(|from| keys.opening_key(from), &datagram) else {
        return;
    };
    let fixed = PREFIX + claimed_sender(&datagram).map_or(0, str::len) + FIELDS;
    // Re-sealed as the daemon it came from, towards the controller.
    let key = keys.opening_key(&header.sender).expect("it opened with this key");
    assert!(!flipped, "a datagram with a flipped bit opened");
    assert!(verifies(&datagram), "opened without a valid tag");
    let resealed = match seal(key, &header, &body) {
        Ok(resealed) => resealed,
        // serde's JSON of the body may be longer than the input's (different escapes); that
        // can only matter at the size limit.
        Err(ControlError::TooLarge) => return,
        Err(e) => panic!("re-sealing what opened failed: {e}"),
    };
    assert_eq!(resealed[..fixed], datagram[..fixed]);
    let (header2, body2) = open(|from| keys.opening_key(from), &resealed).expect("a re-sealed datagram opens");
    assert_eq!(header2, header);
    assert_eq!(body2, body);
    assert_eq!(seal(key, &header2, &body2).expect("fits: it did before"), resealed);
});
