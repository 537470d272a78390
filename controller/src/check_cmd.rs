//! `braid check -c FILE`: validates a cluster file and summarises what it describes.
//!
//! For an IPsec cluster it also loads the pre-shared key file (it must be mode 0600 and hold one
//! line of text), since every gateway of both sites needs it; WireGuard private keys are checked
//! only with `--keys`, since each lives only on its gateway's host; so is the controller's admin
//! key, which lives only where the controller runs.

use std::path::Path;

use anyhow::{bail, Result};
use braid_core::config::{ClusterConfig, IpsecConfig, Suite};
use braid_core::keys::{AdminKey, PresharedKey, PrivateKey};

/// Loads and validates `path`; for IPsec also the pre-shared key file. With `keys`, also loads
/// every WireGuard private key file the config names and checks it belongs to the configured
/// public key.
pub fn check(path: &Path, keys: bool) -> Result<()> {
    let cfg = ClusterConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(ipsec) = &cfg.cluster.ipsec {
        check_psk(path, ipsec)?;
    }
    println!("{}: cluster {:?} is valid", path.display(), cfg.cluster.name);
    for (name, site) in &cfg.sites {
        let prefixes: Vec<String> = site.prefixes.iter().map(|p| p.to_string()).collect();
        match (&site.demux, &site.external) {
            (Some(demux), _) => println!(
                "  site {name}: prefixes {}, demux {} (tun {})",
                prefixes.join(", "),
                demux.geneve,
                demux.tun
            ),
            (None, Some(external)) => println!(
                "  site {name}: prefixes {}, external (runs no braid: its gateways are standard IPsec \
                 endpoints, each pair judged by the other site's gateway heartbeat, its IKE/ESP session \
                 and ICMP echo canaries to {})",
                prefixes.join(", "),
                external.canary
            ),
            (None, None) => {}
        }
    }
    println!(
        "  {} gateway pair(s), suite {}, MTU {}, Maglev table {}",
        cfg.pairs.len(),
        cfg.cluster.suite,
        cfg.cluster.mtu,
        cfg.cluster.maglev_table_size
    );
    if let Some(ipsec) = &cfg.cluster.ipsec {
        print_ipsec(ipsec);
    }
    print_nat(&cfg);
    let controller = &cfg.controller;
    let remote = match controller.admin_listen {
        Some(addr) => format!("; signed remote administration on {addr}"),
        None => String::new(),
    };
    println!(
        "  controller: HTTP {} (read-only), admin socket {} (root and the controller's user){remote}, state {}",
        controller.metrics,
        controller.admin_socket.display(),
        controller.state_dir.display()
    );
    if !keys {
        return Ok(());
    }
    if let Some(file) = &controller.admin_key_file {
        if let Err(e) = AdminKey::load(file) {
            bail!("{}: controller.admin_key_file: {e}", path.display());
        }
        println!("  the admin key file is present and private");
    }
    match cfg.cluster.suite {
        Suite::WireGuard => check_private_keys(path, &cfg)?,
        Suite::Ipsec => {
            println!("  suite ipsec: gateways authenticate with the pre-shared key; no private key files to check")
        }
    }
    Ok(())
}

/// Loads the pre-shared key file: present, private and one line of text.
fn check_psk(path: &Path, ipsec: &IpsecConfig) -> Result<()> {
    if let Err(e) = PresharedKey::load(&ipsec.psk_file) {
        bail!("{}: ipsec.psk_file: {e}", path.display());
    }
    Ok(())
}

/// The control address, and every address bound locally in place of the advertised one
/// (behind a 1:1 NAT).
fn print_nat(cfg: &ClusterConfig) {
    let controller = &cfg.controller;
    match controller.listen {
        Some(listen) => println!(
            "  control messages to {}, bound locally at {listen} (behind NAT)",
            controller.address
        ),
        None => println!("  control messages to {}", controller.address),
    }
    for pair in &cfg.pairs {
        for (site, gw) in &pair.gateways {
            if let Some(listen) = gw.wan_listen {
                println!(
                    "  gateway {site}{}: peers send to {}, bound locally at {listen} (behind NAT)",
                    pair.id, gw.wan
                );
            }
        }
    }
}

fn print_ipsec(ipsec: &IpsecConfig) {
    let list = |items: Vec<String>| items.join(", ");
    println!(
        "  IPsec: pre-shared key {} (present, private, one line)",
        ipsec.psk_file.display()
    );
    println!(
        "    IKE proposals {}",
        list(ipsec.ike_proposals.iter().map(ToString::to_string).collect())
    );
    println!(
        "    ESP proposals {}",
        list(ipsec.esp_proposals.iter().map(ToString::to_string).collect())
    );
    println!(
        "    lifetimes IKE {} s, CHILD {} s; replay window {} packets; liveness check every {} s",
        ipsec.ike_lifetime_s, ipsec.child_lifetime_s, ipsec.replay_window, ipsec.liveness_s
    );
    println!(
        "    data threads per gateway: {}",
        if ipsec.seal_thread {
            "2 (ESP sealed on a thread of its own)"
        } else {
            "1"
        }
    );
}

fn check_private_keys(path: &Path, cfg: &ClusterConfig) -> Result<()> {
    let mut problems = Vec::new();
    for pair in &cfg.pairs {
        for (site, gw) in &pair.gateways {
            let field = format!("pairs[id={}].gateways.{site}", pair.id);
            // Validation guarantees a public key on every WireGuard gateway.
            let Some(public_key) = gw.public_key else {
                problems.push(format!("{field}.public_key: not set"));
                continue;
            };
            match &gw.private_key_file {
                None => problems.push(format!("{field}.private_key_file: not set")),
                Some(file) => match PrivateKey::load(file) {
                    Err(e) => problems.push(format!("{field}.private_key_file: {e}")),
                    Ok(k) if k.public_key() != public_key => problems.push(format!(
                        "{field}: the key in {} does not belong to public_key {public_key}",
                        file.display(),
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
    Ok(())
}
