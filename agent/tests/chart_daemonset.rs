//! The agent starts exactly as the Helm chart's rendered DaemonSet starts it — the container's
//! command, args and environment (downward-API fields resolved as the kubelet would) — in a
//! network namespace standing for the node's host network, against `tabby-kube-sim` holding
//! the chart's default custom resources. Paths the agent writes are mapped through the
//! container's volumeMounts onto a temp dir standing for the host (the root filesystem is
//! read-only in the chart, so a path no mount covers is a chart bug the test reports). Only the
//! in-cluster config is replaced by a kubeconfig, and the host paths are relocated under the
//! temp dir. It must pass its rendered readiness and liveness probes, program its block and
//! the default pool's natOutgoing, write its autodetected address on its Node, publish its
//! NodeNetworkStatus, and make no API request outside `daemon::API_CALLS` nor outside what
//! the rendered (Cluster)Roles bound to its ServiceAccount allow. The init container's rendered script is checked
//! with `sh -n` and run against temp dirs standing for its mounts.
//!
//! Needs root, `ip`, `nft` and the pinned helm (`scripts/fetch-tools.sh`); skips otherwise.

mod daemon_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_common::{Lab, skip_unless_root_and, tabby_routes, wait_for};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use tabby_agent::daemon::API_CALLS;
use tabby_api::v1alpha1::{IPAMBlock, NodeNetworkStatus};
use tabby_chart_tests::{self as chart, container};
use tabby_netlab::{Netns, Process, in_netns};

const NS: &str = "kube-system";
const NODE: &str = "node-1";
/// The first block of the chart's default pool (`10.244.0.0/16`, blockSize 26).
const BLOCK: &str = "10.244.0.0/26";
/// What a container runtime sets when the image sets no PATH (the agent runs `nft`).
const RUNTIME_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Removed on drop, even when the test fails.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

const POD: container::PodIdentity = container::PodIdentity {
    name: "tabby-agent-x7k2p",
    namespace: NS,
    node: NODE,
};

fn render(helm: &Path) -> Vec<Value> {
    chart::render(helm, NS, &[]).expect("render the chart")
}

fn env_of(c: &Value) -> BTreeMap<String, String> {
    container::env(c, &POD).expect("the container's env")
}

fn strings(v: &Value) -> Vec<String> {
    container::strings(v, "command").expect("a list of strings")
}

/// Where a container path lands on the "host" (`host_root`): through the longest volumeMount
/// covering it, to its hostPath volume under `host_root` (or, for a configMap volume, to
/// `host_root/configmap/<name>`). `None` when no mount covers it: with a read-only root
/// filesystem the container cannot write there.
fn host_path(pod: &Value, c: &Value, host_root: &Path, path: &str) -> Option<PathBuf> {
    let mounts = c["volumeMounts"].as_array()?;
    let (mount, rest) = mounts
        .iter()
        .filter_map(|m| {
            let mp = m["mountPath"].as_str()?.trim_end_matches('/');
            let rest = path.strip_prefix(mp)?;
            (rest.is_empty() || rest.starts_with('/')).then_some((m, rest))
        })
        .max_by_key(|(m, _)| m["mountPath"].as_str().map(str::len))?;
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == mount["name"])?;
    let base = if let Some(hp) = volume["hostPath"]["path"].as_str() {
        host_root.join(hp.trim_start_matches('/'))
    } else if let Some(cm) = volume["configMap"]["name"].as_str() {
        host_root.join("configmap").join(cm)
    } else {
        panic!("volume {volume}: unsupported source")
    };
    Some(base.join(rest.trim_start_matches('/')))
}

/// The agent's default for a flag the chart does not pass, from its `--help`.
fn default_of(flag: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tabby-agent"))
        .arg("--help")
        .output()
        .expect("tabby-agent --help");
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let at = help
        .find(&format!("--{flag} "))
        .unwrap_or_else(|| panic!("--{flag} in --help"));
    let tail = &help[at..];
    let d = tail.find("[default: ").expect("a default") + "[default: ".len();
    tail[d..d + tail[d..].find(']').expect("]")].to_string()
}

/// `GET path` on `ip:port` from inside `ns`: the status code, or `None` without an answer.
fn http_get(ns: &Netns, ip: &str, port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    in_netns(ns, || {
        let addr = SocketAddr::new(ip.parse().ok()?, port);
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.split_whitespace().nth(1)?.parse().ok()
    })
    .ok()
    .flatten()
}

