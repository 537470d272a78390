//! End-to-end tests over real loopback sockets: an in-process server and the library client.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use braid_bench::client::{run_tcp, run_udp, TcpOptions, UdpOptions};
use braid_bench::control::{client_control, DataHeader, Message, VERSION};
use braid_bench::pattern::Pattern;
use braid_bench::probe::{run_probe, ProbeOptions};
use braid_bench::server::{Server, ServerHandle};
use braid_bench::spec::{Direction, TestSpec};

fn server() -> ServerHandle {
    Server::bind("127.0.0.1:0".parse().unwrap()).unwrap().spawn().unwrap()
}

fn tcp(server: SocketAddr, streams: u32, direction: Direction) -> TcpOptions {
    TcpOptions {
        server,
        streams,
        duration: Duration::from_secs(1),
        interval: Duration::from_millis(500),
        direction,
        rate_bps: None,
    }
}

fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn four_tcp_streams_for_one_second_verify_every_byte() {
    let server = server();
    let mut seen = 0;
    let report = run_tcp(&tcp(server.addr(), 4, Direction::Forward), &mut |_| seen += 1).unwrap();
    assert!(report.integrity_ok);
    assert!(report.complete);
    assert!(report.aggregate_mbps > 0.0);
    assert_eq!(report.streams.len(), 4);
    for stream in &report.streams {
        assert!(stream.bytes > 0, "stream {} carried nothing", stream.index);
        assert_eq!(stream.corrupted_bytes, 0);
    }
    assert_eq!(report.intervals.len(), 2);
    assert_eq!(seen, 2, "each interval is reported as it completes");
    let interval_bytes: u64 = report.intervals.iter().map(|i| i.bytes).sum();
    assert!(interval_bytes <= report.bytes && interval_bytes > report.bytes / 2);
    // The server counts the test once it has sent the result the client just read.
    wait_for("the server to count the test", || {
        server.counters().tests_completed.load(Ordering::Relaxed) == 1
    });
    server.stop();
}

#[test]
fn a_tcp_rate_paces_the_streams_to_it() {
    // Loopback carries gigabits; 20 Mbit/s over 2 streams can only come from the pacing.
    let server = server();
    let mut options = tcp(server.addr(), 2, Direction::Forward);
    options.duration = Duration::from_secs(2);
    options.rate_bps = Some(20_000_000);
    let report = run_tcp(&options, &mut |_| {}).unwrap();
    assert!(report.integrity_ok && report.complete);
    assert!(
        report.aggregate_mbps > 10.0 && report.aggregate_mbps < 26.0,
        "paced to 20 Mbit/s: {}",
        report.aggregate_mbps
    );
    for stream in &report.streams {
        assert!(stream.mbps < 13.0, "each stream gets its share: {}", stream.mbps);
    }
    server.stop();
}

#[test]
fn reverse_and_bidir_streams_are_verified_by_whichever_end_receives() {
    let server = server();
    let reverse = run_tcp(&tcp(server.addr(), 2, Direction::Reverse), &mut |_| {}).unwrap();
    assert!(reverse.integrity_ok && reverse.complete);
    assert!(reverse.streams.iter().all(|s| s.bytes > 0));

    let bidir = run_tcp(&tcp(server.addr(), 2, Direction::Bidir), &mut |_| {}).unwrap();
    assert_eq!(bidir.streams.len(), 4);
    assert!(bidir.integrity_ok && bidir.complete);
    assert!(bidir.streams.iter().all(|s| s.bytes > 0));
    server.stop();
}

/// A client speaking the protocol by hand sends one stream with a flipped byte.
#[test]
fn a_corrupted_stream_is_detected_and_located() {
    let server = server();
    let spec = TestSpec {
        test_id: 77,
        streams: 1,
        duration_ms: 300,
        interval_ms: 300,
        direction: Direction::Forward,
        udp: None,
        tcp_rate_bps: None,
        boot_id: String::new(),
    };
    let (mut reader, mut writer) = client_control(TcpStream::connect(server.addr()).unwrap()).unwrap();
    writer
        .send(&Message::Hello {
            version: VERSION,
            spec: spec.clone(),
        })
        .unwrap();
    assert!(matches!(reader.recv().unwrap(), Message::Accepted { .. }));

    let mut data = TcpStream::connect(server.addr()).unwrap();
    DataHeader { test_id: 77, stream: 0 }.write_to(&mut data).unwrap();
    assert_eq!(reader.recv().unwrap(), Message::Started);
    let mut payload = vec![0u8; 100_000];
    Pattern::new(77, 0).fill(0, &mut payload);
    payload[54_321] ^= 0x40;
    data.write_all(&payload).unwrap();
    data.shutdown(Shutdown::Write).unwrap();

    let result = loop {
        match reader.recv().unwrap() {
            Message::Sample(_) => continue,
            Message::TcpResult(result) => break result,
            other => panic!("unexpected {other:?}"),
        }
    };
    let receipt = &result.received[0];
    assert_eq!(receipt.bytes, 100_000);
    assert_eq!(receipt.corrupted_bytes, 1);
    assert_eq!(receipt.first_bad_offset, Some(54_321));
    assert!(receipt.complete);
    server.stop();
}

