//! `braid keygen` and `braid pubkey`: keys in WireGuard's base64 format, so they interoperate
//! with `wg genkey | wg pubkey`, and the cluster secret.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
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
