//! Which daemons a controller runs, and how to launch each: a pure function of the cluster
//! configuration, the sites this host runs and where the binaries and logs live.

use std::path::{Path, PathBuf};

use braid_core::config::ClusterConfig;
use braid_core::control::DaemonId;

use crate::health::{DaemonKey, SiteIndex};

/// How to launch one daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec {
    pub key: DaemonKey,
    /// The site's name in the configuration.
    pub site: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The network namespace to run in, if the configuration names one.
    pub netns: Option<String>,
    pub log: PathBuf,
    pub status_file: PathBuf,
}

impl DaemonSpec {
    /// A short name for logs and files: `demux-a`, `gw-a3`.
    pub fn name(&self) -> String {
        match self.key.role {
            crate::health::Role::Demux => format!("demux-{}", self.site),
            crate::health::Role::Gateway(pair) => format!("gw-{}{pair}", self.site),
        }
    }

    /// Its identity in the control protocol.
    pub fn daemon_id(&self) -> DaemonId {
        match self.key.role {
            crate::health::Role::Demux => DaemonId::demux(&self.site),
            crate::health::Role::Gateway(pair) => DaemonId::gateway(&self.site, pair),
        }
    }
}

/// The index of `site` in the configuration's (ordered) site list.
pub fn site_index(cfg: &ClusterConfig, site: &str) -> Option<SiteIndex> {
    cfg.sites.keys().position(|s| s == site).map(|i| i as SiteIndex)
}

/// The name of site `index`.
pub fn site_name(cfg: &ClusterConfig, index: SiteIndex) -> &str {
    cfg.sites
        .keys()
        .nth(usize::from(index))
        .map(String::as_str)
        .unwrap_or("?")
}

/// Every daemon of `sites` (all sites when empty): one demux per site, one gateway per site and
/// pair, in a stable order (site, then demux before gateways, then pair id).
pub fn fleet(cfg: &ClusterConfig, sites: &[String], bin_dir: &Path, state_dir: &Path) -> Vec<DaemonSpec> {
    let mut out = Vec::new();
    for (index, (site, site_cfg)) in cfg.sites.iter().enumerate() {
        if !sites.is_empty() && !sites.contains(site) {
            continue;
        }
        let site_index = index as SiteIndex;
        // An external site runs no braid: nothing to launch or watch there.
        let Some(demux) = &site_cfg.demux else {
            continue;
        };
        out.push(spec(
            cfg,
            DaemonKey::demux(site_index),
            site,
            demux.netns.clone(),
            bin_dir,
            state_dir,
        ));
        for pair in &cfg.pairs {
            let netns = pair.gateways.get(site).and_then(|g| g.netns.clone());
            out.push(spec(
                cfg,
                DaemonKey::gateway(site_index, pair.id),
                site,
                netns,
                bin_dir,
                state_dir,
            ));
        }
    }
    out
}

/// Why `sites` (all sites when empty) cannot all run their demux on one host: two of them name
/// the same TUN device in the same network namespace, so the second would attach to the
/// first's device and the sites would steal each other's packets. `None` when they can.
pub fn clashing_tuns(cfg: &ClusterConfig, sites: &[String]) -> Option<String> {
    let mut seen: Vec<(&str, Option<&str>, &str)> = Vec::new();
    for (site, site_cfg) in &cfg.sites {
        if !sites.is_empty() && !sites.contains(site) {
            continue;
        }
        let Some(demux) = &site_cfg.demux else {
            continue;
        };
        let here = (demux.tun.as_str(), demux.netns.as_deref());
        if let Some((_, _, other)) = seen.iter().find(|(tun, netns, _)| (*tun, *netns) == here) {
            let place = here.1.map_or("the host's network namespace".to_string(), |n| {
                format!("network namespace {n}")
            });
            return Some(format!(
                "sites {other} and {site} would both run their demux on TUN {} in {place}: run one site per \
                 host (`--site NAME`), or give the demuxes different `tun` names or each a `netns`",
                here.0
            ));
        }
        seen.push((here.0, here.1, site));
    }
    None
}

fn spec(
    cfg: &ClusterConfig,
    key: DaemonKey,
    site: &str,
    netns: Option<String>,
    bin_dir: &Path,
    state_dir: &Path,
) -> DaemonSpec {
    let mut spec = DaemonSpec {
        key,
        site: site.to_string(),
        program: PathBuf::new(),
        args: vec![
            "--config".into(),
            cfg.path.display().to_string(),
            "--site".into(),
            site.to_string(),
        ],
        netns,
        log: PathBuf::new(),
        status_file: PathBuf::new(),
    };
    let program = match key.role {
        crate::health::Role::Demux => "braid-demux",
        crate::health::Role::Gateway(pair) => {
            spec.args.extend(["--pair".into(), pair.to_string()]);
            "braid-gw"
        }
    };
    spec.program = bin_dir.join(program);
    let name = spec.name();
    spec.log = state_dir.join("logs").join(format!("{name}.log"));
    spec.status_file = state_dir.join("status").join(format!("{name}.json"));
    spec.args
        .extend(["--status-file".into(), spec.status_file.display().to_string()]);
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_demuxes_on_one_tun_in_one_namespace_are_refused() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/two-site.yaml");
        let cfg = ClusterConfig::load(&example).expect("the example parses");
        // Both sites name braid0 and no netns: fine one per host, not both on one.
        let problem = clashing_tuns(&cfg, &[]).expect("a clash");
        assert!(problem.contains("braid0") && problem.contains("--site"), "{problem}");
        assert_eq!(clashing_tuns(&cfg, &["a".to_string()]), None);
        let mut apart = cfg.clone();
        apart.sites.get_mut("b").unwrap().demux.as_mut().unwrap().netns = Some("site-b".into());
        assert_eq!(clashing_tuns(&apart, &[]), None);
    }
}
