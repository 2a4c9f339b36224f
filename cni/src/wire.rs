//! The shim ↔ agent exchange on the unix socket: one JSON request, one JSON answer, one
//! connection per CNI invocation.
//!
//! Owns the message shapes and their size bounds only; the socket handling lives in the shim
//! (`main.rs`) and in [`crate::server`]. The shim forwards the raw `CNI_*` variables and stdin so
//! the agent validates them with the same [`crate::spec`] code, trusting nothing it receives.
//!
//! Framing: the client writes the request and shuts down its writing half; the server answers
//! and closes. Both sides cap what they read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::{CniError, ENV_VARS, MAX_CONFIG_BYTES};

/// Largest request the agent reads: the configuration plus the environment and JSON quoting.
pub const MAX_REQUEST_BYTES: usize = 2 * MAX_CONFIG_BYTES + 64 * 1024;
/// Largest answer the shim reads.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// What the shim sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRequest {
    /// The `CNI_*` variables that were set, verbatim.
    pub env: BTreeMap<String, String>,
    /// stdin, verbatim (CNI configurations are JSON, hence UTF-8).
    pub stdin: String,
}

impl WireRequest {
    /// Collects the `CNI_*` variables through `get`.
    pub fn new(get: impl Fn(&str) -> Option<String>, stdin: String) -> WireRequest {
        let env = ENV_VARS
            .iter()
            .filter_map(|k| get(k).map(|v| (k.to_string(), v)))
            .collect();
        WireRequest { env, stdin }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.env.get(key).cloned()
    }
}

/// What the agent answers: what the shim prints on stdout (nothing for a bare success), or an
/// error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireResponse {
    Ok(Option<Value>),
    Error(CniError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ErrorCode;

    #[test]
    fn request_keeps_only_cni_variables() {
        let get = |k: &str| match k {
            "CNI_COMMAND" => Some("ADD".to_string()),
            "CNI_IFNAME" => Some("eth0".to_string()),
            "HOME" => Some("/root".to_string()),
            _ => None,
        };
        let r = WireRequest::new(get, "{}".into());
        assert_eq!(r.env.len(), 2);
        assert_eq!(r.get("CNI_COMMAND").as_deref(), Some("ADD"));
        assert_eq!(r.get("HOME"), None);
    }

    #[test]
    fn responses_round_trip() {
        for r in [
            WireResponse::Ok(None),
            WireResponse::Ok(Some(serde_json::json!({"cniVersion": "1.0.0"}))),
            WireResponse::Error(CniError::new(ErrorCode::TRY_AGAIN_LATER, "later")),
        ] {
            let s = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<WireResponse>(&s).unwrap(), r);
        }
    }
}
