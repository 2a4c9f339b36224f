//! Structural-schema handling of custom resources, in the order the real server applies it:
//! pruning of unknown fields, defaulting, then validation (OpenAPI v3 subset + CEL rules).
//!
//! Owns the walk over `openAPIV3Schema` and the object. Must not touch storage or HTTP.
//! Not implemented (listed in the README): `allOf`/`anyOf`/`oneOf`/`not` value checks,
//! `uniqueItems`, `multipleOf`, `x-kubernetes-list-type` uniqueness checks.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

use crate::cel_rules::{CompiledRules, Outcome};
use crate::error::Cause;

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn embedded(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Removes fields the schema does not declare, returning their paths. At the root (and in embedded
/// resources) `apiVersion`, `kind` and `metadata` are kept; `metadata` itself is not pruned here.
pub fn prune(schema: &Value, value: &mut Value, root: bool) -> Vec<String> {
    let mut pruned = Vec::new();
    prune_at(schema, value, "", root, &mut pruned);
    pruned
}

fn prune_at(
    schema: &Value,
    value: &mut Value,
    path: &str,
    keep_meta: bool,
    pruned: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keep_all = preserves_unknown(schema);
            let keep_meta = keep_meta || embedded(schema);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if keep_meta && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    continue;
                }
                let child_schema = props
                    .and_then(|p| p.get(&k))
                    .or_else(|| additional.filter(|a| a.is_object()));
                match child_schema {
                    Some(cs) => {
                        if let Some(child) = map.get_mut(&k) {
                            prune_at(cs, child, &join(path, &k), false, pruned);
                        }
                    }
                    None => {
                        let allowed = keep_all || additional.and_then(Value::as_bool) == Some(true);
                        if !allowed {
                            map.remove(&k);
                            pruned.push(join(path, &k));
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    prune_at(item_schema, it, &format!("{path}[{i}]"), false, pruned);
                }
            }
        }
        _ => {}
    }
}

