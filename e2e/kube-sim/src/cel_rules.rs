//! `x-kubernetes-validations` (CEL) rules of CRD schemas: compiled once when the CRD is created,
//! evaluated with `self` (and `oldSelf` for transition rules) during object validation.
//!
//! Owns the CEL environment and the JSON → CEL value conversion. Must not walk schemas for anything
//! but rule collection (structural validation lives in `crate::schema`).
//!
//! The `cel` crate implements the CEL standard library; `kube-cel` adds the Kubernetes libraries
//! (strings, lists, sets, regex, urls, ip/cidr, quantity, semver, format). A rule calling anything
//! else fails at evaluation time with a 422 that says so, never silently passes.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use kube_cel::KubeCelExt;
use kube_cel::cel::{Context, Program, Value as CelValue};
use serde_json::Value;

use crate::error::Cause;

/// One compiled rule.
pub struct Rule {
    program: Program,
    message_expression: Option<Program>,
    /// The rule mentions `oldSelf`: a transition rule, evaluated on update only.
    pub transition: bool,
}

/// The compiled rules of one schema, by rule source text.
#[derive(Default)]
pub struct CompiledRules {
    rules: HashMap<String, Rule>,
}

thread_local! {
    /// The function registry (standard + Kubernetes libraries), built once per thread; each
    /// evaluation binds its variables in a child scope.
    static ROOT: Context<'static> = Context::default().with_all();
}

impl fmt::Debug for CompiledRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledRules")
            .field("rules", &self.rules.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Compiles every `x-kubernetes-validations[].rule` (and `messageExpression`) in `schema`.
/// Errors carry a path relative to the schema root (`.properties[spec]...`).
pub fn compile(schema: &Value) -> Result<CompiledRules, Vec<Cause>> {
    let mut rules = HashMap::new();
    let mut errors = Vec::new();
    collect(schema, String::new(), &mut rules, &mut errors);
    if errors.is_empty() {
        Ok(CompiledRules { rules })
    } else {
        Err(errors)
    }
}

fn collect(schema: &Value, path: String, out: &mut HashMap<String, Rule>, errors: &mut Vec<Cause>) {
    if let Some(list) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for (i, r) in list.iter().enumerate() {
            let Some(src) = r.get("rule").and_then(Value::as_str) else {
                errors.push(Cause::new(
                    "FieldValueRequired",
                    format!("{path}.x-kubernetes-validations[{i}].rule"),
                    "Required value",
                ));
                continue;
            };
            let program = match Program::compile(src) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(Cause::new(
                        "FieldValueInvalid",
                        format!("{path}.x-kubernetes-validations[{i}].rule"),
                        format!("Invalid value: {src:?}: compilation failed: {e}"),
                    ));
                    continue;
                }
            };
            let message_expression = match r.get("messageExpression").and_then(Value::as_str) {
                Some(m) => match Program::compile(m) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        errors.push(Cause::new(
                            "FieldValueInvalid",
                            format!("{path}.x-kubernetes-validations[{i}].messageExpression"),
                            format!("Invalid value: {m:?}: compilation failed: {e}"),
                        ));
                        continue;
                    }
                },
                None => None,
            };
            let transition = program.references().has_variable("oldSelf");
            out.insert(
                src.to_owned(),
                Rule {
                    program,
                    message_expression,
                    transition,
                },
            );
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, s) in props {
            collect(s, format!("{path}.properties[{k}]"), out, errors);
        }
    }
    if let Some(items) = schema.get("items") {
        collect(items, format!("{path}.items"), out, errors);
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        collect(ap, format!("{path}.additionalProperties"), out, errors);
    }
}

/// Outcome of evaluating one rule.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Rule held (or did not apply: a transition rule without an old value).
    Pass,
    /// Rule evaluated to false; carries the message to report.
    Fail(String),
    /// Rule could not be evaluated (unsupported function, type error): reported as invalid.
    Error(String),
}

