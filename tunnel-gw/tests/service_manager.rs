//! `braid-gw` under a service manager: a real unix datagram socket plays systemd's end of
//! `sd_notify`. The gateway says `READY=1` once serving, then feeds the watchdog at half the
//! `WATCHDOG_USEC` it was given, and says `STOPPING=1` on SIGTERM; a `WATCHDOG_PID` naming
//! another process means the watchdog is not its business. Its keys can come from
//! `$CREDENTIALS_DIRECTORY` laid out as systemd does (group-readable through an ACL), while the
//! same mode on the configured key file is still refused.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use braid_core::keys::{provision, write_secret_file, ClusterSecret, PrivateKey};
use braid_core::service::NotifyListener;
use braid_core::testing::{free_udp_port, ScratchDir};

/// A test's gateways, killed before their scratch directory goes.
struct Scratch {
    children: Vec<Child>,
    name: String,
    dir: ScratchDir,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        Scratch {
            children: Vec::new(),
            name: name.to_string(),
            dir: ScratchDir::new(&format!("gw-notify-{name}")),
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A one-pair cluster on loopback; returns the cluster file.
fn cluster(dir: &Path, name: &str) -> PathBuf {
    write_secret_file(&dir.join("secret.key"), &ClusterSecret::generate().to_base64()).unwrap();
    let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
    write_secret_file(&dir.join("a.key"), &a.to_base64()).unwrap();
    let [demux_a, demux_b, lan_a, lan_b, wan_a, wan_b] = [(); 6].map(|_| free_udp_port());
    let yaml = format!(
        r#"
cluster: {{ name: notify-{name}, secret_file: secret.key }}
controller: {{ address: "unix:{dir}/control.sock" }}
sites:
  a: {{ prefixes: [198.18.1.0/24], demux: {{ tun: braid0, geneve: "127.0.0.1:{demux_a}" }} }}
  b: {{ prefixes: [198.18.2.0/24], demux: {{ tun: braid0, geneve: "127.0.0.1:{demux_b}" }} }}
pairs:
  - id: 1
    gateways:
      a: {{ geneve: "127.0.0.1:{lan_a}", wan: "127.0.0.1:{wan_a}", public_key: "{}", private_key_file: a.key }}
      b: {{ geneve: "127.0.0.1:{lan_b}", wan: "127.0.0.1:{wan_b}", public_key: "{}" }}
"#,
        a.public_key().to_base64(),
        b.public_key().to_base64(),
        dir = dir.display(),
    );
    let path = dir.join("cluster.yaml");
    fs::write(&path, yaml).unwrap();
    let cfg = braid_core::config::ClusterConfig::load(&path).unwrap();
    provision::ensure_all(&cfg, &ClusterSecret::load(&cfg.cluster.secret_file).unwrap()).unwrap();
    path
}

fn start_gateway(scratch: &mut Scratch, listener: &NotifyListener, env: &[(&str, &str)]) -> u32 {
    let config = cluster(scratch.dir.path(), &scratch.name);
    start_with(scratch, &config, listener, env)
}

fn start_with(scratch: &mut Scratch, config: &Path, listener: &NotifyListener, env: &[(&str, &str)]) -> u32 {
    let mut command = Command::new(env!("CARGO_BIN_EXE_braid-gw"));
    command
        .args(["--site", "a", "--pair", "1", "--config"])
        .arg(config)
        .arg("--status-file")
        .arg(scratch.path("status.json"))
        .env("NOTIFY_SOCKET", listener.path())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(fs::File::create(scratch.path("gw.log")).unwrap());
    let child = command.spawn().unwrap();
    let pid = child.id();
    scratch.children.push(child);
    pid
}

/// Every message that arrives within `window`, with its arrival time.
fn collect(listener: &NotifyListener, window: Duration) -> Vec<(Instant, Vec<String>)> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(message) = listener.recv(left) {
            got.push(message);
        }
    }
    got
}

fn wait_ready(listener: &NotifyListener, log: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some((_, lines)) = listener.recv(left) else { break };
        assert!(
            !lines.contains(&"WATCHDOG=1".to_string()),
            "a ping before READY=1: {lines:?}"
        );
        if lines.contains(&"READY=1".to_string()) {
            return lines;
        }
    }
    panic!(
        "no READY=1 within 10 s; the gateway logged:\n{}",
        fs::read_to_string(log).unwrap_or_default()
    );
}

