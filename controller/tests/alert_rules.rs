//! The Prometheus alerts in `examples/prometheus/braid-alerts.yml`: valid for `promtool check
//! rules`, passing their unit tests (`promtool test rules braid-alerts.test.yml`), each tested
//! both firing and not firing, and reading only metrics the controller really exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use braid::status::{ControllerStatus, StatusSnapshot};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/prometheus")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn yaml(name: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs `promtool ARGS` in the rules' directory; `None` (after a loud notice) without promtool.
fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("promtool").args(args).current_dir(dir()).output() {
        Ok(out) => Some(out),
        Err(e) => {
            eprintln!(
                "\n======== SKIPPED promtool {}: promtool cannot run ({e}); install Debian's \
                 `prometheus` package ========\n",
                args.join(" ")
            );
            None
        }
    }
}

fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    let Some(check) = promtool(&["check", "rules", "braid-alerts.yml"]) else {
        return;
    };
    assert_success(&check, "promtool check rules");
    let test = promtool(&["test", "rules", "braid-alerts.test.yml"]).expect("promtool ran once");
    assert_success(&test, "promtool test rules");
}

/// Every alert's name, with its expression.
fn alerts() -> BTreeMap<String, String> {
    let rules = yaml("braid-alerts.yml");
    let groups = rules["groups"].as_sequence().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .map(|r| {
            let name = r["alert"].as_str().expect("every rule is an alert");
            let expr = r["expr"].as_str().expect("an expression");
            assert!(r["for"].as_str().is_some(), "{name} has no for:");
            let severity = r["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("critical" | "warning")),
                "{name}: severity {severity:?}"
            );
            for key in ["summary", "description"] {
                assert!(
                    r["annotations"][key].as_str().is_some_and(|s| s.len() > 20),
                    "{name} has no {key}"
                );
            }
            (name.to_string(), expr.to_string())
        })
        .collect()
}

#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let tests = yaml("braid-alerts.test.yml");
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for group in tests["tests"].as_sequence().expect("tests") {
        for case in group["alert_rule_test"].as_sequence().expect("alert_rule_test") {
            let name = case["alertname"].as_str().expect("alertname").to_string();
            let expected = case["exp_alerts"].as_sequence().map_or(0, |a| a.len());
            if expected == 0 {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    let names: BTreeSet<String> = alerts().into_keys().collect();
    for wanted in [
        "BraidSiteDark",
        "BraidCanaryRttHigh",
        "BraidPairDown",
        "BraidGatewayRestartStorm",
        "BraidControllerDown",
        "BraidControllerMetricsAbsent",
        "BraidControllerLoopStalled",
        "BraidSiteUnreachable",
        "BraidControllerLeaderless",
        "BraidControllerSplitBrain",
        "BraidFlowTableNearlyFull",
        "BraidDemuxDropping",
    ] {
        assert!(names.contains(wanted), "no alert {wanted}");
    }
    let untested_firing: Vec<_> = names.difference(&firing).collect();
    let untested_quiet: Vec<_> = names.difference(&quiet).collect();
    assert!(untested_firing.is_empty(), "never tested firing: {untested_firing:?}");
    assert!(untested_quiet.is_empty(), "never tested quiet: {untested_quiet:?}");
}

/// The `braid_*` names in `text`.
fn braid_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("braid_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_alerts_name_is_one_the_controller_renders() {
    // A controller describes itself in its status: that is what its controller-set metrics
    // (leader, term, etcd reachability) come from.
    let status = StatusSnapshot {
        controllers: vec![ControllerStatus {
            index: 0,
            pid: Some(1),
            leader: true,
            term: 0,
            store_reachable: true,
        }],
        ..StatusSnapshot::default()
    };
    let rendered = braid::metrics::render(&status);
    let families: BTreeSet<&str> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    // Names in expressions and in the operator's instructions alike.
    let named = braid_names(&read("braid-alerts.yml"));
    assert!(named.contains("braid_pairs_up"), "{named:?}");
    for name in &named {
        assert!(
            families.contains(name.as_str()),
            "the alerts read {name}, which the controller does not export"
        );
    }
    // And the alarms they select by name are ones the controller raises.
    for expr in alerts().values() {
        const SELECTOR: &str = "braid_alarm{name=\"";
        for (at, _) in expr.match_indices(SELECTOR) {
            let name = expr[at + SELECTOR.len()..].split('"').next().unwrap_or_default();
            assert!(braid::metrics::ALARMS.contains(&name), "no alarm {name:?}");
        }
    }
}
