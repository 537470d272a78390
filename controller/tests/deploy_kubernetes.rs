//! The Kubernetes example (`examples/kubernetes/`) checked by a real schema validator,
//! `kubernetes-validate --strict` (the API's OpenAPI schemas; unknown fields are errors), which
//! is shown to fail on broken copies; and against what braid needs: keys mounted under the
//! credential names braid reads, group-readable by the pod's user and nothing more, each
//! gateway pinned to the node labelled for it in the node's network, one controller, and
//! every program in the image. Skipped loudly where `kubernetes-validate` is missing (`.ci/run`
//! installs it from PyPI).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

const CREDENTIAL_NAMES: [&str; 6] = [
    "private-key",
    "role-key",
    "psk",
    "cluster-secret",
    "flow-hash-key",
    "admin-key",
];

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/kubernetes")
        .join(name)
}

fn manifest() -> Vec<Value> {
    let text = fs::read_to_string(example("braid.yaml")).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

fn validate(path: &Path) -> Result<(), String> {
    let output = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(path)
        .output()
        .expect("kubernetes-validate runs");
    let said = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(())
    } else {
        Err(said)
    }
}

fn have_validator(test: &str) -> bool {
    let found = Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: {test}: kubernetes-validate is not installed (python3 -m pip install kubernetes-validate)");
    }
    found
}

/// A file mode as YAML gives it: `0440` (YAML 1.1 octal, as Kubernetes reads it) or a number.
fn mode(value: &Value) -> u32 {
    match value {
        Value::Number(n) => n.as_u64().unwrap() as u32,
        Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).unwrap(),
        other => panic!("not a mode: {other:?}"),
    }
}

fn deployments(docs: &[Value]) -> Vec<&Value> {
    docs.iter().filter(|d| d["kind"] == "Deployment").collect()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap()
}

#[test]
fn the_manifest_passes_strict_schema_validation() {
    if !have_validator("the_manifest_passes_strict_schema_validation") {
        return;
    }
    validate(&example("braid.yaml")).unwrap();
}

#[test]
fn the_schema_check_fails_on_broken_manifests() {
    if !have_validator("the_schema_check_fails_on_broken_manifests") {
        return;
    }
    let text = fs::read_to_string(example("braid.yaml")).unwrap();
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let scratch = Scratch(std::env::temp_dir().join(format!("braid-k8s-{}", std::process::id())));
    let dir = &scratch.0;
    fs::create_dir_all(dir).unwrap();
    for (what, broken) in [
        ("unknown field", text.replacen("nodeSelector:", "nodeSelektor:", 1)),
        ("wrong type", text.replacen("replicas: 1", "replicas: one", 1)),
        (
            "missing required field",
            text.replacen("  selector: {matchLabels: {app: braid-controller}}\n", "", 1),
        ),
        (
            "bad port",
            text.replacen("containerPort: 9477", "containerPort: metrics", 1),
        ),
    ] {
        assert_ne!(broken, text, "{what}: the edit did not apply");
        let path = dir.join("broken.yaml");
        fs::write(&path, broken).unwrap();
        let result = validate(&path);
        assert!(result.is_err(), "{what}: a broken manifest passed");
    }
}

