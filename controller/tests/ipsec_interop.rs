//! IPsec interop against a real strongSwan 5.9.8 peer (charon + kernel-libipsec, ESP in UDP on
//! port 4500), in two lab namespaces built by `support/interop_net.rs`, with charon driven by
//! `support/strongswan.rs`.
//!
//! Run: `cargo test --release -p braid --test ipsec_interop -- --ignored --nocapture` (root).

#![allow(dead_code)]

mod support;

#[path = "support/interop_net.rs"]
mod interop_net;
#[path = "support/strongswan.rs"]
mod strongswan;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use interop_net::{
    udp_roundtrip, InteropNet, UdpEcho, BRAID_SITE, BRAID_SITE_HOST, ECHO_PORT, GW_WAN, SS_SITE, SS_SITE_HOST, SS_WAN,
};
use strongswan::{skip_without_strongswan, Charon, IkeSa, SwanConf};

/// Unwraps a harness result, panicking with its (already detailed) error.
fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// One UDP datagram from the braid site host (in the gw namespace) to the strongSwan site's
/// echo and back.
fn echo_through_tunnel(net: &InteropNet, payload: &[u8]) -> Duration {
    ok(udp_roundtrip(
        net.gw_ns(),
        SocketAddrV4::new(BRAID_SITE_HOST, 0),
        SocketAddrV4::new(SS_SITE_HOST, ECHO_PORT),
        payload,
        3,
        Duration::from_secs(2),
    ))
}

