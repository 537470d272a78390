//! A controller and a daemon talking over real sockets, unix and UDP loopback: the first
//! heartbeat is answered with a hello and the next ones are accepted, a membership push is
//! applied once and acknowledged, a repeated push is acknowledged again without being
//! re-applied, an older one is ignored, a malformed one is refused and counted, forged datagrams (another cluster's key, or a
//! gateway's own key sealing a push) and replayed ones are counted and ignored at both ends,
//! and a restarted controller is heard again within a round trip. With a controller set, the
//! daemon heartbeats to every member and applies pushes in (term, epoch) order, so a deposed
//! leader is fenced off.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::daemon::StopFlag;
use crate::keys::ClusterSecret;
use crate::testing::ScratchDir;

const PATIENCE: Duration = Duration::from_secs(5);

fn membership(epoch: u64, active: &[u16]) -> Body {
    membership_of_term(0, epoch, active)
}

fn membership_of_term(term: u64, epoch: u64, active: &[u16]) -> Body {
    Body::Membership(Membership {
        term,
        epoch,
        active: active.to_vec(),
        serving: active.to_vec(),
        probing: active.to_vec(),
        gateways: Vec::new(),
    })
}

/// Receives until `wanted` picks something out, or fails after [`PATIENCE`].
fn wait_for<T>(server: &mut ControlServer, mut wanted: impl FnMut(&Inbound) -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(inbound) = server.recv(Duration::from_millis(50)) {
            if let Some(found) = wanted(&inbound) {
                return found;
            }
        }
    }
    panic!("nothing wanted arrived within {PATIENCE:?}");
}

