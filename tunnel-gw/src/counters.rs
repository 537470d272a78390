//! The gateway's counters: traffic per side and one counter per drop reason.
//!
//! Design: three fixed [`CounterSet`]s written by the data thread without locks and read by
//! the status reporter: the gateway's own counters ([`Counter`]), malformed GENEVE or inner
//! packets from the LAN by [`WireError`] reason (the gateway parses wire formats only on the
//! LAN side), and packets the tunnel suite refused by [`SuiteError`] reason. Names are unique
//! across the three, so they merge into one flat JSON object.

use braid_core::counters::CounterSet;
use braid_core::wire::{WireError, WIRE_DROP_COUNTERS};

use crate::handshake_limit::Refusal;
use crate::suite::{SuiteError, SUITE_DROP_COUNTERS};

/// The gateway's own counters, indexing [`GATEWAY_COUNTERS`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Counter {
    LanRxPackets,
    LanRxBytes,
    LanTxPackets,
    LanTxBytes,
    WanRxPackets,
    WanRxBytes,
    WanTxPackets,
    WanTxBytes,
    /// GENEVE datagram from an address other than the configured demux.
    DropLanUnknownSource,
    /// LAN datagram longer than the receive buffer.
    DropLanTruncated,
    /// GENEVE OAM (control) packet: braid defines none.
    DropLanOam,
    /// GENEVE VNI other than this pair's id.
    DropLanWrongVni,
    /// Inner packet longer than the cluster MTU.
    DropLanInnerTooBig,
    /// Inner source address outside the local site's prefixes.
    DropInnerSrcNotLocalSite,
    /// Inner packet queued by the suite until the session is up (not a drop).
    LanQueuedForSession,
    /// GENEVE datagrams the kernel refused to send to the demux.
    DropLanTxFailed,
    /// WAN datagram longer than the receive buffer.
    DropWanTruncated,
    /// WAN datagrams that did not prove they came from the peer.
    WanUnauthenticated,
    /// Decrypted inner source address outside the peer site's prefixes.
    DropInnerSrcNotPeerSite,
    /// WAN datagrams the kernel refused to send.
    DropWanTxFailed,
    /// The peer's WAN endpoint moved after authenticated transport data from a new address.
    WanEndpointRoamed,
    /// Receive errors reported by the LAN socket.
    LanSocketErrors,
    /// Receive errors reported by the WAN socket.
    WanSocketErrors,
    /// Handshakes refused before the suite: their source exceeded its own rate.
    DropHandshakeSourceRate,
    /// Handshakes refused before the suite: the source table was full and the sources sharing
    /// the overflow bucket exceeded its rate.
    DropHandshakeOverflowRate,
    /// Handshakes refused before the suite: all sources but the peer together exceeded the
    /// global cap.
    DropHandshakeGlobalRate,
}

impl From<Refusal> for Counter {
    fn from(refusal: Refusal) -> Counter {
        match refusal {
            Refusal::Source => Counter::DropHandshakeSourceRate,
            Refusal::Overflow => Counter::DropHandshakeOverflowRate,
            Refusal::Global => Counter::DropHandshakeGlobalRate,
        }
    }
}

/// The drops of the handshake rate limits, every [`Refusal`] reason.
pub const HANDSHAKE_LIMIT_DROPS: [Counter; 3] = [
    Counter::DropHandshakeSourceRate,
    Counter::DropHandshakeOverflowRate,
    Counter::DropHandshakeGlobalRate,
];

impl Counter {
    /// This counter's name in [`GATEWAY_COUNTERS`].
    pub fn name(self) -> &'static str {
        GATEWAY_COUNTERS[self as usize]
    }
}

