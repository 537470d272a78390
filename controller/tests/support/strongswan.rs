//! A real strongSwan 5.9.8 peer (charon + kernel-libipsec, driven through vici by `swanctl`) for
//! IPsec interop tests.
//!
//! Include it from a test file with `#[path = "support/strongswan.rs"] mod strongswan;`. It
//! depends on nothing but std and libc.
//!
//! How one charon runs inside a lab namespace:
//!
//! * `ip netns exec NS unshare --mount --propagation private sh -c 'mount -t tmpfs … /run && exec
//!   /usr/lib/ipsec/charon'`: every charon gets its own mount namespace with a private /run (its
//!   pid file lives there; a second charon would refuse to start beside it). `ip`, `unshare` and
//!   `sh` all exec, so the child's pid is charon's; the mount namespace dies with it.
//! * `STRONGSWAN_CONF` points at a per-instance `strongswan.conf` in the instance's directory:
//!   an explicit plugin list (`load_modular = no`, so Debian's `/etc/strongswan.d`, which keeps
//!   kernel-libipsec off, is never read), the vici socket and the file log in that directory.
//! * `swanctl --uri unix://DIR/charon.vici` talks to it from the test process (the socket lives
//!   on the shared filesystem, not in /run); `swanctl.conf` lives in `DIR/swanctl/`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The charon daemon (package strongswan-charon).
pub const CHARON: &str = "/usr/lib/ipsec/charon";
/// Where charon's plugins live.
pub const PLUGIN_DIR: &str = "/usr/lib/ipsec/plugins";
/// The plugins every instance loads, in this order (kernel-libipsec before kernel-netlink, so
/// that ESP runs in userspace over the `ipsec0` TUN; this kernel has no XFRM ESP).
pub const PLUGINS: &[&str] = &[
    "random",
    "nonce",
    "openssl",
    "aes",
    "sha1",
    "sha2",
    "hmac",
    "gcm",
    "chapoly",
    "curve25519",
    "kdf",
    "pem",
    "pkcs1",
    "x509",
    "pubkey",
    "kernel-libipsec",
    "kernel-netlink",
    "socket-default",
    "vici",
    "counters",
];
/// How long a charon may take from spawn until its vici socket answers.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ordinary swanctl command (list, load, stats) may take.
const SWANCTL_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Prerequisites

/// Why a strongSwan interop test cannot run here, if it cannot: not root, no /dev/net/tun, or a
/// binary or plugin missing (charon, swanctl, kernel-libipsec, vici, counters, unshare, mount,
/// ip, and tcpdump, which every interop test uses for its WAN capture).
pub fn strongswan_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: strongSwan interop needs root for namespaces, mounts and TUN".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing (kernel-libipsec needs a TUN)".into());
    }
    if !Path::new(CHARON).is_file() {
        return Some(format!("{CHARON} is missing (install strongswan-charon)"));
    }
    for plugin in PLUGINS {
        let so = Path::new(PLUGIN_DIR).join(format!("libstrongswan-{plugin}.so"));
        if !so.is_file() {
            return Some(format!(
                "strongSwan plugin {plugin} is missing ({}; install libcharon-extra-plugins, \
                 libstrongswan-standard-plugins and libstrongswan-extra-plugins)",
                so.display()
            ));
        }
    }
    for (tool, package) in [
        ("swanctl", "strongswan-swanctl"),
        ("unshare", "util-linux"),
        ("mount", "mount"),
        ("ip", "iproute2"),
        ("tcpdump", "tcpdump"),
    ] {
        if find_tool(tool).is_none() {
            return Some(format!("`{tool}` is not installed (package {package})"));
        }
    }
    None
}

/// Prints a loud skip notice and returns true when strongSwan interop cannot run. Under CI
/// (CI=true) a missing prerequisite is a failure, not a skip.
pub fn skip_without_strongswan(test: &str) -> bool {
    match strongswan_unavailable() {
        None => false,
        Some(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: strongSwan interop cannot run under CI: {why}");
            }
            eprintln!("\n======== SKIPPED {test}: {why} ========\n");
            true
        }
    }
}

/// The absolute path of `name` in PATH, or in the sbin/bin directories (cargo may run tests
/// with a PATH without /usr/sbin).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// `start_action` of the CHILD_SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAction {
    /// Wait for the peer or for `initiate`.
    None,
    /// Initiate as soon as the config is loaded.
    Start,
    /// Install a trap: the first packet matching the traffic selectors should start the SA.
    ///
    /// With kernel-libipsec (5.9.8) a trap only installs the policy and the route: libipsec
    /// drops the packet ("could not find an outbound IPsec SA for reqid {1}, dropping packet")
    /// and never sends the acquire (a TODO in ipsec_processor.c), so nothing is initiated. It
    /// is still useful on the responder side (the route exists before any SA), not to make
    /// strongSwan initiate: use `Start` or [`Charon::initiate`] for that.
    Trap,
}

impl StartAction {
    pub fn as_str(self) -> &'static str {
        match self {
            StartAction::None => "none",
            StartAction::Start => "start",
            StartAction::Trap => "trap",
        }
    }
}

