//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Implemented semantics (documented in the README):
//! - Ownership is tracked per leaf field path; lists are atomic (owned and replaced whole), maps
//!   are granular. `x-kubernetes-list-type: map` granularity is not modelled.
//! - Update operations (PUT, merge/JSON/strategic patches) give their manager the fields they
//!   changed and take those fields away from every other manager.
//! - Apply merges the applied configuration into the live object, removes fields this manager
//!   applied before and no longer applies (unless another manager also owns them), and reports a
//!   409 `FieldManagerConflict` for each applied field that another manager owns with a different
//!   value. With `force=true` the conflicting fields change owner instead. Equal values are shared.
//!
//! Pure functions over JSON; must not touch storage.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::{ApiError, Cause};

/// A field path, one key per level.
pub type Path = Vec<String>;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Manager {
    /// Field manager name.
    pub name: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `""` or `status`.
    pub subresource: String,
    /// apiVersion the manager used.
    pub api_version: String,
    /// RFC 3339 time of the last change.
    pub time: String,
    /// Owned leaf paths.
    pub fields: BTreeSet<Path>,
}

const META_TRACKED: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

/// Leaf paths of `v` (non-empty maps are descended, everything else is a leaf). At the root only
/// `spec`-like fields and the tracked metadata fields count.
pub fn leaf_paths(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    if let Value::Object(m) = v {
        for (k, child) in m {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    if let Value::Object(meta) = child {
                        for t in META_TRACKED {
                            if let Some(x) = meta.get(t) {
                                let base = vec!["metadata".to_owned(), t.to_owned()];
                                if t == "labels" || t == "annotations" {
                                    walk(x, base, &mut out);
                                } else {
                                    out.insert(base);
                                }
                            }
                        }
                    }
                }
                _ => walk(child, vec![k.clone()], &mut out),
            }
        }
    }
    out
}

fn walk(v: &Value, prefix: Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let mut p = prefix.clone();
                p.push(k.clone());
                walk(c, p, out);
            }
        }
        _ => {
            out.insert(prefix);
        }
    }
}

/// The value at a path.
pub fn get_path<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    p.iter().try_fold(v, |cur, k| cur.get(k))
}

fn remove_path(v: &mut Value, p: &[String]) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(last);
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Renders a path as the real server does in conflict messages: `.spec.cidr`.
pub fn show_path(p: &[String]) -> String {
    p.iter().map(|k| format!(".{k}")).collect()
}

/// Reads `metadata.managedFields`.
pub fn decode(obj: &Value) -> Vec<Manager> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let mut fields = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                decode_fields(f, Vec::new(), &mut fields);
            }
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            Manager {
                name: s("manager"),
                operation: s("operation"),
                subresource: s("subresource"),
                api_version: s("apiVersion"),
                time: s("time"),
                fields,
            }
        })
        .collect()
}

fn decode_fields(v: &Value, prefix: Path, out: &mut BTreeSet<Path>) {
    let Value::Object(m) = v else { return };
    let children: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| k.starts_with("f:")).collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix);
        }
        return;
    }
    for (k, c) in children {
        let mut p = prefix.clone();
        p.push(k[2..].to_owned());
        decode_fields(c, p, out);
    }
}

fn encode_fields(fields: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in fields {
        let mut cur = &mut root;
        for k in p {
            let entry = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            match entry {
                Value::Object(m) => cur = m,
                _ => break,
            }
        }
    }
    Value::Object(root)
}

/// Writes `managers` into `metadata.managedFields` (dropping managers that own nothing).
pub fn encode(obj: &mut Value, managers: &[Manager]) {
    let list: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.name,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode_fields(&m.fields),
            });
            if !m.subresource.is_empty() {
                e["subresource"] = json!(m.subresource);
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Scope of a write: which part of the object a subresource may touch.
fn in_scope(p: &[String], subresource: &str, has_status: bool) -> bool {
    let is_status = p.first().is_some_and(|k| k == "status");
    match subresource {
        "status" => is_status,
        _ => !(has_status && is_status),
    }
}

/// Records an Update-operation write by `manager`: it now owns the fields that differ between
/// `old` and `new`, and other managers lose them.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    api_version: &str,
    now: &str,
) {
    let mut managers = old.map(decode).unwrap_or_default();
    let new_paths = leaf_paths(new);
    let changed: BTreeSet<Path> = new_paths
        .iter()
        .filter(|p| old.and_then(|o| get_path(o, p)) != get_path(new, p))
        .cloned()
        .collect();
    let removed: BTreeSet<Path> = old
        .map(leaf_paths)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| get_path(new, p).is_none())
        .collect();
    if changed.is_empty() && removed.is_empty() {
        encode(new, &managers);
        return;
    }
    for m in managers.iter_mut() {
        m.fields
            .retain(|f| !changed.iter().chain(removed.iter()).any(|c| overlaps(c, f)));
    }
    let idx = managers
        .iter()
        .position(|m| m.name == manager && m.operation == "Update" && m.subresource == subresource);
    let entry = match idx {
        Some(i) => &mut managers[i],
        None => {
            managers.push(Manager {
                name: manager.to_owned(),
                operation: "Update".into(),
                subresource: subresource.to_owned(),
                api_version: api_version.to_owned(),
                time: now.to_owned(),
                fields: BTreeSet::new(),
            });
            let last = managers.len() - 1;
            &mut managers[last]
        }
    };
    entry.fields.extend(changed);
    entry.time = now.to_owned();
    entry.api_version = api_version.to_owned();
    encode(new, &managers);
}

