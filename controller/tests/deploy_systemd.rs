//! The systemd units in `examples/systemd/` checked by systemd itself: `systemd-analyze verify`
//! loads each one (the gateway template as an instance) with stub programs at its `ExecStart=`
//! paths and must have nothing to say; the properties the deployment depends on (notify,
//! watchdog, credentials, a restart policy a crash loop cannot exhaust, the sandbox) are
//! checked in the files. The checker itself is shown to fail on a misspelt directive, an
//! unparsable value and a missing program. Skipped loudly where `systemd-analyze` is missing
//! (`.ci/run` installs systemd).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use braid_core::keys::credentials::credential_name;
use braid_core::keys::KeyKind;
use braid_core::testing::ScratchDir;

const UNITS: [&str; 3] = ["braid-gw@.service", "braid-demux.service", "braid-controller.service"];
const INSTALLED_AT: &str = "/usr/local/bin/";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/systemd")
}

fn have_systemd_analyze(test: &str) -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: {test}: systemd-analyze is not installed (apt-get install systemd)");
    }
    found
}

/// A directory holding the example units with their programs replaced by stubs in `bin/`.
fn stage(name: &str) -> ScratchDir {
    let scratch = ScratchDir::new(&format!("units-{name}"));
    let dir = scratch.0.clone();
    fs::create_dir_all(dir.join("bin")).unwrap();
    for program in ["braid", "braid-gw", "braid-demux"] {
        let stub = dir.join("bin").join(program);
        fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for unit in UNITS {
        let text = fs::read_to_string(examples().join(unit)).unwrap();
        assert!(
            text.contains(INSTALLED_AT),
            "{unit}: expected its programs under {INSTALLED_AT}"
        );
        let staged = text.replace(INSTALLED_AT, &format!("{}/bin/", dir.display()));
        fs::write(dir.join(unit), staged).unwrap();
    }
    scratch
}

/// Runs `systemd-analyze verify` on `units` (names in `dir`); any complaint about them is an
/// error, not only a non-zero exit: systemd merely warns about an unknown directive or a value
/// it cannot parse, and ignores the line.
fn verify(dir: &Path, units: &[&str]) -> Result<(), String> {
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(units.iter().map(|u| dir.join(u)))
        .output()
        .expect("systemd-analyze runs");
    let said = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
    let ours: Vec<&str> = said
        .lines()
        .filter(|line| line.contains("braid") || line.contains(&*dir.to_string_lossy()))
        .collect();
    if output.status.success() && ours.is_empty() {
        Ok(())
    } else {
        Err(format!("exit {:?}: {said}", output.status.code()))
    }
}

/// The value of every `key=` line of `section` in `unit`.
fn values(unit: &str, section: &str, key: &str) -> Vec<String> {
    let text = fs::read_to_string(examples().join(unit)).unwrap();
    let mut current = "";
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line;
        } else if current == format!("[{section}]") {
            if let Some(value) = line.strip_prefix(&format!("{key}=")) {
                found.push(value.to_string());
            }
        }
    }
    found
}

fn value(unit: &str, section: &str, key: &str) -> String {
    let found = values(unit, section, key);
    assert_eq!(
        found.len(),
        1,
        "{unit}: expected one {key}= in [{section}], got {found:?}"
    );
    found[0].clone()
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if !have_systemd_analyze("every_unit_passes_systemd_analyze_verify") {
        return;
    }
    let dir = stage("verify");
    // The template is verified as an instance, the way it runs.
    verify(
        &dir.0,
        &["braid-gw@1.service", "braid-demux.service", "braid-controller.service"],
    )
    .unwrap();
}

#[test]
fn the_verify_check_fails_on_broken_units() {
    if !have_systemd_analyze("the_verify_check_fails_on_broken_units") {
        return;
    }
    let dir = stage("broken");
    let gw = fs::read_to_string(dir.0.join("braid-gw@.service")).unwrap();
    for (name, broken) in [
        ("misspelt", gw.replace("WatchdogSec=", "WatchdogSecs=")),
        ("unparsable", gw.replace("RestartSec=100ms", "RestartSec=quickly")),
        ("no-program", gw.replace("/bin/braid-gw ", "/bin/braid-gateway ")),
    ] {
        assert_ne!(broken, gw, "{name}: the edit did not apply");
        let unit = format!("broken-{name}@.service");
        fs::write(dir.0.join(&unit), broken).unwrap();
        let result = verify(&dir.0, &[&unit.replace("@.", "@1.")]);
        assert!(result.is_err(), "{name}: a broken unit passed the check");
    }
}

#[test]
fn the_units_are_notify_services_with_a_watchdog_credentials_and_no_start_limit() {
    for unit in UNITS {
        assert_eq!(value(unit, "Service", "Type"), "notify", "{unit}");
        assert_eq!(value(unit, "Service", "NotifyAccess"), "main", "{unit}");
        assert!(value(unit, "Service", "WatchdogSec").ends_with('s'), "{unit}");
        assert_eq!(value(unit, "Service", "Restart"), "always", "{unit}");
        // Any interval would let a crash loop of RestartSec= restarts trip the default burst
        // of 5 and leave the daemon dead; 0 turns the limit off.
        assert_eq!(value(unit, "Unit", "StartLimitIntervalSec"), "0", "{unit}");
        assert!(
            !values(unit, "Service", "LoadCredential").is_empty(),
            "{unit}: keys come as credentials"
        );
        // Every key the daemon reads comes in under the name it looks for.
        for credential in values(unit, "Service", "LoadCredential") {
            let name = credential.split(':').next().unwrap();
            assert!(
                KeyKind::ALL.map(credential_name).contains(&name),
                "{unit}: credential {name} is not one braid reads"
            );
        }
        assert!(
            values(unit, "Service", "DynamicUser").is_empty(),
            "{unit}: the daemons share /run/braid as user braid"
        );
        assert_eq!(value(unit, "Service", "User"), "braid", "{unit}");
        assert_eq!(value(unit, "Service", "ProtectSystem"), "strict", "{unit}");
        assert_eq!(value(unit, "Service", "NoNewPrivileges"), "yes", "{unit}");
        assert!(
            values(unit, "Service", "SystemCallFilter").contains(&"@system-service".to_string()),
            "{unit}"
        );
        let families = value(unit, "Service", "RestrictAddressFamilies");
        assert!(
            families.contains("AF_UNIX") && families.contains("AF_INET6"),
            "{unit}: {families}"
        );
    }
    assert_eq!(value("braid-gw@.service", "Service", "CapabilityBoundingSet"), "");
    assert_eq!(
        value("braid-controller.service", "Service", "CapabilityBoundingSet"),
        ""
    );
    assert_eq!(
        value("braid-demux.service", "Service", "CapabilityBoundingSet"),
        "CAP_NET_ADMIN CAP_BPF"
    );
    assert_eq!(
        value("braid-demux.service", "Service", "DeviceAllow"),
        "/dev/net/tun rw"
    );
    assert!(value("braid-demux.service", "Service", "RestrictAddressFamilies").contains("AF_NETLINK"));
}
