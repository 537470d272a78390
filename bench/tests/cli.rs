//! The `braid-bench` process: JSON output and exit codes.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread;

use braid_bench::control::{read_preamble, server_control, Count, DataHeader, Message, Sample, TcpSideResult};
use braid_bench::pattern::Pattern;
use braid_bench::server::Server;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_braid-bench"))
}

#[test]
fn client_json_has_the_documented_fields() {
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap().spawn().unwrap();
    let port = server.addr().port().to_string();
    let out = bench()
        .args([
            "client",
            "-c",
            "127.0.0.1",
            "--port",
            &port,
            "-P",
            "2",
            "-t",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["aggregate_mbps"].as_f64().unwrap() > 0.0);
    assert_eq!(json["integrity_ok"], true);
    assert_eq!(json["intervals"].as_array().unwrap().len(), 1);
    let streams = json["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    for key in ["index", "bytes", "mbps", "retransmits", "corrupted_bytes"] {
        assert!(streams[0].get(key).is_some(), "missing {key}");
    }

    let out = bench()
        .args([
            "client",
            "-c",
            "127.0.0.1",
            "--port",
            &port,
            "-u",
            "-b",
            "100k",
            "-l",
            "100",
            "-t",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let flow = &json["flows"][0];
    for key in [
        "index",
        "sent",
        "received",
        "lost",
        "reordered",
        "duplicates",
        "corrupted",
        "jitter_ms",
        "max_gap_ms",
    ] {
        assert!(flow.get(key).is_some(), "missing {key}");
    }
    assert!(flow["latency_us"]["p99"].as_f64().is_some());
    assert_eq!(json["totals"]["lost"], 0);
    server.stop();
}

/// A server that sends one reverse stream with a flipped byte: the client must exit non-zero.
#[test]
fn client_exits_non_zero_when_the_bytes_it_receives_are_corrupted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let fake = thread::spawn(move || {
        let (mut control, _) = listener.accept().unwrap();
        read_preamble(&mut control).unwrap();
        let (mut reader, mut writer) = server_control(control).unwrap();
        let Message::Hello { spec, .. } = reader.recv().unwrap() else {
            panic!("no hello")
        };
        writer.send(&Message::Accepted { clocks_shared: false }).unwrap();
        let (mut data, _): (TcpStream, _) = listener.accept().unwrap();
        read_preamble(&mut data).unwrap();
        let header = DataHeader::read_from(&mut data).unwrap();
        writer.send(&Message::Started).unwrap();
        let mut payload = vec![0u8; 10_000];
        Pattern::new(spec.test_id, header.stream).fill(0, &mut payload);
        payload[9_000] ^= 1;
        data.write_all(&payload).unwrap();
        drop(data);
        let sample = Sample {
            tick: 1,
            received: vec![],
            retransmits: vec![Count { stream: 0, value: 0 }],
        };
        writer.send(&Message::Sample(sample)).unwrap();
        writer.send(&Message::TcpResult(TcpSideResult::default())).unwrap();
    });
    let out = bench()
        .args([
            "client",
            "-c",
            "127.0.0.1",
            "--port",
            &port,
            "-t",
            "0.5",
            "-i",
            "0.5",
            "--reverse",
        ])
        .output()
        .unwrap();
    fake.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("CORRUPTED"), "{stdout}");
}

#[test]
fn help_explains_every_client_option() {
    let out = bench().args(["client", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--connect",
        "--port",
        "--parallel",
        "--time",
        "--reverse",
        "--bidir",
        "--json",
        "--interval",
        "--udp",
        "--rate",
        "--size",
    ] {
        assert!(help.contains(option), "help lacks {option}");
    }
}
