//! Kubernetes `LabelSelector` validation and matching.
//!
//! Owns the meaning of `matchLabels` + `matchExpressions` (`In`, `NotIn`, `Exists`,
//! `DoesNotExist`) over a node's labels, following the API conventions in
//! `k8s.io/apimachinery/pkg/apis/meta/v1/helpers.go`: all requirements are ANDed, an empty
//! selector matches everything, `In`/`NotIn` need at least one value and `Exists`/`DoesNotExist`
//! none. Must not touch anything but the selector and the labels it is given.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::validation::{Errors, FieldError};

/// Label keys and values as the API stores them.
pub type Labels = BTreeMap<String, String>;

/// A selector that was validated and can be matched without further error paths.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    /// The selector that matches every label set (what an absent `nodeSelector` means).
    pub fn everything() -> Self {
        Self::default()
    }

    /// Validates `selector`; errors name fields under `path` (e.g. `spec.nodeSelector`).
    pub fn parse(selector: &LabelSelector, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut errors = Errors::default();
        let mut requirements = Vec::new();
        if let Some(labels) = &selector.match_labels {
            for (key, value) in labels {
                let p = format!("{path}.matchLabels[{key}]");
                check_label_key(&mut errors, &p, key);
                check_label_value(&mut errors, &p, value);
                requirements.push(Requirement::In(key.clone(), vec![value.clone()]));
            }
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            check_label_key(&mut errors, &format!("{p}.key"), &expr.key);
            let values = expr.values.clone().unwrap_or_default();
            for (j, v) in values.iter().enumerate() {
                check_label_value(&mut errors, &format!("{p}.values[{j}]"), v);
            }
            let key = expr.key.clone();
            match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => errors.push(
                    format!("{p}.values"),
                    format!("operator {} needs at least one value", expr.operator),
                ),
                "In" => requirements.push(Requirement::In(key, values)),
                "NotIn" => requirements.push(Requirement::NotIn(key, values)),
                "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(
                    format!("{p}.values"),
                    format!("operator {} takes no values", expr.operator),
                ),
                "Exists" => requirements.push(Requirement::Exists(key)),
                "DoesNotExist" => requirements.push(Requirement::DoesNotExist(key)),
                other => errors.push(
                    format!("{p}.operator"),
                    format!(
                        "unknown operator {other:?}: expected In, NotIn, Exists or DoesNotExist"
                    ),
                ),
            }
        }
        errors.finish().map(|()| Self { requirements })
    }

    /// Parses an optional selector; `None` matches everything.
    pub fn parse_optional(
        selector: Option<&LabelSelector>,
        path: &str,
    ) -> Result<Self, Vec<FieldError>> {
        selector.map_or_else(|| Ok(Self::everything()), |s| Self::parse(s, path))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            // A missing key satisfies NotIn, as in Kubernetes.
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// Label key: optional DNS-1123 subdomain prefix (≤ 253) and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.`, starting and ending with an alphanumeric.
fn check_label_key(errors: &mut Errors, path: &str, key: &str) {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        crate::validation::check_dns_subdomain(errors, path, prefix);
    }
    if name.is_empty() || name.len() > 63 || !is_label_token(name) {
        errors.push(
            path,
            format!(
                "invalid label key {key:?}: the name part must be 1-63 characters of letters, \
                 digits, '-', '_' or '.', starting and ending with a letter or digit"
            ),
        );
    }
}

/// Label value: empty, or at most 63 characters like a key's name part.
fn check_label_value(errors: &mut Errors, path: &str, value: &str) {
    if !value.is_empty() && (value.len() > 63 || !is_label_token(value)) {
        errors.push(
            path,
            format!(
                "invalid label value {value:?}: at most 63 characters of letters, digits, '-', \
                 '_' or '.', starting and ending with a letter or digit"
            ),
        );
    }
}

