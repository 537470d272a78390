//! The administration protocol, pure: no sockets, no clock (time is passed in).
//!
//! A request is one line of JSON, `{"command":"drain","args":{"pair":2},"issued_unix_ms":…,
//! "nonce":"…"}`. On the local socket that line is all (the kernel vouches for the peer); on the
//! remote channel it is followed by a space and the base64 HMAC-SHA256 tag, keyed with the admin
//! key, of exactly the JSON bytes before it. [`verify`] checks, in this order: the tag (in
//! constant time, before any JSON is parsed), the JSON, the timestamp (at most
//! [`MAX_SKEW_MS`] from the receiver's clock, either way) and the nonce (never seen within the
//! skew window, [`ReplayMemory`]). A replay after the window is refused as stale, so the memory
//! only keeps nonces for as long as their timestamps could still pass, and it is bounded: when
//! full of live nonces it refuses (fails closed) rather than forgetting one.
//!
//! The answer is one line of JSON too, `{"ok":true,"message":"…"}`; a refusal is an answer with
//! `ok: false` and a message starting `refused:`. Nothing here panics on any input.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use braid_core::keys::AdminKey;
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::Command;

/// How far a request's timestamp may be from the receiver's clock.
pub const MAX_SKEW_MS: u64 = 30_000;
/// Longest request or answer line, in bytes, without its newline.
pub const MAX_LINE: usize = 4096;
/// Nonces remembered at most (each for the skew window either side of its timestamp).
pub const NONCE_MEMORY: usize = 4096;
/// Longest nonce, in characters.
const MAX_NONCE_LEN: usize = 64;
/// Shortest nonce: 8 bytes of hex.
const MIN_NONCE_LEN: usize = 16;

/// An administration request as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `reload`, `drain`, `remove` or `activate`.
    pub command: String,
    #[serde(default)]
    pub args: Args,
    /// When the client made it (its clock), milliseconds since the Unix epoch.
    pub issued_unix_ms: u64,
    /// Random, never reused: hex or other `[A-Za-z0-9_-]`, 16 to 64 characters.
    pub nonce: String,
}

/// A command's arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The pair a `drain`, `remove` or `activate` acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<u16>,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
}

/// Why a request or an answer was not accepted. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Not one line of JSON of the request's shape (the detail says what is wrong).
    Malformed(String),
    /// Longer than [`MAX_LINE`].
    TooLong,
    /// A remote request without a tag after its JSON.
    Unsigned,
    /// The tag is not base64 or does not match the admin key.
    BadSignature,
    /// The timestamp is more than [`MAX_SKEW_MS`] from the receiver's clock.
    Stale { skew_ms: u64 },
    /// This nonce was already used within the skew window.
    Replayed,
    /// The nonce memory is full of live nonces: try again shortly.
    ReplayMemoryFull,
}

