//! Helpers for the Helm chart tests (`tests/`): where the chart and the pinned tools are,
//! rendering the chart into documents, and the RBAC audit as a pure function.
//!
//! Owns: running `helm template`, parsing its output, and computing what a ServiceAccount is
//! allowed from rendered (Cluster)Roles and bindings. Must not touch a cluster: the tests that
//! apply objects use `tabby-kube-sim`.

pub mod container;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tabby_api::rbac::{ApiCall, Scope, Verb};

/// The workspace root (this crate is `e2e/chart`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `charts/tabby`.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/tabby")
}

/// `<workspace root>/../shared`, when it exists.
pub fn shared_dir() -> Option<PathBuf> {
    let p = workspace_root().join("../shared");
    p.is_dir().then_some(p)
}

/// The pinned helm (`scripts/fetch-tools.sh`), when installed.
pub fn helm() -> Option<PathBuf> {
    let p = workspace_root().join(".tools/bin/helm");
    p.is_file().then_some(p)
}

/// The pinned `kubernetes-validate` (`scripts/test-chart.sh`), when installed.
pub fn kubernetes_validate() -> Option<PathBuf> {
    let p = workspace_root().join(".tools/kubernetes-validate/bin/kubernetes-validate");
    p.is_file().then_some(p)
}

/// Values files of the chart's test matrix (`charts/tabby/ci/*.yaml`), sorted.
pub fn ci_values() -> Vec<PathBuf> {
    yaml_files(&chart_dir().join("ci"))
}

/// Values files the chart must reject (`charts/tabby/ci-bad/*.yaml`), sorted.
pub fn bad_values() -> Vec<PathBuf> {
    yaml_files(&chart_dir().join("ci-bad"))
}

/// `*.yaml` files directly in `dir`, sorted (empty when `dir` is missing).
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// What went wrong rendering or reading manifests.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// helm could not be run.
    #[error("running {helm}: {source}")]
    Spawn {
        /// The helm binary.
        helm: String,
        /// Cause.
        source: std::io::Error,
    },
    /// helm refused (bad values, template failure): its stderr.
    #[error("helm template failed: {0}")]
    Helm(String),
    /// A rendered document is not YAML.
    #[error("rendered document {index} is not valid YAML: {reason}")]
    Yaml {
        /// Position in the output.
        index: usize,
        /// Parser message.
        reason: String,
    },
}

