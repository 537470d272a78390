//! The controller's HTTP endpoint (loopback by default), read-only: `GET /metrics`
//! (Prometheus) and `GET /status` (JSON). Nothing here changes the cluster; operators
//! administer it over the admin channel ([`crate::admin`]). Any other method on these paths is
//! `405`, any other path `404`, and neither has a side effect.
//!
//! Every connection is served on its own thread, at most [`MAX_CONNECTIONS`] at once (more are
//! closed and counted in `braid_http_refused_total{reason="too_many_connections"}`), and its
//! request head must arrive whole within [`HEAD_DEADLINE`] and [`MAX_HEAD`] bytes: a client
//! trickling bytes is cut off at the deadline and cannot hold up a scrape. Reads come from the
//! snapshot the supervisor publishes, so this never touches live state.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use braid_core::daemon::StopFlag;

/// Operator commands now arrive over [`crate::admin`]; the names stay reachable from here.
pub use crate::admin::{Command, CommandRequest};
use crate::conn::{self, ReadError, Slots, Tally};
use crate::status::StatusSnapshot;

/// Connections served at once; more are closed and counted.
pub const MAX_CONNECTIONS: usize = 64;
/// The whole request head must arrive within this.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// The largest request head read.
pub const MAX_HEAD: usize = 8192;
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `reason` labels of `braid_http_refused_total`, all exported from the start.
pub const REFUSAL_REASONS: &[&str] = &["too_many_connections", "deadline", "head_too_large"];

/// What `/metrics` and `/status` show beyond the supervisor's snapshot: the refusal counts of
/// the admin channel and of this endpoint.
#[derive(Debug, Clone)]
pub struct Counters {
    pub admin_refused: Arc<Tally>,
    pub http_refused: Arc<Tally>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            admin_refused: Arc::new(Tally::new(crate::admin::REFUSAL_REASONS)),
            http_refused: Arc::new(Tally::new(REFUSAL_REASONS)),
        }
    }
}

/// Serves until `stop` is set.
pub fn serve(listener: TcpListener, snapshot: Arc<RwLock<StatusSnapshot>>, counters: Counters, stop: StopFlag) {
    let _ = listener.set_nonblocking(true);
    let slots = Slots::new(MAX_CONNECTIONS);
    while !stop.is_stopped() {
        match listener.accept() {
            Ok((stream, peer)) => {
                let Some(slot) = slots.take() else {
                    counters.http_refused.count("too_many_connections");
                    tracing::debug!(%peer, "http: {MAX_CONNECTIONS} connections open; closed one");
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let (snapshot, counters) = (snapshot.clone(), counters.clone());
                let spawned = std::thread::Builder::new().name("http-conn".into()).spawn(move || {
                    let _slot = slot;
                    if let Err(e) = answer(stream, &snapshot, &counters) {
                        tracing::debug!(%peer, "http: {e}");
                    }
                });
                if let Err(e) = spawned {
                    tracing::warn!("http: cannot start a thread: {e}");
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

fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

fn answer(mut stream: TcpStream, snapshot: &RwLock<StatusSnapshot>, counters: &Counters) -> std::io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    const TEXT: &str = "text/plain; charset=utf-8";
    let head = match conn::read_until(&mut stream, Instant::now() + HEAD_DEADLINE, MAX_HEAD, head_complete) {
        Ok(head) => head,
        Err(ReadError::Deadline) => {
            counters.http_refused.count("deadline");
            return respond(
                &mut stream,
                "408 Request Timeout",
                TEXT,
                "request head not received in time\n",
                "",
            );
        }
        Err(ReadError::TooLarge) => {
            counters.http_refused.count("head_too_large");
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                TEXT,
                "request head too large\n",
                "",
            );
        }
        Err(ReadError::Closed) => return Ok(()),
        Err(ReadError::Io(e)) => return Err(e),
    };
    let request_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let read = || {
        let mut s = snapshot.read().unwrap_or_else(|p| p.into_inner()).clone();
        s.monitoring.loop_age_ms = braid_core::control::unix_now_ms().saturating_sub(s.published_unix_ms);
        s.monitoring.admin_refused = counters.admin_refused.snapshot();
        s.monitoring.http_refused = counters.http_refused.snapshot();
        s
    };
    match (method, path) {
        ("GET", "/metrics") => respond(
            &mut stream,
            "200 OK",
            "text/plain; version=0.0.4",
            &crate::metrics::render(&read()),
            "",
        ),
        ("GET", "/status") => respond(
            &mut stream,
            "200 OK",
            "application/json",
            &serde_json::to_string(&read()).unwrap_or_default(),
            "",
        ),
        (_, "/metrics" | "/status") => respond(
            &mut stream,
            "405 Method Not Allowed",
            TEXT,
            "this endpoint is read-only: GET /metrics, GET /status\n",
            "Allow: GET\r\n",
        ),
        (_, "/reload" | "/drain" | "/remove" | "/activate") => respond(
            &mut stream,
            "405 Method Not Allowed",
            TEXT,
            "this endpoint is read-only; administration (reload, drain, remove, activate) goes over the \
             admin socket: `braid reload` / `braid gateway ...` as root or the controller's user\n",
            "Allow: \r\n",
        ),
        _ => respond(
            &mut stream,
            "404 Not Found",
            TEXT,
            "endpoints: GET /metrics, GET /status\n",
            "",
        ),
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str, extra: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The client end, shared with everything that reads the controller's endpoint.
pub use braid_core::status::{http_get as get, http_request as request};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_status_and_metrics_and_nothing_else() {
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
        let stop = StopFlag::new();
        let counters = Counters::default();
        counters.admin_refused.count("peer_uid");
        let server = {
            let (snapshot, stop, counters) = (snapshot.clone(), stop.clone(), counters.clone());
            std::thread::spawn(move || serve(listener, snapshot, counters, stop))
        };
        let status: StatusSnapshot = serde_json::from_str(&get(addr, "/status").unwrap()).unwrap();
        assert_eq!(status.pairs_up, 2);
        assert_eq!(
            (status.pairs[0].suite.as_str(), status.pairs[0].drops_too_old),
            ("ipsec", 4)
        );
        let metrics = get(addr, "/metrics").unwrap();
        assert!(metrics.contains("braid_pairs_up 2"));
        assert!(
            metrics.contains("braid_pair_info{pair=\"1\",suite=\"ipsec\"} 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("braid_admin_refused_total{reason=\"peer_uid\"} 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("braid_admin_refused_total{reason=\"stale\"} 0\n"),
            "{metrics}"
        );
        let err = request(addr, "POST", "/drain?pair=3").unwrap_err().to_string();
        assert!(err.contains("405"), "{err}");
        let err = request(addr, "POST", "/metrics").unwrap_err().to_string();
        assert!(err.contains("405"), "{err}");
        assert!(get(addr, "/nope").unwrap_err().to_string().contains("404"));
        stop.stop();
        server.join().unwrap();
    }
}
