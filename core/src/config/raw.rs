//! The cluster file exactly as written: the serde schema, before any cross-field validation.
//!
//! Values that carry their own syntax (prefixes, keys, socket addresses) are parsed here, so a
//! malformed one is reported by the YAML deserializer with its field path, line and column.
//! Numbers are read as `u64` and range-checked by validation, which gives better messages than
//! an integer overflow. Defaults are applied by validation too, so they live in one place and
//! [`RawFile`] also serves to write a configuration back out.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::model::Suite;
use super::prefix::Prefix;
use crate::control::ControlAddr;
use crate::keys::PublicKey;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub cluster: RawCluster,
    pub sites: Entries<RawSite>,
    pub pairs: Vec<RawPair>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<RawController>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsec: Option<RawIpsec>,
}

/// The `ipsec:` section. `psk_file` is optional here so validation can say why it is needed;
/// proposals stay text until validation parses them, so an error can name the list index.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIpsec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_proposals: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp_proposals: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_lifetime_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_lifetime_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_window: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiators: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_thread: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawController {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<ControlAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<RawSocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<RawSocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_rtt_alarm_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_hook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<RawSocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<RawControllerMember>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<RawEtcd>,
}

/// One member of a controller set: what differs from one controller to the next.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControllerMember {
    pub address: ControlAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<RawSocketAddr>,
    pub metrics: RawSocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
}

/// `controller.etcd`: where a controller set elects its leader and keeps its state.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcd {
    pub endpoints: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl_s: Option<u64>,
}

/// A socket address that may be absent, with the same message as required ones.
#[derive(Debug, Deserialize, Serialize)]
#[serde(transparent)]
pub(super) struct RawSocketAddr(#[serde(with = "socket_addr")] pub SocketAddr);

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub name: String,
    pub secret_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_table_capacity: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RawTimeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<Suite>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_idle: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_closing: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_idle: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_idle: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_half_open: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSite {
    pub prefixes: Vec<Prefix>,
    /// Required unless the site is external (validation says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demux: Option<RawDemux>,
    /// A site that runs no braid: its gateways are standard IPsec endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
    /// External sites only: the address inside the site that answers ICMP echo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<std::net::IpAddr>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDemux {
    pub tun: String,
    #[serde(with = "socket_addr")]
    pub geneve: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_threads: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPair {
    pub id: u64,
    pub gateways: Entries<RawGateway>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    /// Required unless the gateway's site is external (validation says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geneve: Option<RawSocketAddr>,
    #[serde(with = "socket_addr")]
    pub wan: SocketAddr,
    /// The local address the gateway binds when `wan` is a NAT's public address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan_listen: Option<RawSocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// A YAML mapping kept as written: in file order and with any repeated key, so validation can
/// report a duplicate instead of silently keeping the last one.
#[derive(Debug)]
pub(super) struct Entries<T>(pub Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Entries<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for EntriesVisitor<T> {
            type Value = Entries<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping keyed by site name")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, T>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

impl<T: Serialize> Serialize for Entries<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, value)| (key, value)))
    }
}

/// `IP:port` text, with a message that shows the expected form.
mod socket_addr {
    use std::fmt;
    use std::net::SocketAddr;

    pub fn serialize<S: serde::Serializer>(addr: &SocketAddr, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(addr)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
        struct SocketAddrText;
        impl serde::de::Visitor<'_> for SocketAddrText {
            type Value = SocketAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an IP:port address like 198.18.10.1:6081 or "[2001:db8::1]:6081" (quote IPv6 ones)"#)
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SocketAddr, E> {
                text.parse()
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(text), &self))
            }
        }
        deserializer.deserialize_str(SocketAddrText)
    }
}
