//! The API-convention table: each case sends one request to the emulator and names the behaviour
//! of the real kube-apiserver it mirrors. Cases run in order against one emulator; `{{name.rv}}`
//! and `{{name.uid}}` in a path or body refer to the object a previous case saved as `name`.

mod common;

use std::collections::HashMap;

use serde_json::{Value, json};

use common::{note_crd, pool, pool_crd, raw, raw_with};

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";
const JSONPATCH: &str = "application/json-patch+json";
const SMP: &str = "application/strategic-merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

const POOLS: &str = "/apis/test.tabby.dev/v1alpha1/pools";

struct Case {
    /// What is being checked.
    name: &'static str,
    /// The real-server behaviour this mirrors.
    mirrors: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: Option<Value>,
    code: u16,
    /// Expected Status `reason` for failures.
    reason: Option<&'static str>,
    /// Extra assertion on the response body.
    check: fn(&Value) -> bool,
    /// Save the response's resourceVersion/uid under this name.
    save: Option<&'static str>,
}

fn ok(_: &Value) -> bool {
    true
}

fn case(
    name: &'static str,
    mirrors: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    code: u16,
) -> Case {
    let content_type = match method {
        "PATCH" => MERGE,
        _ => JSON,
    };
    Case {
        name,
        mirrors,
        method,
        path,
        content_type,
        body,
        code,
        reason: None,
        check: ok,
        save: None,
    }
}

impl Case {
    fn reason(mut self, r: &'static str) -> Self {
        self.reason = Some(r);
        self
    }
    fn check(mut self, f: fn(&Value) -> bool) -> Self {
        self.check = f;
        self
    }
    fn save(mut self, s: &'static str) -> Self {
        self.save = Some(s);
        self
    }
    fn ct(mut self, ct: &'static str) -> Self {
        self.content_type = ct;
        self
    }
}

fn has_cause(v: &Value, field: &str, reason: &str) -> bool {
    v["details"]["causes"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["field"] == field && c["reason"] == reason)
    })
}

fn message_has(v: &Value, s: &str) -> bool {
    v["message"].as_str().is_some_and(|m| m.contains(s))
}