/// Request parameters of an apply.
pub struct ApplyRequest<'a> {
    /// Field manager (required).
    pub manager: &'a str,
    /// `force=true`.
    pub force: bool,
    /// `""` or `status`.
    pub subresource: &'a str,
    /// Whether the type has a status subresource (status is out of the main resource's scope).
    pub has_status: bool,
    /// apiVersion of the request.
    pub api_version: &'a str,
    /// Timestamp for the managedFields entry.
    pub now: &'a str,
}

/// Server-side apply of `config` onto `live` (None: the object is created). Returns the merged
/// object with updated `managedFields`.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    req: &ApplyRequest<'_>,
) -> Result<Value, ApiError> {
    let mut managers = live.map(decode).unwrap_or_default();
    let new_paths: BTreeSet<Path> = leaf_paths(config)
        .into_iter()
        .filter(|p| in_scope(p, req.subresource, req.has_status))
        .collect();
    let mut result = live.cloned().unwrap_or_else(|| json!({}));
    if let Some(live) = live {
        let mut conflicts = Vec::new();
        let mut steal: Vec<(usize, Path)> = Vec::new();
        for (i, m) in managers.iter().enumerate() {
            if m.name == req.manager && m.subresource == req.subresource {
                continue;
            }
            for owned in &m.fields {
                for p in new_paths.iter().filter(|p| overlaps(p, owned)) {
                    if get_path(live, p) != get_path(config, p) {
                        let using = if m.operation == "Update" {
                            format!(" using {}", m.api_version)
                        } else {
                            String::new()
                        };
                        conflicts.push(Cause::new(
                            "FieldManagerConflict",
                            show_path(p),
                            format!("conflict with \"{}\"{using}", m.name),
                        ));
                        steal.push((i, owned.clone()));
                    }
                }
            }
        }
        if !conflicts.is_empty() && !req.force {
            conflicts.dedup();
            return Err(ApiError::apply_conflict(conflicts));
        }
        for (i, p) in steal {
            if let Some(m) = managers.get_mut(i) {
                m.fields.remove(&p);
            }
        }
        // Fields this manager applied before and no longer applies are removed, unless shared.
        let previous: BTreeSet<Path> = managers
            .iter()
            .filter(|m| {
                m.name == req.manager && m.operation == "Apply" && m.subresource == req.subresource
            })
            .flat_map(|m| m.fields.iter().cloned())
            .collect();
        for p in previous.difference(&new_paths) {
            let shared = managers.iter().any(|m| {
                !(m.name == req.manager
                    && m.operation == "Apply"
                    && m.subresource == req.subresource)
                    && m.fields.iter().any(|f| overlaps(f, p))
            });
            if !shared && !new_paths.iter().any(|n| overlaps(n, p)) {
                remove_path(&mut result, p);
            }
        }
    }
    deep_merge(&mut result, config, req);
    let idx = managers.iter().position(|m| {
        m.name == req.manager && m.operation == "Apply" && m.subresource == req.subresource
    });
    let entry = Manager {
        name: req.manager.to_owned(),
        operation: "Apply".into(),
        subresource: req.subresource.to_owned(),
        api_version: req.api_version.to_owned(),
        time: req.now.to_owned(),
        fields: new_paths,
    };
    match idx {
        Some(i) => managers[i] = entry,
        None => managers.push(entry),
    }
    encode(&mut result, &managers);
    Ok(result)
}

