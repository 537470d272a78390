//! `braid lab up --external-peer strongswan`: site b runs no braid at all. Each of its
//! "gateways" is a strongSwan 5.9 charon (kernel-libipsec, IKE and ESP in UDP on 4500) in its
//! own namespace with one connection to its braid gateway, and host b sits behind all of them:
//!
//! ```text
//!  ns ga<i> (braid-gw)        ns gb<i> (charon)               ns hb (host b)
//!  wan 198.19.0.<10+i> ═wan0═ wan 198.19.0.<110+i>
//!                             site 198.18.<20+i>.1 ──veth── gw<i> 198.18.<20+i>.2, lo 198.18.2.2/32
//! ```
//!
//! Site a is the usual braid site (host, demux, gateways). Host b routes every reply to site a
//! through external gateway 1, as a plain site with one default VPN route does: the external
//! site, not braid, picks the return tunnel. The cluster file declares site b `external: true`
//! with host b as its canary, so the controller launches and watches only site a, and pair
//! health is site a's gateway plus ICMP echo canaries to host b.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use braid_core::config::{ClusterConfig, Suite};
use braid_core::keys::{write_secret_file, ClusterSecret, PresharedKey};

use super::netns::{ip, ip_in, sysctl_in};
use super::topology::{bridge_mac, Topology};
use super::{veth, WAN_BRIDGE};
use braid_sys::process::Detach;

/// charon as Debian installs it.
pub const CHARON: &str = "/usr/lib/ipsec/charon";
/// The plugins every lab charon loads (kernel-libipsec before kernel-netlink).
const PLUGINS: &str = "random nonce openssl aes sha1 sha2 hmac gcm chapoly curve25519 kdf pem pkcs1 x509 pubkey \
                       kernel-libipsec kernel-netlink socket-default vici counters";
/// How long a charon may take to answer on its vici socket.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the external-peer lab cannot run here, if it cannot.
pub fn check_strongswan() -> Result<()> {
    if !Path::new(CHARON).is_file() {
        bail!(
            "--external-peer strongswan needs strongSwan ({CHARON} is missing): apt-get install strongswan-charon \
             strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins libstrongswan-extra-plugins"
        );
    }
    Ok(())
}

/// The address of host b's link to external gateway `pair`, and of the gateway's end.
fn site_link(pair: u16) -> (Ipv4Addr, Ipv4Addr) {
    let net = (20 + pair) as u8;
    (Ipv4Addr::new(198, 18, net, 1), Ipv4Addr::new(198, 18, net, 2))
}

