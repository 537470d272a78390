//! Keys the service manager hands over: systemd credentials (`LoadCredential=`,
//! `LoadCredentialEncrypted=`), or a Kubernetes Secret volume laid out the same way.
//!
//! Design: every key is loaded through one path ([`super::open_key_file`]), and that path asks
//! [`resolve`] first. When the daemon runs with `$CREDENTIALS_DIRECTORY` set and that directory
//! holds a file named after the kind of key being loaded ([`credential_name`]: `private-key`,
//! `role-key`, `psk`, `cluster-secret`, `flow-hash-key`, `admin-key`), that file is the key and
//! the path in the cluster file is not read; otherwise the configured path is. The cluster
//! file therefore stays the same whether a daemon runs under systemd, Kubernetes or by hand, and
//! each unit or pod maps its own files to the fixed names, e.g.
//! `LoadCredential=private-key:/etc/braid/keys/a1.key`.
//!
//! The permission rule differs by where the key comes from ([`check`]):
//!
//! * a file named in the cluster file must be private to its owner (no access at all for group
//!   or others, the rule of `wg` and OpenSSH);
//! * a credential may also be readable by its group, because the service manager made it for
//!   this service alone: systemd writes it mode 0400 and grants the service's user read access
//!   through an ACL (which `stat` shows as group read, 0440), and a Kubernetes Secret volume
//!   with `defaultMode: 0440` makes it readable by the pod's `fsGroup`. Write access for group
//!   or others, or any access for others, is still refused, and the file must belong to root or
//!   to the user the daemon runs as.

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{KeyError, KeyKind};

/// The variable through which systemd (or a pod spec) names the credentials directory.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Mode bits a credential may not have: anything for others, write or execute for the group.
const CREDENTIAL_FORBIDDEN: u32 = 0o037;
/// Mode bits a key file named in the cluster file may not have.
const FILE_FORBIDDEN: u32 = 0o077;

/// The credential name under which a key of `kind` is looked for.
pub fn credential_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::PrivateKey | KeyKind::PublicKey => "private-key",
        KeyKind::ClusterSecret => "cluster-secret",
        KeyKind::AdminKey => "admin-key",
        KeyKind::PresharedKey => "psk",
        KeyKind::RoleKey => "role-key",
        KeyKind::FlowHashKey => "flow-hash-key",
    }
}

/// Where a key is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The path in the cluster file (or the one derived from it).
    File,
    /// A credential in `$CREDENTIALS_DIRECTORY`.
    Credential,
}

/// The credentials directory of this process, if the service manager gave it one.
pub fn credentials_directory() -> Option<PathBuf> {
    std::env::var_os(CREDENTIALS_DIRECTORY)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
}

/// The file to read for a key of `kind` configured at `configured`, given the credentials
/// directory `credentials` (see the module docs).
pub fn resolve(credentials: Option<&Path>, kind: KeyKind, configured: &Path) -> (PathBuf, Source) {
    if let Some(dir) = credentials {
        let candidate = dir.join(credential_name(kind));
        if candidate.exists() {
            return (candidate, Source::Credential);
        }
    }
    (configured.to_path_buf(), Source::File)
}

/// The file a key of `kind` will be read from, given the credentials directory `credentials`
/// and the path the cluster file configures, if any: the credential when there is one (so a
/// daemon under a service manager needs no path in the cluster file), else the configured
/// path; `None` when there is neither.
pub fn key_path_in(credentials: Option<&Path>, kind: KeyKind, configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(path) => Some(resolve(credentials, kind, path).0),
        None => credentials
            .map(|dir| dir.join(credential_name(kind)))
            .filter(|candidate| candidate.exists()),
    }
}

/// [`key_path_in`] with this process's credentials directory.
pub fn key_path(kind: KeyKind, configured: Option<&Path>) -> Option<PathBuf> {
    key_path_in(credentials_directory().as_deref(), kind, configured)
}

