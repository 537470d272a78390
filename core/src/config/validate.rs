//! From the file as written ([`RawFile`]) to a [`ClusterConfig`] every component can trust.
//!
//! Checks run in file order and stop at the first problem, reported with the field path as the
//! file spells it (`pairs[1].gateways.b.wan`, indexes from 0). Beyond per-field ranges, the
//! cluster must hang together: exactly two sites, one gateway per site in every pair, unique
//! pair ids, no prefix overlapping another, no socket address used twice within a site (WAN
//! addresses: within the cluster), and no public key shared by two gateways. The controller
//! section defaults field by field; its failure timeout must span at least two heartbeats, a
//! unix socket path (the control address, the admin socket) must fit `sun_path`, a restart hook
//! may only use known placeholders, and remote administration needs both its address and its
//! key file (`admin_listen`, `admin_key_file`), or neither.
//!
//! An address peers send to may differ from the one its owner binds (behind a 1:1 NAT): a
//! gateway's `wan_listen` and the controller's `listen` must match the family of the advertised
//! address and name a port; the IP may be unspecified. They are not checked for uniqueness,
//! since hosts behind different NATs may well share a private address. Only a UDP control
//! address can have a separate `listen`, and only a gateway braid runs (not an external site's).
//!
//! The suite decides what a gateway needs: WireGuard a `public_key` on every gateway; IPsec an
//! `ipsec:` section with a `psk_file` (and neither needs the other's settings: an `ipsec:`
//! section or an `ike_id` in a WireGuard cluster is refused, WireGuard keys in an IPsec cluster
//! are allowed and unused). Proposals are parsed in strongSwan's notation, defaulting to
//! braid-ipsec's; lifetimes, the replay window and the liveness interval are range-checked.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::model::*;
use super::prefix::Prefix;
use super::raw::{
    Entries, RawCluster, RawController, RawControllerMember, RawEtcd, RawFile, RawGateway, RawIpsec, RawPair, RawSite,
    RawSocketAddr, RawTimeouts,
};
use crate::control::ControlAddr;
use crate::flow::PairId;
use crate::keys::PublicKey;

const NAME_MAX_LEN: usize = 32;
const TUN_NAME_MAX_LEN: usize = 15;
const MTU_RANGE: RangeInclusive<u64> = 576..=9000;
/// IPv6 requires every link to carry 1280-byte packets (RFC 8200 §5).
const IPV6_MIN_MTU: u64 = 1280;
const MAGLEV_TABLE_MAX: u64 = 1 << 24;
const FLOW_TABLE_RANGE: RangeInclusive<u64> = 1024..=(1 << 26);
/// Most data threads one demux may run.
const MAX_DATA_THREADS: u64 = 256;
/// Idle timeouts from one second to a week.
const TIMEOUT_RANGE: RangeInclusive<u64> = 1..=604_800;
const PAIR_ID_RANGE: RangeInclusive<u64> = 1..=4095;
const HEARTBEAT_MS_RANGE: RangeInclusive<u64> = 10..=10_000;
const FAILURE_TIMEOUT_MS_RANGE: RangeInclusive<u64> = 20..=600_000;
/// Up to an hour.
const RECOVERY_MS_RANGE: RangeInclusive<u64> = 0..=3_600_000;
const CANARY_RTT_ALARM_MS_RANGE: RangeInclusive<u64> = 1..=60_000;
/// Up to a week.
const DRAIN_TIMEOUT_S_RANGE: RangeInclusive<u64> = 0..=604_800;
/// A unix socket path must fit `sun_path` (108 bytes) with its terminating NUL.
const UNIX_SOCKET_PATH_MAX: usize = 107;
/// Members of a controller set.
const CONTROLLER_MEMBERS_RANGE: RangeInclusive<usize> = 1..=16;
const LEASE_TTL_S_RANGE: RangeInclusive<u64> = 1..=60;
const NETNS_NAME_MAX_LEN: usize = 64;
const RESTART_HOOK_PLACEHOLDERS: &[&str] = &["role", "site", "pair"];
/// IKE SA lifetimes from a minute to a week.
const IKE_LIFETIME_S_RANGE: RangeInclusive<u64> = 20..=604_800;
/// CHILD SA lifetimes from ten seconds (rekey tests) to a week.
const CHILD_LIFETIME_S_RANGE: RangeInclusive<u64> = 10..=604_800;
const REPLAY_WINDOW_RANGE: RangeInclusive<u64> =
    braid_ipsec::replay::MIN_REPLAY_WINDOW as u64..=braid_ipsec::replay::MAX_REPLAY_WINDOW as u64;
/// Liveness checks from every second to every hour.
const LIVENESS_S_RANGE: RangeInclusive<u64> = 1..=3600;
/// An IKE identity's longest text; the identification payload's length field allows more,
/// but no real identity comes close.
const IKE_ID_MAX_LEN: usize = 255;

