//! The gateway's counters: traffic per side and one counter per drop reason.
//!
//! Design: each data thread counts into its own [`ThreadCounters`] (no cache line is written
//! by two threads), and the status reporter reads [`GatewayCounters`], which sums the threads'
//! blocks when read. A block is three fixed [`CounterSet`]s written without locks: the
//! gateway's own counters ([`Counter`]), malformed GENEVE or inner packets from the LAN by
//! [`WireError`] reason (the gateway parses wire formats only on the LAN side), and packets
//! the tunnel suite refused by [`SuiteError`] reason. Names are unique across the three, so
//! they merge into one flat JSON object.

use std::sync::Arc;

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
    /// GENEVE the kernel dropped on arrival because the LAN socket's receive buffer was full
    /// (in kernel messages: a GRO train of datagrams counts once).
    DropLanSocketFull,
    /// WAN datagrams the kernel dropped on arrival because the WAN socket's receive buffer was
    /// full (in kernel messages, as above).
    DropWanSocketFull,
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
    "drop_lan_socket_full",
    "drop_wan_socket_full",
];

/// Every counter a gateway keeps, as counted by one data thread.
#[derive(Debug)]
pub struct ThreadCounters {
    gateway: CounterSet,
    wire: CounterSet,
    suite: CounterSet,
}

impl Default for ThreadCounters {
    fn default() -> Self {
        ThreadCounters {
            gateway: CounterSet::new(GATEWAY_COUNTERS),
            wire: CounterSet::new(WIRE_DROP_COUNTERS),
            suite: CounterSet::new(&SUITE_DROP_COUNTERS),
        }
    }
}

impl ThreadCounters {
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

    /// Any counter's value by name, whichever set holds it.
    fn get_by_name(&self, name: &str) -> Option<u64> {
        self.gateway
            .get_by_name(name)
            .or_else(|| self.wire.get_by_name(name))
            .or_else(|| self.suite.get_by_name(name))
    }

    /// Every counter's name and current value, the three sets in turn.
    fn snapshot(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        [&self.gateway, &self.wire, &self.suite]
            .into_iter()
            .flat_map(|set| set.snapshot())
    }
}

/// What the reporter reads: every data thread's [`ThreadCounters`], summed when read.
#[derive(Clone, Debug)]
pub struct GatewayCounters {
    threads: Arc<[Arc<ThreadCounters>]>,
}

impl GatewayCounters {
    /// The totals of `threads`' blocks.
    pub fn new(threads: Vec<Arc<ThreadCounters>>) -> Self {
        GatewayCounters {
            threads: threads.into(),
        }
    }

    /// A gateway counter's value, summed over the data threads.
    pub fn get(&self, counter: Counter) -> u64 {
        self.threads.iter().map(|t| t.gateway.get(counter as usize)).sum()
    }

    /// Any counter's value by name, summed over the data threads.
    pub fn get_by_name(&self, name: &str) -> Option<u64> {
        self.threads.iter().map(|t| t.get_by_name(name)).sum()
    }

    /// Every counter as one flat JSON object `{name: value}`, summed over the data threads.
    pub fn to_json(&self) -> serde_json::Value {
        // Every thread's snapshot lists the same counters in the same order.
        let mut totals: Vec<(&'static str, u64)> = Vec::new();
        for thread in self.threads.iter() {
            for (i, (name, value)) in thread.snapshot().enumerate() {
                match totals.get_mut(i) {
                    Some((_, total)) => *total += value,
                    None => totals.push((name, value)),
                }
            }
        }
        let all = totals.into_iter().map(|(name, total)| (name.to_string(), total.into()));
        serde_json::Value::Object(all.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_across_all_sets() {
        let counters = GatewayCounters::new(vec![Arc::default()]);
        let json = counters.to_json();
        let total = GATEWAY_COUNTERS.len() + WIRE_DROP_COUNTERS.len() + SUITE_DROP_COUNTERS.len();
        assert_eq!(json.as_object().unwrap().len(), total);
    }

    #[test]
    fn enum_indexes_its_name() {
        let thread = Arc::<ThreadCounters>::default();
        let counters = GatewayCounters::new(vec![Arc::clone(&thread)]);
        assert_eq!(GATEWAY_COUNTERS.len(), Counter::DropWanSocketFull as usize + 1);
        thread.inc(Counter::DropInnerSrcNotPeerSite);
        thread.add(Counter::WanRxBytes, 7);
        thread.wire_drop(WireError::GeneveBadVersion);
        thread.suite_drop(SuiteError::Replay);
        thread.inc(Refusal::Overflow.into());
        assert_eq!(counters.get_by_name("drop_handshake_overflow_rate"), Some(1));
        for counter in HANDSHAKE_LIMIT_DROPS {
            assert!(counter.name().starts_with("drop_handshake_"));
        }
        assert_eq!(counters.get_by_name("drop_inner_src_not_peer_site"), Some(1));
        assert_eq!(counters.get_by_name("wan_rx_bytes"), Some(7));
        assert_eq!(counters.get_by_name("drop_geneve_bad_version"), Some(1));
        assert_eq!(counters.get_by_name("drop_suite_replay"), Some(1));
        assert_eq!(counters.get(Counter::DropInnerSrcNotPeerSite), 1);
        assert_eq!(counters.get_by_name("no_such_counter"), None);
    }

    #[test]
    fn every_reading_sums_the_threads() {
        let (main, sealing) = (Arc::<ThreadCounters>::default(), Arc::<ThreadCounters>::default());
        let counters = GatewayCounters::new(vec![Arc::clone(&main), Arc::clone(&sealing)]);
        main.add(Counter::WanRxPackets, 3);
        sealing.add(Counter::WanTxPackets, 5);
        main.add(Counter::WanTxPackets, 2);
        sealing.suite_drop(SuiteError::Replay);
        main.suite_drop(SuiteError::Replay);
        sealing.wire_drop(WireError::GeneveBadVersion);
        assert_eq!(counters.get(Counter::WanTxPackets), 7);
        assert_eq!(counters.get(Counter::WanRxPackets), 3);
        assert_eq!(counters.get_by_name("drop_suite_replay"), Some(2));
        let json = counters.to_json();
        assert_eq!(json["wan_tx_packets"], 7);
        assert_eq!(json["drop_geneve_bad_version"], 1);
        assert_eq!(json["lan_rx_packets"], 0);
        let total = GATEWAY_COUNTERS.len() + WIRE_DROP_COUNTERS.len() + SUITE_DROP_COUNTERS.len();
        assert_eq!(json.as_object().unwrap().len(), total);
    }
}
