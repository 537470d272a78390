//! Configuration errors: each names the file, the field path and what was expected.

use std::io;
use std::path::PathBuf;

/// Why a cluster file could not be used. Display reads
/// `cluster.yaml: pairs[1].gateways.b.public_key: expected ..., got ...`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read { file: PathBuf, source: io::Error },
    /// The text is not YAML, or does not fit the schema (unknown field, wrong type, missing
    /// field, malformed value). The message leads with the field path and ends with the line and
    /// column.
    #[error("{}: {source}", file.display())]
    Syntax {
        file: PathBuf,
        source: serde_yaml_ng::Error,
    },
    /// A field's value is well formed but not acceptable, or a lookup asked for something the
    /// configuration does not have.
    #[error("{}: {field}: {problem}", file.display())]
    Field {
        file: PathBuf,
        field: String,
        problem: String,
    },
}

impl ConfigError {
    /// The field path the error is about (`pairs[1].gateways.b.public_key`), when known apart
    /// from the message.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Field { field, .. } => Some(field),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}