fn cases() -> Vec<Case> {
    let crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let mut bad_cel = pool_crd();
    bad_cel["metadata"]["name"] = json!("badcels.test.tabby.dev");
    bad_cel["spec"]["names"] = json!({"plural": "badcels", "kind": "BadCel"});
    bad_cel["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] =
        json!([{"rule": "self.cidr ==", "message": "x"}]);
    let mut bad_name_crd = note_crd();
    bad_name_crd["metadata"]["name"] = json!("wrong.test.tabby.dev");
    vec![
        case("create CRD", "apiextensions-apiserver accepts a structural CRD and reports Established/NamesAccepted", "POST", crd_path, Some(pool_crd()), 201)
            .check(|v| v["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"))),
        case("create namespaced CRD", "CRDs may be Namespaced", "POST", crd_path, Some(note_crd()), 201),
        case("CRD with uncompilable CEL rule", "CRD validation compiles x-kubernetes-validations and rejects syntax errors with 422", "POST", crd_path, Some(bad_cel), 422).reason("Invalid"),
        case("CRD name must be plural.group", "CRD metadata.name must equal spec.names.plural + '.' + spec.group", "POST", crd_path, Some(bad_name_crd), 422)
            .check(|v| has_cause(v, "metadata.name", "FieldValueInvalid")),
        case("group discovery", "/apis/<group>/<version> lists the CRD's resources and its status subresource", "GET", "/apis/test.tabby.dev/v1alpha1", None, 200)
            .check(|v| {
                let names: Vec<&str> = v["resources"].as_array().map(|r| r.iter().filter_map(|x| x["name"].as_str()).collect()).unwrap_or_default();
                names.contains(&"pools") && names.contains(&"pools/status") && v["resources"][0]["namespaced"] == false
            }),
        case("create applies defaults", "structural schema defaults are applied on create; uid/creationTimestamp/generation=1 are set", "POST", POOLS, Some(pool("p1", "10.0.0.0/16")), 201)
            .check(|v| v["spec"]["blockSize"] == 26 && v["spec"]["mode"] == "Never" && v["metadata"]["generation"] == 1 && v["metadata"]["uid"].is_string() && v["metadata"]["creationTimestamp"].is_string())
            .save("p1"),
        case("create existing name", "create of an existing name is 409 AlreadyExists", "POST", POOLS, Some(pool("p1", "10.0.0.0/16")), 409).reason("AlreadyExists")
            .check(|v| v["message"] == "pools.test.tabby.dev \"p1\" already exists"),
        case("CEL rule with Kubernetes cidr library", "x-kubernetes-validations failures are 422 with the rule's message as the cause", "POST", POOLS, Some(pool("p2", "10.0.0.1/16")), 422).reason("Invalid")
            .check(|v| has_cause(v, "spec.cidr", "FieldValueInvalid") && message_has(v, "must be a CIDR with no host bits set")),
        case("required field", "required properties missing are FieldValueRequired", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p2"}, "spec": {}})), 422)
            .check(|v| has_cause(v, "spec.cidr", "FieldValueRequired")),
        case("maximum", "numeric bounds are FieldValueInvalid", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p2"}, "spec": {"cidr": "10.0.0.0/16", "blockSize": 40}})), 422)
            .check(|v| has_cause(v, "spec.blockSize", "FieldValueInvalid")),
        case("enum", "enum violations are FieldValueNotSupported", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p2"}, "spec": {"cidr": "10.0.0.0/16", "mode": "Sometimes"}})), 422)
            .check(|v| has_cause(v, "spec.mode", "FieldValueNotSupported")),
        case("type", "wrong JSON types are FieldValueTypeInvalid", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p2"}, "spec": {"cidr": "10.0.0.0/16", "disabled": "yes"}})), 422)
            .check(|v| has_cause(v, "spec.disabled", "FieldValueTypeInvalid")),
        case("object-level CEL rule", "rules on an object see sibling fields through self", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p2"}, "spec": {"cidr": "10.0.0.0/24", "blockSize": 20}})), 422)
            .check(|v| message_has(v, "blockSize must not be shorter than the pool prefix")),
        case("unknown fields are pruned", "fields not in the structural schema are dropped silently by default", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p3"}, "spec": {"cidr": "10.1.0.0/16", "bogus": 1}, "extra": true})), 201)
            .check(|v| v["spec"].get("bogus").is_none() && v.get("extra").is_none()),
        case("fieldValidation=Strict", "with fieldValidation=Strict unknown fields are a 400 strict decoding error", "POST", "/apis/test.tabby.dev/v1alpha1/pools?fieldValidation=Strict", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p4"}, "spec": {"cidr": "10.1.0.0/16", "bogus": 1}})), 400)
            .reason("BadRequest").check(|v| message_has(v, "unknown field \"spec.bogus\"")),
        case("status dropped on create", "with the status subresource enabled, create ignores status", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p5"}, "spec": {"cidr": "10.2.0.0/16"}, "status": {"allocatedBlocks": 3}})), 201)
            .check(|v| v.get("status").is_none()),
        case("resourceVersion on create", "create with metadata.resourceVersion set fails: resourceVersion should not be set on objects to be created", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p6", "resourceVersion": "5"}, "spec": {"cidr": "10.3.0.0/16"}})), 500)
            .check(|v| message_has(v, "resourceVersion should not be set")),
        case("generateName", "generateName gets a random 5-character suffix", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"generateName": "gen-"}, "spec": {"cidr": "10.4.0.0/16"}})), 201)
            .check(|v| v["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("gen-") && n.len() == 9)),
        case("no name", "an object without name or generateName is 422 FieldValueRequired", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {}, "spec": {"cidr": "10.4.0.0/16"}})), 422)
            .check(|v| has_cause(v, "metadata.name", "FieldValueRequired")),
        case("invalid name", "names must be RFC 1123 subdomains", "POST", POOLS, Some(pool("Bad_Name", "10.5.0.0/16")), 422)
            .check(|v| has_cause(v, "metadata.name", "FieldValueInvalid")),
        case("wrong kind", "a body whose kind does not match the resource is rejected with 400", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Note", "metadata": {"name": "x"}})), 400),
        case("get missing", "missing objects are 404 NotFound with <resource>.<group> \"<name>\" not found", "GET", "/apis/test.tabby.dev/v1alpha1/pools/nope", None, 404).reason("NotFound")
            .check(|v| v["message"] == "pools.test.tabby.dev \"nope\" not found" && v["details"]["group"] == "test.tabby.dev"),
        case("unknown resource", "unknown resources are 404", "GET", "/apis/test.tabby.dev/v1alpha1/widgets", None, 404),
        case("update with stale resourceVersion", "PUT with a stale resourceVersion is 409 Conflict (optimistic concurrency)", "PUT", "/apis/test.tabby.dev/v1alpha1/pools/p1", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p1", "resourceVersion": "1"}, "spec": {"cidr": "10.0.0.0/16", "blockSize": 24}})), 409)
            .reason("Conflict").check(|v| message_has(v, "the object has been modified; please apply your changes to the latest version and try again")),
        case("update without resourceVersion", "custom resources do not allow unconditional update: metadata.resourceVersion must be specified", "PUT", "/apis/test.tabby.dev/v1alpha1/pools/p1", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p1"}, "spec": {"cidr": "10.0.0.0/16"}})), 422)
            .check(|v| has_cause(v, "metadata.resourceVersion", "FieldValueInvalid")),
        case("update name mismatch", "the body's name must match the URL", "PUT", "/apis/test.tabby.dev/v1alpha1/pools/p1", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p9", "resourceVersion": "{{p1.rv}}"}, "spec": {"cidr": "10.0.0.0/16"}})), 400),
        case("update bumps generation on spec change", "metadata.generation increments when spec changes", "PUT", "/apis/test.tabby.dev/v1alpha1/pools/p1", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p1", "resourceVersion": "{{p1.rv}}"}, "spec": {"cidr": "10.0.0.0/16", "blockSize": 24}})), 200)
            .check(|v| v["metadata"]["generation"] == 2 && v["spec"]["blockSize"] == 24 && v["spec"]["mode"] == "Never").save("p1"),
        case("transition rule", "oldSelf transition rules are enforced on update", "PUT", "/apis/test.tabby.dev/v1alpha1/pools/p1", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p1", "resourceVersion": "{{p1.rv}}"}, "spec": {"cidr": "10.9.0.0/16", "blockSize": 24}})), 422)
            .check(|v| message_has(v, "cidr is immutable")),
        case("status ignored on main resource", "with the status subresource, changes to status through the main resource are ignored", "PUT", "/apis/test.tabby.dev/v1alpha1/pools/p1", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p1", "resourceVersion": "{{p1.rv}}", "labels": {"team": "net"}}, "spec": {"cidr": "10.0.0.0/16", "blockSize": 24}, "status": {"allocatedBlocks": 9}})), 200)
            .check(|v| v.get("status").is_none() && v["metadata"]["generation"] == 2 && v["metadata"]["labels"]["team"] == "net").save("p1"),
        case("status subresource ignores spec", "PUT /status changes status only; spec changes are ignored and generation does not move", "PUT", "/apis/test.tabby.dev/v1alpha1/pools/p1/status", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p1", "resourceVersion": "{{p1.rv}}"}, "spec": {"cidr": "10.0.0.0/16", "blockSize": 28}, "status": {"allocatedBlocks": 9, "conditions": [{"type": "Ready", "status": "True"}]}})), 200)
            .check(|v| v["status"]["allocatedBlocks"] == 9 && v["spec"]["blockSize"] == 24 && v["metadata"]["generation"] == 2).save("p1"),
        case("status subresource stale rv", "PUT /status is also optimistic-concurrency checked", "PUT", "/apis/test.tabby.dev/v1alpha1/pools/p1/status", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p1", "resourceVersion": "2"}, "status": {"allocatedBlocks": 1}})), 409).reason("Conflict"),
        case("status is validated", "status is validated against the schema on the status subresource", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/p1/status", Some(json!({"status": {"allocatedBlocks": "many"}})), 422)
            .check(|v| has_cause(v, "status.allocatedBlocks", "FieldValueTypeInvalid")),
        case("merge patch of metadata", "a metadata-only merge patch does not bump generation", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/p1", Some(json!({"metadata": {"labels": {"zone": "a"}}})), 200)
            .check(|v| v["metadata"]["labels"]["zone"] == "a" && v["metadata"]["labels"]["team"] == "net" && v["metadata"]["generation"] == 2).save("p1"),
        case("merge patch with stale rv", "a patch that carries a stale metadata.resourceVersion is 409", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/p1", Some(json!({"metadata": {"resourceVersion": "1"}, "spec": {"blockSize": 25}})), 409).reason("Conflict"),
        case("json patch test fails", "RFC 6902 test failure rejects the whole patch (422)", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/p1", Some(json!([{"op": "test", "path": "/spec/blockSize", "value": 99}, {"op": "replace", "path": "/spec/blockSize", "value": 30}])), 422).ct(JSONPATCH),
        case("json patch test passes", "RFC 6902 test + replace applies atomically", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/p1", Some(json!([{"op": "test", "path": "/spec/blockSize", "value": 24}, {"op": "replace", "path": "/spec/blockSize", "value": 30}])), 200)
            .ct(JSONPATCH).check(|v| v["spec"]["blockSize"] == 30 && v["metadata"]["generation"] == 3).save("p1"),
        case("strategic merge on a CR", "strategic merge patch is not supported for custom resources: 415", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/p1", Some(json!({"spec": {"blockSize": 25}})), 415).ct(SMP).reason("UnsupportedMediaType"),
        case("patch missing", "patching a missing object is 404", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/nope", Some(json!({"spec": {}})), 404),
        case("apply needs fieldManager", "server-side apply without fieldManager is 400", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/p7", Some(pool("p7", "10.7.0.0/16")), 400).ct(APPLY),
        case("apply creates", "server-side apply creates a missing object (201)", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/p7?fieldManager=alice", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p7", "labels": {"owner": "alice"}}, "spec": {"cidr": "10.7.0.0/16"}})), 201)
            .ct(APPLY).check(|v| v["metadata"]["managedFields"][0]["manager"] == "alice" && v["metadata"]["managedFields"][0]["operation"] == "Apply"),
        case("apply conflict", "applying a field another manager owns with a different value is 409 with FieldManagerConflict causes", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/p7?fieldManager=bob", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p7", "labels": {"owner": "bob"}}, "spec": {"cidr": "10.7.0.0/16", "blockSize": 28}})), 409)
            .ct(APPLY).reason("Conflict").check(|v| has_cause(v, ".metadata.labels.owner", "FieldManagerConflict") && message_has(v, "conflict with \"alice\"")),
        case("apply force", "force=true takes ownership of conflicting fields", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/p7?fieldManager=bob&force=true", Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "p7", "labels": {"owner": "bob"}}, "spec": {"cidr": "10.7.0.0/16", "blockSize": 28}})), 200)
            .ct(APPLY).check(|v| v["spec"]["blockSize"] == 28 && v["metadata"]["labels"]["owner"] == "bob"),
        case("list with label selector", "labelSelector filters lists", "GET", "/apis/test.tabby.dev/v1alpha1/pools?labelSelector=zone%3Da", None, 200)
            .check(|v| v["items"].as_array().is_some_and(|i| i.len() == 1 && i[0]["metadata"]["name"] == "p1") && v["kind"] == "PoolList"),
        case("list with set selector", "labelSelector set-based operators", "GET", "/apis/test.tabby.dev/v1alpha1/pools?labelSelector=zone%20notin%20(a),!team", None, 200)
            .check(|v| v["items"].as_array().is_some_and(|i| !i.is_empty() && i.iter().all(|x| x["metadata"]["name"] != "p1"))),
        case("list with field selector", "fieldSelector metadata.name", "GET", "/apis/test.tabby.dev/v1alpha1/pools?fieldSelector=metadata.name%3Dp3", None, 200)
            .check(|v| v["items"].as_array().is_some_and(|i| i.len() == 1)),
        case("unsupported field selector", "field labels a resource does not index are 400", "GET", "/apis/test.tabby.dev/v1alpha1/pools?fieldSelector=spec.cidr%3Dx", None, 400).reason("BadRequest"),
        case("bad label selector", "malformed label selectors are 400", "GET", "/apis/test.tabby.dev/v1alpha1/pools?labelSelector=a%20in%20b", None, 400),
        case("list limit", "limit returns a continue token and remainingItemCount", "GET", "/apis/test.tabby.dev/v1alpha1/pools?limit=2", None, 200)
            .check(|v| v["items"].as_array().map(Vec::len) == Some(2) && v["metadata"]["continue"].is_string() && v["metadata"]["remainingItemCount"].as_u64().is_some_and(|n| n >= 1)),
        case("create with finalizer", "finalizers are stored as given", "POST", POOLS, Some(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "pf", "finalizers": ["test.tabby.dev/hold"]}, "spec": {"cidr": "10.8.0.0/16"}})), 201).save("pf"),
        case("delete with wrong uid precondition", "DeleteOptions.preconditions.uid mismatch is 409", "DELETE", "/apis/test.tabby.dev/v1alpha1/pools/pf", Some(json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}})), 409)
            .reason("Conflict").check(|v| message_has(v, "Precondition failed: UID in precondition")),
        case("delete with stale rv precondition", "DeleteOptions.preconditions.resourceVersion mismatch is 409", "DELETE", "/apis/test.tabby.dev/v1alpha1/pools/pf", Some(json!({"preconditions": {"resourceVersion": "1"}})), 409).reason("Conflict"),
        case("delete with finalizers", "delete of an object with finalizers sets deletionTimestamp and keeps it", "DELETE", "/apis/test.tabby.dev/v1alpha1/pools/pf", Some(json!({"preconditions": {"uid": "{{pf.uid}}"}})), 200)
            .check(|v| v["metadata"]["deletionTimestamp"].is_string() && v["metadata"]["deletionGracePeriodSeconds"] == 0),
        case("still there", "the object remains while finalizers are present", "GET", "/apis/test.tabby.dev/v1alpha1/pools/pf", None, 200)
            .check(|v| v["metadata"]["deletionTimestamp"].is_string()),
        case("no new finalizers while deleting", "finalizers cannot be added to an object being deleted", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/pf", Some(json!({"metadata": {"finalizers": ["test.tabby.dev/hold", "other"]}})), 422),
        case("removing the last finalizer deletes", "the object disappears once its finalizers are empty", "PATCH", "/apis/test.tabby.dev/v1alpha1/pools/pf", Some(json!({"metadata": {"finalizers": null}})), 200),
        case("gone", "after finalization the object is 404", "GET", "/apis/test.tabby.dev/v1alpha1/pools/pf", None, 404),
        case("delete", "delete without finalizers removes immediately and returns the object", "DELETE", "/apis/test.tabby.dev/v1alpha1/pools/p5", None, 200)
            .check(|v| v["metadata"]["name"] == "p5"),
        case("delete missing", "deleting a missing object is 404", "DELETE", "/apis/test.tabby.dev/v1alpha1/pools/p5", None, 404),
        case("table output", "kubectl get asks for a server-side Table with additionalPrinterColumns", "GET", "/apis/test.tabby.dev/v1alpha1/pools/p1", None, 200)
            .check(|v| {
                let cols: Vec<&str> = v["columnDefinitions"].as_array().map(|c| c.iter().filter_map(|x| x["name"].as_str()).collect()).unwrap_or_default();
                cols == ["Name", "CIDR", "Block", "Ready", "Age"] && v["rows"][0]["cells"][1] == "10.0.0.0/16" && v["rows"][0]["cells"][2] == 30 && v["rows"][0]["cells"][3] == "True"
                    && v["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
            }),
        case("namespace must exist", "creating in a missing namespace is 404 namespaces \"x\" not found", "POST", "/api/v1/namespaces/missing/configmaps", Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})), 404)
            .check(|v| v["message"] == "namespaces \"missing\" not found"),
        case("namespace mismatch", "a body namespace different from the URL's is 400", "POST", "/api/v1/namespaces/default/configmaps", Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "kube-system"}})), 400),
        case("namespaced CR", "namespaced custom resources live under /namespaces/<ns>/; preserve-unknown-fields keeps fields", "POST", "/apis/test.tabby.dev/v1/namespaces/default/notes", Some(json!({"apiVersion": "test.tabby.dev/v1", "kind": "Note", "metadata": {"name": "n1", "labels": {"k": "v"}}, "spec": {"anything": {"goes": [1, 2]}}})), 201)
            .check(|v| v["spec"]["anything"]["goes"][1] == 2 && v["metadata"]["namespace"] == "default"),
        case("status without subresource", "without the status subresource, status is part of the main resource", "PATCH", "/apis/test.tabby.dev/v1/namespaces/default/notes/n1", Some(json!({"status": {"seen": true}})), 200)
            .check(|v| v["status"]["seen"] == true),
        case("no status subresource", "/status is 404 when the CRD does not declare it", "GET", "/apis/test.tabby.dev/v1/namespaces/default/notes/n1/status", None, 404),
        case("secret base64", "Secret data must be base64", "POST", "/api/v1/namespaces/default/secrets", Some(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "not base64!"}})), 400),
        case("builtin unconditional update", "core types allow PUT without resourceVersion (unconditional update)", "POST", "/api/v1/namespaces/default/configmaps", Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}})), 201),
        case("builtin unconditional update (PUT)", "core types allow PUT without resourceVersion (unconditional update)", "PUT", "/api/v1/namespaces/default/configmaps/cm", Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "2"}})), 200)
            .check(|v| v["data"]["a"] == "2"),
        case("node strategic merge", "strategic merge patch merges Node conditions by type", "POST", "/api/v1/nodes", Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}, "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "NetworkUnavailable", "status": "True"}]}})), 201),
        case("node strategic merge (patch)", "strategic merge patch merges Node conditions by type", "PATCH", "/api/v1/nodes/node-a/status", Some(json!({"status": {"conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "TabbyIsUp"}]}})), 200)
            .ct(SMP).check(|v| v["status"]["conditions"].as_array().is_some_and(|c| c.len() == 2 && c[1]["status"] == "False" && c[0]["type"] == "Ready")),
        case("deletecollection", "deletecollection deletes what the selector matches", "DELETE", "/apis/test.tabby.dev/v1alpha1/pools?labelSelector=zone%3Da", None, 200)
            .check(|v| v["items"].as_array().is_some_and(|i| i.len() == 1 && i[0]["metadata"]["name"] == "p1")),
        case("deleted by collection", "objects removed by deletecollection are gone", "GET", "/apis/test.tabby.dev/v1alpha1/pools/p1", None, 404),
        case("delete CRD", "deleting a CRD removes its objects and its endpoints", "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/pools.test.tabby.dev", None, 200),
        case("CRD endpoints gone", "after the CRD is deleted its resources are no longer served", "GET", POOLS, None, 404),
        case("group discovery after delete", "discovery drops the version when its last resource goes", "GET", "/apis/test.tabby.dev/v1alpha1", None, 404),
        case("create namespace", "namespaces are created Active", "POST", "/api/v1/namespaces", Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scratch"}})), 201)
            .check(|v| v["status"]["phase"] == "Active"),
        case("content in namespace", "objects in a namespace", "POST", "/api/v1/namespaces/scratch/configmaps", Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})), 201),
        case("delete namespace", "deleting a namespace deletes its contents (namespace controller) and then the namespace", "DELETE", "/api/v1/namespaces/scratch", None, 200),
        case("namespace contents gone", "namespace contents are removed with it", "GET", "/api/v1/namespaces/scratch/configmaps/x", None, 404),
        case("namespace gone", "an empty terminating namespace is removed", "GET", "/api/v1/namespaces/scratch", None, 404),
    ]
}

fn substitute(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = s.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

#[tokio::test]
async fn api_convention_table() {
    let sim = common::start().await;
    let client = sim.client().await.unwrap();
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut failures = Vec::new();
    let total = cases().len();
    for c in cases() {
        let path = substitute(c.path, &vars);
        let body = c
            .body
            .as_ref()
            .map(|b| serde_json::from_str::<Value>(&substitute(&b.to_string(), &vars)).unwrap());
        let (code, resp) = if c.name == "table output" {
            raw_with(
                &client,
                c.method,
                &path,
                &[(
                    "accept",
                    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
                )],
                None,
            )
            .await
        } else {
            raw(&client, c.method, &path, c.content_type, body.as_ref()).await
        };
        let mut problems = Vec::new();
        if code != c.code {
            problems.push(format!("code {code}, want {}", c.code));
        }
        if let Some(r) = c.reason
            && resp["reason"] != r
        {
            problems.push(format!("reason {}, want {r}", resp["reason"]));
        }
        if code >= 400 && resp["kind"] != "Status" {
            problems.push("error body is not a Status".into());
        }
        if !(c.check)(&resp) {
            problems.push("body check failed".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "[{}] (mirrors: {}): {}\n    response: {resp}",
                c.name,
                c.mirrors,
                problems.join("; ")
            ));
        }
        if let Some(s) = c.save {
            if let Some(rv) = resp["metadata"]["resourceVersion"].as_str() {
                vars.insert(format!("{s}.rv"), rv.to_owned());
            }
            if let Some(uid) = resp["metadata"]["uid"].as_str() {
                vars.insert(format!("{s}.uid"), uid.to_owned());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} convention cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    sim.shutdown().await;
}

/// resourceVersion semantics that need comparisons between responses.
#[tokio::test]
async fn resource_version_is_global_monotonic_and_noop_updates_keep_it() {
    let sim = common::start().await;
    let client = sim.client().await.unwrap();
    let (_, a) = raw(&client, "POST", "/api/v1/namespaces/default/configmaps", JSON, Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}}))).await;
    let (_, n) = raw(
        &client,
        "POST",
        "/api/v1/nodes",
        JSON,
        Some(&common::node("n1", json!({}))),
    )
    .await;
    let rv_a: u64 = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let rv_n: u64 = n["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv_n > rv_a, "one counter across resource types");
    // A no-op update keeps the resourceVersion (no new event), as etcd-backed storage does.
    let (code, same) = raw(
        &client,
        "PUT",
        "/api/v1/namespaces/default/configmaps/a",
        JSON,
        Some(&a),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        same["metadata"]["resourceVersion"],
        a["metadata"]["resourceVersion"]
    );
    // The list resourceVersion is the global one.
    let (_, list) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        JSON,
        None,
    )
    .await;
    let list_rv: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(list_rv >= rv_n);
    // Continue tokens expire when the history they refer to is compacted (410 Expired).
    for i in 0..3 {
        raw(&client, "POST", "/api/v1/namespaces/default/configmaps", JSON, Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}}))).await;
    }
    let (_, page) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps?limit=2",
        JSON,
        None,
    )
    .await;
    let token = page["metadata"]["continue"].as_str().unwrap().to_owned();
    let (code, page2) = raw(
        &client,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}"),
        JSON,
        None,
    )
    .await;
    assert_eq!(code, 200);
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["items"].as_array().unwrap())
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "c0", "c1", "c2"]);
    sim.compact();
    raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        JSON,
        Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}})),
    )
    .await;
    let (code, gone) = raw(
        &client,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}"),
        JSON,
        None,
    )
    .await;
    assert_eq!(code, 410, "{gone}");
    assert_eq!(gone["reason"], "Expired");
    sim.shutdown().await;
}

