//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902, including `test`), and
//! strategic merge patch for the core types our components and kubectl touch.
//!
//! Pure functions over JSON. Server-side apply lives in `crate::apply`.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// RFC 7386 merge patch (null deletes, objects merge recursively, everything else replaces).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// RFC 6902 JSON patch. A failed operation (including a failed `test`) is a 422, as on the real
/// server; a body that is not a patch array is a 400.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    // Operations run one by one on a copy, so a failure leaves the target untouched. As in the
    // real server's JSON patch library, `test` of a missing path against `null` succeeds (kube's
    // finalizer helper relies on it).
    let mut work = target.clone();
    for op in p.0 {
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && work.pointer(&t.path.to_string()).is_none()
        {
            continue;
        }
        json_patch::patch(&mut work, &[op]).map_err(|e| {
            let mut err = ApiError::invalid("", "", "", Vec::new());
            err.message =
                format!("the server rejected our request due to an error in our request: {e}");
            err.details = None;
            err
        })?;
    }
    *target = work;
    Ok(())
}

/// Merge keys of the lists our components and kubectl patch strategically
/// (`patchMergeKey` in the Kubernetes API types). Lists not named here are replaced whole, as for
/// fields without a patch strategy.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "conditions" => "type",
        "addresses" => "type",
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "ports" => "containerPort",
        "ownerReferences" => "uid",
        "tolerations" => "key",
        "taints" => "key",
        _ => return None,
    })
}

/// Fields whose primitive lists merge (`patchStrategy: merge` on a list of strings).
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge patch for built-in types. Supports `$patch: replace|delete` on maps,
/// `$patch: delete` items in keyed lists, `$deleteFromPrimitiveList/<field>` and ignores
/// `$setElementOrder/<field>` and `$retainKeys` (ordering and retainKeys are not modelled).
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let Value::Object(pm) = patch else {
        return Err(ApiError::bad_request(
            "strategic merge patch must be a JSON object",
        ));
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(tm) = target else {
        return Ok(());
    };
    merge_maps(tm, pm)
}

fn merge_maps(tm: &mut Map<String, Value>, pm: &Map<String, Value>) -> Result<(), ApiError> {
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            tm.clear();
            for (k, v) in pm {
                if k != "$patch" {
                    tm.insert(k.clone(), v.clone());
                }
            }
            return Ok(());
        }
        Some("delete") => {
            tm.clear();
            return Ok(());
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown patch type {other:?}"
            )));
        }
        None => {}
    }
    for (k, pv) in pm {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (tm.get_mut(field), pv) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        match (tm.get_mut(k), pv) {
            (Some(Value::Object(t)), Value::Object(p)) => merge_maps(t, p)?,
            (Some(Value::Array(t)), Value::Array(p)) => {
                if let Some(key) = merge_key(k) {
                    merge_keyed_list(t, p, key)?;
                } else if merges_primitives(k) {
                    for item in p {
                        if !t.contains(item) {
                            t.push(item.clone());
                        }
                    }
                } else {
                    *t = p.clone();
                }
            }
            _ => {
                let mut v = pv.clone();
                strip_directives(&mut v);
                tm.insert(k.clone(), v);
            }
        }
    }
    Ok(())
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => {
            a.retain(|x| x.get("$patch").and_then(Value::as_str) != Some("delete"));
            a.iter_mut().for_each(strip_directives);
        }
        _ => {}
    }
}

fn merge_keyed_list(target: &mut Vec<Value>, patch: &[Value], key: &str) -> Result<(), ApiError> {
    for item in patch {
        let Some(kv) = item.get(key) else {
            return Err(ApiError::bad_request(format!(
                "map in list is missing the merge key {key:?}"
            )));
        };
        let pos = target.iter().position(|t| t.get(key) == Some(kv));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                target.remove(i);
            }
            continue;
        }
        match (pos, item) {
            (Some(i), Value::Object(p)) => {
                if let Some(Value::Object(t)) = target.get_mut(i) {
                    merge_maps(t, p)?;
                }
            }
            _ => {
                let mut v = item.clone();
                strip_directives(&mut v);
                target.push(v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        // RFC 7386 Appendix A, a selection.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
        ];
        for (mut t, p, want) in cases {
            merge_patch(&mut t, &p);
            assert_eq!(t, want);
        }
    }

    #[test]
    fn json_patch_with_test_op() {
        let mut v = json!({"metadata": {"resourceVersion": "5"}, "spec": {"x": 1}});
        json_patch(&mut v, &json!([{"op": "test", "path": "/spec/x", "value": 1}, {"op": "replace", "path": "/spec/x", "value": 2}])).unwrap();
        assert_eq!(v["spec"]["x"], 2);
        let err = json_patch(&mut v, &json!([{"op": "test", "path": "/spec/x", "value": 1}, {"op": "replace", "path": "/spec/x", "value": 3}])).unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            v["spec"]["x"], 2,
            "failed patch must not be partially applied"
        );
        assert_eq!(
            json_patch(&mut v, &json!({"op": "add"})).unwrap_err().code,
            400
        );
    }

    #[test]
    fn strategic_merge_keyed_lists() {
        let mut node = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "NetworkUnavailable", "status": "True"}
        ]}, "metadata": {"finalizers": ["a"]}});
        strategic_merge(
            &mut node,
            &json!({"status": {"conditions": [
            {"type": "NetworkUnavailable", "status": "False", "reason": "TabbyIsUp"}
        ]}, "metadata": {"finalizers": ["b"]}}),
        )
        .unwrap();
        assert_eq!(
            node["status"]["conditions"][0],
            json!({"type": "Ready", "status": "False"})
        );
        assert_eq!(node["status"]["conditions"][1]["reason"], "TabbyIsUp");
        assert_eq!(node["metadata"]["finalizers"], json!(["a", "b"]));
        strategic_merge(
            &mut node,
            &json!({"status": {"conditions": [{"type": "Ready", "$patch": "delete"}]},
            "$deleteFromPrimitiveList/finalizers": ["a"]}),
        )
        .unwrap();
        assert_eq!(
            node["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn strategic_merge_map_directives() {
        let mut v = json!({"spec": {"a": 1, "b": 2}, "keep": true});
        strategic_merge(&mut v, &json!({"spec": {"$patch": "replace", "c": 3}})).unwrap();
        assert_eq!(v, json!({"spec": {"c": 3}, "keep": true}));
        strategic_merge(&mut v, &json!({"keep": null})).unwrap();
        assert_eq!(v, json!({"spec": {"c": 3}}));
    }
}