/// Whether the rendered (Cluster)Roles bound to the pod's ServiceAccount allow a request
/// kube-sim recorded as `verb resource[.group][/subresource]`.
fn rbac_allows(docs: &[Value], pod: &Value, request: &str) -> bool {
    let sa = &pod["serviceAccountName"];
    let Some((verb, rest)) = request.split_once(' ') else {
        return false;
    };
    let (res_group, sub) = rest
        .split_once('/')
        .map_or((rest, None), |(r, s)| (r, Some(s)));
    let (resource, group) = res_group.split_once('.').unwrap_or((res_group, ""));
    let resource = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_string(),
    };
    let has = |v: &Value, want: &str| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|x| x == want || x == "*"))
    };
    docs.iter()
        .filter(|b| {
            matches!(
                b["kind"].as_str(),
                Some("ClusterRoleBinding" | "RoleBinding")
            ) && b["subjects"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["kind"] == "ServiceAccount" && s["name"] == *sa)
            })
        })
        .filter_map(|b| {
            docs.iter().find(|r| {
                r["kind"] == b["roleRef"]["kind"] && r["metadata"]["name"] == b["roleRef"]["name"]
            })
        })
        .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
        .any(|rule| {
            has(&rule["apiGroups"], group)
                && has(&rule["resources"], &resource)
                && has(&rule["verbs"], verb)
        })
}

#[test]
fn the_rendered_init_container_installs_the_plugin_and_conflist() {
    let helm = root().join(".tools/bin/helm");
    if !helm.is_file() {
        eprintln!("skipping: .tools/bin/helm missing; run scripts/fetch-tools.sh");
        return;
    }
    let docs = render(&helm);
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    let command = strings(&init["command"]);
    assert_eq!(command[..2], ["/bin/sh", "-ec"], "an sh script");
    let script = &command[2];
    let out = Command::new("sh")
        .args(["-n", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sh -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The host and the image, under a temp dir: the script's container paths are rewritten
    // to where its mounts (and the image's tabby-cni) put them.
    let dir =
        TempDir(std::env::temp_dir().join(format!("tabby-chart-init-{}", std::process::id())));
    let host = dir.0.join("host");
    let image_cni = dir.0.join("image/usr/local/bin/tabby-cni");
    std::fs::create_dir_all(image_cni.parent().unwrap()).unwrap();
    std::fs::write(
        &image_cni,
        b"#!/bin/sh\n# stands for the image's tabby-cni\n",
    )
    .unwrap();
    let cm_name = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["configMap"]["name"].as_str())
        .expect("a configMap volume");
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm_name)
        .expect("the CNI ConfigMap");
    let cm_dir = host.join("configmap").join(cm_name);
    std::fs::create_dir_all(&cm_dir).unwrap();
    for (k, v) in cm["data"].as_object().expect("data") {
        std::fs::write(cm_dir.join(k), v.as_str().unwrap()).unwrap();
    }
    let mut rewritten = script.replace("/usr/local/bin/tabby-cni", image_cni.to_str().unwrap());
    let mut mounts: Vec<&Value> = init["volumeMounts"].as_array().unwrap().iter().collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m["mountPath"].as_str().unwrap().len()));
    for m in mounts {
        let mp = m["mountPath"].as_str().unwrap();
        let on_host = host_path(pod, init, &host, mp).expect("mount resolves");
        // DirectoryOrCreate, as the kubelet does.
        std::fs::create_dir_all(&on_host).unwrap();
        rewritten = rewritten.replace(mp, on_host.to_str().unwrap());
    }
    let out = Command::new("sh")
        .args(["-ec", &rewritten])
        .env_clear()
        .env("PATH", RUNTIME_PATH)
        .envs(env_of(init))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install-cni failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    use std::os::unix::fs::PermissionsExt;
    let bin = host.join("opt/cni/bin/tabby-cni");
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(&image_cni).unwrap()
    );
    assert_eq!(bin.metadata().unwrap().permissions().mode() & 0o777, 0o755);
    let conflist_name = env_of(init)["CONFLIST"].clone();
    let conf = host.join("etc/cni/net.d").join(&conflist_name);
    let conflist: Value =
        serde_json::from_str(&std::fs::read_to_string(&conf).unwrap()).expect("conflist JSON");
    assert_eq!(conflist["name"], "tabby");
    assert_eq!(conflist["plugins"][0]["type"], "tabby-cni");
    assert_eq!(conf.metadata().unwrap().permissions().mode() & 0o777, 0o644);
    // Tabby's route protocol number registered with iproute2, as the agent defines it.
    let rt = host.join("etc/iproute2/rt_protos.d/tabby.conf");
    assert_eq!(
        std::fs::read_to_string(&rt).unwrap(),
        tabby_agent::routes::RT_PROTOS_CONF
    );
    // Nothing left under a temporary name.
    for d in ["opt/cni/bin", "etc/cni/net.d", "etc/iproute2/rt_protos.d"] {
        let names: Vec<String> = std::fs::read_dir(host.join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{d}: {names:?}");
    }
}

