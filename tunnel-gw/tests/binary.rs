//! The `braid-gw` binary against a cluster file: two gateways on loopback bring their session up,
//! report it in their status files and exit cleanly on SIGTERM; bad key setups fail with an
//! error that names the file and the field.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use braid_core::keys::{write_secret_file, ClusterSecret, PrivateKey};
use braid_core::testing::{free_udp_port, ScratchDir};

/// Writes a two-site, one-pair cluster file. `a_public` overrides site a's published key;
/// `b_key_file` false leaves site b's private_key_file out.
fn write_cluster(dir: &Path, a_public: Option<String>, b_key_file: bool) -> PathBuf {
    write_secret_file(&dir.join("secret.key"), &ClusterSecret::generate().to_base64()).unwrap();
    let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
    write_secret_file(&dir.join("a.key"), &a.to_base64()).unwrap();
    write_secret_file(&dir.join("b.key"), &b.to_base64()).unwrap();
    let a_public = a_public.unwrap_or_else(|| a.public_key().to_base64());
    let b_key_line = if b_key_file { "private_key_file: b.key" } else { "" };
    let [demux_a, demux_b, lan_a, lan_b, wan_a, wan_b] = [(); 6].map(|_| free_udp_port());
    let yaml = format!(
        r#"
cluster:
  name: gw-test
  secret_file: secret.key
sites:
  a:
    prefixes: [198.18.1.0/24]
    demux: {{ tun: braid0, geneve: "127.0.0.1:{demux_a}" }}
  b:
    prefixes: [198.18.2.0/24]
    demux: {{ tun: braid0, geneve: "127.0.0.1:{demux_b}" }}
pairs:
  - id: 3
    gateways:
      a:
        geneve: "127.0.0.1:{lan_a}"
        wan: "127.0.0.1:{wan_a}"
        public_key: "{a_public}"
        private_key_file: a.key
      b:
        geneve: "127.0.0.1:{lan_b}"
        wan: "127.0.0.1:{wan_b}"
        public_key: "{}"
        {b_key_line}
"#,
        b.public_key().to_base64()
    );
    let path = dir.join("cluster.yaml");
    fs::write(&path, yaml).unwrap();
    // The gateways' role keys, as a controller would write them (a file with a broken key
    // line has none: the gateway must refuse it before it looks for them).
    if let Ok(cfg) = braid_core::config::ClusterConfig::load(&path) {
        let secret = ClusterSecret::load(&cfg.cluster.secret_file).unwrap();
        braid_core::keys::provision::ensure_all(&cfg, &secret).unwrap();
    }
    path
}

fn gateway(config: &Path, site: &str, status: Option<&Path>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_braid-gw"));
    command.args(["--site", site, "--pair", "3", "--config"]).arg(config);
    if let Some(status) = status {
        command.arg("--status-file").arg(status);
    }
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

fn read_status(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&fs::read_to_string(path).ok()?).ok()
}

fn terminate(child: &mut Child) -> Output {
    // SAFETY: `kill` with a child's own pid and SIGTERM has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "gateway ignored SIGTERM");
        thread::sleep(Duration::from_millis(20));
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: stderr.into_bytes(),
    }
}

#[test]
fn two_gateway_processes_bring_the_pair_up_and_stop_on_sigterm() {
    let dir = ScratchDir::new("gw-up");
    let config = write_cluster(&dir.0, None, true);
    let (status_a, status_b) = (dir.0.join("a.json"), dir.0.join("b.json"));
    let mut a = gateway(&config, "a", Some(&status_a)).spawn().unwrap();
    let mut b = gateway(&config, "b", Some(&status_b)).spawn().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let up = |path: &Path| read_status(path).is_some_and(|s| s["session_established"] == true);
    while !(up(&status_a) && up(&status_b)) {
        assert!(
            Instant::now() < deadline,
            "pair did not come up: {:?}",
            read_status(&status_a)
        );
        thread::sleep(Duration::from_millis(50));
    }
    let status = read_status(&status_a).unwrap();
    assert_eq!(status["role"], "gw");
    assert_eq!(status["site"], "a");
    assert_eq!(status["pair"], 3);
    assert_eq!(status["pid"], a.id());
    assert!(status["handshake_age_ms"].as_u64().unwrap() < 10_000);
    assert!(status["counters"]["wan_rx_packets"].as_u64().unwrap() >= 1);

    for child in [&mut a, &mut b] {
        let output = terminate(child);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "exit {:?}: {stderr}", output.status);
        assert!(!stderr.contains(&fs::read_to_string(dir.0.join("a.key")).unwrap().trim().to_string()));
    }
}

#[test]
fn a_private_key_that_does_not_match_the_published_key_is_refused() {
    let dir = ScratchDir::new("gw-mismatch");
    let config = write_cluster(&dir.0, Some(PrivateKey::generate().public_key().to_base64()), true);
    let output = gateway(&config, "a", None).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("a.key"), "{stderr}");
    assert!(stderr.contains("gateways.a.public_key"), "{stderr}");
}

#[test]
fn a_gateway_without_its_private_key_file_is_refused() {
    let dir = ScratchDir::new("gw-nokey");
    let config = write_cluster(&dir.0, None, false);
    let output = gateway(&config, "b", None).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("gateways.b.private_key_file is not set"), "{stderr}");
}
