//! Loading the example, defaults, lookups, round trips, and a table of broken files each
//! checked for the exact field path its error names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::*;
use crate::control::{ControlAddr, DaemonId};
use crate::keys::{PrivateKey, PublicKey};

const FILE: &str = "conf/cluster.yaml";

/// A valid two-pair cluster using every required field and no optional one.
const BASE: &str = r#"
cluster:
  name: test
  secret_file: secret.key
sites:
  a:
    prefixes: [198.18.1.0/24]
    demux:
      tun: braid0
      geneve: 198.18.10.1:6081
  b:
    prefixes: [198.18.2.0/24]
    demux:
      tun: braid0
      geneve: 198.18.20.1:6081
pairs:
  - id: 1
    gateways:
      a:
        geneve: 198.18.10.11:6081
        wan: 198.19.0.11:51820
        public_key: "KEY_A1"
      b:
        geneve: 198.18.20.11:6081
        wan: 198.19.0.111:51820
        public_key: "KEY_B1"
        private_key_file: keys/b1.key
  - id: 2
    gateways:
      a:
        geneve: 198.18.10.12:6081
        wan: 198.19.0.12:51820
        public_key: "KEY_A2"
      b:
        geneve: 198.18.20.12:6081
        wan: 198.19.0.112:51820
        public_key: "KEY_B2"
"#;

fn key_text(seed: u8) -> String {
    PublicKey::from([seed; 32]).to_base64()
}

fn base() -> String {
    BASE.replace("KEY_A1", &key_text(1))
        .replace("KEY_B1", &key_text(2))
        .replace("KEY_A2", &key_text(3))
        .replace("KEY_B2", &key_text(4))
}

/// `base()` with `from` (which must occur exactly once) replaced by `to`.
fn edited(from: &str, to: &str) -> String {
    let text = base();
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} must occur once in the base file"
    );
    text.replace(from, to)
}

fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
    ClusterConfig::from_yaml_str(text, Path::new(FILE))
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/two-site.yaml")
}

fn ipsec_example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ipsec-two-site.yaml")
}

/// The smallest `ipsec:` section.
const IPSEC_SECTION: &str = "ipsec:\n  psk_file: ipsec.psk\n";

/// `base()` turned into an IPsec cluster: `suite: ipsec`, `ipsec:` set to `section`, and no
/// WireGuard keys.
fn ipsec_with(section: &str) -> String {
    let text = edited(
        "  secret_file: secret.key\n",
        &format!("  secret_file: secret.key\n  suite: ipsec\n{section}"),
    );
    text.lines()
        .filter(|line| !line.contains("public_key:") && !line.contains("private_key_file:"))
        .map(|line| format!("{line}\n"))
        .collect()
}