#[test]
fn keys_are_credentials_the_pod_user_can_read_and_nobody_else() {
    let docs = manifest();
    for deployment in deployments(&docs) {
        let pod = &deployment["spec"]["template"]["spec"];
        let security = &pod["securityContext"];
        let container = &pod["containers"][0];
        let user = container["securityContext"]["runAsUser"]
            .as_u64()
            .or(security["runAsUser"].as_u64())
            .unwrap_or_else(|| panic!("{}: no runAsUser", name(deployment)));
        if user != 0 {
            assert_eq!(security["runAsNonRoot"], true, "{}", name(deployment));
            assert_eq!(security["runAsGroup"].as_u64(), Some(user), "{}", name(deployment));
        }
        let fs_group = security["fsGroup"].as_u64();
        assert!(fs_group.is_some(), "{}: the keys' group is fsGroup", name(deployment));
        let credentials = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "credentials")
            .unwrap_or_else(|| panic!("{}: no credentials volume", name(deployment)));
        // Readable by owner (root) and group (fsGroup): what braid accepts from a credentials
        // directory, never from a plain key file.
        assert_eq!(
            mode(&credentials["secret"]["defaultMode"]),
            0o440,
            "{}",
            name(deployment)
        );
        for item in credentials["secret"]["items"].as_sequence().unwrap() {
            let path = item["path"].as_str().unwrap();
            assert!(
                CREDENTIAL_NAMES.contains(&path),
                "{}: {path} is no credential braid reads",
                name(deployment)
            );
        }
        let mount = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "credentials")
            .unwrap();
        let env = container["env"].as_sequence().unwrap();
        let dir = env.iter().find(|e| e["name"] == "CREDENTIALS_DIRECTORY").unwrap();
        assert_eq!(dir["value"], mount["mountPath"], "{}", name(deployment));
    }
}

#[test]
fn gateways_run_on_their_labelled_node_in_its_network_and_one_controller_runs() {
    let docs = manifest();
    let mut gateways = 0;
    for deployment in deployments(&docs) {
        let pod = &deployment["spec"]["template"]["spec"];
        let command: Vec<&str> = pod["containers"][0]["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        match command[0] {
            "braid-gw" => {
                gateways += 1;
                let arg = |flag: &str| command[command.iter().position(|c| *c == flag).unwrap() + 1];
                let label = format!("braid.dev/gateway-{}{}", arg("--site"), arg("--pair"));
                assert_eq!(pod["nodeSelector"][label.as_str()], "true", "{}", name(deployment));
                assert_eq!(pod["hostNetwork"], true, "{}", name(deployment));
                assert_eq!(deployment["spec"]["replicas"], 1);
                assert_eq!(
                    deployment["spec"]["strategy"]["type"],
                    "Recreate",
                    "{}",
                    name(deployment)
                );
            }
            "braid-demux" => {
                assert_eq!(pod["hostNetwork"], true);
                let security = &pod["containers"][0]["securityContext"];
                assert!(security["capabilities"]["add"]
                    .as_sequence()
                    .unwrap()
                    .contains(&"NET_ADMIN".into()));
            }
            "braid" => {
                assert_eq!(&command[..2], ["braid", "up"]);
                assert!(command.contains(&"--no-launch"));
                assert_eq!(deployment["spec"]["replicas"], 1, "one controller");
                // It binds controller.address: an address of its node.
                assert_eq!(pod["hostNetwork"], true);
                assert_eq!(pod["nodeSelector"]["braid.dev/controller"], "true");
                let probe = &pod["containers"][0]["readinessProbe"]["httpGet"];
                assert_eq!(probe["path"], "/status");
            }
            other => panic!("{}: runs {other}", name(deployment)),
        }
    }
    assert!(gateways >= 1);
}

#[test]
fn the_image_carries_every_program_the_manifest_runs() {
    let dockerfile = fs::read_to_string(example("Dockerfile")).unwrap();
    let build = dockerfile.lines().find(|l| l.contains("cargo build")).unwrap();
    let copy = dockerfile.lines().find(|l| l.starts_with("COPY --from=build")).unwrap();
    for program in ["braid", "braid-gw", "braid-demux"] {
        assert!(build.contains(&format!("--bin {program}")), "{build}");
        assert!(copy.contains(&format!("/release/{program} ")), "{copy}");
    }
    for doc in deployments(&manifest()) {
        let container = &doc["spec"]["template"]["spec"]["containers"][0];
        let program = container["command"][0].as_str().unwrap();
        assert!(["braid", "braid-gw", "braid-demux"].contains(&program));
        assert_eq!(container["image"], "braid:latest");
    }
}
