//! `braid status` exits 0 on a healthy cluster, 1 while an alarm is raised and 2 when it cannot
//! read the controller, with and without `--json`.
//!
//! The real `braid` binary reads the controller's real HTTP endpoint ([`braid::http::serve`]),
//! serving a snapshot the test sets.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::{Arc, RwLock};

use braid::status::{PairStatus, StatusSnapshot};
use braid_core::daemon::StopFlag;

/// The controller's HTTP endpoint serving `snapshot`, stopped on drop.
struct Endpoint {
    addr: SocketAddr,
    snapshot: Arc<RwLock<StatusSnapshot>>,
    stop: StopFlag,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Endpoint {
    fn start() -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let snapshot = Arc::new(RwLock::new(StatusSnapshot::default()));
        let stop = StopFlag::new();
        let thread = {
            let (snapshot, stop) = (snapshot.clone(), stop.clone());
            std::thread::spawn(move || braid::http::serve(listener, snapshot, Default::default(), stop))
        };
        Endpoint {
            addr,
            snapshot,
            stop,
            thread: Some(thread),
        }
    }

    /// Serves `s`, published now.
    fn set(&self, mut s: StatusSnapshot) {
        s.published_unix_ms = braid_core::control::unix_now_ms();
        *self.snapshot.write().unwrap() = s;
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `braid status --controller ADDR [--json]`: exit code and stdout.
fn braid_status(addr: SocketAddr, json: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_braid"));
    cmd.args(["status", "--controller", &addr.to_string()]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    let code = out.status.code().expect("exited, not killed");
    (code, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn healthy() -> StatusSnapshot {
    StatusSnapshot {
        cluster: "exit".into(),
        pairs_up: 1,
        pairs: vec![PairStatus {
            index: 1,
            state: "up".into(),
            active: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn exits_zero_when_healthy_and_one_for_each_alarm() {
    let endpoint = Endpoint::start();
    endpoint.set(healthy());
    for json in [false, true] {
        let (code, out) = braid_status(endpoint.addr, json);
        assert_eq!(code, 0, "healthy, --json {json}:\n{out}");
    }
    assert!(braid_status(endpoint.addr, false).1.contains("alarms: none"));

    let mut no_pair = healthy();
    no_pair.pairs_up = 0;
    no_pair.pairs[0].state = "down".into();
    no_pair.alarms.pairs_up_below_one = true;
    let mut slow = healthy();
    slow.alarms.canary_rtt_high = vec![1];
    slow.alarms.canary_rtt_threshold_ms = 200;
    let mut unheard = healthy();
    unheard.monitoring.never_heard = 2;
    let mut cut_off = healthy();
    cut_off.alarms.sites_unreachable = vec!["b".into()];
    for (alarm, s, shown) in [
        ("pairs_up_below_one", no_pair, "no pair up"),
        ("canary_rtt_high", slow, "canary RTT over 200 ms"),
        ("site_unreachable", cut_off, "site(s) b unreachable"),
        ("monitoring_unhealthy", unheard, "monitoring unhealthy"),
    ] {
        endpoint.set(s);
        let (code, out) = braid_status(endpoint.addr, false);
        assert_eq!(code, 1, "{alarm}:\n{out}");
        assert!(out.contains(shown), "{alarm}: the table says {shown:?}:\n{out}");
        let (code, out) = braid_status(endpoint.addr, true);
        assert_eq!(code, 1, "{alarm}, --json:\n{out}");
        let doc: serde_json::Value = serde_json::from_str(&out).expect("--json prints the document");
        assert_eq!(doc["cluster"], "exit");
    }
}

#[test]
fn a_stale_status_document_is_an_alarm() {
    let endpoint = Endpoint::start();
    let mut s = healthy();
    s.published_unix_ms = braid_core::control::unix_now_ms() - 10_000;
    *endpoint.snapshot.write().unwrap() = s;
    let (code, out) = braid_status(endpoint.addr, false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("monitoring unhealthy (status 10."), "{out}");
}

#[test]
fn exits_two_when_the_controller_cannot_be_reached_or_the_usage_is_wrong() {
    // A port nobody listens on: bound, then released.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for json in [false, true] {
        let (code, out) = braid_status(addr, json);
        assert_eq!(code, 2, "--json {json}: {out}");
        assert!(out.is_empty(), "nothing on stdout: {out}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no controller named");
    let out = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["status", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad flag");
    let help = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["status", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("0 the cluster is healthy; 1 an alarm is raised"),
        "--help documents the exit status:\n{help}"
    );
}