/// Builds every namespace and link of the external-peer lab.
pub fn build_network(topo: &Topology) -> Result<()> {
    let (ha, da, hb, wan) = (topo.host_ns("a"), topo.demux_ns("a"), topo.host_ns("b"), topo.wan_ns());
    let mut all = vec![wan.clone(), ha.clone(), da.clone(), hb.clone()];
    for pair in topo.pair_ids() {
        all.push(topo.gateway_ns("a", pair));
        all.push(topo.gateway_ns("b", pair));
    }
    for ns in &all {
        ip(&["netns", "add", ns])?;
        ip_in(ns, &["link", "set", "dev", "lo", "up"])?;
        for key in ["all", "default"] {
            sysctl_in(ns, &format!("net/ipv4/conf/{key}/rp_filter"), "0")?;
        }
    }
    super::wan_bridge(&wan)?;
    let a = topo.site("a");
    veth(&ha, "eth0", &da, "host")?;
    ip_in(&ha, &["addr", "add", &format!("{}/24", a.host), "dev", "eth0"])?;
    ip_in(&ha, &["route", "add", "default", "via", &a.router.to_string()])?;
    ip_in(&da, &["addr", "add", &format!("{}/24", a.router), "dev", "host"])?;
    ip_in(
        &da,
        &[
            "link",
            "add",
            "name",
            "br-lan",
            "address",
            &bridge_mac(1),
            "type",
            "bridge",
        ],
    )?;
    ip_in(&da, &["addr", "add", &format!("{}/24", a.lan), "dev", "br-lan"])?;
    ip_in(&da, &["link", "set", "dev", "br-lan", "up"])?;
    sysctl_in(&da, "net/ipv4/ip_forward", "1")?;
    let b = topo.site("b");
    ip_in(&hb, &["addr", "add", &format!("{}/32", b.host), "dev", "lo"])?;
    for pair in topo.pair_ids() {
        let (ga, gb) = (topo.gateway_ns("a", pair), topo.gateway_ns("b", pair));
        let lan_port = format!("lan{pair}");
        veth(&ga, "lan", &da, &lan_port)?;
        ip_in(&da, &["link", "set", "dev", &lan_port, "master", "br-lan"])?;
        ip_in(
            &ga,
            &[
                "addr",
                "add",
                &format!("{}/24", topo.gateway_lan("a", pair)),
                "dev",
                "lan",
            ],
        )?;
        for (site, ns) in [("a", &ga), ("b", &gb)] {
            let port = format!("{site}{pair}");
            veth(ns, "wan", &wan, &port)?;
            ip_in(&wan, &["link", "set", "dev", &port, "master", WAN_BRIDGE])?;
            ip_in(
                ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", topo.gateway_wan(site, pair)),
                    "dev",
                    "wan",
                ],
            )?;
        }
        let (gw_end, host_end) = site_link(pair);
        let host_if = format!("gw{pair}");
        veth(&gb, "site", &hb, &host_if)?;
        ip_in(&gb, &["addr", "add", &format!("{gw_end}/24"), "dev", "site"])?;
        ip_in(&hb, &["addr", "add", &format!("{host_end}/24"), "dev", &host_if])?;
        ip_in(
            &gb,
            &[
                "route",
                "add",
                &format!("{}/{}", b.prefix.0, b.prefix.1),
                "via",
                &host_end.to_string(),
            ],
        )?;
        sysctl_in(&gb, "net/ipv4/ip_forward", "1")?;
        // charon (kernel-libipsec) routes to site a from an address of its own inside its
        // traffic selector.
        let own = Ipv4Addr::new(198, 18, 2, (100 + pair) as u8);
        ip_in(&gb, &["addr", "add", &format!("{own}/32"), "dev", "lo"])?;
    }
    // Every reply to site a leaves through external gateway 1.
    let (first_gw, _) = site_link(1);
    ip_in(
        &hb,
        &[
            "route",
            "add",
            &format!("{}/{}", a.prefix.0, a.prefix.1),
            "via",
            &first_gw.to_string(),
        ],
    )?;
    Ok(())
}

/// Writes `cluster.yaml` (site b external, host b its canary), the secret and the PSK.
pub fn write_cluster(topo: &Topology, dir: &Path, metrics: SocketAddr) -> Result<PathBuf> {
    write_secret_file(&dir.join("secret.key"), &ClusterSecret::generate().to_base64())
        .context("cannot write the cluster secret")?;
    PresharedKey::generate()
        .write_new(&dir.join(super::cluster_file::PSK_FILE))
        .context("cannot write the pre-shared key")?;
    let (a, b) = (topo.site("a"), topo.site("b"));
    let mut yaml = String::new();
    let _ = writeln!(
        yaml,
        "# Generated by `braid lab up --external-peer strongswan` for lab {:?}.",
        topo.name
    );
    let _ = writeln!(
        yaml,
        "cluster:\n  name: lab-{}\n  secret_file: secret.key\n  mtu: 1400\n  suite: ipsec",
        topo.name
    );
    let _ = writeln!(
        yaml,
        "ipsec:\n  psk_file: {}\n  initiators: [a]\n  liveness_s: 2",
        super::cluster_file::PSK_FILE
    );
    let _ = writeln!(yaml, "{}", super::cluster_file::controller_section(dir, metrics));
    let _ = writeln!(yaml, "sites:\n  a:\n    prefixes: [{}/{}]", a.prefix.0, a.prefix.1);
    let _ = writeln!(
        yaml,
        "    demux:\n      tun: braid0\n      geneve: {}:6081\n      netns: {}",
        a.lan,
        topo.demux_ns("a")
    );
    let _ = writeln!(
        yaml,
        "  b:\n    external: true\n    prefixes: [{}/{}]\n    canary: {}",
        b.prefix.0, b.prefix.1, b.host
    );
    let _ = writeln!(yaml, "pairs:");
    for pair in topo.pair_ids() {
        let _ = writeln!(yaml, "  - id: {pair}\n    gateways:");
        let _ = writeln!(
            yaml,
            "      a:\n        geneve: {}:6081\n        wan: {}\n        netns: {}",
            topo.gateway_lan("a", pair),
            topo.gateway_wan_endpoint("a", pair, Suite::Ipsec),
            topo.gateway_ns("a", pair)
        );
        let _ = writeln!(
            yaml,
            "      b:\n        wan: {}",
            topo.gateway_wan_endpoint("b", pair, Suite::Ipsec)
        );
    }
    let path = dir.join("cluster.yaml");
    fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
    ClusterConfig::load(&path).map_err(|e| anyhow::anyhow!("the generated lab configuration is invalid: {e}"))?;
    Ok(path)
}

