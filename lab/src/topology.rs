//! The lab's shape, as a pure function of its name, its gateway count and whether site a's
//! gateways are behind a NAT.
//!
//! Two sites on one machine, every address inside 198.18.0.0/15 (RFC 2544 benchmarking space),
//! every interface inside namespaces named `braid-<name>.*` (a name cannot contain '.', so
//! one lab's prefix never matches another's):
//!
//! ```text
//!  ns ha (host a)          ns da (demux a)                  ns ga<i> (gateway a, pair i)
//!  eth0 198.18.1.2 ──veth── host 198.18.1.1                  lan 198.18.10.<10+i> ─┐
//!                          braid0 (TUN) ⇒ 198.18.2.0/24      wan 198.19.0.<10+i> ──┼─┐
//!                          br-lan 198.18.10.1 ◄──────────────────────────────────────┘ │
//!                                                   ns wan: bridge `wan0` ◄────────────────┤
//!  ns hb (host b) ... mirrored for site b with 198.18.2.x, 198.18.20.x, 198.19.0.<110+i> ┘
//! ```
//!
//! A lab built with [`Topology::behind_nat`] puts site a's gateways behind a 1:1 NAT, as on a
//! cloud whose hosts have private addresses and elastic/external IPs: each keeps its WAN
//! address `198.19.0.<10+i>` as the address its peer sends to (the `wan` of the cluster file),
//! but holds only the private `198.18.30.<10+i>` (its `wan_listen`) on a second bridge `nat0`
//! in the `wan` namespace, which routes between the two and translates one to the other with
//! nftables (see [`crate::nat`]).
//!
//! Each gateway has its own namespace so its WAN link can be shaped or cut on its own, and every
//! gateway-to-gateway packet crosses the `wan` namespace's bridge, the capture point. Two labs
//! with different names never share a namespace, so they can run at once. The WAN port depends
//! on the tunnel suite: 51820 for WireGuard, 4500 for IPsec (IKE and ESP in UDP, RFC 3948).

use std::net::{Ipv4Addr, SocketAddr};

use braid_core::config::Suite;

/// The most gateway pairs a lab can have (addresses are `.<10+i>` and `.<110+i>`).
pub const MAX_LAB_PAIRS: u16 = 90;

/// The two sites, in the order the lab builds them.
pub const SITES: [&str; 2] = ["a", "b"];

/// The WireGuard port every lab gateway listens on.
pub const WAN_PORT: u16 = 51820;

/// The IPsec port every lab gateway listens on: IKE and UDP-encapsulated ESP (RFC 3948).
pub const IPSEC_WAN_PORT: u16 = 4500;

/// The port lab gateways of `suite` listen on.
pub fn wan_port(suite: Suite) -> u16 {
    match suite {
        Suite::WireGuard => WAN_PORT,
        Suite::Ipsec => IPSEC_WAN_PORT,
    }
}

/// The fixed MAC address of a lab bridge: `02:62:72:00:00:<n>` (locally administered).
///
/// A Linux bridge without an address of its own takes the lowest MAC of its ports, so adding a
/// gateway's port can change it. Gateways would then keep sending to the old MAC, which the
/// kernel drops without a counter anyone watches (`rx_otherhost_dropped`) until each learns
/// the new one from the demux's next ARP request: a gap of up to a canary interval on every
/// established flow. A bridge with an assigned address keeps it whatever ports come and go.
pub fn bridge_mac(n: u8) -> String {
    format!("02:62:72:00:00:{n:02x}")
}

/// Where everything of one lab lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub name: String,
    pub pairs: u16,
    /// Site a's gateways are behind a 1:1 NAT ([`Topology::behind_nat`]).
    pub nat: bool,
}

/// The site whose gateways a NAT lab puts behind the NAT.
pub const NAT_SITE: &str = SITES[0];

/// The NAT's own address on the private side, the NATed gateways' default route.
pub const NAT_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 30, 1);

/// One site's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAddrs {
    /// The host's own subnet, which is the site's prefix (`198.18.<1|2>.0/24`).
    pub prefix: (Ipv4Addr, u8),
    pub host: Ipv4Addr,
    pub router: Ipv4Addr,
    /// The demux's address on the gateway LAN (`198.18.<10|20>.1`).
    pub lan: Ipv4Addr,
}

