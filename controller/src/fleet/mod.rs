//! The daemons a controller runs: what to launch ([`spec`]), the processes themselves
//! ([`process`], with [`pidfd`] for those it adopts), and the state a restarted controller
//! carries on from: `fleet.json`, the record that lets it adopt the processes its predecessor
//! left running instead of killing them, `membership-epoch`, the highest membership epoch
//! pushed, so epochs only move forward across restarts, and `admin.json`, the operator's
//! standing orders (pairs drained or removed by command), so a restarted controller keeps them.

pub mod pidfd;
pub mod process;
pub mod spec;

use std::collections::BTreeMap;
use std::path::Path;

/// Writes `name → pid` for every running daemon to `<state_dir>/fleet.json` (atomically).
pub fn save_pids(state_dir: &Path, pids: &BTreeMap<String, u32>) -> std::io::Result<()> {
    write_atomically(state_dir, "fleet.json", &serde_json::to_vec_pretty(pids)?)
}

/// The pids recorded by the last controller, if any.
pub fn load_pids(state_dir: &Path) -> BTreeMap<String, u32> {
    std::fs::read(state_dir.join("fleet.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The operator's standing orders: pairs drained and pairs removed by command.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdminRecord {
    pub draining: Vec<braid_core::flow::PairId>,
    pub removed: Vec<braid_core::flow::PairId>,
}

/// Writes the operator's standing orders to `<state_dir>/admin.json` (atomically, synced).
pub fn save_admin(state_dir: &Path, record: &AdminRecord) -> std::io::Result<()> {
    write_atomically(state_dir, "admin.json", &serde_json::to_vec_pretty(record)?)
}

/// The standing orders a previous controller recorded; none when there is no record (a
/// damaged one is reported and read as none).
pub fn load_admin(state_dir: &Path) -> AdminRecord {
    let path = state_dir.join("admin.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::error!(path = %path.display(), "unreadable admin record, ignored: {e}");
            AdminRecord::default()
        }),
        Err(_) => AdminRecord::default(),
    }
}

/// Records `epoch` as the highest membership epoch pushed (atomically, and synced: it must
/// survive a crash of the host before the next push).
pub fn save_epoch(state_dir: &Path, epoch: u64) -> std::io::Result<()> {
    write_atomically(state_dir, "membership-epoch", format!("{epoch}\n").as_bytes())
}

/// The highest membership epoch a previous controller recorded; 0 when there is none (a
/// damaged record is reported and read as none: the demuxes' reports move the epoch on).
pub fn load_epoch(state_dir: &Path) -> u64 {
    let path = state_dir.join("membership-epoch");
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(path = %path.display(), "unreadable membership epoch record; starting from the demuxes' reports");
            0
        }),
        Err(_) => 0,
    }
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(tmp, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_record_round_trips_and_survives_damage() {
        let scratch = braid_core::testing::ScratchDir::new("fleet-admin");
        let dir = scratch.path();
        assert_eq!(load_admin(dir), AdminRecord::default());
        let record = AdminRecord {
            draining: vec![2],
            removed: vec![3, 4],
        };
        save_admin(dir, &record).unwrap();
        assert_eq!(load_admin(dir), record);
        std::fs::write(dir.join("admin.json"), "{\"draining\": [").unwrap();
        assert_eq!(load_admin(dir), AdminRecord::default());
    }

    #[test]
    fn the_epoch_record_round_trips_and_survives_damage() {
        let scratch = braid_core::testing::ScratchDir::new("fleet-epoch");
        let dir = scratch.path();
        assert_eq!(load_epoch(dir), 0);
        save_epoch(dir, 42).unwrap();
        assert_eq!(load_epoch(dir), 42);
        save_epoch(dir, 1 << 40).unwrap();
        assert_eq!(load_epoch(dir), 1 << 40);
        std::fs::write(dir.join("membership-epoch"), "garbage").unwrap();
        assert_eq!(load_epoch(dir), 0);
    }
}
