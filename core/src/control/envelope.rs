//! The authenticated envelope every control message travels in.
//!
//! ```text
//! magic "BRC2" | version u8 | sender_len u8 | sender (its wire name, e.g. "gw/a/1")
//!   | incarnation u64 | seq u64 | echo u64 | body_len u32
//!   | body: JSON (body_len bytes)
//!   | HMAC-SHA256 tag (32 bytes) over everything before it
//! ```
//!
//! Integers are big-endian. The sender travels in the clear so the receiver can pick the key
//! of that sender's link (see [`super::keyring`]); [`open`] reads only the magic, version and
//! sender name, looks the key up (an unknown sender is refused there, before any
//! cryptography), and verifies the tag in constant time before it reads anything else, so an
//! unauthenticated datagram never reaches the JSON parser. A datagram cut short past the
//! sender name is therefore indistinguishable from a tampered one and reported as
//! [`ControlError::Forged`].
//!
//! The incarnation names one life of a sender: 64 random bits drawn when its [`Sender`] is
//! made. With the sequence number, which counts that life's messages, it lets a receiver refuse
//! replays; `echo` is the receiver's incarnation as the sender last heard it (0 before it has
//! heard anything), which proves a message was made after the receiver's current life began
//! (see [`super::replay`]). No wall clock is involved anywhere, so clock steps and hosts whose
//! clocks disagree change nothing.

use std::fmt;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::error::ControlError;
use super::message::{Body, DaemonId, MAX_WIRE_NAME};

/// The largest control datagram sent or accepted: 60 KiB.
pub const MAX_DATAGRAM: usize = 60 * 1024;

const MAGIC: &[u8; 4] = b"BRC2";
const VERSION: u8 = 2;
/// magic, version, sender_len.
const PREFIX_LEN: usize = 4 + 1 + 1;
/// incarnation, seq, echo, body_len.
const FIELDS_LEN: usize = 8 + 8 + 8 + 4;
const TAG_LEN: usize = 32;

/// Who sent a message, in which life, which message of that life, and which life of the
/// receiver it answers.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Header {
    pub sender: DaemonId,
    pub incarnation: u64,
    pub seq: u64,
    /// The receiver's incarnation as the sender last heard it; 0 if it has not.
    pub echo: u64,
}

/// One sender's identity and message counter: stamps a [`Header`] on each outgoing message.
#[derive(Debug)]
pub struct Sender {
    id: DaemonId,
    incarnation: u64,
    next_seq: u64,
}

