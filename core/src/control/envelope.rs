//! The authenticated envelope every control message travels in.
//!
//! ```text
//! magic "BRC1" | version u8 | incarnation u64 | seq u64 | sent_unix_ms u64 | body_len u32
//!   | payload: JSON {"sender": DaemonId, "body": Body} (body_len bytes)
//!   | HMAC-SHA256 tag (32 bytes) over everything before it
//! ```
//!
//! Integers are big-endian. The HMAC key is derived from the 32-byte cluster secret with
//! HMAC-SHA256 over the label `braid control v1`, so it never equals the flow-hash key. [`open`]
//! verifies the tag in constant time before it looks at anything but the length, so an
//! unauthenticated datagram never reaches the JSON parser; a datagram cut short past the fixed
//! header is therefore indistinguishable from a tampered one and reported as
//! [`ControlError::Forged`].
//!
//! The incarnation identifies one life of a sender: nanoseconds since the Unix epoch when its
//! [`Sender`] was made, strictly increasing within a process. With the sequence number, which
//! counts that sender's messages, it lets a receiver refuse replays (see [`super::replay`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;
use serde::{Deserialize, Serialize};

use super::error::ControlError;
use super::message::{Body, DaemonId};
use crate::keys::ClusterSecret;

/// The largest control datagram sent or accepted: 60 KiB.
pub const MAX_DATAGRAM: usize = 60 * 1024;

const MAGIC: &[u8; 4] = b"BRC1";
const VERSION: u8 = 1;
const KEY_LABEL: &[u8] = b"braid control v1";
/// magic, version, incarnation, seq, sent_unix_ms, body_len.
const HEADER_LEN: usize = 4 + 1 + 8 + 8 + 8 + 4;
const TAG_LEN: usize = 32;

/// The key that authenticates control messages, derived from the cluster secret.
#[derive(Clone)]
pub struct ControlKey(hmac::Key);

impl ControlKey {
    /// HMAC-SHA256(secret, `braid control v1`) as an HMAC-SHA256 key.
    pub fn derive(secret: &ClusterSecret) -> Self {
        let secret_key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let derived = hmac::sign(&secret_key, KEY_LABEL);
        ControlKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }
}

impl fmt::Debug for ControlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlKey(<redacted>)")
    }
}

/// Who sent a message, in which life, which message of that life, and when.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Header {
    pub sender: DaemonId,
    pub incarnation: u64,
    pub seq: u64,
    pub sent_unix_ms: u64,
}

/// One sender's identity and message counter: stamps a [`Header`] on each outgoing message.
#[derive(Debug)]
pub struct Sender {
    id: DaemonId,
    incarnation: u64,
    next_seq: u64,
}

impl Sender {
    /// A new life of `id`: a fresh incarnation, sequence numbers from 0.
    pub fn new(id: DaemonId) -> Self {
        Sender::with_incarnation(id, next_incarnation())
    }

    /// A sender with a given incarnation, for replaying a known life (tests, tools).
    pub fn with_incarnation(id: DaemonId, incarnation: u64) -> Self {
        Sender {
            id,
            incarnation,
            next_seq: 0,
        }
    }

    pub fn id(&self) -> &DaemonId {
        &self.id
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The header for the next message, sent at `now_unix_ms`.
    pub fn stamp(&mut self, now_unix_ms: u64) -> Header {
        let seq = self.next_seq;
        self.next_seq += 1;
        Header {
            sender: self.id.clone(),
            incarnation: self.incarnation,
            seq,
            sent_unix_ms: now_unix_ms,
        }
    }
}

/// Nanoseconds since the Unix epoch, but always above the last value handed out in this
/// process, so two senders made in the same nanosecond still differ.
fn next_incarnation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let previous = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or_else(|last| last);
    now.max(previous.saturating_add(1))
}

#[derive(Serialize)]
struct PayloadRef<'a> {
    sender: &'a DaemonId,
    body: &'a Body,
}

#[derive(Deserialize)]
struct Payload {
    sender: DaemonId,
    body: Body,
}

