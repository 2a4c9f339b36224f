//! Label and field selectors as the real server parses them (`k8s.io/apimachinery/pkg/labels`
//! grammar: `=`, `==`, `!=`, `in`, `notin`, existence, `!key`).
//!
//! Pure functions over strings and JSON objects.

use serde_json::Value;

use crate::error::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value`.
    Equals(String, String),
    /// `key!=value` (also matches objects without the key).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also matches objects without the key).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// A parsed label selector (conjunction of requirements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(rest: &str, sel: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{rest}', expected: '(' in selector {sel:?}"
            ))
        })?;
    let vals: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    if let Some(bad) = vals.iter().find(|v| !valid_value(v)) {
        return Err(ApiError::bad_request(format!(
            "invalid label value: {bad:?}"
        )));
    }
    Ok(vals)
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(sel: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if sel.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(sel) {
            let p = part.trim();
            let bad = || {
                ApiError::bad_request(format!(
                    "unable to parse requirement: {p:?} in label selector {sel:?}"
                ))
            };
            let check_key = |k: &str| {
                if valid_key(k) {
                    Ok(k.to_owned())
                } else {
                    Err(ApiError::bad_request(format!("invalid label key {k:?}")))
                }
            };
            let check_val = |v: &str| {
                if valid_value(v) {
                    Ok(v.to_owned())
                } else {
                    Err(ApiError::bad_request(format!("invalid label value: {v:?}")))
                }
            };
            if let Some(k) = p.strip_prefix('!') {
                reqs.push(Requirement::NotExists(check_key(k.trim())?));
            } else if let Some((k, v)) = p.split_once("!=") {
                reqs.push(Requirement::NotEquals(
                    check_key(k.trim())?,
                    check_val(v.trim())?,
                ));
            } else if let Some((k, v)) = p.split_once("==") {
                reqs.push(Requirement::Equals(
                    check_key(k.trim())?,
                    check_val(v.trim())?,
                ));
            } else if let Some((k, v)) = p.split_once('=') {
                reqs.push(Requirement::Equals(
                    check_key(k.trim())?,
                    check_val(v.trim())?,
                ));
            } else if let Some(idx) = p.find(" notin ").or_else(|| p.find(" notin(")) {
                reqs.push(Requirement::NotIn(
                    check_key(p[..idx].trim())?,
                    parse_set(&p[idx + 6..], sel)?,
                ));
            } else if let Some(idx) = p.find(" in ").or_else(|| p.find(" in(")) {
                reqs.push(Requirement::In(
                    check_key(p[..idx].trim())?,
                    parse_set(&p[idx + 3..], sel)?,
                ));
            } else if p.contains(' ') || p.contains('(') || p.is_empty() {
                return Err(bad());
            } else {
                reqs.push(Requirement::Exists(check_key(p)?));
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector over `metadata.name` / `metadata.namespace` and a CRD's
/// `selectableFields`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter. Only the fields every resource supports on the
    /// real server are accepted; others get the real server's 400.
    pub fn parse(sel: &str) -> Result<Self, ApiError> {
        Self::parse_for(sel, &[])
    }

    /// Like [`FieldSelector::parse`], also accepting the resource's `selectable` fields (a CRD
    /// version's `selectableFields`, e.g. `spec.node`), as the real server does since 1.32.
    pub fn parse_for(sel: &str, selectable: &[String]) -> Result<Self, ApiError> {
        let mut out = Vec::new();
        if sel.trim().is_empty() {
            return Ok(FieldSelector(out));
        }
        for part in sel.split(',') {
            let p = part.trim();
            let (k, eq, v) = if let Some((k, v)) = p.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = p.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = p.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{sel}'; can't understand '{p}'"
                )));
            };
            let k = k.trim();
            if k != "metadata.name"
                && k != "metadata.namespace"
                && !selectable.iter().any(|s| s == k)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            out.push((k.to_owned(), eq, v.trim().to_owned()));
        }
        Ok(FieldSelector(out))
    }

    /// Whether the object satisfies the selector.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, eq, v)| {
            let pointer = format!("/{}", k.replace('.', "/"));
            // Selectable fields are strings, integers or booleans; an absent one is "".
            let actual = match obj.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                _ => String::new(),
            };
            (actual == *v) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "n1", "namespace": "ns1", "labels": labels}})
    }

    #[test]
    fn label_operators_table() {
        let o = obj(json!({"zone": "a", "rack": "r1"}));
        let cases = [
            ("", true),
            ("zone=a", true),
            ("zone==a", true),
            ("zone=b", false),
            ("zone!=b", true),
            ("missing!=b", true),
            ("zone in (a, b)", true),
            ("zone in (b,c)", false),
            ("zone notin (b)", true),
            ("missing notin (b)", true),
            ("zone notin (a)", false),
            ("rack", true),
            ("missing", false),
            ("!missing", true),
            ("!zone", false),
            ("zone=a,rack in (r1,r2),!gpu", true),
            ("zone=a,rack=r2", false),
            ("tabby.dev/pool=x", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&o), want, "selector {sel:?}");
        }
    }

    #[test]
    fn malformed_label_selectors_are_rejected() {
        for sel in ["zone in a", "zone=a b", "zo ne", "=a", "zone in (a b)"] {
            assert!(
                LabelSelector::parse(sel).is_err(),
                "{sel:?} should be rejected"
            );
        }
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        assert!(
            FieldSelector::parse("metadata.name=n1")
                .unwrap()
                .matches(&o)
        );
        assert!(
            !FieldSelector::parse("metadata.name!=n1")
                .unwrap()
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("metadata.namespace==ns1,metadata.name=n1")
                .unwrap()
                .matches(&o)
        );
        assert!(FieldSelector::parse("spec.nodeName=x").is_err());
        let selectable = ["spec.node".to_owned()];
        let f = FieldSelector::parse_for("spec.node=n1", &selectable).unwrap();
        assert!(f.matches(&json!({"metadata": {"name": "b"}, "spec": {"node": "n1"}})));
        assert!(!f.matches(&json!({"metadata": {"name": "b"}, "spec": {"node": "n2"}})));
        assert!(!f.matches(&json!({"metadata": {"name": "b"}})));
        assert!(FieldSelector::parse_for("spec.pool=x", &selectable).is_err());
        assert!(FieldSelector::parse("garbage").is_err());
    }
}