fn sigterm(pid: u32) {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn the_gateway_says_ready_pings_at_half_the_watchdog_interval_and_says_stopping() {
    let mut scratch = Scratch::new("ready");
    let listener = NotifyListener::bind(scratch.path("notify.sock")).unwrap();
    let watchdog = Duration::from_millis(800);
    let pid = start_gateway(
        &mut scratch,
        &listener,
        &[("WATCHDOG_USEC", &watchdog.as_micros().to_string())],
    );
    let ready = wait_ready(&listener, &scratch.path("gw.log"));
    let status_file = scratch.path("status.json");
    // The file is written at start (threads not yet running: "progressing": false) and every
    // 500 ms; the round after READY=1 says the threads progress.
    let deadline = Instant::now() + Duration::from_secs(2);
    let status = loop {
        let status: Option<serde_json::Value> = fs::read_to_string(&status_file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        match status {
            Some(status) if status["progressing"] == true || Instant::now() >= deadline => break status,
            None if Instant::now() >= deadline => panic!("no status file 2 s after READY=1"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert_eq!(status["progressing"], true, "{status}");
    let status = ready
        .iter()
        .find(|l| l.starts_with("STATUS="))
        .expect("READY=1 comes with a STATUS=");
    assert!(status.contains("pair 1 of site a: wireguard session"), "{status}");

    let messages = collect(&listener, Duration::from_secs(3));
    let pings: Vec<Instant> = messages
        .iter()
        .filter(|(_, lines)| lines.contains(&"WATCHDOG=1".to_string()))
        .map(|(at, _)| *at)
        .collect();
    // At half of 800 ms: about 7 in 3 s. Every gap must stay well inside the interval, and the
    // pings must not be a flood either.
    assert!(
        (5..=10).contains(&pings.len()),
        "{} pings in 3 s: {messages:?}",
        pings.len()
    );
    for gap in pings.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap < watchdog * 3 / 4,
            "a gap of {gap:?} between pings ({watchdog:?} watchdog)"
        );
        assert!(
            gap >= Duration::from_millis(300),
            "pings {gap:?} apart: faster than half the interval"
        );
    }

    sigterm(pid);
    let after = collect(&listener, Duration::from_secs(2));
    assert!(
        after.iter().any(|(_, lines)| lines.contains(&"STOPPING=1".to_string())),
        "no STOPPING=1 after SIGTERM: {after:?}"
    );
    let child = scratch.children.last_mut().unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_watchdog_meant_for_another_process_gets_no_pings() {
    let mut scratch = Scratch::new("otherpid");
    let listener = NotifyListener::bind(scratch.path("notify.sock")).unwrap();
    let pid = start_gateway(
        &mut scratch,
        &listener,
        &[("WATCHDOG_USEC", "400000"), ("WATCHDOG_PID", "1")],
    );
    wait_ready(&listener, &scratch.path("gw.log"));
    let messages = collect(&listener, Duration::from_millis(1500));
    assert!(
        messages
            .iter()
            .all(|(_, lines)| !lines.contains(&"WATCHDOG=1".to_string())),
        "{messages:?}"
    );
    sigterm(pid);
    let child = scratch.children.last_mut().unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn keys_come_from_the_credentials_directory_and_a_group_readable_key_file_does_not_load() {
    use std::os::unix::fs::PermissionsExt;
    let mut scratch = Scratch::new("credentials");
    let listener = NotifyListener::bind(scratch.path("notify.sock")).unwrap();
    let config = cluster(scratch.dir.path(), &scratch.name);
    // What LoadCredential= makes: the keys under fixed names, 0440 (systemd's ACL shows as group
    // read). The files the cluster file names become group-readable too, and then unusable.
    let credentials = scratch.path("credentials");
    fs::create_dir(&credentials).unwrap();
    let role_key = braid_core::keys::role_key_file(&scratch.path("secret.key"), "gw/a/1");
    for (name, from) in [("private-key", scratch.path("a.key")), ("role-key", role_key.clone())] {
        fs::copy(&from, credentials.join(name)).unwrap();
        fs::set_permissions(credentials.join(name), fs::Permissions::from_mode(0o440)).unwrap();
        fs::set_permissions(&from, fs::Permissions::from_mode(0o440)).unwrap();
    }
    let output = Command::new(env!("CARGO_BIN_EXE_braid-gw"))
        .args(["--site", "a", "--pair", "1", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a 0440 key file outside credentials was accepted"
    );
    assert!(stderr.contains("a.key") && stderr.contains("0440"), "{stderr}");

    let pid = start_with(
        &mut scratch,
        &config,
        &listener,
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    );
    wait_ready(&listener, &scratch.path("gw.log"));
    sigterm(pid);
    let child = scratch.children.last_mut().unwrap();
    assert!(child.wait().unwrap().success());
}
