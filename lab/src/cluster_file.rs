//! The cluster YAML, keys and secret a lab runs from, written into the lab's state directory.
//! Every daemon is placed in its namespace through the `netns` fields, so the controller
//! (`braid up`) launches the whole lab like any other fleet.
//!
//! A WireGuard lab gets one private key per gateway; an IPsec lab gets one pre-shared key for
//! the whole cluster ([`PSK_FILE`]) and no WireGuard keys, and its gateways listen on port 4500.
//! An IPsec lab may also set its SA lifetimes ([`IpsecLabOptions`]); their ranges are checked by
//! the configuration's own validation when the file is loaded back.
//!
//! The file is generated as text in the documented schema and then loaded back through
//! [`ClusterConfig::load`], so the lab runs from exactly what an operator would write.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use braid_core::config::{ClusterConfig, Suite};
use braid_core::keys::{write_secret_file, ClusterSecret, PresharedKey, PrivateKey};

use super::topology::{Topology, SITES};

/// The IPsec pre-shared key file of a lab, in its state directory.
pub const PSK_FILE: &str = "ipsec.psk";
/// The controller's admin socket, in the lab's state directory.
pub const ADMIN_SOCKET: &str = "admin.sock";
/// The controller's persistent state (`controller.state_dir`), under the lab's state directory.
pub const CONTROLLER_STATE_DIR: &str = "state";

/// The `controller:` section of a lab's cluster file: every socket and state in `dir`, HTTP on
/// `metrics`.
pub fn controller_section(dir: &Path, metrics: SocketAddr) -> String {
    format!(
        "controller:\n  address: unix:{}\n  metrics: {metrics}\n  admin_socket: {}\n  state_dir: {}",
        dir.join("control.sock").display(),
        dir.join(ADMIN_SOCKET).display(),
        dir.join(CONTROLLER_STATE_DIR).display()
    )
}

/// What an IPsec lab's cluster file sets in its `ipsec:` section: the SA lifetimes
/// (`child_lifetime_s`, `ike_lifetime_s`, seconds; `None` leaves the field out, so the
/// configuration's default applies: CHILD 1 h, IKE 4 h) and whether gateways seal on a thread
/// of their own (`seal_thread`, written only when set). Only an IPsec lab takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpsecLabOptions {
    pub child_lifetime_s: Option<u64>,
    pub ike_lifetime_s: Option<u64>,
    pub seal_thread: bool,
}

impl IpsecLabOptions {
    /// Whether either lifetime is set.
    pub fn is_set(&self) -> bool {
        self.child_lifetime_s.is_some() || self.ike_lifetime_s.is_some()
    }

    /// Refuses IPsec options for a suite they do not apply to: WireGuard rekeys on the
    /// protocol's fixed timers, and its session is one state on one thread.
    pub fn check_suite(&self, suite: Suite) -> Result<()> {
        if suite == Suite::Ipsec {
            return Ok(());
        }
        if self.is_set() {
            bail!(
                "--child-lifetime and --ike-lifetime set IPsec SA lifetimes and need --suite ipsec; \
                 a {suite} lab has none to set (WireGuard rekeys on its own fixed 120 s timer)"
            );
        }
        if self.seal_thread {
            bail!(
                "--seal-thread needs --suite ipsec: a {suite} gateway seals and opens on one thread \
                 (boringtun's session is one state for both directions)"
            );
        }
        Ok(())
    }

    /// What a lab's cluster file says, as the lifetimes to write again when it is rewritten
    /// (a scale): a lifetime equal to the configuration's default is left out, as it means the
    /// same either way.
    pub fn of(config: &ClusterConfig) -> IpsecLabOptions {
        use braid_core::config::{DEFAULT_CHILD_LIFETIME_S, DEFAULT_IKE_LIFETIME_S};
        let Some(ipsec) = config.cluster.ipsec.as_ref() else {
            return IpsecLabOptions::default();
        };
        IpsecLabOptions {
            child_lifetime_s: Some(ipsec.child_lifetime_s).filter(|s| *s != DEFAULT_CHILD_LIFETIME_S),
            ike_lifetime_s: Some(ipsec.ike_lifetime_s).filter(|s| *s != DEFAULT_IKE_LIFETIME_S),
            seal_thread: ipsec.seal_thread,
        }
    }
}

