//! The admin channel and the read-only HTTP endpoint, attacked the way the issue did: real unix
//! and TCP sockets, a real unprivileged user (`nobody`, through `setpriv`), the real `braid`
//! CLI. The controller's listeners run in-process on a scratch directory; a fake supervisor
//! end of the command channel records every command that gets through, so each refusal is
//! checked to have done nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command as Process, Output};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use braid::admin::client::{self, Channel};
use braid::admin::protocol::{self, Request, MAX_SKEW_MS};
use braid::admin::server::{self, AdminSocket};
use braid::admin::{Command, CommandRequest};
use braid::http;
use braid::status::StatusSnapshot;
use braid_core::control::unix_now_ms;
use braid_core::daemon::StopFlag;
use braid_core::keys::{write_secret_file, AdminKey};

/// The listeners of one controller, and what its supervisor was asked to do.
struct Rig {
    dir: PathBuf,
    socket: PathBuf,
    remote: SocketAddr,
    http: SocketAddr,
    key_file: PathBuf,
    received: Arc<Mutex<Vec<Command>>>,
    stop: StopFlag,
    threads: Vec<JoinHandle<()>>,
}

impl Rig {
    fn start(name: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("braid-admin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Like /run/braid/<cluster>: anyone may look in; the socket itself is what is guarded.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.join("admin.sock");
        let key = AdminKey::generate();
        let key_file = dir.join("admin.key");
        write_secret_file(&key_file, &key.to_base64()).unwrap();

        let stop = StopFlag::new();
        let counters = http::Counters::default();
        let (commands_tx, commands) = mpsc::channel::<CommandRequest>();
        let received = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        {
            let (received, stop) = (received.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.is_stopped() {
                    if let Ok((command, reply)) = commands.recv_timeout(Duration::from_millis(20)) {
                        let answer = format!("{command} done");
                        received.lock().unwrap().push(command);
                        let _ = reply.send(Ok(answer));
                    }
                }
            }));
        }
        let admin_socket = AdminSocket::bind(&socket).unwrap();
        {
            let (tx, refused, stop) = (commands_tx.clone(), counters.admin_refused.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                server::serve_unix(admin_socket, tx, refused, stop)
            }));
        }
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let remote = tcp.local_addr().unwrap();
        {
            let (refused, stop) = (counters.admin_refused.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                server::serve_tcp(tcp, key, commands_tx, refused, stop)
            }));
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let http = listener.local_addr().unwrap();
        let snapshot = Arc::new(RwLock::new(StatusSnapshot {
            cluster: name.into(),
            pairs_up: 3,
            ..Default::default()
        }));
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                http::serve(listener, snapshot, counters, stop)
            }));
        }
        Rig {
            dir,
            socket,
            remote,
            http,
            key_file,
            received,
            stop,
            threads,
        }
    }

    fn received(&self) -> Vec<Command> {
        self.received.lock().unwrap().clone()
    }

    fn metrics(&self) -> String {
        http::get(self.http, "/metrics").unwrap()
    }

    fn metric(&self, series: &str) -> u64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
    }

    fn key(&self) -> AdminKey {
        AdminKey::load(&self.key_file).unwrap()
    }

    /// Sends one raw line to the signed channel; returns the answer line.
    fn raw_remote(&self, line: &str) -> String {
        let mut stream = TcpStream::connect(self.remote).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        answer
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn braid_bin() -> &'static str {
    env!("CARGO_BIN_EXE_braid")
}

/// `braid ARGS` as `nobody` (uid and gid 65534, no supplementary groups).
fn braid_as_nobody(args: &[&str]) -> Output {
    Process::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", braid_bin()])
        .args(args)
        .output()
        .expect("run setpriv")
}

fn braid_as_root(args: &[&str]) -> Output {
    Process::new(braid_bin()).args(args).output().expect("run braid")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Why the tests that switch users cannot run here, if they cannot.
fn cannot_switch_users() -> Option<&'static str> {
    if rustix::process::geteuid().as_raw() != 0 {
        return Some("not root: cannot run a client as nobody");
    }
    let setpriv = Process::new("setpriv").arg("--version").output();
    if !setpriv.is_ok_and(|o| o.status.success()) {
        return Some("setpriv (util-linux) is not installed");
    }
    None
}

fn skip_loudly(test: &str) -> bool {
    match cannot_switch_users() {
        None => false,
        Some(why) => {
            eprintln!("\n======== SKIPPED {test}: {why} ========\n");
            true
        }
    }
}

