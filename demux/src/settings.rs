//! What one demux needs to run, resolved from the cluster configuration.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result};
use braid_core::config::{ClusterConfig, Prefix, Timeouts};
use braid_core::control::{ControlAddr, DaemonId};
use braid_core::flow::PairId;
use braid_core::keys::{FlowHashKey, RoleKey};

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
    /// This demux's role key (its control link with the controller).
    pub role_key: RoleKey,
    /// The key of the flow hash, shared with the other site's demux.
    pub flow_key: FlowHashKey,
    pub maglev_table_size: usize,
    pub flow_table_capacity: usize,
    pub timeouts: Timeouts,
    /// This site's and the peer site's canary addresses (see [`crate::canary`]).
    pub canary_local: IpAddr,
    pub canary_peer: IpAddr,
    /// The peer site runs no braid (`external: true`): canaries are ICMP echo requests to its
    /// configured canary address instead of probes a peer demux answers.
    pub peer_external: bool,
    /// Where each member of the controller set listens (by index), and how often to report.
    pub controllers: Vec<ControlAddr>,
    pub heartbeat_ms: u64,
    /// Data threads: the configuration's `data_threads`, else one per CPU core.
    pub data_threads: usize,
}

/// A site's canary address: the first address after its first prefix's network address.
fn canary_address(prefixes: &[Prefix]) -> Option<IpAddr> {
    let p = prefixes.first()?;
    Some(match p.addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    })
}

impl DemuxSettings {
    /// The settings of site `site`'s demux in `cfg`.
    pub fn from_config(cfg: &ClusterConfig, site: &str) -> Result<DemuxSettings> {
        let local = cfg.site(site).map_err(anyhow::Error::msg)?;
        let peer_name = cfg.peer_site_name(site).map_err(anyhow::Error::msg)?;
        let peer = cfg.site(peer_name).map_err(anyhow::Error::msg)?;
        let demux = local
            .demux
            .as_ref()
            .with_context(|| format!("site {site} is external: it runs no braid demux"))?;
        let role_key_file = cfg.role_key_file(&DaemonId::demux(site));
        let role_key = RoleKey::load(&role_key_file).with_context(|| cfg.key_file_hint(&role_key_file))?;
        let flow_key_file = cfg.flow_hash_key_file();
        let flow_key = FlowHashKey::load(&flow_key_file).with_context(|| cfg.key_file_hint(&flow_key_file))?;
        let gateways = cfg
            .pairs
            .iter()
            .map(|p| {
                cfg.gateway(site, p.id)
                    .map_err(anyhow::Error::msg)
                    .and_then(|g| g.geneve.context("the gateway has no geneve address"))
                    .map(|geneve| (p.id, geneve))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DemuxSettings {
            site: site.to_string(),
            tun_name: demux.tun.clone(),
            mtu: cfg.cluster.mtu,
            geneve_bind: demux.geneve,
            gateways,
            local_prefixes: local.prefixes.clone(),
            peer_prefixes: peer.prefixes.clone(),
            role_key,
            flow_key,
            maglev_table_size: cfg.cluster.maglev_table_size,
            flow_table_capacity: cfg.cluster.flow_table_capacity,
            timeouts: cfg.cluster.timeouts.clone(),
            canary_local: canary_address(&local.prefixes).context("the site has no prefix")?,
            canary_peer: match &peer.external {
                Some(external) => external.canary,
                None => canary_address(&peer.prefixes).context("the peer site has no prefix")?,
            },
            peer_external: peer.is_external(),
            controllers: cfg.controller.control_addresses(),
            heartbeat_ms: cfg.controller.heartbeat_ms,
            data_threads: demux
                .data_threads
                .unwrap_or_else(|| std::thread::available_parallelism().map(usize::from).unwrap_or(1)),
        })
    }
}