/// Seals `body` from `header` into one datagram. Fails with [`ControlError::TooLarge`] if it
/// would exceed [`MAX_DATAGRAM`].
pub fn seal(key: &ControlKey, header: &Header, body: &Body) -> Result<Vec<u8>, ControlError> {
    let mut datagram = Vec::with_capacity(HEADER_LEN + 256 + TAG_LEN);
    datagram.extend_from_slice(MAGIC);
    datagram.push(VERSION);
    datagram.extend_from_slice(&header.incarnation.to_be_bytes());
    datagram.extend_from_slice(&header.seq.to_be_bytes());
    datagram.extend_from_slice(&header.sent_unix_ms.to_be_bytes());
    datagram.extend_from_slice(&[0; 4]);
    let payload = PayloadRef {
        sender: &header.sender,
        body,
    };
    // Structs of strings, numbers, options and lists always serialize, and a Vec never fails
    // to take bytes.
    serde_json::to_writer(&mut datagram, &payload).expect("control payloads always serialize");
    if datagram.len() + TAG_LEN > MAX_DATAGRAM {
        return Err(ControlError::TooLarge);
    }
    let body_len = u32::try_from(datagram.len() - HEADER_LEN).map_err(|_| ControlError::TooLarge)?;
    datagram[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&body_len.to_be_bytes());
    let tag = hmac::sign(&key.0, &datagram);
    datagram.extend_from_slice(tag.as_ref());
    Ok(datagram)
}

/// Authenticates and parses one datagram. The tag is checked (in constant time) before the
/// header fields or the JSON are read.
pub fn open(key: &ControlKey, datagram: &[u8]) -> Result<(Header, Body), ControlError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(ControlError::TooLarge);
    }
    let Some(signed_len) = datagram.len().checked_sub(TAG_LEN).filter(|n| *n >= HEADER_LEN) else {
        return Err(ControlError::Malformed);
    };
    let (signed, tag) = datagram.split_at(signed_len);
    hmac::verify(&key.0, signed, tag).map_err(|_| ControlError::Forged)?;

    let (fixed, payload) = signed.split_at(HEADER_LEN);
    let mut fields = FieldReader(fixed);
    if fields.take::<4>() != *MAGIC || fields.take::<1>() != [VERSION] {
        return Err(ControlError::Malformed);
    }
    let incarnation = u64::from_be_bytes(fields.take());
    let seq = u64::from_be_bytes(fields.take());
    let sent_unix_ms = u64::from_be_bytes(fields.take());
    let body_len = u32::from_be_bytes(fields.take());
    if usize::try_from(body_len).ok() != Some(payload.len()) {
        return Err(ControlError::Malformed);
    }
    let Payload { sender, body } = serde_json::from_slice(payload).map_err(|_| ControlError::Malformed)?;
    let header = Header {
        sender,
        incarnation,
        seq,
        sent_unix_ms,
    };
    Ok((header, body))
}

/// Reads fixed-size fields off the front of the fixed header, whose length is checked first.
struct FieldReader<'a>(&'a [u8]);