/// Validates `raw`, read from `file`; relative paths are resolved against `file`'s directory.
pub(super) fn validate(raw: RawFile, file: &Path) -> Result<ClusterConfig, ConfigError> {
    let checker = Checker {
        file,
        base: file.parent().unwrap_or(Path::new("")),
    };
    let suite = raw.cluster.suite.unwrap_or_default();
    let sites = checker.sites(raw.sites)?;
    checker.external_site(&sites, suite)?;
    let pairs = checker.pairs(raw.pairs, &sites, suite)?;
    let cluster = checker.cluster(raw.cluster, &sites, pairs.len(), raw.ipsec)?;
    let controller = checker.controller(raw.controller.unwrap_or_default(), &cluster.name)?;
    checker.prefixes_disjoint(&sites)?;
    checker.addresses_unique(&sites, &pairs)?;
    checker.public_keys_unique(&pairs)?;
    Ok(ClusterConfig {
        path: file.to_path_buf(),
        cluster,
        sites,
        pairs,
        controller,
    })
}

struct Checker<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Checker<'_> {
    fn error(&self, field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Field {
            file: self.file.to_path_buf(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn cluster(
        &self,
        raw: RawCluster,
        sites: &BTreeMap<String, SiteConfig>,
        pair_count: usize,
        ipsec: Option<RawIpsec>,
    ) -> Result<ClusterSettings, ConfigError> {
        self.name("cluster.name", &raw.name)?;
        let secret_file = self.path("cluster.secret_file", &raw.secret_file)?;

        let has_ipv6 = sites.values().flat_map(|s| &s.prefixes).any(|p| p.addr.is_ipv6());
        let mtu: u16 = self.number("cluster.mtu", raw.mtu, u64::from(DEFAULT_MTU), MTU_RANGE)?;
        if has_ipv6 && u64::from(mtu) < IPV6_MIN_MTU {
            return Err(self.error(
                "cluster.mtu",
                format!("a site has IPv6 prefixes, and IPv6 needs an MTU of at least {IPV6_MIN_MTU}, got {mtu}"),
            ));
        }

        let maglev_field = "cluster.maglev_table_size";
        let default_maglev = DEFAULT_MAGLEV_TABLE_SIZE as u64;
        let min_maglev = pair_count as u64 + 1;
        let maglev_table_size: usize = self.number(
            maglev_field,
            raw.maglev_table_size,
            default_maglev,
            min_maglev..=MAGLEV_TABLE_MAX,
        )?;
        if !is_prime(maglev_table_size as u64) {
            return Err(self.error(
                maglev_field,
                format!("expected a prime number (such as 65537 or 131071), got {maglev_table_size}"),
            ));
        }

        let default_flows = DEFAULT_FLOW_TABLE_CAPACITY as u64;
        let flow_table_capacity = self.number(
            "cluster.flow_table_capacity",
            raw.flow_table_capacity,
            default_flows,
            FLOW_TABLE_RANGE,
        )?;

        let timeouts = self.timeouts(raw.timeouts.unwrap_or_default())?;
        let suite = raw.suite.unwrap_or_default();
        let ipsec = match (suite, ipsec) {
            (Suite::Ipsec, Some(section)) => Some(self.ipsec(section, sites)?),
            (Suite::Ipsec, None) => {
                return Err(self.error(
                    "ipsec",
                    "expected an ipsec: section with at least psk_file, as cluster.suite is ipsec",
                ))
            }
            (Suite::WireGuard, Some(_)) => {
                return Err(self.error(
                    "ipsec",
                    "section given but cluster.suite is wireguard; set `suite: ipsec` under cluster:, \
                     or remove the section",
                ))
            }
            (Suite::WireGuard, None) => None,
        };

        Ok(ClusterSettings {
            name: raw.name,
            secret_file,
            mtu,
            maglev_table_size,
            flow_table_capacity,
            timeouts,
            suite,
            ipsec,
        })
    }

    fn ipsec(&self, raw: RawIpsec, sites: &BTreeMap<String, SiteConfig>) -> Result<IpsecConfig, ConfigError> {
        let psk_file = match &raw.psk_file {
            Some(path) => self.path("ipsec.psk_file", path)?,
            None => {
                return Err(self.error(
                    "ipsec.psk_file",
                    "expected the path of the pre-shared key file (one line of text, mode 0600), \
                     which cluster.suite ipsec requires",
                ))
            }
        };
        let default = IpsecConfig::with_psk_file(psk_file);
        let ike_proposals = match raw.ike_proposals {
            Some(texts) => self.proposals("ipsec.ike_proposals", &texts)?,
            None => default.ike_proposals,
        };
        let esp_proposals = match raw.esp_proposals {
            Some(texts) => self.proposals("ipsec.esp_proposals", &texts)?,
            None => default.esp_proposals,
        };
        Ok(IpsecConfig {
            psk_file: default.psk_file,
            ike_proposals,
            esp_proposals,
            ike_lifetime_s: self.number(
                "ipsec.ike_lifetime_s",
                raw.ike_lifetime_s,
                default.ike_lifetime_s,
                IKE_LIFETIME_S_RANGE,
            )?,
            child_lifetime_s: self.number(
                "ipsec.child_lifetime_s",
                raw.child_lifetime_s,
                default.child_lifetime_s,
                CHILD_LIFETIME_S_RANGE,
            )?,
            replay_window: self.number(
                "ipsec.replay_window",
                raw.replay_window,
                u64::from(default.replay_window),
                REPLAY_WINDOW_RANGE,
            )?,
            liveness_s: self.number("ipsec.liveness_s", raw.liveness_s, default.liveness_s, LIVENESS_S_RANGE)?,
            initiators: self.initiators(raw.initiators, sites)?,
            seal_thread: raw.seal_thread.unwrap_or(default.seal_thread),
        })
    }

    /// The sites whose gateways start IKE SAs: named sites, at least one, each once; by
    /// default every site.
    fn initiators(
        &self,
        raw: Option<Vec<String>>,
        sites: &BTreeMap<String, SiteConfig>,
    ) -> Result<Vec<String>, ConfigError> {
        let field = "ipsec.initiators";
        let Some(names) = raw else {
            return Ok(sites.keys().cloned().collect());
        };
        if names.is_empty() {
            return Err(self.error(
                field,
                "expected at least one site name: with none, no IKE SA is ever set up",
            ));
        }
        for (index, name) in names.iter().enumerate() {
            if !sites.contains_key(name) {
                let known: Vec<&str> = sites.keys().map(String::as_str).collect();
                return Err(self.error(
                    format!("{field}[{index}]"),
                    format!("no site named {name:?} (sites: {})", known.join(", ")),
                ));
            }
            if names[..index].contains(name) {
                return Err(self.error(format!("{field}[{index}]"), format!("site {name:?} is listed twice")));
            }
        }
        Ok(names)
    }

    /// A non-empty list of proposals in strongSwan's notation, none listed twice.
    fn proposals<P>(&self, field: &str, texts: &[String]) -> Result<Vec<P>, ConfigError>
    where
        P: std::str::FromStr<Err = String> + PartialEq + std::fmt::Display,
    {
        if texts.is_empty() {
            return Err(self.error(field, "expected at least one proposal"));
        }
        let mut proposals: Vec<P> = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let item = format!("{field}[{index}]");
            let proposal: P = text.parse().map_err(|problem: String| self.error(&item, problem))?;
            if let Some(first) = proposals.iter().position(|p| *p == proposal) {
                return Err(self.error(item, format!("{proposal} is already listed as {field}[{first}]")));
            }
            proposals.push(proposal);
        }
        Ok(proposals)
    }

    /// An IKE identity override: 1 to 255 bytes of printable text (spaces allowed, as in a
    /// distinguished name), interpreted by the IKE engine in strongSwan's notation.
    fn ike_id(&self, field: &str, id: Option<String>, suite: Suite) -> Result<Option<String>, ConfigError> {
        let Some(id) = id else {
            return Ok(None);
        };
        if suite != Suite::Ipsec {
            return Err(self.error(
                field,
                format!("an IKE identity is only used by the ipsec suite, but cluster.suite is {suite}"),
            ));
        }
        let valid = (1..=IKE_ID_MAX_LEN).contains(&id.len()) && id.trim() == id && !id.chars().any(char::is_control);
        if !valid {
            return Err(self.error(
                field,
                format!(
                    "expected an IKE identity of 1 to {IKE_ID_MAX_LEN} bytes without control characters or \
                     leading or trailing spaces (an IP address, a @name, user@name or a distinguished name), \
                     got {id:?}"
                ),
            ));
        }
        Ok(Some(id))
    }

    fn timeouts(&self, raw: RawTimeouts) -> Result<Timeouts, ConfigError> {
        let default = Timeouts::default();
        let seconds = |field: &str, value: Option<u64>, default: u64| {
            self.number(&format!("cluster.timeouts.{field}"), value, default, TIMEOUT_RANGE)
        };
        let timeouts = Timeouts {
            tcp_idle: seconds("tcp_idle", raw.tcp_idle, default.tcp_idle)?,
            tcp_closing: seconds("tcp_closing", raw.tcp_closing, default.tcp_closing)?,
            udp_idle: seconds("udp_idle", raw.udp_idle, default.udp_idle)?,
            other_idle: seconds("other_idle", raw.other_idle, default.other_idle)?,
            tcp_half_open: seconds("tcp_half_open", raw.tcp_half_open, default.tcp_half_open)?,
        };
        if timeouts.tcp_closing > timeouts.tcp_idle {
            return Err(self.error(
                "cluster.timeouts.tcp_closing",
                format!(
                    "expected at most tcp_idle ({} s), got {} s",
                    timeouts.tcp_idle, timeouts.tcp_closing
                ),
            ));
        }
        if timeouts.tcp_half_open > timeouts.tcp_idle {
            return Err(self.error(
                "cluster.timeouts.tcp_half_open",
                format!(
                    "expected at most tcp_idle ({} s), got {} s",
                    timeouts.tcp_idle, timeouts.tcp_half_open
                ),
            ));
        }
        Ok(timeouts)
    }

    /// One controller's own addresses and paths, under `field` (`controller` or
    /// `controller.members[i]`), defaults from `default`.
    fn controller_member(
        &self,
        field: &str,
        raw: RawControllerMember,
        default: &ControllerConfig,
    ) -> Result<ControllerMember, ConfigError> {
        let address = match raw.address {
            ControlAddr::Udp(addr) => {
                self.concrete(&format!("{field}.address"), addr)?;
                ControlAddr::Udp(addr)
            }
            ControlAddr::Unix(path) => ControlAddr::Unix(self.unix_socket_path(&format!("{field}.address"), &path)?),
        };
        let listen = match (raw.listen, &address) {
            (None, _) => None,
            (Some(listen), ControlAddr::Udp(advertised)) => Some(self.listen_addr(
                &format!("{field}.listen"),
                listen.0,
                &format!("{field}.address"),
                *advertised,
            )?),
            (Some(_), ControlAddr::Unix(_)) => {
                return Err(self.error(
                    format!("{field}.listen"),
                    format!(
                        "only a UDP {field}.address (one the daemons reach through a NAT) has a separate local \
                         address; a unix socket is bound where it is named"
                    ),
                ))
            }
        };
        let admin_socket = match &raw.admin_socket {
            Some(path) if path.is_empty() => {
                return Err(self.error(
                    format!("{field}.admin_socket"),
                    "expected a socket path, got an empty string",
                ))
            }
            Some(path) => self.unix_socket_path(&format!("{field}.admin_socket"), Path::new(path))?,
            None => default.admin_socket.clone(),
        };
        let state_dir = match &raw.state_dir {
            Some(path) => self.path(&format!("{field}.state_dir"), path)?,
            None => default.state_dir.clone(),
        };
        let metrics = raw.metrics.0;
        if metrics.port() == 0 {
            return Err(self.error(format!("{field}.metrics"), "expected a non-zero port, got 0"));
        }
        Ok(ControllerMember {
            address,
            listen,
            metrics,
            admin_socket,
            state_dir,
        })
    }

    /// The controller set: `controller.members`, or the lone controller's own fields.
    fn controller_members(
        &self,
        raw: &mut RawController,
        default: &ControllerConfig,
    ) -> Result<Vec<ControllerMember>, ConfigError> {
        let Some(members) = raw.members.take() else {
            let lone = RawControllerMember {
                address: raw.address.take().unwrap_or_else(|| default.address.clone()),
                listen: raw.listen.take(),
                metrics: RawSocketAddr(raw.metrics.take().map_or(default.metrics, |m| m.0)),
                admin_socket: raw.admin_socket.take(),
                state_dir: raw.state_dir.take(),
            };
            return Ok(vec![self.controller_member("controller", lone, default)?]);
        };
        for (given, name) in [
            (raw.address.is_some(), "address"),
            (raw.listen.is_some(), "listen"),
            (raw.metrics.is_some(), "metrics"),
            (raw.admin_socket.is_some(), "admin_socket"),
            (raw.state_dir.is_some(), "state_dir"),
        ] {
            if given {
                return Err(self.error(
                    format!("controller.{name}"),
                    format!("with controller.members, give each controller's {name} in its entry"),
                ));
            }
        }
        if !CONTROLLER_MEMBERS_RANGE.contains(&members.len()) {
            return Err(self.error(
                "controller.members",
                format!(
                    "expected {} to {} controllers, got {}",
                    CONTROLLER_MEMBERS_RANGE.start(),
                    CONTROLLER_MEMBERS_RANGE.end(),
                    members.len()
                ),
            ));
        }
        let members = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| self.controller_member(&format!("controller.members[{i}]"), m, default))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, m) in members.iter().enumerate() {
            if let Some(j) = members[..i].iter().position(|o| o.address == m.address) {
                return Err(self.error(
                    format!("controller.members[{i}].address"),
                    format!("{} is also controller.members[{j}]'s", m.address),
                ));
            }
        }
        if members.len() > 1 && raw.etcd.is_none() {
            return Err(self.error(
                "controller.members",
                "several controllers elect their leader through etcd: set controller.etcd.endpoints",
            ));
        }
        Ok(members)
    }

    fn etcd(&self, raw: RawEtcd, cluster_name: &str) -> Result<EtcdConfig, ConfigError> {
        if raw.endpoints.is_empty() {
            return Err(self.error("controller.etcd.endpoints", "expected at least one etcd client URL"));
        }
        for (i, url) in raw.endpoints.iter().enumerate() {
            let hostport = url.strip_prefix("http://").unwrap_or("");
            let valid = !hostport.is_empty()
                && !hostport.contains('/')
                && hostport
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
            if !valid {
                return Err(self.error(
                    format!("controller.etcd.endpoints[{i}]"),
                    format!("expected http://HOST:PORT (an etcd client URL), got {url:?}"),
                ));
            }
        }
        let prefix = raw.prefix.unwrap_or_else(|| format!("/braid/{cluster_name}"));
        if !prefix.starts_with('/') || prefix.len() > 256 || prefix.ends_with('/') {
            return Err(self.error(
                "controller.etcd.prefix",
                format!(
                    "expected a key prefix like /braid/{cluster_name} (a leading '/', no trailing one), got {prefix:?}"
                ),
            ));
        }
        Ok(EtcdConfig {
            endpoints: raw.endpoints,
            prefix,
            lease_ttl_s: self.number("controller.etcd.lease_ttl_s", raw.lease_ttl_s, 2, LEASE_TTL_S_RANGE)?,
        })
    }

    fn controller(&self, mut raw: RawController, cluster_name: &str) -> Result<ControllerConfig, ConfigError> {
        let default = ControllerConfig::defaults(cluster_name);
        let members = self.controller_members(&mut raw, &default)?;
        let etcd = match raw.etcd.take() {
            Some(etcd) => Some(self.etcd(etcd, cluster_name)?),
            None => None,
        };
        let ControllerMember {
            address,
            listen,
            metrics,
            admin_socket,
            state_dir,
        } = members[0].clone();
        let admin_listen = raw.admin_listen.map(|addr| addr.0);
        if admin_listen.is_some_and(|addr| addr.port() == 0) {
            return Err(self.error("controller.admin_listen", "expected a non-zero port, got 0"));
        }
        let admin_key_file = match &raw.admin_key_file {
            Some(path) => Some(self.path("controller.admin_key_file", path)?),
            None => None,
        };
        match (admin_listen, &admin_key_file) {
            (Some(_), None) => {
                return Err(self.error(
                    "controller.admin_listen",
                    "remote administration needs controller.admin_key_file (the key that signs requests; `braid keygen --admin --out FILE` makes one)",
                ))
            }
            (None, Some(_)) => {
                return Err(self.error(
                    "controller.admin_key_file",
                    "only used with controller.admin_listen (where signed requests arrive); set both or neither",
                ))
            }
            _ => {}
        }
        let heartbeat_ms = self.number(
            "controller.heartbeat_ms",
            raw.heartbeat_ms,
            default.heartbeat_ms,
            HEARTBEAT_MS_RANGE,
        )?;
        let failure_field = "controller.failure_timeout_ms";
        let failure_timeout_ms = self.number(
            failure_field,
            raw.failure_timeout_ms,
            default.failure_timeout_ms,
            FAILURE_TIMEOUT_MS_RANGE,
        )?;
        if failure_timeout_ms < 2 * heartbeat_ms {
            return Err(self.error(failure_field, format!("expected at least two heartbeat periods ({} ms), so one lost heartbeat is not a failure, got {failure_timeout_ms} ms", 2 * heartbeat_ms)));
        }
        let restart_hook = match raw.restart_hook {
            Some(hook) => Some(self.restart_hook("controller.restart_hook", hook)?),
            None => None,
        };
        Ok(ControllerConfig {
            address,
            listen,
            metrics,
            heartbeat_ms,
            failure_timeout_ms,
            recovery_ms: self.number(
                "controller.recovery_ms",
                raw.recovery_ms,
                default.recovery_ms,
                RECOVERY_MS_RANGE,
            )?,
            canary_rtt_alarm_ms: self.number(
                "controller.canary_rtt_alarm_ms",
                raw.canary_rtt_alarm_ms,
                default.canary_rtt_alarm_ms,
                CANARY_RTT_ALARM_MS_RANGE,
            )?,
            drain_timeout_s: self.number(
                "controller.drain_timeout_s",
                raw.drain_timeout_s,
                default.drain_timeout_s,
                DRAIN_TIMEOUT_S_RANGE,
            )?,
            restart_hook,
            admin_socket,
            admin_listen,
            admin_key_file,
            state_dir,
            members,
            member: 0,
            etcd,
        })
    }

    /// A unix socket path resolved against the file's directory, short enough for `sun_path`.
    fn unix_socket_path(&self, field: &str, path: &Path) -> Result<PathBuf, ConfigError> {
        let resolved = self.base.join(path);
        let len = resolved.as_os_str().len();
        if len > UNIX_SOCKET_PATH_MAX {
            return Err(self.error(
                field,
                format!(
                    "a unix socket path has at most {UNIX_SOCKET_PATH_MAX} bytes, got {len} ({})",
                    resolved.display()
                ),
            ));
        }
        Ok(resolved)
    }

    /// A non-blank command whose `{...}` placeholders are all known.
    fn restart_hook(&self, field: &str, hook: String) -> Result<String, ConfigError> {
        if hook.trim().is_empty() {
            return Err(self.error(field, "expected a command, got an empty string"));
        }
        let mut rest = hook.as_str();
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let name = after.find('}').map(|close| &after[..close]);
            match name {
                Some(name) if RESTART_HOOK_PLACEHOLDERS.contains(&name) => {
                    rest = &after[name.len() + 1..];
                }
                _ => {
                    let shown = name.map_or_else(|| after.to_string(), |n| format!("{{{n}}}"));
                    return Err(self.error(
                        field,
                        format!("unknown placeholder {shown:?}; the placeholders are {{role}}, {{site}} and {{pair}}"),
                    ));
                }
            }
        }
        Ok(hook)
    }

    /// `ip netns` names: 1 to 64 characters of letters, digits, '_', '-' and '.', not `.` or
    /// `..` (they name files under /run/netns).
    fn netns(&self, field: &str, name: Option<String>) -> Result<Option<String>, ConfigError> {
        let Some(name) = name else {
            return Ok(None);
        };
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        let valid = (1..=NETNS_NAME_MAX_LEN).contains(&name.len())
            && name != "."
            && name != ".."
            && name.chars().all(valid_char);
        if !valid {
            return Err(self.error(
                field,
                format!("expected a network namespace name of 1 to {NETNS_NAME_MAX_LEN} characters of a-z, A-Z, 0-9, '_', '-' and '.', got {name:?}"),
            ));
        }
        Ok(Some(name))
    }

    fn sites(&self, raw: Entries<RawSite>) -> Result<BTreeMap<String, SiteConfig>, ConfigError> {
        if raw.0.len() != 2 {
            return Err(self.error("sites", format!("expected exactly two sites, got {}", raw.0.len())));
        }
        let mut sites = BTreeMap::new();
        for (name, site) in raw.0 {
            let field = format!("sites.{name}");
            self.name(&field, &name)?;
            if site.prefixes.is_empty() {
                return Err(self.error(format!("{field}.prefixes"), "expected at least one prefix"));
            }
            let external = site.external.unwrap_or(false);
            let config = if external {
                if site.demux.is_some() {
                    return Err(self.error(
                        format!("{field}.demux"),
                        "an external site runs no braid, so it has no demux; remove this section",
                    ));
                }
                let Some(canary) = site.canary else {
                    return Err(self.error(
                        format!("{field}.canary"),
                        "expected the address of a host inside the external site that answers ICMP echo \
                         (the other site's demux pings it through every pair to judge the pair's health); got nothing",
                    ));
                };
                if !site.prefixes.iter().any(|p| p.contains(canary)) {
                    return Err(self.error(
                        format!("{field}.canary"),
                        format!("{canary} is not inside the site's prefixes"),
                    ));
                }
                SiteConfig {
                    prefixes: site.prefixes,
                    demux: None,
                    external: Some(ExternalSite { canary }),
                }
            } else {
                if site.canary.is_some() {
                    return Err(self.error(
                        format!("{field}.canary"),
                        "only an external site (external: true) names a canary address; a braid site's demux answers canaries itself",
                    ));
                }
                let Some(demux) = site.demux else {
                    return Err(self.error(
                        format!("{field}.demux"),
                        "expected a demux section (tun, geneve), which every site running braid needs; \
                         a site that runs no braid says external: true",
                    ));
                };
                self.tun_name(&format!("{field}.demux.tun"), &demux.tun)?;
                self.concrete(&format!("{field}.demux.geneve"), demux.geneve)?;
                let netns = self.netns(&format!("{field}.demux.netns"), demux.netns)?;
                let data_threads = demux
                    .data_threads
                    .map(|n| self.in_range(&format!("{field}.demux.data_threads"), n, 1..=MAX_DATA_THREADS))
                    .transpose()?;
                SiteConfig {
                    prefixes: site.prefixes,
                    demux: Some(DemuxConfig {
                        tun: demux.tun,
                        geneve: demux.geneve,
                        netns,
                        data_threads,
                    }),
                    external: None,
                }
            };
            if sites.insert(name, config).is_some() {
                return Err(self.error(field, "this site is defined twice"));
            }
        }
        Ok(sites)
    }

    /// An external site needs the IPsec suite (a standard peer speaks IKEv2, not braid's
    /// WireGuard keys), the other site must run braid, and its canary must be of the family
    /// the other site's demux pings from (the address after its first prefix's network).
    fn external_site(&self, sites: &BTreeMap<String, SiteConfig>, suite: Suite) -> Result<(), ConfigError> {
        let external: Vec<(&String, &ExternalSite)> = sites
            .iter()
            .filter_map(|(n, s)| s.external.as_ref().map(|e| (n, e)))
            .collect();
        let Some(&(name, ext)) = external.first() else {
            return Ok(());
        };
        let field = format!("sites.{name}.external");
        if external.len() > 1 {
            return Err(self.error(
                format!("sites.{}.external", external[1].0),
                "only one site may be external: the other runs braid (its demux spreads flows over the pairs)",
            ));
        }
        if suite != Suite::Ipsec {
            return Err(self.error(
                field,
                format!("an external site needs cluster.suite ipsec (its gateways are standard IKEv2/ESP endpoints), got {suite}"),
            ));
        }
        let braid_site = sites.values().find(|s| !s.is_external());
        let local_v4 = braid_site.and_then(|s| s.prefixes.first()).map(|p| p.addr.is_ipv4());
        if local_v4.is_some_and(|v4| v4 != ext.canary.is_ipv4()) {
            return Err(self.error(
                format!("sites.{name}.canary"),
                format!(
                    "{} must be of the same family as the other site's first prefix (its demux pings from there)",
                    ext.canary
                ),
            ));
        }
        Ok(())
    }

    fn pairs(
        &self,
        raw: Vec<RawPair>,
        sites: &BTreeMap<String, SiteConfig>,
        suite: Suite,
    ) -> Result<Vec<PairConfig>, ConfigError> {
        if raw.is_empty() {
            return Err(self.error("pairs", "expected at least one gateway pair"));
        }
        let mut first_index_of_id: HashMap<PairId, usize> = HashMap::new();
        let mut pairs = Vec::with_capacity(raw.len());
        for (index, pair) in raw.into_iter().enumerate() {
            let field = format!("pairs[{index}]");
            let id: PairId = self.in_range(&format!("{field}.id"), pair.id, PAIR_ID_RANGE)?;
            if let Some(first) = first_index_of_id.insert(id, index) {
                return Err(self.error(
                    format!("{field}.id"),
                    format!("pair id {id} is already used by pairs[{first}]"),
                ));
            }
            let gateways = self.gateways(&format!("{field}.gateways"), pair.gateways, sites, suite)?;
            pairs.push(PairConfig { id, gateways });
        }
        Ok(pairs)
    }

    fn gateways(
        &self,
        field: &str,
        raw: Entries<RawGateway>,
        sites: &BTreeMap<String, SiteConfig>,
        suite: Suite,
    ) -> Result<BTreeMap<String, GatewayConfig>, ConfigError> {
        let mut gateways = BTreeMap::new();
        for (site, gateway) in raw.0 {
            let gateway_field = format!("{field}.{site}");
            if !sites.contains_key(&site) {
                return Err(self.error(gateway_field, format!("no site named {site:?}; {}", site_list(sites))));
            }
            let external = sites[&site].is_external();
            let geneve = match (external, gateway.geneve) {
                (false, Some(geneve)) => {
                    self.concrete(&format!("{gateway_field}.geneve"), geneve.0)?;
                    Some(geneve.0)
                }
                (false, None) => {
                    return Err(self.error(
                        format!("{gateway_field}.geneve"),
                        "expected the gateway's LAN address (IP:port), where its demux sends GENEVE; got nothing",
                    ))
                }
                (true, Some(_)) => {
                    return Err(self.error(
                        format!("{gateway_field}.geneve"),
                        format!("site {site:?} is external: its gateways are IPsec endpoints with only a wan address (and an optional ike_id)"),
                    ))
                }
                (true, None) => None,
            };
            self.concrete(&format!("{gateway_field}.wan"), gateway.wan)?;
            let wan_listen = match (external, gateway.wan_listen) {
                (_, None) => None,
                (false, Some(listen)) => Some(self.listen_addr(
                    &format!("{gateway_field}.wan_listen"),
                    listen.0,
                    &format!("{gateway_field}.wan"),
                    gateway.wan,
                )?),
                (true, Some(_)) => {
                    return Err(self.error(
                        format!("{gateway_field}.wan_listen"),
                        format!(
                            "site {site:?} is external: braid runs none of its gateways, so there is nothing to bind"
                        ),
                    ))
                }
            };
            if suite == Suite::WireGuard && gateway.public_key.is_none() {
                return Err(self.error(
                    format!("{gateway_field}.public_key"),
                    "expected a base64 WireGuard public key (44 characters), which cluster.suite wireguard \
                     requires of every gateway; got nothing",
                ));
            }
            let private_key_file = match &gateway.private_key_file {
                Some(path) => Some(self.path(&format!("{gateway_field}.private_key_file"), path)?),
                None => None,
            };
            let ike_id = self.ike_id(&format!("{gateway_field}.ike_id"), gateway.ike_id, suite)?;
            let netns = self.netns(&format!("{gateway_field}.netns"), gateway.netns)?;
            let config = GatewayConfig {
                geneve,
                wan: gateway.wan,
                wan_listen,
                public_key: gateway.public_key,
                private_key_file,
                ike_id,
                netns,
            };
            if gateways.insert(site, config).is_some() {
                return Err(self.error(gateway_field, "this site's gateway is defined twice"));
            }
        }
        if let Some(missing) = sites.keys().find(|site| !gateways.contains_key(*site)) {
            return Err(self.error(
                field,
                format!("missing the gateway of site {missing:?}; every pair has one gateway per site"),
            ));
        }
        Ok(gateways)
    }

    fn prefixes_disjoint(&self, sites: &BTreeMap<String, SiteConfig>) -> Result<(), ConfigError> {
        let all: Vec<(String, &Prefix)> = sites
            .iter()
            .flat_map(|(name, site)| {
                site.prefixes
                    .iter()
                    .enumerate()
                    .map(move |(i, p)| (format!("sites.{name}.prefixes[{i}]"), p))
            })
            .collect();
        for (later, (field, prefix)) in all.iter().enumerate() {
            if let Some((earlier_field, earlier)) = all[..later].iter().find(|(_, other)| other.overlaps(prefix)) {
                return Err(self.error(field, format!("{prefix} overlaps {earlier} ({earlier_field})")));
            }
        }
        Ok(())
    }

    fn addresses_unique(&self, sites: &BTreeMap<String, SiteConfig>, pairs: &[PairConfig]) -> Result<(), ConfigError> {
        let mut book = AddressBook::default();
        for (name, site) in sites {
            let Some(demux) = &site.demux else { continue };
            let field = format!("sites.{name}.demux.geneve");
            book.claim(name, &field, demux.geneve, false)
                .map_err(|p| self.error(&field, p))?;
        }
        for (index, pair) in pairs.iter().enumerate() {
            for (site, gateway) in &pair.gateways {
                if let Some(address) = gateway.geneve {
                    let geneve = format!("pairs[{index}].gateways.{site}.geneve");
                    book.claim(site, &geneve, address, false)
                        .map_err(|p| self.error(&geneve, p))?;
                }
                let wan = format!("pairs[{index}].gateways.{site}.wan");
                book.claim(site, &wan, gateway.wan, true)
                    .map_err(|p| self.error(&wan, p))?;
            }
        }
        Ok(())
    }

    fn public_keys_unique(&self, pairs: &[PairConfig]) -> Result<(), ConfigError> {
        let mut owners: HashMap<&PublicKey, String> = HashMap::new();
        for (index, pair) in pairs.iter().enumerate() {
            for (site, gateway) in &pair.gateways {
                let Some(key) = &gateway.public_key else {
                    continue;
                };
                let field = format!("pairs[{index}].gateways.{site}.public_key");
                if let Some(owner) = owners.get(key) {
                    return Err(self.error(field, format!("the same public key is already used by {owner}")));
                }
                owners.insert(key, field);
            }
        }
        Ok(())
    }

    fn name(&self, field: &str, name: &str) -> Result<(), ConfigError> {
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if name.is_empty() || name.len() > NAME_MAX_LEN || !name.chars().all(valid_char) {
            return Err(self.error(
                field,
                format!("expected 1 to {NAME_MAX_LEN} characters of a-z, 0-9 and '-', got {name:?}"),
            ));
        }
        Ok(())
    }

    /// Linux interface names: at most 15 bytes, not `.` or `..`, no `/`, `:` or whitespace;
    /// `%` is refused too, since `braid%d` would let the kernel pick a name braid cannot know.
    fn tun_name(&self, field: &str, name: &str) -> Result<(), ConfigError> {
        let valid_char = |c: char| c.is_ascii_graphic() && !matches!(c, '/' | ':' | '%');
        let valid =
            (1..=TUN_NAME_MAX_LEN).contains(&name.len()) && name != "." && name != ".." && name.chars().all(valid_char);
        if !valid {
            return Err(self.error(
                field,
                format!(
                    "expected an interface name of 1 to {TUN_NAME_MAX_LEN} printable ASCII characters \
                     without '/', ':' or '%', got {name:?}"
                ),
            ));
        }
        Ok(())
    }

    /// An address a peer can send to: a specific IP and a non-zero port.
    fn concrete(&self, field: &str, addr: SocketAddr) -> Result<(), ConfigError> {
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(self.error(
                field,
                format!("expected a specific IP address and a non-zero port, got {addr}"),
            ));
        }
        Ok(())
    }

    /// A local address to bind in place of the advertised one (`advertised_field`): the same
    /// family, since the NAT translates addresses and not families, and a non-zero port. The
    /// IP may be unspecified (every local address).
    fn listen_addr(
        &self,
        field: &str,
        listen: SocketAddr,
        advertised_field: &str,
        advertised: SocketAddr,
    ) -> Result<SocketAddr, ConfigError> {
        if listen.is_ipv4() != advertised.is_ipv4() {
            let family = |a: SocketAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(self.error(
                field,
                format!(
                    "{listen} is {} but {advertised_field} {advertised} is {}: a 1:1 NAT keeps the family",
                    family(listen),
                    family(advertised)
                ),
            ));
        }
        if listen.port() == 0 {
            return Err(self.error(
                field,
                format!("expected a non-zero port (the one the NAT forwards {advertised} to), got {listen}"),
            ));
        }
        Ok(listen)
    }

    fn path(&self, field: &str, path: &str) -> Result<PathBuf, ConfigError> {
        if path.is_empty() {
            return Err(self.error(field, "expected a file path, got an empty string"));
        }
        Ok(self.base.join(path))
    }

    /// `value`, or `default` when absent, checked against `range` and converted.
    fn number<T: TryFrom<u64>>(
        &self,
        field: &str,
        value: Option<u64>,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<T, ConfigError> {
        self.in_range(field, value.unwrap_or(default), range)
    }

    fn in_range<T: TryFrom<u64>>(&self, field: &str, value: u64, range: RangeInclusive<u64>) -> Result<T, ConfigError> {
        match T::try_from(value) {
            Ok(converted) if range.contains(&value) => Ok(converted),
            _ => Err(self.error(
                field,
                format!(
                    "expected a number from {} to {}, got {value}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }
}

/// Which field uses each socket address: LAN addresses are private to a site (both sites may
/// use the same private range), WAN addresses share one network.
#[derive(Default)]
struct AddressBook<'a> {
    in_site: HashMap<(&'a str, SocketAddr), String>,
    on_wan: HashMap<SocketAddr, String>,
}

impl<'a> AddressBook<'a> {
    /// Records that `field` of `site` uses `addr`; if it is taken, says by which field.
    fn claim(&mut self, site: &'a str, field: &str, addr: SocketAddr, is_wan: bool) -> Result<(), String> {
        let wan_owner = if is_wan { self.on_wan.get(&addr) } else { None };
        if let Some(owner) = self.in_site.get(&(site, addr)).or(wan_owner) {
            return Err(format!("{addr} is already used by {owner}"));
        }
        if is_wan {
            self.on_wan.insert(addr, field.to_string());
        }
        self.in_site.insert((site, addr), field.to_string());
        Ok(())
    }
}

pub(super) fn site_list(sites: &BTreeMap<String, SiteConfig>) -> String {
    let names: Vec<String> = sites.keys().map(|name| format!("{name:?}")).collect();
    format!("the sites are {}", names.join(" and "))
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}
