//! How a kubelet and a container runtime would start a rendered container, for the tests that
//! start our binaries from the chart's own DaemonSet/Deployment: downward-API values, the
//! environment, `$(VAR)` expansion in args, the image's ENTRYPOINT and the probes' endpoints.
//!
//! Pure functions over rendered documents and Dockerfiles; nothing here runs a process.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// What the pod a test stands in for would get from the downward API.
#[derive(Debug, Clone, Copy)]
pub struct PodIdentity<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.namespace`.
    pub namespace: &'a str,
    /// `spec.nodeName`.
    pub node: &'a str,
}

impl PodIdentity<'_> {
    /// The value of a downward-API `fieldRef`, `None` for a field this model does not know.
    pub fn field_ref(&self, path: &str) -> Option<String> {
        match path {
            "metadata.name" => Some(self.name.into()),
            "metadata.namespace" => Some(self.namespace.into()),
            "spec.nodeName" => Some(self.node.into()),
            _ => None,
        }
    }
}

/// A rendered container the model cannot start as a kubelet would.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// An env entry with a source other than `value` or a known `fieldRef`.
    #[error("env {name}: unsupported source {entry}")]
    EnvSource {
        /// The variable.
        name: String,
        /// The rendered entry.
        entry: String,
    },
    /// A field that should be a string (or a list of them) is not.
    #[error("{0} is not a string (or a list of strings)")]
    NotString(String),
    /// A probe without an httpGet port and path we can resolve.
    #[error("{probe}: {reason}")]
    Probe {
        /// `readinessProbe`, `livenessProbe`, ...
        probe: String,
        /// What is missing.
        reason: String,
    },
    /// The Dockerfile cannot be read or has no exec-form ENTRYPOINT.
    #[error("{path}: {reason}")]
    Dockerfile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The container's environment as the kubelet sets it: literal values and downward-API fields.
pub fn env(c: &Value, pod: &PodIdentity) -> Result<BTreeMap<String, String>, ContainerError> {
    let mut env = BTreeMap::new();
    for e in c["env"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let name = e["name"]
            .as_str()
            .ok_or_else(|| ContainerError::NotString(format!("env name in {e}")))?
            .to_string();
        let value = if let Some(v) = e["value"].as_str() {
            Some(v.to_string())
        } else {
            e["valueFrom"]["fieldRef"]["fieldPath"]
                .as_str()
                .and_then(|p| pod.field_ref(p))
        };
        let value = value.ok_or_else(|| ContainerError::EnvSource {
            name: name.clone(),
            entry: e.to_string(),
        })?;
        env.insert(name, value);
    }
    Ok(env)
}

/// `$(VAR)` in an argument expands to the environment's value, as the kubelet does.
pub fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = arg.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// A list of strings (`command`, `args`); absent is empty.
pub fn strings(v: &Value, what: &str) -> Result<Vec<String>, ContainerError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ContainerError::NotString(format!("{what} item {s}")))
            })
            .collect(),
        _ => Err(ContainerError::NotString(what.to_string())),
    }
}

/// The container's `args` with `$(VAR)` expanded against its environment.
pub fn args(c: &Value, env: &BTreeMap<String, String>) -> Result<Vec<String>, ContainerError> {
    Ok(strings(&c["args"], "args")?
        .iter()
        .map(|a| expand(a, env))
        .collect())
}

/// The port and path of a probe's `httpGet` (a named port resolved through the container's
/// `ports`).
pub fn http_probe(c: &Value, probe: &str) -> Result<(u16, String), ContainerError> {
    let err = |reason: &str| ContainerError::Probe {
        probe: probe.to_string(),
        reason: reason.to_string(),
    };
    let h = &c[probe]["httpGet"];
    let port = match &h["port"] {
        Value::Number(n) => n.as_u64(),
        Value::String(name) => c["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == *name))
            .and_then(|p| p["containerPort"].as_u64()),
        _ => None,
    }
    .and_then(|p| u16::try_from(p).ok())
    .ok_or_else(|| err("no httpGet port (number, or a name in ports)"))?;
    let path = h["path"].as_str().ok_or_else(|| err("no httpGet path"))?;
    Ok((port, path.to_string()))
}

/// The image's ENTRYPOINT (exec form) from a Dockerfile; the last one wins, as in a build.
pub fn dockerfile_entrypoint(dockerfile: &Path) -> Result<Vec<String>, ContainerError> {
    let err = |reason: String| ContainerError::Dockerfile {
        path: dockerfile.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(dockerfile).map_err(|e| err(e.to_string()))?;
    let line = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENTRYPOINT "))
        .next_back()
        .ok_or_else(|| err("no ENTRYPOINT".into()))?;
    serde_json::from_str(line).map_err(|e| err(format!("ENTRYPOINT not in exec (JSON) form: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const POD: PodIdentity = PodIdentity {
        name: "p-1",
        namespace: "kube-system",
        node: "node-a",
    };

    #[test]
    fn env_resolves_values_and_downward_fields_and_refuses_the_rest() {
        let c = json!({"env": [
            {"name": "A", "value": "x"},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ], "args": ["--node=$(NODE)", "--ns", "$(NS)", "$(UNSET)"]});
        let env = env(&c, &POD).unwrap();
        assert_eq!(env["A"], "x");
        assert_eq!(env["NODE"], "node-a");
        assert_eq!(
            args(&c, &env).unwrap(),
            ["--node=node-a", "--ns", "kube-system", "$(UNSET)"]
        );
        let bad = json!({"env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s"}}}]});
        assert!(matches!(
            super::env(&bad, &POD),
            Err(ContainerError::EnvSource { name, .. }) if name == "S"
        ));
    }

    #[test]
    fn probes_resolve_numbered_and_named_ports() {
        let c = json!({
            "ports": [{"name": "http", "containerPort": 9099}],
            "readinessProbe": {"httpGet": {"port": "http", "path": "/readyz"}},
            "livenessProbe": {"httpGet": {"port": 8080, "path": "/healthz"}},
            "startupProbe": {"httpGet": {"port": "nope", "path": "/"}},
        });
        assert_eq!(
            http_probe(&c, "readinessProbe").unwrap(),
            (9099, "/readyz".into())
        );
        assert_eq!(
            http_probe(&c, "livenessProbe").unwrap(),
            (8080, "/healthz".into())
        );
        assert!(http_probe(&c, "startupProbe").is_err());
    }

    #[test]
    fn the_last_exec_form_entrypoint_wins() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("Dockerfile");
        std::fs::write(
            &f,
            "FROM a AS build\nENTRYPOINT [\"/bin/x\"]\nFROM b\nENTRYPOINT [\"/usr/local/bin/y\", \"-v\"]\n",
        )
        .unwrap();
        assert_eq!(
            dockerfile_entrypoint(&f).unwrap(),
            ["/usr/local/bin/y", "-v"]
        );
        std::fs::write(&f, "FROM b\nENTRYPOINT /bin/sh -c y\n").unwrap();
        assert!(dockerfile_entrypoint(&f).is_err());
    }
}
