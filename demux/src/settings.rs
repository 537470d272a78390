//! What one demux needs to run, resolved from the cluster configuration.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use braid_core::config::{ClusterConfig, Prefix, Timeouts};
use braid_core::flow::PairId;
use braid_core::keys::ClusterSecret;

/// A demux's runtime settings: plain data, so tests can build them without a file.
#[derive(Debug, Clone)]
pub struct DemuxSettings {
    pub site: String,
    pub tun_name: String,
    pub mtu: u16,
    /// Where gateways send returning GENEVE traffic.
    pub geneve_bind: SocketAddr,
    /// Every gateway of this site: pair id and GENEVE address.
    pub gateways: Vec<(PairId, SocketAddr)>,
    pub local_prefixes: Vec<Prefix>,
    pub peer_prefixes: Vec<Prefix>,
    pub secret: [u8; 32],
    pub maglev_table_size: usize,
    pub flow_table_capacity: usize,
    pub timeouts: Timeouts,
}

impl DemuxSettings {
    /// The settings of site `site`'s demux in `cfg`.
    pub fn from_config(cfg: &ClusterConfig, site: &str) -> Result<DemuxSettings> {
        let local = cfg.site(site).map_err(anyhow::Error::msg)?;
        let peer_name = cfg.peer_site_name(site).map_err(anyhow::Error::msg)?;
        let peer = cfg.site(peer_name).map_err(anyhow::Error::msg)?;
        let secret = ClusterSecret::load(&cfg.cluster.secret_file)
            .with_context(|| format!("{}: cluster.secret_file", cfg.path.display()))?;
        let gateways = cfg
            .pairs
            .iter()
            .map(|p| {
                cfg.gateway(site, p.id)
                    .map(|g| (p.id, g.geneve))
                    .map_err(anyhow::Error::msg)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DemuxSettings {
            site: site.to_string(),
            tun_name: local.demux.tun.clone(),
            mtu: cfg.cluster.mtu,
            geneve_bind: local.demux.geneve,
            gateways,
            local_prefixes: local.prefixes.clone(),
            peer_prefixes: peer.prefixes.clone(),
            secret: *secret.as_bytes(),
            maglev_table_size: cfg.cluster.maglev_table_size,
            flow_table_capacity: cfg.cluster.flow_table_capacity,
            timeouts: cfg.cluster.timeouts.clone(),
        })
    }
}