/// One strongSwan instance's configuration: one IKEv2 connection (`conn`, default "braid") with
/// one CHILD_SA (`child`, default "site"), PSK on both sides, UDP encapsulation forced.
///
/// Build it with [`SwanConf::new`] and struct update or the `with_*` methods. Lifetimes are
/// whole seconds. When a rekey time is set and its `*_rand_time` is not, the rendering sets
/// `rand_time = 0s`, so rekeys happen exactly when configured (strongSwan subtracts a random
/// jitter by default).
#[derive(Debug, Clone)]
pub struct SwanConf {
    /// Connection name (`connections.<conn>`).
    pub conn: String,
    /// CHILD_SA name (`children.<child>`).
    pub child: String,
    /// `local_addrs`: this instance's WAN address.
    pub local_addr: String,
    /// `local.id` (default: the local address).
    pub local_id: String,
    /// `remote_addrs`: the peer's WAN address, or `%any`.
    pub remote_addr: String,
    /// `remote.id` (default: the remote address).
    pub remote_id: String,
    /// The pre-shared key, registered for (local_id, remote_id).
    pub psk: String,
    /// `local_ts`, e.g. `["198.18.2.0/24"]`.
    pub local_ts: Vec<String>,
    /// `remote_ts`.
    pub remote_ts: Vec<String>,
    /// IKE `proposals` (default `aes256gcm16-prfsha256-x25519`).
    pub ike_proposals: String,
    /// CHILD `esp_proposals` (default `aes256gcm16`; e.g. `chacha20poly1305`).
    pub esp_proposals: String,
    /// CHILD `start_action` (default none).
    pub start_action: StartAction,
    /// `local_port` (default `Some(4500)`; None: the socket's default, 500, floating to 4500).
    ///
    /// braid gateways listen only on UDP 4500, and with `remote_port = 4500` alone strongSwan
    /// still sends its IKE_SA_INIT from port 500 to 4500 *without* the non-ESP marker (only its
    /// 4500 socket adds one), which a 4500-only peer would take for ESP; it floats to 4500↔4500
    /// only from IKE_AUTH on. `local_port = 4500` makes every IKE message 4500↔4500 with the
    /// marker. As a responder, strongSwan answers on whatever port it was reached on.
    pub local_port: Option<u16>,
    /// `remote_port` (default `Some(4500)`, see `local_port`; None: 500, floating to 4500).
    pub remote_port: Option<u16>,
    /// `encap = yes` (default true: braid always runs ESP in UDP).
    pub encap: bool,
    /// `mobike` (strongSwan's default, true).
    pub mobike: bool,
    /// IKE `rekey_time`.
    pub ike_rekey_time: Option<Duration>,
    /// Hard IKE lifetime; rendered as `over_time = life - rekey`.
    pub ike_life_time: Option<Duration>,
    /// IKE `rand_time` (see the type's docs for the default).
    pub ike_rand_time: Option<Duration>,
    /// CHILD `rekey_time`.
    pub child_rekey_time: Option<Duration>,
    /// CHILD `life_time` (hard).
    pub child_life_time: Option<Duration>,
    /// CHILD `rand_time` (see the type's docs for the default).
    pub child_rand_time: Option<Duration>,
    /// `dpd_delay` (None: strongSwan's default, 0 = off).
    pub dpd_delay: Option<Duration>,
    /// CHILD `dpd_action` (clear, trap, restart).
    pub dpd_action: Option<String>,
    /// Extra `key = value` lines for the `charon { }` section of strongswan.conf (e.g.
    /// `retransmit_tries = 2`).
    pub extra_charon: Vec<String>,
    /// Extra `key = value` lines for the connection section of swanctl.conf.
    pub extra_conn: Vec<String>,
    /// Extra `key = value` lines for the CHILD section of swanctl.conf.
    pub extra_child: Vec<String>,
}