#[tokio::test]
async fn token_auth_and_faults() {
    let sim = common::start_with(tabby_kube_sim::Config {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let client = common::client_no_retry(&sim).await;
    let (code, _) = raw(&client, "GET", "/api/v1/nodes", JSON, None).await;
    assert_eq!(code, 200, "the kubeconfig carries the token");
    let mut anon_cfg = kube::Config::new(sim.base_url().parse().unwrap());
    anon_cfg.default_retry = false;
    let anonymous = kube::Client::try_from(anon_cfg).unwrap();
    let (code, body) = raw(&anonymous, "GET", "/api/v1/nodes", JSON, None).await;
    assert_eq!(code, 401);
    assert_eq!(body["reason"], "Unauthorized");

    sim.set_faults(tabby_kube_sim::Faults {
        error_rate: 1.0,
        error_code: 429,
        ..Default::default()
    });
    let (code, body) = raw(&client, "GET", "/api/v1/nodes", JSON, None).await;
    assert_eq!(code, 429);
    assert_eq!(body["reason"], "TooManyRequests");
    sim.set_faults(tabby_kube_sim::Faults {
        error_rate: 1.0,
        error_code: 500,
        verbs: vec!["create".into()],
        ..Default::default()
    });
    assert_eq!(
        raw(&client, "GET", "/api/v1/nodes", JSON, None).await.0,
        200,
        "only create is faulted"
    );
    assert_eq!(
        raw(
            &client,
            "POST",
            "/api/v1/nodes",
            JSON,
            Some(&common::node("n", json!({})))
        )
        .await
        .0,
        500
    );
    sim.set_faults(tabby_kube_sim::Faults {
        delay_ms: 150,
        ..Default::default()
    });
    let t0 = std::time::Instant::now();
    assert_eq!(
        raw(&client, "GET", "/api/v1/nodes", JSON, None).await.0,
        200
    );
    assert!(t0.elapsed() >= std::time::Duration::from_millis(150));
    sim.set_faults(Default::default());
    let stats = sim.stats();
    assert!(
        stats.get("list nodes").copied().unwrap_or(0) >= 4,
        "{stats:?}"
    );
    assert_eq!(stats.get("create nodes").copied(), Some(1));
    // The admin endpoint serves the same counts (token required).
    let (code, admin) = raw(&client, "GET", "/_sim/stats", JSON, None).await;
    assert_eq!(code, 200);
    assert!(admin["list nodes"].as_u64().is_some_and(|n| n >= 4));
    assert_eq!(
        raw(&anonymous, "GET", "/_sim/stats", JSON, None).await.0,
        401
    );
    let (code, f) = raw(
        &client,
        "PUT",
        "/_sim/faults",
        JSON,
        Some(&json!({"errorRate": 2.0})),
    )
    .await;
    assert_eq!(code, 400, "{f}");
    sim.shutdown().await;
}

#[tokio::test]
async fn discovery_documents() {
    let sim = common::start().await;
    let client = sim.client().await.unwrap();
    let (code, v) = raw(&client, "GET", "/version", JSON, None).await;
    assert_eq!((code, v["major"].as_str()), (200, Some("1")));
    let (_, api) = raw(&client, "GET", "/api", JSON, None).await;
    assert_eq!(api["versions"], json!(["v1"]));
    let (_, core) = raw(&client, "GET", "/api/v1", JSON, None).await;
    let nodes = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "nodes")
        .unwrap()
        .clone();
    assert_eq!(nodes["namespaced"], false);
    assert_eq!(nodes["shortNames"], json!(["no"]));
    let (_, groups) = raw(&client, "GET", "/apis", JSON, None).await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(
        names.contains(&"coordination.k8s.io") && names.contains(&"apiextensions.k8s.io"),
        "{names:?}"
    );
    // kube's discovery runs unchanged.
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("coordination.k8s.io"));
    sim.shutdown().await;
}

