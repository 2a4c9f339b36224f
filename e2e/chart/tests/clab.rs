//! The containerlab files under `e2e/clab/` stay correct although CI cannot run them (no
//! Docker): every `*.clab.yml` validates against containerlab's own JSON schema
//! (`../shared/clab/clab.schema.json`), every file it binds exists, the FRR configurations
//! parse (`vtysh -C -f`), the chart values the lab uses pass the chart's schema and checks,
//! the addresses in the topology, the FRR config and the values agree, and the scenario
//! script is valid bash. Each check skips with a message when its tool or `../shared` is
//! missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tabby_chart_tests::{helm, helm_template, parse_documents, shared_dir, workspace_root};

fn clab_dir() -> PathBuf {
    workspace_root().join("e2e/clab")
}

fn topologies() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(clab_dir())
        .expect("e2e/clab")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".clab.yml"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no *.clab.yml under e2e/clab");
    v
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::to_value(v).expect("json")
}

fn schema_validator() -> Option<jsonschema::Validator> {
    let Some(shared) = shared_dir() else {
        eprintln!("skipping: ../shared is absent (containerlab's schema lives in ../shared/clab)");
        return None;
    };
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("clab/clab.schema.json")).expect("clab.schema.json"),
    )
    .expect("schema JSON");
    Some(jsonschema::validator_for(&schema).expect("containerlab's schema compiles"))
}

#[test]
fn topologies_match_containerlabs_schema() {
    let Some(validator) = schema_validator() else {
        return;
    };
    for topo in topologies() {
        let doc = yaml(&topo);
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{}:\n{}",
            topo.display(),
            errors.join("\n")
        );
    }
}

#[test]
fn the_schema_check_refuses_a_broken_topology() {
    let Some(validator) = schema_validator() else {
        return;
    };
    let mut doc = yaml(&topologies()[0]);
    doc["topology"]["nodes"]["tor1"]["kind"] = Value::from("frr-router");
    assert!(!validator.is_valid(&doc), "an unknown node kind passed");
    let mut doc = yaml(&topologies()[0]);
    doc["topology"]["links"][0]["endpoints"] = serde_json::json!("tor1:eth1");
    assert!(!validator.is_valid(&doc), "a malformed link passed");
}

/// `(source on the host, target in the container)` of every bind, plus startup configs.
fn mounted_files(topo: &Path) -> Vec<(PathBuf, String)> {
    let doc = yaml(topo);
    let base = topo.parent().expect("dir");
    let mut out = Vec::new();
    for (_, node) in doc["topology"]["nodes"].as_object().expect("nodes") {
        for b in node["binds"].as_array().into_iter().flatten() {
            let b = b.as_str().expect("bind");
            let mut parts = b.splitn(3, ':');
            let src = parts.next().unwrap_or_default();
            let dst = parts.next().unwrap_or_default();
            out.push((base.join(src), dst.to_string()));
        }
        if let Some(s) = node["startup-config"].as_str() {
            out.push((base.join(s), "startup-config".into()));
        }
    }
    out
}

#[test]
fn every_mounted_file_exists() {
    for topo in topologies() {
        for (src, dst) in mounted_files(&topo) {
            assert!(
                src.is_file(),
                "{}: {} (for {dst}) is missing",
                topo.display(),
                src.display()
            );
        }
    }
}

fn vtysh_check(conf: &Path) -> Option<std::process::Output> {
    Command::new("vtysh")
        .arg("-C")
        .arg("-f")
        .arg(conf)
        .output()
        .ok()
}

#[test]
fn frr_configurations_parse() {
    if vtysh_check(Path::new("/dev/null")).is_none() {
        eprintln!("skipping: vtysh not found (scripts/install-deps.sh installs frr)");
        return;
    }
    let mut checked = 0;
    for topo in topologies() {
        for (src, dst) in mounted_files(&topo) {
            if dst != "/etc/frr/frr.conf" {
                continue;
            }
            let out = vtysh_check(&src).expect("vtysh");
            assert!(
                out.status.success(),
                "vtysh -C -f {}:\n{}{}",
                src.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // The check bites: the same file with one misspelt command fails.
            let dir = tempfile::tempdir().unwrap();
            let bad = dir.path().join("frr.conf");
            let text = std::fs::read_to_string(&src).unwrap();
            std::fs::write(&bad, text.replacen("remote-as", "remote-ass", 1)).unwrap();
            assert!(
                !vtysh_check(&bad).expect("vtysh").status.success(),
                "vtysh accepted a broken copy of {}",
                src.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no FRR configuration is mounted by any topology"
    );
}

/// Addresses added by `ip addr add A/len dev X` in a node's `exec`.
fn exec_addresses(node: &Value) -> BTreeSet<String> {
    node["exec"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|c| c.strip_prefix("ip addr add "))
        .filter_map(|c| c.split('/').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_labs_chart_values_pass_the_chart_and_agree_with_the_topology() {
    let Some(helm) = helm() else {
        eprintln!("skipping: .tools/bin/helm missing; run scripts/fetch-tools.sh");
        return;
    };
    let values = clab_dir().join("values.yaml");
    let docs = parse_documents(
        &helm_template(&helm, "kube-system", &[&values], &[])
            .unwrap_or_else(|e| panic!("{} is refused by the chart: {e}", values.display())),
    )
    .expect("parse");
    let topo = yaml(&clab_dir().join("tabby.clab.yml"));
    let nodes = topo["topology"]["nodes"].as_object().expect("nodes");
    let tor_addrs = exec_addresses(&nodes["tor1"]);
    let frr = std::fs::read_to_string(clab_dir().join("tor1/frr.conf")).expect("frr.conf");
    let kind_cfg = yaml(&clab_dir().join("kind-cluster.yaml"));
    let cluster = kind_cfg["name"].as_str().expect("kind cluster name");
    let peers: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "BGPPeer").collect();
    assert!(!peers.is_empty());
    for p in peers {
        let ip = p["spec"]["peerIP"].as_str().expect("peerIP");
        assert!(
            tor_addrs.contains(ip),
            "peer {ip} is not an address of tor1: {tor_addrs:?}"
        );
        let node = p["spec"]["node"].as_str().expect("node");
        assert!(
            node.starts_with(&format!("{cluster}-")) && nodes.contains_key(node),
            "peer node {node} is not a node of the kind cluster {cluster} in the topology"
        );
        for addr in exec_addresses(&nodes[node]) {
            assert!(
                frr.contains(&format!("neighbor {addr} ")),
                "tor1 has no neighbor {addr} (node {node})"
            );
        }
    }
    let pool = docs.iter().find(|d| d["kind"] == "IPPool").expect("pool");
    assert_eq!(
        pool["spec"]["cidr"], kind_cfg["networking"]["podSubnet"],
        "the pool and kind's podSubnet differ"
    );
}

#[test]
fn the_scenario_script_is_valid_bash() {
    let out = Command::new("bash")
        .arg("-n")
        .arg(clab_dir().join("run-scenarios.sh"))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