impl Topology {
    /// Checks the name (it becomes part of namespace names) and the pair count.
    pub fn new(name: &str, pairs: u16) -> Result<Topology, String> {
        let valid = !name.is_empty()
            && name.len() <= 12
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(format!(
                "lab name {name:?}: expected 1 to 12 characters of a-z, 0-9 and '-'"
            ));
        }
        if pairs == 0 || pairs > MAX_LAB_PAIRS {
            return Err(format!("--gateways {pairs}: expected 1 to {MAX_LAB_PAIRS}"));
        }
        Ok(Topology {
            name: name.to_string(),
            pairs,
            nat: false,
        })
    }

    /// This shape with site a's gateways behind a 1:1 NAT (when `nat`).
    pub fn behind_nat(self, nat: bool) -> Topology {
        Topology { nat, ..self }
    }

    /// The private address a gateway holds behind the NAT, which the NAT translates its WAN
    /// address to; `None` for a gateway not behind one.
    pub fn gateway_wan_private(&self, site: &str, pair: u16) -> Option<Ipv4Addr> {
        (self.nat && site == NAT_SITE).then(|| Ipv4Addr::new(198, 18, 30, (10 + pair) as u8))
    }

    /// The address a gateway binds for `suite` when it differs from its WAN endpoint (its
    /// `wan_listen`): the private address behind the NAT, on the suite's port.
    pub fn gateway_wan_listen(&self, site: &str, pair: u16, suite: Suite) -> Option<SocketAddr> {
        self.gateway_wan_private(site, pair)
            .map(|ip| SocketAddr::from((ip, wan_port(suite))))
    }

    /// The prefix every namespace of this lab shares; `lab down` removes all that start with it.
    pub fn ns_prefix(&self) -> String {
        ns_prefix(&self.name)
    }

    pub fn host_ns(&self, site: &str) -> String {
        format!("{}h{site}", self.ns_prefix())
    }

    pub fn demux_ns(&self, site: &str) -> String {
        format!("{}d{site}", self.ns_prefix())
    }

    pub fn gateway_ns(&self, site: &str, pair: u16) -> String {
        format!("{}g{site}{pair}", self.ns_prefix())
    }

    pub fn wan_ns(&self) -> String {
        format!("{}wan", self.ns_prefix())
    }

    /// The namespaces that do not depend on the pair count: WAN, hosts and demuxes.
    pub fn base_namespaces(&self) -> Vec<String> {
        let mut all = vec![self.wan_ns()];
        for site in SITES {
            all.push(self.host_ns(site));
            all.push(self.demux_ns(site));
        }
        all
    }

    /// Every namespace of the lab, in creation order.
    pub fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.wan_ns()];
        for site in SITES {
            all.push(self.host_ns(site));
            all.push(self.demux_ns(site));
            for pair in self.pair_ids() {
                all.push(self.gateway_ns(site, pair));
            }
        }
        all
    }

    /// Pair ids `1..=pairs`.
    pub fn pair_ids(&self) -> std::ops::RangeInclusive<u16> {
        1..=self.pairs
    }

    pub fn site(&self, site: &str) -> SiteAddrs {
        let n = site_number(site);
        SiteAddrs {
            prefix: (Ipv4Addr::new(198, 18, n, 0), 24),
            host: Ipv4Addr::new(198, 18, n, 2),
            router: Ipv4Addr::new(198, 18, n, 1),
            lan: Ipv4Addr::new(198, 18, 10 * n, 1),
        }
    }

    /// A gateway's LAN (GENEVE) address.
    pub fn gateway_lan(&self, site: &str, pair: u16) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 10 * site_number(site), (10 + pair) as u8)
    }

    /// A gateway's WAN (tunnel) address.
    pub fn gateway_wan(&self, site: &str, pair: u16) -> Ipv4Addr {
        let base = if site == SITES[0] { 10 } else { 110 };
        Ipv4Addr::new(198, 19, 0, (base + pair) as u8)
    }

    /// A gateway's WAN endpoint for `suite`: its WAN address and the suite's port.
    pub fn gateway_wan_endpoint(&self, site: &str, pair: u16, suite: Suite) -> SocketAddr {
        SocketAddr::from((self.gateway_wan(site, pair), wan_port(suite)))
    }

    pub fn peer_site(site: &str) -> &'static str {
        if site == SITES[0] {
            SITES[1]
        } else {
            SITES[0]
        }
    }
}

