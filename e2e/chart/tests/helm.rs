//! The chart renders and lints over the values matrix (`charts/tabby/ci/`), rejects every bad
//! values file (`charts/tabby/ci-bad/`) with the message it names, and what it renders passes
//! `kubernetes-validate --strict` for Kubernetes 1.33. Skips (with a message) when the pinned
//! tools are not installed: `scripts/fetch-tools.sh`, `scripts/test-chart.sh`.

use std::path::Path;
use std::process::Command;

use tabby_chart_tests::{
    bad_values, chart_dir, ci_values, helm, helm_template, kind, kubernetes_validate,
    parse_documents,
};

const NS: &str = "kube-system";

fn need_helm() -> Option<std::path::PathBuf> {
    let h = helm();
    if h.is_none() {
        eprintln!("skipping: .tools/bin/helm missing; run scripts/fetch-tools.sh");
    }
    h
}

#[test]
fn the_matrix_is_there() {
    let names: Vec<String> = ci_values()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for want in [
        "defaults-values.yaml",
        "dual-stack-values.yaml",
        "tor-peers-values.yaml",
        "route-reflectors-values.yaml",
        "custom-pools-values.yaml",
        "lab-values.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "ci/{want} missing: {names:?}"
        );
    }
    assert!(bad_values().len() >= 10, "too few rejected-values cases");
}

