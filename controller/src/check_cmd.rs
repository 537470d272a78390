//! `braid check -c FILE`: validates a cluster file and summarises what it describes.

use std::path::Path;

use anyhow::{bail, Result};
use braid_core::config::ClusterConfig;
use braid_core::keys::PrivateKey;

/// Loads and validates `path`; with `keys`, also loads every private key file the config names
/// and checks it belongs to the configured public key.
pub fn check(path: &Path, keys: bool) -> Result<()> {
    let cfg = ClusterConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}: cluster {:?} is valid", path.display(), cfg.cluster.name);
    for (name, site) in &cfg.sites {
        let prefixes: Vec<String> = site.prefixes.iter().map(|p| p.to_string()).collect();
        println!(
            "  site {name}: prefixes {}, demux {} (tun {})",
            prefixes.join(", "),
            site.demux.geneve,
            site.demux.tun
        );
    }
    println!(
        "  {} gateway pair(s), MTU {}, Maglev table {}",
        cfg.pairs.len(),
        cfg.cluster.mtu,
        cfg.cluster.maglev_table_size
    );
    if keys {
        let mut problems = Vec::new();
        for pair in &cfg.pairs {
            for (site, gw) in &pair.gateways {
                let field = format!("pairs[id={}].gateways.{site}", pair.id);
                match &gw.private_key_file {
                    None => problems.push(format!("{field}.private_key_file: not set")),
                    Some(file) => match PrivateKey::load(file) {
                        Err(e) => problems.push(format!("{field}.private_key_file: {e}")),
                        Ok(k) if k.public_key().as_bytes() != gw.public_key.as_bytes() => problems.push(format!(
                            "{field}: the key in {} does not belong to public_key {}",
                            file.display(),
                            gw.public_key
                        )),
                        Ok(_) => {}
                    },
                }
            }
        }
        if !problems.is_empty() {
            bail!("{}: key problems:\n  {}", path.display(), problems.join("\n  "));
        }
        println!("  every private key file is present, private, and matches its public key");
    }
    Ok(())
}
