//! The daemons a controller runs: what to launch ([`spec`]), the processes themselves
//! ([`process`], with [`pidfd`] for those it adopts), and `fleet.json`, the record that lets a restarted controller adopt the
//! processes its predecessor left running instead of killing them.

pub mod pidfd;
pub mod process;
pub mod spec;

use std::collections::BTreeMap;
use std::path::Path;

/// Writes `name → pid` for every running daemon to `<state_dir>/fleet.json` (atomically).
pub fn save_pids(state_dir: &Path, pids: &BTreeMap<String, u32>) -> std::io::Result<()> {
    let path = state_dir.join("fleet.json");
    let tmp = state_dir.join(".fleet.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(pids)?)?;
    std::fs::rename(tmp, path)
}

/// The pids recorded by the last controller, if any.
pub fn load_pids(state_dir: &Path) -> BTreeMap<String, u32> {
    std::fs::read(state_dir.join("fleet.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