fn deep_merge(target: &mut Value, config: &Value, req: &ApplyRequest<'_>) {
    let (Value::Object(t), Value::Object(c)) = (&mut *target, config) else {
        *target = config.clone();
        return;
    };
    for (k, v) in c {
        if k == "metadata" {
            let meta = t.entry("metadata").or_insert_with(|| json!({}));
            if let (Value::Object(tm), Value::Object(cm)) = (meta, v) {
                for (mk, mv) in cm {
                    if mk == "managedFields" || mk == "resourceVersion" {
                        continue;
                    }
                    match (tm.get_mut(mk), mv) {
                        (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                            merge_plain(existing, mv)
                        }
                        _ => {
                            tm.insert(mk.clone(), mv.clone());
                        }
                    }
                }
            }
            continue;
        }
        if !in_scope(std::slice::from_ref(k), req.subresource, req.has_status)
            && k != "apiVersion"
            && k != "kind"
        {
            continue;
        }
        match t.get_mut(k) {
            Some(existing @ Value::Object(_)) if v.is_object() => merge_plain(existing, v),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_plain(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing @ Value::Object(_)) if v.is_object() => merge_plain(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(manager: &'a str, force: bool) -> ApplyRequest<'a> {
        ApplyRequest {
            manager,
            force,
            subresource: "",
            has_status: true,
            api_version: "tabby.dev/v1alpha1",
            now: "2026-01-01T00:00:00Z",
        }
    }

    #[test]
    fn create_then_reapply_removes_dropped_fields() {
        let cfg = json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"a": 1, "b": 2}});
        let obj = apply(None, &cfg, &req("ctl", false)).unwrap();
        assert_eq!(obj["spec"], json!({"a": 1, "b": 2}));
        let m = decode(&obj);
        assert_eq!(m.len(), 1);
        assert!(
            m[0].fields
                .contains(&vec!["spec".to_owned(), "b".to_owned()])
        );
        assert!(m[0].fields.contains(&vec![
            "metadata".to_owned(),
            "labels".to_owned(),
            "x".to_owned()
        ]));
        let cfg2 =
            json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "a"}, "spec": {"a": 1}});
        let obj2 = apply(Some(&obj), &cfg2, &req("ctl", false)).unwrap();
        assert_eq!(obj2["spec"], json!({"a": 1}));
        assert!(obj2.pointer("/metadata/labels/x").is_none());
    }

    #[test]
    fn conflicting_managers_and_force() {
        let a = apply(
            None,
            &json!({"metadata": {"name": "a"}, "spec": {"x": 1}}),
            &req("alice", false),
        )
        .unwrap();
        // Same value: shared ownership, no conflict.
        let shared = apply(
            Some(&a),
            &json!({"metadata": {"name": "a"}, "spec": {"x": 1}}),
            &req("bob", false),
        )
        .unwrap();
        assert_eq!(decode(&shared).len(), 2);
        // Different value: conflict naming alice.
        let err = apply(
            Some(&a),
            &json!({"metadata": {"name": "a"}, "spec": {"x": 2}}),
            &req("bob", false),
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.causes[0].field, ".spec.x");
        assert_eq!(err.causes[0].message, "conflict with \"alice\"");
        // Force: bob takes the field; alice loses it.
        let forced = apply(
            Some(&a),
            &json!({"metadata": {"name": "a"}, "spec": {"x": 2}}),
            &req("bob", true),
        )
        .unwrap();
        assert_eq!(forced["spec"]["x"], 2);
        let ms = decode(&forced);
        assert!(
            ms.iter().all(|m| m.name != "alice"),
            "alice owned nothing and was dropped: {ms:?}"
        );
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let a = apply(
            None,
            &json!({"metadata": {"name": "a"}, "spec": {"x": 1, "y": 1}}),
            &req("alice", false),
        )
        .unwrap();
        let mut b = a.clone();
        b["spec"]["x"] = json!(5);
        record_update(Some(&a), &mut b, "editor", "", "v1", "t");
        let ms = decode(&b);
        let editor = ms.iter().find(|m| m.name == "editor").unwrap();
        assert_eq!(editor.operation, "Update");
        assert!(
            editor
                .fields
                .contains(&vec!["spec".to_owned(), "x".to_owned()])
        );
        let err = apply(
            Some(&b),
            &json!({"metadata": {"name": "a"}, "spec": {"x": 1, "y": 1}}),
            &req("alice", false),
        )
        .unwrap_err();
        assert_eq!(err.causes[0].message, "conflict with \"editor\" using v1");
    }

    #[test]
    fn status_scope_is_separate() {
        let mut r = req("agent", false);
        r.subresource = "status";
        let obj = apply(
            Some(&json!({"metadata": {"name": "a"}, "spec": {"x": 1}})),
            &json!({"metadata": {"name": "a"}, "spec": {"x": 9}, "status": {"ok": true}}),
            &r,
        )
        .unwrap();
        assert_eq!(obj["spec"]["x"], 1, "status apply must not touch spec");
        assert_eq!(obj["status"]["ok"], true);
    }

    #[test]
    fn fields_v1_roundtrip() {
        let mut fields = BTreeSet::new();
        fields.insert(vec!["spec".to_owned(), "a".to_owned()]);
        fields.insert(vec![
            "metadata".to_owned(),
            "labels".to_owned(),
            "k".to_owned(),
        ]);
        let enc = encode_fields(&fields);
        assert_eq!(
            enc,
            json!({"f:spec": {"f:a": {}}, "f:metadata": {"f:labels": {"f:k": {}}}})
        );
        let mut back = BTreeSet::new();
        decode_fields(&enc, Vec::new(), &mut back);
        assert_eq!(back, fields);
    }
}
