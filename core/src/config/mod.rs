//! The cluster configuration: one YAML file describes the whole cluster, and every component
//! (demux, gateway, controller) reads the same file and picks out its own part.
//!
//! Loading is two steps kept apart:
//!
//! 1. **Parsing** (`raw.rs`): serde reads the text into structs that mirror the file. Every struct
//!    refuses unknown fields, and values with their own syntax (prefixes, socket addresses,
//!    public keys) are parsed here, so YAML mistakes, typos, wrong types and malformed values are
//!    reported with the field path, line and column.
//! 2. **Validation** (`validate.rs`): ranges, defaults, relative paths resolved against the
//!    file's directory, and the checks that span fields (two sites, one gateway per site per
//!    pair, unique ids, addresses and keys, disjoint prefixes).
//!
//! Every [`ConfigError`] names the file, the field path and what was expected, e.g.
//! `cluster.yaml: pairs[1].gateways.b.public_key: expected a base64 WireGuard public key (44
//! characters), got 12 characters`. The schema, field by field, is `examples/two-site.yaml`.
//!
//! The optional `controller:` section (where daemons report, failure detection timing, the
//! metrics address, a restart hook for daemons on other hosts, the admin socket, the optional
//! signed remote admin channel, the state directory) and the optional `netns` of each
//! demux and gateway default when absent, so a file without them describes a one-host cluster.
//!
//! `cluster.suite` picks the tunnel protocol of every pair: `wireguard` (the default; every
//! gateway has a `public_key`) or `ipsec` (IKEv2 with a pre-shared key, ESP in UDP), which
//! needs the top-level `ipsec:` section (its `psk_file`, optionally proposals, lifetimes, the
//! replay window and the liveness interval; see `examples/ipsec-two-site.yaml`). A gateway's
//! IKE identity is its WAN IP address unless its `ike_id` says otherwise.

mod error;
mod model;
mod prefix;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use model::{
    ClusterConfig, ClusterSettings, ControllerConfig, ControllerMember, DemuxConfig, EtcdConfig, ExternalSite,
    GatewayConfig, IpsecConfig, PairConfig, SiteConfig, Suite, Timeouts, DEFAULT_CHILD_LIFETIME_S,
    DEFAULT_FLOW_TABLE_CAPACITY, DEFAULT_IKE_LIFETIME_S, DEFAULT_LIVENESS_S, DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_METRICS_ADDR, DEFAULT_MTU,
};
pub use prefix::{Prefix, PrefixError};

use crate::control::{ControlAddr, DaemonId};
use crate::flow::PairId;
use raw::{
    Entries, RawCluster, RawController, RawControllerMember, RawDemux, RawEtcd, RawFile, RawGateway, RawIpsec, RawPair,
    RawSite, RawSocketAddr, RawTimeouts,
};