/// Applies `default`s of absent properties, recursively (defaults are applied inside defaulted
/// values too). `null` in a non-nullable field is dropped first, then defaulted, as the real server
/// does.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    let nullable = ps.get("nullable").and_then(Value::as_bool) == Some(true);
                    if map.get(k).is_some_and(Value::is_null) && !nullable {
                        map.remove(k);
                    }
                    if !map.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(k) {
                        apply_defaults(ps, child);
                    }
                }
            }
            if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let declared = schema.get("properties").and_then(Value::as_object);
                for (k, child) in map.iter_mut() {
                    if declared.is_none_or(|d| !d.contains_key(k)) {
                        apply_defaults(ap, child);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for it in items {
                    apply_defaults(is, it);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn regex_cached(pattern: &str) -> Option<Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut guard = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = guard.get(pattern) {
        return Some(r.clone());
    }
    let r = Regex::new(pattern).ok()?;
    if guard.len() < 1024 {
        guard.insert(pattern.to_owned(), r.clone());
    }
    Some(r)
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "ip" => s.parse::<std::net::IpAddr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(a, p)| {
            let max = if a.contains(':') { 128 } else { 32 };
            a.parse::<std::net::IpAddr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= max)
        }),
        "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
        "uuid" => {
            s.len() == 36
                && s.char_indices().all(|(i, c)| {
                    if [8, 13, 18, 23].contains(&i) {
                        c == '-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                })
        }
        // Other formats (byte, hostname, ...) are accepted unchecked, as the real server does for
        // formats it does not know.
        _ => true,
    }
}

/// Validates `value` against `schema` and its CEL rules. `old` is the previous object on update
/// (for `oldSelf`).
pub fn validate(
    schema: &Value,
    rules: &CompiledRules,
    value: &Value,
    old: Option<&Value>,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    validate_at(schema, rules, value, old, "", true, &mut causes);
    causes
}

fn validate_at(
    schema: &Value,
    rules: &CompiledRules,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    root: bool,
    causes: &mut Vec<Cause>,
) {
    let before = causes.len();
    let shown = if path.is_empty() { "<root>" } else { path };
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
    if value.is_null() {
        if !nullable && schema.get("type").is_some() {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                shown,
                format!(
                    "Invalid value: \"null\": {shown} in body must be of type {}: \"null\"",
                    schema["type"].as_str().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    if int_or_string {
        if !matches!(type_name(value), "integer" | "string") {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                shown,
                format!(
                    "Invalid value: {}: {shown} in body must be of type integer or string: {:?}",
                    show(value),
                    type_name(value)
                ),
            ));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == t || (t == "number" && actual == "integer");
        if !ok {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                shown,
                format!(
                    "Invalid value: {}: {shown} in body must be of type {t}: {:?}",
                    show(value),
                    actual
                ),
            ));
            return;
        }
    }
    if let Some(list) = schema.get("enum").and_then(Value::as_array)
        && !list.contains(value)
    {
        let supported: Vec<String> = list.iter().map(Value::to_string).collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            shown,
            format!(
                "Unsupported value: {}: supported values: {}",
                value,
                supported.join(", ")
            ),
        ));
    }
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                let excl = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
                if x < min || (excl && x == min) {
                    let op = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        shown,
                        format!(
                            "Invalid value: {n}: {shown} in body should be {op} {}",
                            schema["minimum"]
                        ),
                    ));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                let excl = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
                if x > max || (excl && x == max) {
                    let op = if excl {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        shown,
                        format!(
                            "Invalid value: {n}: {shown} in body should be {op} {}",
                            schema["maximum"]
                        ),
                    ));
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                causes.push(Cause::new("FieldValueInvalid", shown, format!("Invalid value: {value}: {shown} in body should be at least {min} chars long")));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                causes.push(Cause::new(
                    "FieldValueTooLong",
                    shown,
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match regex_cached(p) {
                    Some(re) if !re.is_match(s) => {
                        causes.push(Cause::new(
                            "FieldValueInvalid",
                            shown,
                            format!("Invalid value: {value}: {shown} in body should match '{p}'"),
                        ));
                    }
                    Some(_) => {}
                    None => causes.push(Cause::new(
                        "FieldValueInvalid",
                        shown,
                        format!("schema pattern {p:?} does not compile"),
                    )),
                }
            }
            if let Some(f) = schema.get("format").and_then(Value::as_str)
                && !format_ok(f, s)
            {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    shown,
                    format!("Invalid value: {value}: {shown} in body must be of type {f}: {value}"),
                ));
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    shown,
                    format!("Invalid value: {n}: {shown} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    shown,
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            check_list_type(schema, items, path, causes);
            if let Some(is) = schema.get("items") {
                for (i, it) in items.iter().enumerate() {
                    validate_at(is, rules, it, None, &format!("{path}[{i}]"), false, causes);
                }
            }
        }
        Value::Object(map) => validate_object(schema, rules, map, old, path, root, causes),
        _ => {}
    }
    // CEL rules run only where the value is structurally valid, as the real server does.
    if causes.len() == before
        && let Some(list) = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
    {
        for rule in list {
            let field = match rule.get("fieldPath").and_then(Value::as_str) {
                Some(fp) => format!("{path}{fp}"),
                None => shown.to_owned(),
            };
            let reason = rule
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("FieldValueInvalid");
            match rules.eval(rule, value, old) {
                Outcome::Pass => {}
                Outcome::Fail(msg) => {
                    let shown_val = match value {
                        Value::Object(_) => "\"object\"".to_owned(),
                        Value::Array(_) => "\"array\"".to_owned(),
                        v => v.to_string(),
                    };
                    let text = if reason == "FieldValueInvalid" {
                        format!("Invalid value: {shown_val}: {msg}")
                    } else {
                        msg
                    };
                    causes.push(Cause::new(reason, field, text));
                }
                Outcome::Error(msg) => causes.push(Cause::new(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: {msg}"),
                )),
            }
        }
    }
}

/// `x-kubernetes-list-type: set` (items unique) and `map` (items unique by their
/// `x-kubernetes-list-map-keys`): the real server answers a repeat with `Duplicate value` at the
/// second item. Tabby's IPAMBlock status relies on this to refuse a duplicate ordinal.
fn check_list_type(schema: &Value, items: &[Value], path: &str, causes: &mut Vec<Cause>) {
    let key_of = |item: &Value| -> Value {
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => item.clone(),
            Some("map") => {
                let keys = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                Value::Object(
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(|k| (k.to_string(), item.get(k).cloned().unwrap_or(Value::Null)))
                        .collect(),
                )
            }
            _ => Value::Null,
        }
    };
    if !matches!(
        schema.get("x-kubernetes-list-type").and_then(Value::as_str),
        Some("set" | "map")
    ) {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let key = key_of(item);
        if !seen.insert(key.to_string()) {
            causes.push(Cause::new(
                "FieldValueDuplicate",
                format!("{path}[{i}]"),
                format!("Duplicate value: {key}"),
            ));
        }
    }
}

