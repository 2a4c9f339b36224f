//! Read-only renderings: discovery documents, server-side `Table` output with printer columns, and
//! the small JSONPath subset printer columns use.
//!
//! Pure functions over the registry and objects.

use serde_json::{Value, json};

use crate::resources::{Registry, ResourceType};

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-tabby-kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

/// `/apis`.
pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, if the group exists.
pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    let groups = reg.groups();
    let vs = groups.get(name).filter(|_| !name.is_empty())?;
    let mut g = group_json(name, vs);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in reg.all().filter(|t| t.gr.group == group) {
        let Some(v) = t.version(version) else {
            continue;
        };
        let mut verbs = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        if t.gr.resource == "events" || t.gr.resource == "namespaces" {
            verbs.retain(|v| *v != "deletecollection" || t.gr.resource == "events");
        }
        let mut r = json!({
            "name": t.gr.resource,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": verbs,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if v.status {
            resources.push(json!({
                "name": format!("{}/status", t.gr.resource),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// `/openapi/v3`: one entry per served group-version. The emulator publishes OpenAPI v3 only so
/// far as clients need it to discover that the server validates fields itself (`fieldValidation`);
/// it serves no schemas (see the README).
pub fn openapi_v3_root(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (group, versions) in reg.groups() {
        for v in versions {
            let key = if group.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{group}/{v}")
            };
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", reg_hash(reg))}),
            );
        }
    }
    json!({"paths": paths})
}

fn reg_hash(reg: &Registry) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in reg.all() {
        t.gr.hash(&mut h);
        for v in &t.versions {
            v.name.hash(&mut h);
        }
    }
    format!("{:016X}", h.finish())
}

/// `/openapi/v3/<api/v1 | apis/g/v>`: per resource, the object path with its PATCH operation
/// tagged with `x-kubernetes-group-version-kind` and the `fieldValidation` query parameter, which
/// is what kubectl checks before relying on server-side field validation.
pub fn openapi_v3_group_version(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for t in reg
        .all()
        .filter(|t| t.gr.group == group && t.version(version).is_some())
    {
        let gvk = json!({"group": group, "version": version, "kind": t.kind});
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}
        ]);
        let op = |id: &str| json!({"operationId": format!("{id}{}", t.kind), "parameters": params, "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}});
        let item = if t.namespaced {
            format!(
                "{prefix}/namespaces/{{namespace}}/{}/{{name}}",
                t.gr.resource
            )
        } else {
            format!("{prefix}/{}/{{name}}", t.gr.resource)
        };
        paths.insert(item, json!({"get": op("read"), "put": op("replace"), "patch": op("patch"), "delete": op("delete")}));
        let coll = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.gr.resource)
        } else {
            format!("{prefix}/{}", t.gr.resource)
        };
        paths.insert(coll, json!({"get": op("list"), "post": op("create")}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": {}}}),
    )
}

/// One step of a printer-column JSONPath.
#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    All,
    Filter(String, String),
}

fn parse_path(path: &str) -> Option<Vec<Step>> {
    let p = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut steps = Vec::new();
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Key(r[..end].to_owned()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse::<usize>() {
                steps.push(Step::Index(i));
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (k, v) = f.split_once("==")?;
                let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                steps.push(Step::Filter(k.trim().to_owned(), v.to_owned()));
            } else {
                let key = inner.trim_matches(|c| c == '"' || c == '\'');
                steps.push(Step::Key(key.to_owned()));
            }
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Key(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    Some(steps)
}

/// Evaluates a simple JSONPath (`.a.b`, `[0]`, `[*]`, `[?(@.k=="v")]`) and returns the matches.
pub fn jsonpath<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse_path(path) else {
        return Vec::new();
    };
    let mut cur = vec![obj];
    for s in &steps {
        let mut next = Vec::new();
        for v in cur {
            match s {
                Step::Key(k) => next.extend(v.get(k)),
                Step::Index(i) => next.extend(v.get(*i)),
                Step::All => {
                    if let Some(a) = v.as_array() {
                        next.extend(a.iter());
                    }
                }
                Step::Filter(k, want) => {
                    if let Some(a) = v.as_array() {
                        next.extend(a.iter().filter(|item| {
                            item.get(k).is_some_and(|x| match x {
                                Value::String(s) => s == want,
                                other => {
                                    *other
                                        == serde_json::from_str::<Value>(want)
                                            .unwrap_or(Value::Null)
                                }
                            })
                        }));
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

/// Age formatting as the real server renders `date` columns (`k8s.io/apimachinery` HumanDuration).
pub fn human_duration(secs: i64) -> String {
    if secs < 0 {
        return "<invalid>".into();
    }
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        let y = d / 365;
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    }
}

fn age_cell(v: Option<&Value>, now: jiff::Timestamp) -> Value {
    match v
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => json!(human_duration(now.as_second() - t.as_second())),
        None => Value::Null,
    }
}

/// Server-side `Table` for a list of objects (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`).
pub fn table(
    rt: &ResourceType,
    version: &str,
    objects: &[&Value],
    rv: &str,
    include: &str,
    now: jiff::Timestamp,
) -> Value {
    let cols = rt
        .version(version)
        .map(|v| v.columns.clone())
        .unwrap_or_default();
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    let custom = !cols.is_empty();
    if custom {
        for c in &cols {
            defs.push(json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}));
        }
    } else {
        defs.push(json!({"name": "Age", "type": "date", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            if custom {
                for c in &cols {
                    let found = jsonpath(o, &c.json_path);
                    let cell = match c.type_.as_str() {
                        "date" => age_cell(found.first().copied(), now),
                        "integer" | "number" | "boolean" => found.first().map(|v| (*v).clone()).unwrap_or(Value::Null),
                        _ => match found.first() {
                            None => Value::Null,
                            Some(Value::String(s)) => json!(s),
                            Some(other) => json!(other.to_string()),
                        },
                    };
                    cells.push(cell);
                }
            } else {
                cells.push(age_cell(o.pointer("/metadata/creationTimestamp"), now));
            }
            let object = match include {
                "None" => Value::Null,
                "Object" => (*o).clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))}),
            };
            let mut row = json!({"cells": cells});
            if !object.is_null() {
                row["object"] = object;
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Full", "status": "False"}]},
            "spec": {"cidrs": ["a", "b"], "n": 3}});
        assert_eq!(jsonpath(&o, ".spec.n"), vec![&json!(3)]);
        assert_eq!(jsonpath(&o, "{.spec.cidrs[1]}"), vec![&json!("b")]);
        assert_eq!(jsonpath(&o, ".spec.cidrs[*]").len(), 2);
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type==\"Full\")].status"),
            vec![&json!("False")]
        );
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type=='Ready')].status"),
            vec![&json!("True")]
        );
        assert!(jsonpath(&o, ".spec.missing.deeper").is_empty());
    }

    #[test]
    fn human_durations_match_apimachinery() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s}s");
        }
    }
}
