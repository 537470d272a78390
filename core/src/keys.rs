//! WireGuard-format keys, the cluster secret, the controller's admin key and the IPsec
//! pre-shared key.
//!
//! Every key is 32 bytes, written as standard base64 with `=` padding (44 characters), exactly
//! what `wg genkey` and `wg pubkey` print, so keys move freely between braid and
//! wireguard-tools. A private key or the cluster secret lives in its own file, one line, and
//! [`PrivateKey::load`] / [`ClusterSecret::load`] / [`AdminKey::load`] refuse a file that its group or other users
//! could read or write (the rule `wg` and OpenSSH apply), naming the fix. Under systemd or
//! Kubernetes a key may come from the service manager instead, as a credential that its group
//! may read ([`credentials`]); every key loads through that one path.
//!
//! The IPsec suite's [`PresharedKey`] is different in kind: IKEv2 (RFC 7296 §2.15) takes the
//! pre-shared key as an octet string, and strongSwan's `secret = "..."` takes it as text. Its
//! file holds one line of text that is used byte for byte (only the line ending is removed), so
//! the same line works in a `swanctl.conf` on the other side. Its file obeys the same 0600 rule.
//!
//! The [`AdminKey`] (`braid keygen --admin`) keys the HMAC-SHA256 tags of remote administration
//! requests; the controller and the operators that may administer it share it.
//!
//! Secret material never reaches a log: [`PrivateKey`], [`ClusterSecret`], [`AdminKey`] and
//! [`PresharedKey`]
//! print as `<redacted>`, have no `Display`, and no [`KeyError`] carries key bytes or key text;
//! decoding uses buffers that are wiped afterwards, and the secrets are wiped when dropped (best
//! effort: copies the compiler makes are out of reach).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use boringtun::x25519;
use ring::rand::{SecureRandom, SystemRandom};

/// Declares a 32-byte secret key newtype: made at random or read from base64, loaded from a file
/// that only its owner may access, printed redacted, wiped when dropped.
macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            pub fn generate() -> Self {
                $name(random_bytes())
            }

            pub fn from_base64(text: &str) -> Result<Self, KeyError> {
                decode_key($kind, text).map($name)
            }

            pub fn to_base64(&self) -> String {
                STANDARD.encode(self.0)
            }

            /// Reads its file (one base64 line), refusing one that group or other users can
            /// access.
            pub fn load(path: &Path) -> Result<Self, KeyError> {
                load_key_file($kind, path).map($name)
            }

            pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(<redacted>)", stringify!($name))
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                wipe(&mut self.0);
            }
        }
    };
}

pub mod credentials;
pub mod provision;
pub mod role;
pub use role::{flow_hash_key_file, role_key_dir, role_key_file, FlowHashKey, RoleKey};

/// Length of every key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key in base64 (standard alphabet, `=` padded).
pub const KEY_BASE64_LEN: usize = 44;
/// Longest input decoded to report its byte length; anything longer is reported by its length in
/// characters only.
const LONGEST_DECODED_BASE64: usize = 88;
/// Largest key file read; a key file holds one 44-character line.
const KEY_FILE_MAX_BYTES: usize = 256;
/// Longest pre-shared key, in bytes (without the line ending).
pub const PSK_MAX_LEN: usize = 512;
/// Largest pre-shared key file read: the longest key and a `\r\n`.
const PSK_FILE_MAX_BYTES: usize = PSK_MAX_LEN + 2;

/// Which kind of key a message is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyKind {
    PrivateKey,
    PublicKey,
    ClusterSecret,
    AdminKey,
    PresharedKey,
    RoleKey,
    FlowHashKey,
}

impl KeyKind {
    /// Every kind of key braid reads.
    pub const ALL: [KeyKind; 7] = [
        KeyKind::PrivateKey,
        KeyKind::PublicKey,
        KeyKind::ClusterSecret,
        KeyKind::AdminKey,
        KeyKind::PresharedKey,
        KeyKind::RoleKey,
        KeyKind::FlowHashKey,
    ];
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::PrivateKey => "private key",
            KeyKind::PublicKey => "public key",
            KeyKind::ClusterSecret => "cluster secret",
            KeyKind::AdminKey => "admin key",
            KeyKind::PresharedKey => "pre-shared key",
            KeyKind::RoleKey => "role key",
            KeyKind::FlowHashKey => "flow-hash key",
        })
    }
}