/// Runs `helm template` on the chart with `values` files and `--set` pairs in `namespace`
/// (release name `tabby`). Ok: the rendered text.
pub fn helm_template(
    helm: &Path,
    namespace: &str,
    values: &[&Path],
    sets: &[(&str, &str)],
) -> Result<String, ChartError> {
    let mut cmd = Command::new(helm);
    cmd.arg("template")
        .arg("tabby")
        .arg(chart_dir())
        .args(["--namespace", namespace]);
    for v in values {
        cmd.arg("--values").arg(v);
    }
    for (k, v) in sets {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    let out = cmd.output().map_err(|source| ChartError::Spawn {
        helm: helm.display().to_string(),
        source,
    })?;
    if !out.status.success() {
        return Err(ChartError::Helm(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The chart rendered with `--set` pairs in `namespace`, as documents.
pub fn render(
    helm: &Path,
    namespace: &str,
    sets: &[(&str, &str)],
) -> Result<Vec<Value>, ChartError> {
    parse_documents(&helm_template(helm, namespace, &[], sets)?)
}

/// Splits a multi-document YAML text into JSON values, skipping empty documents.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, ChartError> {
    let mut docs = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v: serde_yaml::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| ChartError::Yaml {
                index,
                reason: e.to_string(),
            })?;
        let v: Value = serde_json::to_value(v).map_err(|e| ChartError::Yaml {
            index,
            reason: e.to_string(),
        })?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// `kind` of a document.
pub fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

/// `metadata.name` of a document.
pub fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

/// Documents of one kind.
pub fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

/// One permission, as the audit compares them.
pub type Grant = (Scope, String, String, Verb);

/// Why a rendered RBAC object cannot be audited (each is itself a finding: the chart must
/// not contain it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RbacError {
    /// `*` in verbs, apiGroups or resources grants more than any declared list.
    #[error("{role}: wildcard {what} in a rule")]
    Wildcard {
        /// The (Cluster)Role.
        role: String,
        /// Which field.
        what: &'static str,
    },
    /// A verb no component declares (`deletecollection`, `escalate`, `bind`, …).
    #[error("{role}: verb {verb:?} is never needed")]
    UnknownVerb {
        /// The (Cluster)Role.
        role: String,
        /// The verb.
        verb: String,
    },
    /// `nonResourceURLs` rules: no component calls non-resource paths.
    #[error("{role}: nonResourceURLs are never needed")]
    NonResource {
        /// The (Cluster)Role.
        role: String,
    },
    /// A binding names a role that is not rendered.
    #[error("binding {binding} refers to {kind} {role}, which the chart does not render")]
    MissingRole {
        /// The binding.
        binding: String,
        /// `Role` or `ClusterRole`.
        kind: String,
        /// The role name.
        role: String,
    },
    /// A Role or RoleBinding outside the release namespace.
    #[error("{what} {name} is in namespace {namespace:?}, not the release namespace")]
    ForeignNamespace {
        /// Kind.
        what: String,
        /// Name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rules_of(role: &Value) -> Result<BTreeSet<(String, String, Verb)>, RbacError> {
    let name = name(role).to_string();
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        if rule.get("nonResourceURLs").is_some() {
            return Err(RbacError::NonResource { role: name });
        }
        let groups = strings(&rule["apiGroups"]);
        let resources = strings(&rule["resources"]);
        let verbs = strings(&rule["verbs"]);
        for (what, list) in [
            ("apiGroup", &groups),
            ("resource", &resources),
            ("verb", &verbs),
        ] {
            if list.iter().any(|s| s.contains('*')) {
                return Err(RbacError::Wildcard {
                    role: name.clone(),
                    what,
                });
            }
        }
        for v in &verbs {
            let verb = Verb::parse(v).ok_or_else(|| RbacError::UnknownVerb {
                role: name.clone(),
                verb: v.to_string(),
            })?;
            for g in &groups {
                for r in &resources {
                    out.insert((g.to_string(), r.to_string(), verb));
                }
            }
        }
    }
    Ok(out)
}

/// Everything the ServiceAccount `namespace/service_account` is allowed by the rendered
/// bindings: ClusterRoleBindings give [`Scope::Cluster`]; RoleBindings (to a Role or a
/// ClusterRole) in the release namespace give [`Scope::OwnNamespace`].
pub fn granted(
    docs: &[Value],
    namespace: &str,
    service_account: &str,
) -> Result<BTreeSet<Grant>, RbacError> {
    let mut out = BTreeSet::new();
    for doc in docs {
        let binding_kind = kind(doc);
        if binding_kind != "ClusterRoleBinding" && binding_kind != "RoleBinding" {
            continue;
        }
        let binds_us = doc["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount"
                && s["name"] == service_account
                && s["namespace"] == namespace
        });
        if !binds_us {
            continue;
        }
        let binding_ns = doc["metadata"]["namespace"].as_str().unwrap_or("");
        let scope = if binding_kind == "ClusterRoleBinding" {
            Scope::Cluster
        } else if binding_ns == namespace {
            Scope::OwnNamespace
        } else {
            return Err(RbacError::ForeignNamespace {
                what: binding_kind.into(),
                name: name(doc).into(),
                namespace: binding_ns.into(),
            });
        };
        let role_kind = doc["roleRef"]["kind"].as_str().unwrap_or("");
        let role_name = doc["roleRef"]["name"].as_str().unwrap_or("");
        let role = docs
            .iter()
            .find(|d| {
                kind(d) == role_kind
                    && name(d) == role_name
                    && (role_kind == "ClusterRole"
                        || d["metadata"]["namespace"].as_str() == Some(binding_ns))
            })
            .ok_or_else(|| RbacError::MissingRole {
                binding: name(doc).into(),
                kind: role_kind.into(),
                role: role_name.into(),
            })?;
        for (g, r, v) in rules_of(role)? {
            out.insert((scope, g, r, v));
        }
    }
    Ok(out)
}

/// The audit's finding: what the declared calls need that the roles do not allow, and what
/// the roles allow that no call needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Declared calls not allowed.
    pub missing: Vec<String>,
    /// Allowed but never called.
    pub extra: Vec<String>,
}

impl Audit {
    /// Nothing missing, nothing extra.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty()
    }
}