#[test]
fn udp_at_a_tiny_rate_loses_and_reorders_nothing() {
    let server = server();
    let options = UdpOptions {
        server: server.addr(),
        flows: 3,
        duration: Duration::from_secs(1),
        interval: Duration::from_millis(500),
        rate_bps: 300_000,
        size: 250,
        drain: Duration::from_millis(200),
    };
    let report = run_udp(&options, &mut |_| {}).unwrap();
    assert_eq!(report.flows.len(), 3);
    for flow in &report.flows {
        assert!(flow.sent >= 40, "flow {} sent only {}", flow.index, flow.sent);
        assert_eq!(flow.received, flow.sent);
        assert_eq!(
            (flow.lost, flow.reordered, flow.duplicates, flow.corrupted),
            (0, 0, 0, 0)
        );
        assert!(flow.latency_us.is_some(), "same host shares the monotonic clock");
    }
    // 300 kbit/s for 1 s in 250-byte datagrams: 150 datagrams.
    assert!((140..=152).contains(&report.totals.sent), "sent {}", report.totals.sent);
    assert!(report.clocks_shared && report.integrity_ok);
    assert_eq!(report.intervals.len(), 2);
    server.stop();
}

#[test]
fn garbage_is_counted_and_the_server_keeps_serving() {
    let server = server();
    let addr = server.addr();
    let mut foreign = TcpStream::connect(addr).unwrap();
    foreign.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut stray_data = TcpStream::connect(addr).unwrap();
    DataHeader {
        test_id: 12345,
        stream: 0,
    }
    .write_to(&mut stray_data)
    .unwrap();
    let (mut reader, mut writer) = client_control(TcpStream::connect(addr).unwrap()).unwrap();
    writer.send(&Message::UdpDone { sent: vec![] }).unwrap();
    assert!(matches!(reader.recv().unwrap(), Message::Error { .. }));

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"\x00\x01garbage", addr).unwrap();
    let mut wrong_test = [0u8; 64];
    braid_bench::datagram::TestHeader {
        test_id: 999,
        flow: 0,
        seq: 0,
        sent_ns: 0,
    }
    .write(&Pattern::new(999, 0), &mut wrong_test);
    udp.send_to(&wrong_test, addr).unwrap();

    let c = server.counters();
    wait_for("refusals to be counted", || {
        c.foreign_connections.load(Ordering::Relaxed) == 1
            && c.data_connections_rejected.load(Ordering::Relaxed) == 1
            && c.hellos_rejected.load(Ordering::Relaxed) == 1
            && c.udp_malformed.load(Ordering::Relaxed) == 1
            && c.udp_unknown_test.load(Ordering::Relaxed) == 1
    });
    let report = run_tcp(&tcp(addr, 1, Direction::Forward), &mut |_| {}).unwrap();
    assert!(report.integrity_ok && report.bytes > 0);
    server.stop();
}

#[test]
fn probes_are_echoed_for_every_flow() {
    let server = server();
    let options = ProbeOptions {
        server: server.addr(),
        flows: 12,
        timeout: Duration::from_secs(2),
        attempts: 2,
    };
    let report = run_probe(&options).unwrap();
    assert!(report.all_answered, "{report:?}");
    assert_eq!(report.answered, 12);
    assert!(report.max_rtt_ms.is_some());
    // The server counts an echo after sending it, so the client may see the last one first.
    wait_for("the server to count every echo", || {
        server.counters().probes_echoed.load(Ordering::Relaxed) == 12
    });
    server.stop();
}

#[test]
fn probes_to_a_silent_port_go_unanswered() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let options = ProbeOptions {
        server: silent.local_addr().unwrap(),
        flows: 3,
        timeout: Duration::from_millis(300),
        attempts: 2,
    };
    let report = run_probe(&options).unwrap();
    assert_eq!(report.answered, 0);
    assert_eq!(report.unanswered, vec![0, 1, 2]);
    assert!(!report.all_answered);
}
