//! The Kubernetes example (`examples/kubernetes/`) checked by a real schema validator,
//! `kubernetes-validate --strict` (the API's OpenAPI schemas; unknown fields are errors), which
//! is shown to fail on broken copies; and against what braid needs: keys mounted under the
//! credential names braid reads, group-readable by the pod's user and nothing more, each
//! gateway pinned to the node labelled for it in the node's network, every daemon of both sites
//! present, one controller set (a Deployment per member, `--member i` for every i of
//! `controller.members`) watching them all, the etcd it elects through, the restart hook's
//! rights, and every program in the image. The header's `controller:` section, set into
//! `examples/two-site.yaml`, must pass braid's own validation: it is the cluster file the
//! manifest is checked against. The schema checks are skipped loudly where
//! `kubernetes-validate` is missing (`.ci/run` installs it from PyPI).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use braid_core::config::ClusterConfig;
use braid_core::control::{ControlAddr, Role};
use braid_core::testing::ScratchDir;
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

fn command(container: &Value) -> Vec<&str> {
    container["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

/// The value after `flag` in `command`.
fn arg<'a>(command: &[&'a str], flag: &str) -> Option<&'a str> {
    command.iter().position(|c| *c == flag).map(|i| command[i + 1])
}

/// The `controller:` section the manifest's header tells the operator to write, set into
/// `examples/two-site.yaml` (both sites, three pairs) and validated by braid's own loader: the
/// cluster file the manifest runs.
fn cluster_file() -> ClusterConfig {
    let text = fs::read_to_string(example("braid.yaml")).unwrap();
    let header: Vec<&str> = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| &l[1..])
        .collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let start = header
        .iter()
        .position(|l| l.trim_end() == format!("{}controller:", " ".repeat(indent(l))))
        .expect("a controller: section in the manifest's header");
    let depth = indent(header[start]);
    let section: Vec<&str> = std::iter::once(header[start])
        .chain(
            header[start + 1..]
                .iter()
                .copied()
                .take_while(|l| !l.trim().is_empty() && indent(l) > depth),
        )
        .map(|l| &l[depth..])
        .collect();
    let section: Value = serde_yaml_ng::from_str(&section.join("\n")).unwrap();
    let two_site = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/two-site.yaml");
    let mut file: Value = serde_yaml_ng::from_str(&fs::read_to_string(&two_site).unwrap()).unwrap();
    file["controller"] = section["controller"].clone();
    ClusterConfig::from_yaml_str(&serde_yaml_ng::to_string(&file).unwrap(), &two_site)
        .unwrap_or_else(|e| panic!("the manifest header's controller section: {e}"))
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
    let scratch = ScratchDir::new("k8s");
    let dir = &scratch.0;
    fs::create_dir_all(dir).unwrap();
    for (what, broken) in [
        ("unknown field", text.replacen("nodeSelector:", "nodeSelektor:", 1)),
        ("wrong type", text.replacen("replicas: 1", "replicas: one", 1)),
        (
            "missing required field",
            text.replacen(
                "  selector: {matchLabels: {app: braid-controller, braid.dev/controller: \"0\"}}\n",
                "",
                1,
            ),
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
fn the_headers_cluster_file_names_a_controller_set_and_its_etcd() {
    let cfg = cluster_file();
    let controller = &cfg.controller;
    assert!(
        controller.members.len() >= 2,
        "the header's cluster file lists {} controller(s): one controller set watches the fleet of both sites",
        controller.members.len()
    );
    let etcd = controller.etcd.as_ref().expect("controller.etcd in the header");
    assert!(etcd.endpoints.len() >= 3, "{:?}: three etcd members", etcd.endpoints);
    for member in &controller.members {
        assert!(
            matches!(member.address, ControlAddr::Udp(_)),
            "{}: daemons on other nodes reach a controller over UDP",
            member.address
        );
        assert!(
            !member.metrics.ip().is_loopback(),
            "{}: the kubelet probes it",
            member.metrics
        );
    }
    assert!(controller.restart_hook.is_some());
}

#[test]
fn one_controller_set_watches_every_daemon_of_both_sites() {
    let cfg = cluster_file();
    let members = &cfg.controller.members;
    let docs = manifest();
    let mut gateways = Vec::new();
    let mut demuxes = Vec::new();
    let mut controllers = Vec::new();
    for deployment in deployments(&docs) {
        let who = name(deployment);
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let command = command(container);
        assert_eq!(deployment["spec"]["replicas"], 1, "{who}");
        assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate", "{who}");
        assert_eq!(pod["hostNetwork"], true, "{who}: it binds addresses of its node");
        match command[0] {
            "braid-gw" => {
                let (site, pair) = (arg(&command, "--site").unwrap(), arg(&command, "--pair").unwrap());
                let label = format!("braid.dev/gateway-{site}{pair}");
                assert_eq!(pod["nodeSelector"][label.as_str()], "true", "{who}");
                gateways.push((site.to_string(), pair.to_string()));
            }
            "braid-demux" => {
                let site = arg(&command, "--site").unwrap();
                let label = format!("braid.dev/demux-{site}");
                assert_eq!(pod["nodeSelector"][label.as_str()], "true", "{who}");
                let security = &container["securityContext"];
                assert!(security["capabilities"]["add"]
                    .as_sequence()
                    .unwrap()
                    .contains(&"NET_ADMIN".into()));
                demuxes.push(site.to_string());
            }
            "braid" => {
                assert_eq!(&command[..2], ["braid", "up"], "{who}");
                assert!(command.contains(&"--no-launch"), "{who}");
                assert_eq!(arg(&command, "--site"), None, "{who}: a controller watches every site");
                let member: usize = arg(&command, "--member")
                    .unwrap_or_else(|| panic!("{who}: no --member"))
                    .parse()
                    .unwrap();
                let entry = members
                    .get(member)
                    .unwrap_or_else(|| panic!("{who}: --member {member}, the cluster file lists {}", members.len()));
                // It binds controller.members[i]'s addresses: those of the node labelled for it.
                let label = format!("braid.dev/controller-{member}");
                assert_eq!(pod["nodeSelector"][label.as_str()], "true", "{who}");
                assert_eq!(pod["serviceAccountName"], "braid-controller", "{who}: the restart hook");
                let port = |name: &str| {
                    container["ports"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .find(|p| p["name"] == name)
                        .and_then(|p| p["containerPort"].as_u64())
                        .unwrap_or_else(|| panic!("{who}: no {name} port"))
                };
                assert_eq!(port("metrics"), u64::from(entry.metrics.port()), "{who}");
                if let ControlAddr::Udp(control) = entry.address {
                    assert_eq!(port("control"), u64::from(control.port()), "{who}");
                }
                for probe in ["readinessProbe", "livenessProbe"] {
                    let get = &container[probe]["httpGet"];
                    assert_eq!(get["path"], "/status", "{who}: {probe}");
                    assert_eq!(get["port"], "metrics", "{who}: {probe}");
                }
                controllers.push(member);
            }
            other => panic!("{who}: runs {other}"),
        }
    }
    controllers.sort_unstable();
    assert_eq!(
        controllers,
        (0..members.len()).collect::<Vec<_>>(),
        "one controller Deployment per member of controller.members, each with its own --member"
    );
    assert!(controllers.len() >= 2, "a controller set, not one controller");
    // Every daemon of the cluster file, of both sites, runs here and so heartbeats to the one
    // set: a controller that hears only one site's gateways finds no pair healthy.
    let mut want_gateways = Vec::new();
    let mut want_demuxes = Vec::new();
    for id in cfg.daemons() {
        match id.role {
            Role::Gateway => want_gateways.push((id.site.clone(), id.pair.to_string())),
            Role::Demux => want_demuxes.push(id.site.clone()),
            Role::Controller => {}
        }
    }
    gateways.sort();
    want_gateways.sort();
    assert_eq!(gateways, want_gateways);
    demuxes.sort();
    assert_eq!(demuxes, want_demuxes);
    assert_eq!(demuxes.len(), 2, "both sites");
}

#[test]
fn etcd_runs_where_the_cluster_file_looks_for_it() {
    let cfg = cluster_file();
    let endpoints = &cfg.controller.etcd.as_ref().unwrap().endpoints;
    let docs = manifest();
    let sets: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "StatefulSet" && command(&d["spec"]["template"]["spec"]["containers"][0])[0] == "etcd")
        .collect();
    assert_eq!(sets.len(), 1, "one etcd StatefulSet");
    let set = sets[0];
    let spec = &set["spec"];
    let replicas = spec["replicas"].as_u64().unwrap() as usize;
    assert!(
        replicas >= 3 && replicas % 2 == 1,
        "{replicas} etcd members: an odd quorum of 3 or more"
    );
    // The first member cannot be ready before a quorum is: they must start together.
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    let anti =
        &spec["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname", "one member per node");
    let service_name = spec["serviceName"].as_str().unwrap();
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service" && name(d) == service_name)
        .unwrap_or_else(|| panic!("no Service {service_name}"));
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "a headless Service names each member"
    );
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"], true,
        "members find each other before quorum"
    );
    let set_name = name(set);
    let want: Vec<String> = (0..replicas)
        .map(|i| format!("http://{set_name}-{i}.{service_name}:2379"))
        .collect();
    assert_eq!(
        endpoints, &want,
        "controller.etcd.endpoints are the StatefulSet's members"
    );
    let command = command(&spec["template"]["spec"]["containers"][0]);
    let cluster = command
        .iter()
        .find_map(|c| c.strip_prefix("--initial-cluster="))
        .expect("--initial-cluster");
    let want: Vec<String> = (0..replicas)
        .map(|i| format!("{set_name}-{i}=http://{set_name}-{i}.{service_name}:2380"))
        .collect();
    assert_eq!(cluster, want.join(","));
}

