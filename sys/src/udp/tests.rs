//! Loopback tests of both directions together: batches round-trip, GSO runs stay whole up to
//! a GRO receiver, refusals fall back without loss.

use super::*;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

fn loopback(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, 0)
}

/// Receives until `want` datagrams arrived, polling, for at most a few seconds.
fn recv_all(socket: &UdpSocket, batch: &mut RecvBatch, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    recv_counting_messages(socket, batch, want).0
}

/// As [`recv_all`], also counting the kernel messages the datagrams came in.
fn recv_counting_messages(
    socket: &UdpSocket,
    batch: &mut RecvBatch,
    want: usize,
) -> (Vec<(Vec<u8>, SocketAddr)>, usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut got, mut messages) = (Vec::new(), 0);
    while got.len() < want && Instant::now() < deadline {
        poll_readable([socket], Duration::from_millis(100)).unwrap();
        let n = batch.recv(socket).unwrap();
        assert_eq!(n, batch.len());
        messages += batch.messages();
        for i in 0..n {
            assert!(!batch.truncated(i));
            let (data, src) = batch.get(i);
            got.push((data.to_vec(), src));
        }
    }
    (got, messages)
}

fn payload(i: usize) -> Vec<u8> {
    // Sizes from 1 to ~1400 bytes, contents unique per datagram.
    (0..1 + (i * 37) % 1400)
        .map(|b| (b as u8).wrapping_mul(7) ^ i as u8)
        .collect()
}

fn round_trip_batch(ip: IpAddr) {
    let (receiver, granted) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
    assert!(granted.recv_bytes > 0 && granted.send_bytes > 0);
    let dst = receiver.local_addr().unwrap();
    let senders: Vec<UdpSocket> = (0..2)
        .map(|_| bind_data_socket(loopback(ip), 1 << 20).unwrap().0)
        .collect();

    let mut send = [SendBatch::new(32, 2048), SendBatch::new(32, 2048)];
    let mut expected = Vec::new();
    for i in 0..64 {
        let which = i % 2;
        let data = payload(i);
        let buf = send[which].next_buf().unwrap();
        buf[..data.len()].copy_from_slice(&data);
        send[which].commit(data.len(), dst);
        expected.push((data, senders[which].local_addr().unwrap()));
    }
    assert!(send[0].is_full() && send[0].next_buf().is_none());
    for (batch, socket) in send.iter_mut().zip(&senders) {
        let report = batch.flush(socket);
        assert_eq!(report.sent, 32);
        assert_eq!(report.dropped, 0);
        assert!(batch.is_empty());
    }
    let expected_bytes: usize = expected.iter().map(|(d, _)| d.len()).sum();
    assert!(expected_bytes > 64);

    let mut recv = RecvBatch::new(16, 2048);
    let mut got = recv_all(&receiver, &mut recv, 64);
    assert_eq!(got.len(), 64);
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(recv.recv(&receiver).unwrap(), 0, "nothing left, non-blocking");
}