impl SwanConf {
    /// A connection from `local` to `remote` (addresses and IDs), protecting `local_ts` ↔
    /// `remote_ts` (comma separated CIDRs), with the defaults documented on the fields.
    pub fn new(local: Ipv4Addr, remote: Ipv4Addr, local_ts: &str, remote_ts: &str) -> SwanConf {
        let split = |ts: &str| {
            ts.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        SwanConf {
            conn: "braid".into(),
            child: "site".into(),
            local_addr: local.to_string(),
            local_id: local.to_string(),
            remote_addr: remote.to_string(),
            remote_id: remote.to_string(),
            psk: "braid-interop-psk-0123456789abcdef".into(),
            local_ts: split(local_ts),
            remote_ts: split(remote_ts),
            ike_proposals: "aes256gcm16-prfsha256-x25519".into(),
            esp_proposals: "aes256gcm16".into(),
            start_action: StartAction::None,
            local_port: Some(4500),
            remote_port: Some(4500),
            encap: true,
            mobike: true,
            ike_rekey_time: None,
            ike_life_time: None,
            ike_rand_time: None,
            child_rekey_time: None,
            child_life_time: None,
            child_rand_time: None,
            dpd_delay: None,
            dpd_action: None,
            extra_charon: Vec::new(),
            extra_conn: Vec::new(),
            extra_child: Vec::new(),
        }
    }

    pub fn with_psk(mut self, psk: &str) -> Self {
        self.psk = psk.into();
        self
    }

    pub fn with_ids(mut self, local_id: &str, remote_id: &str) -> Self {
        self.local_id = local_id.into();
        self.remote_id = remote_id.into();
        self
    }

    pub fn with_ike_proposals(mut self, proposals: &str) -> Self {
        self.ike_proposals = proposals.into();
        self
    }

    pub fn with_esp_proposals(mut self, proposals: &str) -> Self {
        self.esp_proposals = proposals.into();
        self
    }

    pub fn with_start_action(mut self, action: StartAction) -> Self {
        self.start_action = action;
        self
    }

    /// strongSwan's own port handling: IKE_SA_INIT on 500↔500, then floating to 4500.
    pub fn with_default_ports(mut self) -> Self {
        self.local_port = None;
        self.remote_port = None;
        self
    }

    pub fn with_local_port(mut self, port: u16) -> Self {
        self.local_port = Some(port);
        self
    }

    pub fn with_remote_port(mut self, port: u16) -> Self {
        self.remote_port = Some(port);
        self
    }

    /// IKE rekey after `rekey`, hard limit at `life` (must be later).
    pub fn with_ike_lifetimes(mut self, rekey: Duration, life: Duration) -> Self {
        self.ike_rekey_time = Some(rekey);
        self.ike_life_time = Some(life);
        self
    }

    /// CHILD rekey after `rekey`, hard limit at `life` (must be later).
    pub fn with_child_lifetimes(mut self, rekey: Duration, life: Duration) -> Self {
        self.child_rekey_time = Some(rekey);
        self.child_life_time = Some(life);
        self
    }

    pub fn with_dpd_delay(mut self, delay: Duration) -> Self {
        self.dpd_delay = Some(delay);
        self
    }

    /// Renders `(strongswan.conf, swanctl.conf)` for an instance whose files live in `dir`.
    pub fn render_in(&self, dir: &Path) -> (String, String) {
        (self.render_strongswan_conf(dir), self.render_swanctl_conf())
    }

    /// [`render_in`](Self::render_in) with the placeholder directory `/INSTANCE-DIR`.
    pub fn render(&self) -> (String, String) {
        self.render_in(Path::new("/INSTANCE-DIR"))
    }

    fn render_strongswan_conf(&self, dir: &Path) -> String {
        let dir = dir.display();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# written by the braid interop harness (tests/support/strongswan.rs)"
        );
        let _ = writeln!(s, "charon {{");
        let _ = writeln!(s, "    load_modular = no");
        let _ = writeln!(s, "    load = {}", PLUGINS.join(" "));
        let _ = writeln!(s, "    install_routes = yes");
        let _ = writeln!(s, "    port = 500");
        let _ = writeln!(s, "    port_nat_t = 4500");
        for line in &self.extra_charon {
            let _ = writeln!(s, "    {line}");
        }
        let _ = writeln!(s, "    filelog {{");
        let _ = writeln!(s, "        main {{");
        let _ = writeln!(s, "            path = {dir}/charon.log");
        let _ = writeln!(s, "            time_format = %H:%M:%S");
        let _ = writeln!(s, "            ike_name = yes");
        let _ = writeln!(s, "            append = no");
        let _ = writeln!(s, "            flush_line = yes");
        let _ = writeln!(s, "            default = 1");
        for (group, level) in [("ike", 2), ("cfg", 2), ("knl", 2), ("net", 1), ("esp", 1), ("lib", 1)] {
            let _ = writeln!(s, "            {group} = {level}");
        }
        let _ = writeln!(s, "        }}");
        let _ = writeln!(s, "    }}");
        let _ = writeln!(s, "    syslog {{");
        let _ = writeln!(s, "        daemon {{");
        let _ = writeln!(s, "            default = -1");
        let _ = writeln!(s, "        }}");
        let _ = writeln!(s, "    }}");
        let _ = writeln!(s, "    plugins {{");
        let _ = writeln!(s, "        vici {{");
        let _ = writeln!(s, "            socket = unix://{dir}/charon.vici");
        let _ = writeln!(s, "        }}");
        let _ = writeln!(s, "        socket-default {{");
        let _ = writeln!(s, "            use_ipv6 = no");
        let _ = writeln!(s, "        }}");
        let _ = writeln!(s, "    }}");
        let _ = writeln!(s, "}}");
        s
    }

