//! The catalogue of served resource types: the built-in ones Tabby and its clients use, and the ones
//! created from CustomResourceDefinitions.
//!
//! Owns resource identity (group, versions, plural, kind, scope, subresources) and per-type schema /
//! printer columns. Must not touch stored objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::cel_rules::CompiledRules;
use crate::error::{ApiError, Cause};

/// Where objects of one resource live, independent of the version they are served at
/// (the emulator stores one copy per object, as the real server does with `conversion: None`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct GroupResource {
    /// API group, empty for core.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// A group/resource pair.
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource {
            group: group.to_owned(),
            resource: resource.to_owned(),
        }
    }
}

/// One additionalPrinterColumn.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: String,
    /// Column format (`name` marks the name column).
    pub format: String,
    /// Description shown in the Table column definition.
    pub description: String,
    /// Priority (0 = shown by default).
    pub priority: i64,
    /// Simple JSONPath into the object.
    pub json_path: String,
}

/// Per-version data of a resource type.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    /// Version name (`v1`, `v1alpha1`).
    pub name: String,
    /// The `openAPIV3Schema` of a CRD version, if any.
    pub schema: Option<Arc<Value>>,
    /// Compiled `x-kubernetes-validations` of the schema.
    pub rules: Arc<CompiledRules>,
    /// Printer columns for `kubectl get`.
    pub columns: Vec<PrinterColumn>,
    /// Whether the `status` subresource is enabled.
    pub status: bool,
    /// Fields a `fieldSelector` may name besides `metadata.name`/`metadata.namespace`: a CRD
    /// version's `selectableFields` (`spec.node`, without the leading dot).
    pub selectable: Vec<String>,
}

/// A served resource type.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// Group and plural.
    pub gr: GroupResource,
    /// Kind (`IPPool`).
    pub kind: String,
    /// Singular name.
    pub singular: String,
    /// Short names (`ipp`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Served versions, preferred (storage) first.
    pub versions: Vec<VersionInfo>,
    /// Defined by a CRD (changes PUT/create semantics, see `crate::server`).
    pub custom: bool,
}

impl ResourceType {
    /// The version record for `version`, if served.
    pub fn version(&self, version: &str) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.name == version)
    }

    /// The storage version (first served).
    pub fn storage_version(&self) -> &str {
        self.versions
            .first()
            .map(|v| v.name.as_str())
            .unwrap_or("v1")
    }

    /// `apiVersion` string for a version.
    pub fn api_version(&self, version: &str) -> String {
        if self.gr.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.gr.group)
        }
    }

    /// Whether the status subresource is enabled (for any served version).
    pub fn has_status(&self) -> bool {
        self.versions.iter().any(|v| v.status)
    }

    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status: bool,
        short: &[&str],
    ) -> Self {
        ResourceType {
            gr: GroupResource::new(group, plural),
            kind: kind.to_owned(),
            singular: kind.to_lowercase(),
            short_names: short.iter().map(|s| (*s).to_owned()).collect(),
            categories: Vec::new(),
            namespaced,
            versions: vec![VersionInfo {
                name: version.to_owned(),
                schema: None,
                rules: Arc::new(CompiledRules::default()),
                columns: Vec::new(),
                status,
                selectable: Vec::new(),
            }],
            custom: false,
        }
    }
}

/// The built-in types the emulator serves.
pub fn builtins() -> Vec<ResourceType> {
    vec![
        ResourceType::builtin("", "v1", "namespaces", "Namespace", false, true, &["ns"]),
        ResourceType::builtin("", "v1", "nodes", "Node", false, true, &["no"]),
        ResourceType::builtin("", "v1", "pods", "Pod", true, true, &["po"]),
        ResourceType::builtin("", "v1", "secrets", "Secret", true, false, &[]),
        ResourceType::builtin("", "v1", "configmaps", "ConfigMap", true, false, &["cm"]),
        ResourceType::builtin("", "v1", "events", "Event", true, false, &["ev"]),
        ResourceType::builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            false,
            &["sa"],
        ),
        ResourceType::builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            false,
            &["ev"],
        ),
        ResourceType::builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            false,
            &[],
        ),
        ResourceType::builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            true,
            &["crd", "crds"],
        ),
    ]
}

/// Resource types indexed by group/resource.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: BTreeMap<GroupResource, Arc<ResourceType>>,
}

impl Registry {
    /// A registry holding the built-in types.
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        for t in builtins() {
            r.types.insert(t.gr.clone(), Arc::new(t));
        }
        r
    }

    /// Looks up a type served at `group/version` under `plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let t = self.types.get(&GroupResource::new(group, plural))?;
        t.version(version).map(|_| t.clone())
    }

    /// Looks up by group/resource regardless of version.
    pub fn get(&self, gr: &GroupResource) -> Option<Arc<ResourceType>> {
        self.types.get(gr).cloned()
    }

    /// Adds or replaces a type.
    pub fn insert(&mut self, t: ResourceType) {
        self.types.insert(t.gr.clone(), Arc::new(t));
    }

    /// Removes a type.
    pub fn remove(&mut self, gr: &GroupResource) {
        self.types.remove(gr);
    }

    /// All types.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// Groups with their versions (preferred first), for `/apis` discovery.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values() {
            let entry = out.entry(t.gr.group.clone()).or_default();
            for v in &t.versions {
                if !entry.contains(&v.name) {
                    entry.push(v.name.clone());
                }
            }
        }
        for versions in out.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }
}