#[test]
fn batch_round_trips_over_ipv4_loopback() {
    round_trip_batch(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn batch_round_trips_over_ipv6_loopback() {
    round_trip_batch(IpAddr::V6(Ipv6Addr::LOCALHOST));
}

#[test]
fn poll_timeouts_round_up_to_whole_milliseconds() {
    assert_eq!(poll_timeout_ms(Duration::ZERO), 0);
    assert_eq!(poll_timeout_ms(Duration::from_nanos(1)), 1);
    assert_eq!(poll_timeout_ms(Duration::from_micros(300)), 1);
    assert_eq!(poll_timeout_ms(Duration::from_millis(1)), 1);
    assert_eq!(poll_timeout_ms(Duration::from_micros(1_001)), 2);
    assert_eq!(poll_timeout_ms(Duration::from_millis(100)), 100);
    assert_eq!(poll_timeout_ms(Duration::MAX), libc::c_int::MAX);
}

/// A wait shorter than a millisecond on an idle socket sleeps instead of returning at once
/// (which, in a loop waiting for a timer tick, would spin until the tick).
#[test]
fn an_idle_sub_millisecond_wait_sleeps_its_timeout() {
    let (idle, _) = bind_data_socket(loopback(Ipv4Addr::LOCALHOST.into()), 1 << 16).unwrap();
    let wait = Duration::from_micros(300);
    let start = Instant::now();
    assert_eq!(poll_readable([&idle], wait).unwrap(), [false]);
    assert!(start.elapsed() >= wait, "returned after {:?}", start.elapsed());
}

#[test]
fn oversize_datagram_is_flagged_truncated() {
    let (receiver, _) = bind_data_socket(loopback(Ipv4Addr::LOCALHOST.into()), 1 << 20).unwrap();
    let (sender, _) = bind_data_socket(loopback(Ipv4Addr::LOCALHOST.into()), 1 << 20).unwrap();
    sender.send_to(&[9u8; 300], receiver.local_addr().unwrap()).unwrap();
    let mut recv = RecvBatch::new(4, 100);
    poll_readable([&receiver], Duration::from_secs(2)).unwrap();
    assert_eq!(recv.recv(&receiver).unwrap(), 1);
    assert!(recv.truncated(0));
    assert_eq!(recv.get(0).0, &[9u8; 100][..]);
    recv.get_mut(0).0[0] = 1;
    assert_eq!(recv.get(0).0[0], 1);
}

#[test]
fn unsendable_datagrams_are_counted_not_fatal() {
    let (sender, _) = bind_data_socket(loopback(Ipv4Addr::LOCALHOST.into()), 1 << 20).unwrap();
    let (receiver, _) = bind_data_socket(loopback(Ipv4Addr::LOCALHOST.into()), 1 << 20).unwrap();
    let mut batch = SendBatch::new(4, 64);
    // An IPv6 destination on an IPv4 socket is refused by the kernel.
    assert!(batch.push(b"lost", SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 9)));
    assert!(batch.push(b"kept", receiver.local_addr().unwrap()));
    assert!(
        !batch.push(&[0; 65], receiver.local_addr().unwrap()),
        "larger than a slot"
    );
    let report = batch.flush(&sender);
    assert_eq!(
        report,
        SendReport {
            sent: 1,
            sent_bytes: 4,
            dropped: 1
        }
    );
    let mut recv = RecvBatch::new(4, 64);
    let got = recv_all(&receiver, &mut recv, 1);
    assert_eq!(got[0].0, b"kept");
}

#[test]
fn poll_times_out_when_idle() {
    let (socket, _) = bind_data_socket(loopback(Ipv4Addr::LOCALHOST.into()), 1 << 20).unwrap();
    let start = Instant::now();
    assert_eq!(poll_readable([&socket], Duration::from_millis(30)).unwrap(), [false]);
    assert!(start.elapsed() >= Duration::from_millis(25));
}

/// A datagram of `len` bytes (at least 3) saying who sent it (`tag`) and in which order.
fn tagged(tag: u8, seq: u16, len: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..len).map(|b| (b as u8).wrapping_mul(31) ^ tag).collect();
    data[0] = tag;
    data[1..3].copy_from_slice(&seq.to_be_bytes());
    data
}

/// A plain socket without GRO, as any non-braid peer would have.
fn plain_receiver(ip: IpAddr) -> UdpSocket {
    let socket = UdpSocket::bind(loopback(ip)).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(!gro_enabled(&socket).unwrap());
    socket
}

fn gro_receiver(ip: IpAddr) -> UdpSocket {
    let (socket, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
    assert!(gro_enabled(&socket).unwrap(), "this kernel should have UDP_GRO");
    socket
}

fn plain_recv_all(socket: &UdpSocket, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0; 65_536];
    (0..want)
        .map(|_| {
            let (n, src) = socket.recv_from(&mut buf).unwrap();
            (buf[..n].to_vec(), src)
        })
        .collect()
}