#[test]
fn the_rendered_daemonset_starts_the_agent_against_kube_sim() {
    let helm = root().join(".tools/bin/helm");
    if !helm.is_file() {
        eprintln!("skipping: .tools/bin/helm missing; run scripts/fetch-tools.sh");
        return;
    }
    if skip_unless_root_and(&["ip", "nft"]) {
        return;
    }
    let started = Instant::now();
    let docs = render(&helm);
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let c = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "agent")
        .expect("the agent container");
    let command = strings(&c["command"]);
    let ep = container::dockerfile_entrypoint(&root().join("images/agent.Dockerfile"))
        .expect("the image's ENTRYPOINT");
    assert_eq!(command, ep, "the DaemonSet's command is the image's binary");
    assert_eq!(command, ["/usr/local/bin/tabby-agent"]);
    let env = env_of(c);
    assert_eq!(env["NODE_NAME"], NODE);
    assert_eq!(env["POD_NAMESPACE"], NS);
    let args = container::args(c, &env).expect("the container's args");
    let (ready_port, ready_path) = container::http_probe(c, "readinessProbe").expect("probe");
    let (live_port, live_path) = container::http_probe(c, "livenessProbe").expect("probe");
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"], true,
        "the test maps writable paths through mounts because the root filesystem is read-only"
    );

    let mut lab = Lab::new(1, 61);
    let host = lab.dir.join("host");
    // The paths the agent writes (CNI socket, state dir): the rendered value, else the
    // agent's default; each must be on a mount, and is relocated under the temp "host" —
    // the only change to the rendered args (the test must not touch the real /var/run/tabby
    // and /var/lib/tabby).
    let mut run_args = args.clone();
    for flag in ["cni-socket", "state-dir"] {
        let prefix = format!("--{flag}=");
        let rendered = args.iter().find_map(|a| a.strip_prefix(&prefix));
        let in_container = rendered.map_or_else(|| default_of(flag), str::to_string);
        let on_host = host_path(pod, c, &host, &in_container).unwrap_or_else(|| {
            panic!(
                "--{flag} is {in_container} in the container, which no volumeMount covers; \
                 the root filesystem is read-only, so the agent cannot write it"
            )
        });
        std::fs::create_dir_all(on_host.parent().unwrap()).unwrap();
        run_args.retain(|a| !a.starts_with(&prefix));
        run_args.push(format!("{prefix}{}", on_host.display()));
    }

    lab.block_on(async |lab, client, sim| {
        // The chart's default custom resources, as `helm install` applies them.
        for d in docs.iter().filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("tabby.dev/"))
        }) {
            let kind = d["kind"].as_str().unwrap();
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("tabby.dev", "v1alpha1", kind),
                &format!("{}s", kind.to_lowercase()),
            );
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let obj: DynamicObject = serde_json::from_value(d.clone()).unwrap();
            api.create(&PostParams::default(), &obj)
                .await
                .unwrap_or_else(|e| panic!("create {kind}: {e}"));
        }
        // The Node without an address annotation: the chart leaves autodetection at the
        // agent's default, which must find the node's address and write it back.
        daemon_common::create_node_with(&client, NODE, json!({})).await;
        let block: IPAMBlock = serde_json::from_value(json!({
            "apiVersion": "tabby.dev/v1alpha1",
            "kind": "IPAMBlock",
            "metadata": {"name": tabby_api::ipam::name::block_name(BLOCK.parse().unwrap())},
            "spec": {"cidr": BLOCK, "pool": "default-ipv4", "node": NODE},
        }))
        .unwrap();
        Api::<IPAMBlock>::all(client.clone())
            .create(&PostParams::default(), &block)
            .await
            .expect("create IPAMBlock");
        sim.reset_stats();

        let node = &mut lab.nodes[0];
        // The node's namespace is its host network (hostNetwork: true). In a pod,
        // kube::Client::try_default() uses the in-cluster config; here KUBECONFIG.
        let mut cmd = node.ns.command(&command[0].replace(
            "/usr/local/bin/tabby-agent",
            env!("CARGO_BIN_EXE_tabby-agent"),
        ));
        cmd.env_clear()
            .env("PATH", RUNTIME_PATH)
            .envs(&env)
            .env("KUBECONFIG", lab.dir.join("kubeconfig"))
            .args(&run_args);
        let log = lab.dir.join(format!("{NODE}.log"));
        node.agent = Some(Process::spawn(NODE, cmd, &log).expect("spawn tabby-agent"));

        let ns = &lab.nodes[0].ns;
        let ready = wait_for(Duration::from_secs(30), || {
            http_get(ns, "127.0.0.1", ready_port, &ready_path) == Some(200)
        })
        .await;
        assert!(
            ready.is_some(),
            "readinessProbe GET {ready_path} on :{ready_port} not 200 within 30 s; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        eprintln!("ready after {:?}", ready.unwrap());
        // The kubelet probes a hostNetwork pod at the node's address.
        let node_ip = lab.nodes[0].address.clone();
        assert_eq!(http_get(ns, &node_ip, live_port, &live_path), Some(200));
        assert_eq!(http_get(ns, &node_ip, ready_port, &ready_path), Some(200));
        assert!(
            wait_for(Duration::from_secs(10), || tabby_routes(ns)
                .iter()
                .any(|r| r.starts_with(&format!("blackhole {BLOCK}"))))
            .await
            .is_some(),
            "the blackhole for its block: {:?}",
            tabby_routes(ns)
        );
        // The chart's default pool has natOutgoing: the agent's nftables table masquerades
        // traffic leaving the pool.
        assert!(
            wait_for(Duration::from_secs(10), || ns
                .exec(&["nft", "list", "table", "inet", tabby_agent::nat::TABLE])
                .is_ok_and(|t| t.contains("10.244.0.0/16")))
            .await
            .is_some(),
            "natOutgoing table for the chart's default pool: {:?}",
            ns.exec(&["nft", "list", "ruleset"])
        );
        let socket = run_args
            .iter()
            .find_map(|a| a.strip_prefix("--cni-socket="))
            .unwrap();
        assert!(Path::new(socket).exists(), "the CNI socket at {socket}");

        let statuses: Api<NodeNetworkStatus> = Api::all(client.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = statuses.get(NODE).await
                && s.status.as_ref().is_some_and(|s| s.block_count == 1)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "NodeNetworkStatus {NODE} with its block within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let n = nodes.get(NODE).await.expect("Node");
        assert_eq!(
            n.metadata
                .annotations
                .unwrap_or_default()
                .get("tabby.dev/ipv4-address")
                .map(String::as_str),
            Some(format!("{}/24", lab.nodes[0].address).as_str()),
            "autodetection (the agent's default) wrote the node's address"
        );

        // Every request kube-sim saw is declared (the test's own after the reset are gets,
        // which the agent declares too).
        let declared: BTreeSet<String> = API_CALLS
            .iter()
            .map(|c| {
                let res = if c.group.is_empty() {
                    c.resource.to_string()
                } else {
                    format!("{}.{}", c.resource, c.group)
                };
                match c.subresource {
                    Some(s) => format!("{} {res}/{s}", c.verb),
                    None => format!("{} {res}", c.verb),
                }
            })
            .collect();
        let seen = sim.stats();
        assert!(
            seen.contains_key("watch ipamblocks.tabby.dev")
                && seen.contains_key("patch nodes")
                && seen.keys().any(|k| k.contains("nodenetworkstatuses")),
            "kube-sim recorded the agent's requests: {seen:?}"
        );
        let refused: Vec<&String> = seen
            .keys()
            .filter(|k| !rbac_allows(&docs, pod, k))
            .collect();
        assert!(
            refused.is_empty(),
            "requests the chart's RBAC for {} refuses: {refused:?}",
            pod["serviceAccountName"]
        );
        // The checker itself: a grant it must see, and requests the agent must not have.
        assert!(rbac_allows(
            &docs,
            pod,
            "update ipamblocks.tabby.dev/status"
        ));
        assert!(rbac_allows(&docs, pod, "list secrets"));
        assert!(!rbac_allows(&docs, pod, "delete nodes"));
        assert!(!rbac_allows(&docs, pod, "update ipamblocks.tabby.dev"));
        let undeclared: Vec<&String> = seen.keys().filter(|k| !declared.contains(*k)).collect();
        assert!(
            undeclared.is_empty(),
            "requests not in daemon::API_CALLS (the chart's RBAC would refuse them): \
             {undeclared:?}; seen: {seen:?}"
        );
    });
    eprintln!("chart DaemonSet test took {:?}", started.elapsed());
}
