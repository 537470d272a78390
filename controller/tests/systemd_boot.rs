//! The gateway and demux units (`examples/systemd/`, only their program paths changed) under
//! a real systemd: a container booted with `systemd-nspawn` from this host's own `/usr` on an
//! empty, volatile root, with the example's sysusers.d file, a cluster file and the gateway's
//! keys as root-only files that reach the daemons only as credentials. Inside, a script starts
//! `braid-demux` and `braid-gw@1` and records what systemd says; the test then checks that each
//! start waited for `READY=1` and shows the daemon's `STATUS=`, that the demux (user `braid`,
//! `CAP_NET_ADMIN` and `CAP_BPF` only) brought its TUN up, installed its route and steers
//! packets to its two data threads in the kernel, that the watchdog was fed
//! for seconds and fired once the gateway was frozen (SIGSTOP), that a dozen SIGKILLs in a row
//! never exhausted the start limit, and that the daemons stopped cleanly. Needs root and `systemd-nspawn` (Debian's
//! `systemd-container`, which `.ci/run` installs); skipped loudly otherwise. Creates a network
//! namespace: run it under the lab lock like the lab tests.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use braid_core::keys::{provision, write_secret_file, ClusterSecret, PrivateKey};
use braid_core::testing::ScratchDir;

const CHECK: &str = r#"#!/bin/bash
# Runs inside the container; every line of /out/results is key=value.
out=/out/results
show() {
  systemctl show ${2:-braid-gw@1} -p ActiveState -p StatusText -p NRestarts -p MainPID -p WatchdogUSec -p User \
    | sed "s/^/$1./" >> $out
}
systemctl start braid-demux.service; echo "demux_start=$?" >> $out
show demux braid-demux
echo "tun=$(ip -o link show braid0 | grep -c 'UP')" >> $out
echo "route=$(ip route show 198.18.2.0/24 | grep -c 'dev braid0')" >> $out
systemctl start braid-gw@1.service; echo "start=$?" >> $out
show started
stat -c 'credential=%a %U %n' /run/credentials/braid-gw@1.service/* >> $out
sleep 7
show fed
show demux_fed braid-demux
kill -STOP "$(systemctl show -p MainPID --value braid-gw@1)"
sleep 7
show frozen
kills=0
for i in $(seq 1 300); do
  p=$(systemctl show -p MainPID --value braid-gw@1)
  if [ "$p" != 0 ]; then kill -9 "$p" && kills=$((kills+1)); fi
  [ $kills -ge 12 ] && break
  sleep 0.1
done
echo "kills=$kills" >> $out
sleep 4
show crashlooped
systemctl stop braid-gw@1.service; echo "stop=$?" >> $out
show stopped
systemctl stop braid-demux.service; echo "demux_stop=$?" >> $out
journalctl -u braid-gw@1 --no-pager -o cat | grep -c -i 'watchdog timeout' | sed 's/^/watchdog_timeouts=/' >> $out
journalctl -u braid-gw@1 -u braid-demux --no-pager -o cat > /out/journal.txt
echo done=1 >> $out
systemctl poweroff --no-block
"#;

fn skip(why: &str) -> bool {
    eprintln!("SKIPPED: the_gateway_and_demux_units_under_a_real_systemd: {why}");
    true
}

fn cannot_run() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
    if !root {
        return skip("needs root (systemd-nspawn)");
    }
    if !Command::new("systemd-nspawn")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return skip("systemd-nspawn is not installed (apt-get install systemd-container)");
    }
    if !Path::new("/dev/net/tun").exists() {
        return skip("no /dev/net/tun for the demux");
    }
    if !Path::new("/usr/lib/systemd/systemd").exists() && !Path::new("/lib/systemd/systemd").exists() {
        return skip("no systemd in /usr to boot (apt-get install systemd)");
    }
    false
}

/// Writes the container's files under `dir`: etc-braid/, system/, sysusers/, bin/, out/.
fn stage(dir: &Path) {
    for sub in [
        "etc-braid/gw/1",
        "etc-braid/demux",
        "system/multi-user.target.wants",
        "sysusers",
        "bin",
        "out",
        "keys",
    ] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let release = Path::new(env!("CARGO_BIN_EXE_braid")).parent().unwrap();
    for program in ["braid-gw", "braid-demux"] {
        let path = release.join(program);
        assert!(
            path.exists(),
            "{} is missing: cargo build --release --workspace --bins",
            path.display()
        );
        fs::copy(&path, dir.join("bin").join(program)).unwrap();
    }

    let keys = dir.join("keys");
    write_secret_file(&keys.join("secret.key"), &ClusterSecret::generate().to_base64()).unwrap();
    let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
    write_secret_file(&keys.join("a1.key"), &a.to_base64()).unwrap();
    let cluster = |secret: &str, key: &str| {
        format!(
            r#"cluster: {{ name: sdboot, secret_file: {secret} }}
sites:
  a: {{ prefixes: [198.18.1.0/24], demux: {{ tun: braid0, geneve: "127.0.0.1:46081", data_threads: 2 }} }}
  b: {{ prefixes: [198.18.2.0/24], demux: {{ tun: braid0, geneve: "127.0.0.2:46081" }} }}
pairs:
  - id: 1
    gateways:
      a: {{ geneve: "127.0.0.1:46082", wan: "127.0.0.1:41820", public_key: "{}", private_key_file: {key} }}
      b: {{ geneve: "127.0.0.2:46082", wan: "127.0.0.2:41820", public_key: "{}" }}
"#,
            a.public_key(),
            b.public_key()
        )
    };
    // The role keys, as `braid keygen --role-keys` writes them where the secret is.
    let host_config = keys.join("cluster.yaml");
    fs::write(
        &host_config,
        cluster(&keys.join("secret.key").display().to_string(), "a1.key"),
    )
    .unwrap();
    let cfg = braid_core::config::ClusterConfig::load(&host_config).unwrap();
    provision::ensure_all(&cfg, &ClusterSecret::load(&cfg.cluster.secret_file).unwrap()).unwrap();
    // Inside, the paths the cluster file names do not exist: the keys can only come as
    // credentials.
    let etc = dir.join("etc-braid");
    fs::write(
        etc.join("cluster.yaml"),
        cluster("/etc/braid/absent/secret.key", "/etc/braid/absent/a1.key"),
    )
    .unwrap();
    fs::write(etc.join("site.env"), "BRAID_SITE=a\n").unwrap();
    fs::copy(keys.join("a1.key"), etc.join("gw/1/private-key")).unwrap();
    fs::copy(keys.join("role-keys/gw-a-1.key"), etc.join("gw/1/role-key")).unwrap();
    fs::copy(keys.join("role-keys/demux-a.key"), etc.join("demux/role-key")).unwrap();
    fs::copy(keys.join("role-keys/flow-hash.key"), etc.join("demux/flow-hash-key")).unwrap();

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/systemd");
    for name in ["braid-gw@.service", "braid-demux.service"] {
        let unit = fs::read_to_string(examples.join(name)).unwrap();
        assert!(unit.contains("ExecStart=/usr/local/bin/braid-"), "{name}");
        fs::write(
            dir.join("system").join(name),
            unit.replace("/usr/local/bin/", "/opt/braid/"),
        )
        .unwrap();
    }
    fs::copy(examples.join("braid.sysusers.conf"), dir.join("sysusers/braid.conf")).unwrap();
    fs::write(
        dir.join("system/braid-check.service"),
        "[Unit]\nAfter=multi-user.target systemd-sysusers.service\n[Service]\nType=oneshot\n\
         ExecStart=/bin/bash /out/check.sh\nStandardOutput=file:/out/check.log\nStandardError=inherit\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../braid-check.service",
        dir.join("system/multi-user.target.wants/braid-check.service"),
    )
    .unwrap();
    fs::write(dir.join("out/check.sh"), CHECK).unwrap();
}

#[test]
fn the_gateway_and_demux_units_under_a_real_systemd() {
    if cannot_run() {
        return;
    }
    let scratch = ScratchDir::new("sdboot");
    let dir = scratch.0.clone();
    stage(&dir);
    let bind = |from: &str, to: &str, rw: bool| {
        format!(
            "--bind{}={}:{to}",
            if rw { "" } else { "-ro" },
            dir.join(from).display()
        )
    };
    let machine = format!("braid-sdboot-{}", std::process::id());
    let boot = Command::new("timeout")
        .args([
            "180",
            "systemd-nspawn",
            "-D",
            "/",
            "-M",
            &machine,
            "--volatile=yes",
            "--register=no",
        ])
        .args(["--keep-unit", "--private-network", "--quiet", "--bind=/dev/net/tun"])
        // nspawn keeps CAP_BPF and the bpf() call from its containers unless asked; the unit
        // then decides what the demux gets.
        .args(["--capability=CAP_BPF", "--system-call-filter=bpf"])
        .arg(bind("etc-braid", "/etc/braid", false))
        .arg(bind("system", "/etc/systemd/system", false))
        .arg(bind("sysusers", "/etc/sysusers.d", false))
        .arg(bind("bin", "/opt/braid", false))
        .arg(bind("out", "/out", true))
        .args(["-b", "systemd.firstboot=off"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let results = fs::read_to_string(dir.join("out/results")).unwrap_or_default();
    let journal = fs::read_to_string(dir.join("out/journal.txt")).unwrap_or_default();
    let context = format!(
        "boot exit {:?}\nresults:\n{results}\njournal:\n{journal}\ncheck.log:\n{}\nboot:\n{}",
        boot.status.code(),
        fs::read_to_string(dir.join("out/check.log")).unwrap_or_default(),
        String::from_utf8_lossy(&boot.stdout)
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let got: BTreeMap<&str, &str> = results.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |key: &str| *got.get(key).unwrap_or_else(|| panic!("no {key} recorded\n{context}"));
    let restarts = |phase: &str| get(&format!("{phase}.NRestarts")).parse::<u32>().unwrap();
    assert_eq!(get("done"), "1", "{context}");

    // The demux: ready as user braid with its TUN up and its route in, its watchdog fed.
    assert_eq!(get("demux_start"), "0", "{context}");
    assert_eq!(get("demux.ActiveState"), "active", "{context}");
    assert_eq!(get("demux.User"), "braid");
    assert!(
        get("demux.StatusText").starts_with("site a: braid0 on 127.0.0.1:46081"),
        "{context}"
    );
    assert_eq!((get("tun"), get("route")), ("1", "1"), "{context}");
    // With the unit's CAP_BPF, its two data threads get packets queued by flow owner.
    assert!(journal.contains("data_threads=2 kernel_steering=true"), "{context}");
    assert_eq!(
        (get("demux_fed.ActiveState"), get("demux_fed.NRestarts")),
        ("active", "0"),
        "{context}"
    );
    assert_eq!(get("demux_stop"), "0");

    // Type=notify: `systemctl start` returned once READY=1 came, with the daemon's STATUS=.
    assert_eq!(get("start"), "0", "{context}");
    assert_eq!(get("started.ActiveState"), "active", "{context}");
    assert!(
        get("started.StatusText").starts_with("pair 1 of site a: wireguard session"),
        "{context}"
    );
    assert_eq!(get("started.User"), "braid");
    assert_eq!(get("started.WatchdogUSec"), "3s");
    // The keys reached it as credentials only: owned by the service's user (0400), or by root
    // with an ACL for that user, which shows as 0440 (where the file system has ACLs).
    let credential = "/run/credentials/braid-gw@1.service/private-key";
    assert!(
        results.contains(&format!("credential=400 braid {credential}"))
            || results.contains(&format!("credential=440 root {credential}")),
        "{context}"
    );
    // Seven seconds later, more than two watchdog intervals: fed, no restart.
    assert_eq!((get("fed.ActiveState"), restarts("fed")), ("active", 0), "{context}");
    // Frozen: no more pings, so the watchdog fired and systemd restarted it.
    assert_eq!(
        (get("frozen.ActiveState"), restarts("frozen")),
        ("active", 1),
        "{context}"
    );
    assert!(get("watchdog_timeouts").parse::<u32>().unwrap() >= 1, "{context}");
    // A dozen kills in a row: no start limit to trip, it is running again.
    assert_eq!(get("kills"), "12", "{context}");
    assert_eq!(get("crashlooped.ActiveState"), "active", "{context}");
    assert_eq!(restarts("crashlooped"), 13, "{context}");
    assert_eq!(get("stop"), "0");
    assert_eq!(get("stopped.ActiveState"), "inactive", "{context}");
    assert!(journal.contains("gateway stopped"), "{context}");
    drop(scratch);
}