/// Queues every datagram in `datagrams` for `dst` and flushes; asserts nothing was lost.
fn send_all(batch: &mut SendBatch, socket: &UdpSocket, datagrams: &[(Vec<u8>, SocketAddr)]) {
    for (data, dst) in datagrams {
        assert!(batch.push(data, *dst));
    }
    let report = batch.flush(socket);
    let bytes: usize = datagrams.iter().map(|(d, _)| d.len()).sum();
    assert_eq!(
        report,
        SendReport {
            sent: datagrams.len(),
            sent_bytes: bytes,
            dropped: 0
        }
    );
}

fn equal_run_is_one_gso_message_and_arrives_whole(ip: IpAddr) {
    let (sender, _) = bind_data_socket(loopback(ip), 1 << 20).unwrap();
    let source = sender.local_addr().unwrap();
    let mut batch = SendBatch::new(64, 2048);
    let mut recv = RecvBatch::new(64, 2048);

    let gro = gro_receiver(ip);
    let to_gro: Vec<_> = (0..64)
        .map(|i| (tagged(1, i, 1000), gro.local_addr().unwrap()))
        .collect();
    send_all(&mut batch, &sender, &to_gro);
    assert_eq!((batch.gso_messages(), batch.gso_datagrams()), (1, 64));
    let (got, messages) = recv_counting_messages(&gro, &mut recv, 64);
    let expected: Vec<_> = to_gro.iter().map(|(d, _)| (d.clone(), source)).collect();
    assert_eq!(got, expected, "64 intact datagrams, in order, from the sender");
    assert_eq!(messages, 1, "the GSO train stays one message up to the GRO socket");
    assert_eq!(recv.coalesced_messages(), 1);

    let plain = plain_receiver(ip);
    let to_plain: Vec<_> = (0..64)
        .map(|i| (tagged(2, i, 1000), plain.local_addr().unwrap()))
        .collect();
    send_all(&mut batch, &sender, &to_plain);
    assert_eq!((batch.gso_messages(), batch.gso_datagrams()), (2, 128));
    let expected: Vec<_> = to_plain.iter().map(|(d, _)| (d.clone(), source)).collect();
    assert_eq!(plain_recv_all(&plain, 64), expected);
}

