//! The chart's default objects for a lab: `charts/tabby` rendered by the pinned helm with the
//! lab's values (`charts/tabby/ci/lab-values.yaml`, part of the chart's test matrix) plus a
//! small per-run values file derived from [`Options`].
//!
//! Owns: finding helm, deriving the per-run values (pure), rendering, and picking the custom
//! resources (IPPools, BGPConfiguration, BGPPeers) out of the rendered manifests — not the
//! DaemonSet or Deployment: the lab runs the binaries itself. Must not talk to the API server
//! ([`crate::lab`] creates the objects), and must not describe any object itself: a template
//! bug in the chart's default objects has to show in the lab.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tabby_chart_tests::{chart_dir, helm_template, parse_documents};

use crate::plan::{self, Options};

/// The lab's values, relative to the chart directory.
pub const LAB_VALUES: &str = "ci/lab-values.yaml";
/// The per-run values file, in the lab's state directory.
pub const RUN_VALUES: &str = "chart-values.yaml";
/// Environment variable naming another helm binary.
pub const HELM_ENV: &str = "TABBY_HELM";
/// The API group of the chart's custom resources.
pub const GROUP: &str = "tabby.dev";
/// The IPv6 pool `--ipv6` adds, and its block size (the chart's IPv6 default).
pub const POOL_V6_NAME: &str = "default-ipv6";
pub const BLOCK_SIZE_V6: u8 = 122;

/// Why the chart's objects could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error(
        "helm not found at {looked}; run ./scripts/fetch-tools.sh (it installs the pinned helm \
         into .tools/bin), or point ${HELM_ENV} at a helm binary"
    )]
    MissingHelm { looked: String },
    #[error("{file}: {reason}")]
    Values { file: String, reason: String },
    /// Not a `#[source]`: the message already carries it (helm's own words), once.
    #[error("rendering charts/tabby for the lab: {0}")]
    Render(tabby_chart_tests::ChartError),
}

/// The helm to run: `$TABBY_HELM` when set, else the pinned `<repo>/.tools/bin/helm`.
pub fn find_helm() -> Result<PathBuf, ChartError> {
    let path = match std::env::var_os(HELM_ENV) {
        Some(p) => PathBuf::from(p),
        None => tabby_chart_tests::workspace_root().join(".tools/bin/helm"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(ChartError::MissingHelm {
            looked: path.display().to_string(),
        })
    }
}

fn values_error(reason: impl Into<String>) -> ChartError {
    ChartError::Values {
        file: format!("charts/tabby/{LAB_VALUES}"),
        reason: reason.into(),
    }
}

/// The values this run sets on top of `base` (the parsed lab values): the IPv4 pool's CIDR and
/// block size, the IPv6 pool with `ipv6`, the mesh flag, and the ToR peer(s) — a copy of the
/// base's `tor` peer at the ToR's IPv6 address with `ipv6`, both with the password Secret when
/// one is set. Lists replace (helm does not merge them), so the whole `ipPools` and
/// `bgp.peers` lists are written, each derived from the base's.
pub fn run_values(base: &Value, opts: &Options) -> Result<Value, ChartError> {
    let mut pools = base["ipPools"]
        .as_array()
        .cloned()
        .ok_or_else(|| values_error("no ipPools list"))?;
    let v4 = pools
        .iter_mut()
        .find(|p| p["cidr"].as_str().is_some_and(|c| !c.contains(':')))
        .ok_or_else(|| values_error("no IPv4 pool in ipPools"))?;
    v4["cidr"] = json!(opts.pool_v4);
    v4["blockSize"] = json!(opts.block_size_v4);
    if opts.ipv6 {
        pools
            .push(json!({"name": POOL_V6_NAME, "cidr": plan::POOL_V6, "blockSize": BLOCK_SIZE_V6}));
    }

    let mut peers = base["bgp"]["peers"]
        .as_array()
        .cloned()
        .ok_or_else(|| values_error("no bgp.peers list"))?;
    let tor_at = peers
        .iter()
        .position(|p| p["name"] == plan::TOR_PEER_NAME)
        .ok_or_else(|| values_error(format!("no peer named `{}`", plan::TOR_PEER_NAME)))?;
    if opts.ipv6 {
        let mut v6 = peers[tor_at].clone();
        v6["name"] = json!(format!("{}-v6", plan::TOR_PEER_NAME));
        v6["peerIP"] = json!(plan::TOR_IPV6.to_string());
        peers.insert(tor_at + 1, v6);
    }
    if opts.tor_password.is_some() {
        let (secret, key) = plan::TOR_SECRET;
        for p in peers
            .iter_mut()
            .skip(tor_at)
            .take(1 + usize::from(opts.ipv6))
        {
            p["password"] = json!({"secretName": secret, "key": key});
        }
    }

    Ok(json!({
        "ipPools": pools,
        "bgp": {
            "configuration": {"nodeToNodeMeshEnabled": opts.mesh},
            "peers": peers,
        },
    }))
}

/// The custom resources (group [`GROUP`]) among rendered manifests, in the rendered order.
pub fn custom_resources(rendered: &str) -> Result<Vec<Value>, ChartError> {
    let prefix = format!("{GROUP}/");
    Ok(parse_documents(rendered)
        .map_err(ChartError::Render)?
        .into_iter()
        .filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with(&prefix))
        })
        .collect())
}

