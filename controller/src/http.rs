//! The controller's HTTP endpoint (loopback by default): `GET /metrics` (Prometheus),
//! `GET /status` (JSON), and the operator's commands as `POST /reload`, `POST /drain?pair=N`,
//! `POST /remove?pair=N`, `POST /activate?pair=N`.
//!
//! One thread accepts and answers one connection at a time (this is an operator and scraper
//! endpoint, not a data path). Reads come from the snapshot the supervisor publishes; commands
//! travel to the supervisor loop over a channel and wait for its answer, so the HTTP thread never
//! touches live state.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use braid_core::daemon::StopFlag;

use crate::status::StatusSnapshot;

/// An operator command for the supervisor loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Re-read the cluster file and apply the difference.
    Reload,
    Drain(u16),
    Remove(u16),
    Activate(u16),
}

/// A command and where to send its answer (`Ok(message)` or `Err(reason)`).
pub type CommandRequest = (Command, Sender<Result<String, String>>);

/// Serves until `stop` is set.
pub fn serve(
    listener: TcpListener,
    snapshot: Arc<RwLock<StatusSnapshot>>,
    commands: Sender<CommandRequest>,
    stop: StopFlag,
) {
    let _ = listener.set_nonblocking(true);
    while !stop.is_stopped() {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                if let Err(e) = answer(stream, &snapshot, &commands) {
                    tracing::debug!("http: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                tracing::warn!("http accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn answer(
    stream: TcpStream,
    snapshot: &RwLock<StatusSnapshot>,
    commands: &Sender<CommandRequest>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.by_ref().take(4096).read_line(&mut request_line)?;
    // Skip the headers (bounded).
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        if reader.by_ref().take(8192).read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, content_type, body) = route(method, path, query, snapshot, commands);
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

fn route(
    method: &str,
    path: &str,
    query: &str,
    snapshot: &RwLock<StatusSnapshot>,
    commands: &Sender<CommandRequest>,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let read = || {
        let mut s = snapshot.read().unwrap_or_else(|p| p.into_inner()).clone();
        s.monitoring.loop_age_ms = braid_core::control::unix_now_ms().saturating_sub(s.published_unix_ms);
        s
    };
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", crate::metrics::render(&read())),
        ("GET", "/status") => ("200 OK", "application/json", serde_json::to_string(&read()).unwrap_or_default()),
        ("POST", "/reload") => run(commands, Command::Reload),
        ("POST", "/drain" | "/remove" | "/activate") => {
            let Some(pair) = query.strip_prefix("pair=").and_then(|p| p.parse::<u16>().ok()) else {
                return ("400 Bad Request", TEXT, "expected ?pair=N\n".into());
            };
            let command = match path {
                "/drain" => Command::Drain(pair),
                "/remove" => Command::Remove(pair),
                _ => Command::Activate(pair),
            };
            run(commands, command)
        }
        ("GET" | "POST", _) => ("404 Not Found", TEXT, "endpoints: GET /metrics, GET /status, POST /reload, POST /drain?pair=N, POST /remove?pair=N, POST /activate?pair=N\n".into()),
        _ => ("405 Method Not Allowed", TEXT, "GET or POST\n".into()),
    }
}

fn run(commands: &Sender<CommandRequest>, command: Command) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (tx, rx) = mpsc::channel();
    if commands.send((command, tx)).is_err() {
        return (
            "503 Service Unavailable",
            TEXT,
            "the controller is shutting down\n".into(),
        );
    }
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(message)) => ("200 OK", TEXT, format!("{message}\n")),
        Ok(Err(reason)) => ("409 Conflict", TEXT, format!("{reason}\n")),
        Err(_) => (
            "504 Gateway Timeout",
            TEXT,
            "the controller did not answer in 30 s\n".into(),
        ),
    }
}

/// A blocking HTTP request to the controller (used by the CLI): returns the body of a 2xx answer.
pub fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::io::Read;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("cannot reach the controller at {addr} (is `braid up` running?)"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or("");
    if !status.split_whitespace().nth(1).is_some_and(|c| c.starts_with('2')) {
        anyhow::bail!("controller answered {status}: {}", body.trim());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_status_metrics_and_commands_over_real_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let snapshot = Arc::new(RwLock::new(StatusSnapshot {
            cluster: "t".into(),
            pairs_up: 2,
            pairs: vec![crate::status::PairStatus {
                index: 1,
                suite: "ipsec".into(),
                drops_too_old: 4,
                ..Default::default()
            }],
            ..Default::default()
        }));
        let (tx, rx) = mpsc::channel::<CommandRequest>();
        let stop = StopFlag::new();
        let server = {
            let (snapshot, stop) = (snapshot.clone(), stop.clone());
            std::thread::spawn(move || serve(listener, snapshot, tx, stop))
        };
        let supervisor = std::thread::spawn(move || {
            let (command, reply) = rx.recv().unwrap();
            assert_eq!(command, Command::Drain(3));
            reply.send(Ok("pair 3 draining".into())).unwrap();
        });
        let status: StatusSnapshot = serde_json::from_str(&request(addr, "GET", "/status").unwrap()).unwrap();
        assert_eq!(status.pairs_up, 2);
        assert_eq!(
            (status.pairs[0].suite.as_str(), status.pairs[0].drops_too_old),
            ("ipsec", 4)
        );
        let metrics = request(addr, "GET", "/metrics").unwrap();
        assert!(metrics.contains("braid_pairs_up 2"));
        assert!(
            metrics.contains("braid_pair_info{pair=\"1\",suite=\"ipsec\"} 1\n"),
            "{metrics}"
        );
        assert_eq!(
            request(addr, "POST", "/drain?pair=3").unwrap().trim(),
            "pair 3 draining"
        );
        supervisor.join().unwrap();
        let err = request(addr, "POST", "/drain?pair=x").unwrap_err().to_string();
        assert!(err.contains("400"), "{err}");
        assert!(request(addr, "GET", "/nope").unwrap_err().to_string().contains("404"));
        stop.stop();
        server.join().unwrap();
    }
}
