//! The 1:1 NAT in front of site a's gateways in a NAT lab ([`crate::UpOptions::nat`]).
//!
//! The `wan` namespace plays the cloud's NAT: beside the public bridge `wan0` it gets a private
//! bridge `nat0` (`198.18.30.1/24`) where the NATed gateways live, holds each such gateway's
//! public WAN address on `wan0` (so the other site's gateways find it by ARP, as on any shared
//! segment), forwards between the two, and translates with nftables: destination `198.19.0.x`
//! to `198.18.30.x` on the way in, source `198.18.30.x` to `198.19.0.x` on the way out. The
//! gateways behind it bind only their private address and never learn the public one except
//! from the cluster file (`wan` against `wan_listen`), which is exactly the cloud case. Every
//! rule lives in the lab's `wan` namespace, so removing the namespace removes the NAT with it:
//! nothing is left on the host on any path.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use braid_core::config::ClusterConfig;

use super::netns::{ip_in, sysctl_in};
use super::topology::{Topology, NAT_ROUTER, NAT_SITE};

/// The private bridge in the `wan` namespace that the NATed gateways are plugged into.
pub const NAT_BRIDGE: &str = "nat0";

/// The nftables table the lab's NAT rules are in.
const TABLE: &str = "braid-lab-nat";

/// Refuses to build a NAT lab without `nft` (nftables).
pub fn check_nft() -> Result<()> {
    let found = Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        bail!("a NAT lab needs nftables' `nft` to translate addresses (apt-get install nftables)");
    }
    Ok(())
}

/// Whether a lab's cluster file has gateways behind a NAT (binding an address other than the
/// one they advertise).
pub fn is_behind_nat(config: &ClusterConfig) -> bool {
    config
        .pairs
        .iter()
        .flat_map(|pair| pair.gateways.values())
        .any(|gateway| gateway.wan_listen.is_some())
}

/// The nftables ruleset of `topo`'s NAT: one static mapping per NATed gateway, both ways.
pub fn ruleset(topo: &Topology) -> String {
    let mappings: Vec<(String, String)> = topo
        .pair_ids()
        .filter_map(|pair| {
            let private = topo.gateway_wan_private(NAT_SITE, pair)?;
            Some((topo.gateway_wan(NAT_SITE, pair).to_string(), private.to_string()))
        })
        .collect();
    let inbound: Vec<String> = mappings
        .iter()
        .map(|(public, private)| format!("{public} : {private}"))
        .collect();
    let outbound: Vec<String> = mappings
        .iter()
        .map(|(public, private)| format!("{private} : {public}"))
        .collect();
    format!(
        "table ip {TABLE} {{\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tdnat to ip daddr map {{ {} }}\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tsnat to ip saddr map {{ {} }}\n\
         \t}}\n\
         }}\n",
        inbound.join(", "),
        outbound.join(", ")
    )
}

/// Builds the NAT in `topo`'s `wan` namespace (which must exist, with its `wan0` bridge): the
/// private bridge, the public addresses, forwarding and the translation rules. The gateways
/// are plugged in afterwards.
pub fn build(topo: &Topology, wan_bridge: &str) -> Result<()> {
    let wan = topo.wan_ns();
    ip_in(&wan, &["link", "add", "name", NAT_BRIDGE, "type", "bridge"])?;
    ip_in(&wan, &["addr", "add", &format!("{NAT_ROUTER}/24"), "dev", NAT_BRIDGE])?;
    ip_in(&wan, &["link", "set", "dev", NAT_BRIDGE, "up"])?;
    for pair in topo.pair_ids() {
        let public = topo.gateway_wan(NAT_SITE, pair);
        ip_in(&wan, &["addr", "add", &format!("{public}/24"), "dev", wan_bridge])?;
    }
    sysctl_in(&wan, "net/ipv4/ip_forward", "1")?;
    nft_in(&wan, &ruleset(topo))
}

/// Loads `rules` with `nft -f -` inside namespace `ns`.
fn nft_in(ns: &str, rules: &str) -> Result<()> {
    tracing::debug!("nft in {ns}:\n{rules}");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `ip netns exec … nft`")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes()).context("cannot hand nft its rules")?;
    }
    let out = child.wait_with_output().context("nft did not finish")?;
    if !out.status.success() {
        bail!(
            "loading the NAT rules in namespace {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_maps_each_natted_gateway_both_ways() {
        let topo = Topology::new("t", 2).unwrap().behind_nat(true);
        let rules = ruleset(&topo);
        assert!(
            rules.contains("dnat to ip daddr map { 198.19.0.11 : 198.18.30.11, 198.19.0.12 : 198.18.30.12 }"),
            "{rules}"
        );
        assert!(
            rules.contains("snat to ip saddr map { 198.18.30.11 : 198.19.0.11, 198.18.30.12 : 198.19.0.12 }"),
            "{rules}"
        );
        assert!(!rules.contains("198.19.0.111"), "site b is not behind the NAT: {rules}");
    }
}
