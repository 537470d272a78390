//! The daemons' keys on disk, derived from the cluster secret (see [`super::role`]): one role-key file per daemon and the flow-hash key, each 0600 in
//! the role-key directory (0700) beside the secret file.
//!
//! The controller writes the keys of every daemon it launches before it launches it, so a
//! single-host cluster needs nothing but the secret. Daemons on other hosts get theirs from
//! `braid keygen --role-keys` (run where the secret is, then copy each file to its host).
//! A file that already holds the right key is left alone; one holding another key (the secret
//! was replaced) is replaced atomically.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{replace_secret_file, ClusterSecret, FlowHashKey, RoleKey};
use crate::config::ClusterConfig;
use crate::control::{DaemonId, Role};

/// Makes sure daemon `id` finds its keys: its role key, and for a demux the flow-hash key.
/// Returns the files written (none when all were already right).
pub fn ensure(cfg: &ClusterConfig, secret: &ClusterSecret, id: &DaemonId) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let role_file = cfg.role_key_file(id);
    let role_key = secret.role_key(&id.wire_name());
    if RoleKey::load(&role_file).ok().as_ref() != Some(&role_key) {
        write(&role_file, &role_key.to_base64())?;
        written.push(role_file);
    }
    if id.role == Role::Demux {
        let flow_file = cfg.flow_hash_key_file();
        let flow_key = secret.flow_hash_key();
        if FlowHashKey::load(&flow_file).ok().as_ref() != Some(&flow_key) {
            write(&flow_file, &flow_key.to_base64())?;
            written.push(flow_file);
        }
    }
    Ok(written)
}

/// Writes the keys of every daemon of the cluster (`braid keygen --role-keys`).
pub fn ensure_all(cfg: &ClusterConfig, secret: &ClusterSecret) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for id in cfg.daemons() {
        written.extend(ensure(cfg, secret, &id)?);
    }
    Ok(written)
}

fn write(path: &Path, base64: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    replace_secret_file(path, base64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_written_once_and_replaced_when_the_secret_changes() {
        let dir = std::env::temp_dir().join(format!("braid-role-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (ka, kb) = (PrivateKey::generate().public_key(), PrivateKey::generate().public_key());
        let yaml = format!(
            "cluster:\n  name: t\n  secret_file: secret.key\n\
            sites:\n  a:\n    prefixes: [198.18.1.0/24]\n    demux: {{tun: ta, geneve: 198.18.9.1:6081}}\n\
            \x20 b:\n    prefixes: [198.18.2.0/24]\n    demux: {{tun: tb, geneve: 198.18.9.2:6081}}\n\
            pairs:\n  - id: 1\n    gateways:\n\
            \x20     a: {{geneve: 198.18.9.3:6081, wan: 198.18.8.1:51820, public_key: {ka}}}\n\
            \x20     b: {{geneve: 198.18.9.4:6081, wan: 198.18.8.2:51820, public_key: {kb}}}\n"
        );
        let cfg = ClusterConfig::from_yaml_str(&yaml, &dir.join("cluster.yaml")).unwrap();
        let secret = ClusterSecret::generate();
        let written = ensure_all(&cfg, &secret).unwrap();
        assert_eq!(
            written.len(),
            5,
            "two demuxes, two gateways, the flow-hash key: {written:?}"
        );
        let gw = DaemonId::gateway("a", 1);
        let file = cfg.role_key_file(&gw);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(file.parent().unwrap()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(RoleKey::load(&file).unwrap(), secret.role_key("gw/a/1"));
        assert!(
            ensure_all(&cfg, &secret).unwrap().is_empty(),
            "right keys are left alone"
        );
        let rotated = ClusterSecret::generate();
        assert_eq!(ensure(&cfg, &rotated, &gw).unwrap(), vec![file.clone()]);
        assert_eq!(RoleKey::load(&file).unwrap(), rotated.role_key("gw/a/1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
