//! `braid keygen` and `braid pubkey`: keys in WireGuard's base64 format, so they interoperate
//! with `wg genkey | wg pubkey`, the cluster secret, the admin key and the IPsec pre-shared key.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use braid_core::keys::{write_secret_file, AdminKey, ClusterSecret, PresharedKey, PrivateKey};

/// Which key `braid keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A WireGuard private key (the default).
    Private,
    /// The cluster secret (`--secret`).
    Secret,
    /// The admin key that signs remote administration requests (`--admin`).
    Admin,
    /// An IPsec pre-shared key (`--psk`).
    Psk,
}

impl KeyKind {
    /// The kind the flags ask for (they are mutually exclusive).
    pub fn pick(secret: bool, admin: bool, psk: bool) -> KeyKind {
        match (secret, admin, psk) {
            (true, _, _) => KeyKind::Secret,
            (_, true, _) => KeyKind::Admin,
            (_, _, true) => KeyKind::Psk,
            _ => KeyKind::Private,
        }
    }
}

/// Prints (or writes to `out`, mode 0600) a new key of `kind`.
pub fn keygen(kind: KeyKind, out: Option<&Path>) -> Result<()> {
    let text = match kind {
        KeyKind::Secret => ClusterSecret::generate().to_base64(),
        KeyKind::Admin => AdminKey::generate().to_base64(),
        KeyKind::Psk => {
            String::from_utf8(PresharedKey::generate().as_bytes().to_vec()).context("a generated key is base64 text")?
        }
        KeyKind::Private => PrivateKey::generate().to_base64(),
    };
    match out {
        Some(path) => {
            write_secret_file(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {} (mode 0600)", path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// Reads a private key on stdin and prints its public key.
pub fn pubkey() -> Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read a private key from stdin")?;
    let key = PrivateKey::from_base64(text.trim()).context("stdin is not a WireGuard private key")?;
    println!("{}", key.public_key().to_base64());
    Ok(())
}