/// A Secret's `stringData` is merged into `data` (base64, its keys winning) on create and on
/// patch, and never stored; a non-string value is refused — as the real API server does.
#[tokio::test]
async fn secret_string_data_folds_into_data() {
    let sim = common::start().await;
    let client = sim.client().await.unwrap();
    let path = "/api/v1/namespaces/default/secrets";
    let (code, body) = raw(
        &client,
        "POST",
        path,
        "application/json",
        Some(
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pw"},
            "data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "sekret"}}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (_, got) = raw(&client, "GET", &format!("{path}/pw"), "", None).await;
    assert_eq!(got["data"], json!({"a": "eA==", "b": "c2VrcmV0"}), "{got}");
    assert!(got.get("stringData").is_none(), "{got}");

    let (code, body) = raw(
        &client,
        "PATCH",
        &format!("{path}/pw"),
        "application/merge-patch+json",
        Some(&json!({"stringData": {"a": "new"}})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({"a": "bmV3", "b": "c2VrcmV0"}),
        "{body}"
    );
    assert!(body.get("stringData").is_none(), "{body}");

    let (code, body) = raw(
        &client,
        "POST",
        path,
        "application/json",
        Some(
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"},
            "stringData": {"k": 5}}),
        ),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("stringData.k"),
        "{body}"
    );
}
