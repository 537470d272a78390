//! `braid keygen` and `braid pubkey`: keys in WireGuard's base64 format, so they interoperate
//! with `wg genkey | wg pubkey`, and the cluster secret.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use braid_core::config::ClusterConfig;
use braid_core::keys::{write_secret_file, ClusterSecret, PresharedKey, PrivateKey};

/// Prints (or writes to `out`, mode 0600) a new private key, or with `secret` a cluster secret,
/// or with `psk` an IPsec pre-shared key.
pub fn keygen(secret: bool, psk: bool, out: Option<&Path>) -> Result<()> {
    let text = if secret {
        ClusterSecret::generate().to_base64()
    } else if psk {
        String::from_utf8(PresharedKey::generate().as_bytes().to_vec()).context("a generated key is base64 text")?
    } else {
        PrivateKey::generate().to_base64()
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