#[test]
fn equal_run_is_one_gso_message_over_ipv4() {
    equal_run_is_one_gso_message_and_arrives_whole(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn equal_run_is_one_gso_message_over_ipv6() {
    equal_run_is_one_gso_message_and_arrives_whole(IpAddr::V6(Ipv6Addr::LOCALHOST));
}

#[test]
fn mixed_sizes_and_destinations_arrive_in_order_per_destination() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (sender, _) = bind_data_socket(loopback(ip), 1 << 20).unwrap();
    let (gro, plain) = (gro_receiver(ip), plain_receiver(ip));
    let (a, b) = (gro.local_addr().unwrap(), plain.local_addr().unwrap());
    // (destination, length), sent grouped by destination: a's 5 + 4 equal ones and the shorter
    // 300 make one run, 1200, 1200 and the shorter 50 another, 900 goes alone; b's four 600s
    // and the shorter 3 make one run.
    let plan: Vec<(SocketAddr, usize)> = [(a, 800); 5]
        .into_iter()
        .chain([(b, 600); 3])
        .chain([(a, 800); 4])
        .chain([(a, 300), (b, 600), (a, 1200), (a, 1200), (a, 50), (b, 3), (a, 900)])
        .collect();
    let datagrams: Vec<_> = plan
        .iter()
        .enumerate()
        .map(|(i, &(dst, len))| (tagged(u8::from(dst == a), i as u16, len), dst))
        .collect();
    let mut batch = SendBatch::new(32, 2048);
    send_all(&mut batch, &sender, &datagrams);
    assert_eq!((batch.gso_messages(), batch.gso_datagrams()), (3, 10 + 3 + 5));

    let source = sender.local_addr().unwrap();
    let for_dst = |dst| -> Vec<_> {
        datagrams
            .iter()
            .filter(|(_, d)| *d == dst)
            .map(|(data, _)| (data.clone(), source))
            .collect()
    };
    let (to_a, to_b) = (for_dst(a), for_dst(b));
    let mut recv = RecvBatch::new(8, 2048);
    assert_eq!(recv_all(&gro, &mut recv, to_a.len()), to_a);
    assert_eq!(plain_recv_all(&plain, to_b.len()), to_b);
}

#[test]
fn runs_longer_than_the_segment_cap_are_split() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (sender, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
    let gro = gro_receiver(ip);
    let dst = gro.local_addr().unwrap();
    let datagrams: Vec<_> = (0..100).map(|i| (tagged(3, i, 500), dst)).collect();
    let mut batch = SendBatch::new(100, 600);
    send_all(&mut batch, &sender, &datagrams);
    assert_eq!((batch.gso_messages(), batch.gso_datagrams()), (2, 100), "64 + 36");

    let mut recv = RecvBatch::new(16, 2048);
    let (got, messages) = recv_counting_messages(&gro, &mut recv, 100);
    let data: Vec<_> = got.into_iter().map(|(d, _)| d).collect();
    assert_eq!(data, datagrams.into_iter().map(|(d, _)| d).collect::<Vec<_>>());
    assert_eq!(messages, 2);
}

/// 43 segments of 1489 bytes fill an IPv4 datagram up to 64027 bytes, 44 an IPv6 one up to
/// 65516: a run that ends with a shorter segment can use the last bytes exactly.
fn runs_fill_the_largest_datagram_exactly(ip: IpAddr, max_payload: usize) {
    let (sender, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
    let gro = gro_receiver(ip);
    let dst = gro.local_addr().unwrap();
    let segments = max_payload / 1489;
    let last = max_payload - segments * 1489;
    let mut datagrams: Vec<_> = (0..segments as u16).map(|i| (tagged(4, i, 1489), dst)).collect();
    datagrams.push((tagged(4, segments as u16, last), dst));
    // One byte more no longer fits: the run closes before it.
    datagrams.push((tagged(4, 99, 1489), dst));
    let mut batch = SendBatch::new(64, 1500);
    send_all(&mut batch, &sender, &datagrams);
    assert_eq!(
        (batch.gso_messages(), batch.gso_datagrams()),
        (1, segments as u64 + 1),
        "the kernel took a GSO message of exactly {max_payload} bytes"
    );
    let mut recv = RecvBatch::new(16, 2048);
    let got: Vec<_> = recv_all(&gro, &mut recv, datagrams.len())
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(got, datagrams.into_iter().map(|(d, _)| d).collect::<Vec<_>>());
}

#[test]
fn runs_fill_the_largest_ipv4_datagram_exactly() {
    runs_fill_the_largest_datagram_exactly(IpAddr::V4(Ipv4Addr::LOCALHOST), MAX_UDP_PAYLOAD_V4);
}

#[test]
fn runs_fill_the_largest_ipv6_datagram_exactly() {
    runs_fill_the_largest_datagram_exactly(IpAddr::V6(Ipv6Addr::LOCALHOST), MAX_UDP_PAYLOAD_V6);
}

#[test]
fn full_size_datagrams_are_split_by_the_byte_cap() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (sender, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
    let plain = plain_receiver(ip);
    let dst = plain.local_addr().unwrap();
    let datagrams: Vec<_> = (0..64).map(|i| (tagged(5, i, 1400), dst)).collect();
    let mut batch = SendBatch::new(64, 1400);
    send_all(&mut batch, &sender, &datagrams);
    assert_eq!(batch.gso_messages(), 2, "46 + 18 datagrams of 1400 bytes");
    let got: Vec<_> = plain_recv_all(&plain, 64).into_iter().map(|(d, _)| d).collect();
    assert_eq!(got, datagrams.into_iter().map(|(d, _)| d).collect::<Vec<_>>());
}

#[test]
fn gro_messages_split_into_datagrams_with_their_source() {
    let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let gro = gro_receiver(ip);
    let dst = gro.local_addr().unwrap();
    let senders: Vec<UdpSocket> = (0..2)
        .map(|_| bind_data_socket(loopback(ip), 1 << 20).unwrap().0)
        .collect();
    let mut expected = Vec::new();
    for (tag, sender) in senders.iter().enumerate() {
        // Ten of 700 bytes then a shorter last of 123.
        let mut datagrams: Vec<_> = (0..10).map(|i| (tagged(tag as u8, i, 700), dst)).collect();
        datagrams.push((tagged(tag as u8, 10, 123), dst));
        let mut batch = SendBatch::new(16, 1024);
        send_all(&mut batch, sender, &datagrams);
        assert_eq!(batch.gso_messages(), 1);
        let source = sender.local_addr().unwrap();
        expected.extend(datagrams.into_iter().map(|(d, _)| (d, source)));
    }

    let mut recv = RecvBatch::new(8, 2048);
    let (got, messages) = recv_counting_messages(&gro, &mut recv, 22);
    assert_eq!(got, expected);
    assert_eq!(messages, 2);
    assert_eq!(got[10].0.len(), 123);
    assert_eq!(recv.overflow_drops(), 0);
}

#[test]
fn segments_longer_than_buf_size_are_flagged_truncated() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let gro = gro_receiver(ip);
    let (sender, _) = bind_data_socket(loopback(ip), 1 << 20).unwrap();
    let dst = gro.local_addr().unwrap();
    let mut batch = SendBatch::new(8, 1024);
    let datagrams: Vec<_> = (0..3).map(|i| (tagged(6, i, 700), dst)).collect();
    send_all(&mut batch, &sender, &datagrams);

    let mut recv = RecvBatch::new(4, 500);
    poll_readable([&gro], Duration::from_secs(2)).unwrap();
    assert_eq!(recv.recv(&gro).unwrap(), 3);
    assert_eq!(recv.messages(), 1);
    for (i, (data, _)) in datagrams.iter().enumerate() {
        assert!(recv.truncated(i));
        assert_eq!(recv.get(i).0, &data[..500]);
    }
}

#[test]
fn refused_segmentation_falls_back_without_loss() {
    // With UDP checksums off (SO_NO_CHECK, 11 on common architectures) the kernel refuses
    // GSO with EINVAL.
    const SO_NO_CHECK: libc::c_int = 11;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (sender, _) = bind_data_socket(loopback(ip), 1 << 20).unwrap();
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int and its size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            sender.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NO_CHECK,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let plain = plain_receiver(ip);
    let dst = plain.local_addr().unwrap();
    let datagrams: Vec<_> = (0..40)
        .map(|i| (tagged(7, i, if i < 20 { 3 } else { 1000 }), dst))
        .collect();
    let mut batch = SendBatch::new(40, 1024);
    assert!(batch.gso_enabled());
    send_all(&mut batch, &sender, &datagrams);
    assert!(!batch.gso_enabled(), "the refusal turned GSO off for good");
    assert_eq!(batch.gso_messages(), 0);
    let got: Vec<_> = plain_recv_all(&plain, 40).into_iter().map(|(d, _)| d).collect();
    assert_eq!(got, datagrams.into_iter().map(|(d, _)| d).collect::<Vec<_>>());
}

#[test]
fn gso_can_be_switched_off() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (sender, _) = bind_data_socket(loopback(ip), 1 << 20).unwrap();
    let plain = plain_receiver(ip);
    let dst = plain.local_addr().unwrap();
    let datagrams: Vec<_> = (0..8).map(|i| (tagged(8, i, 100), dst)).collect();
    let mut batch = SendBatch::new(8, 128);
    batch.set_gso(false);
    send_all(&mut batch, &sender, &datagrams);
    assert_eq!(batch.gso_messages(), 0);
    assert_eq!(plain_recv_all(&plain, 8).len(), 8);
    batch.set_gso(true);
    send_all(&mut batch, &sender, &datagrams);
    assert_eq!(batch.gso_messages(), 1);
    assert_eq!(plain_recv_all(&plain, 8).len(), 8);
}