impl CompiledRules {
    /// Evaluates `rule` (as it appears in the schema, with its declared `message`) on a value.
    pub fn eval(&self, rule: &Value, self_val: &Value, old: Option<&Value>) -> Outcome {
        let Some(src) = rule.get("rule").and_then(Value::as_str) else {
            return Outcome::Pass;
        };
        let Some(compiled) = self.rules.get(src) else {
            return Outcome::Error(format!("rule {src:?} was not compiled"));
        };
        if compiled.transition && old.is_none() {
            return Outcome::Pass;
        }
        ROOT.with(|root| {
            let mut ctx = root.new_inner_scope();
            ctx.add_variable_from_value("self", to_cel(self_val));
            if let Some(o) = old {
                ctx.add_variable_from_value("oldSelf", to_cel(o));
            }
            match compiled.program.execute(&ctx) {
                Ok(CelValue::Bool(true)) => Outcome::Pass,
                Ok(CelValue::Bool(false)) => {
                    let from_expr =
                        compiled
                            .message_expression
                            .as_ref()
                            .and_then(|m| match m.execute(&ctx) {
                                Ok(CelValue::String(s)) => Some(s.to_string()),
                                _ => None,
                            });
                    let msg = from_expr
                        .or_else(|| {
                            rule.get("message")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .unwrap_or_else(|| format!("failed rule: {src}"));
                    Outcome::Fail(msg)
                }
                Ok(other) => {
                    Outcome::Error(format!("rule {src:?} evaluated to {other:?}, not a bool"))
                }
                Err(e) => Outcome::Error(format!(
                    "rule {src:?} could not be evaluated by the emulator's CEL engine: {e}"
                )),
            }
        })
    }
}

/// JSON → CEL: integers stay `int` (as the real server types integer schema fields), other numbers
/// become `double`.
pub fn to_cel(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => CelValue::Int(i),
            None => match n.as_u64() {
                Some(u) => CelValue::UInt(u),
                None => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(a) => CelValue::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<String, CelValue> =
                m.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            CelValue::from(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema_with(rule: &str, message: &str) -> Value {
        json!({"type": "object", "x-kubernetes-validations": [{"rule": rule, "message": message}]})
    }

    #[test]
    fn rule_passes_and_fails_with_message() {
        let s = schema_with("self.min <= self.max", "min must not exceed max");
        let rules = compile(&s).unwrap();
        let rule = &s["x-kubernetes-validations"][0];
        assert_eq!(
            rules.eval(rule, &json!({"min": 1, "max": 2}), None),
            Outcome::Pass
        );
        assert_eq!(
            rules.eval(rule, &json!({"min": 3, "max": 2}), None),
            Outcome::Fail("min must not exceed max".into())
        );
    }

    #[test]
    fn transition_rule_needs_old_self() {
        let s = schema_with("self == oldSelf", "immutable");
        let rules = compile(&s).unwrap();
        let rule = &s["x-kubernetes-validations"][0];
        assert_eq!(rules.eval(rule, &json!("a"), None), Outcome::Pass);
        assert_eq!(
            rules.eval(rule, &json!("a"), Some(&json!("a"))),
            Outcome::Pass
        );
        assert_eq!(
            rules.eval(rule, &json!("b"), Some(&json!("a"))),
            Outcome::Fail("immutable".into())
        );
    }

    #[test]
    fn macros_and_string_extensions_work() {
        let s = schema_with(
            "self.all(x, x.startsWith('10.')) && size(self) > 0 && self[0].lowerAscii() == self[0]",
            "bad",
        );
        let rules = compile(&s).unwrap();
        let rule = &s["x-kubernetes-validations"][0];
        assert_eq!(
            rules.eval(rule, &json!(["10.0.0.0/8"]), None),
            Outcome::Pass
        );
        assert_eq!(
            rules.eval(rule, &json!(["192.168.0.0/16"]), None),
            Outcome::Fail("bad".into())
        );
        let has = schema_with("has(self.a) || !has(self.b)", "b needs a");
        let rules = compile(&has).unwrap();
        let rule = &has["x-kubernetes-validations"][0];
        assert_eq!(
            rules.eval(rule, &json!({"b": 1}), None),
            Outcome::Fail("b needs a".into())
        );
        assert_eq!(
            rules.eval(rule, &json!({"a": 1, "b": 1}), None),
            Outcome::Pass
        );
    }

    #[test]
    fn kubernetes_ip_and_cidr_libraries() {
        let s = schema_with(
            "isCIDR(self) && string(cidr(self).masked()) == self && cidr(self).prefixLength() <= 26",
            "must be a masked CIDR of /26 or wider",
        );
        let rules = compile(&s).unwrap();
        let rule = &s["x-kubernetes-validations"][0];
        assert_eq!(rules.eval(rule, &json!("10.0.0.0/16"), None), Outcome::Pass);
        // fd00::/48 is masked but narrower than /26.
        assert!(matches!(
            rules.eval(rule, &json!("fd00::/48"), None),
            Outcome::Fail(_)
        ));
        for bad in ["10.0.0.1/16", "10.0.0.0/27", "not-a-cidr"] {
            assert!(
                matches!(rules.eval(rule, &json!(bad), None), Outcome::Fail(_)),
                "{bad}"
            );
        }
        let ip = schema_with("isIP(self)", "ip");
        let rules = compile(&ip).unwrap();
        let rule = &ip["x-kubernetes-validations"][0];
        assert_eq!(rules.eval(rule, &json!("192.0.2.1"), None), Outcome::Pass);
        assert_eq!(
            rules.eval(rule, &json!("192.0.2.300"), None),
            Outcome::Fail("ip".into())
        );
    }

    #[test]
    fn unsupported_function_is_an_error_not_a_pass() {
        let s = schema_with("isSortedBogus(self)", "bad");
        let rules = compile(&s).unwrap();
        let rule = &s["x-kubernetes-validations"][0];
        assert!(matches!(
            rules.eval(rule, &json!("10.0.0.0/8"), None),
            Outcome::Error(_)
        ));
    }

    #[test]
    fn syntax_error_is_reported_at_compile_time() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.a ==", "message": "x"}]}}});
        let err = compile(&s).unwrap_err();
        assert_eq!(
            err[0].field,
            ".properties[spec].x-kubernetes-validations[0].rule"
        );
    }

    #[test]
    fn message_expression_is_used() {
        let s = json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.n < 5", "messageExpression": "'n is ' + string(self.n)"}]});
        let rules = compile(&s).unwrap();
        assert_eq!(
            rules.eval(&s["x-kubernetes-validations"][0], &json!({"n": 7}), None),
            Outcome::Fail("n is 7".into())
        );
    }
}