/// The data threads a lab's cluster file gives both demuxes (`sites.<site>.demux.data_threads`),
/// as the value to write again when it is rewritten (a scale); `None` when it sets none (one
/// per CPU core). A lab writes one value for both sites; a file whose sites differ (edited by
/// hand) is refused, since a rewrite would lose one of them.
pub fn data_threads_of(config: &ClusterConfig) -> Result<Option<u16>> {
    let mut values = config
        .sites
        .values()
        .filter_map(|site| site.demux.as_ref())
        .map(|demux| demux.data_threads);
    let first = values.next().flatten();
    if values.any(|v| v != first) {
        bail!(
            "the lab's sites run different demux data_threads; set one value for both sites before rewriting the file"
        );
    }
    Ok(first.map(|n| u16::try_from(n).unwrap_or(u16::MAX)))
}

/// Writes (or rewrites, for a scale) `cluster.yaml` under `dir` for a lab of `suite`, with the
/// cluster secret and the suite's keys (one private key per WireGuard gateway, or one IPsec
/// pre-shared key) created on first use and kept afterwards, the IPsec options in `ipsec` if
/// set (refused for WireGuard), each site's demux running `data_threads` data threads if set (else
/// the configuration's default, one per CPU core; the range is checked when the file is loaded
/// back), and the controller listening on a unix socket in `dir` with its HTTP endpoint on
/// `metrics`, its admin socket and its state directory in `dir` too — or, in a lab with a
/// controller set recorded in `dir` ([`super::controller_set`]), every member of the set and
/// its etcd cluster. Returns the YAML's path.
pub fn write_lab_cluster(
    topo: &Topology,
    dir: &Path,
    metrics: SocketAddr,
    suite: Suite,
    ipsec: IpsecLabOptions,
    data_threads: Option<u16>,
) -> Result<PathBuf> {
    ipsec.check_suite(suite)?;
    if suite == Suite::WireGuard {
        let keys_dir = dir.join("keys");
        fs::create_dir_all(&keys_dir).with_context(|| format!("cannot create {}", keys_dir.display()))?;
    }
    let secret = dir.join("secret.key");
    if !secret.exists() {
        write_secret_file(&secret, &ClusterSecret::generate().to_base64())
            .context("cannot write the cluster secret")?;
    }

    let mut yaml = String::new();
    let _ = writeln!(yaml, "# Generated by `braid lab up` for lab {:?}.", topo.name);
    let _ = writeln!(
        yaml,
        "cluster:\n  name: lab-{}\n  secret_file: secret.key\n  mtu: 1420\n  suite: {suite}",
        topo.name
    );
    if suite == Suite::Ipsec {
        preshared_key(&dir.join(PSK_FILE))?;
        let _ = writeln!(yaml, "ipsec:\n  psk_file: {PSK_FILE}");
        if let Some(seconds) = ipsec.child_lifetime_s {
            let _ = writeln!(yaml, "  child_lifetime_s: {seconds}");
        }
        if let Some(seconds) = ipsec.ike_lifetime_s {
            let _ = writeln!(yaml, "  ike_lifetime_s: {seconds}");
        }
        if ipsec.seal_thread {
            let _ = writeln!(yaml, "  seal_thread: true");
        }
    }
    let controller = match super::controller_set::ControllerSet::load(dir)? {
        Some(set) => set.section(dir),
        None => controller_section(dir, metrics),
    };
    let _ = writeln!(yaml, "{controller}");
    let _ = writeln!(yaml, "sites:");
    for site in SITES {
        let s = topo.site(site);
        let _ = writeln!(yaml, "  {site}:");
        let _ = writeln!(yaml, "    prefixes: [{}/{}]", s.prefix.0, s.prefix.1);
        let _ = writeln!(yaml, "    demux:\n      tun: braid0\n      geneve: {}:6081", s.lan);
        let _ = writeln!(yaml, "      netns: {}", topo.demux_ns(site));
        if let Some(threads) = data_threads {
            let _ = writeln!(yaml, "      data_threads: {threads}");
        }
    }
    let _ = writeln!(yaml, "pairs:");
    for pair in topo.pair_ids() {
        let _ = writeln!(yaml, "  - id: {pair}\n    gateways:");
        for site in SITES {
            let _ = writeln!(yaml, "      {site}:");
            let _ = writeln!(yaml, "        geneve: {}:6081", topo.gateway_lan(site, pair));
            let _ = writeln!(yaml, "        wan: {}", topo.gateway_wan_endpoint(site, pair, suite));
            if let Some(listen) = topo.gateway_wan_listen(site, pair, suite) {
                let _ = writeln!(yaml, "        wan_listen: {listen}");
            }
            if suite == Suite::WireGuard {
                let key_file = format!("keys/{site}{pair}.key");
                let key = gateway_key(&dir.join(&key_file))?;
                let _ = writeln!(yaml, "        public_key: \"{}\"", key.public_key().to_base64());
                let _ = writeln!(yaml, "        private_key_file: {key_file}");
            }
            let _ = writeln!(yaml, "        netns: {}", topo.gateway_ns(site, pair));
        }
    }
    let path = dir.join("cluster.yaml");
    fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
    ClusterConfig::load(&path).map_err(|e| anyhow::anyhow!("the generated lab configuration is invalid: {e}"))?;
    Ok(path)
}