/// Datagrams per second of 1400 bytes over IPv4 loopback, with and without offload. A
/// measurement, not a check: `cargo test -p braid-sys --release -- --ignored
/// offload_throughput --nocapture`.
#[test]
#[ignore = "measurement; run in release mode with --ignored --nocapture"]
fn offload_throughput() {
    for (gso, gro) in [(false, false), (true, false), (true, true)] {
        let (sent, received) = measure_loopback(gso, gro, Duration::from_secs(2));
        println!(
            "GSO {:>3}, GRO {:>3}: sent {:>9.0} datagrams/s, received {:>9.0} datagrams/s ({:.2} Gbit/s)",
            if gso { "on" } else { "off" },
            if gro { "on" } else { "off" },
            sent,
            received,
            received * 1400.0 * 8.0 / 1e9
        );
    }
}

/// Sends 1400-byte datagrams from a blocking socket for `duration` while another thread
/// receives them; returns datagrams per second sent and received.
fn measure_loopback(gso: bool, gro: bool, duration: Duration) -> (f64, f64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (receiver, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
    set_gro(&receiver, gro).unwrap();
    let (sender, _) = bind_data_socket(loopback(ip), DEFAULT_SOCKET_BUFFER_BYTES).unwrap();
    sender.set_nonblocking(false).unwrap();
    let dst = receiver.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let counting = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut recv = RecvBatch::new(64, 2048);
            let mut received = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if poll_readable([&receiver], Duration::from_millis(50)).unwrap()[0] {
                    received += recv.recv(&receiver).unwrap() as u64;
                }
            }
            received
        })
    };
    let mut batch = SendBatch::new(64, 1400);
    batch.set_gso(gso);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        while let Some(buf) = batch.next_buf() {
            buf.fill(0x5a);
            batch.commit(1400, dst);
        }
        sent += batch.flush(&sender).sent as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let received = counting.join().unwrap();
    (sent as f64 / elapsed, received as f64 / elapsed)
}

#[test]
fn a_socket_that_is_not_read_reports_what_its_full_buffer_dropped() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // The smallest buffer the kernel grants (a few KiB) overflows within a few datagrams.
    let (receiver, _) = bind_data_socket(loopback(ip), 1).unwrap();
    set_gro(&receiver, false).unwrap();
    let mut drops = ReceiveDrops::new(&receiver);
    assert_eq!(drops.take(&receiver), 0, "nothing arrived yet");
    let sender = UdpSocket::bind(loopback(ip)).unwrap();
    let to = receiver.local_addr().unwrap();
    for _ in 0..200 {
        sender.send_to(&[7u8; 1000], to).unwrap();
    }
    let mut batch = RecvBatch::new(64, 2048);
    let mut received = 0;
    loop {
        let n = batch.recv(&receiver).unwrap();
        if n == 0 {
            break;
        }
        received += n;
    }
    let dropped = drops.take(&receiver);
    assert!(dropped > 0, "received {received} of 200 and no drop counted");
    assert_eq!(
        received as u64 + dropped,
        200,
        "every datagram is either received or counted"
    );
    assert_eq!(drops.take(&receiver), 0, "a second reading reports only new drops");
}