    fn render_swanctl_conf(&self) -> String {
        let secs = |d: Duration| {
            assert!(d.as_secs() >= 1, "strongSwan lifetimes are whole seconds, got {d:?}");
            format!("{}s", d.as_secs())
        };
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# written by the braid interop harness (tests/support/strongswan.rs)"
        );
        let _ = writeln!(s, "connections {{");
        let _ = writeln!(s, "    {} {{", self.conn);
        let _ = writeln!(s, "        version = 2");
        let _ = writeln!(s, "        local_addrs = {}", self.local_addr);
        let _ = writeln!(s, "        remote_addrs = {}", self.remote_addr);
        if let Some(p) = self.local_port {
            let _ = writeln!(s, "        local_port = {p}");
        }
        if let Some(p) = self.remote_port {
            let _ = writeln!(s, "        remote_port = {p}");
        }
        let _ = writeln!(s, "        encap = {}", yes(self.encap));
        let _ = writeln!(s, "        mobike = {}", yes(self.mobike));
        let _ = writeln!(s, "        proposals = {}", self.ike_proposals);
        if let Some(rekey) = self.ike_rekey_time {
            let _ = writeln!(s, "        rekey_time = {}", secs(rekey));
            if let Some(life) = self.ike_life_time {
                assert!(
                    life > rekey,
                    "ike_life_time {life:?} must exceed ike_rekey_time {rekey:?}"
                );
                let _ = writeln!(s, "        over_time = {}", secs(life - rekey));
            }
            let _ = writeln!(
                s,
                "        rand_time = {}",
                self.ike_rand_time.map_or("0s".into(), secs)
            );
        } else if let Some(rand) = self.ike_rand_time {
            let _ = writeln!(s, "        rand_time = {}", secs(rand));
        }
        if let Some(d) = self.dpd_delay {
            let _ = writeln!(s, "        dpd_delay = {}", secs(d));
        }
        for line in &self.extra_conn {
            let _ = writeln!(s, "        {line}");
        }
        let _ = writeln!(s, "        local {{");
        let _ = writeln!(s, "            auth = psk");
        let _ = writeln!(s, "            id = {}", quote(&self.local_id));
        let _ = writeln!(s, "        }}");
        let _ = writeln!(s, "        remote {{");
        let _ = writeln!(s, "            auth = psk");
        let _ = writeln!(s, "            id = {}", quote(&self.remote_id));
        let _ = writeln!(s, "        }}");
        let _ = writeln!(s, "        children {{");
        let _ = writeln!(s, "            {} {{", self.child);
        let _ = writeln!(s, "                mode = tunnel");
        let _ = writeln!(s, "                local_ts = {}", self.local_ts.join(","));
        let _ = writeln!(s, "                remote_ts = {}", self.remote_ts.join(","));
        let _ = writeln!(s, "                esp_proposals = {}", self.esp_proposals);
        let _ = writeln!(s, "                start_action = {}", self.start_action.as_str());
        if let Some(rekey) = self.child_rekey_time {
            let _ = writeln!(s, "                rekey_time = {}", secs(rekey));
            let _ = writeln!(
                s,
                "                rand_time = {}",
                self.child_rand_time.map_or("0s".into(), secs)
            );
        } else if let Some(rand) = self.child_rand_time {
            let _ = writeln!(s, "                rand_time = {}", secs(rand));
        }
        if let Some(life) = self.child_life_time {
            if let Some(rekey) = self.child_rekey_time {
                assert!(
                    life > rekey,
                    "child_life_time {life:?} must exceed child_rekey_time {rekey:?}"
                );
            }
            let _ = writeln!(s, "                life_time = {}", secs(life));
        }
        if let Some(action) = &self.dpd_action {
            let _ = writeln!(s, "                dpd_action = {action}");
        }
        for line in &self.extra_child {
            let _ = writeln!(s, "                {line}");
        }
        let _ = writeln!(s, "            }}");
        let _ = writeln!(s, "        }}");
        let _ = writeln!(s, "    }}");
        let _ = writeln!(s, "}}");
        let _ = writeln!(s, "secrets {{");
        let _ = writeln!(s, "    ike-{} {{", self.conn);
        let _ = writeln!(s, "        id-1 = {}", quote(&self.local_id));
        let _ = writeln!(s, "        id-2 = {}", quote(&self.remote_id));
        let _ = writeln!(s, "        secret = {}", quote(&self.psk));
        let _ = writeln!(s, "    }}");
        let _ = writeln!(s, "}}");
        s
    }
}