fn validate_object(
    schema: &Value,
    rules: &CompiledRules,
    map: &Map<String, Value>,
    old: Option<&Value>,
    path: &str,
    root: bool,
    causes: &mut Vec<Cause>,
) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                causes.push(Cause::new(
                    "FieldValueRequired",
                    join(path, r),
                    "Required value",
                ));
            }
        }
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && (map.len() as u64) < min
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!(
                "Invalid value: {}: {path} in body should have at least {min} properties",
                map.len()
            ),
        ));
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && (map.len() as u64) > max
    {
        causes.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {}: must have at most {max} items", map.len()),
        ));
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in map {
        if (root || embedded(schema)) && (k == "apiVersion" || k == "kind" || k == "metadata") {
            continue;
        }
        let child_old = old.and_then(|o| o.get(k));
        if let Some(ps) = props.and_then(|p| p.get(k)) {
            validate_at(ps, rules, v, child_old, &join(path, k), false, causes);
        } else if let Some(ap) = additional {
            validate_at(
                ap,
                rules,
                v,
                child_old,
                &format!("{path}[{k}]"),
                false,
                causes,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cel_rules::compile;
    use serde_json::json;

    fn pool_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cidr"],
                    "properties": {
                        "cidr": {"type": "string", "format": "cidr"},
                        "blockSize": {"type": "integer", "minimum": 20, "maximum": 32, "default": 26},
                        "mode": {"type": "string", "enum": ["Always", "Never"], "default": "Never"},
                        "nodeSelector": {"type": "string", "maxLength": 10, "pattern": "^[a-z=]*$"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "port": {"x-kubernetes-int-or-string": true},
                        "opts": {"type": "object", "default": {}, "properties": {"mtu": {"type": "integer", "default": 1500}}},
                        "list": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {"a": {"type": "integer", "default": 1}}}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "maybe": {"type": "string", "nullable": true}
                    },
                    "x-kubernetes-validations": [{"rule": "self.blockSize >= 24 || self.mode == 'Never'", "message": "small blocks need mode Never", "fieldPath": ".blockSize"}]
                },
                "status": {"type": "object", "properties": {"used": {"type": "integer"}}}
            }
        })
    }

    fn check(obj: Value) -> (Value, Vec<Cause>) {
        let s = pool_schema();
        let rules = compile(&s).unwrap();
        let mut v = obj;
        prune(&s, &mut v, true);
        apply_defaults(&s, &mut v);
        let c = validate(&s, &rules, &v, None);
        (v, c)
    }

    #[test]
    fn defaults_are_applied_including_nested() {
        let (v, c) = check(
            json!({"apiVersion": "tabby.dev/v1", "kind": "IPPool", "metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16", "list": [{}]}}),
        );
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(v["spec"]["blockSize"], 26);
        assert_eq!(v["spec"]["mode"], "Never");
        assert_eq!(v["spec"]["opts"]["mtu"], 1500);
        assert_eq!(v["spec"]["list"][0]["a"], 1);
        assert_eq!(v["metadata"]["name"], "p");
    }

    #[test]
    fn unknown_fields_are_pruned_but_preserved_where_declared() {
        let s = pool_schema();
        let mut v = json!({"kind": "X", "extra": 1, "spec": {"cidr": "10.0.0.0/8", "bogus": true, "free": {"any": {"thing": 1}}, "labels": {"a": "b"}}});
        let pruned = prune(&s, &mut v, true);
        assert_eq!(pruned, vec!["extra".to_owned(), "spec.bogus".to_owned()]);
        assert_eq!(v["spec"]["free"]["any"]["thing"], 1);
        assert_eq!(v["spec"]["labels"]["a"], "b");
        assert_eq!(v["kind"], "X");
    }

    #[test]
    fn violations_are_reported_with_field_paths() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({"spec": {}}), "spec.cidr", "FieldValueRequired"),
            (
                json!({"spec": {"cidr": "nope"}}),
                "spec.cidr",
                "FieldValueInvalid",
            ),
            (
                json!({"spec": {"cidr": 5}}),
                "spec.cidr",
                "FieldValueTypeInvalid",
            ),
            (
                json!({"spec": {"cidr": "10.0.0.0/8", "blockSize": 33}}),
                "spec.blockSize",
                "FieldValueInvalid",
            ),
            (
                json!({"spec": {"cidr": "10.0.0.0/8", "blockSize": 19}}),
                "spec.blockSize",
                "FieldValueInvalid",
            ),
            (
                json!({"spec": {"cidr": "10.0.0.0/8", "mode": "Sometimes"}}),
                "spec.mode",
                "FieldValueNotSupported",
            ),
            (
                json!({"spec": {"cidr": "10.0.0.0/8", "nodeSelector": "abcdefghijkl"}}),
                "spec.nodeSelector",
                "FieldValueTooLong",
            ),
            (
                json!({"spec": {"cidr": "10.0.0.0/8", "nodeSelector": "A"}}),
                "spec.nodeSelector",
                "FieldValueInvalid",
            ),
            (
                json!({"spec": {"cidr": "10.0.0.0/8", "labels": {"a": 1}}}),
                "spec.labels[a]",
                "FieldValueTypeInvalid",
            ),
            (
                json!({"spec": {"cidr": "10.0.0.0/8", "port": true}}),
                "spec.port",
                "FieldValueTypeInvalid",
            ),
            (
                json!({"spec": {"cidr": "10.0.0.0/8", "list": [{}, {}, {}]}}),
                "spec.list",
                "FieldValueTooMany",
            ),
            (
                json!({"spec": {"cidr": "10.0.0.0/8", "list": [{"a": "x"}]}}),
                "spec.list[0].a",
                "FieldValueTypeInvalid",
            ),
            (
                json!({"spec": {"cidr": "10.0.0.0/8", "blockSize": 20, "mode": "Always"}}),
                "spec.blockSize",
                "FieldValueInvalid",
            ),
            (json!({"spec": "str"}), "spec", "FieldValueTypeInvalid"),
        ];
        for (obj, field, reason) in cases {
            let (_, c) = check(obj.clone());
            assert!(
                c.iter().any(|c| c.field == field && c.reason == reason),
                "{obj}: expected {reason} at {field}, got {c:?}"
            );
        }
    }

    #[test]
    fn list_type_map_and_set_refuse_duplicates() {
        let schema = json!({"type": "object", "properties": {
            "allocations": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["ordinal"],
                "items": {"type": "object", "properties": {
                    "ordinal": {"type": "integer"}, "handle": {"type": "string"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set",
                "items": {"type": "string"}},
            "free": {"type": "array", "items": {"type": "string"}}}});
        let rules = compile(&schema).unwrap();
        let ok = json!({"allocations": [{"ordinal": 1, "handle": "a"}, {"ordinal": 2, "handle": "a"}],
            "tags": ["x", "y"], "free": ["z", "z"]});
        assert!(validate(&schema, &rules, &ok, None).is_empty());
        let bad = json!({"allocations": [{"ordinal": 1, "handle": "a"}, {"ordinal": 1, "handle": "b"}],
            "tags": ["x", "x"]});
        let causes = validate(&schema, &rules, &bad, None);
        let got: Vec<(&str, &str)> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("allocations[1]", "FieldValueDuplicate"),
                ("tags[1]", "FieldValueDuplicate")
            ]
        );
        assert!(
            causes[0].message.contains(r#"{"ordinal":1}"#),
            "{}",
            causes[0].message
        );
    }

    #[test]
    fn valid_values_pass() {
        for obj in [
            json!({"spec": {"cidr": "fd00::/48", "port": 8080, "maybe": null}}),
            json!({"spec": {"cidr": "10.0.0.0/8", "port": "http", "blockSize": 24, "mode": "Always"}}),
        ] {
            let (_, c) = check(obj.clone());
            assert!(c.is_empty(), "{obj}: {c:?}");
        }
    }

    #[test]
    fn cel_rule_sees_old_self_on_update() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "cidr": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "cidr is immutable"}]}}}}});
        let rules = compile(&s).unwrap();
        let old = json!({"spec": {"cidr": "10.0.0.0/8"}});
        assert!(
            validate(
                &s,
                &rules,
                &json!({"spec": {"cidr": "10.0.0.0/8"}}),
                Some(&old)
            )
            .is_empty()
        );
        let c = validate(
            &s,
            &rules,
            &json!({"spec": {"cidr": "10.1.0.0/16"}}),
            Some(&old),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].field, "spec.cidr");
        assert!(c[0].message.ends_with("cidr is immutable"));
        assert!(validate(&s, &rules, &json!({"spec": {"cidr": "10.1.0.0/16"}}), None).is_empty());
    }
}