#[test]
fn nobody_cannot_administer_over_the_socket_and_root_can() {
    if skip_loudly("nobody_cannot_administer_over_the_socket_and_root_can") {
        return;
    }
    let rig = Rig::start("local");
    let socket = rig.socket.to_str().unwrap();
    let mode = std::fs::metadata(&rig.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the admin socket is owner-only");

    // The attack, through the CLI: the socket's mode stops nobody at connect().
    let out = braid_as_nobody(&["gateway", "remove", "--pair", "2", "--admin-socket", socket]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("permission denied") && stderr.contains("needs root or the controller's user"),
        "{}",
        text(&out)
    );
    assert_eq!(rig.received(), [], "nobody's remove reached the supervisor");

    // The mode gone wrong (or the socket handed into a container): SO_PEERCRED still refuses.
    std::fs::set_permissions(&rig.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [
        &["gateway", "remove", "--pair", "2", "--admin-socket", socket][..],
        &["gateway", "drain", "--pair", "1", "--admin-socket", socket][..],
        &["reload", "--admin-socket", socket][..],
    ] {
        let out = braid_as_nobody(args);
        assert!(!out.status.success(), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("refused: uid 65534 may not administer this controller"),
            "{}",
            text(&out)
        );
    }
    assert_eq!(rig.received(), [], "nobody's commands reached the supervisor");
    assert_eq!(rig.metric("braid_admin_refused_total{reason=\"peer_uid\"}"), 3);

    // Root, through the CLI and through the library.
    let out = braid_as_root(&["gateway", "remove", "--pair", "2", "--admin-socket", socket]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "remove pair 2 done");
    let answer = client::send(&Channel::Local(rig.socket.clone()), &Command::Drain(1)).unwrap();
    assert_eq!(answer, "drain pair 1 done");
    assert_eq!(rig.received(), [Command::Remove(2), Command::Drain(1)]);
}

#[test]
fn a_missing_socket_and_a_local_garbage_line_are_clear_errors() {
    let rig = Rig::start("garbage");
    let missing = client::send(&Channel::Local(rig.dir.join("none.sock")), &Command::Reload)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("is the controller (`braid up`) running"), "{missing}");
    let mut stream = std::os::unix::net::UnixStream::connect(&rig.socket).unwrap();
    stream.write_all(b"POST /remove?pair=2 HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("refused: not an administration request"), "{answer}");
    assert_eq!(rig.received(), []);
    assert_eq!(rig.metric("braid_admin_refused_total{reason=\"malformed\"}"), 1);
}

/// Sends `request` with `method` and returns the status line.
fn http_status(addr: SocketAddr, method: &str, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.lines().next().unwrap_or("").to_string()
}

#[test]
fn http_is_read_only() {
    let rig = Rig::start("readonly");
    for (method, target) in [
        ("POST", "/remove?pair=2"),
        ("POST", "/drain?pair=1"),
        ("POST", "/activate?pair=1"),
        ("POST", "/reload"),
        ("GET", "/remove?pair=2"),
        ("PUT", "/metrics"),
        ("DELETE", "/status"),
    ] {
        let status = http_status(rig.http, method, target);
        assert!(status.starts_with("HTTP/1.1 405"), "{method} {target}: {status}");
    }
    assert!(http_status(rig.http, "POST", "/anything").starts_with("HTTP/1.1 404"));
    assert!(http_status(rig.http, "GET", "/status").starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(rig.received(), [], "an HTTP request reached the supervisor");
}

#[test]
fn slow_clients_do_not_delay_metrics_and_are_cut_off_at_the_deadline() {
    let rig = Rig::start("slow");
    let started = Instant::now();
    let trickle: Vec<_> = (0..8)
        .map(|_| {
            let addr = rig.http;
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                let request = b"GET /metrics HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                for byte in request {
                    if stream.write_all(&[*byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                    // Stop once the server answered or closed.
                    stream.set_nonblocking(true).unwrap();
                    let answered =
                        !matches!(stream.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                    stream.set_nonblocking(false).unwrap();
                    if answered || started.elapsed() > Duration::from_secs(6) {
                        break;
                    }
                }
                // What the server sent (a 408) and when it gave up on us.
                let when = started.elapsed();
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                (when, answer)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let asked = Instant::now();
        let metrics = http::get(rig.http, "/metrics").expect("GET /metrics while slow clients trickle");
        let took = asked.elapsed();
        assert!(metrics.contains("braid_pairs_up 3"), "{metrics}");
        assert!(
            took < Duration::from_secs(1),
            "GET /metrics took {took:?} with slow clients connected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for client in trickle {
        let (when, answer) = client.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(
            when < Duration::from_millis(3500),
            "a trickling client was cut off only after {when:?} (deadline 2 s for the whole head)"
        );
    }
    assert_eq!(rig.metric("braid_http_refused_total{reason=\"deadline\"}"), 8);
}

#[test]
fn connections_beyond_the_cap_are_closed_and_counted() {
    let rig = Rig::start("cap");
    let extra = 5;
    let idle: Vec<TcpStream> = (0..http::MAX_CONNECTIONS + extra)
        .map(|_| TcpStream::connect(rig.http).unwrap())
        .collect();
    // Once the idle ones are cut off at the head deadline, the endpoint answers again.
    std::thread::sleep(http::HEAD_DEADLINE + Duration::from_millis(700));
    let refused = rig.metric("braid_http_refused_total{reason=\"too_many_connections\"}");
    assert_eq!(refused, extra as u64);
    drop(idle);
}

#[test]
fn signed_remote_requests_work_and_forged_replayed_and_stale_ones_do_not() {
    let rig = Rig::start("remote");
    let key = rig.key();
    let channel = Channel::Remote {
        addr: rig.remote,
        key: rig.key(),
    };
    assert_eq!(
        client::send(&channel, &Command::Activate(3)).unwrap(),
        "activate pair 3 done"
    );

    // The CLI, with the key file.
    let out = braid_as_root(&[
        "reload",
        "--remote",
        &rig.remote.to_string(),
        "--admin-key",
        rig.key_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "reload done");
    assert_eq!(rig.received(), [Command::Activate(3), Command::Reload]);

    // Signed with another key.
    let forged = Channel::Remote {
        addr: rig.remote,
        key: AdminKey::generate(),
    };
    let error = client::send(&forged, &Command::Remove(2)).unwrap_err().to_string();
    assert!(error.contains("refused: bad signature"), "{error}");

    // A captured request sent again.
    let captured = protocol::sign(
        &Request::new(&Command::Drain(1), unix_now_ms(), "c0ffee00c0ffee00c0ffee00".into()),
        &key,
    );
    assert!(rig.raw_remote(&captured).contains("\"ok\":true"));
    let replayed = rig.raw_remote(&captured);
    assert!(replayed.contains("refused: nonce already used"), "{replayed}");

    // Too old, and from too far in the future.
    for issued in [unix_now_ms() - MAX_SKEW_MS - 5_000, unix_now_ms() + MAX_SKEW_MS + 5_000] {
        let line = protocol::sign(
            &Request::new(&Command::Remove(2), issued, format!("stale-{issued}")),
            &key,
        );
        let answer = rig.raw_remote(&line);
        assert!(answer.contains("refused: timestamp"), "{answer}");
    }

    // Unsigned, truncated, garbage.
    let unsigned = Request::new(&Command::Remove(2), unix_now_ms(), "unsigned00000000".into()).encode();
    assert!(rig
        .raw_remote(&unsigned)
        .contains("refused: the request carries no signature"));
    assert!(rig.raw_remote(&captured[..captured.len() / 2]).contains("refused:"));
    assert!(rig.raw_remote("\u{0}\u{1}garbage").contains("refused:"));

    assert_eq!(
        rig.received(),
        [Command::Activate(3), Command::Reload, Command::Drain(1)],
        "only the genuine requests reached the supervisor"
    );
    // The forged one, the unsigned one, and the truncated and garbage lines (no tag either).
    assert_eq!(rig.metric("braid_admin_refused_total{reason=\"bad_signature\"}"), 4);
    assert_eq!(rig.metric("braid_admin_refused_total{reason=\"replayed\"}"), 1);
    assert_eq!(rig.metric("braid_admin_refused_total{reason=\"stale\"}"), 2);
}

#[test]
fn a_trickling_admin_client_does_not_block_another() {
    let rig = Rig::start("admin-slow");
    let mut slow = TcpStream::connect(rig.remote).unwrap();
    slow.write_all(b"{\"comm").unwrap();
    let channel = Channel::Remote {
        addr: rig.remote,
        key: rig.key(),
    };
    let asked = Instant::now();
    client::send(&channel, &Command::Reload).unwrap();
    assert!(asked.elapsed() < Duration::from_secs(1), "{:?}", asked.elapsed());
    assert_eq!(rig.received(), [Command::Reload]);
}