fn is_label_token(s: &str) -> bool {
    let bytes = s.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    inner_ok && ends_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| (*v).to_string()).collect())
            },
        }
    }

    fn sel(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: if match_labels.is_empty() {
                None
            } else {
                Some(labels(match_labels))
            },
            match_expressions: if exprs.is_empty() { None } else { Some(exprs) },
        }
    }

    #[test]
    fn matching_table() {
        let node = labels(&[("zone", "a"), ("rack", "r1"), ("gpu", "")]);
        // (case, selector, expected match)
        let cases: Vec<(&str, LabelSelector, bool)> = vec![
            ("empty selector matches all", sel(&[], vec![]), true),
            ("matchLabels hit", sel(&[("zone", "a")], vec![]), true),
            (
                "matchLabels miss value",
                sel(&[("zone", "b")], vec![]),
                false,
            ),
            (
                "matchLabels miss key",
                sel(&[("os", "linux")], vec![]),
                false,
            ),
            ("matchLabels empty value", sel(&[("gpu", "")], vec![]), true),
            (
                "In hit",
                sel(&[], vec![expr("zone", "In", &["b", "a"])]),
                true,
            ),
            ("In miss", sel(&[], vec![expr("zone", "In", &["b"])]), false),
            (
                "In absent key",
                sel(&[], vec![expr("os", "In", &["x"])]),
                false,
            ),
            (
                "NotIn hit",
                sel(&[], vec![expr("zone", "NotIn", &["a"])]),
                false,
            ),
            (
                "NotIn miss",
                sel(&[], vec![expr("zone", "NotIn", &["b"])]),
                true,
            ),
            (
                "NotIn absent key matches",
                sel(&[], vec![expr("os", "NotIn", &["x"])]),
                true,
            ),
            ("Exists", sel(&[], vec![expr("rack", "Exists", &[])]), true),
            (
                "Exists absent",
                sel(&[], vec![expr("os", "Exists", &[])]),
                false,
            ),
            (
                "DoesNotExist",
                sel(&[], vec![expr("os", "DoesNotExist", &[])]),
                true,
            ),
            (
                "DoesNotExist present",
                sel(&[], vec![expr("gpu", "DoesNotExist", &[])]),
                false,
            ),
            (
                "requirements are ANDed",
                sel(&[("zone", "a")], vec![expr("rack", "In", &["r2"])]),
                false,
            ),
        ];
        for (case, s, want) in cases {
            let parsed = Selector::parse(&s, "spec.nodeSelector").expect(case);
            assert_eq!(parsed.matches(&node), want, "{case}");
        }
    }

    #[test]
    fn validation_table() {
        // (case, selector, expected error path)
        let cases: Vec<(&str, LabelSelector, &str)> = vec![
            (
                "unknown operator",
                sel(&[], vec![expr("zone", "Equals", &["a"])]),
                "spec.nodeSelector.matchExpressions[0].operator",
            ),
            (
                "In without values",
                sel(&[], vec![expr("zone", "In", &[])]),
                "spec.nodeSelector.matchExpressions[0].values",
            ),
            (
                "Exists with values",
                sel(&[], vec![expr("zone", "Exists", &["a"])]),
                "spec.nodeSelector.matchExpressions[0].values",
            ),
            (
                "bad key",
                sel(&[], vec![expr("-zone", "Exists", &[])]),
                "spec.nodeSelector.matchExpressions[0].key",
            ),
            (
                "bad key prefix",
                sel(&[("Example.com/zone", "a")], vec![]),
                "spec.nodeSelector.matchLabels[Example.com/zone]",
            ),
            (
                "bad value",
                sel(&[("zone", "a b")], vec![]),
                "spec.nodeSelector.matchLabels[zone]",
            ),
            (
                "value too long",
                sel(&[], vec![expr("zone", "In", &[&"a".repeat(64)])]),
                "spec.nodeSelector.matchExpressions[0].values[0]",
            ),
        ];
        for (case, s, path) in cases {
            let errs = Selector::parse(&s, "spec.nodeSelector").expect_err(case);
            assert!(
                errs.iter().any(|e| e.path == path),
                "{case}: expected an error at {path}, got {errs:?}"
            );
        }
        let ok = sel(&[("topology.kubernetes.io/zone", "eu-1a")], vec![]);
        assert!(Selector::parse(&ok, "s").is_ok());
    }
}