fn ipsec_base() -> String {
    ipsec_with(IPSEC_SECTION)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn example_file_loads() {
    let cfg = ClusterConfig::load(&example_path()).unwrap();
    assert_eq!(cfg.cluster.name, "example");
    assert_eq!(cfg.cluster.mtu, 1420);
    assert_eq!(cfg.sites.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(
        cfg.site("a").unwrap().prefixes,
        ["198.18.1.0/24".parse::<Prefix>().unwrap()]
    );
    assert_eq!(
        cfg.site("b").unwrap().demux.as_ref().unwrap().geneve,
        addr("198.18.20.1:6081")
    );
    assert_eq!(cfg.pairs.iter().map(|p| p.id).collect::<Vec<_>>(), [1, 2, 3]);
    for pair in 1..=3u16 {
        assert_eq!(
            cfg.gateway("a", pair).unwrap().geneve.unwrap(),
            addr(&format!("198.18.10.1{pair}:6081"))
        );
        assert_eq!(
            cfg.gateway("a", pair).unwrap().wan,
            addr(&format!("198.19.0.1{pair}:51820"))
        );
        assert_eq!(
            cfg.gateway("b", pair).unwrap().geneve.unwrap(),
            addr(&format!("198.18.20.1{pair}:6081"))
        );
        assert_eq!(
            cfg.gateway("b", pair).unwrap().wan,
            addr(&format!("198.19.0.11{pair}:51820"))
        );
    }
    let every_address_is_lab = cfg.pairs.iter().flat_map(|p| p.gateways.values()).all(|gw| {
        let lab: Prefix = "198.18.0.0/15".parse().unwrap();
        lab.contains(gw.geneve.unwrap().ip()) && lab.contains(gw.wan.ip())
    });
    assert!(every_address_is_lab);
    assert!(cfg.cluster.secret_file.ends_with("examples/secret.key"));
}

/// The shipped private key files belong to the public keys in the example. Read directly, as
/// git does not keep the 0600 mode [`PrivateKey::load`] insists on.
#[test]
fn example_keys_match_their_public_keys() {
    let cfg = ClusterConfig::load(&example_path()).unwrap();
    for pair in &cfg.pairs {
        for (site, gateway) in &pair.gateways {
            let file = gateway.private_key_file.as_ref().unwrap();
            assert!(
                file.ends_with(format!("examples/keys/{site}{}.key", pair.id)),
                "{}",
                file.display()
            );
            let text = std::fs::read_to_string(file).unwrap();
            let private = PrivateKey::from_base64(text.trim()).unwrap();
            assert_eq!(
                Some(private.public_key()),
                gateway.public_key,
                "pair {} site {site}",
                pair.id
            );
        }
    }
    let secret = std::fs::read_to_string(&cfg.cluster.secret_file).unwrap();
    assert!(crate::keys::ClusterSecret::from_base64(secret.trim()).is_ok());
}

#[test]
fn defaults_and_resolved_paths() {
    let cfg = parse(&base()).unwrap();
    assert_eq!(cfg.path, Path::new(FILE));
    assert_eq!(cfg.cluster.secret_file, Path::new("conf/secret.key"));
    assert_eq!(cfg.cluster.mtu, DEFAULT_MTU);
    assert_eq!(cfg.cluster.maglev_table_size, DEFAULT_MAGLEV_TABLE_SIZE);
    assert_eq!(cfg.cluster.flow_table_capacity, DEFAULT_FLOW_TABLE_CAPACITY);
    assert_eq!(
        cfg.cluster.timeouts,
        Timeouts {
            tcp_idle: 350,
            tcp_closing: 10,
            udp_idle: 120,
            other_idle: 120,
            tcp_half_open: 5
        }
    );
    assert_eq!(cfg.gateway("a", 1).unwrap().private_key_file, None);
    assert_eq!(
        cfg.gateway("b", 1).unwrap().private_key_file.as_deref(),
        Some(Path::new("conf/keys/b1.key"))
    );
    assert_eq!(
        cfg.gateway("b", 2).unwrap().public_key.map(|k| k.to_base64()),
        Some(key_text(4))
    );
    assert_eq!(cfg.cluster.suite, Suite::WireGuard);
    assert_eq!(cfg.cluster.ipsec, None);
    assert!(cfg
        .pairs
        .iter()
        .flat_map(|p| p.gateways.values())
        .all(|gw| gw.ike_id.is_none()));
}

#[test]
fn optional_settings_and_absolute_paths() {
    let text = edited(
        "  secret_file: secret.key\n",
        "  secret_file: /etc/braid/secret.key\n  mtu: 9000\n  maglev_table_size: 251\n  \
         flow_table_capacity: 1024\n  timeouts: { tcp_idle: 600, udp_idle: 30, tcp_half_open: 3 }\n",
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.cluster.secret_file, Path::new("/etc/braid/secret.key"));
    assert_eq!(
        (
            cfg.cluster.mtu,
            cfg.cluster.maglev_table_size,
            cfg.cluster.flow_table_capacity
        ),
        (9000, 251, 1024)
    );
    assert_eq!(
        cfg.cluster.timeouts,
        Timeouts {
            tcp_idle: 600,
            tcp_closing: 10,
            udp_idle: 30,
            other_idle: 120,
            tcp_half_open: 3
        }
    );
}

#[test]
fn ipv6_prefixes_and_addresses() {
    let text = edited("[198.18.1.0/24]", "[198.18.1.0/24, 2001:db8:1::/48]")
        .replace("geneve: 198.18.10.1:6081", r#"geneve: "[2001:db8:10::1]:6081""#);
    let cfg = parse(&text).unwrap();
    let site = cfg.site("a").unwrap();
    assert_eq!(site.prefixes[1].to_string(), "2001:db8:1::/48");
    assert_eq!(site.demux.as_ref().unwrap().geneve, addr("[2001:db8:10::1]:6081"));
}

#[test]
fn lookups() {
    let cfg = parse(&base()).unwrap();
    assert_eq!(cfg.peer_site_name("a").unwrap(), "b");
    assert_eq!(cfg.peer_site_name("b").unwrap(), "a");
    assert_eq!(cfg.pair(2).unwrap().gateways["a"].wan, addr("198.19.0.12:51820"));

    let error = cfg.site("c").unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"conf/cluster.yaml: sites: no site named "c"; the sites are "a" and "b""#
    );
    assert_eq!(error.field(), Some("sites"));
    assert!(cfg.peer_site_name("c").is_err());
    assert_eq!(
        cfg.pair(7).unwrap_err().to_string(),
        "conf/cluster.yaml: pairs: no pair with id 7; the pair ids are 1, 2"
    );
    assert!(cfg.gateway("c", 1).is_err());
    assert!(cfg.gateway("a", 9).is_err());
}

#[test]
fn to_yaml_round_trips() {
    for cfg in [
        parse(&base()).unwrap(),
        ClusterConfig::load(&example_path()).unwrap(),
        parse(&ipsec_base()).unwrap(),
        ClusterConfig::load(&ipsec_example_path()).unwrap(),
    ] {
        let yaml = cfg.to_yaml();
        let again = ClusterConfig::from_yaml_str(&yaml, &cfg.path).unwrap();
        assert_eq!(again, cfg, "{yaml}");
    }
    let yaml = parse(&base()).unwrap().to_yaml();
    assert!(
        yaml.contains("secret_file: secret.key"),
        "paths are written relative: {yaml}"
    );
    assert!(yaml.contains("private_key_file: keys/b1.key"), "{yaml}");
    assert!(yaml.contains("mtu: 1420"), "defaults are written out: {yaml}");
    assert!(yaml.contains("suite: wireguard"), "{yaml}");
    assert!(!yaml.contains("ipsec"), "{yaml}");

    let yaml = parse(&ipsec_base()).unwrap().to_yaml();
    for written in [
        "suite: ipsec",
        "psk_file: ipsec.psk",
        "- aes256gcm16-prfsha256-x25519",
        "- aes256gcm16-esn-noesn",
        "ike_lifetime_s: 14400",
        "child_lifetime_s: 3600",
        "replay_window: 8192",
        "liveness_s: 5",
    ] {
        assert!(yaml.contains(written), "{written}: {yaml}");
    }
    assert!(!yaml.contains("public_key"), "{yaml}");
}

#[test]
fn missing_file_is_named() {
    let error = ClusterConfig::load(Path::new("/nonexistent/braid.yaml")).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(
        error.to_string().starts_with("/nonexistent/braid.yaml: cannot read: "),
        "{error}"
    );
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let error = parse(&edited(
        "    demux:\n      tun: braid0\n      geneve: 198.18.20.1:6081",
        "    demux: [\n",
    ))
    .unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("conf/cluster.yaml: "), "{message}");
    assert!(message.contains("line ") && message.contains("column "), "{message}");
}

/// Each broken file: what is wrong, the edits to the base file (each `from` occurs once), and
/// how the message continues after the file name; it starts with the field path.
type Broken = (&'static str, &'static [(&'static str, &'static str)], &'static str);

const BROKEN: &[Broken] = &[
    ("short public key", &[("KEY_B2", "c2hvcnRrZXkhIQ")], "pairs[1].gateways.b.public_key: expected a base64 WireGuard public key (44 characters), got 14 characters"),
    ("public key not base64", &[("KEY_A1", "????????????????????????????????????????????")], "pairs[0].gateways.a.public_key: expected a base64 WireGuard public key (44 characters), got 44 characters that are not valid base64"),
    ("unknown field", &[("      tun: braid0\n      geneve: 198.18.10.1", "      colour: blue\n      tun: braid0\n      geneve: 198.18.10.1")], "sites.a.demux: unknown field `colour`, expected one of `tun`, `geneve`, `netns`"),
    ("unknown top-level field", &[("\npairs:\n", "\nversion: 2\npairs:\n")], "unknown field `version`, expected one of `cluster`, `sites`, `pairs`"),
    ("wrong type", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  mtu: big\n")], "cluster.mtu: invalid type: string \"big\", expected u64"),
    ("wrong type for a list", &[("prefixes: [198.18.2.0/24]", "prefixes: 198.18.2.0/24")], "sites.b.prefixes: invalid type: string \"198.18.2.0/24\", expected a sequence"),
    ("missing field", &[("        wan: 198.19.0.11:51820\n", "")], "pairs[0].gateways.a: missing field `wan`"),
    ("WireGuard gateway without a public key", &[("        public_key: \"KEY_B2\"\n", "")], "pairs[1].gateways.b.public_key: expected a base64 WireGuard public key (44 characters), which cluster.suite wireguard requires of every gateway; got nothing"),
    ("unknown suite", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  suite: openvpn\n")], "cluster.suite: unknown variant `openvpn`, expected `wireguard` or `ipsec`"),
    ("suite spelled in capitals", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  suite: IPsec\n")], "cluster.suite: unknown variant `IPsec`, expected `wireguard` or `ipsec`"),
    ("ipsec section in a WireGuard cluster", &[("\npairs:\n", "\nipsec:\n  psk_file: ipsec.psk\npairs:\n")], "ipsec: section given but cluster.suite is wireguard; set `suite: ipsec` under cluster:, or remove the section"),
    ("ipsec section with an explicit wireguard suite", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  suite: wireguard\n"), ("\npairs:\n", "\nipsec: { psk_file: ipsec.psk }\npairs:\n")], "ipsec: section given but cluster.suite is wireguard"),
    ("IKE identity in a WireGuard cluster", &[("        public_key: \"KEY_A1\"\n", "        public_key: \"KEY_A1\"\n        ike_id: \"@gw-a1\"\n")], "pairs[0].gateways.a.ike_id: an IKE identity is only used by the ipsec suite, but cluster.suite is wireguard"),
    ("missing section", &[("sites:\n", "places:\n")], "unknown field `places`"),
    ("bad CIDR", &[("[198.18.2.0/24]", "[198.18.2.0/33]")], "sites.b.prefixes[0]: prefix length 33 is longer than the 32 bits of the address"),
    ("host bits set", &[("[198.18.2.0/24]", "[198.18.1.0/24, 198.18.2.1/24]")], "sites.b.prefixes[1]: 198.18.2.1/24 has host bits set; the prefix is 198.18.2.0/24"),
    ("not a prefix", &[("[198.18.2.0/24]", "[198.18.2.0]")], "sites.b.prefixes[0]: expected an IP prefix like 198.18.1.0/24 or 2001:db8::/32, got \"198.18.2.0\""),
    ("no prefixes", &[("[198.18.1.0/24]", "[]")], "sites.a.prefixes: expected at least one prefix"),
    ("overlapping prefixes", &[("[198.18.2.0/24]", "[198.18.0.0/15]")], "sites.b.prefixes[0]: 198.18.0.0/15 overlaps 198.18.1.0/24 (sites.a.prefixes[0])"),
    ("non-prime table size", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  maglev_table_size: 65536\n")], "cluster.maglev_table_size: expected a prime number (such as 65537 or 131071), got 65536"),
    ("table size too large", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  maglev_table_size: 99999999999\n")], "cluster.maglev_table_size: expected a number from 3 to 16777216, got 99999999999"),
    ("MTU too small", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  mtu: 100\n")], "cluster.mtu: expected a number from 576 to 9000, got 100"),
    (
        "MTU too small for IPv6",
        &[("[198.18.1.0/24]", "[198.18.1.0/24, 2001:db8::/32]"), ("secret_file: secret.key", "secret_file: secret.key\n  mtu: 1000")],
        "cluster.mtu: a site has IPv6 prefixes, and IPv6 needs an MTU of at least 1280, got 1000",
    ),
    ("no data threads", &[("      geneve: 198.18.10.1:6081\n", "      geneve: 198.18.10.1:6081\n      data_threads: 0\n")], "sites.a.demux.data_threads: expected a number from 1 to 256, got 0"),
    ("flow table too small", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  flow_table_capacity: 10\n")], "cluster.flow_table_capacity: expected a number from 1024 to 67108864, got 10"),
    ("zero timeout", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  timeouts:\n    udp_idle: 0\n")], "cluster.timeouts.udp_idle: expected a number from 1 to 604800, got 0"),
    ("unknown timeout", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  timeouts:\n    icmp_idle: 5\n")], "cluster.timeouts: unknown field `icmp_idle`"),
    ("closing longer than idle", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  timeouts: { tcp_idle: 5, tcp_closing: 6 }\n")], "cluster.timeouts.tcp_closing: expected at most tcp_idle (5 s), got 6 s"),
    ("half-open longer than idle", &[("  secret_file: secret.key\n", "  secret_file: secret.key\n  timeouts: { tcp_idle: 5, tcp_closing: 5, tcp_half_open: 6 }\n")], "cluster.timeouts.tcp_half_open: expected at most tcp_idle (5 s), got 6 s"),
    ("bad cluster name", &[("name: test", "name: Test_1")], "cluster.name: expected 1 to 32 characters of a-z, 0-9 and '-', got \"Test_1\""),
    ("empty secret path", &[("secret_file: secret.key", "secret_file: \"\"")], "cluster.secret_file: expected a file path, got an empty string"),
    ("three sites", &[("\npairs:\n", "\n  c:\n    prefixes: [198.18.3.0/24]\n    demux: { tun: braid0, geneve: 198.18.30.1:6081 }\npairs:\n")], "sites: expected exactly two sites, got 3"),
    ("bad site name", &[("\n  b:\n", "\n  B:\n")], "sites.B: expected 1 to 32 characters of a-z, 0-9 and '-', got \"B\""),
    ("site defined twice", &[("\n  b:\n", "\n  a:\n")], "sites.a: this site is defined twice"),
    ("TUN name too long", &[("tun: braid0\n      geneve: 198.18.20.1", "tun: braid0-much-too-long\n      geneve: 198.18.20.1")], "sites.b.demux.tun: expected an interface name of 1 to 15 printable ASCII characters without '/', ':' or '%', got \"braid0-much-too-long\""),
    ("TUN name template", &[("tun: braid0\n      geneve: 198.18.10.1", "tun: braid%d\n      geneve: 198.18.10.1")], "sites.a.demux.tun: expected an interface name"),
    ("address without port", &[("geneve: 198.18.10.1:6081", "geneve: 198.18.10.1")], "sites.a.demux.geneve: invalid value: string \"198.18.10.1\", expected an IP:port address like 198.18.10.1:6081"),
    ("unspecified address", &[("geneve: 198.18.20.1:6081", "geneve: 0.0.0.0:6081")], "sites.b.demux.geneve: expected a specific IP address and a non-zero port, got 0.0.0.0:6081"),
    ("port zero", &[("wan: 198.19.0.112:51820", "wan: 198.19.0.112:0")], "pairs[1].gateways.b.wan: expected a specific IP address and a non-zero port, got 198.19.0.112:0"),
    ("pair id out of range", &[("id: 2", "id: 4096")], "pairs[1].id: expected a number from 1 to 4095, got 4096"),
    ("pair id zero", &[("id: 1", "id: 0")], "pairs[0].id: expected a number from 1 to 4095, got 0"),
    ("duplicate pair id", &[("id: 2", "id: 1")], "pairs[1].id: pair id 1 is already used by pairs[0]"),
    ("gateway of an unknown site", &[("\n      b:\n        geneve: 198.18.20.12", "\n      c:\n        geneve: 198.18.20.12")], "pairs[1].gateways.c: no site named \"c\"; the sites are \"a\" and \"b\""),
    ("gateway of a site missing", &[("\n      b:\n        geneve: 198.18.20.12:6081\n        wan: 198.19.0.112:51820\n        public_key: \"KEY_B2\"\n", "\n")], "pairs[1].gateways: missing the gateway of site \"b\"; every pair has one gateway per site"),
    ("duplicate gateway address", &[("geneve: 198.18.10.12:6081", "geneve: 198.18.10.11:6081")], "pairs[1].gateways.a.geneve: 198.18.10.11:6081 is already used by pairs[0].gateways.a.geneve"),
    ("gateway on the demux address", &[("geneve: 198.18.20.12:6081", "geneve: 198.18.20.1:6081")], "pairs[1].gateways.b.geneve: 198.18.20.1:6081 is already used by sites.b.demux.geneve"),
    ("WAN address shared across sites", &[("wan: 198.19.0.111:51820", "wan: 198.19.0.11:51820")], "pairs[0].gateways.b.wan: 198.19.0.11:51820 is already used by pairs[0].gateways.a.wan"),
    ("public key reused", &[("KEY_B2", "KEY_A1")], "pairs[1].gateways.b.public_key: the same public key is already used by pairs[0].gateways.a.public_key"),
    ("bad demux netns", &[("tun: braid0\n      geneve: 198.18.10.1:6081", "tun: braid0\n      geneve: 198.18.10.1:6081\n      netns: a/b")], "sites.a.demux.netns: expected a network namespace name of 1 to 64 characters of a-z, A-Z, 0-9, '_', '-' and '.', got \"a/b\""),
    ("gateway netns dot-dot", &[("        public_key: \"KEY_B2\"\n", "        public_key: \"KEY_B2\"\n        netns: \"..\"\n")], "pairs[1].gateways.b.netns: expected a network namespace name"),
    ("empty netns", &[("        public_key: \"KEY_A1\"\n", "        public_key: \"KEY_A1\"\n        netns: \"\"\n")], "pairs[0].gateways.a.netns: expected a network namespace name"),
    ("unknown controller field", &[("\npairs:\n", "\ncontroller:\n  heartbeat: 5\npairs:\n")], "controller: unknown field `heartbeat`, expected one of `address`"),
    ("bad controller address", &[("\npairs:\n", "\ncontroller:\n  address: /run/ctl.sock\npairs:\n")], "controller.address: expected a control address like 198.18.0.1:7400"),
    ("unspecified controller address", &[("\npairs:\n", "\ncontroller:\n  address: 0.0.0.0:7400\npairs:\n")], "controller.address: expected a specific IP address and a non-zero port, got 0.0.0.0:7400"),
    ("controller socket path too long", &[("\npairs:\n", "\ncontroller: { address: \"unix:/run/LONG_PATH\" }\npairs:\n")], "controller.address: a unix socket path has at most 107 bytes, got 115"),
    ("metrics without port", &[("\npairs:\n", "\ncontroller: { metrics: 127.0.0.1 }\npairs:\n")], "controller.metrics: invalid value: string \"127.0.0.1\", expected an IP:port address"),
    ("metrics port zero", &[("\npairs:\n", "\ncontroller: { metrics: \"[::1]:0\" }\npairs:\n")], "controller.metrics: expected a non-zero port, got 0"),
    ("heartbeat too fast", &[("\npairs:\n", "\ncontroller: { heartbeat_ms: 1 }\npairs:\n")], "controller.heartbeat_ms: expected a number from 10 to 10000, got 1"),
    ("failure timeout not a number", &[("\npairs:\n", "\ncontroller: { failure_timeout_ms: soon }\npairs:\n")], "controller.failure_timeout_ms: invalid type: string \"soon\", expected u64"),
    ("failure timeout under two heartbeats", &[("\npairs:\n", "\ncontroller: { heartbeat_ms: 250 }\npairs:\n")], "controller.failure_timeout_ms: expected at least two heartbeat periods (500 ms), so one lost heartbeat is not a failure, got 400 ms"),
    ("recovery too long", &[("\npairs:\n", "\ncontroller: { recovery_ms: 3600001 }\npairs:\n")], "controller.recovery_ms: expected a number from 0 to 3600000, got 3600001"),
    ("zero canary alarm", &[("\npairs:\n", "\ncontroller: { canary_rtt_alarm_ms: 0 }\npairs:\n")], "controller.canary_rtt_alarm_ms: expected a number from 1 to 60000, got 0"),
    ("drain timeout too long", &[("\npairs:\n", "\ncontroller: { drain_timeout_s: 604801 }\npairs:\n")], "controller.drain_timeout_s: expected a number from 0 to 604800, got 604801"),
    ("admin socket path too long", &[("\npairs:\n", "\ncontroller: { admin_socket: \"/run/LONG_PATH\" }\npairs:\n")], "controller.admin_socket: a unix socket path has at most 107 bytes, got 115"),
    ("empty admin socket", &[("\npairs:\n", "\ncontroller: { admin_socket: \"\" }\npairs:\n")], "controller.admin_socket: expected a socket path, got an empty string"),
    ("admin listen without a key", &[("\npairs:\n", "\ncontroller: { admin_listen: 198.18.0.1:7401 }\npairs:\n")], "controller.admin_listen: remote administration needs controller.admin_key_file"),
    ("admin key without a listener", &[("\npairs:\n", "\ncontroller: { admin_key_file: admin.key }\npairs:\n")], "controller.admin_key_file: only used with controller.admin_listen"),
    ("admin listen port zero", &[("\npairs:\n", "\ncontroller: { admin_listen: 198.18.0.1:0, admin_key_file: admin.key }\npairs:\n")], "controller.admin_listen: expected a non-zero port, got 0"),
    ("admin listen without port", &[("\npairs:\n", "\ncontroller: { admin_listen: 198.18.0.1 }\npairs:\n")], "controller.admin_listen: invalid value: string \"198.18.0.1\", expected an IP:port address"),
    ("empty state dir", &[("\npairs:\n", "\ncontroller: { state_dir: \"\" }\npairs:\n")], "controller.state_dir: expected a file path, got an empty string"),
    ("blank restart hook", &[("\npairs:\n", "\ncontroller: { restart_hook: \"  \" }\npairs:\n")], "controller.restart_hook: expected a command, got an empty string"),
    ("unknown restart hook placeholder", &[("\npairs:\n", "\ncontroller: { restart_hook: \"systemctl restart braid-gw@{site}{index}\" }\npairs:\n")], "controller.restart_hook: unknown placeholder \"{index}\"; the placeholders are {role}, {site} and {pair}"),
    ("controller listen with a unix address", &[("\npairs:\n", "\ncontroller: { address: \"unix:/run/c.sock\", listen: 198.18.0.1:7400 }\npairs:\n")], "controller.listen: only a UDP controller.address (one the daemons reach through a NAT) has a separate local address"),
    ("controller listen with the default address", &[("\npairs:\n", "\ncontroller: { listen: 198.18.0.1:7400 }\npairs:\n")], "controller.listen: only a UDP controller.address"),
    ("controller listen of another family", &[("\npairs:\n", "\ncontroller: { address: 198.19.0.1:7400, listen: \"[2001:db8::1]:7400\" }\npairs:\n")], "controller.listen: [2001:db8::1]:7400 is IPv6 but controller.address 198.19.0.1:7400 is IPv4: a 1:1 NAT keeps the family"),
    ("controller listen port zero", &[("\npairs:\n", "\ncontroller: { address: 198.19.0.1:7400, listen: 10.0.0.1:0 }\npairs:\n")], "controller.listen: expected a non-zero port (the one the NAT forwards 198.19.0.1:7400 to), got 10.0.0.1:0"),
    ("controller listen without a port", &[("\npairs:\n", "\ncontroller: { address: 198.19.0.1:7400, listen: 10.0.0.1 }\npairs:\n")], "controller.listen: invalid value: string \"10.0.0.1\", expected an IP:port address"),
    ("gateway listen of another family", &[("        wan: 198.19.0.12:51820\n", "        wan: 198.19.0.12:51820\n        wan_listen: \"[fd00::12]:51820\"\n")], "pairs[1].gateways.a.wan_listen: [fd00::12]:51820 is IPv6 but pairs[1].gateways.a.wan 198.19.0.12:51820 is IPv4: a 1:1 NAT keeps the family"),
    ("gateway listen port zero", &[("        wan: 198.19.0.111:51820\n", "        wan: 198.19.0.111:51820\n        wan_listen: 198.18.30.111:0\n")], "pairs[0].gateways.b.wan_listen: expected a non-zero port (the one the NAT forwards 198.19.0.111:51820 to), got 198.18.30.111:0"),
    ("gateway listen not an address", &[("        wan: 198.19.0.111:51820\n", "        wan: 198.19.0.111:51820\n        wan_listen: eth0\n")], "pairs[0].gateways.b.wan_listen: invalid value: string \"eth0\", expected an IP:port address"),
    ("unclosed restart hook placeholder", &[("\npairs:\n", "\ncontroller: { restart_hook: \"restart {site\" }\npairs:\n")], "controller.restart_hook: unknown placeholder \"site\""),
];

/// Key placeholders in table entries stand for the base file's keys; `LONG_PATH` for a path
/// of 110 characters.
fn with_keys(text: &str) -> String {
    text.replace("KEY_A1", &key_text(1))
        .replace("KEY_B2", &key_text(4))
        .replace("LONG_PATH", &"x".repeat(110))
}

#[test]
fn broken_files_name_the_field() {
    for &(what, edits, expected) in BROKEN {
        let mut text = base();
        for &(from, to) in edits {
            let from = with_keys(from);
            assert_eq!(text.matches(&from).count(), 1, "{what}: {from:?} must occur once");
            text = text.replace(&from, &with_keys(to));
        }
        let message = match parse(&text) {
            Ok(_) => panic!("{what}: accepted\n{text}"),
            Err(error) => error.to_string(),
        };
        let expected = format!("{FILE}: {expected}");
        assert!(
            message.starts_with(&expected),
            "{what}:\n  got      {message}\n  expected {expected}..."
        );
    }
}

/// Broken IPsec files: edits to [`ipsec_base`], like [`BROKEN`].
const IPSEC_BROKEN: &[Broken] = &[
    ("no ipsec section", &[(IPSEC_SECTION, "")], "ipsec: expected an ipsec: section with at least psk_file, as cluster.suite is ipsec"),
    ("no psk_file", &[("  psk_file: ipsec.psk\n", "  liveness_s: 5\n")], "ipsec.psk_file: expected the path of the pre-shared key file (one line of text, mode 0600), which cluster.suite ipsec requires"),
    ("empty psk_file", &[("psk_file: ipsec.psk", "psk_file: \"\"")], "ipsec.psk_file: expected a file path, got an empty string"),
    ("empty section", &[("  psk_file: ipsec.psk\n", "  {}\n")], "ipsec.psk_file: expected the path of the pre-shared key file"),
    ("unknown ipsec field", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  dpd_s: 30\n")], "ipsec: unknown field `dpd_s`, expected one of `psk_file`, `ike_proposals`, `esp_proposals`, `ike_lifetime_s`, `child_lifetime_s`, `replay_window`, `liveness_s`"),
    ("psk given inline", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  psk: hunter2\n")], "ipsec: unknown field `psk`"),
    ("unknown IKE algorithm", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  ike_proposals: [aes256gcm16-prfsha256-x25519, aes128-sha1-modp2048]\n")], "ipsec.ike_proposals[1]: IKE proposal \"aes128-sha1-modp2048\": unknown algorithm \"aes128\""),
    ("IKE proposal without a DH group", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  ike_proposals: [aes256gcm16-prfsha256]\n")], "ipsec.ike_proposals[0]: IKE proposal \"aes256gcm16-prfsha256\": no DH group"),
    ("ESP proposal with an unknown DH group", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  esp_proposals: [aes256gcm16-modp2048]\n")], "ipsec.esp_proposals[0]: ESP proposal \"aes256gcm16-modp2048\": unknown algorithm \"modp2048\""),
    ("no IKE proposals", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  ike_proposals: []\n")], "ipsec.ike_proposals: expected at least one proposal"),
    ("no ESP proposals", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  esp_proposals: []\n")], "ipsec.esp_proposals: expected at least one proposal"),
    ("proposals as one string", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  esp_proposals: aes256gcm16\n")], "ipsec.esp_proposals: invalid type: string \"aes256gcm16\", expected a sequence"),
    ("proposal listed twice", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  esp_proposals: [aes256gcm16-esn, chacha20poly1305, aes256gcm16-esn]\n")], "ipsec.esp_proposals[2]: aes256gcm16-esn is already listed as ipsec.esp_proposals[0]"),
    ("proposal listed twice in another spelling", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  ike_proposals: [aes256gcm16-prfsha256-x25519, aes256gcm16-prfsha256-curve25519]\n")], "ipsec.ike_proposals[1]: aes256gcm16-prfsha256-x25519 is already listed as ipsec.ike_proposals[0]"),
    ("IKE lifetime too short", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  ike_lifetime_s: 19\n")], "ipsec.ike_lifetime_s: expected a number from 20 to 604800, got 19"),
    ("IKE lifetime too long", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  ike_lifetime_s: 604801\n")], "ipsec.ike_lifetime_s: expected a number from 20 to 604800, got 604801"),
    ("CHILD lifetime too short", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  child_lifetime_s: 9\n")], "ipsec.child_lifetime_s: expected a number from 10 to 604800, got 9"),
    ("CHILD lifetime too long", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  child_lifetime_s: 604801\n")], "ipsec.child_lifetime_s: expected a number from 10 to 604800, got 604801"),
    ("lifetime not a number", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  child_lifetime_s: 1h\n")], "ipsec.child_lifetime_s: invalid type: string \"1h\", expected u64"),
    ("replay window too small", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  replay_window: 63\n")], "ipsec.replay_window: expected a number from 64 to 65536, got 63"),
    ("replay window too large", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  replay_window: 65537\n")], "ipsec.replay_window: expected a number from 64 to 65536, got 65537"),
    ("replay window beyond u32", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  replay_window: 4294967360\n")], "ipsec.replay_window: expected a number from 64 to 65536, got 4294967360"),
    ("zero liveness interval", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  liveness_s: 0\n")], "ipsec.liveness_s: expected a number from 1 to 3600, got 0"),
    ("liveness interval too long", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  liveness_s: 3601\n")], "ipsec.liveness_s: expected a number from 1 to 3600, got 3601"),
    ("no initiators", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  initiators: []\n")], "ipsec.initiators: expected at least one site name"),
    ("unknown initiator", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  initiators: [a, c]\n")], "ipsec.initiators[1]: no site named \"c\" (sites: a, b)"),
    ("initiator twice", &[("  psk_file: ipsec.psk\n", "  psk_file: ipsec.psk\n  initiators: [b, b]\n")], "ipsec.initiators[1]: site \"b\" is listed twice"),
    ("empty IKE identity", &[("        wan: 198.19.0.11:51820\n", "        wan: 198.19.0.11:51820\n        ike_id: \"\"\n")], "pairs[0].gateways.a.ike_id: expected an IKE identity of 1 to 255 bytes without control characters or leading or trailing spaces (an IP address, a @name, user@name or a distinguished name), got \"\""),
    ("IKE identity with a newline", &[("        wan: 198.19.0.112:51820\n", "        wan: 198.19.0.112:51820\n        ike_id: \"gw\\nb2\"\n")], "pairs[1].gateways.b.ike_id: expected an IKE identity of 1 to 255 bytes"),
    ("IKE identity with a trailing space", &[("        wan: 198.19.0.112:51820\n", "        wan: 198.19.0.112:51820\n        ike_id: \"@gw-b2 \"\n")], "pairs[1].gateways.b.ike_id: expected an IKE identity"),
    ("IKE identity too long", &[("        wan: 198.19.0.112:51820\n", "        wan: 198.19.0.112:51820\n        ike_id: LONG_ID\n")], "pairs[1].gateways.b.ike_id: expected an IKE identity of 1 to 255 bytes"),
    ("malformed WireGuard key in an IPsec cluster", &[("        wan: 198.19.0.11:51820\n", "        wan: 198.19.0.11:51820\n        public_key: short\n")], "pairs[0].gateways.a.public_key: expected a base64 WireGuard public key (44 characters), got 5 characters"),
];

#[test]
fn broken_ipsec_files_name_the_field() {
    for &(what, edits, expected) in IPSEC_BROKEN {
        let mut text = ipsec_base();
        for &(from, to) in edits {
            assert_eq!(text.matches(from).count(), 1, "{what}: {from:?} must occur once");
            text = text.replace(from, &to.replace("LONG_ID", &"i".repeat(256)));
        }
        let message = match parse(&text) {
            Ok(_) => panic!("{what}: accepted\n{text}"),
            Err(error) => error.to_string(),
        };
        let expected = format!("{FILE}: {expected}");
        assert!(
            message.starts_with(&expected),
            "{what}:\n  got      {message}\n  expected {expected}..."
        );
    }
}

#[test]
fn ipsec_defaults() {
    let cfg = parse(&ipsec_base()).unwrap();
    assert_eq!(cfg.cluster.suite, Suite::Ipsec);
    let ipsec = cfg.cluster.ipsec.as_ref().expect("an IPsec cluster has IPsec settings");
    assert_eq!(
        ipsec.psk_file,
        Path::new("conf/ipsec.psk"),
        "resolved against the file's directory"
    );
    assert_eq!(ipsec.ike_proposals, braid_ipsec::proposal::default_ike_proposals());
    assert_eq!(ipsec.esp_proposals, braid_ipsec::proposal::default_esp_proposals());
    assert_eq!(ipsec.ike_lifetime_s, 14_400);
    assert_eq!(ipsec.child_lifetime_s, 3_600);
    assert_eq!(ipsec.replay_window, braid_ipsec::replay::DEFAULT_REPLAY_WINDOW);
    assert_eq!(ipsec.replay_window, 8192);
    assert_eq!(ipsec.liveness_s, 5);
    assert_eq!(ipsec.initiators, ["a", "b"], "every site initiates by default");
    assert!(
        !ipsec.seal_thread,
        "a gateway seals on the thread that opens by default"
    );
    let mut defaults = IpsecConfig::with_psk_file(PathBuf::from("conf/ipsec.psk"));
    defaults.initiators = vec!["a".into(), "b".into()];
    assert_eq!(*ipsec, defaults);
    for gateway in cfg.pairs.iter().flat_map(|p| p.gateways.values()) {
        assert_eq!(gateway.public_key, None, "an IPsec gateway needs no WireGuard key");
        assert_eq!(gateway.private_key_file, None);
        assert_eq!(gateway.ike_id, None, "the IKE identity defaults to the WAN address");
    }
}

#[test]
fn ipsec_settings() {
    let section = "ipsec:\n  psk_file: /etc/braid/ipsec.psk\n  \
        ike_proposals: [chacha20poly1305-prfsha256-ecp256, aes256gcm16-prfsha256-x25519]\n  \
        esp_proposals: [chacha20poly1305-esn-noesn, aes256gcm16, aes256gcm16-ecp256]\n  ike_lifetime_s: 60\n  \
        child_lifetime_s: 10\n  replay_window: 65536\n  liveness_s: 3600\n  seal_thread: true\n";
    let text = ipsec_with(section)
        .replace(
            "        wan: 198.19.0.11:51820\n",
            "        wan: 198.19.0.11:51820\n        ike_id: \"@gw-a1.example.net\"\n",
        )
        .replace(
            "        wan: 198.19.0.112:51820\n",
            "        wan: 198.19.0.112:51820\n        ike_id: \"C=CH, O=braid, CN=gw-b2\"\n",
        );
    let cfg = parse(&text).unwrap();
    let ipsec = cfg.cluster.ipsec.as_ref().unwrap();
    assert_eq!(ipsec.psk_file, Path::new("/etc/braid/ipsec.psk"));
    let ike: Vec<String> = ipsec.ike_proposals.iter().map(ToString::to_string).collect();
    assert_eq!(
        ike,
        ["chacha20poly1305-prfsha256-ecp256", "aes256gcm16-prfsha256-x25519"]
    );
    let esp: Vec<String> = ipsec.esp_proposals.iter().map(ToString::to_string).collect();
    assert_eq!(esp, ["chacha20poly1305-esn-noesn", "aes256gcm16", "aes256gcm16-ecp256"]);
    assert_eq!(
        (
            ipsec.ike_lifetime_s,
            ipsec.child_lifetime_s,
            ipsec.replay_window,
            ipsec.liveness_s
        ),
        (60, 10, 65536, 3600)
    );
    assert!(ipsec.seal_thread);
    assert_eq!(
        cfg.gateway("a", 1).unwrap().ike_id.as_deref(),
        Some("@gw-a1.example.net")
    );
    assert_eq!(
        cfg.gateway("b", 2).unwrap().ike_id.as_deref(),
        Some("C=CH, O=braid, CN=gw-b2")
    );
    assert_eq!(cfg.gateway("b", 1).unwrap().ike_id, None);
    assert_eq!(ClusterConfig::from_yaml_str(&cfg.to_yaml(), &cfg.path).unwrap(), cfg);

    let smallest = ipsec_with("ipsec:\n  psk_file: p\n  replay_window: 64\n  ike_lifetime_s: 604800\n  child_lifetime_s: 604800\n  liveness_s: 1\n");
    let ipsec = parse(&smallest).unwrap().cluster.ipsec.unwrap();
    assert_eq!(
        (
            ipsec.replay_window,
            ipsec.ike_lifetime_s,
            ipsec.child_lifetime_s,
            ipsec.liveness_s
        ),
        (64, 604_800, 604_800, 1),
        "the range ends are accepted, and CHILD SAs may outlive the IKE SA's rekey"
    );
}

#[test]
fn ipsec_cluster_may_keep_wireguard_keys() {
    let text = edited(
        "  secret_file: secret.key\n",
        &format!("  secret_file: secret.key\n  suite: ipsec\n{IPSEC_SECTION}"),
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.cluster.suite, Suite::Ipsec);
    assert_eq!(cfg.gateway("a", 1).unwrap().public_key, Some(PublicKey::from([1; 32])));
    let reused = text.replace(&key_text(4), &key_text(1));
    assert_eq!(
        parse(&reused).unwrap_err().to_string(),
        format!("{FILE}: pairs[1].gateways.b.public_key: the same public key is already used by pairs[0].gateways.a.public_key"),
        "keys that are given are still checked"
    );
}

#[test]
fn suite_names() {
    for suite in Suite::ALL {
        assert_eq!(suite.as_str().parse::<Suite>().unwrap(), suite);
        assert_eq!(suite.to_string(), suite.as_str());
    }
    assert_eq!(Suite::default(), Suite::WireGuard);
    assert_eq!(Suite::WireGuard.as_str(), "wireguard");
    assert_eq!(Suite::Ipsec.as_str(), "ipsec");
    assert_eq!(
        "IPsec".parse::<Suite>().unwrap_err(),
        "expected wireguard or ipsec, got \"IPsec\""
    );
    assert_eq!(serde_json::to_string(&Suite::Ipsec).unwrap(), "\"ipsec\"");
    assert_eq!(
        serde_json::from_str::<Suite>("\"wireguard\"").unwrap(),
        Suite::WireGuard
    );
}

#[test]
fn ipsec_example_file_loads() {
    let cfg = ClusterConfig::load(&ipsec_example_path()).unwrap();
    assert_eq!(cfg.cluster.name, "example-ipsec");
    assert_eq!(cfg.cluster.suite, Suite::Ipsec);
    let ipsec = cfg.cluster.ipsec.as_ref().unwrap();
    assert!(
        ipsec.psk_file.ends_with("examples/ipsec.psk"),
        "{}",
        ipsec.psk_file.display()
    );
    assert_eq!(ipsec.ike_proposals, braid_ipsec::proposal::default_ike_proposals());
    assert_eq!(ipsec.esp_proposals, braid_ipsec::proposal::default_esp_proposals());
    assert_eq!(
        (
            ipsec.ike_lifetime_s,
            ipsec.child_lifetime_s,
            ipsec.replay_window,
            ipsec.liveness_s
        ),
        (14_400, 3_600, 8192, 5),
        "the example spells out the defaults"
    );
    assert_eq!(cfg.pairs.iter().map(|p| p.id).collect::<Vec<_>>(), [1, 2, 3]);
    for pair in 1..=3u16 {
        let a = cfg.gateway("a", pair).unwrap();
        let b = cfg.gateway("b", pair).unwrap();
        assert_eq!(a.wan, addr(&format!("198.19.0.1{pair}:4500")));
        assert_eq!(b.wan, addr(&format!("198.19.0.11{pair}:4500")));
        for gw in [a, b] {
            assert_eq!(
                (gw.public_key, gw.private_key_file.as_ref(), gw.ike_id.as_ref()),
                (None, None, None)
            );
        }
    }
    // Read directly: git does not keep the 0600 mode `PresharedKey::load` insists on.
    let content = std::fs::read(&ipsec.psk_file).unwrap();
    let psk = crate::keys::PresharedKey::from_file_content(&content).unwrap();
    assert!(psk.as_bytes().len() >= 32);
}

#[test]
fn empty_pair_list_is_refused() {
    let text = base();
    let text = format!("{}pairs: []\n", &text[..text.find("pairs:\n").unwrap()]);
    let error = parse(&text).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{FILE}: pairs: expected at least one gateway pair")
    );
    assert_eq!(error.field(), Some("pairs"));
}

#[test]
fn field_errors_carry_their_path() {
    let error = parse(&edited("id: 2", "id: 1")).unwrap_err();
    assert_eq!(error.field(), Some("pairs[1].id"));
}

#[test]
fn controller_defaults_when_absent() {
    let cfg = parse(&base()).unwrap();
    assert_eq!(
        cfg.controller,
        ControllerConfig {
            address: ControlAddr::Unix(PathBuf::from("/run/braid/test/control.sock")),
            listen: None,
            metrics: addr("127.0.0.1:9477"),
            heartbeat_ms: 100,
            failure_timeout_ms: 400,
            recovery_ms: 1000,
            canary_rtt_alarm_ms: 200,
            drain_timeout_s: 300,
            restart_hook: None,
            admin_socket: PathBuf::from("/run/braid/test/admin.sock"),
            admin_listen: None,
            admin_key_file: None,
            state_dir: PathBuf::from("/var/lib/braid/test"),
            members: vec![ControllerMember {
                address: ControlAddr::Unix(PathBuf::from("/run/braid/test/control.sock")),
                listen: None,
                metrics: addr("127.0.0.1:9477"),
                admin_socket: PathBuf::from("/run/braid/test/admin.sock"),
                state_dir: PathBuf::from("/var/lib/braid/test"),
            }],
            member: 0,
            etcd: None,
        }
    );
    assert_eq!(cfg.controller.metrics, DEFAULT_METRICS_ADDR);
    assert_eq!(cfg.site("a").unwrap().demux.as_ref().unwrap().netns, None);
    assert_eq!(cfg.gateway("b", 2).unwrap().netns, None);
}

#[test]
fn controller_settings_and_netns() {
    let controller = "controller:\n  address: unix:run/control.sock\n  metrics: \"[::1]:9100\"\n  \
        heartbeat_ms: 50\n  failure_timeout_ms: 100\n  recovery_ms: 0\n  canary_rtt_alarm_ms: 150\n  \
        drain_timeout_s: 0\n  restart_hook: \"systemctl restart braid-{role}@{site}{pair}\"\n";
    let text = edited("\npairs:\n", &format!("\n{controller}pairs:\n"))
        .replace(
            "tun: braid0\n      geneve: 198.18.20.1:6081",
            "tun: braid0\n      geneve: 198.18.20.1:6081\n      netns: braid-b.demux",
        )
        .replace(
            "        private_key_file: keys/b1.key\n",
            "        private_key_file: keys/b1.key\n        netns: gw_B1\n",
        );
    let cfg = parse(&text).unwrap();
    let settings = &cfg.controller;
    assert_eq!(
        settings.address,
        ControlAddr::Unix(PathBuf::from("conf/run/control.sock")),
        "relative socket paths resolve against the file's directory"
    );
    assert_eq!(settings.metrics, addr("[::1]:9100"));
    assert_eq!(
        (
            settings.heartbeat_ms,
            settings.failure_timeout_ms,
            settings.recovery_ms,
            settings.canary_rtt_alarm_ms,
            settings.drain_timeout_s
        ),
        (50, 100, 0, 150, 0)
    );
    assert_eq!(
        settings.restart_command(&DaemonId::gateway("b", 3)).as_deref(),
        Some("systemctl restart braid-gw@b3")
    );
    assert_eq!(
        settings.restart_command(&DaemonId::demux("a")).as_deref(),
        Some("systemctl restart braid-demux@a0")
    );
    assert_eq!(
        cfg.site("b").unwrap().demux.as_ref().unwrap().netns.as_deref(),
        Some("braid-b.demux")
    );
    assert_eq!(cfg.gateway("b", 1).unwrap().netns.as_deref(), Some("gw_B1"));
    assert_eq!(cfg.gateway("a", 1).unwrap().netns, None);

    let yaml = cfg.to_yaml();
    assert!(yaml.contains("address: unix:run/control.sock"), "{yaml}");
    assert!(yaml.contains("admin_socket: /run/braid/test/admin.sock"), "{yaml}");
    assert!(!yaml.contains("admin_listen"), "{yaml}");
    assert_eq!(ClusterConfig::from_yaml_str(&yaml, &cfg.path).unwrap(), cfg, "{yaml}");

    let udp = edited(
        "\npairs:\n",
        "\ncontroller: { address: \"[2001:db8::1]:7400\" }\npairs:\n",
    );
    assert_eq!(
        parse(&udp).unwrap().controller.address,
        ControlAddr::Udp(addr("[2001:db8::1]:7400"))
    );
}

/// `ipsec_base()` with site b external: no demux, a canary, gateways with only `wan`.
fn external_base() -> String {
    let text = ipsec_base().replace(
        "    demux:\n      tun: braid0\n      geneve: 198.18.20.1:6081\n",
        "    external: true\n    canary: 198.18.2.2\n",
    );
    text.lines()
        .filter(|line| !line.contains("geneve: 198.18.20.1"))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[test]
fn external_site_loads_and_round_trips() {
    let cfg = parse(&external_base()).unwrap_or_else(|e| panic!("{e}\n{}", external_base()));
    let b = cfg.site("b").unwrap();
    assert!(b.is_external() && b.demux.is_none());
    assert_eq!(
        b.external.as_ref().unwrap().canary,
        "198.18.2.2".parse::<std::net::IpAddr>().unwrap()
    );
    assert!(!cfg.site("a").unwrap().is_external());
    assert_eq!(cfg.gateway("b", 1).unwrap().geneve, None);
    assert_eq!(cfg.gateway("b", 2).unwrap().wan, addr("198.19.0.112:51820"));
    assert_eq!(cfg.gateway("a", 1).unwrap().geneve, Some(addr("198.18.10.11:6081")));
    assert_eq!(parse(&cfg.to_yaml()).unwrap(), cfg);
}

const EXTERNAL_BROKEN: &[Broken] = &[
    ("external site with a demux", &[("    external: true\n", "    external: true\n    demux: { tun: braid0, geneve: 198.18.20.1:6081 }\n")], "sites.b.demux: an external site runs no braid, so it has no demux"),
    ("external site without a canary", &[("    canary: 198.18.2.2\n", "")], "sites.b.canary: expected the address of a host inside the external site that answers ICMP echo"),
    ("canary outside the site", &[("canary: 198.18.2.2", "canary: 198.18.1.2")], "sites.b.canary: 198.18.1.2 is not inside the site's prefixes"),
    ("canary of the wrong family", &[("    prefixes: [198.18.2.0/24]\n", "    prefixes: [198.18.2.0/24, 2001:db8:2::/48]\n"), ("canary: 198.18.2.2", "canary: 2001:db8:2::2")], "sites.b.canary: 2001:db8:2::2 must be of the same family as the other site's first prefix"),
    ("canary on a braid site", &[("    prefixes: [198.18.1.0/24]\n", "    prefixes: [198.18.1.0/24]\n    canary: 198.18.1.2\n")], "sites.a.canary: only an external site (external: true) names a canary address"),
    ("braid site without a demux", &[("    demux:\n      tun: braid0\n      geneve: 198.18.10.1:6081\n", "")], "sites.a.demux: expected a demux section (tun, geneve), which every site running braid needs"),
    ("both sites external", &[("    demux:\n      tun: braid0\n      geneve: 198.18.10.1:6081\n", "    external: true\n    canary: 198.18.1.2\n")], "sites.b.external: only one site may be external"),
    ("external gateway with a geneve address", &[("        wan: 198.19.0.111:51820\n", "        wan: 198.19.0.111:51820\n        geneve: 198.18.20.11:6081\n")], "pairs[0].gateways.b.geneve: site \"b\" is external: its gateways are IPsec endpoints with only a wan address"),
    ("braid gateway without a geneve address", &[("        geneve: 198.18.10.12:6081\n", "")], "pairs[1].gateways.a.geneve: expected the gateway's LAN address (IP:port), where its demux sends GENEVE; got nothing"),
    ("external gateway with a listen address", &[("        wan: 198.19.0.111:51820\n", "        wan: 198.19.0.111:51820\n        wan_listen: 10.0.0.1:4500\n")], "pairs[0].gateways.b.wan_listen: site \"b\" is external: braid runs none of its gateways, so there is nothing to bind"),
    ("external site with WireGuard", &[("  suite: ipsec\n", "  suite: wireguard\n"), (IPSEC_SECTION, "")], "sites.b.external: an external site needs cluster.suite ipsec"),
];

#[test]
fn broken_external_sites_name_the_field() {
    for &(what, edits, expected) in EXTERNAL_BROKEN {
        let mut text = external_base();
        for &(from, to) in edits {
            assert_eq!(text.matches(from).count(), 1, "{what}: {from:?} must occur once");
            text = text.replace(from, to);
        }
        let message = match parse(&text) {
            Ok(_) => panic!("{what}: accepted\n{text}"),
            Err(error) => error.to_string(),
        };
        let expected = format!("{FILE}: {expected}");
        assert!(
            message.starts_with(&expected),
            "{what}:\n  got      {message}\n  expected {expected}..."
        );
    }
}

#[test]
fn external_example_file_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ipsec-external-site.yaml");
    let cfg = ClusterConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let b = cfg.site("b").unwrap();
    assert!(b.is_external());
    assert_eq!(
        cfg.gateway("b", 2).unwrap().ike_id.as_deref(),
        Some("@vpn-tunnel-2.example.net")
    );
    assert!(cfg.site("a").unwrap().demux.is_some());
}

#[test]
fn admin_channels_and_state_dir() {
    let controller = "controller:\n  admin_socket: run/admin.sock\n  admin_listen: \"0.0.0.0:7401\"\n  \
        admin_key_file: admin.key\n  state_dir: state\n";
    let cfg = parse(&edited("\npairs:\n", &format!("\n{controller}pairs:\n"))).unwrap();
    let settings = &cfg.controller;
    assert_eq!(settings.admin_socket, Path::new("conf/run/admin.sock"));
    assert_eq!(settings.admin_listen, Some(addr("0.0.0.0:7401")));
    assert_eq!(settings.admin_key_file.as_deref(), Some(Path::new("conf/admin.key")));
    assert_eq!(settings.state_dir, Path::new("conf/state"));
    let yaml = cfg.to_yaml();
    assert!(yaml.contains("admin_socket: run/admin.sock"), "{yaml}");
    assert!(yaml.contains("admin_key_file: admin.key"), "{yaml}");
    assert!(yaml.contains("state_dir: state"), "{yaml}");
    assert_eq!(ClusterConfig::from_yaml_str(&yaml, &cfg.path).unwrap(), cfg, "{yaml}");

    let absolute = edited(
        "\npairs:\n",
        "\ncontroller: { admin_socket: /srv/braid/admin.sock, state_dir: /srv/braid/state }\npairs:\n",
    );
    let cfg = parse(&absolute).unwrap();
    assert_eq!(cfg.controller.admin_socket, Path::new("/srv/braid/admin.sock"));
    assert_eq!(cfg.controller.state_dir, Path::new("/srv/braid/state"));
}

const CONTROLLER_SET: &str =
    "controller:\n  etcd:\n    endpoints: [http://198.18.0.5:2379, \"http://[::1]:2379\"]\n    \
    lease_ttl_s: 3\n  members:\n    - address: 198.18.0.1:7400\n      metrics: 198.18.0.1:9477\n    \
    - address: 198.18.0.2:7400\n      metrics: 198.18.0.2:9477\n      admin_socket: run/admin-1.sock\n      \
    state_dir: state-1\n      listen: 10.0.0.2:7400\n";

fn with_controller(section: &str) -> String {
    edited("\npairs:\n", &format!("\n{section}pairs:\n"))
}

#[test]
fn a_controller_set_lists_every_member_and_elects_through_etcd() {
    let cfg = parse(&with_controller(CONTROLLER_SET)).unwrap();
    let c = &cfg.controller;
    assert_eq!(c.members.len(), 2);
    assert_eq!(c.member, 0);
    assert_eq!(
        c.address,
        ControlAddr::Udp(addr("198.18.0.1:7400")),
        "member 0 by default"
    );
    assert_eq!(
        c.control_addresses(),
        [
            ControlAddr::Udp(addr("198.18.0.1:7400")),
            ControlAddr::Udp(addr("198.18.0.2:7400"))
        ]
    );
    let etcd = c.etcd.as_ref().unwrap();
    assert_eq!(etcd.endpoints, ["http://198.18.0.5:2379", "http://[::1]:2379"]);
    assert_eq!(etcd.prefix, "/braid/test", "the prefix defaults to the cluster's name");
    assert_eq!(etcd.lease_ttl_s, 3);
    let second = c.as_member(1).unwrap();
    assert_eq!(second.member, 1);
    assert_eq!(second.metrics, addr("198.18.0.2:9477"));
    assert_eq!(second.admin_socket, PathBuf::from("conf/run/admin-1.sock"));
    assert_eq!(second.state_dir, PathBuf::from("conf/state-1"));
    assert_eq!(
        second.bind_address(),
        ControlAddr::Udp(addr("10.0.0.2:7400")),
        "behind its NAT"
    );
    assert_eq!(c.bind_address(), c.address, "member 0 binds what it advertises");
    assert_eq!(second.members, c.members, "every member knows the whole set");
    assert!(c.as_member(2).is_none());
    assert_eq!(
        ClusterConfig::from_yaml_str(&cfg.to_yaml(), &cfg.path).unwrap(),
        cfg,
        "written back as a set"
    );
}

#[test]
fn a_controller_set_is_refused_without_etcd_or_with_lone_fields_or_bad_endpoints() {
    let cases = [
        (
            CONTROLLER_SET.replace(
                "  etcd:\n    endpoints: [http://198.18.0.5:2379, \"http://[::1]:2379\"]\n    lease_ttl_s: 3\n",
                "",
            ),
            "controller.members",
            "etcd",
        ),
        (
            CONTROLLER_SET.replace("  members:\n", "  metrics: 127.0.0.1:9000\n  members:\n"),
            "controller.metrics",
            "in its entry",
        ),
        (
            CONTROLLER_SET.replace("http://198.18.0.5:2379", "https://198.18.0.5:2379"),
            "controller.etcd.endpoints[0]",
            "http://HOST:PORT",
        ),
        (
            CONTROLLER_SET.replace("lease_ttl_s: 3", "lease_ttl_s: 0"),
            "controller.etcd.lease_ttl_s",
            "",
        ),
        (
            CONTROLLER_SET.replace("198.18.0.2:7400", "198.18.0.1:7400"),
            "controller.members[1].address",
            "also",
        ),
    ];
    for (section, field, says) in cases {
        let error = parse(&with_controller(&section)).unwrap_err();
        assert_eq!(error.field(), Some(field), "{error}");
        assert!(error.to_string().contains(says), "{error}");
    }
}

/// Behind a 1:1 NAT: gateways and the controller bind a local address and advertise another.
#[test]
fn listen_addresses_behind_nat() {
    let text = edited(
        "        wan: 198.19.0.11:51820\n",
        "        wan: 198.19.0.11:51820\n        wan_listen: 198.18.30.11:51820\n",
    )
    .replace(
        "\npairs:\n",
        "\ncontroller: { address: 198.19.0.1:7400, listen: \"0.0.0.0:7400\" }\npairs:\n",
    )
    .replace(
        "        wan: 198.19.0.112:51820\n",
        "        wan: 198.19.0.112:51820\n        wan_listen: \"0.0.0.0:4500\"\n",
    );
    let cfg = parse(&text).unwrap();
    let a1 = cfg.gateway("a", 1).unwrap();
    assert_eq!(
        a1.wan,
        addr("198.19.0.11:51820"),
        "peers still send to the advertised address"
    );
    assert_eq!(a1.wan_listen, Some(addr("198.18.30.11:51820")));
    assert_eq!(a1.wan_bind(), addr("198.18.30.11:51820"));
    let b2 = cfg.gateway("b", 2).unwrap();
    assert_eq!(b2.wan_bind(), addr("0.0.0.0:4500"), "any local address, another port");
    let b1 = cfg.gateway("b", 1).unwrap();
    assert_eq!(
        (b1.wan_listen, b1.wan_bind()),
        (None, b1.wan),
        "by default the advertised one"
    );

    let controller = &cfg.controller;
    assert_eq!(controller.address, ControlAddr::Udp(addr("198.19.0.1:7400")));
    assert_eq!(controller.bind_address(), ControlAddr::Udp(addr("0.0.0.0:7400")));
    let plain = parse(&base()).unwrap().controller;
    assert_eq!(plain.bind_address(), plain.address);

    let yaml = cfg.to_yaml();
    assert!(yaml.contains("wan_listen: 198.18.30.11:51820"), "{yaml}");
    assert!(yaml.contains("listen: 0.0.0.0:7400"), "{yaml}");
    assert_eq!(ClusterConfig::from_yaml_str(&yaml, &cfg.path).unwrap(), cfg, "{yaml}");
}