impl ProtocolError {
    /// The `reason` label of `braid_admin_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ProtocolError::Malformed(_) | ProtocolError::TooLong => "malformed",
            ProtocolError::Unsigned | ProtocolError::BadSignature => "bad_signature",
            ProtocolError::Stale { .. } => "stale",
            ProtocolError::Replayed => "replayed",
            ProtocolError::ReplayMemoryFull => "replay_memory_full",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Malformed(detail) => write!(f, "not an administration request: {detail}"),
            ProtocolError::TooLong => write!(f, "request longer than {MAX_LINE} bytes"),
            ProtocolError::Unsigned => {
                f.write_str("the request carries no signature (expected JSON, a space, a base64 HMAC-SHA256 tag)")
            }
            ProtocolError::BadSignature => f.write_str("bad signature (wrong admin key?)"),
            ProtocolError::Stale { skew_ms } => write!(
                f,
                "timestamp {:.1} s away from the controller's clock (at most {} s allowed; check both clocks)",
                *skew_ms as f64 / 1e3,
                MAX_SKEW_MS / 1000
            ),
            ProtocolError::Replayed => f.write_str("nonce already used (a replayed request)"),
            ProtocolError::ReplayMemoryFull => f.write_str("too many requests in the last 30 s; try again shortly"),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl Request {
    /// A request for `command`, made at `issued_unix_ms` with `nonce`.
    pub fn new(command: &Command, issued_unix_ms: u64, nonce: String) -> Request {
        let (name, pair) = match *command {
            Command::Reload => ("reload", None),
            Command::Drain(pair) => ("drain", Some(pair)),
            Command::Remove(pair) => ("remove", Some(pair)),
            Command::Activate(pair) => ("activate", Some(pair)),
        };
        Request {
            command: name.into(),
            args: Args { pair },
            issued_unix_ms,
            nonce,
        }
    }

    /// The request as its JSON line (no newline).
    pub fn encode(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The command this asks for.
    pub fn command(&self) -> Result<Command, ProtocolError> {
        let pair = || {
            self.args
                .pair
                .ok_or_else(|| ProtocolError::Malformed(format!("{} needs args.pair", self.command)))
        };
        match self.command.as_str() {
            "reload" if self.args.pair.is_none() => Ok(Command::Reload),
            "reload" => Err(ProtocolError::Malformed("reload takes no pair".into())),
            "drain" => pair().map(Command::Drain),
            "remove" => pair().map(Command::Remove),
            "activate" => pair().map(Command::Activate),
            other => Err(ProtocolError::Malformed(format!(
                "unknown command {:?} (expected reload, drain, remove or activate)",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }

    fn decode(json: &str) -> Result<Request, ProtocolError> {
        let request: Request = serde_json::from_str(json).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        let nonce_ok = (MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&request.nonce.len())
            && request
                .nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !nonce_ok {
            return Err(ProtocolError::Malformed(format!(
                "nonce must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} characters of [A-Za-z0-9_-]"
            )));
        }
        request.command()?;
        Ok(request)
    }
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Response {
        Response {
            ok: true,
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            message: message.into(),
        }
    }

    /// A refusal: the request was not authenticated or not understood, nothing was done.
    pub fn refused(why: impl fmt::Display) -> Response {
        Response::error(format!("refused: {why}"))
    }

    /// The answer as its line, newline included.
    pub fn encode(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// Reads an answer line (with or without its newline).
    pub fn decode(line: &[u8]) -> Result<Response, ProtocolError> {
        let text = line_text(line)?;
        serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(format!("answer: {e}")))
    }
}

/// The line `request` travels as on the remote channel: its JSON, a space, the base64 tag
/// (no newline).
pub fn sign(request: &Request, key: &AdminKey) -> String {
    let json = request.encode();
    let tag = hmac::sign(&hmac_key(key), json.as_bytes());
    format!("{json} {}", STANDARD.encode(tag.as_ref()))
}

/// A request from the local socket: the JSON line alone (the kernel vouched for the peer).
pub fn parse_local(line: &[u8]) -> Result<Request, ProtocolError> {
    Request::decode(line_text(line)?)
}

/// A request from the remote channel, accepted only if its tag matches `key`, its timestamp is
/// within [`MAX_SKEW_MS`] of `now_unix_ms` and its nonce is new to `memory` (which then keeps it).
pub fn verify(
    line: &[u8],
    key: &AdminKey,
    now_unix_ms: u64,
    memory: &mut ReplayMemory,
) -> Result<Request, ProtocolError> {
    let text = line_text(line)?;
    let (json, tag) = text.rsplit_once(' ').ok_or(ProtocolError::Unsigned)?;
    if tag.is_empty() || tag.ends_with('}') {
        return Err(ProtocolError::Unsigned);
    }
    let tag = STANDARD.decode(tag).map_err(|_| ProtocolError::BadSignature)?;
    hmac::verify(&hmac_key(key), json.as_bytes(), &tag).map_err(|_| ProtocolError::BadSignature)?;
    let request = Request::decode(json)?;
    memory.admit(&request.nonce, request.issued_unix_ms, now_unix_ms)?;
    Ok(request)
}

fn hmac_key(key: &AdminKey) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes())
}

/// The text of one line: UTF-8, bounded, without its line ending.
fn line_text(line: &[u8]) -> Result<&str, ProtocolError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(ProtocolError::TooLong);
    }
    if line.is_empty() {
        return Err(ProtocolError::Malformed("empty line".into()));
    }
    if line.contains(&b'\n') {
        return Err(ProtocolError::Malformed("more than one line".into()));
    }
    std::str::from_utf8(line).map_err(|_| ProtocolError::Malformed("not UTF-8".into()))
}

/// The nonces seen within the skew window, bounded.
#[derive(Debug)]
pub struct ReplayMemory {
    /// Nonce → the timestamp of the request that used it.
    seen: HashMap<String, u64>,
    capacity: usize,
}

impl Default for ReplayMemory {
    fn default() -> Self {
        ReplayMemory::with_capacity(NONCE_MEMORY)
    }
}

impl ReplayMemory {
    pub fn with_capacity(capacity: usize) -> Self {
        ReplayMemory {
            seen: HashMap::new(),
            capacity,
        }
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Accepts a request made at `issued_ms` with `nonce` (and remembers the nonce), or says
    /// why not. Nonces whose timestamps are now outside the window are forgotten first: a
    /// request carrying one would be refused as stale anyway.
    pub fn admit(&mut self, nonce: &str, issued_ms: u64, now_ms: u64) -> Result<(), ProtocolError> {
        let skew_ms = now_ms.abs_diff(issued_ms);
        if skew_ms > MAX_SKEW_MS {
            return Err(ProtocolError::Stale { skew_ms });
        }
        self.seen.retain(|_, &mut t| now_ms <= t.saturating_add(MAX_SKEW_MS));
        if self.seen.contains_key(nonce) {
            return Err(ProtocolError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(ProtocolError::ReplayMemoryFull);
        }
        self.seen.insert(nonce.to_string(), issued_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn key(byte: u8) -> AdminKey {
        AdminKey::from_base64(&STANDARD.encode([byte; 32])).unwrap()
    }

    fn request(command: Command, issued: u64, nonce: &str) -> Request {
        Request::new(&command, issued, nonce.to_string())
    }

    #[test]
    fn a_signed_request_verifies_once() {
        let mut memory = ReplayMemory::default();
        let line = sign(&request(Command::Remove(2), NOW, "0123456789abcdef"), &key(1));
        let got = verify(line.as_bytes(), &key(1), NOW + 500, &mut memory).unwrap();
        assert_eq!(got.command().unwrap(), Command::Remove(2));
        assert_eq!(
            verify(format!("{line}\n").as_bytes(), &key(1), NOW + 600, &mut memory),
            Err(ProtocolError::Replayed)
        );
        assert_eq!(memory.len(), 1);
    }

    #[test]
    fn the_wire_form_is_json_a_space_and_a_tag() {
        let line = sign(&request(Command::Drain(7), 5, "aaaaaaaaaaaaaaaa"), &key(3));
        let (json, tag) = line.rsplit_once(' ').unwrap();
        assert_eq!(
            json,
            r#"{"command":"drain","args":{"pair":7},"issued_unix_ms":5,"nonce":"aaaaaaaaaaaaaaaa"}"#
        );
        assert_eq!(tag.len(), 44, "32-byte HMAC-SHA256 in base64");
        let reload = request(Command::Reload, 5, "aaaaaaaaaaaaaaaa").encode();
        assert_eq!(
            reload,
            r#"{"command":"reload","args":{},"issued_unix_ms":5,"nonce":"aaaaaaaaaaaaaaaa"}"#
        );
    }

    #[test]
    fn a_wrong_key_or_an_altered_request_is_refused() {
        let mut memory = ReplayMemory::default();
        let line = sign(&request(Command::Drain(1), NOW, "0123456789abcdef"), &key(1));
        assert_eq!(
            verify(line.as_bytes(), &key(2), NOW, &mut memory),
            Err(ProtocolError::BadSignature)
        );
        let altered = line.replace("\"pair\":1", "\"pair\":2");
        assert_eq!(
            verify(altered.as_bytes(), &key(1), NOW, &mut memory),
            Err(ProtocolError::BadSignature)
        );
        let (json, _) = line.rsplit_once(' ').unwrap();
        assert_eq!(
            verify(json.as_bytes(), &key(1), NOW, &mut memory),
            Err(ProtocolError::Unsigned)
        );
        let not_base64 = format!("{json} !!!");
        assert_eq!(
            verify(not_base64.as_bytes(), &key(1), NOW, &mut memory),
            Err(ProtocolError::BadSignature)
        );
        assert!(memory.is_empty(), "refused requests leave no nonce behind");
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let mut memory = ReplayMemory::default();
        for issued in [NOW - MAX_SKEW_MS - 1, NOW + MAX_SKEW_MS + 1, 0] {
            let line = sign(&request(Command::Reload, issued, "0123456789abcdef"), &key(1));
            let error = verify(line.as_bytes(), &key(1), NOW, &mut memory).unwrap_err();
            assert!(matches!(error, ProtocolError::Stale { .. }), "{error:?}");
            assert_eq!(error.reason(), "stale");
        }
        for issued in [NOW - MAX_SKEW_MS, NOW + MAX_SKEW_MS] {
            let line = sign(&request(Command::Reload, issued, &format!("nonce-{issued}")), &key(1));
            assert!(
                verify(line.as_bytes(), &key(1), NOW, &mut memory).is_ok(),
                "at the edge of the window"
            );
        }
    }

    #[test]
    fn nonces_are_forgotten_only_once_their_requests_would_be_stale() {
        let mut memory = ReplayMemory::with_capacity(2);
        memory.admit("nonce-aaaaaaaaaaa", NOW, NOW).unwrap();
        memory.admit("nonce-bbbbbbbbbbb", NOW + 20_000, NOW).unwrap();
        assert_eq!(
            memory.admit("nonce-ccccccccccc", NOW, NOW + 1),
            Err(ProtocolError::ReplayMemoryFull)
        );
        // 30 s on, the first is outside the window: a replay of it is stale, so it is dropped.
        let later = NOW + MAX_SKEW_MS + 1;
        assert!(matches!(
            memory.admit("nonce-aaaaaaaaaaa", NOW, later),
            Err(ProtocolError::Stale { .. })
        ));
        memory.admit("nonce-ccccccccccc", later, later).unwrap();
        assert_eq!(memory.len(), 2);
        assert_eq!(
            memory.admit("nonce-bbbbbbbbbbb", NOW + 20_000, later),
            Err(ProtocolError::Replayed)
        );
    }

    #[test]
    fn garbage_and_truncated_lines_are_clear_errors() {
        let mut memory = ReplayMemory::default();
        let good = sign(&request(Command::Activate(4), NOW, "0123456789abcdef"), &key(1));
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\n".to_vec(),
            b"hello".to_vec(),
            b"{}".to_vec(),
            b"\xff\xfe {}".to_vec(),
            good.as_bytes()[..good.len() / 2].to_vec(),
            good.as_bytes()[..good.len() - 3].to_vec(),
            vec![b'a'; MAX_LINE + 1],
            format!("{good}\n{good}").into_bytes(),
        ];
        for case in cases {
            let error = verify(&case, &key(1), NOW, &mut memory).unwrap_err();
            assert!(!error.to_string().is_empty());
            let _ = parse_local(&case).unwrap_err();
        }
        assert!(memory.is_empty());
    }

    #[test]
    fn local_requests_are_checked_for_shape() {
        let ok = request(Command::Drain(3), NOW, "0123456789abcdef").encode();
        assert_eq!(
            parse_local(ok.as_bytes()).unwrap().command().unwrap(),
            Command::Drain(3)
        );
        let signed = sign(&request(Command::Reload, NOW, "0123456789abcdef"), &key(1));
        assert!(
            parse_local(signed.as_bytes()).is_err(),
            "the local socket takes the JSON alone"
        );
        for (json, expected) in [
            (
                r#"{"command":"drain","args":{},"issued_unix_ms":1,"nonce":"0123456789abcdef"}"#,
                "drain needs args.pair",
            ),
            (
                r#"{"command":"reboot","issued_unix_ms":1,"nonce":"0123456789abcdef"}"#,
                "unknown command \"reboot\"",
            ),
            (
                r#"{"command":"reload","args":{"pair":1},"issued_unix_ms":1,"nonce":"0123456789abcdef"}"#,
                "reload takes no pair",
            ),
            (
                r#"{"command":"reload","issued_unix_ms":1,"nonce":"short"}"#,
                "nonce must be",
            ),
            (
                r#"{"command":"reload","issued_unix_ms":1,"nonce":"0123456789abcdef","x":1}"#,
                "unknown field",
            ),
            (
                r#"{"command":"drain","args":{"pair":70000},"issued_unix_ms":1,"nonce":"0123456789abcdef"}"#,
                "invalid value",
            ),
        ] {
            let error = parse_local(json.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn answers_round_trip() {
        let answer = Response::ok("pair 2 removed");
        assert_eq!(Response::decode(answer.encode().as_bytes()).unwrap(), answer);
        let refused = Response::refused(ProtocolError::Replayed);
        assert!(!refused.ok);
        assert!(
            refused.message.starts_with("refused: nonce already used"),
            "{}",
            refused.message
        );
        assert!(Response::decode(b"garbage").is_err());
    }
}