fn ack_of(inbound: &Inbound) -> Option<u64> {
    match inbound.body {
        Body::MembershipAck { epoch, .. } => Some(epoch),
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

fn controller_keys(secret: &ClusterSecret) -> Keyring {
    Keyring::controller(secret.clone(), [DaemonId::demux("a"), DaemonId::gateway("a", 1)])
}

fn daemon_keys(secret: &ClusterSecret, id: &DaemonId) -> Keyring {
    Keyring::daemon(id.clone(), &secret.role_key(&id.wire_name()))
}

/// A datagram sealed by hand: `sender` in life `incarnation`, echoing `echo`, with `key`.
fn forge(key: &ring::hmac::Key, sender: DaemonId, incarnation: u64, echo: u64, body: &Body) -> Vec<u8> {
    let mut life = Sender::with_incarnation(sender, incarnation);
    seal(key, &life.stamp(echo), body).unwrap()
}

fn exchange(server_addr: ControlAddr, client_addr: ControlAddr, attacker_addr: ControlAddr) {
    let secret = ClusterSecret::generate();
    let mut server = ControlServer::bind(controller_keys(&secret), server_addr).unwrap();
    let demux = DaemonId::demux("a");
    let client = ControlClient::new(
        daemon_keys(&secret, &demux),
        &[server.local_addr().clone()],
        client_addr,
    )
    .unwrap();
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

    // The first heartbeat is not fresh (the daemon has not heard this controller): a hello
    // answers it and the next one is accepted. It carries the client's identity and applied
    // epoch, not the closure's.
    let first = wait_for(&mut server, |inbound| Some(inbound.clone()));
    let server_counters = server.counters();
    assert_eq!(server_counters.rejected(ControlError::Unfresh), 1);
    assert_eq!(server_counters.get(ControlCounter::HellosSent), 1);
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

    // Authentic but malformed: a gateway address for a pair the push does not name. Refused
    // before the epoch is looked at, counted, not acknowledged; the applied epoch stays.
    let mut malformed = membership(5, &[1]);
    if let Body::Membership(m) = &mut malformed {
        m.gateways.push(PairGateway {
            pair: 7,
            geneve: "198.18.20.17:6081".parse().unwrap(),
        });
    }
    server.send(&demux, &malformed).unwrap();
    eventually("malformed push counted", || {
        client_counters.rejected(ControlError::Malformed) == 1
    });

    // Forged pushes: sealed with another cluster's key, and sealed with gateway a1's own
    // role key (which a compromised gateway holds), echoing the demux's life so only the key
    // can give them away. Both counted, neither applied.
    let attacker = ControlSocket::bind(&attacker_addr).unwrap();
    assert_eq!(server.tracked(), (1, 1));
    let other_cluster = controller_keys(&ClusterSecret::generate());
    let gateway = daemon_keys(&secret, &DaemonId::gateway("a", 1));
    let gateway_key = gateway.sealing_key(&DaemonId::controller()).unwrap();
    let echo = server.echo_for(&demux);
    for key in [other_cluster.sealing_key(&demux).unwrap(), gateway_key] {
        let forged = forge(key, DaemonId::controller(), 1, echo, &membership(9, &[3]));
        attacker.send_to(&forged, &client_local).unwrap();
    }
    eventually("forged pushes counted", || {
        client_counters.rejected(ControlError::Forged) == 2
    });
    // A forged acknowledgement at the controller, sealed with the gateway's key.
    let forged_ack = forge(
        gateway_key,
        demux.clone(),
        1,
        0,
        &Body::MembershipAck { epoch: 9, term: 0 },
    );
    attacker.send_to(&forged_ack, server.local_addr()).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while server_counters.rejected(ControlError::Forged) == 0 {
        assert!(Instant::now() < deadline, "forged ack not counted");
        if let Some(inbound) = server.recv(Duration::from_millis(20)) {
            assert!(ack_of(&inbound).is_none(), "forged ack accepted: {inbound:?}");
        }
    }

    // A later push still works, with the gateways' addresses.
    let mut with_addresses = membership(3, &[2]);
    if let Body::Membership(m) = &mut with_addresses {
        m.gateways.push(PairGateway {
            pair: 2,
            geneve: "198.18.20.12:6081".parse().unwrap(),
        });
    }
    server.send(&demux, &with_addresses).unwrap();
    assert_eq!(wait_for(&mut server, ack_of), 3);

    // The controller restarts (a new life, the same keys): the daemon's heartbeats are unfresh
    // to it once, the hello makes the daemon answer at once, and pushes work again.
    let addr = server.local_addr().clone();
    drop(server);
    if let ControlAddr::Unix(path) = &addr {
        let _ = std::fs::remove_file(path);
    }
    let mut server = ControlServer::bind(controller_keys(&secret), addr).unwrap();
    wait_for(&mut server, |i| heartbeat_epoch(i).filter(|e| *e == 3));
    server.send(&demux, &membership(4, &[1])).unwrap();
    assert_eq!(wait_for(&mut server, ack_of), 4);

    stop.stop();
    daemon.join().unwrap();
    assert_eq!(*applied.lock().unwrap(), [1, 3, 4]);
    assert_eq!(client_counters.get(ControlCounter::MembershipApplied), 3);
    assert_eq!(client_counters.get(ControlCounter::AcksSent), 4);
    assert_eq!(client_counters.get(ControlCounter::RecvErrors), 0);
    assert!(server.counters().get(ControlCounter::Accepted) >= 2);
}

fn temp_dir(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("control-{name}"))
}

#[test]
fn exchange_over_unix_datagram_sockets() {
    let dir = temp_dir("unix");
    let unix = |name: &str| ControlAddr::Unix(dir.join(name));
    exchange(unix("ctl/control.sock"), unix("demux-a.sock"), unix("attacker.sock"));
}

#[test]
fn exchange_over_udp_loopback() {
    let any = || "127.0.0.1:0".parse().unwrap();
    exchange(any(), any(), any());
}

#[test]
fn server_refuses_unexpected_messages_unknown_daemons_and_replays() {
    let secret = ClusterSecret::generate();
    let mut server = ControlServer::bind(controller_keys(&secret), "127.0.0.1:0".parse().unwrap()).unwrap();
    let socket = ControlSocket::bind(&"127.0.0.1:0".parse().unwrap()).unwrap();
    let gw = DaemonId::gateway("a", 1);
    let gw_keys = daemon_keys(&secret, &gw);
    let key = gw_keys.sealing_key(&DaemonId::controller()).unwrap();
    let heartbeat = |id: &DaemonId| Body::Heartbeat(Box::new(Heartbeat::new(id.clone())));

    let mut life7 = Sender::with_incarnation(gw.clone(), 7);
    let mut sealed = |echo: u64, body: &Body| seal(key, &life7.stamp(echo), body).unwrap();
    // Unfresh at first: answered with a hello, which carries the server's life.
    socket
        .send_to(&sealed(0, &heartbeat(&gw)), server.local_addr())
        .unwrap();
    assert_eq!(server.recv(Duration::from_millis(300)), None);
    let mut buf = vec![0; MAX_DATAGRAM];
    let (len, _) = socket.recv_from(&mut buf, PATIENCE).unwrap().unwrap();
    let (hello, body) = open(|from| gw_keys.opening_key(from), &buf[..len]).unwrap();
    assert_eq!(
        (hello.sender, hello.echo, body),
        (DaemonId::controller(), 7, Body::Hello)
    );
    let life = hello.incarnation;

    let unexpected = [
        // A gateway claiming to be another gateway.
        sealed(life, &heartbeat(&DaemonId::gateway("a", 2))),
        // A gateway acknowledging membership, which only demuxes receive.
        sealed(life, &Body::MembershipAck { epoch: 1, term: 0 }),
    ];
    for datagram in unexpected {
        socket.send_to(&datagram, server.local_addr()).unwrap();
    }
    // A daemon the cluster does not have, sealed with a key derived from the right secret.
    let stranger = DaemonId::gateway("a", 9);
    let stranger_keys = daemon_keys(&secret, &stranger);
    let stranger_key = stranger_keys.sealing_key(&DaemonId::controller()).unwrap();
    socket
        .send_to(
            &forge(stranger_key, stranger.clone(), 1, life, &heartbeat(&stranger)),
            server.local_addr(),
        )
        .unwrap();
    let good = sealed(life, &heartbeat(&gw));
    socket.send_to(&good, server.local_addr()).unwrap();
    socket.send_to(&good, server.local_addr()).unwrap();

    let inbound = server.recv(PATIENCE).unwrap();
    assert_eq!(inbound.sender, gw);
    assert_eq!(inbound.incarnation, 7);
    assert_eq!(server.recv(Duration::from_millis(100)), None);
    let counters = server.counters();
    assert_eq!(counters.rejected(ControlError::Unexpected), 2);
    assert_eq!(counters.rejected(ControlError::UnknownSender), 1);
    assert_eq!(counters.rejected(ControlError::Replayed), 1);
    assert_eq!(server.address_of(&DaemonId::gateway("a", 2)), None);
    assert_eq!(server.address_of(&stranger), None);

    let unknown = server.send(&DaemonId::demux("b"), &membership(1, &[1])).unwrap_err();
    assert_eq!(unknown.kind(), std::io::ErrorKind::NotFound);
    // Removed from the cluster: its address, replay state and key go.
    server.set_members([DaemonId::demux("a")]);
    assert_eq!(server.address_of(&gw), None);
    assert_eq!(server.tracked(), (0, 0));
    socket.send_to(&good, server.local_addr()).unwrap();
    assert_eq!(server.recv(Duration::from_millis(200)), None);
    assert_eq!(counters.rejected(ControlError::UnknownSender), 2);
}

/// A flood of authentic-looking datagrams from ten thousand distinct sender names (every
/// one a valid wire name, sealed with keys derived from the right secret) leaves the server's
/// maps exactly as large as the cluster.
#[test]
fn a_flood_of_distinct_senders_creates_no_state() {
    let secret = ClusterSecret::generate();
    let mut server = ControlServer::bind(controller_keys(&secret), "127.0.0.1:0".parse().unwrap()).unwrap();
    let socket = ControlSocket::bind(&"127.0.0.1:0".parse().unwrap()).unwrap();
    for pair in 2..10_002u16 {
        let id = DaemonId::gateway("a", pair);
        let keys = daemon_keys(&secret, &id);
        let key = keys.sealing_key(&DaemonId::controller()).unwrap();
        let datagram = forge(key, id.clone(), 1, 0, &Body::Heartbeat(Box::new(Heartbeat::new(id))));
        socket.send_to(&datagram, server.local_addr()).unwrap();
        if pair % 500 == 0 {
            while server.recv(Duration::from_millis(1)).is_some() {}
        }
    }
    while server.recv(Duration::from_millis(50)).is_some() {}
    assert_eq!(server.tracked(), (0, 0));
    assert!(server.counters().rejected(ControlError::UnknownSender) > 1_000);
}

#[test]
fn a_daemon_heartbeats_to_every_member_and_fences_off_a_deposed_leader() {
    let dir = temp_dir("set");
    let unix = |name: &str| ControlAddr::Unix(dir.join(name));
    let secret = ClusterSecret::generate();
    let members = [DaemonId::demux("a")];
    let mut old = ControlServer::bind(
        Keyring::controller_member(0, secret.clone(), members.clone()),
        unix("c0"),
    )
    .unwrap();
    let mut new = ControlServer::bind(
        Keyring::controller_member(1, secret.clone(), members.clone()),
        unix("c1"),
    )
    .unwrap();
    let demux = DaemonId::demux("a");
    let client = ControlClient::new(
        daemon_keys(&secret, &demux),
        &[old.local_addr().clone(), new.local_addr().clone()],
        unix("demux"),
    )
    .unwrap();
    let counters = client.counters();
    let applied = Arc::new(Mutex::new(Vec::new()));
    let stop = StopFlag::new();
    let daemon = {
        let (applied, stop) = (Arc::clone(&applied), stop.clone());
        thread::spawn(move || {
            let report = || Heartbeat::new(DaemonId::demux("a"));
            let on_membership = |m: &Membership| {
                applied.lock().unwrap().push((m.term, m.epoch));
                true
            };
            client.run(&stop, Duration::from_millis(20), report, on_membership)
        })
    };
    let heartbeat_term = |i: &Inbound| match &i.body {
        Body::Heartbeat(h) => Some((h.membership_term, h.membership_epoch)),
        _ => None,
    };
    // Both members hear the daemon (each answers its first, unfresh heartbeat with a hello).
    wait_for(&mut old, heartbeat_term);
    wait_for(&mut new, heartbeat_term);

    // The old leader's push (term 5) is applied and acknowledged to it, with its term.
    old.send(&demux, &membership_of_term(5, 9, &[1])).unwrap();
    let ack = wait_for(&mut old, |i| match i.body {
        Body::MembershipAck { epoch, term } => Some((term, epoch)),
        _ => None,
    });
    assert_eq!(ack, (5, 9));
    // The new leader (term 7) pushes a lower epoch: a newer term wins.
    new.send(&demux, &membership_of_term(7, 2, &[1, 2])).unwrap();
    let ack = wait_for(&mut new, |i| match i.body {
        Body::MembershipAck { epoch, term } => Some((term, epoch)),
        _ => None,
    });
    assert_eq!(ack, (7, 2));
    wait_for(&mut old, |i| heartbeat_term(i).filter(|&t| t == (7, 2)));
    // The deposed leader wakes up and pushes a higher epoch of its old term: refused.
    let outdated = counters.get(ControlCounter::MembershipOutdated);
    old.send(&demux, &membership_of_term(5, 50, &[2])).unwrap();
    eventually("the deposed leader's push counted as outdated", || {
        counters.get(ControlCounter::MembershipOutdated) == outdated + 1
    });
    assert_eq!(
        *applied.lock().unwrap(),
        [(5, 9), (7, 2)],
        "nothing from the old term after the new one"
    );
    wait_for(&mut new, |i| heartbeat_term(i).filter(|&t| t == (7, 2)));

    stop.stop();
    daemon.join().unwrap();
}