impl ClusterConfig {
    /// Reads, parses and validates the cluster file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses and validates `text` as if read from `path`, which names the file in errors and
    /// anchors relative paths.
    pub fn from_yaml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Syntax {
            file: path.to_path_buf(),
            source,
        })?;
        validate::validate(raw, path)
    }

    /// The site called `name`.
    pub fn site(&self, name: &str) -> Result<&SiteConfig, ConfigError> {
        self.sites.get(name).ok_or_else(|| self.no_site(name))
    }

    /// The name of the site that is not `name`.
    pub fn peer_site_name(&self, name: &str) -> Result<&str, ConfigError> {
        self.site(name)?;
        self.sites
            .keys()
            .find(|other| other.as_str() != name)
            .map(String::as_str)
            .ok_or_else(|| self.no_site(name))
    }

    /// The pair with id `id`.
    pub fn pair(&self, id: PairId) -> Result<&PairConfig, ConfigError> {
        self.pairs.iter().find(|pair| pair.id == id).ok_or_else(|| {
            let ids: Vec<String> = self.pairs.iter().map(|pair| pair.id.to_string()).collect();
            self.lookup_error(
                "pairs",
                format!("no pair with id {id}; the pair ids are {}", ids.join(", ")),
            )
        })
    }

    /// Site `site`'s gateway in pair `pair`.
    pub fn gateway(&self, site: &str, pair: PairId) -> Result<&GatewayConfig, ConfigError> {
        self.site(site)?;
        self.pair(pair)?.gateways.get(site).ok_or_else(|| self.no_site(site))
    }

    /// Every braid daemon of the cluster, in file order: each braid site's demux, then its
    /// gateways (an external site runs none).
    pub fn daemons(&self) -> Vec<DaemonId> {
        let mut out = Vec::new();
        for (site, config) in &self.sites {
            if config.is_external() {
                continue;
            }
            out.push(DaemonId::demux(site));
            out.extend(self.pairs.iter().map(|pair| DaemonId::gateway(site, pair.id)));
        }
        out
    }

    /// Where daemon `id`'s role key lives: `role-keys/` beside the cluster secret file.
    pub fn role_key_file(&self, id: &DaemonId) -> PathBuf {
        crate::keys::role_key_file(&self.cluster.secret_file, &id.wire_name())
    }

    /// Where the demuxes' flow-hash key lives.
    pub fn flow_hash_key_file(&self) -> PathBuf {
        crate::keys::flow_hash_key_file(&self.cluster.secret_file)
    }

    /// What a daemon says when a key file of its own (role key, flow-hash key) cannot be
    /// loaded: which file, and what writes it.
    pub fn key_file_hint(&self, path: &Path) -> String {
        format!(
            "{}: written from the cluster secret by `braid keygen --role-keys --config {}` (a controller \
             writes the keys of the daemons it launches itself)",
            path.display(),
            self.path.display()
        )
    }

    /// The configuration as YAML that [`ClusterConfig::from_yaml_str`] reads back to an equal
    /// value when given the same path. Every default is written out; paths inside the file's
    /// directory are written relative to it.
    pub fn to_yaml(&self) -> String {
        let raw = self.to_raw();
        // Plain strings, numbers, lists and maps with string keys always serialize.
        serde_yaml_ng::to_string(&raw).expect("a cluster configuration always serializes to YAML")
    }

    fn to_raw(&self) -> RawFile {
        let base = self.path.parent().unwrap_or(Path::new(""));
        let relative = |path: &PathBuf| path.strip_prefix(base).unwrap_or(path).to_string_lossy().into_owned();
        let settings = &self.cluster;
        let timeouts = &settings.timeouts;
        let controller = &self.controller;
        // A lone controller writes its fields in place; a set lists them per member.
        let lone = controller.members.len() <= 1;
        let control_addr = |addr: &ControlAddr| match addr {
            ControlAddr::Unix(path) => ControlAddr::Unix(PathBuf::from(relative(path))),
            udp @ ControlAddr::Udp(_) => udp.clone(),
        };
        RawFile {
            cluster: RawCluster {
                name: settings.name.clone(),
                secret_file: relative(&settings.secret_file),
                mtu: Some(settings.mtu.into()),
                maglev_table_size: Some(settings.maglev_table_size as u64),
                flow_table_capacity: Some(settings.flow_table_capacity as u64),
                timeouts: Some(RawTimeouts {
                    tcp_idle: Some(timeouts.tcp_idle),
                    tcp_closing: Some(timeouts.tcp_closing),
                    udp_idle: Some(timeouts.udp_idle),
                    other_idle: Some(timeouts.other_idle),
                    tcp_half_open: Some(timeouts.tcp_half_open),
                }),
                suite: Some(settings.suite),
            },
            sites: Entries(
                self.sites
                    .iter()
                    .map(|(name, site)| {
                        let demux = site.demux.as_ref().map(|demux| RawDemux {
                            tun: demux.tun.clone(),
                            geneve: demux.geneve,
                            netns: demux.netns.clone(),
                            data_threads: demux.data_threads.map(|n| n as u64),
                        });
                        (
                            name.clone(),
                            RawSite {
                                prefixes: site.prefixes.clone(),
                                demux,
                                external: site.external.as_ref().map(|_| true),
                                canary: site.external.as_ref().map(|e| e.canary),
                            },
                        )
                    })
                    .collect(),
            ),
            pairs: self
                .pairs
                .iter()
                .map(|pair| RawPair {
                    id: pair.id.into(),
                    gateways: Entries(
                        pair.gateways
                            .iter()
                            .map(|(site, gateway)| {
                                let raw = RawGateway {
                                    geneve: gateway.geneve.map(RawSocketAddr),
                                    wan: gateway.wan,
                                    wan_listen: gateway.wan_listen.map(RawSocketAddr),
                                    public_key: gateway.public_key,
                                    private_key_file: gateway.private_key_file.as_ref().map(relative),
                                    ike_id: gateway.ike_id.clone(),
                                    netns: gateway.netns.clone(),
                                };
                                (site.clone(), raw)
                            })
                            .collect(),
                    ),
                })
                .collect(),
            controller: Some(RawController {
                address: lone.then(|| control_addr(&controller.address)),
                listen: controller.listen.filter(|_| lone).map(RawSocketAddr),
                metrics: lone.then_some(RawSocketAddr(controller.metrics)),
                heartbeat_ms: Some(controller.heartbeat_ms),
                failure_timeout_ms: Some(controller.failure_timeout_ms),
                recovery_ms: Some(controller.recovery_ms),
                canary_rtt_alarm_ms: Some(controller.canary_rtt_alarm_ms),
                drain_timeout_s: Some(controller.drain_timeout_s),
                restart_hook: controller.restart_hook.clone(),
                admin_socket: lone.then(|| relative(&controller.admin_socket)),
                admin_listen: controller.admin_listen.map(RawSocketAddr),
                admin_key_file: controller.admin_key_file.as_ref().map(relative),
                state_dir: lone.then(|| relative(&controller.state_dir)),
                members: (!lone).then(|| {
                    controller
                        .members
                        .iter()
                        .map(|m| RawControllerMember {
                            address: control_addr(&m.address),
                            listen: m.listen.map(RawSocketAddr),
                            metrics: RawSocketAddr(m.metrics),
                            admin_socket: Some(relative(&m.admin_socket)),
                            state_dir: Some(relative(&m.state_dir)),
                        })
                        .collect()
                }),
                etcd: controller.etcd.as_ref().map(|etcd| RawEtcd {
                    endpoints: etcd.endpoints.clone(),
                    prefix: Some(etcd.prefix.clone()),
                    lease_ttl_s: Some(etcd.lease_ttl_s),
                }),
            }),
            ipsec: settings.ipsec.as_ref().map(|ipsec| RawIpsec {
                psk_file: Some(relative(&ipsec.psk_file)),
                ike_proposals: Some(ipsec.ike_proposals.iter().map(ToString::to_string).collect()),
                esp_proposals: Some(ipsec.esp_proposals.iter().map(ToString::to_string).collect()),
                ike_lifetime_s: Some(ipsec.ike_lifetime_s),
                child_lifetime_s: Some(ipsec.child_lifetime_s),
                replay_window: Some(u64::from(ipsec.replay_window)),
                liveness_s: Some(ipsec.liveness_s),
                initiators: Some(ipsec.initiators.clone()),
                seal_thread: Some(ipsec.seal_thread),
            }),
        }
    }

    fn no_site(&self, name: &str) -> ConfigError {
        self.lookup_error(
            "sites",
            format!("no site named {name:?}; {}", validate::site_list(&self.sites)),
        )
    }

    fn lookup_error(&self, field: &str, problem: String) -> ConfigError {
        ConfigError::Field {
            file: self.path.clone(),
            field: field.to_string(),
            problem,
        }
    }
}
