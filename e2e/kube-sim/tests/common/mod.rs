//! Shared helpers for the kube-sim integration tests: start an emulator, send raw requests, and
//! the test CRD fixtures (written here, independent of `tabby-api`).

#![allow(dead_code)]

use std::time::Duration;

use http::Request;
use serde_json::{Value, json};
use tabby_kube_sim::{Config, KubeSim};

/// Starts an emulator with short bookmark intervals, suitable for tests.
pub async fn start() -> KubeSim {
    start_with(Config {
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    })
    .await
}

/// Starts an emulator with a given configuration.
pub async fn start_with(config: Config) -> KubeSim {
    KubeSim::start(config).await.expect("start kube-sim")
}

/// Sends a raw request and returns status code and JSON body (Null if the body is not JSON).
pub async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let mut req = Request::builder().method(method).uri(path);
    if body.is_some() {
        req = req.header("content-type", content_type);
    }
    let req = req.body(kube::client::Body::from(bytes)).unwrap();
    let resp = client.send(req).await.expect("send");
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await.expect("body");
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A raw request with extra headers (e.g. `Accept` for Tables).
pub async fn raw_with(
    client: &kube::Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Value) {
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(kube::client::Body::from(bytes)).unwrap();
    let resp = client.send(req).await.expect("send");
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await.expect("body");
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A cluster-scoped test CRD shaped like Tabby's (status subresource, printer columns, defaults,
/// enums, CEL rules including Kubernetes CIDR functions and a transition rule).
pub fn pool_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "pools.test.tabby.dev"},
        "spec": {
            "group": "test.tabby.dev",
            "scope": "Cluster",
            "names": {"plural": "pools", "singular": "pool", "kind": "Pool", "listKind": "PoolList", "shortNames": ["tp"]},
            "versions": [{
                "name": "v1alpha1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "CIDR", "type": "string", "jsonPath": ".spec.cidr"},
                    {"name": "Block", "type": "integer", "jsonPath": ".spec.blockSize"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["cidr"],
                            "properties": {
                                "cidr": {"type": "string", "x-kubernetes-validations": [
                                    {"rule": "isCIDR(self) && string(cidr(self).masked()) == self", "message": "must be a CIDR with no host bits set"},
                                    {"rule": "self == oldSelf", "message": "cidr is immutable"}
                                ]},
                                "blockSize": {"type": "integer", "minimum": 20, "maximum": 32, "default": 26},
                                "mode": {"type": "string", "enum": ["Always", "Never", "CrossSubnet"], "default": "Never"},
                                "disabled": {"type": "boolean"},
                                "nodeSelector": {"type": "string", "maxLength": 253}
                            },
                            "x-kubernetes-validations": [
                                {"rule": "cidr(self.cidr).prefixLength() <= self.blockSize", "message": "blockSize must not be shorter than the pool prefix"}
                            ]
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "allocatedBlocks": {"type": "integer"},
                                "conditions": {"type": "array", "items": {"type": "object", "properties": {
                                    "type": {"type": "string"}, "status": {"type": "string"}, "reason": {"type": "string"}
                                }}}
                            }
                        }
                    }
                }}
            }]
        }
    })
}

/// A namespaced CRD without a status subresource and with unknown-field preservation.
pub fn note_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "notes.test.tabby.dev"},
        "spec": {
            "group": "test.tabby.dev",
            "scope": "Namespaced",
            "names": {"plural": "notes", "singular": "note", "kind": "Note", "listKind": "NoteList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }}}
            }]
        }
    })
}

/// A Pool object.
pub fn pool(name: &str, cidr: &str) -> Value {
    json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": name}, "spec": {"cidr": cidr}})
}

/// A Node object.
pub fn node(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]}})
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client without kube's default retry of 429/5xx answers (to observe injected faults).
pub async fn client_no_retry(sim: &KubeSim) -> kube::Client {
    let mut cfg = kube::Config::from_custom_kubeconfig(
        sim.kubeconfig(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    cfg.default_retry = false;
    kube::Client::try_from(cfg).unwrap()
}