impl Sender {
    /// A new life of `id`: a fresh random incarnation, sequence numbers from 0.
    pub fn new(id: DaemonId) -> Self {
        Sender::with_incarnation(id, random_incarnation())
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

    /// The header for the next message, answering the receiver's life `echo`.
    pub fn stamp(&mut self, echo: u64) -> Header {
        let seq = self.next_seq;
        self.next_seq += 1;
        Header {
            sender: self.id.clone(),
            incarnation: self.incarnation,
            seq,
            echo,
        }
    }
}

/// 64 random bits, never 0 (0 means "not heard yet" in `echo`).
fn random_incarnation() -> u64 {
    let mut bytes = [0u8; 8];
    // Control threads start at daemon start; a failing system RNG leaves no safe identity.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random number generator failed");
    u64::from_be_bytes(bytes).max(1)
}

/// Seals `body` from `header` into one datagram with `key` (the sender's link key for this
/// direction). Fails with [`ControlError::TooLarge`] if it would exceed [`MAX_DATAGRAM`], and
/// [`ControlError::UnknownSender`] if the sender's name is too long to carry.
pub fn seal(key: &hmac::Key, header: &Header, body: &Body) -> Result<Vec<u8>, ControlError> {
    let name = header.sender.wire_name();
    let name_len = u8::try_from(name.len())
        .ok()
        .filter(|n| usize::from(*n) <= MAX_WIRE_NAME)
        .ok_or(ControlError::UnknownSender)?;
    let mut datagram = Vec::with_capacity(PREFIX_LEN + name.len() + FIELDS_LEN + 256 + TAG_LEN);
    datagram.extend_from_slice(MAGIC);
    datagram.push(VERSION);
    datagram.push(name_len);
    datagram.extend_from_slice(name.as_bytes());
    datagram.extend_from_slice(&header.incarnation.to_be_bytes());
    datagram.extend_from_slice(&header.seq.to_be_bytes());
    datagram.extend_from_slice(&header.echo.to_be_bytes());
    let body_len_at = datagram.len();
    datagram.extend_from_slice(&[0; 4]);
    // Structs of strings, numbers, options and lists always serialize, and a Vec never fails
    // to take bytes.
    serde_json::to_writer(&mut datagram, body).expect("control bodies always serialize");
    if datagram.len() + TAG_LEN > MAX_DATAGRAM {
        return Err(ControlError::TooLarge);
    }
    let body_len = u32::try_from(datagram.len() - body_len_at - 4).map_err(|_| ControlError::TooLarge)?;
    datagram[body_len_at..body_len_at + 4].copy_from_slice(&body_len.to_be_bytes());
    let tag = hmac::sign(key, &datagram);
    datagram.extend_from_slice(tag.as_ref());
    Ok(datagram)
}

/// Authenticates and parses one datagram. `key_of` names the key a message from the sender
/// in the header must be sealed with (`None`: refused as [`ControlError::UnknownSender`]); the
/// tag is checked, in constant time, before the fields or the JSON are read.
pub fn open<'k>(
    key_of: impl FnOnce(&DaemonId) -> Option<&'k hmac::Key>,
    datagram: &[u8],
) -> Result<(Header, Body), ControlError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(ControlError::TooLarge);
    }
    let sender = peek_sender(datagram)?;
    let key = key_of(&sender).ok_or(ControlError::UnknownSender)?;
    let name_end = PREFIX_LEN + usize::from(datagram[PREFIX_LEN - 1]);
    let Some(signed_len) = datagram
        .len()
        .checked_sub(TAG_LEN)
        .filter(|n| *n >= name_end + FIELDS_LEN)
    else {
        return Err(ControlError::Forged);
    };
    let (signed, tag) = datagram.split_at(signed_len);
    hmac::verify(key, signed, tag).map_err(|_| ControlError::Forged)?;

    let (fixed, body) = signed[name_end..].split_at(FIELDS_LEN);
    let field = |at: usize| u64::from_be_bytes(fixed[at..at + 8].try_into().expect("8-byte field"));
    let body_len = u32::from_be_bytes(fixed[24..28].try_into().expect("4-byte field"));
    if usize::try_from(body_len).ok() != Some(body.len()) {
        return Err(ControlError::Malformed);
    }
    let body = serde_json::from_slice(body).map_err(|_| ControlError::Malformed)?;
    let header = Header {
        sender,
        incarnation: field(0),
        seq: field(8),
        echo: field(16),
    };
    Ok((header, body))
}

