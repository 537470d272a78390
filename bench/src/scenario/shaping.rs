//! Per-gateway bandwidth limits: a token bucket (`tc qdisc … tbf`) on each gateway's WAN
//! egress, in both sites, the way a cloud instance's per-instance cap limits a real gateway.
//!
//! The bucket holds 10 ms of traffic at the configured rate (at least 32 KiB, so that
//! kernel-segmented bursts fit), and queues at most 20 ms before dropping: enough for TCP to
//! fill the link, short enough that queueing does not dominate what the bench sees.

use anyhow::{bail, Context, Result};
use braid_lab::netns::{ip_in, run_in};
use braid_lab::topology::{Topology, SITES};
use std::path::Path;
use std::process::{Command, Stdio};

/// The interface of every lab gateway that faces the WAN.
pub const WAN_INTERFACE: &str = "wan";

/// A per-gateway cap in bits per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cap {
    pub bits_per_second: u64,
}

impl Cap {
    pub fn mbps(&self) -> f64 {
        self.bits_per_second as f64 / 1e6
    }

    /// The token bucket's depth in bytes.
    pub fn burst_bytes(&self) -> u64 {
        (self.bits_per_second / 8 / 100).max(32 * 1024)
    }

    /// `tc qdisc replace` arguments for `dev`.
    pub fn tc_args(&self, dev: &str) -> Vec<String> {
        [
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            &format!("{}bit", self.bits_per_second),
            "burst",
            &self.burst_bytes().to_string(),
            "latency",
            "20ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// Shapes the WAN egress of gateways `pairs` of both sites of lab `name`.
pub fn shape_gateways(name: &str, pairs: impl Iterator<Item = u16> + Clone, cap: Cap) -> Result<()> {
    let topo = Topology::new(name, 1).map_err(anyhow::Error::msg)?;
    for site in SITES {
        for pair in pairs.clone() {
            let ns = topo.gateway_ns(site, pair);
            // Make sure the link exists before handing it to tc, for a clearer error.
            ip_in(&ns, &["link", "show", "dev", WAN_INTERFACE])?;
            tc_in(&ns, &cap.tc_args(WAN_INTERFACE))?;
        }
    }
    Ok(())
}

/// Bytes sent so far out of the WAN interfaces of gateways `pairs` of `site` of lab `name`, as
/// the kernel counts them (whole frames: what the token bucket meters too).
pub fn wan_tx_bytes(name: &str, site: &str, pairs: impl Iterator<Item = u16>) -> Result<u64> {
    let topo = Topology::new(name, 1).map_err(anyhow::Error::msg)?;
    let counter = format!("/sys/class/net/{WAN_INTERFACE}/statistics/tx_bytes");
    let mut total = 0;
    for pair in pairs {
        let ns = topo.gateway_ns(site, pair);
        let text = run_in(&ns, Path::new("cat"), std::slice::from_ref(&counter))?;
        total += text
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{counter} in {ns} is not a number: {text:?}"))?;
    }
    Ok(total)
}

/// Runs `tc ARGS…` in namespace `ns`.
fn tc_in(ns: &str, args: &[String]) -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "tc"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `tc` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`tc {}` in {ns} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_holds_ten_milliseconds_or_32_kib() {
        let fast = Cap {
            bits_per_second: 800_000_000,
        };
        assert_eq!(fast.burst_bytes(), 1_000_000);
        let slow = Cap {
            bits_per_second: 1_000_000,
        };
        assert_eq!(slow.burst_bytes(), 32 * 1024);
        let args = fast.tc_args("wan");
        assert_eq!(args[..6], ["qdisc", "replace", "dev", "wan", "root", "tbf"]);
        assert_eq!(args[7], "800000000bit");
    }
}