#[test]
fn the_restart_hook_may_delete_the_gateways_pods() {
    let cfg = cluster_file();
    let hook = cfg.controller.restart_hook.as_deref().unwrap();
    let docs = manifest();
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && name(d) == "braid-controller")
            .unwrap_or_else(|| panic!("no {kind} braid-controller"))
    };
    of("ServiceAccount");
    let rule = &of("Role")["rules"][0];
    assert_eq!(rule["resources"][0], "pods");
    assert!(rule["verbs"].as_sequence().unwrap().contains(&"delete".into()));
    let binding = of("RoleBinding");
    assert_eq!(binding["subjects"][0]["name"], "braid-controller");
    assert_eq!(binding["roleRef"]["name"], "braid-controller");
    // The hook's selector finds the gateway's pod.
    assert!(hook.contains("-l braid.dev/gateway={site}{pair}"), "{hook}");
    for deployment in deployments(&docs) {
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let command = command(container);
        if command[0] == "braid-gw" {
            let want = format!(
                "{}{}",
                arg(&command, "--site").unwrap(),
                arg(&command, "--pair").unwrap()
            );
            assert_eq!(
                deployment["spec"]["template"]["metadata"]["labels"]["braid.dev/gateway"],
                want.as_str(),
                "{}",
                name(deployment)
            );
        }
    }
    // And the image has the program it runs.
    let program = hook.split_whitespace().next().unwrap();
    let dockerfile = fs::read_to_string(example("Dockerfile")).unwrap();
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        last_stage
            .lines()
            .any(|l| l.starts_with("COPY") && l.ends_with("/usr/local/bin/") && l.contains(&format!("/{program} "))),
        "the image has no {program}"
    );
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