/// Why a key could not be decoded or loaded. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{kind}: expected {KEY_BASE64_LEN} characters of base64, got {chars} characters")]
    WrongTextLength { kind: KeyKind, chars: usize },
    #[error("{kind}: not valid base64 (expected {KEY_BASE64_LEN} characters of the standard alphabet, `=` padded, as `wg genkey` prints)")]
    NotBase64 { kind: KeyKind },
    #[error("{kind}: wrong length, {bytes} bytes instead of {KEY_LEN}")]
    WrongLength { kind: KeyKind, bytes: usize },
    #[error("{}: {kind} file not found", path.display())]
    FileMissing { kind: KeyKind, path: PathBuf },
    #[error("{}: cannot read the {kind} file: {source}", path.display())]
    FileUnreadable {
        kind: KeyKind,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: longer than the {KEY_FILE_MAX_BYTES} bytes a key file can hold", path.display())]
    FileTooLong { path: PathBuf },
    #[error(
        "{}: permissions {mode:04o} let group or other users read or write this {kind} file; \
         restrict them with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions { kind: KeyKind, path: PathBuf, mode: u32 },
    #[error(
        "{}: permissions {mode:04o} of this {kind} credential let other users read it or its group \
         write it; a credential may be readable by its owner and group only (0400 or 0440)",
        path.display()
    )]
    CredentialPermissions { kind: KeyKind, path: PathBuf, mode: u32 },
    #[error(
        "{}: this {kind} credential belongs to uid {owner}, neither root nor the user this daemon \
         runs as (uid {euid})",
        path.display()
    )]
    CredentialOwner {
        kind: KeyKind,
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("{}: {problem}", path.display())]
    InFile { path: PathBuf, problem: Box<KeyError> },
    #[error("pre-shared key: empty (expected one line of text)")]
    PskEmpty,
    #[error("pre-shared key: longer than {PSK_MAX_LEN} bytes")]
    PskTooLong,
    #[error("pre-shared key: contains a NUL byte (expected one line of text)")]
    PskNul,
    #[error(
        "pre-shared key: more than one line (expected one line of text; only a single trailing \
         newline is removed, and a carriage return counts as a line break)"
    )]
    PskMultiline,
}

/// A WireGuard (X25519) private key.
#[derive(Clone)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// A new random key, clamped for X25519 exactly as `wg genkey` does.
    pub fn generate() -> Self {
        let mut bytes = random_bytes();
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        PrivateKey(bytes)
    }

    /// Decodes `wg genkey` output (without the trailing newline).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_key(KeyKind::PrivateKey, text).map(PrivateKey)
    }

    /// The key in `wg genkey` format.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The matching public key, as `wg pubkey` computes it.
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519::StaticSecret::from(self.0);
        PublicKey(x25519::PublicKey::from(&secret).to_bytes())
    }

    /// Reads a key file (one base64 line), refusing one that group or other users can access.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        load_key_file(KeyKind::PrivateKey, path).map(PrivateKey)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// A WireGuard (X25519) public key. Displays, serializes and deserializes as base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Decodes `wg pubkey` output.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_key(KeyKind::PublicKey, text).map(PublicKey)
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl From<[u8; KEY_LEN]> for PublicKey {
    fn from(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Base64Key;
        impl serde::de::Visitor<'_> for Base64Key {
            type Value = PublicKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a base64 WireGuard public key ({KEY_BASE64_LEN} characters)")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<PublicKey, E> {
                PublicKey::from_base64(text).map_err(|error| {
                    let chars = text.chars().count();
                    let got = match error {
                        _ if chars != KEY_BASE64_LEN => format!("{chars} characters"),
                        KeyError::WrongLength { bytes, .. } => format!("{chars} characters encoding {bytes} bytes"),
                        _ => format!("{chars} characters that are not valid base64"),
                    };
                    E::custom(format_args!(
                        "expected a base64 WireGuard public key ({KEY_BASE64_LEN} characters), got {got}"
                    ))
                })
            }
        }
        deserializer.deserialize_str(Base64Key)
    }
}