#[test]
fn lint_strict_passes_for_every_matrix_entry() {
    let Some(helm) = need_helm() else { return };
    for values in ci_values() {
        let out = Command::new(&helm)
            .args(["lint", "--strict", "--namespace", NS])
            .arg(chart_dir())
            .arg("--values")
            .arg(&values)
            .output()
            .expect("run helm lint");
        assert!(
            out.status.success(),
            "helm lint --strict -f {}:\n{}{}",
            values.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every matrix entry renders the components and the objects its values ask for.
#[test]
fn every_matrix_entry_renders_what_it_asks_for() {
    let Some(helm) = need_helm() else { return };
    for values in ci_values() {
        let text = helm_template(&helm, NS, &[&values], &[]).expect("render");
        let docs = parse_documents(&text).expect("parse");
        let v: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&values).unwrap()).unwrap();
        let count = |k: &str| docs.iter().filter(|d| kind(d) == k).count();
        let what = values.display();
        assert_eq!(count("DaemonSet"), 1, "{what}");
        assert_eq!(count("Deployment"), 1, "{what}");
        assert_eq!(count("BGPConfiguration"), 1, "{what}");
        let pools = v["ipPools"].as_sequence().map_or(1, |s| s.len());
        assert_eq!(count("IPPool"), pools, "{what}");
        let peers = v["bgp"]["peers"].as_sequence().map_or(0, |s| s.len());
        assert_eq!(count("BGPPeer"), peers, "{what}");
        let monitors = if v["serviceMonitor"]["enabled"].as_bool() == Some(true) {
            2
        } else {
            0
        };
        assert_eq!(count("ServiceMonitor"), monitors, "{what}");
        for d in &docs {
            if let Some(ns) = d["metadata"]["namespace"].as_str() {
                assert_eq!(ns, NS, "{what}: {} outside the release namespace", kind(d));
            }
        }
    }
}

#[test]
fn defaults_render_the_documented_contract() {
    let Some(helm) = need_helm() else { return };
    let docs = parse_documents(&helm_template(&helm, NS, &[], &[]).expect("render")).unwrap();
    let ds = docs.iter().find(|d| kind(d) == "DaemonSet").unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(
        spec["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    let agent = &spec["containers"][0];
    let sc = &agent["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "SYS_ADMIN", "NET_BIND_SERVICE"])
    );
    assert_eq!(agent["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(agent["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env: Vec<&str> = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        env.contains(&"NODE_NAME") && env.contains(&"POD_NAMESPACE"),
        "{env:?}"
    );
    let mounts: Vec<&str> = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for m in ["/var/run/tabby", "/var/run/netns", "/host/proc/sys/net"] {
        assert!(mounts.contains(&m), "agent lacks mount {m}: {mounts:?}");
    }
    let init = &spec["initContainers"][0];
    assert_eq!(init["name"], "install-cni");
    // The conflist the init container installs is valid JSON naming the tabby-cni plugin.
    let cm = docs.iter().find(|d| kind(d) == "ConfigMap").unwrap();
    let conflist: serde_json::Value =
        serde_json::from_str(cm["data"]["10-tabby.conflist"].as_str().unwrap()).unwrap();
    assert_eq!(conflist["plugins"][0]["type"], "tabby-cni");
    assert_eq!(conflist["plugins"].as_array().unwrap().len(), 1);
    // The route protocol name the init container registers is the agent's own constant, and
    // it lands in the host's /etc/iproute2/rt_protos.d.
    assert_eq!(
        cm["data"]["rt_protos.conf"].as_str(),
        Some(tabby_agent::routes::RT_PROTOS_CONF)
    );
    let script = init["command"][2].as_str().unwrap();
    assert!(script.contains("/host/rt-protos/tabby.conf"), "{script}");
    let rt = init["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/host/rt-protos")
        .expect("init container mounts the rt_protos.d directory");
    let vol = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == rt["name"])
        .unwrap();
    assert_eq!(vol["hostPath"]["path"], "/etc/iproute2/rt_protos.d");

    let dep = docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    assert_eq!(dep["spec"]["replicas"], 2);
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    let pdb = docs
        .iter()
        .find(|d| kind(d) == "PodDisruptionBudget")
        .unwrap();
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let pool = docs.iter().find(|d| kind(d) == "IPPool").unwrap();
    assert_eq!(pool["spec"]["cidr"], "10.244.0.0/16");
    let bgp = docs.iter().find(|d| kind(d) == "BGPConfiguration").unwrap();
    assert_eq!(bgp["metadata"]["name"], "default");
    assert_eq!(bgp["spec"]["asNumber"], 64512);
    assert_eq!(bgp["spec"]["nodeToNodeMeshEnabled"], true);
}

#[test]
fn portmap_is_chained_only_when_asked() {
    let Some(helm) = need_helm() else { return };
    let docs = parse_documents(
        &helm_template(&helm, NS, &[], &[("agent.cni.portmap", "true")]).expect("render"),
    )
    .unwrap();
    let cm = docs.iter().find(|d| kind(d) == "ConfigMap").unwrap();
    let conflist: serde_json::Value =
        serde_json::from_str(cm["data"]["10-tabby.conflist"].as_str().unwrap()).unwrap();
    let types: Vec<&str> = conflist["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(types, ["tabby-cni", "portmap"]);
}

fn expected_message(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read bad values");
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| {
            panic!(
                "{}: first line must be `# expect: <message>`",
                path.display()
            )
        })
        .to_string()
}

#[test]
fn bad_values_are_rejected_with_their_message() {
    let Some(helm) = need_helm() else { return };
    let mut failures = Vec::new();
    for values in bad_values() {
        let want = expected_message(&values);
        match helm_template(&helm, NS, &[&values], &[]) {
            Ok(_) => failures.push(format!("{}: accepted", values.display())),
            Err(e) if e.to_string().contains(&want) => {}
            Err(e) => failures.push(format!(
                "{}: rejected, but without {want:?}: {e}",
                values.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rendered_manifests_and_crds_pass_kubernetes_validate_strict_for_1_33() {
    let Some(helm) = need_helm() else { return };
    let Some(kv) = kubernetes_validate() else {
        eprintln!(
            "skipping: .tools/kubernetes-validate missing; run scripts/test-chart.sh --install"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, values) in ci_values().iter().enumerate() {
        let text = helm_template(&helm, NS, &[values], &[]).expect("render");
        let f = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&f, text).unwrap();
        files.push(f);
    }
    files.extend(tabby_chart_tests::yaml_files(&chart_dir().join("crds")));
    let out = Command::new(&kv)
        .args(["--strict", "--kubernetes-version", "1.33.0", "--quiet"])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only the custom resources (ours, checked against the CRDs in custom_resources.rs, and the
    // ServiceMonitor) may lack a built-in schema.
    for line in stdout.lines().chain(stderr.lines()) {
        if line.starts_with("WARN") {
            assert!(
                line.contains("tabby.dev/v1alpha1") || line.contains("monitoring.coreos.com/v1"),
                "unexpected warning: {line}"
            );
        }
    }
    assert!(
        out.status.success(),
        "kubernetes-validate --strict:\n{stdout}{stderr}"
    );
}

#[test]
fn kubernetes_validate_catches_an_unknown_field() {
    // The validator is really strict: the same render with one stray field fails.
    let Some(helm) = need_helm() else { return };
    let Some(kv) = kubernetes_validate() else {
        eprintln!(
            "skipping: .tools/kubernetes-validate missing; run scripts/test-chart.sh --install"
        );
        return;
    };
    let text = helm_template(&helm, NS, &[], &[]).expect("render");
    let bad = text.replacen(
        "allowPrivilegeEscalation: false",
        "allowPrivilegeEscalation: false\n            allowPrivilegeEscalaton: false",
        1,
    );
    assert_ne!(bad, text);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, bad).unwrap();
    let out = Command::new(&kv)
        .args([
            "--strict",
            "--kubernetes-version",
            "1.33.0",
            "--quiet",
            "--no-warn",
        ])
        .arg(&f)
        .output()
        .expect("run kubernetes-validate");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("allowPrivilegeEscalaton"));
}

fn notes(helm: &Path, values: &[&Path]) -> String {
    let mut cmd = Command::new(helm);
    cmd.args(["install", "tabby", "--dry-run=client", "--namespace", NS])
        .arg(chart_dir());
    for v in values {
        cmd.arg("--values").arg(v);
    }
    let out = cmd.output().expect("run helm install --dry-run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_once("\nNOTES:\n")
        .map(|(_, n)| n.to_string())
        .expect("helm printed NOTES")
}

#[test]
fn notes_tell_the_operator_how_to_check_health() {
    let Some(helm) = need_helm() else { return };
    let n = notes(&helm, &[]);
    for want in [
        "kubectl get nodenetworkstatus",
        "kubectl get ippools",
        "kubectl -n kube-system get lease tabby-ipam-controller",
        "Pools created: default-ipv4 (10.244.0.0/16)",
        "node-to-node mesh on",
    ] {
        assert!(n.contains(want), "NOTES lack {want:?}:\n{n}");
    }
    let tor = chart_dir().join("ci/tor-peers-values.yaml");
    let n = notes(&helm, &[&tor]);
    assert!(
        n.contains("kubectl -n kube-system get secret tabby-bgp-passwords"),
        "NOTES do not point at the password Secret:\n{n}"
    );
    let dir = tempfile::tempdir().unwrap();
    let lonely = dir.path().join("v.yaml");
    std::fs::write(
        &lonely,
        "bgp:\n  configuration:\n    nodeToNodeMeshEnabled: false\n",
    )
    .unwrap();
    assert!(notes(&helm, &[&lonely]).contains("WARNING: the node-to-node mesh is off"));
}

/// The last stage of a Dockerfile: its FROM image and its instructions.
fn final_stage(path: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(path).expect("read Dockerfile");
    let mut from = String::new();
    let mut lines = Vec::new();
    for l in text.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("FROM ") {
            from = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            lines.clear();
        } else if !l.starts_with('#') && !l.is_empty() {
            lines.push(l.to_string());
        }
    }
    (from, lines)
}

#[test]
fn images_provide_what_the_chart_runs() {
    let Some(helm) = need_helm() else { return };
    let docs = parse_documents(&helm_template(&helm, NS, &[], &[]).expect("render")).unwrap();
    let root = tabby_chart_tests::workspace_root();

    let (from, agent) = final_stage(&root.join("images/agent.Dockerfile"));
    assert!(
        from.starts_with("debian:"),
        "the init container needs a shell: {from}"
    );
    let ds = docs.iter().find(|d| kind(d) == "DaemonSet").unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    let cmd = spec["containers"][0]["command"][0].as_str().unwrap();
    let script = spec["initContainers"][0]["command"][2].as_str().unwrap();
    assert_eq!(spec["initContainers"][0]["command"][0], "/bin/sh");
    for bin in [cmd, "/usr/local/bin/tabby-cni"] {
        assert!(
            agent
                .iter()
                .any(|l| l.starts_with("COPY") && l.ends_with(bin)),
            "images/agent.Dockerfile does not install {bin}"
        );
    }
    assert!(script.contains("/usr/local/bin/tabby-cni"));
    assert!(agent.contains(&format!("ENTRYPOINT [\"{cmd}\"]")));
    // natOutgoing (on in the default pool) runs `nft` from the agent's image.
    assert!(
        agent
            .iter()
            .any(|l| l.contains("apt-get install") && l.contains(" nftables")),
        "images/agent.Dockerfile's runtime stage does not install nftables (the agent runs nft): {agent:?}"
    );

    let (from, ctl) = final_stage(&root.join("images/ipam-controller.Dockerfile"));
    assert!(
        from.contains("distroless") && from.ends_with(":nonroot"),
        "{from}"
    );
    let dep = docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    let uid = dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        .as_u64()
        .unwrap();
    assert!(ctl.contains(&format!("USER {uid}:{uid}")), "{ctl:?}");
    assert!(ctl.contains(&"ENTRYPOINT [\"/usr/local/bin/tabby-ipam-controller\"]".to_string()));
}