/// A double-quoted strongswan.conf string.
fn quote(value: &str) -> String {
    let mut q = String::from("\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

// ---------------------------------------------------------------------------------------------
// What `swanctl --list-sas` shows

/// One IKE_SA, from `swanctl --list-sas --pretty`.
#[derive(Debug, Clone, Default)]
pub struct IkeSa {
    /// The connection name.
    pub name: String,
    pub uniqueid: u32,
    /// CONNECTING, ESTABLISHED, REKEYING, REKEYED, DELETING, …
    pub state: String,
    pub local_host: String,
    pub local_port: u16,
    pub local_id: String,
    pub remote_host: String,
    pub remote_port: u16,
    pub remote_id: String,
    /// Whether this instance initiated the IKE_SA (or its last rekey).
    pub initiator: bool,
    pub initiator_spi: String,
    pub responder_spi: String,
    /// Whether strongSwan believes the peer is behind a NAT (always, with `encap = yes`).
    pub nat_remote: bool,
    pub nat_local: bool,
    pub encr_alg: String,
    pub encr_keysize: u32,
    pub integ_alg: String,
    pub prf_alg: String,
    pub dh_group: String,
    /// Seconds since establishment.
    pub established: u64,
    /// Seconds until the scheduled rekey, if one is.
    pub rekey_time: Option<u64>,
    pub children: Vec<ChildSa>,
    /// Every `key = value` of the IKE_SA as printed (lists joined with ",").
    pub fields: BTreeMap<String, String>,
}

/// One CHILD_SA.
#[derive(Debug, Clone, Default)]
pub struct ChildSa {
    /// The child config's name.
    pub name: String,
    pub uniqueid: u32,
    pub reqid: u32,
    /// INSTALLED, REKEYING, REKEYED, DELETING, DELETED, …
    pub state: String,
    /// TUNNEL.
    pub mode: String,
    /// ESP.
    pub protocol: String,
    /// ESP in UDP.
    pub encap: bool,
    /// Our inbound SPI (hex, as printed).
    pub spi_in: String,
    /// The peer's inbound SPI.
    pub spi_out: String,
    pub encr_alg: String,
    pub encr_keysize: u32,
    pub integ_alg: String,
    pub esn: bool,
    pub bytes_in: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub packets_out: u64,
    pub rekey_time: Option<u64>,
    pub life_time: Option<u64>,
    pub install_time: Option<u64>,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    /// Every `key = value` as printed (lists joined with ",").
    pub fields: BTreeMap<String, String>,
}

impl IkeSa {
    /// The installed CHILD_SA called `name`, if any (the newest, after a rekey).
    pub fn installed_child(&self, name: &str) -> Option<&ChildSa> {
        self.children
            .iter()
            .filter(|c| c.name == name && c.state == "INSTALLED")
            .max_by_key(|c| c.uniqueid)
    }

    /// `ENCR-KEYSIZE/PRF/DH`, e.g. `AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519`.
    pub fn proposal(&self) -> String {
        let mut p = self.encr_alg.clone();
        if self.encr_keysize != 0 {
            let _ = write!(p, "-{}", self.encr_keysize);
        }
        for part in [&self.integ_alg, &self.prf_alg, &self.dh_group] {
            if !part.is_empty() {
                let _ = write!(p, "/{part}");
            }
        }
        p
    }
}

impl ChildSa {
    /// `ENCR-KEYSIZE[/INTEG]`, e.g. `AES_GCM_16-256` or `CHACHA20_POLY1305`.
    pub fn proposal(&self) -> String {
        let mut p = self.encr_alg.clone();
        if self.encr_keysize != 0 {
            let _ = write!(p, "-{}", self.encr_keysize);
        }
        if !self.integ_alg.is_empty() {
            let _ = write!(p, "/{}", self.integ_alg);
        }
        p
    }
}

/// A node of swanctl's `--pretty` output.
#[derive(Debug, Clone)]
enum Node {
    Value(String),
    List(Vec<String>),
    Section(Vec<(String, Node)>),
}

/// Parses swanctl's `--pretty` output (`name {` … `}`, `key = value`, `key = [` … `]`) into its
/// top-level sections, in order.
fn parse_pretty(text: &str) -> Vec<(String, Node)> {
    let mut stack: Vec<(String, Vec<(String, Node)>)> = vec![(String::new(), Vec::new())];
    let mut list: Option<(String, Vec<String>)> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some((key, items)) = list.as_mut() {
            if line == "]" {
                let (key, items) = (std::mem::take(key), std::mem::take(items));
                list = None;
                if let Some(top) = stack.last_mut() {
                    top.1.push((key, Node::List(items)));
                }
            } else {
                items.push(line.to_string());
            }
            continue;
        }
        if line == "}" {
            if stack.len() > 1 {
                let (name, entries) = stack.pop().unwrap_or_default();
                if let Some(top) = stack.last_mut() {
                    top.1.push((name, Node::Section(entries)));
                }
            }
            continue;
        }
        if let Some(name) = line.strip_suffix('{') {
            stack.push((name.trim().to_string(), Vec::new()));
            continue;
        }
        let (key, value) = match line.split_once(" =") {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        if value == "[" {
            list = Some((key.to_string(), Vec::new()));
        } else if let Some(top) = stack.last_mut() {
            top.1.push((key.to_string(), Node::Value(value.to_string())));
        }
    }
    // Close whatever a truncated output left open.
    while stack.len() > 1 {
        let (name, entries) = stack.pop().unwrap_or_default();
        if let Some(top) = stack.last_mut() {
            top.1.push((name, Node::Section(entries)));
        }
    }
    stack.pop().map(|(_, entries)| entries).unwrap_or_default()
}

fn flat_fields(entries: &[(String, Node)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .filter_map(|(k, v)| match v {
            Node::Value(s) => Some((k.clone(), s.clone())),
            Node::List(items) => Some((k.clone(), items.join(","))),
            Node::Section(_) => None,
        })
        .collect()
}

fn list_field(entries: &[(String, Node)], key: &str) -> Vec<String> {
    entries
        .iter()
        .find_map(|(k, v)| match v {
            Node::List(items) if k == key => Some(items.clone()),
            Node::Value(s) if k == key && !s.is_empty() => Some(vec![s.clone()]),
            _ => None,
        })
        .unwrap_or_default()
}

fn num<T: std::str::FromStr + Default>(f: &BTreeMap<String, String>, key: &str) -> T {
    f.get(key).and_then(|v| v.parse().ok()).unwrap_or_default()
}

fn opt_num(f: &BTreeMap<String, String>, key: &str) -> Option<u64> {
    f.get(key).and_then(|v| v.parse().ok())
}

fn text(f: &BTreeMap<String, String>, key: &str) -> String {
    f.get(key).cloned().unwrap_or_default()
}

fn flag(f: &BTreeMap<String, String>, key: &str) -> bool {
    f.get(key).is_some_and(|v| v == "yes")
}

/// Parses `swanctl --list-sas --pretty` output.
pub fn parse_list_sas(output: &str) -> Vec<IkeSa> {
    let mut sas = Vec::new();
    for (top, node) in parse_pretty(output) {
        let Node::Section(entries) = node else { continue };
        if top != "list-sa event" {
            continue;
        }
        for (name, ike) in entries {
            let Node::Section(ike) = ike else { continue };
            let f = flat_fields(&ike);
            let mut sa = IkeSa {
                name,
                uniqueid: num(&f, "uniqueid"),
                state: text(&f, "state"),
                local_host: text(&f, "local-host"),
                local_port: num(&f, "local-port"),
                local_id: text(&f, "local-id"),
                remote_host: text(&f, "remote-host"),
                remote_port: num(&f, "remote-port"),
                remote_id: text(&f, "remote-id"),
                initiator: flag(&f, "initiator"),
                initiator_spi: text(&f, "initiator-spi"),
                responder_spi: text(&f, "responder-spi"),
                nat_remote: flag(&f, "nat-remote"),
                nat_local: flag(&f, "nat-local"),
                encr_alg: text(&f, "encr-alg"),
                encr_keysize: num(&f, "encr-keysize"),
                integ_alg: text(&f, "integ-alg"),
                prf_alg: text(&f, "prf-alg"),
                dh_group: text(&f, "dh-group"),
                established: num(&f, "established"),
                rekey_time: opt_num(&f, "rekey-time"),
                children: Vec::new(),
                fields: f,
            };
            for (key, node) in &ike {
                let (Node::Section(children), "child-sas") = (node, key.as_str()) else {
                    continue;
                };
                for (_, child) in children {
                    let Node::Section(child) = child else { continue };
                    let f = flat_fields(child);
                    sa.children.push(ChildSa {
                        name: text(&f, "name"),
                        uniqueid: num(&f, "uniqueid"),
                        reqid: num(&f, "reqid"),
                        state: text(&f, "state"),
                        mode: text(&f, "mode"),
                        protocol: text(&f, "protocol"),
                        encap: flag(&f, "encap"),
                        spi_in: text(&f, "spi-in"),
                        spi_out: text(&f, "spi-out"),
                        encr_alg: text(&f, "encr-alg"),
                        encr_keysize: num(&f, "encr-keysize"),
                        integ_alg: text(&f, "integ-alg"),
                        esn: f.get("esn").is_some_and(|v| v == "1" || v == "yes"),
                        bytes_in: num(&f, "bytes-in"),
                        packets_in: num(&f, "packets-in"),
                        bytes_out: num(&f, "bytes-out"),
                        packets_out: num(&f, "packets-out"),
                        rekey_time: opt_num(&f, "rekey-time"),
                        life_time: opt_num(&f, "life-time"),
                        install_time: opt_num(&f, "install-time"),
                        local_ts: list_field(child, "local-ts"),
                        remote_ts: list_field(child, "remote-ts"),
                        fields: f,
                    });
                }
            }
            sas.push(sa);
        }
    }
    sas
}

/// Parses `swanctl --counters --pretty` output: every numeric `key = value`.
pub fn parse_counters(output: &str) -> BTreeMap<String, u64> {
    fn walk(entries: &[(String, Node)], out: &mut BTreeMap<String, u64>) {
        for (k, v) in entries {
            match v {
                Node::Value(s) => {
                    if let Ok(n) = s.parse() {
                        out.insert(k.clone(), n);
                    }
                }
                Node::Section(inner) => walk(inner, out),
                Node::List(_) => {}
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&parse_pretty(output), &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Running commands

/// Runs `cmd` to completion or until `timeout` (then kills it); returns (success, stdout,
/// stderr).
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<(bool, String, String), String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = pipe(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = pipe(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok((status.success(), out, err)),
        None => Err(format!(
            "{what} did not finish within {timeout:?}; stdout: {out} stderr: {err}"
        )),
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The daemon

/// A charon running in a network namespace of its own choosing, with its own mount namespace,
/// configuration and vici socket. Stopped when dropped (SIGTERM, SIGKILL after 2 s); when the
/// test is panicking, the drop prints the tail of its log first.
#[derive(Debug)]
pub struct Charon {
    netns: String,
    dir: PathBuf,
    conf: SwanConf,
    child: Option<Child>,
    pid: u32,
    starts: u32,
}

impl Charon {
    /// Starts charon in `netns` with its files in `dir` (created if missing; keep the path short:
    /// the vici socket's path must fit a sockaddr_un), waits until its vici socket answers and
    /// loads `conf` with `swanctl --load-all`.
    pub fn start(netns: &str, dir: &Path, conf: &SwanConf) -> Result<Charon, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("canonicalize {}: {e}", dir.display()))?;
        let mut charon = Charon {
            netns: netns.into(),
            dir,
            conf: conf.clone(),
            child: None,
            pid: 0,
            starts: 0,
        };
        charon.spawn()?;
        Ok(charon)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let swanctl_dir = self.dir.join("swanctl");
        // swanctl --load-all looks for credential directories beside swanctl.conf and complains
        // about every missing one.
        for sub in [
            "", "x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private", "rsa", "ecdsa",
            "bliss", "pkcs8", "pkcs12",
        ] {
            let d = swanctl_dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let (strongswan_conf, swanctl_conf) = self.conf.render_in(&self.dir);
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))
        };
        write(self.dir.join("strongswan.conf"), &strongswan_conf)?;
        write(swanctl_dir.join("swanctl.conf"), &swanctl_conf)?;
        let _ = std::fs::remove_file(self.vici_path());
        if self.starts > 0 {
            // Keep the previous instance's log beside the new one.
            let _ = std::fs::rename(self.log_path(), self.dir.join(format!("charon.{}.log", self.starts)));
        }
        let stderr_path = self.dir.join("charon.stderr");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .map_err(|e| format!("open {}: {e}", stderr_path.display()))?;
        let err = out.try_clone().map_err(|e| format!("dup: {e}"))?;
        let script = format!("mount -t tmpfs -o mode=0755,size=4m braid-charon-run /run && exec {CHARON}");
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "exec", &self.netns])
            .arg(tool("unshare"))
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Not in a process group of its own: a Ctrl-C on the test run reaches charon too.
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start charon in {}: {e}", self.netns))?;
        self.pid = child.id();
        self.child = Some(child);
        self.starts += 1;
        self.wait_ready()?;
        self.load()?;
        Ok(())
    }

    /// Waits until the vici socket answers (or charon died).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "charon in {} exited during startup ({status}); stderr:\n{}\nlog:\n{}",
                        self.netns,
                        tail(
                            &std::fs::read_to_string(self.dir.join("charon.stderr")).unwrap_or_default(),
                            20
                        ),
                        self.log_tail(40)
                    ));
                }
            }
            if self.vici_path().exists() {
                if let Ok((true, _, _)) = self.swanctl_raw(&["--stats"], Duration::from_secs(2)) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "charon in {} (pid {}) did not answer on {} within {READY_TIMEOUT:?}; log:\n{}",
                    self.netns,
                    self.pid,
                    self.uri(),
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// charon's pid (that of the current instance, after a restart).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The instance's directory (strongswan.conf, swanctl/swanctl.conf, charon.log,
    /// charon.stderr, charon.vici).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn conf(&self) -> &SwanConf {
        &self.conf
    }

    pub fn vici_path(&self) -> PathBuf {
        self.dir.join("charon.vici")
    }

    /// The vici URI for `swanctl --uri`.
    pub fn uri(&self) -> String {
        format!("unix://{}", self.vici_path().display())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("charon.log")
    }

    fn swanctl_raw(&self, args: &[&str], timeout: Duration) -> Result<(bool, String, String), String> {
        let mut cmd = Command::new(tool("swanctl"));
        cmd.args(args).arg("--uri").arg(self.uri());
        run_with_timeout(cmd, timeout)
    }

    /// Runs `swanctl ARGS --uri <this instance>`; returns stdout, or an error with stdout,
    /// stderr and the tail of charon's log.
    pub fn swanctl(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let (ok, out, err) = self
            .swanctl_raw(args, timeout)
            .map_err(|e| format!("{e}\ncharon log ({}):\n{}", self.netns, self.log_tail(40)))?;
        if ok {
            Ok(out)
        } else {
            Err(format!(
                "`swanctl {}` failed in {}:\n{}{}\ncharon log:\n{}",
                args.join(" "),
                self.netns,
                out,
                err,
                self.log_tail(40)
            ))
        }
    }

    /// (Re)loads swanctl.conf: `swanctl --load-all --file DIR/swanctl/swanctl.conf`.
    pub fn load(&self) -> Result<String, String> {
        let file = self.dir.join("swanctl").join("swanctl.conf");
        let file = file.to_string_lossy();
        self.swanctl(&["--load-all", "--file", &file], SWANCTL_TIMEOUT)
    }

    /// Replaces the configuration: rewrites both files and reloads the connections and secrets
    /// (strongswan.conf changes take effect on the next restart).
    pub fn reconfigure(&mut self, conf: &SwanConf) -> Result<String, String> {
        self.conf = conf.clone();
        let (strongswan_conf, swanctl_conf) = self.conf.render_in(&self.dir);
        std::fs::write(self.dir.join("strongswan.conf"), strongswan_conf).map_err(|e| e.to_string())?;
        std::fs::write(self.dir.join("swanctl").join("swanctl.conf"), swanctl_conf).map_err(|e| e.to_string())?;
        self.load()
    }

    /// `swanctl --initiate --child CHILD --ike <conn> --timeout 20`: returns swanctl's output
    /// (charon's control log of the exchange) once the CHILD_SA is up, or an error.
    pub fn initiate(&self, child: &str) -> Result<String, String> {
        self.swanctl(
            &[
                "--initiate",
                "--child",
                child,
                "--ike",
                &self.conf.conn,
                "--timeout",
                "20",
            ],
            Duration::from_secs(25),
        )
    }

    /// `swanctl --terminate --ike IKE --timeout 10`: deletes that IKE_SA (and its children).
    pub fn terminate(&self, ike: &str) -> Result<String, String> {
        self.swanctl(
            &["--terminate", "--ike", ike, "--timeout", "10"],
            Duration::from_secs(15),
        )
    }

    /// `swanctl --terminate --child CHILD --timeout 10`.
    pub fn terminate_child(&self, child: &str) -> Result<String, String> {
        self.swanctl(
            &["--terminate", "--child", child, "--timeout", "10"],
            Duration::from_secs(15),
        )
    }

    /// `swanctl --rekey --child CHILD` (which only schedules the rekey), then waits until an
    /// INSTALLED CHILD_SA of that name with a new inbound SPI exists, and returns it.
    pub fn rekey_child(&self, child: &str, timeout: Duration) -> Result<ChildSa, String> {
        let before: Vec<String> = self
            .try_sas()?
            .iter()
            .flat_map(|ike| ike.children.iter())
            .filter(|c| c.name == child)
            .map(|c| c.spi_in.clone())
            .collect();
        if before.is_empty() {
            return Err(format!(
                "no CHILD_SA {child} to rekey in {}:\n{}",
                self.netns,
                self.list_sas()
            ));
        }
        self.swanctl(&["--rekey", "--child", child], SWANCTL_TIMEOUT)?;
        self.wait_for_sas(&format!("a rekeyed CHILD_SA {child}"), timeout, |sas| {
            sas.iter()
                .flat_map(|ike| ike.children.iter())
                .filter(|c| c.name == child && c.state == "INSTALLED" && !before.contains(&c.spi_in))
                .max_by_key(|c| c.uniqueid)
                .cloned()
        })
    }

    /// `swanctl --rekey --ike IKE`, then waits until an ESTABLISHED IKE_SA of that name with
    /// new SPIs exists and no other IKE_SA of that name is left, and returns it.
    pub fn rekey_ike(&self, ike: &str, timeout: Duration) -> Result<IkeSa, String> {
        let before: Vec<String> = self
            .try_sas()?
            .iter()
            .filter(|sa| sa.name == ike)
            .map(|sa| sa.initiator_spi.clone())
            .collect();
        if before.is_empty() {
            return Err(format!(
                "no IKE_SA {ike} to rekey in {}:\n{}",
                self.netns,
                self.list_sas()
            ));
        }
        self.swanctl(&["--rekey", "--ike", ike], SWANCTL_TIMEOUT)?;
        self.wait_for_sas(&format!("a rekeyed IKE_SA {ike}"), timeout, |sas| {
            let mine: Vec<&IkeSa> = sas.iter().filter(|sa| sa.name == ike).collect();
            match mine.as_slice() {
                [sa] if sa.state == "ESTABLISHED" && !before.contains(&sa.initiator_spi) => Some((*sa).clone()),
                _ => None,
            }
        })
    }

    /// `swanctl --list-sas` as printed (or the error, if swanctl failed).
    pub fn list_sas(&self) -> String {
        self.swanctl(&["--list-sas"], SWANCTL_TIMEOUT).unwrap_or_else(|e| e)
    }

    /// The IKE_SAs and their CHILD_SAs (empty if swanctl failed).
    pub fn sas(&self) -> Vec<IkeSa> {
        self.try_sas().unwrap_or_default()
    }

    /// The IKE_SAs and their CHILD_SAs, from `swanctl --list-sas --pretty`.
    pub fn try_sas(&self) -> Result<Vec<IkeSa>, String> {
        self.swanctl(&["--list-sas", "--pretty"], SWANCTL_TIMEOUT)
            .map(|out| parse_list_sas(&out))
    }

    /// Polls the SAs every 100 ms until `check` returns something; on timeout the error shows
    /// `what`, the SAs and the log tail.
    pub fn wait_for_sas<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[IkeSa]) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = check(&self.sas()) {
                return Ok(found);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} (charon in {}): no {what} within {timeout:?}\n{}\ncharon log:\n{}",
                    self.conf.conn,
                    self.netns,
                    self.list_sas(),
                    self.log_tail(60)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for an ESTABLISHED IKE_SA of the configured connection with an INSTALLED CHILD_SA
    /// of the configured child, and returns it.
    pub fn wait_established(&self, timeout: Duration) -> Result<IkeSa, String> {
        let (conn, child) = (self.conf.conn.clone(), self.conf.child.clone());
        self.wait_for_sas(&format!("ESTABLISHED {conn} with INSTALLED {child}"), timeout, |sas| {
            sas.iter()
                .find(|sa| sa.name == conn && sa.state == "ESTABLISHED" && sa.installed_child(&child).is_some())
                .cloned()
        })
    }

    /// IKE event counters since start (`swanctl --counters`, counters plugin): e.g.
    /// `ike-rekey-init`, `ike-rekey-resp`, `child-rekey`, `invalid`, `ike-init-in-req`, …
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.swanctl(&["--counters", "--pretty"], SWANCTL_TIMEOUT)
            .map(|out| parse_counters(&out))
            .unwrap_or_default()
    }

    /// The current instance's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// The log's current length: pass it to [`wait_for_log_since`](Self::wait_for_log_since)
    /// to wait for a line written after now.
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    /// Waits until the log contains `needle`; on timeout the error holds the log tail.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        self.wait_for_log_since(0, needle, timeout)
    }

    /// Waits until the log, from byte `mark` on, contains `needle`.
    pub fn wait_for_log_since(&self, mark: usize, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.get(mark..).is_some_and(|l| l.contains(needle)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "charon in {}: {needle:?} not logged within {timeout:?}; log tail:\n{}",
                    self.netns,
                    tail(&log, 60)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the current instance still runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops charon: SIGTERM (it deletes its SAs, telling the peer), SIGKILL after 2 s.
    pub fn stop(&mut self) {
        self.signal_and_reap(libc::SIGTERM, Duration::from_secs(2));
    }

    /// Kills charon with SIGKILL at once: a crash, the peer is told nothing.
    pub fn kill(&mut self) {
        self.signal_and_reap(libc::SIGKILL, Duration::from_secs(2));
    }

    /// Starts a stopped or killed instance again with the current configuration (the previous
    /// log is kept as charon.N.log).
    pub fn start_again(&mut self) -> Result<(), String> {
        if self.is_running() {
            return Err(format!("charon in {} (pid {}) still runs", self.netns, self.pid));
        }
        self.spawn()
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.start_again()
    }

    fn signal_and_reap(&mut self, signal: i32, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill(2) on the pid of our own, not yet reaped child (so it cannot have
            // been reused).
            unsafe { libc::kill(child.id() as i32, signal) };
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "charon in {} (pid {}) still ran {grace:?} after signal {signal}: SIGKILL",
                self.netns,
                child.id()
            );
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "\n---- charon in {} ({}): list-sas ----\n{}\n---- last log lines ----\n{}\n----",
                self.netns,
                self.dir.display(),
                self.list_sas(),
                self.log_tail(80)
            );
        }
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_list_sas_parses() {
        let out = "list-sa event {\n  braid {\n    uniqueid = 1\n    state = ESTABLISHED\n    \
                   initiator-spi = 4399d3f08b89d4ba\n    encr-alg = AES_GCM_16\n    encr-keysize = 256\n    \
                   prf-alg = PRF_HMAC_SHA2_256\n    dh-group = CURVE_25519\n    child-sas {\n      site-1 {\n        \
                   name = site\n        uniqueid = 1\n        state = INSTALLED\n        encap = yes\n        \
                   spi-in = 3b096500\n        bytes-in = 33\n        local-ts = [\n          198.18.2.0/24\n        \
                   ]\n      }\n    }\n  }\n}\nlist-sas reply {\n}\n";
        let sas = parse_list_sas(out);
        assert_eq!(sas.len(), 1);
        assert_eq!(sas[0].proposal(), "AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519");
        let child = sas[0].installed_child("site").expect("child");
        assert_eq!(
            (child.spi_in.as_str(), child.bytes_in, child.encap),
            ("3b096500", 33, true)
        );
        assert_eq!(child.local_ts, vec!["198.18.2.0/24".to_string()]);
    }
}
