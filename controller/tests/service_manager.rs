//! `braid up` under a service manager: a real unix datagram socket plays systemd's end of
//! `sd_notify` for a controller with `--no-launch` on a scratch directory (no privileges, no
//! daemons). It says `READY=1` with a status line once its sockets are bound and its loop turns,
//! feeds the watchdog from that loop at half of `WATCHDOG_USEC`, and says `STOPPING=1` on
//! SIGTERM; the cluster secret comes from `$CREDENTIALS_DIRECTORY`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use braid_core::keys::{ClusterSecret, PrivateKey};
use braid_core::service::NotifyListener;
use braid_core::testing::{free_tcp_port, free_udp_port, ScratchDir};

/// The `braid up` under test, killed before its scratch directory goes.
struct Scratch {
    child: Option<Child>,
    _dir: ScratchDir,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn the_controller_says_ready_pings_its_watchdog_and_says_stopping() {
    let scratch_dir = ScratchDir::new("up-notify");
    let dir = scratch_dir.0.clone();
    fs::create_dir_all(dir.join("credentials")).unwrap();
    let mut scratch = Scratch {
        child: None,
        _dir: scratch_dir,
    };
    // The secret exists only as a credential, group-readable as systemd's ACL shows it; the
    // path the cluster file names does not exist.
    let credential = dir.join("credentials/cluster-secret");
    fs::write(&credential, ClusterSecret::generate().to_base64()).unwrap();
    fs::set_permissions(&credential, fs::Permissions::from_mode(0o440)).unwrap();
    let keys: Vec<String> = (0..2)
        .map(|_| PrivateKey::generate().public_key().to_base64())
        .collect();
    let [demux_a, demux_b, lan_a, lan_b, wan_a, wan_b] = [(); 6].map(|_| free_udp_port());
    let yaml = format!(
        r#"
cluster: {{ name: up-notify, secret_file: absent/secret.key }}
controller:
  address: "unix:{dir}/control.sock"
  metrics: "127.0.0.1:{metrics}"
  admin_socket: "{dir}/admin.sock"
  state_dir: "{dir}/state"
sites:
  a: {{ prefixes: [198.18.1.0/24], demux: {{ tun: braid0, geneve: "127.0.0.1:{demux_a}" }} }}
  b: {{ prefixes: [198.18.2.0/24], demux: {{ tun: braid0, geneve: "127.0.0.1:{demux_b}" }} }}
pairs:
  - id: 1
    gateways:
      a: {{ geneve: "127.0.0.1:{lan_a}", wan: "127.0.0.1:{wan_a}", public_key: "{ka}" }}
      b: {{ geneve: "127.0.0.1:{lan_b}", wan: "127.0.0.1:{wan_b}", public_key: "{kb}" }}
"#,
        dir = dir.display(),
        metrics = free_tcp_port(),
        ka = keys[0],
        kb = keys[1],
    );
    fs::write(dir.join("cluster.yaml"), yaml).unwrap();
    let listener = NotifyListener::bind(dir.join("notify.sock")).unwrap();
    let log = dir.join("up.log");
    let child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["up", "--no-launch", "--config"])
        .arg(dir.join("cluster.yaml"))
        .arg("--state-dir")
        .arg(dir.join("run"))
        .env("NOTIFY_SOCKET", listener.path())
        .env("WATCHDOG_USEC", "600000")
        .env("CREDENTIALS_DIRECTORY", dir.join("credentials"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    scratch.child = Some(child);

    let mut messages = Vec::new();
    let end = Instant::now() + Duration::from_secs(4);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(message) = listener.recv(left) {
            messages.push(message);
        }
    }
    let has = |lines: &Vec<String>, line: &str| lines.iter().any(|l| l == line);
    let ready = messages.iter().position(|(_, lines)| has(lines, "READY=1"));
    let ready = ready.unwrap_or_else(|| {
        panic!(
            "no READY=1: {messages:?}\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let status = messages[ready].1.iter().find(|l| l.starts_with("STATUS=")).unwrap();
    assert!(status.contains("cluster up-notify: 0 of 1 pairs active"), "{status}");
    assert!(
        messages[..ready].iter().all(|(_, lines)| !has(lines, "WATCHDOG=1")),
        "a ping before READY=1"
    );
    let pings: Vec<Instant> = messages[ready..]
        .iter()
        .filter(|(_, lines)| has(lines, "WATCHDOG=1"))
        .map(|(at, _)| *at)
        .collect();
    assert!(
        pings.len() >= 8,
        "{} pings in about 4 s at 300 ms: {messages:?}",
        pings.len()
    );
    for gap in pings.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap >= Duration::from_millis(250) && gap < Duration::from_millis(450),
            "pings {gap:?} apart for a 600 ms watchdog"
        );
    }

    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let mut stopping = false;
    let end = Instant::now() + Duration::from_secs(5);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match listener.recv(left) {
            Some((_, lines)) if has(&lines, "STOPPING=1") => {
                stopping = true;
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    let status = scratch.child.as_mut().unwrap().wait().unwrap();
    assert!(
        status.success(),
        "{status:?}: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}
