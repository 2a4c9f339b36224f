//! HTTP edge and verb semantics: routing of Kubernetes API paths, authentication, fault injection,
//! request accounting, and the get/list/create/update/patch/delete logic over [`State`].
//!
//! Owns the rules of the API conventions (optimistic concurrency, generation, status subresource,
//! finalizers, CRD lifecycle). Storage mechanics live in `crate::store`, schema handling in
//! `crate::schema`, watch streaming in `crate::watch`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State as AxState};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch as tokio_watch};

use crate::apply;
use crate::error::{ApiError, Cause, success_status};
use crate::patch;
use crate::render;
use crate::resources::{self, GroupResource, ResourceType};
use crate::schema;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventType, State};

/// Most distinct `verb resource` keys the request log keeps.
const MAX_STATS_KEYS: usize = 4096;

/// Largest accepted request body (the real server's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Run-time fault injection settings.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Delay before answering every API request, in milliseconds.
    pub delay_ms: u64,
    /// Fraction (0..=1) of API requests answered with `error_code` instead.
    pub error_rate: f64,
    /// 500 or 429 (anything else is treated as 500).
    pub error_code: u16,
    /// Only inject errors on these verbs (empty: all verbs).
    pub verbs: Vec<String>,
}

/// Request counts per `verb resource`.
pub type Stats = BTreeMap<String, u64>;

/// Everything the handlers share.
pub struct Shared {
    /// Objects, registry, history.
    pub state: Mutex<State>,
    /// Live event feed.
    pub events: broadcast::Sender<Arc<Event>>,
    /// Fault injection settings.
    pub faults: Mutex<Faults>,
    /// Request counts.
    pub stats: Mutex<Stats>,
    /// Bumped to end every open watch.
    pub drop_watches: tokio_watch::Sender<u64>,
    /// Bearer token required on every request, if set.
    pub token: Option<String>,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
    /// Set on every write; cleared when a snapshot is written.
    pub dirty: AtomicBool,
    /// `host:port` the server listens on (for `/api` discovery).
    pub address: Mutex<String>,
    /// Where snapshots go, if persistence is on.
    pub data_dir: Option<std::path::PathBuf>,
}

impl Shared {
    /// Locks the state (a poisoned lock is recovered: the state is only mutated through complete
    /// operations).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, key: String) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        // Keys come from request paths: cap how many distinct ones a client can make us keep.
        if s.len() < MAX_STATS_KEYS || s.contains_key(&key) {
            *s.entry(key).or_insert(0) += 1;
        }
    }

    /// Ends every open watch (clients reconnect from their last resourceVersion).
    pub fn drop_all_watches(&self) {
        self.drop_watches.send_modify(|g| *g += 1);
    }
}

/// RFC 3339 timestamp with second precision, as `metav1.Time` serializes.
pub fn now_rfc3339() -> String {
    let ts = jiff::Timestamp::now();
    jiff::Timestamp::from_second(ts.as_second())
        .unwrap_or(ts)
        .to_string()
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Renders an error as a Status response.
pub fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(code, &e.to_status());
    if e.code == 429 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    }
    resp
}

/// Percent-decoded query parameters (last one wins).
pub fn parse_query(q: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode_component(k), decode_component(v));
    }
    out
}

fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed resource request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Plural resource name.
    pub resource: String,
    /// Object name.
    pub name: Option<String>,
    /// Subresource (`status`).
    pub subresource: Option<String>,
}