/// Names of [`Counter`], in declaration order.
pub const GATEWAY_COUNTERS: &[&str] = &[
    "lan_rx_packets",
    "lan_rx_bytes",
    "lan_tx_packets",
    "lan_tx_bytes",
    "wan_rx_packets",
    "wan_rx_bytes",
    "wan_tx_packets",
    "wan_tx_bytes",
    "drop_lan_unknown_source",
    "drop_lan_truncated",
    "drop_lan_oam",
    "drop_lan_wrong_vni",
    "drop_lan_inner_too_big",
    "drop_inner_src_not_local_site",
    "lan_queued_for_session",
    "drop_lan_tx_failed",
    "drop_wan_truncated",
    "wan_unauthenticated",
    "drop_inner_src_not_peer_site",
    "drop_wan_tx_failed",
    "wan_endpoint_roamed",
    "lan_socket_errors",
    "wan_socket_errors",
    "drop_handshake_source_rate",
    "drop_handshake_overflow_rate",
    "drop_handshake_global_rate",
];

/// Every counter a gateway keeps.
#[derive(Debug)]
pub struct GatewayCounters {
    gateway: CounterSet,
    wire: CounterSet,
    suite: CounterSet,
}

impl Default for GatewayCounters {
    fn default() -> Self {
        GatewayCounters {
            gateway: CounterSet::new(GATEWAY_COUNTERS),
            wire: CounterSet::new(WIRE_DROP_COUNTERS),
            suite: CounterSet::new(&SUITE_DROP_COUNTERS),
        }
    }
}

impl GatewayCounters {
    /// Adds `n` to a gateway counter.
    #[inline]
    pub fn add(&self, counter: Counter, n: u64) {
        self.gateway.add(counter as usize, n);
    }

    /// Adds one to a gateway counter.
    #[inline]
    pub fn inc(&self, counter: Counter) {
        self.gateway.inc(counter as usize);
    }

    /// Counts a LAN packet dropped as malformed.
    #[inline]
    pub fn wire_drop(&self, error: WireError) {
        self.wire.inc(error.counter_index());
    }

    /// Counts a packet the tunnel suite refused.
    #[inline]
    pub fn suite_drop(&self, error: SuiteError) {
        self.suite.inc(error.counter_index());
    }

    /// A gateway counter's value.
    pub fn get(&self, counter: Counter) -> u64 {
        self.gateway.get(counter as usize)
    }

    /// Any counter's value by name.
    pub fn get_by_name(&self, name: &str) -> Option<u64> {
        self.gateway
            .get_by_name(name)
            .or_else(|| self.wire.get_by_name(name))
            .or_else(|| self.suite.get_by_name(name))
    }

    /// Every counter as one flat JSON object `{name: value}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut all = serde_json::Map::new();
        for set in [&self.gateway, &self.wire, &self.suite] {
            for (name, value) in set.snapshot() {
                all.insert(name.to_string(), value.into());
            }
        }
        serde_json::Value::Object(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_across_all_sets() {
        let counters = GatewayCounters::default();
        let json = counters.to_json();
        let total = GATEWAY_COUNTERS.len() + WIRE_DROP_COUNTERS.len() + SUITE_DROP_COUNTERS.len();
        assert_eq!(json.as_object().unwrap().len(), total);
    }

    #[test]
    fn enum_indexes_its_name() {
        let counters = GatewayCounters::default();
        assert_eq!(GATEWAY_COUNTERS.len(), Counter::DropHandshakeGlobalRate as usize + 1);
        counters.inc(Counter::DropInnerSrcNotPeerSite);
        counters.add(Counter::WanRxBytes, 7);
        counters.wire_drop(WireError::GeneveBadVersion);
        counters.suite_drop(SuiteError::Replay);
        counters.inc(Refusal::Overflow.into());
        assert_eq!(counters.get_by_name("drop_handshake_overflow_rate"), Some(1));
        for counter in HANDSHAKE_LIMIT_DROPS {
            assert!(counter.name().starts_with("drop_handshake_"));
        }
        assert_eq!(counters.get_by_name("drop_inner_src_not_peer_site"), Some(1));
        assert_eq!(counters.get_by_name("wan_rx_bytes"), Some(7));
        assert_eq!(counters.get_by_name("drop_geneve_bad_version"), Some(1));
        assert_eq!(counters.get_by_name("drop_suite_replay"), Some(1));
        assert_eq!(counters.get(Counter::DropInnerSrcNotPeerSite), 1);
    }
}