/// Lines of `log` containing any of `needles`.
fn log_lines(log: &str, needles: &[&str]) -> String {
    log.lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The installed `site` CHILD_SA of the only IKE_SA.
fn only_sa(sas: &[IkeSa]) -> &IkeSa {
    assert_eq!(sas.len(), 1, "expected one IKE_SA: {sas:#?}");
    &sas[0]
}

/// The harness's own proof: two charons, one standing in for a braid gateway in the gw
/// namespace (IKE from and to UDP 4500, as braid gateways only listen there), set up IKEv2 with
/// AES-256-GCM / X25519 and an ESP-in-UDP CHILD_SA, carry a UDP echo, survive a CHILD and an IKE
/// rekey and a restart of the strongSwan side, and put nothing but UDP 4500 on the wire.
#[test]
#[ignore = "harness self-check: strongSwan against strongSwan; run with --ignored when changing the harness"]
fn harness_strongswan_to_strongswan() {
    const TEST: &str = "harness_strongswan_to_strongswan";
    if skip_without_strongswan(TEST) {
        return;
    }
    let started = Instant::now();
    let net = InteropNet::new("self");
    net.add_site_iface(net.gw_ns(), &format!("{BRAID_SITE_HOST}/24"));
    let capture = net.capture(net.ss_ns(), "ss-wan.pcap", "ip");
    let echo = net.start_echo();

    // The strongSwan peer as the braid tests will use it (here the responder).
    let ss_conf = SwanConf::new(SS_WAN, GW_WAN, SS_SITE, BRAID_SITE);
    // The braid stand-in: initiates from 4500 to 4500 (SwanConf's default ports), as braid
    // gateways only listen there.
    let gw_conf = SwanConf::new(GW_WAN, SS_WAN, BRAID_SITE, SS_SITE);
    assert_eq!((gw_conf.local_port, gw_conf.remote_port), (Some(4500), Some(4500)));
    let mut ss = ok(Charon::start(net.ss_ns(), &net.dir().join("ss"), &ss_conf));
    let gw = ok(Charon::start(net.gw_ns(), &net.dir().join("gw"), &gw_conf));
    eprintln!(
        "{TEST}: charons up (ss pid {}, gw pid {}) after {:?}",
        ss.pid(),
        gw.pid(),
        started.elapsed()
    );

    // IKE_SA_INIT + IKE_AUTH with the CHILD_SA.
    let t = Instant::now();
    let initiate_log = ok(gw.initiate("site"));
    let ike = ok(ss.wait_established(Duration::from_secs(10)));
    eprintln!("{TEST}: IKE and CHILD SA up in {:?}\n{initiate_log}", t.elapsed());
    eprintln!("{TEST}: swanctl --list-sas (ss):\n{}", ss.list_sas());
    assert_eq!(
        ike.proposal(),
        "AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519",
        "{ike:#?}"
    );
    assert_eq!((ike.local_port, ike.remote_port), (4500, 4500), "IKE ports: {ike:#?}");
    assert!(ike.nat_remote, "encap = yes makes the peer look NATed: {ike:#?}");
    assert!(!ike.initiator, "ss is the responder: {ike:#?}");
    let child = ike.installed_child("site").expect("installed child").clone();
    assert_eq!(child.proposal(), "AES_GCM_16-256", "{child:#?}");
    assert!(child.encap, "ESP must be UDP-encapsulated: {child:#?}");
    assert_eq!((child.mode.as_str(), child.protocol.as_str()), ("TUNNEL", "ESP"));
    assert_eq!(child.local_ts, vec![SS_SITE.to_string()]);
    assert_eq!(child.remote_ts, vec![BRAID_SITE.to_string()]);
    let gw_child = only_sa(&gw.sas()).installed_child("site").expect("gw child").clone();
    assert_eq!(
        (gw_child.spi_in.as_str(), gw_child.spi_out.as_str()),
        (child.spi_out.as_str(), child.spi_in.as_str()),
        "both sides agree on the SPIs"
    );
    for (who, charon) in [("gw", &gw), ("ss", &ss)] {
        ok(charon.wait_for_log(
            "selected proposal: IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519",
            Duration::from_secs(1),
        ));
        ok(charon.wait_for_log(
            "selected proposal: ESP:AES_GCM_16_256/NO_EXT_SEQ",
            Duration::from_secs(1),
        ));
        eprintln!(
            "{TEST}: {who} log:\n{}",
            log_lines(
                &charon.log(),
                &[
                    "selected proposal",
                    "behind NAT",
                    "sending packet",
                    "received packet",
                    "established",
                    "installing route",
                    "TUN"
                ]
            )
        );
    }

    // Traffic through ESP.
    let rtt = echo_through_tunnel(&net, b"braid-interop-probe-1");
    eprintln!("{TEST}: echo through the tunnel in {rtt:?}");
    assert_eq!(echo.count(), 1, "the echo saw exactly the one probe");
    assert!(
        echo.peers().iter().all(|p| p.ip() == BRAID_SITE_HOST),
        "the probe arrived from the braid site host, i.e. decapsulated: {:?}",
        echo.peers()
    );
    let child = only_sa(&ss.sas()).installed_child("site").expect("child").clone();
    assert!(
        child.packets_in >= 1 && child.packets_out >= 1,
        "the probe went through the CHILD_SA: {child:#?}"
    );

    // CHILD rekey initiated by the braid stand-in.
    let t = Instant::now();
    let rekeyed = ok(gw.rekey_child("site", Duration::from_secs(10)));
    assert_ne!(rekeyed.spi_in, gw_child.spi_in);
    let ss_rekeyed = ok(
        ss.wait_for_sas("the rekeyed CHILD_SA alone", Duration::from_secs(10), |sas| {
            let sa = sas.first()?;
            let c = sa.installed_child("site")?;
            (sas.len() == 1 && c.spi_in == rekeyed.spi_out && c.spi_out == rekeyed.spi_in).then(|| c.clone())
        }),
    );
    eprintln!(
        "{TEST}: CHILD rekeyed in {:?}: SPIs {}/{} -> {}/{}",
        t.elapsed(),
        gw_child.spi_in,
        gw_child.spi_out,
        rekeyed.spi_in,
        rekeyed.spi_out
    );
    echo_through_tunnel(&net, b"braid-interop-probe-2");
    let after = only_sa(&gw.sas()).installed_child("site").expect("child").clone();
    assert_eq!(after.spi_in, rekeyed.spi_in);
    assert!(
        after.packets_out >= 1 && after.packets_in >= 1,
        "traffic used the new CHILD_SA: {after:#?}"
    );
    let _ = ss_rekeyed;
    eprintln!(
        "{TEST}: swanctl --list-sas (gw) after the CHILD rekey:\n{}",
        gw.list_sas()
    );

    // IKE rekey: the CHILD_SA moves to the new IKE_SA.
    let t = Instant::now();
    let new_ike = ok(gw.rekey_ike("braid", Duration::from_secs(10)));
    assert_ne!(new_ike.initiator_spi, ike.initiator_spi);
    assert!(new_ike.installed_child("site").is_some(), "{new_ike:#?}");
    eprintln!("{TEST}: IKE rekeyed in {:?}", t.elapsed());
    echo_through_tunnel(&net, b"braid-interop-probe-3");
    let counters = gw.counters();
    eprintln!("{TEST}: gw counters: {counters:?}");
    assert_eq!(counters.get("ike-rekey-init"), Some(&1), "{counters:?}");
    assert_eq!(counters.get("child-rekey"), Some(&1), "{counters:?}");

    // The strongSwan side restarts (SIGTERM: it deletes its SAs) and the stand-in sets up again.
    let t = Instant::now();
    let old_pid = ss.pid();
    ok(ss.restart());
    assert_ne!(ss.pid(), old_pid);
    ok(
        gw.wait_for_sas("no IKE_SA after the peer's DELETE", Duration::from_secs(10), |sas| {
            sas.is_empty().then_some(())
        }),
    );
    ok(gw.initiate("site"));
    ok(ss.wait_established(Duration::from_secs(10)));
    echo_through_tunnel(&net, b"braid-interop-probe-4");
    eprintln!(
        "{TEST}: ss restarted and the tunnel re-established in {:?}",
        t.elapsed()
    );
    assert_eq!(echo.count(), 4, "each probe reached the echo once");

    // The wire: only UDP 4500 (IKE behind the non-ESP marker, ESP in UDP), nothing in clear.
    drop(gw);
    drop(ss);
    let pcap = support::read_pcap(&capture.stop());
    assert_eq!(pcap.other_ipv4, 0, "IPv4 that is not UDP (plain ESP?) on the WAN");
    assert!(!pcap.udp.is_empty(), "nothing captured");
    let (mut ike_msgs, mut esp, mut keepalives) = (0, 0, 0);
    for f in &pcap.udp {
        assert_eq!((f.src_port, f.dst_port), (4500, 4500), "UDP outside 4500<->4500: {f:?}");
        match f.payload.as_slice() {
            [0, 0, 0, 0, ..] => ike_msgs += 1,
            [0xff] => keepalives += 1,
            _ => esp += 1,
        }
        assert!(
            !support::contains(&f.payload, b"braid-interop-probe"),
            "a probe crossed the WAN in clear"
        );
    }
    eprintln!(
        "{TEST}: WAN capture: {} frames, {} UDP 4500<->4500 ({ike_msgs} IKE, {esp} ESP, {keepalives} NAT keepalives)",
        pcap.frames,
        pcap.udp.len()
    );
    assert!(esp >= 8, "4 probes there and back are 8 ESP packets, saw {esp}");
    assert!(
        ike_msgs >= 8,
        "IKE_SA_INIT + IKE_AUTH twice alone are 8 messages, saw {ike_msgs}"
    );
    eprintln!("{TEST}: passed in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// braid against strongSwan: a braid-gw process in the gw namespace (site a), strongSwan as the
// whole peer site (site b). The test plays site a's demux: it sends GENEVE to the gateway and
// reads what comes back.
// ---------------------------------------------------------------------------------------------

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use braid_core::keys::{ClusterSecret, PresharedKey};

const PSK: &str = "braid and strongSwan share this key";
/// The fake demux and the gateway's LAN socket, on the gw namespace's loopback.
const DEMUX: &str = "127.0.0.1:6081";
const GW_LAN: &str = "127.0.0.1:6082";

/// What the braid side is configured with.
struct BraidSide {
    ike_proposals: &'static str,
    esp_proposals: &'static str,
    /// `[a]`: braid initiates; `[b]`: only strongSwan does.
    initiators: &'static str,
    child_lifetime_s: u64,
    ike_lifetime_s: u64,
    /// The gateway seals ESP on a thread of its own.
    seal_thread: bool,
}

impl Default for BraidSide {
    fn default() -> Self {
        BraidSide {
            ike_proposals:
                "[aes256gcm16-prfsha256-x25519, aes256gcm16-prfsha256-ecp256, chacha20poly1305-prfsha256-x25519]",
            esp_proposals: "[aes256gcm16-esn-noesn, chacha20poly1305-esn-noesn]",
            initiators: "[a]",
            child_lifetime_s: 3600,
            ike_lifetime_s: 14400,
            seal_thread: false,
        }
    }
}

/// A braid gateway process for pair 1 of site a, in the gw namespace, killed on drop.
struct BraidGateway {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl BraidGateway {
    fn start(net: &InteropNet, side: &BraidSide) -> BraidGateway {
        let dir = net.dir().join("braid");
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret.key");
        if !secret.exists() {
            braid_core::keys::write_secret_file(&secret, &ClusterSecret::generate().to_base64()).unwrap();
            PresharedKey::from_file_content(PSK.as_bytes())
                .unwrap()
                .write_new(&dir.join("ipsec.psk"))
                .unwrap();
        }
        let yaml = format!(
            "cluster:\n  name: interop\n  secret_file: secret.key\n  suite: ipsec\n\
             ipsec:\n  psk_file: ipsec.psk\n  ike_proposals: {}\n  esp_proposals: {}\n  \
             initiators: {}\n  child_lifetime_s: {}\n  ike_lifetime_s: {}\n  seal_thread: {}\n\
             controller:\n  address: 127.0.0.1:7400\n\
             sites:\n  a:\n    prefixes: [{BRAID_SITE}]\n    demux: {{tun: braid0, geneve: \"{DEMUX}\"}}\n  \
             b:\n    prefixes: [{SS_SITE}]\n    demux: {{tun: braid0, geneve: \"127.0.0.2:6081\"}}\n\
             pairs:\n  - id: 1\n    gateways:\n      a: {{geneve: \"{GW_LAN}\", wan: \"{GW_WAN}:4500\"}}\n      \
             b: {{geneve: \"127.0.0.2:6082\", wan: \"{SS_WAN}:4500\"}}\n",
            side.ike_proposals,
            side.esp_proposals,
            side.initiators,
            side.child_lifetime_s,
            side.ike_lifetime_s,
            side.seal_thread
        );
        let config = dir.join("cluster.yaml");
        std::fs::write(&config, yaml).unwrap();
        let cfg = braid_core::config::ClusterConfig::load(&config).unwrap();
        let cluster_secret = ClusterSecret::load(&cfg.cluster.secret_file).unwrap();
        braid_core::keys::provision::ensure_all(&cfg, &cluster_secret).unwrap();
        let log = dir.join("gw-a1.log");
        let bin = support::bin_dir().join("braid-gw");
        let args: Vec<String> = ["--config", config.to_str().unwrap(), "--site", "a", "--pair", "1", "-v"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let child = braid_lab::netns::spawn_in(net.gw_ns(), &bin, &args, &log).expect("start braid-gw");
        BraidGateway { child, dir, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        // SAFETY: signalling the process group of a child we started.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for BraidGateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "braid-gw log ({}):\n{}",
                self.dir.display(),
                strongswan::tail(&self.log(), 60)
            );
        }
        self.kill();
    }
}

/// The test's stand-in for site a's demux: GENEVE to and from the gateway's LAN socket.
struct FakeDemux {
    socket: UdpSocket,
}

impl FakeDemux {
    fn bind(net: &InteropNet) -> FakeDemux {
        let socket = interop_net::spawn_in_netns(net.gw_ns(), || UdpSocket::bind(DEMUX).unwrap())
            .join()
            .unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        FakeDemux { socket }
    }

    /// Sends one UDP datagram from the braid site host to the strongSwan site's echo, through
    /// the gateway.
    fn send(&self, src_port: u16, payload: &[u8]) {
        let inner = ipv4_udp(BRAID_SITE_HOST, src_port, SS_SITE_HOST, ECHO_PORT, payload);
        let mut datagram = vec![0u8, 0, 0x08, 0x00, 0, 0, 1, 0]; // GENEVE, IPv4, VNI 1
        datagram.extend_from_slice(&inner);
        self.socket.send_to(&datagram, GW_LAN).unwrap();
    }

    /// The UDP payload of the next echo that came back through the tunnel, if one does in time.
    fn receive(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok((len, _)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            let d = &buf[..len];
            // GENEVE 8 bytes, VNI 1, IPv4 from the strongSwan site host.
            if len >= 8 + 28 && d[4..7] == [0, 0, 1] && d[8 + 12..8 + 16] == SS_SITE_HOST.octets() {
                return Some(d[8 + 28..].to_vec());
            }
        }
        None
    }

    /// One echo round trip; panics if it does not come back.
    fn echo(&self, payload: &[u8]) {
        for _ in 0..10 {
            self.send(40000, payload);
            if let Some(back) = self.receive(Duration::from_millis(500)) {
                assert_eq!(back, payload, "the echo came back intact");
                return;
            }
        }
        panic!("no echo through the tunnel for {:?}", String::from_utf8_lossy(payload));
    }
}

/// An IPv4/UDP packet (UDP checksum 0: none).
fn ipv4_udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = p[..20].chunks(2).map(|c| u32::from(c[0]) << 8 | u32::from(c[1])).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// The strongSwan peer site: responder unless told to start.
fn strongswan_site(ike: &str, esp: &str) -> SwanConf {
    SwanConf::new(SS_WAN, GW_WAN, SS_SITE, BRAID_SITE)
        .with_psk(PSK)
        .with_ike_proposals(ike)
        .with_esp_proposals(esp)
}

/// Continuous echo traffic on one flow from a background thread: every datagram numbered,
/// every echo checked off, so a rekey that loses a packet shows.
struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<std::collections::BTreeSet<u64>>,
}

impl Stream {
    fn start(demux: &FakeDemux, every: Duration) -> Stream {
        let socket = demux.socket.try_clone().unwrap();
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let demux = FakeDemux { socket };
            demux.socket.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
            let mut back = std::collections::BTreeSet::new();
            let mut next_send = Instant::now();
            let mut seq = 0u64;
            let mut drain_until = None;
            loop {
                if stop2.load(Ordering::Relaxed) && drain_until.is_none() {
                    drain_until = Some(Instant::now() + Duration::from_secs(1));
                }
                if drain_until.is_some_and(|t| Instant::now() > t) {
                    return back;
                }
                if drain_until.is_none() && Instant::now() >= next_send {
                    demux.send(41000, &seq.to_be_bytes());
                    seq += 1;
                    sent2.store(seq, Ordering::Relaxed);
                    next_send += every;
                }
                if let Some(p) = demux.receive(Duration::from_millis(2)) {
                    if let Ok(b) = <[u8; 8]>::try_from(p.as_slice()) {
                        back.insert(u64::from_be_bytes(b));
                    }
                }
            }
        });
        Stream { stop, sent, thread }
    }

    /// Stops sending, waits for the last echoes, and returns (sent, the numbers that never came back).
    fn finish(self) -> (u64, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        let back = self.thread.join().unwrap();
        let sent = self.sent.load(Ordering::Relaxed);
        (sent, (0..sent).filter(|s| !back.contains(s)).collect())
    }
}

/// A strongSwan site and a braid gateway with numbered echo traffic every 10 ms between them,
/// for the tests that rekey under it. Fields drop in order: the stream, the gateway, charon,
/// the echo responder, the namespaces.
struct UnderTraffic {
    stream: Option<Stream>,
    gw: BraidGateway,
    ss: Charon,
    _echo: UdpEcho,
    _net: InteropNet,
    started: Instant,
}

impl UnderTraffic {
    fn start(tag: &str, esp: &str, braid: &BraidSide) -> UnderTraffic {
        let net = InteropNet::new(tag);
        let echo = net.start_echo();
        let ss = ok(Charon::start(
            net.ss_ns(),
            &net.dir().join("ss"),
            &strongswan_site("aes256gcm16-prfsha256-x25519", esp),
        ));
        let demux = FakeDemux::bind(&net);
        let gw = BraidGateway::start(&net, braid);
        wait_up(&ss);
        demux.echo(b"warm-up");
        UnderTraffic {
            stream: Some(Stream::start(&demux, Duration::from_millis(10))),
            gw,
            ss,
            _echo: echo,
            _net: net,
            started: Instant::now(),
        }
    }

    /// Sleeps until `secs` after the traffic started.
    fn at(&self, secs: u64) {
        while self.started.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the traffic: (datagrams sent, those that never came back, strongSwan's counters).
    fn finish(&mut self, test: &str) -> (u64, Vec<u64>, std::collections::BTreeMap<String, u64>) {
        let (sent, missing) = self.stream.take().expect("finished once").finish();
        let counters = self.ss.counters();
        eprintln!(
            "{test}: {sent} datagrams, {} lost; strongSwan counters {counters:?}",
            missing.len()
        );
        (sent, missing, counters)
    }
}

/// Waits until strongSwan shows an IKE SA with an installed CHILD SA, and returns it.
fn wait_up(ss: &Charon) -> IkeSa {
    ok(
        ss.wait_for_sas("an IKE SA with its CHILD SA", Duration::from_secs(15), |sas| {
            sas.iter().find(|sa| sa.installed_child("site").is_some()).cloned()
        }),
    )
}

#[test]
fn braid_initiates_to_strongswan_with_aes_gcm() {
    const TEST: &str = "braid_initiates_to_strongswan_with_aes_gcm";
    if skip_without_strongswan(TEST) {
        return;
    }
    let net = InteropNet::new("bi");
    let echo = net.start_echo();
    let capture = net.capture(net.gw_ns(), "wan.pcap", "ip");
    // A responder needs no port settings: strongSwan's defaults (500 and 4500) take braid's
    // IKE_SA_INIT on 4500 behind the non-ESP marker.
    let ss = ok(Charon::start(
        net.ss_ns(),
        &net.dir().join("ss"),
        &strongswan_site("aes256gcm16-prfsha256-x25519", "aes256gcm16").with_default_ports(),
    ));
    let demux = FakeDemux::bind(&net);
    let gw = BraidGateway::start(&net, &BraidSide::default());
    let ike = wait_up(&ss);
    assert!(!ike.initiator, "braid initiated: {ike:#?}");
    assert_eq!(ike.proposal(), "AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519");
    assert_eq!((ike.local_port, ike.remote_port), (4500, 4500));
    let child = ike.installed_child("site").unwrap();
    assert_eq!(child.proposal(), "AES_GCM_16-256", "{child:#?}");
    assert!(child.encap, "ESP in UDP: {child:#?}");
    assert_eq!(child.local_ts, vec![SS_SITE.to_string()]);
    assert_eq!(child.remote_ts, vec![BRAID_SITE.to_string()]);
    ok(ss.wait_for_log(
        "selected proposal: ESP:AES_GCM_16_256/NO_EXT_SEQ",
        Duration::from_secs(1),
    ));

    for i in 0..50u32 {
        demux.echo(format!("braid-interop-probe-{i}").as_bytes());
    }
    assert_eq!(echo.count(), 50, "each probe reached the strongSwan site once");
    assert!(gw.log().contains("IKE SA established"), "{}", gw.log());

    // The capture ends before the teardown (a stopping charon's DELETE is answered after its
    // socket closed, which draws an ICMP port unreachable).
    let pcap = support::read_pcap(&capture.stop());
    drop(ss);
    drop(gw);
    assert_eq!(pcap.other_ipv4, 0, "only UDP on the WAN");
    for f in &pcap.udp {
        assert_eq!((f.src_port, f.dst_port), (4500, 4500), "{f:?}");
        assert!(
            !support::contains(&f.payload, b"braid-interop-probe"),
            "plaintext on the WAN"
        );
    }
    assert!(pcap.udp.len() >= 100 + 4, "IKE and 100 ESP packets: {}", pcap.udp.len());
}

#[test]
fn strongswan_initiates_to_braid_with_chacha20_poly1305() {
    const TEST: &str = "strongswan_initiates_to_braid_with_chacha20_poly1305";
    if skip_without_strongswan(TEST) {
        return;
    }
    let net = InteropNet::new("si");
    let echo = net.start_echo();
    let demux = FakeDemux::bind(&net);
    // braid only answers: site b (strongSwan) is the only initiator.
    let gw = BraidGateway::start(
        &net,
        &BraidSide {
            initiators: "[b]",
            ..BraidSide::default()
        },
    );
    let ss = ok(Charon::start(
        net.ss_ns(),
        &net.dir().join("ss"),
        &strongswan_site("chacha20poly1305-prfsha256-x25519", "chacha20poly1305")
            .with_start_action(strongswan::StartAction::Start),
    ));
    let ike = wait_up(&ss);
    assert!(ike.initiator, "strongSwan initiated: {ike:#?}");
    assert_eq!(ike.proposal(), "CHACHA20_POLY1305/PRF_HMAC_SHA2_256/CURVE_25519");
    let child = ike.installed_child("site").unwrap();
    assert_eq!(child.proposal(), "CHACHA20_POLY1305", "{child:#?}");
    for i in 0..20u32 {
        demux.echo(format!("chacha-probe-{i}").as_bytes());
    }
    assert_eq!(echo.count(), 20);
    assert!(
        !gw.log().contains("initiating IKE SA"),
        "braid never initiated: {}",
        gw.log()
    );
}

#[test]
fn rekeys_started_by_either_side_lose_nothing() {
    const TEST: &str = "rekeys_started_by_either_side_lose_nothing";
    if skip_without_strongswan(TEST) {
        return;
    }
    // braid rekeys its CHILD SA about every 8.5 s and its IKE SA after about 17 s. It seals on
    // a thread of its own, so every new outbound SA crosses from the IKE thread to the sealer.
    let braid = BraidSide {
        child_lifetime_s: 10,
        ike_lifetime_s: 20,
        seal_thread: true,
        ..BraidSide::default()
    };
    let mut run = UnderTraffic::start("rk", "aes256gcm16", &braid);
    // strongSwan rekeys the CHILD SA at 4 s (braid's own CHILD rekeys follow every ~8.5 s),
    // braid rekeys the IKE SA at ~17 s, strongSwan rekeys the new one at 19 s.
    run.at(4);
    ok(run.ss.rekey_child("site", Duration::from_secs(10)));
    run.at(19);
    ok(run.ss.rekey_ike("braid", Duration::from_secs(10)));
    run.at(22);
    let (sent, missing, counters) = run.finish(TEST);
    let count = |name: &str| counters.get(name).copied().unwrap_or(0);
    assert!(sent > 1500, "traffic kept flowing: {sent}");
    assert!(missing.is_empty(), "datagrams lost across rekeys: {missing:?}");
    assert!(count("child-rekey") >= 3, "CHILD SAs rekeyed by both sides");
    assert!(count("ike-rekey-init") >= 1, "strongSwan rekeyed the IKE SA");
    assert!(count("ike-rekey-resp") >= 1, "braid rekeyed the IKE SA");
    assert!(
        count("create-child-in-req") >= 2,
        "braid started CHILD and IKE rekeys (CREATE_CHILD_SA requests strongSwan received)"
    );
    assert!(run.gw.log().contains("IKE SA rekeyed"));
    assert!(
        run.gw.log().contains("data_threads=2"),
        "the gateway sealed on a thread of its own"
    );
    assert_eq!(run.ss.sas().len(), 1, "one IKE SA left: {}", run.ss.list_sas());
}

/// CHILD SA rekeys with PFS, the way cloud VPN gateways (AWS always) and firewalls run them:
/// strongSwan's ESP proposal names a DH group, so its CREATE_CHILD_SA carries a KE and needs
/// one back, and braid's own rekeys must send one.
#[test]
fn child_rekeys_with_pfs_run_a_dh_exchange_started_by_either_side() {
    const TEST: &str = "child_rekeys_with_pfs_run_a_dh_exchange_started_by_either_side";
    if skip_without_strongswan(TEST) {
        return;
    }
    // braid rekeys its CHILD SA about every 8.5 s; strongSwan rekeys it at 3 s.
    let braid = BraidSide {
        esp_proposals: "[aes256gcm16-ecp256-esn-noesn]",
        child_lifetime_s: 10,
        ..BraidSide::default()
    };
    let mut run = UnderTraffic::start("pf", "aes256gcm16-ecp256", &braid);
    run.at(3);
    ok(run.ss.rekey_child("site", Duration::from_secs(10)));
    run.at(12);
    let (sent, missing, counters) = run.finish(TEST);
    let count = |name: &str| counters.get(name).copied().unwrap_or(0);
    assert!(sent > 800, "traffic kept flowing: {sent}");
    assert!(missing.is_empty(), "datagrams lost across PFS rekeys: {missing:?}");
    assert!(
        count("child-rekey") >= 2,
        "CHILD SAs rekeyed by both sides: {counters:?}"
    );
    assert!(count("create-child-in-req") >= 1, "braid started a CHILD rekey");
    let sas = run.ss.sas();
    let child = only_sa(&sas).installed_child("site").expect("a CHILD SA is installed");
    assert_eq!(
        child.fields.get("dh-group").map(String::as_str),
        Some("ECP_256"),
        "the CHILD SA was keyed with a DH exchange: {}\n{}",
        run.ss.list_sas(),
        run.gw.log()
    );
}

/// strongSwan tears its only CHILD SA down (`swanctl --terminate --child`, as an operator or
/// an idle timeout does) and does not make another: braid sees the IKE SA with nothing to send
/// on and makes one with CREATE_CHILD_SA, and traffic flows again.
#[test]
fn a_child_sa_the_peer_terminates_is_made_again() {
    const TEST: &str = "a_child_sa_the_peer_terminates_is_made_again";
    if skip_without_strongswan(TEST) {
        return;
    }
    let net = InteropNet::new("ct");
    let _echo = net.start_echo();
    let ss = ok(Charon::start(
        net.ss_ns(),
        &net.dir().join("ss"),
        &strongswan_site("aes256gcm16-prfsha256-x25519", "aes256gcm16"),
    ));
    let demux = FakeDemux::bind(&net);
    let gw = BraidGateway::start(&net, &BraidSide::default());
    let first = wait_up(&ss);
    demux.echo(b"before");
    let old_spi = first.installed_child("site").unwrap().spi_in.clone();
    ok(ss.terminate_child("site"));
    let again = ok(ss.wait_for_sas("a new CHILD SA", Duration::from_secs(15), |sas| {
        sas.iter()
            .filter_map(|sa| sa.installed_child("site"))
            .find(|c| c.spi_in != old_spi)
            .cloned()
    }));
    demux.echo(b"after");
    let counters = ss.counters();
    assert!(
        counters.get("create-child-in-req").copied().unwrap_or(0) >= 1,
        "braid asked for it: {counters:?}\n{}",
        gw.log()
    );
    assert_eq!(ss.sas().len(), 1, "on the same IKE SA: {}", ss.list_sas());
    assert!(gw.log().contains("no CHILD SA left"), "{}", gw.log());
    eprintln!("{TEST}: new CHILD SA {} replaced {old_spi}", again.spi_in);
}

#[test]
fn a_restarted_peer_or_gateway_is_recovered_from() {
    const TEST: &str = "a_restarted_peer_or_gateway_is_recovered_from";
    if skip_without_strongswan(TEST) {
        return;
    }
    let net = InteropNet::new("rs");
    let _echo = net.start_echo();
    // Both sides initiate, so whichever restarts brings the tunnel back at once.
    let mut ss = ok(Charon::start(
        net.ss_ns(),
        &net.dir().join("ss"),
        &strongswan_site("aes256gcm16-prfsha256-x25519", "aes256gcm16")
            .with_start_action(strongswan::StartAction::Start),
    ));
    let demux = FakeDemux::bind(&net);
    let side = BraidSide {
        initiators: "[a, b]",
        ..BraidSide::default()
    };
    let mut gw = BraidGateway::start(&net, &side);
    wait_up(&ss);
    demux.echo(b"before");

    // strongSwan crashes (no DELETE) and comes back.
    ss.kill();
    ok(ss.start_again());
    let t = Instant::now();
    demux.echo(b"after a strongSwan crash");
    eprintln!("{TEST}: tunnel back {:?} after strongSwan restarted", t.elapsed());

    // The braid gateway crashes and comes back: INITIAL_CONTACT clears strongSwan's old SA.
    gw.kill();
    let t = Instant::now();
    let gw = BraidGateway::start(&net, &side);
    demux.echo(b"after a braid-gw crash");
    eprintln!("{TEST}: tunnel back {:?} after braid-gw restarted", t.elapsed());
    ok(ss.wait_for_sas("one IKE SA", Duration::from_secs(10), |sas| {
        (sas.len() == 1).then_some(())
    }));
    drop(gw);
}
