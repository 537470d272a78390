//! Which gateway serves each pair on this site.

use std::net::SocketAddr;

use braid_core::flow::PairId;

/// Where each pair's gateway is, indexed both ways without allocation on the data path.
#[derive(Debug, Clone)]
pub struct GatewayMap {
    /// (pair id, GENEVE address), in configuration order, then in the order pairs joined.
    gateways: Vec<(PairId, SocketAddr)>,
}

impl GatewayMap {
    pub fn new(gateways: Vec<(PairId, SocketAddr)>) -> Self {
        GatewayMap { gateways }
    }

    /// The GENEVE address of pair `id`'s gateway.
    #[inline]
    pub fn by_pair(&self, id: PairId) -> Option<SocketAddr> {
        self.gateways.iter().find(|(p, _)| *p == id).map(|(_, a)| *a)
    }

    /// The pair whose gateway sends from `addr`.
    #[inline]
    pub fn by_addr(&self, addr: &SocketAddr) -> Option<PairId> {
        self.gateways.iter().find(|(_, a)| a == addr).map(|(p, _)| *p)
    }

    /// How many gateways (one per pair).
    pub fn len(&self) -> usize {
        self.gateways.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty()
    }

    /// The pair and address in `slot`.
    pub fn get(&self, slot: usize) -> (PairId, SocketAddr) {
        self.gateways[slot]
    }

    /// Adds the gateway of a pair that joined the cluster (no-op if known).
    pub fn add(&mut self, pair: PairId, addr: SocketAddr) {
        if self.by_pair(pair).is_none() {
            self.gateways.push((pair, addr));
        }
    }

    /// Keeps only the gateways of the pairs `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(PairId) -> bool) {
        self.gateways.retain(|(pair, _)| keep(*pair));
    }

    pub fn pair_ids(&self) -> Vec<PairId> {
        self.gateways.iter().map(|(p, _)| *p).collect()
    }
}
