//! Identities and failure reasons shared by the health state machines.
//!
//! A cluster has exactly two sites; a site is named here by its position in the cluster
//! config's ordered site list ([`SiteIndex`] 0 or 1), so keys stay `Copy` and cheap to compare.
//! The supervisor maps indices to site names for display.

use std::fmt;

use braid_core::flow::PairId;

/// Position of a site in the cluster config's ordered site list: 0 or 1.
pub type SiteIndex = u8;

/// Both sites of a cluster, in order.
pub const SITES: [SiteIndex; 2] = [0, 1];

/// What a daemon does in its site.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Role {
    /// The site's demux.
    Demux,
    /// The site's gateway of one pair.
    Gateway(PairId),
}

/// Identifies one daemon of the cluster.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct DaemonKey {
    pub site: SiteIndex,
    pub role: Role,
}

impl DaemonKey {
    /// The demux of `site`.
    pub fn demux(site: SiteIndex) -> Self {
        DaemonKey {
            site,
            role: Role::Demux,
        }
    }

    /// The gateway of `pair` in `site`.
    pub fn gateway(site: SiteIndex, pair: PairId) -> Self {
        DaemonKey {
            site,
            role: Role::Gateway(pair),
        }
    }
}

/// Why a daemon is dead or a pair is out of service.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FailureReason {
    /// No heartbeat for `silent_ms` (at least the failure timeout).
    NoHeartbeat { silent_ms: u64 },
    /// The supervisor saw the process exit.
    ProcessExited,
    /// The process was (re)started and has not sent its first heartbeat yet.
    Starting,
    /// The gateway reports no established WireGuard session (or its handshake is too old).
    SessionNotEstablished,
    /// Canary probes stopped crossing the pair.
    CanaryLost,
    /// No heartbeat for `silent_ms`, while most of the daemon's site went silent with it: the
    /// controller lost sight of the site, which says nothing about the daemon itself.
    SiteUnreachable { silent_ms: u64 },
}

impl FailureReason {
    /// A short stable label, fit for a metric label or a JSON field.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureReason::NoHeartbeat { .. } => "no_heartbeat",
            FailureReason::ProcessExited => "process_exited",
            FailureReason::Starting => "starting",
            FailureReason::SessionNotEstablished => "session_not_established",
            FailureReason::CanaryLost => "canary_lost",
            FailureReason::SiteUnreachable { .. } => "site_unreachable",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::NoHeartbeat { silent_ms } => {
                write!(f, "no heartbeat for {silent_ms} ms")
            }
            FailureReason::ProcessExited => f.write_str("process exited"),
            FailureReason::Starting => f.write_str("waiting for first heartbeat"),
            FailureReason::SessionNotEstablished => f.write_str("session not established"),
            FailureReason::CanaryLost => f.write_str("canary lost"),
            FailureReason::SiteUnreachable { silent_ms } => {
                write!(
                    f,
                    "no heartbeat for {silent_ms} ms, with most of its site (site unreachable)"
                )
            }
        }
    }
}

/// A failure as recorded for status: when, why, and for a pair which site's gateway caused it
/// (`None` when the pair as a whole failed, e.g. the canary).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Failure {
    pub at_ms: u64,
    pub reason: FailureReason,
    pub gateway_site: Option<SiteIndex>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gateway_site {
            Some(site) => write!(f, "gateway in site {site}: {}", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_well() {
        let r = FailureReason::NoHeartbeat { silent_ms: 412 };
        assert_eq!(r.to_string(), "no heartbeat for 412 ms");
        assert_eq!(r.as_str(), "no_heartbeat");
        assert_eq!(FailureReason::ProcessExited.to_string(), "process exited");
        let f = Failure {
            at_ms: 5,
            reason: FailureReason::SessionNotEstablished,
            gateway_site: Some(1),
        };
        assert_eq!(f.to_string(), "gateway in site 1: session not established");
    }
}
