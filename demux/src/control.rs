//! The demux's side of the control protocol: heartbeats out, membership in.
//!
//! Runs on its own thread ([`braid_core::control::ControlClient::run`]). A heartbeat carries
//! the demux's totals and, per pair, its traffic, pinned flows (the flow table's last census)
//! and canary results. A membership push becomes a new Maglev table over the `active` pairs,
//! *serving* the draining ones too (their pinned flows stay), installed as a new immutable
//! snapshot the data threads pick up at their next round ([`crate::datapath::SnapshotCell`]). Every pair the push names — `probing` lists all pairs of the cluster, healthy or not —
//! gets canaries; one this demux has never heard of (a pair added online) is looked up in the
//! re-read cluster file first, so it is probed (and can be seen to be healthy) before any flow
//! is steered to it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use braid_core::config::ClusterConfig;
use braid_core::control::{DaemonId, Heartbeat, Membership};
use braid_core::flow::PairId;

use crate::datapath::DataPath;
use crate::steer::MaglevTable;

/// What the control thread needs.
#[derive(Debug)]
pub struct DemuxControl {
    pub me: DaemonId,
    pub path: Arc<DataPath>,
    pub started: Instant,
    pub maglev_table_size: usize,
    /// The cluster file, re-read when a pair joins.
    pub config: PathBuf,
}

impl DemuxControl {
    /// This demux's heartbeat.
    pub fn heartbeat(&self) -> Heartbeat {
        use crate::datapath::c;
        let stats = &self.path.stats;
        let mut hb = Heartbeat::new(self.me.clone());
        hb.uptime_ms = self.started.elapsed().as_millis() as u64;
        hb.tx_packets = stats.get(c::GENEVE_TX_PACKETS);
        hb.rx_packets = stats.get(c::GENEVE_RX_PACKETS);
        hb.tx_bytes = stats.get(c::TUN_RX_BYTES);
        hb.rx_bytes = stats.get(c::TUN_TX_BYTES);
        hb.drops = stats.total_drops();
        hb.membership_epoch = self.path.epoch();
        hb.flow_table_entries = Some(stats.live_flows());
        hb.flow_table_capacity = Some(stats.flow_capacity());
        hb.pairs = self.path.views();
        hb.counters = stats
            .counters_json()
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_u64()?)))
            .collect();
        hb
    }

    /// Applies a membership push; returns whether it is now in force.
    pub fn apply(&self, m: &Membership) -> bool {
        let draining: Vec<PairId> = m.serving.iter().copied().filter(|p| !m.active.contains(p)).collect();
        let table = match MaglevTable::build(&m.active, self.maglev_table_size) {
            Ok(t) => t.with_draining(&draining),
            Err(e) => {
                tracing::error!(epoch = m.epoch, "membership refused: {e}");
                return false;
            }
        };
        let wanted: BTreeSet<PairId> = m.active.iter().chain(&m.serving).chain(&m.probing).copied().collect();
        let unknown: Vec<PairId> = {
            let snapshot = self.path.snapshot.load();
            wanted
                .iter()
                .copied()
                .filter(|p| snapshot.gateways.by_pair(*p).is_none())
                .collect()
        };
        let mut joining = Vec::new();
        if !unknown.is_empty() {
            let cfg = match ClusterConfig::load(&self.config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    tracing::error!(
                        epoch = m.epoch,
                        "membership names pairs {unknown:?}, but the cluster file cannot be read: {e}"
                    );
                    return false;
                }
            };
            for pair in unknown {
                match cfg.gateway(&self.me.site, pair) {
                    Ok(gw) if gw.geneve.is_some() => joining.extend(gw.geneve.map(|geneve| (pair, geneve))),
                    Ok(_) => {
                        tracing::error!(
                            epoch = m.epoch,
                            pair,
                            "membership names a pair whose gateway here has no geneve address"
                        );
                        return false;
                    }
                    Err(e) => {
                        tracing::error!(
                            epoch = m.epoch,
                            pair,
                            "membership names a pair the cluster file lacks: {e}"
                        );
                        return false;
                    }
                }
            }
        }
        for (pair, addr) in &joining {
            tracing::info!(pair, gateway = %addr, "pair joined");
        }
        self.path.snapshot.install(m.epoch, table, &joining);
        tracing::info!(epoch = m.epoch, active = ?m.active, draining = ?draining, "membership applied");
        true
    }
}