impl FieldReader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut field = [0; N];
        let (head, rest) = self.0.split_at(N);
        field.copy_from_slice(head);
        self.0 = rest;
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::message::{Heartbeat, Membership};

    fn key() -> ControlKey {
        ControlKey::derive(&ClusterSecret::from_base64(&base64_of(7)).unwrap())
    }

    fn base64_of(byte: u8) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    fn sample() -> (Header, Body) {
        let header = Header {
            sender: DaemonId::controller(),
            incarnation: 1_700_000_000_000_000_000,
            seq: 42,
            sent_unix_ms: 1_700_000_000_000,
        };
        let body = Body::Membership(Membership {
            epoch: 3,
            active: vec![1, 2],
            serving: vec![1, 2, 3],
            probing: vec![1, 2, 3, 4],
        });
        (header, body)
    }

    #[test]
    fn seal_open_round_trip() {
        let (header, body) = sample();
        let datagram = seal(&key(), &header, &body).unwrap();
        assert_eq!(&datagram[..4], b"BRC1");
        assert_eq!(open(&key(), &datagram), Ok((header, body)));
    }

    /// A gateway heartbeat with the tunnel figures (suite, rekeys, replay drops) travels intact.
    #[test]
    fn gateway_heartbeat_round_trip() {
        let (mut header, _) = sample();
        header.sender = DaemonId::gateway("b", 2);
        let mut heartbeat = Heartbeat::new(header.sender.clone());
        heartbeat.suite = Some("wireguard".into());
        heartbeat.handshake_age_ms = Some(12_345);
        heartbeat.rekeys = Some(4);
        heartbeat.drops_replayed = Some(9);
        heartbeat.drops_too_old = Some(1);
        let body = Body::Heartbeat(heartbeat);
        let datagram = seal(&key(), &header, &body).unwrap();
        assert_eq!(open(&key(), &datagram), Ok((header, body)));
    }

    #[test]
    fn every_flipped_bit_is_forged() {
        let (header, body) = sample();
        let datagram = seal(&key(), &header, &body).unwrap();
        for byte in 0..datagram.len() {
            for bit in 0..8 {
                let mut tampered = datagram.clone();
                tampered[byte] ^= 1 << bit;
                assert_eq!(
                    open(&key(), &tampered),
                    Err(ControlError::Forged),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn another_secret_is_forged() {
        let (header, body) = sample();
        let datagram = seal(&key(), &header, &body).unwrap();
        let other = ControlKey::derive(&ClusterSecret::from_base64(&base64_of(8)).unwrap());
        assert_eq!(open(&other, &datagram), Err(ControlError::Forged));
    }

    #[test]
    fn derived_key_is_not_the_secret() {
        let secret = ClusterSecret::from_base64(&base64_of(7)).unwrap();
        let (header, body) = sample();
        let datagram = seal(&key(), &header, &body).unwrap();
        let raw = ControlKey(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()));
        assert_eq!(open(&raw, &datagram), Err(ControlError::Forged));
    }

    #[test]
    fn truncation() {
        let (header, body) = sample();
        let datagram = seal(&key(), &header, &body).unwrap();
        for len in 0..HEADER_LEN + TAG_LEN {
            assert_eq!(open(&key(), &datagram[..len]), Err(ControlError::Malformed), "{len}");
        }
        for len in HEADER_LEN + TAG_LEN..datagram.len() {
            assert_eq!(open(&key(), &datagram[..len]), Err(ControlError::Forged), "{len}");
        }
    }

    /// Authentic datagrams whose contents are wrong: sealed by hand with the right key.
    #[test]
    fn authentic_but_malformed() {
        let sign = |signed: &[u8]| {
            let mut datagram = signed.to_vec();
            datagram.extend_from_slice(hmac::sign(&key().0, signed).as_ref());
            datagram
        };
        let (header, body) = sample();
        let good = seal(&key(), &header, &body).unwrap();
        let signed = &good[..good.len() - TAG_LEN];

        let mut wrong_version = signed.to_vec();
        wrong_version[4] = 2;
        let mut wrong_length = signed.to_vec();
        wrong_length[HEADER_LEN - 1] ^= 1;
        let mut not_json = signed[..HEADER_LEN].to_vec();
        not_json[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&3u32.to_be_bytes());
        not_json.extend_from_slice(b"{{{");
        for bad in [wrong_version, wrong_length, not_json] {
            assert_eq!(open(&key(), &sign(&bad)), Err(ControlError::Malformed));
        }
    }

    #[test]
    fn size_limit() {
        let (header, _) = sample();
        let huge = Body::Membership(Membership {
            epoch: 1,
            active: vec![4095; MAX_DATAGRAM / 4],
            serving: Vec::new(),
            probing: Vec::new(),
        });
        assert_eq!(seal(&key(), &header, &huge), Err(ControlError::TooLarge));
        assert_eq!(open(&key(), &vec![0; MAX_DATAGRAM + 1]), Err(ControlError::TooLarge));
    }

    #[test]
    fn senders_stamp_increasing_seq_and_fresh_incarnations() {
        let mut first = Sender::new(DaemonId::demux("a"));
        let second = Sender::new(DaemonId::demux("a"));
        assert!(second.incarnation() > first.incarnation());
        assert_eq!(first.stamp(5).seq, 0);
        let header = first.stamp(6);
        assert_eq!((header.seq, header.sent_unix_ms), (1, 6));
        assert_eq!(header.sender, DaemonId::demux("a"));
    }
}