/// Renders the chart with the lab values and `run_values` (a file) in the lab's release
/// namespace, and returns its custom resources.
pub fn render(helm: &Path, run_values: &Path) -> Result<Vec<Value>, ChartError> {
    let lab_values = chart_dir().join(LAB_VALUES);
    let text = helm_template(
        helm,
        plan::SYSTEM_NAMESPACE,
        &[lab_values.as_path(), run_values],
        &[],
    )
    .map_err(ChartError::Render)?;
    custom_resources(&text)
}

/// The lab values file, parsed.
pub fn lab_values() -> Result<Value, ChartError> {
    let path = chart_dir().join(LAB_VALUES);
    let text = std::fs::read_to_string(&path).map_err(|e| values_error(e.to_string()))?;
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| values_error(e.to_string()))?;
    serde_json::to_value(yaml).map_err(|e| values_error(e.to_string()))
}

/// The chart's default objects for `opts`: writes the per-run values into `dir`
/// ([`RUN_VALUES`], kept for the user to read) and renders.
pub fn default_objects(helm: &Path, opts: &Options, dir: &Path) -> Result<Vec<Value>, ChartError> {
    let values = run_values(&lab_values()?, opts)?;
    let path = dir.join(RUN_VALUES);
    let text = serde_yaml::to_string(&values).map_err(|e| ChartError::Values {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let header = "# Written by `tabby-lab up`: this run's values on top of \
                  charts/tabby/ci/lab-values.yaml.\n";
    std::fs::write(&path, format!("{header}{text}")).map_err(|e| ChartError::Values {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    render(helm, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        lab_values().expect("charts/tabby/ci/lab-values.yaml")
    }

    fn named<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objs.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {objs:#?}"))
    }

    fn names(objs: &[Value], kind: &str) -> Vec<String> {
        let mut v: Vec<String> = objs
            .iter()
            .filter(|o| o["kind"] == kind)
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn run_values_follow_the_options() {
        let v = run_values(&base(), &Options::default()).unwrap();
        assert_eq!(v["ipPools"].as_array().unwrap().len(), 1);
        assert_eq!(v["ipPools"][0]["cidr"], plan::POOL_V4);
        assert_eq!(v["bgp"]["configuration"]["nodeToNodeMeshEnabled"], true);
        assert_eq!(v["bgp"]["peers"].as_array().unwrap().len(), 1);
        assert!(v["bgp"]["peers"][0].get("password").is_none());

        let o = Options {
            ipv6: true,
            mesh: false,
            tor_password: Some("pw".into()),
            pool_v4: "10.244.0.0/30".into(),
            block_size_v4: 30,
            ..Options::default()
        };
        let v = run_values(&base(), &o).unwrap();
        assert_eq!(v["ipPools"][0]["cidr"], "10.244.0.0/30");
        assert_eq!(v["ipPools"][0]["blockSize"], 30);
        assert_eq!(v["ipPools"][1]["name"], POOL_V6_NAME);
        assert_eq!(v["bgp"]["configuration"]["nodeToNodeMeshEnabled"], false);
        let peers = v["bgp"]["peers"].as_array().unwrap();
        assert_eq!(peers[1]["name"], "tor-v6");
        assert_eq!(peers[1]["peerIP"], "fd77::1");
        // The copy keeps the base peer's AS and timers.
        assert_eq!(peers[1]["asNumber"], peers[0]["asNumber"]);
        assert_eq!(peers[1]["timers"], peers[0]["timers"]);
        for p in peers {
            assert_eq!(p["password"]["secretName"], plan::TOR_SECRET.0);
            assert_eq!(p["password"]["key"], plan::TOR_SECRET.1);
        }
    }

    #[test]
    fn run_values_name_what_the_base_lacks() {
        let mut no_tor = base();
        no_tor["bgp"]["peers"][0]["name"] = json!("rack1");
        let e = run_values(&no_tor, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("no peer named `tor`"), "{e}");
        let e = run_values(&json!({"bgp": {"peers": []}}), &Options::default()).unwrap_err();
        assert!(e.to_string().contains("no ipPools list"), "{e}");
        let v6_only =
            json!({"ipPools": [{"name": "p", "cidr": "fd00::/48"}], "bgp": {"peers": []}});
        let e = run_values(&v6_only, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("no IPv4 pool"), "{e}");
    }

    #[test]
    fn only_custom_resources_are_taken() {
        let text = "---\n# Source: x\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: a}\n\
                    ---\napiVersion: tabby.dev/v1alpha1\nkind: IPPool\nmetadata: {name: p}\n\
                    ---\n# only a comment\n";
        let crs = custom_resources(text).unwrap();
        assert_eq!(crs.len(), 1);
        assert_eq!(crs[0]["kind"], "IPPool");
        assert!(custom_resources("a: [\n").is_err());
    }

    #[test]
    fn a_missing_helm_names_the_fix() {
        let e = ChartError::MissingHelm {
            looked: "/x/helm".into(),
        };
        assert!(e.to_string().contains("./scripts/fetch-tools.sh"), "{e}");
    }

    /// Renders with the real helm for each option combination and checks what the lab relies
    /// on: pool CIDRs and block sizes, the mesh flag, the AS numbers, the ToR peers' addresses
    /// and reach (every node), ConnectRetry, and the Secret reference.
    #[test]
    fn the_rendered_objects_are_what_the_lab_relies_on() {
        let helm = match find_helm() {
            Ok(h) => h,
            Err(e) => {
                eprintln!("SKIP: {e}");
                return;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            Options::default(),
            Options {
                ipv6: true,
                ..Options::default()
            },
            Options {
                mesh: false,
                ..Options::default()
            },
            Options {
                tor_password: Some("s3cret".into()),
                ..Options::default()
            },
            Options {
                ipv6: true,
                mesh: false,
                tor_password: Some("x".into()),
                pool_v4: "10.244.0.0/30".into(),
                block_size_v4: 30,
                ..Options::default()
            },
        ];
        for o in cases {
            let objs = default_objects(&helm, &o, dir.path()).unwrap();
            let ctx = format!("{o:?}");
            assert!(dir.path().join(RUN_VALUES).is_file());
            // Nothing but our custom resources.
            assert!(
                objs.iter().all(|c| c["apiVersion"] == "tabby.dev/v1alpha1"),
                "{ctx}"
            );

            let mut want_pools = vec!["default-ipv4".to_string()];
            let mut want_peers = vec![plan::TOR_PEER_NAME.to_string()];
            if o.ipv6 {
                want_pools.push(POOL_V6_NAME.into());
                want_peers.push(format!("{}-v6", plan::TOR_PEER_NAME));
            }
            assert_eq!(names(&objs, "IPPool"), want_pools, "{ctx}");
            assert_eq!(names(&objs, "BGPPeer"), want_peers, "{ctx}");
            assert_eq!(names(&objs, "BGPConfiguration"), ["default"], "{ctx}");

            let v4 = &named(&objs, "IPPool", "default-ipv4")["spec"];
            assert_eq!(v4["cidr"], o.pool_v4.as_str(), "{ctx}");
            assert_eq!(v4["blockSize"], o.block_size_v4, "{ctx}");
            assert_eq!(v4["natOutgoing"], true, "{ctx}");
            assert_eq!(v4["disabled"], false, "{ctx}");
            if o.ipv6 {
                let v6 = &named(&objs, "IPPool", POOL_V6_NAME)["spec"];
                assert_eq!(v6["cidr"], plan::POOL_V6, "{ctx}");
                assert_eq!(v6["blockSize"], BLOCK_SIZE_V6, "{ctx}");
            }

            let cfg = &named(&objs, "BGPConfiguration", "default")["spec"];
            assert_eq!(cfg["asNumber"], plan::CLUSTER_AS, "{ctx}");
            assert_eq!(cfg["nodeToNodeMeshEnabled"], o.mesh, "{ctx}");
            assert_eq!(cfg["listenPort"], 179, "{ctx}");

            for (name, ip) in [
                (plan::TOR_PEER_NAME.to_string(), plan::TOR_IPV4.to_string()),
                (
                    format!("{}-v6", plan::TOR_PEER_NAME),
                    plan::TOR_IPV6.to_string(),
                ),
            ] {
                if name.ends_with("-v6") && !o.ipv6 {
                    continue;
                }
                let spec = &named(&objs, "BGPPeer", &name)["spec"];
                assert_eq!(spec["peerIP"], ip, "{ctx}");
                assert_eq!(spec["asNumber"], plan::TOR_AS, "{ctx}");
                assert_eq!(spec["nodeSelector"], json!({}), "every node: {ctx}");
                assert!(spec.get("node").is_none(), "{ctx}");
                assert_eq!(
                    spec["timers"]["connectRetryTime"],
                    plan::CONNECT_RETRY_S,
                    "{ctx}"
                );
                match &o.tor_password {
                    Some(_) => assert_eq!(
                        spec["password"],
                        json!({"name": plan::TOR_SECRET.0, "key": plan::TOR_SECRET.1}),
                        "{ctx}"
                    ),
                    None => assert!(spec.get("password").is_none(), "{ctx}"),
                }
            }
        }

        // The chart's own checks apply to the lab's options: a block larger than its pool is
        // refused with the chart's message.
        let bad = Options {
            pool_v4: "10.244.0.0/30".into(),
            block_size_v4: 26,
            ..Options::default()
        };
        let e = default_objects(&helm, &bad, dir.path()).unwrap_err();
        assert!(
            e.to_string()
                .contains("blockSize 26 is shorter than the cidr's prefix length /30"),
            "{e}"
        );
    }
}
