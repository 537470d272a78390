//! `braid keygen` and `braid pubkey`: keys in WireGuard's base64 format, so they interoperate
//! with `wg genkey | wg pubkey`, the cluster secret, the admin key and the IPsec pre-shared key.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use braid_core::config::ClusterConfig;
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

/// Writes the role keys of every daemon of the cluster file `config` (and the flow-hash key)
/// from its cluster secret.
pub fn role_keys(config: &Path) -> Result<()> {
    let cfg = ClusterConfig::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secret = ClusterSecret::load(&cfg.cluster.secret_file)
        .with_context(|| format!("{}: cluster.secret_file", cfg.path.display()))?;
    let written = braid_core::keys::provision::ensure_all(&cfg, &secret).with_context(|| {
        format!(
            "cannot write the role keys under {}",
            cfg.flow_hash_key_file().display()
        )
    })?;
    for path in &written {
        eprintln!("wrote {} (mode 0600)", path.display());
    }
    if written.is_empty() {
        eprintln!(
            "every role key under {} is already right",
            braid_core::keys::role_key_dir(&cfg.cluster.secret_file).display()
        );
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