secret_key!(
    /// The cluster secret: the controller's root key. Every daemon's role key and the demuxes'
    /// flow-hash key are derived from it (see [`role`]); no daemon but the controller reads it.
    ClusterSecret,
    KeyKind::ClusterSecret
);

secret_key!(
    /// The controller's admin key: 32 random bytes keying the HMAC-SHA256 tag of every remote
    /// administration request (`controller.admin_key_file`, `braid keygen --admin`).
    AdminKey,
    KeyKind::AdminKey
);

/// The IPsec pre-shared key: one line of text from its file, used byte for byte as IKEv2's
/// shared secret (RFC 7296 §2.15), exactly as strongSwan uses `secret = "..."`. It is 1 to
/// [`PSK_MAX_LEN`] bytes with no NUL, CR or LF; any other byte, spaces included, is part of it.
#[derive(Clone)]
pub struct PresharedKey(Box<[u8]>);

impl PresharedKey {
    /// A new key for a lab or a first setup: 32 random bytes in base64, 44 characters of text
    /// (the key is that text, so it can be pasted into a strongSwan `secret = "..."`).
    pub fn generate() -> Self {
        let mut bytes = random_bytes();
        let mut text = [0u8; KEY_BASE64_LEN];
        let written = STANDARD
            .encode_slice(bytes, &mut text)
            .expect("32 bytes always fit 44 base64 characters");
        let key = PresharedKey(Box::from(&text[..written]));
        wipe(&mut bytes);
        wipe(&mut text);
        key
    }

    /// The key in the content of its file: one line, with one trailing `\n` or `\r\n` removed.
    pub fn from_file_content(content: &[u8]) -> Result<Self, KeyError> {
        let line = content
            .strip_suffix(b"\r\n")
            .or_else(|| content.strip_suffix(b"\n"))
            .unwrap_or(content);
        if line.is_empty() {
            return Err(KeyError::PskEmpty);
        }
        if line.len() > PSK_MAX_LEN {
            return Err(KeyError::PskTooLong);
        }
        if line.contains(&0) {
            return Err(KeyError::PskNul);
        }
        if line.iter().any(|&b| b == b'\n' || b == b'\r') {
            return Err(KeyError::PskMultiline);
        }
        Ok(PresharedKey(Box::from(line)))
    }

    /// Reads a pre-shared key file, refusing one that group or other users can access.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let kind = KeyKind::PresharedKey;
        let (mut file, path) = open_key_file(kind, path)?;
        let path = path.as_path();
        let mut content = [0u8; PSK_FILE_MAX_BYTES + 1];
        let result = read_up_to(&mut file, &mut content)
            .map_err(|source| unreadable(kind, path, source))
            .and_then(|len| match len {
                len if len > PSK_FILE_MAX_BYTES => Err(KeyError::PskTooLong),
                len => Self::from_file_content(&content[..len]),
            })
            .map_err(|problem| match problem {
                KeyError::PskEmpty | KeyError::PskTooLong | KeyError::PskNul | KeyError::PskMultiline => {
                    KeyError::InFile {
                        path: path.to_path_buf(),
                        problem: Box::new(problem),
                    }
                }
                other => other,
            });
        wipe(&mut content);
        result
    }

    /// Writes the key and a newline to a new file at `path`, mode 0600, like
    /// [`write_secret_file`]; refuses to replace an existing file.
    pub fn write_new(&self, path: &Path) -> io::Result<()> {
        write_secret_bytes(path, &self.0)
    }

    /// The key's bytes, as IKE uses them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl Drop for PresharedKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Creates `path` with mode 0600 and writes `base64` and a newline to it. Refuses to replace an
/// existing file (`ErrorKind::AlreadyExists`); see [`replace_secret_file`].
pub fn write_secret_file(path: &Path, base64: &str) -> io::Result<()> {
    write_secret_bytes(path, base64.as_bytes())
}