/// The namespace prefix of lab `name`.
pub fn ns_prefix(name: &str) -> String {
    format!("braid-{name}.")
}

fn site_number(site: &str) -> u8 {
    if site == SITES[0] {
        1
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names_and_counts() {
        assert!(Topology::new("Demo", 2).is_err());
        assert!(Topology::new("a/b", 2).is_err());
        assert!(Topology::new("", 2).is_err());
        assert!(Topology::new("waytoolongname", 2).is_err());
        assert!(Topology::new("ok", 0).is_err());
        assert!(Topology::new("ok", MAX_LAB_PAIRS + 1).is_err());
        assert!(Topology::new("ok-1", MAX_LAB_PAIRS).is_ok());
    }

    #[test]
    fn bridge_macs_are_locally_administered_unicast_and_distinct() {
        let macs: Vec<String> = (0..3).map(bridge_mac).collect();
        for mac in &macs {
            let first = u8::from_str_radix(&mac[..2], 16).unwrap();
            assert_eq!(first & 0b11, 0b10, "{mac}: locally administered, not multicast");
        }
        assert_eq!(macs[1], "02:62:72:00:00:01");
        assert!(macs[0] != macs[1] && macs[1] != macs[2]);
    }

    #[test]
    fn every_address_is_in_the_benchmarking_range_and_unique() {
        let t = Topology::new("t", MAX_LAB_PAIRS).unwrap();
        let mut all = Vec::new();
        for site in SITES {
            let s = t.site(site);
            all.extend([s.host, s.router, s.lan]);
            for p in t.pair_ids() {
                all.extend([t.gateway_lan(site, p), t.gateway_wan(site, p)]);
            }
        }
        let nat = t.clone().behind_nat(true);
        all.push(NAT_ROUTER);
        all.extend(nat.pair_ids().filter_map(|p| nat.gateway_wan_private(NAT_SITE, p)));
        for a in &all {
            let o = a.octets();
            assert!(o[0] == 198 && (o[1] == 18 || o[1] == 19), "{a} outside 198.18.0.0/15");
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "duplicate lab address");
    }

    #[test]
    fn wan_port_follows_the_suite() {
        let t = Topology::new("t", 2).unwrap();
        assert_eq!(
            t.gateway_wan_endpoint("a", 2, Suite::WireGuard),
            "198.19.0.12:51820".parse().unwrap()
        );
        assert_eq!(
            t.gateway_wan_endpoint("b", 1, Suite::Ipsec),
            "198.19.0.111:4500".parse().unwrap()
        );
    }

    #[test]
    fn only_site_a_of_a_nat_lab_binds_a_private_address() {
        let plain = Topology::new("t", 2).unwrap();
        assert_eq!(plain.gateway_wan_listen("a", 1, Suite::WireGuard), None);
        let nat = plain.behind_nat(true);
        assert_eq!(
            nat.gateway_wan_listen("a", 2, Suite::WireGuard),
            Some("198.18.30.12:51820".parse().unwrap())
        );
        assert_eq!(nat.gateway_wan_listen("b", 2, Suite::WireGuard), None);
        assert_eq!(
            nat.gateway_wan_endpoint("a", 2, Suite::WireGuard),
            "198.19.0.12:51820".parse().unwrap(),
            "the advertised address stays the public one"
        );
    }

    #[test]
    fn namespaces_are_prefixed_by_the_lab_name() {
        let t = Topology::new("x", 2).unwrap();
        let ns = t.namespaces();
        assert_eq!(ns.len(), 1 + 2 * (2 + 2));
        assert!(ns.iter().all(|n| n.starts_with("braid-x.")));
        assert!(ns.contains(&"braid-x.ga2".to_string()));
        let other = Topology::new("x-ga", 2).unwrap();
        assert!(other.namespaces().iter().all(|n| !ns.contains(n)));
    }
}