/// Applies the permission rule for a key from `source` to the opened file's `metadata`.
pub fn check(kind: KeyKind, path: &Path, source: Source, metadata: &Metadata) -> Result<(), KeyError> {
    let mode = metadata.permissions().mode() & 0o7777;
    match source {
        Source::File if mode & FILE_FORBIDDEN != 0 => Err(KeyError::Permissions {
            kind,
            path: path.to_path_buf(),
            mode,
        }),
        Source::File => Ok(()),
        Source::Credential if mode & CREDENTIAL_FORBIDDEN != 0 => Err(KeyError::CredentialPermissions {
            kind,
            path: path.to_path_buf(),
            mode,
        }),
        Source::Credential => {
            let euid = rustix::process::geteuid().as_raw();
            let owner = metadata.uid();
            if owner == 0 || owner == euid {
                Ok(())
            } else {
                Err(KeyError::CredentialOwner {
                    kind,
                    path: path.to_path_buf(),
                    owner,
                    euid,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::keys::{ClusterSecret, PrivateKey, RoleKey};

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("braid-credentials-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn open(credentials: Option<&Path>, kind: KeyKind, configured: &Path) -> Result<PathBuf, KeyError> {
        crate::keys::open_key_file_in(credentials, kind, configured).map(|(_, path)| path)
    }

    #[test]
    fn a_key_path_is_the_credential_even_when_the_cluster_file_names_none() {
        let dir = Dir::new("key-path");
        let creds = Dir::new("key-path-creds");
        let configured = dir.write("a1.key", &PrivateKey::generate().to_base64(), 0o600);
        assert_eq!(key_path_in(Some(&creds.0), KeyKind::PrivateKey, None), None);
        assert_eq!(key_path_in(None, KeyKind::PrivateKey, None), None);
        assert_eq!(
            key_path_in(Some(&creds.0), KeyKind::PrivateKey, Some(&configured)),
            Some(configured.clone())
        );
        let credential = creds.write("private-key", &PrivateKey::generate().to_base64(), 0o400);
        assert_eq!(
            key_path_in(Some(&creds.0), KeyKind::PrivateKey, None),
            Some(credential.clone())
        );
        assert_eq!(
            key_path_in(Some(&creds.0), KeyKind::PrivateKey, Some(&configured)),
            Some(credential)
        );
    }

    #[test]
    fn a_credential_named_after_the_kind_wins_over_the_configured_file() {
        let dir = Dir::new("resolve");
        let creds = Dir::new("resolve-creds");
        let configured = dir.write("a1.key", &PrivateKey::generate().to_base64(), 0o600);
        let credential = creds.write("private-key", &PrivateKey::generate().to_base64(), 0o400);
        assert_eq!(
            resolve(Some(&creds.0), KeyKind::PrivateKey, &configured),
            (credential.clone(), Source::Credential)
        );
        // Another kind has no credential here: its configured file is read.
        assert_eq!(
            resolve(Some(&creds.0), KeyKind::RoleKey, &configured),
            (configured.clone(), Source::File)
        );
        assert_eq!(
            resolve(None, KeyKind::PrivateKey, &configured),
            (configured.clone(), Source::File)
        );
        assert_eq!(
            open(Some(&creds.0), KeyKind::PrivateKey, &configured).unwrap(),
            credential
        );
        assert_eq!(
            [
                KeyKind::PrivateKey,
                KeyKind::RoleKey,
                KeyKind::PresharedKey,
                KeyKind::ClusterSecret,
                KeyKind::FlowHashKey,
                KeyKind::AdminKey
            ]
            .map(credential_name),
            [
                "private-key",
                "role-key",
                "psk",
                "cluster-secret",
                "flow-hash-key",
                "admin-key"
            ]
        );
    }

    #[test]
    fn credentials_may_be_group_readable_and_files_may_not() {
        let dir = Dir::new("modes");
        let creds = Dir::new("modes-creds");
        let key = RoleKey::generate().to_base64();
        for (mode, as_credential, as_file) in [
            (0o400, true, true),
            (0o600, true, true),
            (0o440, true, false), // systemd's ACL, a Secret volume with fsGroup
            (0o640, true, false),
            (0o444, false, false), // others may read
            (0o460, false, false), // the group may write
            (0o404, false, false),
        ] {
            let credential = creds.write("role-key", &key, mode);
            let configured = dir.write("gw-a-1.key", &key, mode);
            let loaded = open(Some(&creds.0), KeyKind::RoleKey, Path::new("/nonexistent/role.key"));
            assert_eq!(loaded.is_ok(), as_credential, "credential mode {mode:04o}: {loaded:?}");
            if let Err(error) = loaded {
                assert!(matches!(error, KeyError::CredentialPermissions { mode: m, .. } if m == mode));
                let text = error.to_string();
                assert!(
                    text.contains(&credential.display().to_string()) && text.contains("credential"),
                    "{text}"
                );
            }
            let loaded = open(None, KeyKind::RoleKey, &configured);
            assert_eq!(loaded.is_ok(), as_file, "file mode {mode:04o}: {loaded:?}");
            // The same key file outside a credentials directory keeps the strict rule even when
            // a credentials directory exists but holds no credential of this kind.
            let loaded = open(Some(&dir.0), KeyKind::PrivateKey, &configured);
            assert_eq!(
                loaded.is_ok(),
                as_file,
                "file mode {mode:04o} beside credentials: {loaded:?}"
            );
        }
    }

    #[test]
    fn every_kind_loads_through_the_credential_path() {
        let creds = Dir::new("kinds");
        let secret = ClusterSecret::generate();
        creds.write("cluster-secret", &secret.to_base64(), 0o440);
        creds.write("psk", "correct horse battery staple\n", 0o400);
        let missing = Path::new("/nonexistent/braid/key");
        let (mut file, path) = crate::keys::open_key_file_in(Some(&creds.0), KeyKind::ClusterSecret, missing).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, secret.to_base64());
        assert_eq!(path, creds.0.join("cluster-secret"));
        assert!(crate::keys::open_key_file_in(Some(&creds.0), KeyKind::PresharedKey, missing).is_ok());
        // Without a credential of its kind the configured (missing) file is what is reported.
        let error = crate::keys::open_key_file_in(Some(&creds.0), KeyKind::AdminKey, missing).unwrap_err();
        assert!(
            matches!(error, KeyError::FileMissing { ref path, .. } if path == missing),
            "{error}"
        );
    }

    #[test]
    fn a_credential_owned_by_another_user_is_refused() {
        if rustix::process::geteuid().as_raw() != 0 {
            eprintln!("SKIPPED: a_credential_owned_by_another_user_is_refused needs root to chown");
            return;
        }
        let creds = Dir::new("owner");
        let path = creds.write("role-key", &RoleKey::generate().to_base64(), 0o400);
        std::process::Command::new("chown")
            .arg("65534")
            .arg(&path)
            .status()
            .unwrap();
        let error = open(Some(&creds.0), KeyKind::RoleKey, Path::new("/nonexistent")).unwrap_err();
        assert!(
            matches!(
                error,
                KeyError::CredentialOwner {
                    owner: 65534,
                    euid: 0,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("uid 65534"), "{error}");
    }
}
