//! The demux's side of the control protocol: heartbeats out, membership in.
//!
//! Runs on its own thread ([`braid_core::control::ControlClient::run`]). A heartbeat carries
//! the demux's totals and, per pair, its traffic, pinned flows (the flow table's last census)
//! and canary results. A membership push becomes a new Maglev table over the `active` pairs,
//! *serving* the draining ones too (their pinned flows stay), installed as a new immutable
//! snapshot the data threads pick up at their next round ([`crate::datapath::SnapshotCell`]). Every pair the push names — `probing` lists all pairs of the cluster, healthy or not —
//! gets canaries. The push carries the address of each pair's gateway in this site, so a pair
//! this demux has never heard of (one added online, on the controller's host first) joins
//! without the demux's copy of the cluster file knowing it; only a push from an older
//! controller, without addresses, makes the demux look a new pair up in its re-read file. Either
//! way the pair is probed (and can be seen to be healthy) before any flow is steered to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use braid_core::config::ClusterConfig;
use braid_core::control::{ControlCounters, DaemonId, Heartbeat, Membership};
use braid_core::flow::PairId;

use crate::datapath::{DataPath, GatewayMap};
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
    /// The control client's counters (refused messages and pushes), reported as `control_*`.
    pub control: Arc<ControlCounters>,
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
        hb.counters.extend(
            self.control
                .set()
                .snapshot()
                .into_iter()
                .map(|(name, value)| (format!("control_{name}"), value)),
        );
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
        let joining = match joining(m, &self.path.snapshot.load().gateways, &self.me.site, &self.config) {
            Ok(joining) => joining,
            Err(problem) => {
                tracing::error!(epoch = m.epoch, "membership refused: {problem}");
                return false;
            }
        };
        for (pair, addr) in &joining {
            tracing::info!(pair, gateway = %addr, "pair joined");
        }
        self.path.snapshot.install(m.epoch, table, &m.named_pairs(), &joining);
        tracing::info!(epoch = m.epoch, active = ?m.active, draining = ?draining, "membership applied");
        true
    }
}

/// The gateways of the pairs `m` names that are not in `gateways` yet: each at the address the
/// push gives, or else (a push from an older controller) the one for `site` in the cluster file
/// at `config`, read only then. A pair whose address is nowhere, or is already the address of
/// another pair the push names, refuses the whole push. A known pair keeps its address,
/// whatever the push says.
fn joining(
    m: &Membership,
    gateways: &GatewayMap,
    site: &str,
    config: &Path,
) -> Result<Vec<(PairId, SocketAddr)>, String> {
    let named = m.named_pairs();
    for &pair in &named {
        if let (Some(known), Some(pushed)) = (gateways.by_pair(pair), m.gateway(pair)) {
            if known != pushed {
                tracing::warn!(
                    pair,
                    %known,
                    %pushed,
                    "the controller gives the pair's gateway another address than the one in use; \
                     the demux keeps it (a pair's address changes by removing and re-adding the pair)"
                );
            }
        }
    }
    let unknown: Vec<PairId> = named
        .iter()
        .copied()
        .filter(|p| gateways.by_pair(*p).is_none())
        .collect();
    let missing: Vec<PairId> = unknown.iter().copied().filter(|p| m.gateway(*p).is_none()).collect();
    let file = if missing.is_empty() {
        None
    } else {
        Some(ClusterConfig::load(config).map_err(|e| {
            format!("it names pairs {missing:?} without their addresses, and the cluster file cannot be read: {e}")
        })?)
    };
    let mut joining: Vec<(PairId, SocketAddr)> = Vec::with_capacity(unknown.len());
    for pair in unknown {
        let addr = match (m.gateway(pair), &file) {
            (Some(addr), _) => addr,
            (None, Some(cfg)) => cfg
                .gateway(site, pair)
                .map_err(|e| format!("it names pair {pair}, which neither it nor the cluster file describes: {e}"))?
                .geneve
                .ok_or_else(|| format!("pair {pair}'s gateway here has no geneve address"))?,
            (None, None) => return Err(format!("it names pair {pair} without its address")),
        };
        // A pair the push no longer names (retired) may leave its address to a new one.
        let taken = gateways
            .by_addr(&addr)
            .filter(|owner| named.contains(owner))
            .or_else(|| joining.iter().find(|(_, a)| *a == addr).map(|(p, _)| *p));
        if let Some(owner) = taken {
            return Err(format!("pair {pair}'s gateway {addr} is already pair {owner}'s"));
        }
        joining.push((pair, addr));
    }
    Ok(joining)
}

#[cfg(test)]
mod tests {
    use braid_core::control::PairGateway;

    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// A push naming `pairs`, with the given gateway addresses.
    fn push(pairs: &[PairId], gateways: &[(PairId, &str)]) -> Membership {
        Membership {
            term: 0,
            epoch: 2,
            active: pairs.to_vec(),
            serving: pairs.to_vec(),
            probing: pairs.to_vec(),
            gateways: gateways
                .iter()
                .map(|&(pair, geneve)| PairGateway {
                    pair,
                    geneve: addr(geneve),
                })
                .collect(),
        }
    }

    fn known() -> GatewayMap {
        GatewayMap::new(vec![(1, addr("198.18.20.11:6081")), (2, addr("198.18.20.12:6081"))])
    }

    /// Never read: a push that carries every new pair's address needs no cluster file.
    const NO_FILE: &str = "/nonexistent/braid/cluster.yaml";

    #[test]
    fn a_pair_the_file_lacks_joins_at_the_pushed_address() {
        let m = push(
            &[1, 2, 3],
            &[
                (1, "198.18.20.11:6081"),
                (2, "198.18.20.12:6081"),
                (3, "198.18.20.13:6081"),
            ],
        );
        let joined = joining(&m, &known(), "b", Path::new(NO_FILE)).unwrap();
        assert_eq!(joined, vec![(3, addr("198.18.20.13:6081"))]);
        let nothing_new = push(&[1, 2], &[]);
        assert_eq!(joining(&nothing_new, &known(), "b", Path::new(NO_FILE)), Ok(Vec::new()));
    }

    #[test]
    fn a_pair_without_an_address_is_looked_up_in_the_file() {
        let m = push(&[1, 2, 3], &[]);
        let problem = joining(&m, &known(), "b", Path::new(NO_FILE)).unwrap_err();
        assert!(
            problem.starts_with("it names pairs [3] without their addresses, and the cluster file cannot be read"),
            "{problem}"
        );
    }

    #[test]
    fn an_address_already_in_use_refuses_the_push() {
        let m = push(&[1, 2, 3], &[(3, "198.18.20.12:6081")]);
        let problem = joining(&m, &known(), "b", Path::new(NO_FILE)).unwrap_err();
        assert_eq!(problem, "pair 3's gateway 198.18.20.12:6081 is already pair 2's");
    }

    #[test]
    fn a_retired_pair_s_address_may_be_taken_by_a_new_one() {
        let m = push(&[1, 3], &[(3, "198.18.20.12:6081")]);
        let joined = joining(&m, &known(), "b", Path::new(NO_FILE)).unwrap();
        assert_eq!(joined, vec![(3, addr("198.18.20.12:6081"))]);
    }

    #[test]
    fn a_known_pair_keeps_its_address() {
        let m = push(&[1, 2], &[(2, "198.18.20.99:6081")]);
        assert_eq!(joining(&m, &known(), "b", Path::new(NO_FILE)), Ok(Vec::new()));
    }
}
