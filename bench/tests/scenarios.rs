//! Every scenario at a tiny scale (one or two pairs, a second or two of traffic), through the
//! `braid-bench` binary, so none of them can rot. They build real labs: they need root and the
//! release binaries (`cargo build --release`); without either they say so loudly and pass.
//! They run one at a time (the machine's cores are shared with the labs).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The directory holding release builds of every braid binary, when this test can build labs.
fn lab_bins() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: scenario tests need root to build network namespaces");
        return None;
    }
    let dir = std::env::var_os("BRAID_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release"));
    for bin in ["braid", "braid-demux", "braid-gw", "braid-bench"] {
        if !dir.join(bin).is_file() {
            eprintln!("SKIPPED: {} missing in {} (cargo build --release)", bin, dir.display());
            return None;
        }
    }
    Some(dir)
}

fn scenario(args: &[&str]) -> Option<Value> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bins = lab_bins()?;
    let out = Command::new(env!("CARGO_BIN_EXE_braid-bench"))
        .args(args)
        .env("BRAID_BIN_DIR", &bins)
        .output()
        .expect("braid-bench runs");
    assert!(
        out.status.success(),
        "braid-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("scenario prints JSON"))
}

#[test]
fn scale_with_a_cap_reports_efficiency() {
    let Some(r) = scenario(&[
        "scale",
        "--gateways",
        "1",
        "--cap",
        "100M",
        "--seconds",
        "2",
        "-P",
        "4",
        "--json",
    ]) else {
        return;
    };
    assert_eq!(r["cap_mbps"], 100.0);
    let point = &r["points"][0];
    assert_eq!(point["gateways"], 1);
    let mbps = point["mbps"].as_f64().unwrap();
    assert!(mbps > 10.0 && mbps < 110.0, "a 100 Mbit/s cap bounds one pair: {mbps}");
    let efficiency = point["efficiency"].as_f64().unwrap();
    assert!((efficiency - mbps / 100.0).abs() < 1e-9);
    // The WAN counters see the payload plus WireGuard's encapsulation, and the cap bounds them.
    let wire = point["wire_mbps"].as_f64().unwrap();
    assert!(wire > mbps * 1.03 && wire < 105.0, "payload {mbps}, wire {wire}");
}

#[test]
fn failover_times_the_recovery_and_keeps_a_series_per_flow() {
    let Some(r) = scenario(&[
        "failover",
        "--flows",
        "4",
        "--rate",
        "8M",
        "--seconds",
        "3",
        "--kill-at",
        "1",
        "--json",
    ]) else {
        return;
    };
    assert!(r["recovery"]["detected_ms"].is_u64(), "the kill was seen: {r}");
    let flows = r["timeline"]["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 4);
    assert!(
        flows.iter().all(|f| f["mbps"].as_array().unwrap().len() == 30),
        "3 s at 100 ms"
    );
}

#[test]
fn recluster_grows_and_drains_online() {
    let Some(r) = scenario(&["recluster", "--flows", "4", "--rate", "4M", "--seconds", "4", "--json"]) else {
        return;
    };
    assert_eq!(r["changes"].as_array().unwrap().len(), 2);
    assert_eq!(r["pair_tx_bytes"].as_array().unwrap().len(), 5, "pairs 4 and 5 existed");
    assert_eq!(r["old_flows"]["flows"].as_array().unwrap().len(), 4);
}

#[test]
fn flows_fill_the_flow_table() {
    let Some(r) = scenario(&[
        "flows",
        "--count",
        "3000",
        "--pps",
        "6000",
        "--seconds",
        "1.5",
        "--json",
    ]) else {
        return;
    };
    assert!(r["sender"]["sent"].as_u64().unwrap() > 3000);
    assert!(
        r["live_flows"].as_u64().unwrap() >= 3000,
        "every flow is in the table: {r}"
    );
    assert!(r["delivered"].as_u64().unwrap() > 0);
}

#[test]
fn baseline_measures_both_suites_and_each_installed_tunnel() {
    let Some(r) = scenario(&[
        "baseline",
        "-P",
        "2",
        "--seconds",
        "1",
        "--pairs",
        "1",
        "--udp-size",
        "64",
        "--udp-rate",
        "2M",
        "--json",
    ]) else {
        return;
    };
    let paths = r["paths"].as_array().unwrap();
    let skipped = r["skipped"].as_array().unwrap();
    // Both suites by default, WireGuard first, same pair count and traffic.
    assert_eq!(paths[0]["path"], "braid WireGuard (1 pair)");
    assert_eq!(paths[1]["path"], "braid IPsec (1 pair)");
    assert!(paths.iter().all(|p| p["braid_bench"]["mbps"].as_f64().unwrap() > 0.0));
    assert!(
        paths.len() + skipped.len() >= 5,
        "every implementation (boringtun-cli, gotatun, wireguard-go) measured or skipped: {r}"
    );
    // Every path measured, braid's and the baselines', carried the same small-packet UDP run.
    for path in paths {
        let udp = &path["udp"];
        assert_eq!(
            (udp["size"].as_u64(), udp["flows"].as_u64()),
            (Some(64), Some(2)),
            "{path}"
        );
        assert!(udp["received"].as_u64().unwrap() > 0, "{path}");
    }
    let baselines = paths.len() - 2;
    assert_eq!(r["braid_udp_ratio"].as_array().unwrap().len(), baselines, "{r}");
    let suites = r["suites"].as_array().unwrap();
    assert_eq!(suites.len(), 2);
    for (figures, suite) in suites.iter().zip(["wireguard", "ipsec"]) {
        assert_eq!(figures["suite"], suite);
        assert_eq!(figures["pairs"], 1);
        let udp = &figures["udp"];
        assert_eq!((udp["size"].as_u64(), udp["flows"].as_u64()), (Some(64), Some(2)));
        assert!(udp["received"].as_u64().unwrap() > 0, "{suite}: {udp}");
    }
    let tcp = suites[1]["tcp"]["mbps"].as_f64().unwrap() / suites[0]["tcp"]["mbps"].as_f64().unwrap();
    let ratios = &r["ipsec_over_wireguard"];
    assert!((ratios["tcp"].as_f64().unwrap() - tcp).abs() < 1e-9, "{ratios}");
    assert!(ratios["udp_pps"].as_f64().unwrap() > 0.0, "{ratios}");
    assert_eq!(r["braid_ratio_of"], "braid WireGuard (1 pair)");
}