/// Creates `path` with mode 0600 (refusing an existing file) and writes `line` and a newline.
fn write_secret_bytes(path: &Path, line: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(line)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Writes `base64` to `path` like [`write_secret_file`], replacing any existing file
/// atomically: the new content goes to a fresh 0600 file beside it, which is renamed over
/// `path`, so no reader ever sees a partial or world-readable key.
pub fn replace_secret_file(path: &Path, base64: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a secret file path must name a file"))?;
    let mut staging_name = name.to_os_string();
    staging_name.push(format!(".new-{}", std::process::id()));
    let staging = path.with_file_name(staging_name);
    let written = write_secret_file(&staging, base64).and_then(|()| std::fs::rename(&staging, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written
}

fn random_bytes() -> [u8; KEY_LEN] {
    let mut bytes = [0u8; KEY_LEN];
    // The system CSPRNG failing leaves no safe way to make a key; keys are made by operator
    // commands and lab setup, never on the data path.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random number generator failed");
    bytes
}

fn decode_key(kind: KeyKind, text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    if text.len() > LONGEST_DECODED_BASE64 {
        return Err(KeyError::WrongTextLength {
            kind,
            chars: text.chars().count(),
        });
    }
    let mut decoded = [0u8; LONGEST_DECODED_BASE64 / 4 * 3];
    let result = match STANDARD.decode_slice(text, &mut decoded) {
        Err(_) => Err(KeyError::NotBase64 { kind }),
        Ok(KEY_LEN) => {
            let mut key = [0u8; KEY_LEN];
            key.copy_from_slice(&decoded[..KEY_LEN]);
            Ok(key)
        }
        Ok(bytes) => Err(KeyError::WrongLength { kind, bytes }),
    };
    wipe(&mut decoded);
    result
}

/// The error for a key file that cannot be opened or read.
fn unreadable(kind: KeyKind, path: &Path, source: io::Error) -> KeyError {
    match source.kind() {
        io::ErrorKind::NotFound => KeyError::FileMissing {
            kind,
            path: path.to_path_buf(),
        },
        _ => KeyError::FileUnreadable {
            kind,
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Opens the key of `kind` configured at `path`: the service manager's credential of that kind
/// if there is one ([`credentials`]), else the file. Refuses anything but a regular file, with
/// the permission rule of where it comes from. Returns the file and the path actually opened.
fn open_key_file(kind: KeyKind, path: &Path) -> Result<(File, PathBuf), KeyError> {
    open_key_file_in(credentials::credentials_directory().as_deref(), kind, path)
}

/// [`open_key_file`] with the credentials directory given.
fn open_key_file_in(credentials: Option<&Path>, kind: KeyKind, path: &Path) -> Result<(File, PathBuf), KeyError> {
    let (path, source) = credentials::resolve(credentials, kind, path);
    let file = File::open(&path).map_err(|source| unreadable(kind, &path, source))?;
    // The mode of the file actually opened, so a swap between check and read changes nothing.
    let metadata = file.metadata().map_err(|source| unreadable(kind, &path, source))?;
    if !metadata.is_file() {
        return Err(KeyError::NotAFile { path });
    }
    credentials::check(kind, &path, source, &metadata)?;
    Ok((file, path))
}

fn load_key_file(kind: KeyKind, path: &Path) -> Result<[u8; KEY_LEN], KeyError> {
    let (mut file, path) = open_key_file(kind, path)?;
    let path = path.as_path();
    let mut content = [0u8; KEY_FILE_MAX_BYTES + 1];
    let result = read_up_to(&mut file, &mut content)
        .map_err(|source| unreadable(kind, path, source))
        .and_then(|len| match len {
            len if len > KEY_FILE_MAX_BYTES => Err(KeyError::FileTooLong {
                path: path.to_path_buf(),
            }),
            len => {
                let text = std::str::from_utf8(&content[..len]).map_err(|_| KeyError::NotBase64 { kind })?;
                decode_key(kind, text.trim())
            }
        })
        .map_err(|problem| match problem {
            KeyError::NotBase64 { .. } | KeyError::WrongLength { .. } | KeyError::WrongTextLength { .. } => {
                KeyError::InFile {
                    path: path.to_path_buf(),
                    problem: Box::new(problem),
                }
            }
            other => other,
        });
    wipe(&mut content);
    result
}

/// Fills `buf` from `reader` until it is full or the reader ends; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Overwrites secret bytes; `black_box` keeps the compiler from dropping the dead stores.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ScratchDir;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    fn hex(text: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_admin_key_round_trips_and_its_file_must_be_private() {
        let dir = ScratchDir::new("keys-admin");
        let key = AdminKey::generate();
        assert_eq!(key.to_base64().len(), KEY_BASE64_LEN);
        assert_eq!(format!("{key:?}"), "AdminKey(<redacted>)");
        let path = dir.0.join("admin.key");
        write_secret_file(&path, &key.to_base64()).unwrap();
        assert_eq!(AdminKey::load(&path).unwrap().as_bytes(), key.as_bytes());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = AdminKey::load(&path).unwrap_err();
        assert!(
            matches!(
                error,
                KeyError::Permissions {
                    kind: KeyKind::AdminKey,
                    mode: 0o640,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("admin key file"), "{error}");
    }

    #[test]
    fn rfc7748_alice_public_key() {
        let alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let private = PrivateKey::from_base64(&STANDARD.encode(alice)).unwrap();
        let expected = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(private.public_key().as_bytes(), &expected);
    }

    #[test]
    fn base64_round_trips() {
        let private = PrivateKey::generate();
        let text = private.to_base64();
        assert_eq!(text.len(), KEY_BASE64_LEN);
        assert!(text.ends_with('='));
        assert_eq!(PrivateKey::from_base64(&text).unwrap().as_bytes(), private.as_bytes());

        let public = private.public_key();
        assert_eq!(PublicKey::from_base64(&public.to_base64()).unwrap(), public);
        assert_eq!(public.to_string(), public.to_base64());

        let secret = ClusterSecret::generate();
        assert_eq!(
            ClusterSecret::from_base64(&secret.to_base64()).unwrap().as_bytes(),
            secret.as_bytes()
        );
    }

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        assert_ne!(a.as_bytes(), b.as_bytes());
        for key in [&a, &b] {
            assert_eq!(key.as_bytes()[0] & 7, 0);
            assert_eq!(key.as_bytes()[31] & 0xc0, 0x40);
        }
        assert_ne!(
            ClusterSecret::generate().as_bytes(),
            ClusterSecret::generate().as_bytes()
        );
    }

    #[test]
    fn bad_text_is_rejected_without_echoing_it() {
        let short = STANDARD.encode([7u8; 16]);
        let error = PublicKey::from_base64(&short).unwrap_err();
        assert_eq!(error.to_string(), "public key: wrong length, 16 bytes instead of 32");

        let garbage = "!".repeat(KEY_BASE64_LEN);
        let error = PrivateKey::from_base64(&garbage).unwrap_err();
        assert!(matches!(
            error,
            KeyError::NotBase64 {
                kind: KeyKind::PrivateKey
            }
        ));
        assert!(!error.to_string().contains("!!"));

        let long = "A".repeat(200);
        let error = ClusterSecret::from_base64(&long).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cluster secret: expected 44 characters of base64, got 200 characters"
        );

        // Unpadded 32-byte base64 is not the WireGuard format.
        let unpadded = STANDARD.encode([1u8; 32]).trim_end_matches('=').to_string();
        assert!(PublicKey::from_base64(&unpadded).is_err());
    }

    #[test]
    fn secrets_debug_redacted() {
        let private = PrivateKey::generate();
        assert_eq!(format!("{private:?}"), "PrivateKey(<redacted>)");
        let secret = ClusterSecret::generate();
        assert_eq!(format!("{secret:?}"), "ClusterSecret(<redacted>)");
        let public = private.public_key();
        assert_eq!(format!("{public:?}"), format!("PublicKey({})", public.to_base64()));
    }

    #[test]
    fn write_then_load_with_private_permissions() {
        let dir = ScratchDir::new("keys-write-load");
        let path = dir.0.join("gw.key");
        let key = PrivateKey::generate();
        write_secret_file(&path, &key.to_base64()).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", key.to_base64())
        );
        assert_eq!(PrivateKey::load(&path).unwrap().as_bytes(), key.as_bytes());

        let error = write_secret_file(&path, &PrivateKey::generate().to_base64()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(PrivateKey::load(&path).unwrap().as_bytes(), key.as_bytes());

        let replacement = ClusterSecret::generate();
        replace_secret_file(&path, &replacement.to_base64()).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(ClusterSecret::load(&path).unwrap().as_bytes(), replacement.as_bytes());
        assert_eq!(
            std::fs::read_dir(&dir.0).unwrap().count(),
            1,
            "no staging file left behind"
        );
    }

    #[test]
    fn load_refuses_a_file_others_can_read() {
        let dir = ScratchDir::new("keys-perms");
        let path = dir.0.join("open.key");
        std::fs::write(&path, format!("{}\n", PrivateKey::generate().to_base64())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let error = PrivateKey::load(&path).unwrap_err();
        assert!(matches!(error, KeyError::Permissions { mode: 0o644, .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("0644"), "{message}");
        assert!(message.contains(&format!("chmod 600 {}", path.display())), "{message}");
        assert!(ClusterSecret::load(&path).is_err());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(PrivateKey::load(&path).is_ok());
    }

    #[test]
    fn load_names_the_file_and_problem() {
        let dir = ScratchDir::new("keys-problems");
        let missing = dir.0.join("absent.key");
        let error = PrivateKey::load(&missing).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{}: private key file not found", missing.display())
        );

        let short = dir.0.join("short.key");
        write_secret_file(&short, &STANDARD.encode([9u8; 31])).unwrap();
        let error = ClusterSecret::load(&short).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: cluster secret: wrong length, 31 bytes instead of 32",
                short.display()
            )
        );

        let huge = dir.0.join("huge.key");
        write_secret_file(&huge, &"A".repeat(4096)).unwrap();
        assert!(matches!(
            PrivateKey::load(&huge).unwrap_err(),
            KeyError::FileTooLong { .. }
        ));

        assert!(matches!(
            PrivateKey::load(&dir.0).unwrap_err(),
            KeyError::NotAFile { .. }
        ));
    }

    #[test]
    fn preshared_key_is_one_line_used_byte_for_byte() {
        for (content, key) in [
            (&b"secret\n"[..], &b"secret"[..]),
            (b"secret\r\n", b"secret"),
            (b"secret", b"secret"),
            (b" two words \n", b" two words "),
            (b"\"quoted\"\t#not a comment\n", b"\"quoted\"\t#not a comment"),
            (b"\xff\xfe latin-1 \xe9\n", b"\xff\xfe latin-1 \xe9"),
        ] {
            let psk = PresharedKey::from_file_content(content).unwrap();
            assert_eq!(psk.as_bytes(), key, "{content:?}");
        }
        let longest = vec![b'k'; PSK_MAX_LEN];
        assert_eq!(
            PresharedKey::from_file_content(&longest).unwrap().as_bytes(),
            &longest[..]
        );
    }

    #[test]
    fn preshared_key_content_is_refused_with_the_reason() {
        let too_long = vec![b'k'; PSK_MAX_LEN + 1];
        let cases: [(&[u8], &str); 9] = [
            (b"", "pre-shared key: empty (expected one line of text)"),
            (b"\n", "pre-shared key: empty"),
            (b"\r\n", "pre-shared key: empty"),
            (&too_long, "pre-shared key: longer than 512 bytes"),
            (b"sec\0ret\n", "pre-shared key: contains a NUL byte"),
            (b"secret\n\n", "pre-shared key: more than one line"),
            (b"secret\nsecond\n", "pre-shared key: more than one line"),
            (b"secret\r", "pre-shared key: more than one line"),
            (b"secret\n\r\n", "pre-shared key: more than one line"),
        ];
        for (content, expected) in cases {
            let error = PresharedKey::from_file_content(content).unwrap_err();
            assert!(error.to_string().starts_with(expected), "{content:?}: {error}");
        }
    }

    #[test]
    fn preshared_key_generate_write_load() {
        let dir = ScratchDir::new("keys-psk");
        let path = dir.0.join("ipsec.psk");
        let psk = PresharedKey::generate();
        assert_eq!(psk.as_bytes().len(), KEY_BASE64_LEN);
        assert_eq!(STANDARD.decode(psk.as_bytes()).unwrap().len(), KEY_LEN);
        assert_ne!(PresharedKey::generate().as_bytes(), psk.as_bytes());
        psk.write_new(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let mut expected = psk.as_bytes().to_vec();
        expected.push(b'\n');
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        assert_eq!(PresharedKey::load(&path).unwrap().as_bytes(), psk.as_bytes());
        let error = PresharedKey::generate().write_new(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(format!("{psk:?}"), "PresharedKey(<redacted>)");
    }

    #[test]
    fn preshared_key_load_names_the_file_and_problem() {
        let dir = ScratchDir::new("keys-psk-problems");
        let write = |name: &str, content: &[u8], mode: u32| {
            let path = dir.0.join(name);
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };

        let open = write("open.psk", b"secret\n", 0o640);
        let error = PresharedKey::load(&open).unwrap_err();
        assert!(matches!(error, KeyError::Permissions { mode: 0o640, .. }), "{error:?}");
        assert!(error.to_string().contains("this pre-shared key file"), "{error}");
        assert!(
            error.to_string().contains(&format!("chmod 600 {}", open.display())),
            "{error}"
        );

        let empty = write("empty.psk", b"", 0o600);
        assert_eq!(
            PresharedKey::load(&empty).unwrap_err().to_string(),
            format!("{}: pre-shared key: empty (expected one line of text)", empty.display())
        );
        let two = write("two.psk", b"secret\nsecret\n", 0o600);
        let error = PresharedKey::load(&two).unwrap_err();
        assert!(matches!(&error, KeyError::InFile { problem, .. } if matches!(**problem, KeyError::PskMultiline)));
        assert!(!error.to_string().contains("secret\n"), "{error}");
        let huge = write("huge.psk", &[b'k'; 4096], 0o600);
        assert_eq!(
            PresharedKey::load(&huge).unwrap_err().to_string(),
            format!("{}: pre-shared key: longer than 512 bytes", huge.display())
        );
        let crlf = write("crlf.psk", &[&[b'k'; PSK_MAX_LEN][..], b"\r\n"].concat(), 0o400);
        assert_eq!(PresharedKey::load(&crlf).unwrap().as_bytes().len(), PSK_MAX_LEN);

        let missing = dir.0.join("absent.psk");
        assert_eq!(
            PresharedKey::load(&missing).unwrap_err().to_string(),
            format!("{}: pre-shared key file not found", missing.display())
        );
        assert!(matches!(
            PresharedKey::load(&dir.0).unwrap_err(),
            KeyError::NotAFile { .. }
        ));
    }

    #[test]
    fn public_key_deserialize_message() {
        #[derive(Debug, serde::Deserialize)]
        struct Holder {
            #[allow(dead_code)]
            key: PublicKey,
        }
        let error = serde_json::from_str::<Holder>(r#"{"key": "c2hvcnQga2V5IQ=="}"#).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("expected a base64 WireGuard public key (44 characters), got 16 characters"),
            "{error}"
        );
        let public = PrivateKey::generate().public_key();
        let json = serde_json::to_string(&public).unwrap();
        assert_eq!(json, format!("\"{}\"", public.to_base64()));
        let parsed: PublicKey = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, public);
    }

    /// Runs `wg` with `input` on stdin; `None` when wireguard-tools is not installed.
    fn wg(args: &[&str], input: &str) -> Option<String> {
        let mut child = match Command::new("wg")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => panic!("cannot run wg: {error}"),
        };
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "wg {args:?} failed");
        Some(String::from_utf8(output.stdout).unwrap().trim().to_string())
    }

    #[test]
    fn interoperates_with_wireguard_tools() {
        let Some(theirs) = wg(&["genkey"], "") else {
            eprintln!("SKIPPED: wg not installed; install wireguard-tools to test key interoperability");
            return;
        };
        let their_private = PrivateKey::from_base64(&theirs).unwrap();
        let their_public = wg(&["pubkey"], &theirs).unwrap();
        assert_eq!(their_private.public_key().to_base64(), their_public);

        let ours = PrivateKey::generate();
        assert_eq!(
            wg(&["pubkey"], &ours.to_base64()).unwrap(),
            ours.public_key().to_base64()
        );
    }
}