/// Compares a component's declared calls with what its roles grant.
pub fn audit(declared: &[ApiCall], granted: &BTreeSet<Grant>) -> Audit {
    let want: BTreeSet<Grant> = declared
        .iter()
        .map(|c| (c.scope, c.group.to_string(), c.rbac_resource(), c.verb))
        .collect();
    let show = |(s, g, r, v): &Grant| {
        let g = if g.is_empty() { "core" } else { g };
        let s = match s {
            Scope::Cluster => "cluster",
            Scope::OwnNamespace => "own namespace",
        };
        format!("{v} {g}/{r} ({s})")
    };
    Audit {
        missing: declared
            .iter()
            .filter(|c| {
                !granted.contains(&(c.scope, c.group.to_string(), c.rbac_resource(), c.verb))
            })
            .map(|c| format!("{c} — needed for: {}", c.why))
            .collect(),
        extra: granted.difference(&want).map(show).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sa_binding(kind: &str, ns: Option<&str>, role_kind: &str, role: &str) -> Value {
        let mut b = json!({
            "kind": kind,
            "metadata": {"name": format!("{kind}-{role}")},
            "roleRef": {"kind": role_kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}],
        });
        if let Some(ns) = ns {
            b["metadata"]["namespace"] = json!(ns);
        }
        b
    }

    fn role(kind: &str, name: &str, ns: Option<&str>, rules: Value) -> Value {
        let mut r = json!({"kind": kind, "metadata": {"name": name}, "rules": rules});
        if let Some(ns) = ns {
            r["metadata"]["namespace"] = json!(ns);
        }
        r
    }

    const POD_GET: ApiCall = ApiCall::new(Verb::Get, "", "pods", None, Scope::Cluster, "test");
    const BLOCK_STATUS: ApiCall = ApiCall::new(
        Verb::Update,
        "tabby.dev",
        "ipamblocks",
        Some("status"),
        Scope::Cluster,
        "test",
    );
    const LEASE_GET: ApiCall = ApiCall::new(
        Verb::Get,
        "coordination.k8s.io",
        "leases",
        None,
        Scope::OwnNamespace,
        "test",
    );

    #[test]
    fn exact_grants_pass_and_differences_are_named() {
        let docs = vec![
            role(
                "ClusterRole",
                "c",
                None,
                json!([
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                    {"apiGroups": ["tabby.dev"], "resources": ["ipamblocks/status"], "verbs": ["update"]},
                ]),
            ),
            sa_binding("ClusterRoleBinding", None, "ClusterRole", "c"),
            role(
                "Role",
                "r",
                Some("ns"),
                json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]),
            ),
            sa_binding("RoleBinding", Some("ns"), "Role", "r"),
        ];
        let g = granted(&docs, "ns", "sa").unwrap();
        assert!(audit(&[POD_GET, BLOCK_STATUS, LEASE_GET], &g).is_exact());
        // A declared call the roles lack is missing, naming why it is needed.
        let a = audit(&[POD_GET, LEASE_GET], &g);
        assert_eq!(a.missing, Vec::<String>::new());
        assert_eq!(
            a.extra,
            vec!["update tabby.dev/ipamblocks/status (cluster)"]
        );
        let a = audit(
            &[POD_GET, BLOCK_STATUS, LEASE_GET, {
                let mut c = POD_GET;
                c.verb = Verb::List;
                c
            }],
            &g,
        );
        assert_eq!(
            a.missing,
            vec!["list core/pods (cluster) — needed for: test"]
        );
        // Another ServiceAccount gets nothing.
        assert!(granted(&docs, "ns", "other").unwrap().is_empty());
        assert!(granted(&docs, "other-ns", "sa").unwrap().is_empty());
    }

    #[test]
    fn scope_follows_the_binding_not_the_role() {
        // A ClusterRole bound with a RoleBinding grants only in that namespace.
        let docs = vec![
            role(
                "ClusterRole",
                "c",
                None,
                json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]),
            ),
            sa_binding("RoleBinding", Some("ns"), "ClusterRole", "c"),
        ];
        let g = granted(&docs, "ns", "sa").unwrap();
        assert!(audit(&[LEASE_GET], &g).is_exact());
        let mut cluster_wide = LEASE_GET;
        cluster_wide.scope = Scope::Cluster;
        assert_eq!(audit(&[cluster_wide], &g).missing.len(), 1);
    }

    #[test]
    fn wildcards_unknown_verbs_and_strays_are_findings() {
        let cases = [
            (
                json!([{"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}]),
                "wildcard apiGroup",
            ),
            (
                json!([{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]),
                "wildcard resource",
            ),
            (
                json!([{"apiGroups": [""], "resources": ["pods/*"], "verbs": ["get"]}]),
                "wildcard resource",
            ),
            (
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}]),
                "wildcard verb",
            ),
            (
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["deletecollection"]}]),
                "never needed",
            ),
            (
                json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]),
                "nonResourceURLs",
            ),
        ];
        for (rules, want) in cases {
            let docs = vec![
                role("ClusterRole", "c", None, rules.clone()),
                sa_binding("ClusterRoleBinding", None, "ClusterRole", "c"),
            ];
            let e = granted(&docs, "ns", "sa").unwrap_err().to_string();
            assert!(e.contains(want), "{rules}: {e}");
        }
        let docs = vec![sa_binding(
            "ClusterRoleBinding",
            None,
            "ClusterRole",
            "gone",
        )];
        assert!(matches!(
            granted(&docs, "ns", "sa"),
            Err(RbacError::MissingRole { .. })
        ));
        let docs = vec![
            role("Role", "r", Some("elsewhere"), json!([])),
            sa_binding("RoleBinding", Some("elsewhere"), "Role", "r"),
        ];
        assert!(matches!(
            granted(&docs, "ns", "sa"),
            Err(RbacError::ForeignNamespace { .. })
        ));
    }

    #[test]
    fn documents_parse_and_empty_ones_are_skipped() {
        let docs = parse_documents("---\n# only a comment\n---\nkind: A\n---\nkind: B\n").unwrap();
        assert_eq!(docs.iter().map(kind).collect::<Vec<_>>(), ["A", "B"]);
        assert!(parse_documents("kind: [unclosed\n").is_err());
    }
}
