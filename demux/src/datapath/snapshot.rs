//! The membership snapshot every data thread steers by.
//!
//! A [`Snapshot`] is immutable: the Maglev table in force, where each pair's gateway is, the
//! epoch and a version number. The control thread builds a new one for every membership push
//! and swaps it into the [`SnapshotCell`] atomically (`arc-swap`, no lock); a data thread loads
//! the current one once per round and, when its version moved, hands the new Maglev table to
//! its steering and starts canaries for pairs that joined. A round therefore sees one
//! membership from its first packet to its last.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use braid_core::flow::PairId;

use super::GatewayMap;
use crate::steer::MaglevTable;

/// One membership, as the data threads see it.
#[derive(Debug)]
pub struct Snapshot {
    /// Bumped on every swap, so a data thread can tell a new snapshot from the one it has.
    pub version: u64,
    /// The membership epoch in force (0: the configuration's static membership).
    pub epoch: u64,
    pub membership: Arc<MaglevTable>,
    pub gateways: GatewayMap,
}

/// The current [`Snapshot`], swapped whole.
#[derive(Debug)]
pub struct SnapshotCell {
    current: ArcSwap<Snapshot>,
}

impl SnapshotCell {
    pub fn new(membership: MaglevTable, gateways: GatewayMap) -> SnapshotCell {
        SnapshotCell {
            current: ArcSwap::from_pointee(Snapshot {
                version: 0,
                epoch: 0,
                membership: Arc::new(membership),
                gateways,
            }),
        }
    }

    /// The snapshot in force.
    #[inline]
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs a membership of `epoch` that names the pairs `named`: the gateways of pairs it
    /// no longer names leave the map (so a new pair may take a retired pair's address, and a
    /// pair removed and re-added comes back at its new address), and the `joining` ones are
    /// added. Only the control thread calls this, so there is no lost update between its load
    /// and its store.
    pub fn install(
        &self,
        epoch: u64,
        membership: MaglevTable,
        named: &BTreeSet<PairId>,
        joining: &[(PairId, std::net::SocketAddr)],
    ) {
        let old = self.load();
        let mut gateways = old.gateways.clone();
        gateways.retain(|pair| named.contains(&pair));
        for &(pair, addr) in joining {
            gateways.add(pair, addr);
        }
        self.current.store(Arc::new(Snapshot {
            version: old.version + 1,
            epoch,
            membership: Arc::new(membership),
            gateways,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_install_makes_a_new_version_with_the_joined_gateways() {
        let a: std::net::SocketAddr = "198.18.1.1:6081".parse().unwrap();
        let b: std::net::SocketAddr = "198.18.1.2:6081".parse().unwrap();
        let cell = SnapshotCell::new(MaglevTable::build(&[1], 251).unwrap(), GatewayMap::new(vec![(1, a)]));
        let before = cell.load();
        cell.install(
            7,
            MaglevTable::build(&[1, 2], 251).unwrap(),
            &BTreeSet::from([1, 2]),
            &[(2, b)],
        );
        let after = cell.load();
        assert_eq!((before.version, before.epoch), (0, 0));
        assert_eq!((after.version, after.epoch), (1, 7));
        assert_eq!(after.gateways.by_pair(2), Some(b));
        assert!(after.membership.contains(2));
        // The old snapshot is untouched: a thread mid-round keeps what it loaded.
        assert_eq!(before.gateways.by_pair(2), None);
        assert!(!before.membership.contains(2));
    }

    #[test]
    fn a_pair_no_longer_named_leaves_the_map_and_its_address_can_be_taken() {
        let a: std::net::SocketAddr = "198.18.1.1:6081".parse().unwrap();
        let b: std::net::SocketAddr = "198.18.1.2:6081".parse().unwrap();
        let c: std::net::SocketAddr = "198.18.1.3:6081".parse().unwrap();
        let cell = SnapshotCell::new(
            MaglevTable::build(&[1, 2], 251).unwrap(),
            GatewayMap::new(vec![(1, a), (2, b)]),
        );
        // Pair 1 removed.
        cell.install(2, MaglevTable::build(&[2], 251).unwrap(), &BTreeSet::from([2]), &[]);
        let gateways = &cell.load().gateways;
        assert_eq!((gateways.by_pair(1), gateways.by_addr(&a)), (None, None));
        assert_eq!(gateways.pair_ids(), vec![2]);
        // Pair 3 joins at the retired pair's address: GENEVE from it is pair 3's.
        cell.install(
            3,
            MaglevTable::build(&[2, 3], 251).unwrap(),
            &BTreeSet::from([2, 3]),
            &[(3, a)],
        );
        assert_eq!(cell.load().gateways.by_addr(&a), Some(3));
        // Pair 2 removed, then re-added at a new address: the new one is in force.
        cell.install(4, MaglevTable::build(&[3], 251).unwrap(), &BTreeSet::from([3]), &[]);
        cell.install(
            5,
            MaglevTable::build(&[2, 3], 251).unwrap(),
            &BTreeSet::from([2, 3]),
            &[(2, c)],
        );
        let gateways = &cell.load().gateways;
        assert_eq!(
            (gateways.by_pair(2), gateways.by_addr(&c), gateways.by_addr(&b)),
            (Some(c), Some(2), None)
        );
    }
}