/// What a path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<g>/<v>`
    Resources(String, String),
    /// `/healthz`, `/readyz`, `/livez`
    Health,
    /// `/openapi/v3`
    OpenApiRoot,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/<g>/<v>`
    OpenApiGroupVersion(String, String),
    /// An object or collection.
    Resource(Target),
}

/// Parses a request path.
pub fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "readyz" | "livez", ..] => return Some(Route::Health),
        ["api"] => return Some(Route::CoreVersions),
        ["openapi", "v3"] => return Some(Route::OpenApiRoot),
        ["openapi", "v3", "api", v] => {
            return Some(Route::OpenApiGroupVersion(String::new(), (*v).to_owned()));
        }
        ["openapi", "v3", "apis", g, v] => {
            return Some(Route::OpenApiGroupVersion((*g).to_owned(), (*v).to_owned()));
        }
        ["apis"] => return Some(Route::Groups),
        ["apis", g] => return Some(Route::Group((*g).to_owned())),
        ["api", v] => return Some(Route::Resources(String::new(), (*v).to_owned())),
        ["apis", g, v] => return Some(Route::Resources((*g).to_owned(), (*v).to_owned())),
        ["api", v, rest @ ..] => (String::new(), (*v).to_owned(), rest),
        ["apis", g, v, rest @ ..] => ((*g).to_owned(), (*v).to_owned(), rest),
        _ => return None,
    };
    let owned = |s: &&str| (*s).to_owned();
    let t = match rest {
        ["namespaces", ns, res, tail @ ..]
            if !(group.is_empty() && matches!(*res, "status" | "finalize") && tail.is_empty()) =>
        {
            Target {
                group,
                version,
                namespace: Some((*ns).to_owned()),
                resource: (*res).to_owned(),
                name: tail.first().map(owned),
                subresource: tail.get(1).map(owned),
            }
        }
        [res, tail @ ..] => Target {
            group,
            version,
            namespace: None,
            resource: (*res).to_owned(),
            name: tail.first().map(owned),
            subresource: tail.get(1).map(owned),
        },
        [] => return None,
    };
    if rest.len() > 5 {
        return None;
    }
    Some(Route::Resource(t))
}

/// A request after HTTP parsing.
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Resource target.
    pub target: Target,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
}

impl ApiRequest {
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
    }

    fn wants_table(&self) -> bool {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| {
                a.split(',')
                    .next()
                    .is_some_and(|first| first.contains("as=Table"))
            })
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }

    /// fieldManager, or the default the real server derives from the User-Agent.
    fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_owned();
        }
        let ua = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        ua.split('/').next().unwrap_or("unknown").to_owned()
    }

    fn body_json(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("request body is empty"));
        }
        let ct = self.content_type();
        let parsed: Result<Value, String> = if ct.contains("yaml") {
            serde_yaml::from_slice::<Value>(&self.body).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice::<Value>(&self.body).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
        })
    }

    fn verb(&self) -> &'static str {
        match (&self.method, self.target.name.is_some()) {
            (&Method::GET, true) => "get",
            (&Method::GET, false) if self.flag("watch") => "watch",
            (&Method::GET, false) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => "unknown",
        }
    }
}

/// The single handler behind every Kubernetes API path.
pub async fn dispatch(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(token) = &shared.token {
        let ok = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t == token);
        if !ok {
            return error_response(&ApiError::unauthorized());
        }
    }
    let path = parts.uri.path().to_owned();
    let Some(route) = route(&path) else {
        return error_response(&ApiError::no_route(&path));
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::new_too_large(&e.to_string())),
    };
    let target = match route {
        Route::Resource(t) => t,
        other => return discovery(&shared, other),
    };
    let req = ApiRequest {
        method: parts.method,
        target,
        query: parse_query(parts.uri.query().unwrap_or("")),
        headers: parts.headers,
        body,
    };
    let verb = req.verb();
    let resource_key = match (&req.target.subresource, req.target.group.as_str()) {
        (Some(s), "") => format!("{}/{s}", req.target.resource),
        (Some(s), g) => format!("{}.{g}/{s}", req.target.resource),
        (None, "") => req.target.resource.clone(),
        (None, g) => format!("{}.{g}", req.target.resource),
    };
    shared.count(format!("{verb} {resource_key}"));
    let faults = shared
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if faults.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.delay_ms)).await;
    }
    if faults.error_rate > 0.0
        && (faults.verbs.is_empty() || faults.verbs.iter().any(|v| v == verb))
        && rand::random::<f64>() < faults.error_rate
    {
        let e = if faults.error_code == 429 {
            ApiError::too_many_requests()
        } else {
            ApiError::internal("injected fault")
        };
        return error_response(&e);
    }
    if verb == "watch" {
        return crate::watch::serve(shared, req);
    }
    match handle(&shared, &req) {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

impl ApiError {
    fn new_too_large(msg: &str) -> ApiError {
        let mut e = ApiError::bad_request(format!("request body too large: {msg}"));
        e.code = 413;
        e.reason = "RequestEntityTooLarge";
        e
    }
}

fn discovery(shared: &Shared, route: Route) -> Response {
    let state = shared.lock();
    let v = match route {
        Route::Version => Some(render::version()),
        Route::Health => return (StatusCode::OK, "ok").into_response(),
        Route::CoreVersions => Some(render::core_versions(
            &shared.address.lock().unwrap_or_else(|p| p.into_inner()),
        )),
        Route::Groups => Some(render::group_list(&state.registry)),
        Route::Group(g) => render::group(&state.registry, &g),
        Route::Resources(g, v) => render::resource_list(&state.registry, &g, &v),
        Route::OpenApiRoot => Some(render::openapi_v3_root(&state.registry)),
        Route::OpenApiGroupVersion(g, v) => {
            render::openapi_v3_group_version(&state.registry, &g, &v)
        }
        Route::Resource(_) => None,
    };
    match v {
        Some(v) => json_response(StatusCode::OK, &v),
        None => error_response(&ApiError::no_route("discovery")),
    }
}

/// Looks up the type of a request, checking scope and subresource.
pub fn resolve(state: &State, t: &Target) -> Result<Arc<ResourceType>, ApiError> {
    let rt = state
        .registry
        .lookup(&t.group, &t.version, &t.resource)
        .ok_or_else(|| ApiError::no_route(&format!("{}/{}/{}", t.group, t.version, t.resource)))?;
    if t.namespace.is_some() && !rt.namespaced {
        return Err(ApiError::no_route(&format!(
            "{} is cluster-scoped",
            t.resource
        )));
    }
    if let Some(sub) = &t.subresource {
        let ok = sub == "status" && rt.version(&t.version).is_some_and(|v| v.status);
        if !ok {
            return Err(ApiError::no_route(&format!("{}/{sub}", t.resource)));
        }
    }
    Ok(rt)
}

/// Returns the object as seen at the requested version (no conversion: only `apiVersion` changes,
/// as with CRD conversion strategy `None`).
pub fn at_version(obj: &Value, rt: &ResourceType, version: &str) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(rt.api_version(version));
    o["kind"] = json!(rt.kind);
    o
}

fn name_ns(obj: &Value) -> (String, String) {
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    (ns, name)
}

fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// RFC 1123 subdomain (names of most objects) or label (namespaces).
fn name_problem(name: &str, label: bool) -> Option<String> {
    let max = if label { 63 } else { 253 };
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label && c == '.'));
    let ends = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() > max {
        return Some(format!("must be no more than {max} characters"));
    }
    if !ok_chars || !ends {
        let what = if label {
            "RFC 1123 label"
        } else {
            "RFC 1123 subdomain"
        };
        return Some(format!(
            "a lowercase {what} must consist of lower case alphanumeric characters, '-'{} and must start and end with an alphanumeric character",
            if label { "" } else { " or '.'" }
        ));
    }
    None
}

fn handle(shared: &Shared, req: &ApiRequest) -> Result<Response, ApiError> {
    if req.verb() == "list" {
        // Lists are serialized after the lock is released: a large list must not stall writers.
        let (rt, listed) = {
            let state = shared.lock();
            let rt = resolve(&state, &req.target)?;
            let listed = list(&state, &rt, req)?;
            (rt, listed)
        };
        return Ok(render_list(&rt, req, listed));
    }
    let mut state = shared.lock();
    let rt = resolve(&state, &req.target)?;
    let resp = match req.verb() {
        "get" => get(&state, &rt, req),
        "create" => create(&mut state, &rt, req),
        "update" => update(&mut state, &rt, req),
        "patch" => patch_verb(&mut state, &rt, req),
        "delete" => delete(&mut state, &rt, req),
        "deletecollection" => delete_collection(&mut state, &rt, req),
        _ => Err(ApiError::method_not_allowed(format!(
            "method {} is not supported here",
            req.method
        ))),
    }?;
    if !matches!(req.verb(), "get" | "list") {
        shared.dirty.store(true, Ordering::Relaxed);
    }
    Ok(resp)
}

fn ns_of(rt: &ResourceType, req: &ApiRequest) -> String {
    if rt.namespaced {
        req.target.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    }
}

fn get(state: &State, rt: &ResourceType, req: &ApiRequest) -> Result<Response, ApiError> {
    let name = req.target.name.as_deref().unwrap_or_default();
    let obj = state
        .get(&rt.gr, &ns_of(rt, req), name)
        .ok_or_else(|| ApiError::not_found(&rt.gr.resource, &rt.gr.group, name))?;
    let out = at_version(&obj, rt, &req.target.version);
    if req.wants_table() {
        let rv = state.rv.to_string();
        return Ok(json_response(
            StatusCode::OK,
            &render::table(
                rt,
                &req.target.version,
                &[&out],
                &rv,
                req.q("includeObject").unwrap_or("Metadata"),
                jiff::Timestamp::now(),
            ),
        ));
    }
    Ok(json_response(StatusCode::OK, &out))
}

type Entry<'a> = (&'a (String, String), &'a Arc<Value>);

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

/// The fields a `fieldSelector` on `rt` at `version` may name besides the metadata ones.
pub fn selectable<'a>(rt: &'a ResourceType, version: &str) -> &'a [String] {
    rt.version(version)
        .or(rt.versions.first())
        .map(|v| v.selectable.as_slice())
        .unwrap_or_default()
}

fn list(state: &State, rt: &ResourceType, req: &ApiRequest) -> Result<Listed, ApiError> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse_for(
        req.q("fieldSelector").unwrap_or(""),
        selectable(rt, &req.target.version),
    )?;
    let limit: usize = match req.q("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    if let Some(rv) = req.q("resourceVersion")
        && rv != "0"
    {
        let want: u64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
        if want > state.rv {
            let mut e = ApiError::internal(format!(
                "Too large resource version: {want}, current: {}",
                state.rv
            ));
            e.code = 504;
            e.reason = "Timeout";
            return Err(e);
        }
    }
    let (list_rv, start) = match req.q("continue") {
        Some(tok) => {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(tok)
                .map_err(|_| {
                    ApiError::bad_request("continue key is not valid: illegal base64 data")
                })?;
            let t: ContinueToken = serde_json::from_slice(&bytes)
                .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
            if t.rv < state.compacted_through {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            (t.rv, Some(t.start))
        }
        None => (state.rv, None),
    };
    let ns = req.target.namespace.clone();
    let mut items: Vec<&Arc<Value>> = Vec::new();
    let mut next_start: Option<String> = None;
    let mut remaining = 0u64;
    if let Some(bucket) = state.bucket(&rt.gr) {
        let iter: Box<dyn Iterator<Item = Entry<'_>>> = match (&start, &ns) {
            (Some(s), _) => {
                let (sns, sname) = s.split_once('/').unwrap_or(("", s.as_str()));
                Box::new(bucket.range((sns.to_owned(), sname.to_owned())..))
            }
            (None, Some(n)) => Box::new(bucket.range((n.clone(), String::new())..)),
            (None, None) => Box::new(bucket.iter()),
        };
        let selective = !labels.0.is_empty() || !fields.0.is_empty();
        for ((ons, oname), obj) in iter {
            if let Some(n) = &ns
                && ons != n
            {
                if ons > n {
                    break;
                }
                continue;
            }
            if selective && (!labels.matches(obj) || !fields.matches(obj)) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                if next_start.is_none() {
                    next_start = Some(format!("{ons}/{oname}"));
                }
                // As on the real server, remainingItemCount is only known without selectors.
                if selective {
                    break;
                }
                remaining += 1;
                continue;
            }
            items.push(obj);
        }
    }
    let rv = list_rv.to_string();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(s) = next_start {
        let tok = serde_json::to_vec(&ContinueToken {
            rv: list_rv,
            start: s,
        })
        .unwrap_or_default();
        meta["continue"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok));
        if !(!labels.0.is_empty() || !fields.0.is_empty()) {
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    Ok(Listed {
        items: items.into_iter().cloned().collect(),
        meta,
    })
}

/// A list result, collected under the state lock and rendered after it is released.
pub struct Listed {
    items: Vec<Arc<Value>>,
    meta: Value,
}

fn render_list(rt: &ResourceType, req: &ApiRequest, listed: Listed) -> Response {
    let version = &req.target.version;
    if req.wants_table() {
        let rendered: Vec<Value> = listed
            .items
            .iter()
            .map(|o| at_version(o, rt, version))
            .collect();
        let refs: Vec<&Value> = rendered.iter().collect();
        let rv = listed.meta["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        return json_response(
            StatusCode::OK,
            &render::table(
                rt,
                version,
                &refs,
                &rv,
                req.q("includeObject").unwrap_or("Metadata"),
                jiff::Timestamp::now(),
            ),
        );
    }
    // Stored objects already carry the storage apiVersion: serialize them in place, without a copy.
    let api_version = rt.api_version(version);
    let mut out = Vec::with_capacity(listed.items.len() * 512 + 256);
    let head = json!({"kind": format!("{}List", rt.kind), "apiVersion": api_version, "metadata": listed.meta});
    let head = serde_json::to_vec(&head).unwrap_or_default();
    // `head` is a JSON object; reopen it to append "items".
    out.extend_from_slice(&head[..head.len().saturating_sub(1)]);
    out.extend_from_slice(b",\"items\":[");
    for (i, o) in listed.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let plain = o.get("apiVersion").and_then(Value::as_str) == Some(api_version.as_str());
        let written = if plain {
            serde_json::to_writer(&mut out, &**o)
        } else {
            serde_json::to_writer(&mut out, &at_version(o, rt, version))
        };
        if written.is_err() {
            return error_response(&ApiError::internal("encoding the list failed"));
        }
    }
    out.extend_from_slice(b"]}");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response()
}

/// Validation and defaulting common to create and update.
fn admit(
    rt: &ResourceType,
    version: &str,
    obj: &mut Value,
    old: Option<&Value>,
    req: &ApiRequest,
) -> Result<(), ApiError> {
    let (_, name) = name_ns(obj);
    let mut causes = Vec::new();
    if let Some(p) = name_problem(&name, rt.gr.resource == "namespaces") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": {p}"),
        ));
    }
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !v.is_string() {
                return Err(ApiError::bad_request(format!(
                    "metadata.labels.{k}: label values must be strings"
                )));
            }
        }
    }
    if let Some(vi) = rt.version(version)
        && let Some(schema) = &vi.schema
    {
        let pruned = schema::prune(schema, obj, true);
        if !pruned.is_empty() && req.q("fieldValidation") == Some("Strict") {
            let list: Vec<String> = pruned
                .iter()
                .map(|p| format!("unknown field \"{p}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
        schema::apply_defaults(schema, obj);
        causes.extend(schema::validate(schema, &vi.rules, obj, old));
    }
    if rt.gr.resource == "secrets" {
        fold_string_data(obj)?;
    }
    if rt.gr.resource == "secrets"
        && let Some(data) = obj.get("data").and_then(Value::as_object)
    {
        for (k, v) in data {
            let ok = v
                .as_str()
                .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data.{k}"
                )));
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&rt.kind, &rt.gr.group, &name, causes))
    }
}

/// Like the API server: a Secret's `stringData` is a write-only convenience, merged into
/// `data` (base64; its keys win) and never stored or returned.
fn fold_string_data(obj: &mut Value) -> Result<(), ApiError> {
    let Some(m) = obj.as_object_mut() else {
        return Ok(());
    };
    let Some(string_data) = m.remove("stringData") else {
        return Ok(());
    };
    let Value::Object(string_data) = string_data else {
        return Err(ApiError::bad_request(
            "Secret in version \"v1\" cannot be handled as a Secret: stringData must be an object",
        ));
    };
    let data = m.entry("data").or_insert_with(|| json!({}));
    if data.is_null() {
        *data = json!({});
    }
    let Some(data) = data.as_object_mut() else {
        return Err(ApiError::bad_request(
            "Secret in version \"v1\" cannot be handled as a Secret: data must be an object",
        ));
    };
    for (k, v) in string_data {
        let Some(text) = v.as_str() else {
            return Err(ApiError::bad_request(format!(
                "Secret in version \"v1\" cannot be handled as a Secret: stringData.{k} must be a string"
            )));
        };
        data.insert(
            k,
            Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
        );
    }
    Ok(())
}

fn check_kind(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data does not match the expected API version: kind {kind:?} sent to {}",
            rt.gr.resource
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
        let (g, v) = av.rsplit_once('/').unwrap_or(("", av));
        if g != rt.gr.group || rt.version(v).is_none() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.api_version(rt.storage_version())
            )));
        }
    }
    if !obj.get("metadata").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

fn namespace_usable(state: &State, ns: &str) -> Result<(), ApiError> {
    let n = state
        .get(&GroupResource::new("", "namespaces"), "", ns)
        .ok_or_else(|| ApiError::not_found("namespaces", "", ns))?;
    if n.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        )));
    }
    Ok(())
}

fn create(state: &mut State, rt: &ResourceType, req: &ApiRequest) -> Result<Response, ApiError> {
    if req.target.name.is_some() || req.target.subresource.is_some() {
        return Err(ApiError::method_not_allowed(
            "POST is not allowed on a named object",
        ));
    }
    let mut obj = req.body_json()?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    check_kind(rt, &obj)?;
    if obj.get("metadata").is_none() {
        obj["metadata"] = json!({});
    }
    let ns = ns_of(rt, req);
    if rt.namespaced {
        match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj["metadata"]["namespace"] = json!(ns),
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    let manager = req.manager();
    let created = create_object(state, rt, &req.target.version, obj, req, |o| {
        apply::record_update(
            None,
            o,
            &manager,
            "",
            &rt.api_version(&req.target.version),
            &now_rfc3339(),
        );
    })?;
    Ok(json_response(
        StatusCode::CREATED,
        &at_version(&created, rt, &req.target.version),
    ))
}

fn create_object(
    state: &mut State,
    rt: &ResourceType,
    version: &str,
    mut obj: Value,
    req: &ApiRequest,
    fields: impl FnOnce(&mut Value),
) -> Result<Arc<Value>, ApiError> {
    let name = match obj.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => match obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
        {
            Some(g) if !g.is_empty() => {
                let suffix: String = (0..5)
                    .map(|_| b"bcdfghjklmnpqrstvwxz2456789"[rand::random_range(0..27usize)] as char)
                    .collect();
                format!("{g}{suffix}")
            }
            _ => {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &rt.gr.group,
                    "",
                    vec![Cause::new(
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )],
                ));
            }
        },
    };
    obj["metadata"]["name"] = json!(name);
    if obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if rt.namespaced {
        namespace_usable(state, &ns)?;
    }
    obj["apiVersion"] = json!(rt.api_version(rt.storage_version()));
    obj["kind"] = json!(rt.kind);
    if rt.custom
        && rt.has_status()
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    admit(rt, version, &mut obj, None, req)?;
    if state.get(&rt.gr, &ns, &name).is_some() {
        return Err(ApiError::already_exists(
            &rt.gr.resource,
            &rt.gr.group,
            &name,
        ));
    }
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        for k in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
        ] {
            meta.remove(k);
        }
    }
    if rt.gr.resource == "namespaces" {
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
    }
    if rt.gr.resource == "pods" && obj.pointer("/status/phase").is_none() {
        obj["status"] = json!({"phase": "Pending"});
    }
    let crd_type = if rt.gr == crd_gr() {
        let t = resources::from_crd(&obj).map_err(|c| resources::crd_invalid(&obj, c))?;
        if let Some(existing) = state.registry.get(&t.gr)
            && !existing.custom
        {
            {
                return Err(ApiError::invalid(
                    "CustomResourceDefinition",
                    "apiextensions.k8s.io",
                    &name,
                    vec![Cause::new(
                        "FieldValueInvalid",
                        "spec.group",
                        "Invalid value: a built-in resource already has this name",
                    )],
                ));
            }
        }
        obj["status"] = crd_status(&obj);
        Some(t)
    } else {
        None
    };
    fields(&mut obj);
    if req.dry_run() {
        return Ok(Arc::new(obj));
    }
    if let Some(t) = crd_type {
        state.registry.insert(t);
    }
    Ok(state.put(&rt.gr, obj, EventType::Added, None))
}

/// group/resource of CRDs.
pub fn crd_gr() -> GroupResource {
    GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions")
}

fn crd_status(crd: &Value) -> Value {
    let now = now_rfc3339();
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now}
        ],
        "storedVersions": stored
    })
}

fn spec_view(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    c
}

fn comparable(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    c
}

/// How a write was produced, for managedFields bookkeeping.
enum Ownership<'a> {
    /// An Update operation by this manager.
    Update(&'a str),
    /// Already computed by server-side apply.
    Applied,
}

/// The update pipeline shared by PUT, PATCH and apply: `new` is the full desired object.
fn update_object(
    state: &mut State,
    rt: &ResourceType,
    req: &ApiRequest,
    current: Arc<Value>,
    mut new: Value,
    require_rv: bool,
    ownership: Ownership<'_>,
) -> Result<Arc<Value>, ApiError> {
    let (ns, name) = name_ns(&current);
    let sub = req.target.subresource.as_deref().unwrap_or("");
    if !new.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    check_kind(rt, &new)?;
    if new.get("metadata").is_none() {
        new["metadata"] = json!({});
    }
    if let Some(body_name) = new.pointer("/metadata/name").and_then(Value::as_str)
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    match new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(rv) if rv.parse::<u64>().ok() != Some(rv_of(&current)) => {
            return Err(ApiError::conflict(
                &rt.gr.resource,
                &rt.gr.group,
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        Some(_) => {}
        None if require_rv && rt.custom => {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.gr.group,
                &name,
                vec![Cause::new(
                    "FieldValueInvalid",
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                )],
            ));
        }
        None => {}
    }
    let has_status = rt.version(&req.target.version).is_some_and(|v| v.status);
    if sub == "status" {
        // The status subresource changes status only (and nothing in metadata but managedFields).
        let status = new.get("status").cloned();
        let managed = new.pointer("/metadata/managedFields").cloned();
        new = (*current).clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        if let (Ownership::Applied, Some(mf)) = (&ownership, managed) {
            new["metadata"]["managedFields"] = mf;
        }
    } else if has_status {
        match current.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    // Fields the client cannot change.
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        let m = new["metadata"].as_object_mut();
        if let Some(m) = m {
            match current.pointer(&format!("/metadata/{k}")) {
                Some(v) => {
                    m.insert(k.into(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
    }
    if rt.gr.resource == "namespaces"
        && let Some(spec) = current.get("spec")
    {
        new["spec"] = spec.clone();
    }
    new["apiVersion"] = json!(rt.api_version(rt.storage_version()));
    new["kind"] = json!(rt.kind);
    admit(rt, &req.target.version, &mut new, Some(&current), req)?;
    let deleting = current.pointer("/metadata/deletionTimestamp").is_some();
    if deleting {
        // Finalizers may only be removed from an object that is being deleted, not added.
        let before: Vec<Value> = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let after: Vec<Value> = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if after.iter().any(|f| !before.contains(f)) {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.gr.group,
                &name,
                vec![Cause::new(
                    "FieldValueForbidden",
                    "metadata.finalizers",
                    "Forbidden: no new finalizers can be added if the object is being deleted",
                )],
            ));
        }
    }
    if spec_view(&new) != spec_view(&current) {
        let g = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        new["metadata"]["generation"] = json!(g + 1);
    }
    let crd_type = if rt.gr == crd_gr() && sub.is_empty() {
        let t = resources::from_crd(&new).map_err(|c| resources::crd_invalid(&new, c))?;
        new["status"] = crd_status(&new);
        Some(t)
    } else {
        None
    };
    match ownership {
        Ownership::Update(manager) => apply::record_update(
            Some(&current),
            &mut new,
            manager,
            sub,
            &rt.api_version(&req.target.version),
            &now_rfc3339(),
        ),
        Ownership::Applied => {}
    }
    if comparable(&new) == comparable(&current)
        && new.pointer("/metadata/managedFields") == current.pointer("/metadata/managedFields")
    {
        // A no-op write: the real server returns the object unchanged, without a new resourceVersion.
        return Ok(current);
    }
    if req.dry_run() {
        return Ok(Arc::new(new));
    }
    if let Some(t) = crd_type {
        state.registry.insert(t);
    }
    let finalizers_empty = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if deleting && finalizers_empty {
        state.put(&rt.gr, new, EventType::Modified, Some(current));
        return Ok(finalize_removal(state, rt, &ns, &name));
    }
    Ok(state.put(&rt.gr, new, EventType::Modified, Some(current)))
}

/// Removes an object for good, with the cascades the real server's controllers perform
/// (namespace contents, CRD instances). Returns the last state.
fn finalize_removal(state: &mut State, rt: &ResourceType, ns: &str, name: &str) -> Arc<Value> {
    let last = state
        .remove(&rt.gr, ns, name)
        .unwrap_or_else(|| Arc::new(Value::Null));
    if rt.gr == crd_gr()
        && let Ok(t) = resources::from_crd(&last)
    {
        {
            let keys: Vec<(String, String)> = state
                .bucket(&t.gr)
                .map(|b| b.keys().cloned().collect())
                .unwrap_or_default();
            for (ons, oname) in keys {
                state.remove(&t.gr, &ons, &oname);
            }
            state.objects.remove(&t.gr);
            state.registry.remove(&t.gr);
        }
    }
    if rt.namespaced && !ns.is_empty() {
        maybe_finish_namespace(state, ns);
    }
    last
}

fn maybe_finish_namespace(state: &mut State, ns: &str) {
    let nsgr = GroupResource::new("", "namespaces");
    let Some(n) = state.get(&nsgr, "", ns) else {
        return;
    };
    if n.pointer("/metadata/deletionTimestamp").is_none() {
        return;
    }
    let empty = state.objects.iter().all(|(gr, bucket)| {
        let namespaced = state.registry.get(gr).is_some_and(|t| t.namespaced);
        !namespaced
            || bucket
                .range((ns.to_owned(), String::new())..)
                .next()
                .is_none_or(|((o, _), _)| o != ns)
    });
    if empty {
        state.remove(&nsgr, "", ns);
    }
}

fn update(state: &mut State, rt: &ResourceType, req: &ApiRequest) -> Result<Response, ApiError> {
    let name = req.target.name.clone().unwrap_or_default();
    let ns = ns_of(rt, req);
    let new = req.body_json()?;
    let Some(current) = state.get(&rt.gr, &ns, &name) else {
        if rt.gr.resource == "events" && req.target.subresource.is_none() {
            return create(
                state,
                rt,
                &ApiRequest {
                    method: Method::POST,
                    target: Target {
                        name: None,
                        ..req.target.clone()
                    },
                    query: req.query.clone(),
                    headers: req.headers.clone(),
                    body: req.body.clone(),
                },
            );
        }
        return Err(ApiError::not_found(&rt.gr.resource, &rt.gr.group, &name));
    };
    let manager = req.manager();
    let out = update_object(
        state,
        rt,
        req,
        current,
        new,
        true,
        Ownership::Update(&manager),
    )?;
    Ok(json_response(
        StatusCode::OK,
        &at_version(&out, rt, &req.target.version),
    ))
}

fn patch_verb(
    state: &mut State,
    rt: &ResourceType,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    let name = req.target.name.clone().unwrap_or_default();
    let ns = ns_of(rt, req);
    let ct = req
        .content_type()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let current = state.get(&rt.gr, &ns, &name);
    let version = req.target.version.clone();
    if ct == "application/apply-patch+yaml" || ct == "application/apply-patch+cbor" {
        let Some(manager) = req.q("fieldManager") else {
            return Err(ApiError::bad_request("PATCH /apply requires fieldManager"));
        };
        let mut config = req.body_json()?;
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "apply configuration must be an object",
            ));
        }
        check_kind(rt, &config)?;
        if config.get("kind").is_none() || config.get("apiVersion").is_none() {
            return Err(ApiError::bad_request(
                "apply configuration must set apiVersion and kind",
            ));
        }
        if config
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_some_and(|n| n != name)
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                config["metadata"]["name"]
            )));
        }
        config["metadata"]["name"] = json!(name);
        if rt.namespaced {
            config["metadata"]["namespace"] = json!(ns);
        }
        let sub = req.target.subresource.clone().unwrap_or_default();
        let has_status = rt.version(&version).is_some_and(|v| v.status);
        let now = now_rfc3339();
        let api_version = rt.api_version(&version);
        let areq = apply::ApplyRequest {
            manager,
            force: req.flag("force"),
            subresource: &sub,
            has_status,
            api_version: &api_version,
            now: &now,
        };
        return match current {
            None => {
                if !sub.is_empty() {
                    return Err(ApiError::not_found(&rt.gr.resource, &rt.gr.group, &name));
                }
                let mut merged = apply::apply(None, &config, &areq)?;
                let managed = merged.pointer("/metadata/managedFields").cloned();
                if let Some(m) = merged["metadata"].as_object_mut() {
                    m.remove("managedFields");
                    m.remove("resourceVersion");
                }
                let created = create_object(state, rt, &version, merged, req, |o| {
                    if let Some(mf) = managed {
                        o["metadata"]["managedFields"] = mf;
                    }
                })?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &at_version(&created, rt, &version),
                ))
            }
            Some(cur) => {
                let live = at_version(&cur, rt, &version);
                let mut merged = apply::apply(Some(&live), &config, &areq)?;
                // Apply carries no precondition unless the configuration names a resourceVersion.
                match config.pointer("/metadata/resourceVersion") {
                    Some(rv) => merged["metadata"]["resourceVersion"] = rv.clone(),
                    None => {
                        if let Some(m) = merged["metadata"].as_object_mut() {
                            m.remove("resourceVersion");
                        }
                    }
                }
                let out = update_object(state, rt, req, cur, merged, false, Ownership::Applied)?;
                Ok(json_response(
                    StatusCode::OK,
                    &at_version(&out, rt, &version),
                ))
            }
        };
    }
    let Some(current) = current else {
        return Err(ApiError::not_found(&rt.gr.resource, &rt.gr.group, &name));
    };
    let body = req.body_json()?;
    let mut target = at_version(&current, rt, &version);
    match ct.as_str() {
        "application/merge-patch+json" => patch::merge_patch(&mut target, &body),
        "application/json-patch+json" => patch::json_patch(&mut target, &body)?,
        "application/strategic-merge-patch+json" => {
            if rt.custom {
                return Err(ApiError::unsupported_media_type(&ct));
            }
            patch::strategic_merge(&mut target, &body)?;
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    // A patch is unconditional unless it sets metadata.resourceVersion itself.
    let rv_in_patch = match ct.as_str() {
        "application/json-patch+json" => {
            target.pointer("/metadata/resourceVersion")
                != current.pointer("/metadata/resourceVersion")
        }
        _ => body.pointer("/metadata/resourceVersion").is_some(),
    };
    if !rv_in_patch && let Some(m) = target["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let manager = req.manager();
    let out = update_object(
        state,
        rt,
        req,
        current,
        target,
        false,
        Ownership::Update(&manager),
    )?;
    Ok(json_response(
        StatusCode::OK,
        &at_version(&out, rt, &version),
    ))
}

fn delete(state: &mut State, rt: &ResourceType, req: &ApiRequest) -> Result<Response, ApiError> {
    if req.target.subresource.is_some() {
        return Err(ApiError::method_not_allowed(
            "DELETE is not allowed on a subresource",
        ));
    }
    let name = req.target.name.clone().unwrap_or_default();
    let ns = ns_of(rt, req);
    let opts: Value = if req.body.is_empty() {
        json!({})
    } else {
        req.body_json()?
    };
    let out = delete_one(state, rt, &ns, &name, &opts, req.dry_run())?;
    match out {
        Deleted::Gone(last) if !rt.custom && rt.gr.resource != "namespaces" => {
            let uid = last
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut status = success_status(&name, &rt.gr.group, &rt.gr.resource, uid);
            if rt.gr.resource == "pods" || rt.gr.resource == "nodes" {
                status = at_version(&last, rt, &req.target.version);
            }
            Ok(json_response(StatusCode::OK, &status))
        }
        Deleted::Gone(last) => Ok(json_response(
            StatusCode::OK,
            &at_version(&last, rt, &req.target.version),
        )),
        Deleted::Pending(obj) => Ok(json_response(
            StatusCode::OK,
            &at_version(&obj, rt, &req.target.version),
        )),
    }
}

enum Deleted {
    Gone(Arc<Value>),
    Pending(Arc<Value>),
}

fn delete_one(
    state: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    opts: &Value,
    dry_run: bool,
) -> Result<Deleted, ApiError> {
    let current = state
        .get(&rt.gr, ns, name)
        .ok_or_else(|| ApiError::not_found(&rt.gr.resource, &rt.gr.group, name))?;
    if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
        let actual = current
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if uid != actual {
            return Err(ApiError::conflict(
                &rt.gr.resource,
                &rt.gr.group,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = opts
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        let actual = rv_of(&current).to_string();
        if rv != actual {
            return Err(ApiError::conflict(
                &rt.gr.resource,
                &rt.gr.group,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    if dry_run {
        return Ok(Deleted::Pending(current));
    }
    let has_finalizers = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let is_namespace = rt.gr.resource == "namespaces";
    if has_finalizers || is_namespace {
        let mut obj = (*current).clone();
        let fresh = current.pointer("/metadata/deletionTimestamp").is_none();
        if fresh {
            obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let g = obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            obj["metadata"]["generation"] = json!(g + 1);
            if is_namespace {
                obj["status"] = json!({"phase": "Terminating"});
            }
            let stored = state.put(&rt.gr, obj, EventType::Modified, Some(current));
            if is_namespace {
                delete_namespace_contents(state, name);
                if state.get(&rt.gr, "", name).is_none() {
                    return Ok(Deleted::Gone(stored));
                }
            }
            return Ok(Deleted::Pending(stored));
        }
        return Ok(Deleted::Pending(current));
    }
    Ok(Deleted::Gone(finalize_removal(state, rt, ns, name)))
}

fn delete_namespace_contents(state: &mut State, ns: &str) {
    let types: Vec<Arc<ResourceType>> = state
        .registry
        .all()
        .filter(|t| t.namespaced)
        .cloned()
        .collect();
    for t in types {
        let keys: Vec<String> = state
            .bucket(&t.gr)
            .map(|b| {
                b.range((ns.to_owned(), String::new())..)
                    .take_while(|((o, _), _)| o == ns)
                    .map(|((_, n), _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        for name in keys {
            // Objects with finalizers stay (Terminating) until their finalizers are removed.
            let _ = delete_one(state, &t, ns, &name, &json!({}), false);
        }
    }
    maybe_finish_namespace(state, ns);
}

fn delete_collection(
    state: &mut State,
    rt: &ResourceType,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse_for(
        req.q("fieldSelector").unwrap_or(""),
        selectable(rt, &req.target.version),
    )?;
    let ns = req.target.namespace.clone();
    let keys: Vec<(String, String)> = state
        .bucket(&rt.gr)
        .map(|b| {
            b.iter()
                .filter(|((o, _), obj)| {
                    ns.as_ref().is_none_or(|n| n == o) && labels.matches(obj) && fields.matches(obj)
                })
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let opts: Value = if req.body.is_empty() {
        json!({})
    } else {
        req.body_json()?
    };
    let mut items = Vec::new();
    for (o, n) in keys {
        match delete_one(state, rt, &o, &n, &opts, req.dry_run())? {
            Deleted::Gone(v) | Deleted::Pending(v) => {
                items.push(at_version(&v, rt, &req.target.version))
            }
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(&req.target.version), "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
    ))
}

/// Creates the namespaces a fresh cluster has.
pub fn bootstrap(state: &mut State) {
    let gr = GroupResource::new("", "namespaces");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if state.get(&gr, "", ns).is_none() {
            let obj = json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "uid": new_uid(), "creationTimestamp": now_rfc3339(), "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}
            });
            state.put(&gr, obj, EventType::Added, None);
        }
    }
}

/// Restores objects from a snapshot (see [`State::snapshot`]), rebuilding CRD types.
pub fn restore(state: &mut State, snap: &Value) -> Result<(), String> {
    let rv = snap
        .get("resourceVersion")
        .and_then(Value::as_u64)
        .ok_or("snapshot has no resourceVersion")?;
    let objects = snap
        .get("objects")
        .and_then(Value::as_array)
        .ok_or("snapshot has no objects")?;
    for entry in objects {
        let group = entry
            .get("group")
            .and_then(Value::as_str)
            .ok_or("snapshot entry without group")?;
        let resource = entry
            .get("resource")
            .and_then(Value::as_str)
            .ok_or("snapshot entry without resource")?;
        let obj = entry.get("object").ok_or("snapshot entry without object")?;
        let gr = GroupResource::new(group, resource);
        if gr == crd_gr() {
            let t =
                resources::from_crd(obj).map_err(|c| format!("snapshot CRD is invalid: {c:?}"))?;
            state.registry.insert(t);
        }
        let (ns, name) = name_ns(obj);
        state
            .objects
            .entry(gr)
            .or_default()
            .insert((ns, name), Arc::new(obj.clone()));
    }
    state.rv = rv;
    state.compacted_through = rv;
    state.history.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t = |g: &str, v: &str, ns: Option<&str>, r: &str, n: Option<&str>, s: Option<&str>| {
            Some(Route::Resource(Target {
                group: g.into(),
                version: v.into(),
                namespace: ns.map(Into::into),
                resource: r.into(),
                name: n.map(Into::into),
                subresource: s.map(Into::into),
            }))
        };
        assert_eq!(
            route("/api/v1/nodes"),
            t("", "v1", None, "nodes", None, None)
        );
        assert_eq!(
            route("/api/v1/namespaces"),
            t("", "v1", None, "namespaces", None, None)
        );
        assert_eq!(
            route("/api/v1/namespaces/default"),
            t("", "v1", None, "namespaces", Some("default"), None)
        );
        assert_eq!(
            route("/api/v1/namespaces/default/status"),
            t(
                "",
                "v1",
                None,
                "namespaces",
                Some("default"),
                Some("status")
            )
        );
        assert_eq!(
            route("/api/v1/namespaces/x/secrets/s"),
            t("", "v1", Some("x"), "secrets", Some("s"), None)
        );
        assert_eq!(
            route("/apis/tabby.dev/v1alpha1/ipamblocks/b/status"),
            t(
                "tabby.dev",
                "v1alpha1",
                None,
                "ipamblocks",
                Some("b"),
                Some("status")
            )
        );
        assert_eq!(
            route("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"),
            t(
                "coordination.k8s.io",
                "v1",
                Some("kube-system"),
                "leases",
                None,
                None
            )
        );
        assert_eq!(route("/apis"), Some(Route::Groups));
        assert_eq!(
            route("/apis/tabby.dev"),
            Some(Route::Group("tabby.dev".into()))
        );
        assert_eq!(
            route("/apis/tabby.dev/v1alpha1"),
            Some(Route::Resources("tabby.dev".into(), "v1alpha1".into()))
        );
        assert_eq!(route("/version"), Some(Route::Version));
        assert_eq!(route("/nope"), None);
    }

    #[test]
    fn query_decoding() {
        let q = parse_query("labelSelector=a%3Db%2Cc+in+%28x%29&watch=1&x");
        assert_eq!(q["labelSelector"], "a=b,c in (x)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "");
        assert_eq!(parse_query("a=%zz%")["a"], "%zz%");
    }

    #[test]
    fn names() {
        assert!(name_problem("node-1.example", false).is_none());
        assert!(name_problem("Node", false).is_some());
        assert!(name_problem("a.b", true).is_some());
        assert!(name_problem("-a", false).is_some());
        assert!(name_problem(&"a".repeat(254), false).is_some());
    }
}