/// Makes the lab's pre-shared key at `path` (mode 0600) unless it is there already: the key is
/// kept across scale operations, so running pairs keep authenticating.
fn preshared_key(path: &Path) -> Result<()> {
    if path.exists() {
        PresharedKey::load(path).with_context(|| format!("cannot load {}", path.display()))?;
        return Ok(());
    }
    PresharedKey::generate()
        .write_new(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The private key in `path`, generated there (mode 0600) if there is none yet: a gateway keeps
/// its key across scale operations, and no two gateways ever share one.
fn gateway_key(path: &Path) -> Result<PrivateKey> {
    if path.exists() {
        return PrivateKey::load(path).with_context(|| format!("cannot load {}", path.display()));
    }
    let key = PrivateKey::generate();
    write_secret_file(path, &key.to_base64()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use braid_core::testing::ScratchDir;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    const METRICS: &str = "127.0.0.1:19477";

    #[test]
    fn ipsec_lab_file_validates_with_port_4500_and_a_private_psk() {
        let dir = ScratchDir::new("lab-file-ipsec");
        let topo = Topology::new("t", 2).unwrap();
        let path = write_lab_cluster(
            &topo,
            &dir.0,
            METRICS.parse().unwrap(),
            Suite::Ipsec,
            IpsecLabOptions::default(),
            None,
        )
        .unwrap();
        let cfg = ClusterConfig::load(&path).unwrap();
        assert_eq!(cfg.cluster.suite, Suite::Ipsec);
        let ipsec = cfg.cluster.ipsec.as_ref().unwrap();
        assert_eq!(ipsec.psk_file, dir.0.join(PSK_FILE));
        assert_eq!(mode_of(&ipsec.psk_file), 0o600);
        let psk = PresharedKey::load(&ipsec.psk_file).unwrap();
        assert_eq!(psk.as_bytes().len(), 44, "32 random bytes in base64");
        assert_eq!(cfg.pairs.len(), 2);
        for pair in &cfg.pairs {
            for (site, gw) in &pair.gateways {
                assert_eq!(gw.wan, topo.gateway_wan_endpoint(site, pair.id, Suite::Ipsec));
                assert_eq!(gw.wan.port(), 4500);
                assert_eq!((gw.public_key, gw.private_key_file.as_ref()), (None, None));
                assert_eq!(gw.netns.as_deref(), Some(topo.gateway_ns(site, pair.id).as_str()));
            }
        }
        assert!(!dir.0.join("keys").exists(), "an IPsec lab makes no WireGuard keys");
        assert_eq!(cfg.controller.admin_socket, dir.0.join(ADMIN_SOCKET));
        assert_eq!(cfg.controller.state_dir, dir.0.join(CONTROLLER_STATE_DIR));

        // Scaling rewrites the file and keeps the key.
        let bigger = Topology::new("t", 3).unwrap();
        write_lab_cluster(
            &bigger,
            &dir.0,
            METRICS.parse().unwrap(),
            Suite::Ipsec,
            IpsecLabOptions::default(),
            None,
        )
        .unwrap();
        assert_eq!(ClusterConfig::load(&path).unwrap().pairs.len(), 3);
        assert_eq!(PresharedKey::load(&ipsec.psk_file).unwrap().as_bytes(), psk.as_bytes());
    }

    #[test]
    fn wireguard_lab_file_validates_with_port_51820_and_keys() {
        let dir = ScratchDir::new("lab-file-wg");
        let topo = Topology::new("t", 2).unwrap();
        let path = write_lab_cluster(
            &topo,
            &dir.0,
            METRICS.parse().unwrap(),
            Suite::WireGuard,
            IpsecLabOptions::default(),
            None,
        )
        .unwrap();
        let cfg = ClusterConfig::load(&path).unwrap();
        assert_eq!(
            (cfg.cluster.suite, cfg.cluster.ipsec.as_ref()),
            (Suite::WireGuard, None)
        );
        assert!(!dir.0.join(PSK_FILE).exists());
        for pair in &cfg.pairs {
            for gw in pair.gateways.values() {
                assert_eq!(gw.wan.port(), 51820);
                let key_file = gw.private_key_file.as_ref().unwrap();
                assert_eq!(mode_of(key_file), 0o600);
                assert_eq!(Some(PrivateKey::load(key_file).unwrap().public_key()), gw.public_key);
            }
        }
    }

    #[test]
    fn data_threads_reach_every_demux_and_are_read_back_for_a_rewrite() {
        let dir = ScratchDir::new("lab-file-threads");
        let topo = Topology::new("t", 2).unwrap();
        let write = |threads| {
            write_lab_cluster(
                &topo,
                &dir.0,
                METRICS.parse().unwrap(),
                Suite::WireGuard,
                IpsecLabOptions::default(),
                threads,
            )
            .map(|path| ClusterConfig::load(&path).unwrap())
        };
        let cfg = write(Some(2)).unwrap();
        for (site, s) in &cfg.sites {
            assert_eq!(s.demux.as_ref().unwrap().data_threads, Some(2), "site {site}");
        }
        assert_eq!(data_threads_of(&cfg).unwrap(), Some(2));
        let cfg = write(None).unwrap();
        assert!(cfg
            .sites
            .values()
            .all(|s| s.demux.as_ref().unwrap().data_threads.is_none()));
        assert_eq!(data_threads_of(&cfg).unwrap(), None);
        let error = format!("{:#}", write(Some(257)).unwrap_err());
        assert!(error.contains("data_threads"), "{error}");

        // Sites edited by hand to differ: a rewrite would lose one of them, so it is refused.
        let path = dir.0.join("cluster.yaml");
        write(Some(2)).unwrap();
        let yaml = fs::read_to_string(&path)
            .unwrap()
            .replacen("data_threads: 2", "data_threads: 3", 1);
        fs::write(&path, yaml).unwrap();
        let error = format!(
            "{:#}",
            data_threads_of(&ClusterConfig::load(&path).unwrap()).unwrap_err()
        );
        assert!(error.contains("different demux data_threads"), "{error}");
    }
}