/// Kubernetes version ordering: GA > beta > alpha, higher numbers first.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, major, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, major, n.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

/// Builds the resource type a CRD object declares, validating what the real server validates
/// that matters here (names, scope, versions, schema compilable, CEL rules compilable).
pub fn from_crd(crd: &Value) -> Result<ResourceType, Vec<Cause>> {
    let mut causes = Vec::new();
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let group = str_at(&spec, &["group"]).unwrap_or_default().to_owned();
    let plural = str_at(&spec, &["names", "plural"])
        .unwrap_or_default()
        .to_owned();
    let kind = str_at(&spec, &["names", "kind"])
        .unwrap_or_default()
        .to_owned();
    let name = str_at(crd, &["metadata", "name"]).unwrap_or_default();
    if group.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.group",
            "Required value",
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.plural",
            "Required value",
        ));
    }
    if kind.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.kind",
            "Required value",
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match str_at(&spec, &["scope"]) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            causes.push(Cause::new(
                "FieldValueNotSupported",
                "spec.scope",
                format!(
                    "Unsupported value: {:?}: supported values: \"Cluster\", \"Namespaced\"",
                    other.unwrap_or("")
                ),
            ));
            false
        }
    };
    let mut versions = Vec::new();
    let mut storage: Option<usize> = None;
    let list = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in list.iter().enumerate() {
        let vname = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if vname.is_empty() {
            causes.push(Cause::new(
                "FieldValueRequired",
                format!("spec.versions[{i}].name"),
                "Required value",
            ));
            continue;
        }
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            if storage.is_some() {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    "spec.versions",
                    "Invalid value: must have exactly one version marked as storage version",
                ));
            }
            storage = Some(versions.len());
        }
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        let rules = match &schema {
            Some(s) => match crate::cel_rules::compile(s) {
                Ok(r) => r,
                Err(mut errs) => {
                    for c in &mut errs {
                        c.field = format!("spec.versions[{i}].schema.openAPIV3Schema{}", c.field);
                    }
                    causes.extend(errs);
                    CompiledRules::default()
                }
            },
            None => CompiledRules::default(),
        };
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        type_: c
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("string")
                            .to_owned(),
                        format: c
                            .get("format")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        description: c
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: c
                            .get("jsonPath")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let selectable = v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|fields| {
                fields
                    .iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        versions.push(VersionInfo {
            name: vname,
            schema: schema.map(Arc::new),
            rules: Arc::new(rules),
            columns,
            status: v.pointer("/subresources/status").is_some(),
            selectable,
        });
    }
    if storage.is_none() && !list.is_empty() {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    if let Some(s) = storage.filter(|s| *s < versions.len()) {
        let sv = versions.remove(s);
        versions.insert(0, sv);
    }
    let names = spec.get("names").cloned().unwrap_or(Value::Null);
    let strings = |key: &str| -> Vec<String> {
        names
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(ResourceType {
        gr: GroupResource::new(&group, &plural),
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| kind.to_lowercase()),
        kind,
        short_names: strings("shortNames"),
        categories: strings("categories"),
        namespaced,
        versions,
        custom: true,
    })
}

/// Error for a CRD that fails [`from_crd`].
pub fn crd_invalid(crd: &Value, causes: Vec<Cause>) -> ApiError {
    let name = str_at(crd, &["metadata", "name"]).unwrap_or_default();
    ApiError::invalid(
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        name,
        causes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn version_order_prefers_ga_then_beta_then_alpha() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "v2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }

    #[test]
    fn crd_name_must_match_plural_and_group() {
        let crd = json!({"metadata": {"name": "wrong"}, "spec": {"group": "tabby.dev", "scope": "Cluster",
            "names": {"plural": "ippools", "kind": "IPPool"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true}]}});
        let err = from_crd(&crd).unwrap_err();
        assert_eq!(err[0].field, "metadata.name");
    }

    #[test]
    fn crd_storage_version_is_first() {
        let crd = json!({"metadata": {"name": "ippools.tabby.dev"}, "spec": {"group": "tabby.dev", "scope": "Cluster",
            "names": {"plural": "ippools", "kind": "IPPool", "shortNames": ["ipp"]},
            "versions": [{"name": "v1alpha1", "served": true, "storage": false},
                         {"name": "v1beta1", "served": true, "storage": true, "subresources": {"status": {}}}]}});
        let t = from_crd(&crd).unwrap();
        assert_eq!(t.storage_version(), "v1beta1");
        assert!(t.has_status());
        assert_eq!(t.short_names, vec!["ipp"]);
        assert!(!t.namespaced);
    }
}
