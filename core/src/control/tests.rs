//! A controller and a daemon talking over real sockets, unix and UDP loopback: heartbeats
//! arrive, a membership push is applied once and acknowledged, a repeated push is acknowledged
//! again without being re-applied, an older one is ignored, and forged datagrams are counted and
//! ignored at both ends.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::daemon::StopFlag;
use crate::keys::ClusterSecret;

const PATIENCE: Duration = Duration::from_secs(5);

fn membership(epoch: u64, active: &[u16]) -> Body {
    Body::Membership(Membership {
        epoch,
        active: active.to_vec(),
        serving: active.to_vec(),
        probing: active.to_vec(),
    })
}

/// Receives until `wanted` picks something out, or fails after [`PATIENCE`].
fn wait_for<T>(server: &mut ControlServer, mut wanted: impl FnMut(&Inbound) -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(inbound) = server.recv(Duration::from_millis(50), unix_now_ms()) {
            if let Some(found) = wanted(&inbound) {
                return found;
            }
        }
    }
    panic!("nothing wanted arrived within {PATIENCE:?}");
}

fn ack_of(inbound: &Inbound) -> Option<u64> {
    match inbound.body {
        Body::MembershipAck { epoch } => Some(epoch),
        _ => None,
    }
}

fn heartbeat_epoch(inbound: &Inbound) -> Option<u64> {
    match &inbound.body {
        Body::Heartbeat(heartbeat) => Some(heartbeat.membership_epoch),
        _ => None,
    }
}

fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn exchange(server_addr: ControlAddr, client_addr: ControlAddr, attacker_addr: ControlAddr) {
    let secret = ClusterSecret::generate();
    let key = ControlKey::derive(&secret);
    let mut server = ControlServer::bind(key.clone(), server_addr).unwrap();
    let demux = DaemonId::demux("a");
    let client = ControlClient::new(key, demux.clone(), server.local_addr().clone(), client_addr).unwrap();
    let client_local = client.local_addr().clone();
    let client_counters = client.counters();
    let applied = Arc::new(Mutex::new(Vec::new()));
    let stop = StopFlag::new();
    let daemon = {
        let (applied, stop) = (Arc::clone(&applied), stop.clone());
        thread::spawn(move || {
            let report = || {
                let mut heartbeat = Heartbeat::new(DaemonId::gateway("x", 9));
                heartbeat.membership_epoch = 77;
                heartbeat.tx_packets = 5;
                heartbeat
            };
            let on_membership = |m: &Membership| {
                // A demux cannot steer to nothing: refuses an empty active set.
                let accepted = !m.active.is_empty();
                if accepted {
                    applied.lock().unwrap().push(m.epoch);
                }
                accepted
            };
            client.run(&stop, Duration::from_millis(20), report, on_membership)
        })
    };

    // The heartbeat carries the client's identity and applied epoch, not the closure's.
    let first = wait_for(&mut server, |inbound| Some(inbound.clone()));
    assert_eq!(first.sender, demux);
    assert_eq!(first.from, client_local);
    assert_eq!(server.address_of(&demux), Some(&client_local));
    let Body::Heartbeat(heartbeat) = &first.body else {
        panic!("expected a heartbeat, got {:?}", first.body)
    };
    assert_eq!(
        (&heartbeat.id, heartbeat.membership_epoch, heartbeat.tx_packets),
        (&demux, 0, 5)
    );

    // Applied once and acknowledged; the next heartbeats report it.
    server.send(&demux, &membership(1, &[1, 2])).unwrap();
    assert_eq!(wait_for(&mut server, ack_of), 1);
    wait_for(&mut server, |i| heartbeat_epoch(i).filter(|e| *e == 1));

    // Repeated: acknowledged again, not applied again.
    server.send(&demux, &membership(1, &[1, 2])).unwrap();
    assert_eq!(wait_for(&mut server, ack_of), 1);
    eventually("second ack counted", || {
        client_counters.get(ControlCounter::AcksSent) == 2
    });

    // Older: ignored. Refused by the daemon: not acknowledged, the applied epoch stays.
    server.send(&demux, &membership(0, &[1])).unwrap();
    eventually("outdated push counted", || {
        client_counters.get(ControlCounter::MembershipOutdated) == 1
    });
    server.send(&demux, &membership(2, &[])).unwrap();
    eventually("refused push counted", || {
        client_counters.get(ControlCounter::MembershipRefused) == 1
    });

    // Forged at both ends, sealed with another secret: counted, ignored.
    let attacker = ControlSocket::bind(&attacker_addr).unwrap();
    let forger = ControlKey::derive(&ClusterSecret::generate());
    let mut controller = Sender::new(DaemonId::controller());
    let forged_push = seal(&forger, &controller.stamp(unix_now_ms()), &membership(9, &[3])).unwrap();
    attacker.send_to(&forged_push, &client_local).unwrap();
    eventually("forged push counted", || {
        client_counters.rejected(ControlError::Forged) == 1
    });
    let mut impostor = Sender::new(demux.clone());
    let forged_ack = seal(
        &forger,
        &impostor.stamp(unix_now_ms()),
        &Body::MembershipAck { epoch: 9 },
    )
    .unwrap();
    attacker.send_to(&forged_ack, server.local_addr()).unwrap();
    let server_counters = server.counters();
    let deadline = Instant::now() + PATIENCE;
    while server_counters.rejected(ControlError::Forged) == 0 {
        assert!(Instant::now() < deadline, "forged ack not counted");
        if let Some(inbound) = server.recv(Duration::from_millis(20), unix_now_ms()) {
            assert!(ack_of(&inbound).is_none(), "forged ack accepted: {inbound:?}");
        }
    }

    // A later push still works.
    server.send(&demux, &membership(3, &[2])).unwrap();
    assert_eq!(wait_for(&mut server, ack_of), 3);

    stop.stop();
    daemon.join().unwrap();
    assert_eq!(*applied.lock().unwrap(), [1, 3]);
    assert_eq!(client_counters.get(ControlCounter::MembershipApplied), 2);
    assert_eq!(client_counters.get(ControlCounter::AcksSent), 3);
    assert_eq!(client_counters.get(ControlCounter::Accepted), 5);
    assert_eq!(client_counters.get(ControlCounter::RecvErrors), 0);
    assert!(server.counters().get(ControlCounter::Accepted) >= 5);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("braid-control-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn exchange_over_unix_datagram_sockets() {
    let dir = temp_dir("unix");
    let unix = |name: &str| ControlAddr::Unix(dir.join(name));
    exchange(unix("ctl/control.sock"), unix("demux-a.sock"), unix("attacker.sock"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exchange_over_udp_loopback() {
    let any = || "127.0.0.1:0".parse().unwrap();
    exchange(any(), any(), any());
}

#[test]
fn server_refuses_unexpected_messages_and_unknown_daemons() {
    let key = ControlKey::derive(&ClusterSecret::generate());
    let mut server = ControlServer::bind(key.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let socket = ControlSocket::bind(&"127.0.0.1:0".parse().unwrap()).unwrap();
    let now = unix_now_ms();
    let mut gateway = Sender::new(DaemonId::gateway("a", 1));
    let mut controller = Sender::new(DaemonId::controller());
    let unexpected = [
        // A gateway claiming to be another gateway.
        seal(
            &key,
            &gateway.stamp(now),
            &Body::Heartbeat(Heartbeat::new(DaemonId::gateway("a", 2))),
        ),
        // A gateway acknowledging membership, which only demuxes receive.
        seal(&key, &gateway.stamp(now), &Body::MembershipAck { epoch: 1 }),
        // Another controller.
        seal(&key, &controller.stamp(now), &membership(1, &[1])),
    ];
    for datagram in unexpected {
        socket.send_to(&datagram.unwrap(), server.local_addr()).unwrap();
    }
    let stale = seal(
        &key,
        &gateway.stamp(now - 60_000),
        &Body::Heartbeat(Heartbeat::new(gateway.id().clone())),
    );
    socket.send_to(&stale.unwrap(), server.local_addr()).unwrap();
    let good_header = gateway.stamp(now);
    let good = seal(
        &key,
        &good_header,
        &Body::Heartbeat(Heartbeat::new(gateway.id().clone())),
    )
    .unwrap();
    socket.send_to(&good, server.local_addr()).unwrap();
    socket.send_to(&good, server.local_addr()).unwrap();

    let inbound = server.recv(PATIENCE, now).unwrap();
    assert_eq!(inbound.sender, DaemonId::gateway("a", 1));
    assert_eq!(inbound.incarnation, gateway.incarnation());
    assert_eq!(server.recv(Duration::from_millis(100), now), None);
    let counters = server.counters();
    assert_eq!(counters.rejected(ControlError::Unexpected), 3);
    assert_eq!(counters.rejected(ControlError::Stale), 1);
    assert_eq!(counters.rejected(ControlError::Replayed), 1);
    assert_eq!(server.address_of(&DaemonId::gateway("a", 2)), None);

    let unknown = server.send(&DaemonId::demux("b"), &membership(1, &[1])).unwrap_err();
    assert_eq!(unknown.kind(), std::io::ErrorKind::NotFound);
    server.forget(&DaemonId::gateway("a", 1));
    assert_eq!(server.address_of(&DaemonId::gateway("a", 1)), None);
}