/// The sender a datagram claims, read from its clear prefix: magic, version and name.
fn peek_sender(datagram: &[u8]) -> Result<DaemonId, ControlError> {
    let prefix = datagram.get(..PREFIX_LEN).ok_or(ControlError::Malformed)?;
    if prefix[..4] != *MAGIC || prefix[4] != VERSION {
        return Err(ControlError::Malformed);
    }
    let name = datagram
        .get(PREFIX_LEN..PREFIX_LEN + usize::from(prefix[5]))
        .ok_or(ControlError::Malformed)?;
    std::str::from_utf8(name)
        .ok()
        .and_then(DaemonId::from_wire_name)
        .ok_or(ControlError::Malformed)
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} life {:016x} #{}", self.sender, self.incarnation, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::keyring::Keyring;
    use crate::control::message::{Heartbeat, Membership};
    use crate::keys::ClusterSecret;

    fn secret(byte: u8) -> ClusterSecret {
        use base64::Engine;
        ClusterSecret::from_base64(&base64::engine::general_purpose::STANDARD.encode([byte; 32])).unwrap()
    }

    fn controller() -> Keyring {
        Keyring::controller(secret(7), [DaemonId::demux("a"), DaemonId::gateway("b", 2)])
    }

    fn demux() -> Keyring {
        Keyring::daemon(DaemonId::demux("a"), &secret(7).role_key("demux/a"))
    }

    fn push() -> (Header, Body) {
        let header = Header {
            sender: DaemonId::controller(),
            incarnation: 0x1234_5678_9abc_def0,
            seq: 42,
            echo: 99,
        };
        let body = Body::Membership(Membership {
            term: 0,
            epoch: 3,
            active: vec![1, 2],
            serving: vec![1, 2, 3],
            probing: vec![1, 2, 3, 4],
            gateways: Vec::new(),
        });
        (header, body)
    }

    fn sealed_push() -> Vec<u8> {
        let (header, body) = push();
        let to = DaemonId::demux("a");
        seal(controller().sealing_key(&to).unwrap(), &header, &body).unwrap()
    }

    fn open_at_demux(datagram: &[u8]) -> Result<(Header, Body), ControlError> {
        let keys = demux();
        open(|from| keys.opening_key(from), datagram)
    }

    #[test]
    fn seal_open_round_trip_both_ways() {
        let datagram = sealed_push();
        assert_eq!(&datagram[..4], b"BRC2");
        assert_eq!(open_at_demux(&datagram), Ok(push()));

        let mut heartbeat = Heartbeat::new(DaemonId::gateway("b", 2));
        heartbeat.suite = Some("ipsec".into());
        heartbeat.drops_replayed = Some(9);
        let header = Header {
            sender: DaemonId::gateway("b", 2),
            incarnation: 5,
            seq: 0,
            echo: 0,
        };
        let body = Body::Heartbeat(Box::new(heartbeat));
        let gateway = Keyring::daemon(DaemonId::gateway("b", 2), &secret(7).role_key("gw/b/2"));
        let datagram = seal(gateway.sealing_key(&DaemonId::controller()).unwrap(), &header, &body).unwrap();
        let keys = controller();
        assert_eq!(open(|from| keys.opening_key(from), &datagram), Ok((header, body)));
    }

    /// A gateway holds its own key: a push it seals as the controller is refused by the demux,
    /// a report it seals as another daemon is refused by the controller, and a controller
    /// message reflected back to the controller is refused too.
    #[test]
    fn a_gateway_key_speaks_for_that_gateway_only() {
        let gateway = Keyring::daemon(DaemonId::gateway("b", 2), &secret(7).role_key("gw/b/2"));
        let own = gateway.sealing_key(&DaemonId::controller()).unwrap();
        let (header, body) = push();
        let forged_push = seal(own, &header, &body).unwrap();
        assert_eq!(open_at_demux(&forged_push), Err(ControlError::Forged));

        let keys = controller();
        let as_demux = Header {
            sender: DaemonId::demux("a"),
            incarnation: 1,
            seq: 1,
            echo: 0,
        };
        let forged_report = seal(own, &as_demux, &Body::MembershipAck { epoch: 1, term: 0 }).unwrap();
        assert_eq!(
            open(|from| keys.opening_key(from), &forged_report),
            Err(ControlError::Forged)
        );
        // A push reflected back to the controller names the controller as its sender, which
        // the controller never hears from.
        assert_eq!(
            open(|from| keys.opening_key(from), &sealed_push()),
            Err(ControlError::UnknownSender)
        );
    }

    #[test]
    fn unknown_and_unheard_senders_are_refused_before_cryptography() {
        let keys = controller();
        let header = Header {
            sender: DaemonId::gateway("b", 3),
            incarnation: 1,
            seq: 0,
            echo: 0,
        };
        let datagram = seal(&hmac::Key::new(hmac::HMAC_SHA256, &[0; 32]), &header, &Body::Hello).unwrap();
        assert_eq!(
            open(|from| keys.opening_key(from), &datagram),
            Err(ControlError::UnknownSender)
        );
        // A daemon listens to the controller only.
        let datagram = seal(&hmac::Key::new(hmac::HMAC_SHA256, &[0; 32]), &header, &Body::Hello).unwrap();
        assert_eq!(open_at_demux(&datagram), Err(ControlError::UnknownSender));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let datagram = sealed_push();
        for byte in 0..datagram.len() {
            for bit in 0..8 {
                let mut tampered = datagram.clone();
                tampered[byte] ^= 1 << bit;
                let result = open_at_demux(&tampered);
                assert!(result.is_err(), "byte {byte} bit {bit}: {result:?}");
                if byte >= PREFIX_LEN + "controller".len() {
                    assert_eq!(result, Err(ControlError::Forged), "byte {byte} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn another_secret_is_forged() {
        let other = Keyring::daemon(DaemonId::demux("a"), &secret(8).role_key("demux/a"));
        assert_eq!(
            open(|from| other.opening_key(from), &sealed_push()),
            Err(ControlError::Forged)
        );
    }

    #[test]
    fn truncation() {
        let datagram = sealed_push();
        let name_end = PREFIX_LEN + "controller".len();
        for len in 0..name_end {
            assert_eq!(open_at_demux(&datagram[..len]), Err(ControlError::Malformed), "{len}");
        }
        for len in name_end..datagram.len() {
            assert_eq!(open_at_demux(&datagram[..len]), Err(ControlError::Forged), "{len}");
        }
    }

    /// Authentic datagrams whose contents are wrong: sealed by hand with the right key.
    #[test]
    fn authentic_but_malformed() {
        let keys = controller();
        let key = keys.sealing_key(&DaemonId::demux("a")).unwrap();
        let sign = |signed: &[u8]| {
            let mut datagram = signed.to_vec();
            datagram.extend_from_slice(hmac::sign(key, signed).as_ref());
            datagram
        };
        let good = sealed_push();
        let signed = &good[..good.len() - TAG_LEN];
        let fields_end = PREFIX_LEN + "controller".len() + FIELDS_LEN;

        let mut wrong_length = signed.to_vec();
        wrong_length[fields_end - 1] ^= 1;
        let mut not_json = signed[..fields_end].to_vec();
        not_json[fields_end - 4..].copy_from_slice(&3u32.to_be_bytes());
        not_json.extend_from_slice(b"{{{");
        for bad in [wrong_length, not_json] {
            assert_eq!(open_at_demux(&sign(&bad)), Err(ControlError::Malformed));
        }
        let mut wrong_version = signed.to_vec();
        wrong_version[4] = 1;
        assert_eq!(open_at_demux(&sign(&wrong_version)), Err(ControlError::Malformed));
    }

    #[test]
    fn size_limit() {
        let (header, _) = push();
        let huge = Body::Membership(Membership {
            term: 0,
            epoch: 1,
            active: vec![4095; MAX_DATAGRAM / 4],
            serving: Vec::new(),
            probing: Vec::new(),
            gateways: Vec::new(),
        });
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[0; 32]);
        assert_eq!(seal(&key, &header, &huge), Err(ControlError::TooLarge));
        assert_eq!(open_at_demux(&vec![0; MAX_DATAGRAM + 1]), Err(ControlError::TooLarge));
    }

    #[test]
    fn senders_stamp_increasing_seq_and_random_incarnations() {
        let mut first = Sender::new(DaemonId::demux("a"));
        let second = Sender::new(DaemonId::demux("a"));
        assert_ne!(second.incarnation(), first.incarnation());
        assert_ne!(first.incarnation(), 0);
        assert_eq!(first.stamp(5).seq, 0);
        let header = first.stamp(6);
        assert_eq!((header.seq, header.echo), (1, 6));
        assert_eq!(header.sender, DaemonId::demux("a"));
    }
}