/// The directory of external gateway `pair`'s charon.
pub fn charon_dir(dir: &Path, pair: u16) -> PathBuf {
    dir.join("strongswan").join(format!("b{pair}"))
}

/// Starts one charon per external gateway, each with one connection to its braid gateway
/// (responder; braid initiates), and returns their pids.
pub fn start_charons(topo: &Topology, dir: &Path) -> Result<Vec<(u16, u32)>> {
    let psk = fs::read_to_string(dir.join(super::cluster_file::PSK_FILE))?;
    let psk = psk.trim_end_matches(['\r', '\n']);
    let (a, b) = (topo.site("a"), topo.site("b"));
    let mut pids = Vec::new();
    for pair in topo.pair_ids() {
        let cdir = charon_dir(dir, pair);
        let swanctl = cdir.join("swanctl");
        for sub in ["x509", "x509ca", "pubkey", "private", "rsa", "ecdsa", "pkcs8", "pkcs12"] {
            fs::create_dir_all(swanctl.join(sub))?;
        }
        let (local, remote) = (topo.gateway_wan("b", pair), topo.gateway_wan("a", pair));
        // charon runs in a private mount namespace where `cdir` is seen as /mnt and /run is a
        // fresh tmpfs (its pid file is /run/charon.pid, one per instance).
        let strongswan_conf = format!(
            "charon {{\n  load_modular = no\n  load = {PLUGINS}\n  install_routes = yes\n  port = 500\n  port_nat_t = 4500\n  \
             filelog {{\n    main {{\n      path = /mnt/charon.log\n      time_format = %H:%M:%S\n      default = 1\n      ike = 2\n      append = no\n      flush_line = yes\n    }}\n  }}\n  \
             syslog {{\n    daemon {{\n      default = -1\n    }}\n  }}\n  \
             plugins {{\n    vici {{\n      socket = unix:///mnt/charon.vici\n    }}\n    socket-default {{\n      use_ipv6 = no\n    }}\n  }}\n}}\n"
        );
        let swanctl_conf = format!(
            "connections {{\n  braid {{\n    version = 2\n    local_addrs = {local}\n    remote_addrs = {remote}\n    local_port = 4500\n    remote_port = 4500\n    encap = yes\n    \
             proposals = aes256gcm16-prfsha256-x25519\n    dpd_delay = 2s\n    local {{\n      auth = psk\n      id = {local}\n    }}\n    remote {{\n      auth = psk\n      id = {remote}\n    }}\n    \
             children {{\n      site {{\n        local_ts = {}/{}\n        remote_ts = {}/{}\n        esp_proposals = aes256gcm16\n        start_action = none\n      }}\n    }}\n  }}\n}}\n\
             secrets {{\n  ike-braid {{\n    id-1 = {local}\n    id-2 = {remote}\n    secret = \"{psk}\"\n  }}\n}}\n",
            b.prefix.0, b.prefix.1, a.prefix.0, a.prefix.1
        );
        fs::write(cdir.join("strongswan.conf"), strongswan_conf)?;
        fs::write(swanctl.join("swanctl.conf"), swanctl_conf)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cdir.join("charon.stderr"))?;
        let script = format!(
            "mount --bind {} /mnt && mount -t tmpfs -o mode=0755,size=4m braid-charon-run /run && exec {CHARON}",
            cdir.display()
        );
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.gateway_ns("b", pair),
                "unshare",
                "--mount",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", &script])
            .env("STRONGSWAN_CONF", "/mnt/strongswan.conf")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .detached()
            .spawn()
            .context("cannot start charon")?;
        pids.push((pair, child.id()));
        wait_and_load(&cdir)?;
    }
    Ok(pids)
}

/// Waits for a charon's vici socket, then loads its connection and secret.
fn wait_and_load(cdir: &Path) -> Result<()> {
    let uri = format!("unix://{}", cdir.join("charon.vici").display());
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let out = Command::new("swanctl")
            .args(["--load-all", "--noprompt", "--file"])
            .arg(cdir.join("swanctl").join("swanctl.conf"))
            .args(["--uri", &uri])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) if Instant::now() > deadline => bail!(
                "charon in {} did not load its connection: {}{}",
                cdir.display(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => bail!("cannot run swanctl: {e}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
