//! Events (events.k8s.io/v1) about the node's networking, on the Node object — what
//! `kubectl describe node` shows under "Events".
//!
//! Deduplicated the way the API intends (an `EventSeries`): the first occurrence of a
//! (type, reason, note) creates an Event; repeats within `series_ttl` patch that Event's
//! `series.count` and `series.lastObservedTime` instead of creating new ones, and at most once per
//! `patch_interval` per Event (repeats in between are counted and carried by the next patch). A
//! peer flapping every second therefore costs one Event and a patch every few seconds, never a
//! flood. (`kube::runtime::events::Recorder` keys its cache without the note, so two different
//! notes with one reason would patch the first note's Event; and it patches on every repeat —
//! hence this small recorder.)
//!
//! API calls (in `tabby_agent::daemon::API_CALLS`): create and patch `events.events.k8s.io`,
//! get `nodes` (once, for the Node's uid). Failures are logged, never returned: an Event is
//! best-effort and must not stall the caller's loop beyond one request.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::truncate_to;

/// Limits of the Event API (events.k8s.io/v1 validation).
const MAX_NOTE: usize = 1024;
const MAX_REASON: usize = 128;

/// Where Events go and how repeats are folded.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Events about cluster-scoped objects live in `default` (as kubectl expects).
    pub namespace: String,
    /// `reportingController`.
    pub controller: String,
    /// Repeats within this time of the last occurrence extend the series; later ones start anew.
    pub series_ttl: Duration,
    /// At most one series patch per Event per this interval.
    pub patch_interval: Duration,
    /// Distinct Events remembered (oldest forgotten first).
    pub max_cached: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            namespace: "default".into(),
            controller: "tabby.dev/agent".into(),
            series_ttl: Duration::from_secs(30 * 60),
            patch_interval: Duration::from_secs(10),
            max_cached: 256,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    reason: String,
    note: String,
}

struct Series {
    /// The Event object's name.
    name: String,
    /// Occurrences so far (what `series.count` says once patched).
    count: i32,
    /// Count the server has.
    sent_count: i32,
    last_seen: Instant,
    last_sent: Instant,
}

#[derive(Default)]
struct State {
    node_uid: Option<String>,
    uid_looked_up: bool,
    cache: HashMap<Key, Series>,
}

/// Events on one Node.
pub struct NodeEvents {
    events: Api<Event>,
    nodes: Api<Node>,
    node: String,
    cfg: EventsConfig,
    state: Mutex<State>,
}

impl NodeEvents {
    /// Events on Node `node`, default settings.
    pub fn new(client: kube::Client, node: &str) -> Self {
        Self::with_config(client, node, EventsConfig::default())
    }

    pub fn with_config(client: kube::Client, node: &str, cfg: EventsConfig) -> Self {
        NodeEvents {
            events: Api::namespaced(client.clone(), &cfg.namespace),
            nodes: Api::all(client),
            node: node.to_string(),
            cfg,
            state: Mutex::new(State::default()),
        }
    }

    /// A Warning: something the operator should fix (e.g. a peer left out for a missing Secret).
    pub async fn warn(&self, reason: &str, note: String) {
        self.emit(true, reason, note).await;
    }

    /// A Normal event: something worth knowing (e.g. a session came up).
    pub async fn normal(&self, reason: &str, note: String) {
        self.emit(false, reason, note).await;
    }

    /// Sends what [`super::EventTracker::observe`] found.
    pub async fn send(&self, event: &super::NodeEvent) {
        self.emit(event.warning, event.reason, event.note.clone())
            .await;
    }

    async fn emit(&self, warning: bool, reason: &str, note: String) {
        let key = Key {
            warning,
            reason: truncate_to(reason, MAX_REASON),
            note: truncate_to(&note, MAX_NOTE),
        };
        let now = Instant::now();
        let mut st = self.state.lock().await;
        let ttl = self.cfg.series_ttl;
        st.cache
            .retain(|_, s| now.duration_since(s.last_seen) < ttl);

        if let Some(s) = st.cache.get_mut(&key) {
            s.count = s.count.saturating_add(1);
            s.last_seen = now;
            if now.duration_since(s.last_sent) < self.cfg.patch_interval {
                return; // folded into the next patch
            }
            let (name, count) = (s.name.clone(), s.count);
            match self.patch_series(&name, count).await {
                Ok(()) => {
                    if let Some(s) = st.cache.get_mut(&key) {
                        s.sent_count = count;
                        // From when the server has it: a slow API must not shorten the interval.
                        s.last_sent = Instant::now();
                    }
                    return;
                }
                Err(kube::Error::Api(e)) if e.is_not_found() => {
                    // Expired or deleted on the server: start a new Event below.
                    st.cache.remove(&key);
                }
                Err(e) => {
                    tracing::warn!(node = %self.node, reason = %key.reason, "patching Event series: {e}");
                    return;
                }
            }
        }

        if !st.uid_looked_up {
            st.uid_looked_up = true;
            match self.nodes.get_opt(&self.node).await {
                Ok(n) => st.node_uid = n.and_then(|n| n.metadata.uid),
                Err(e) => tracing::debug!(node = %self.node, "reading Node uid for Events: {e}"),
            }
        }
        let event = self.event(&key, st.node_uid.clone());
        match self.events.create(&PostParams::default(), &event).await {
            Ok(created) => {
                if st.cache.len() >= self.cfg.max_cached
                    && let Some(oldest) = st
                        .cache
                        .iter()
                        .min_by_key(|(_, s)| s.last_seen)
                        .map(|(k, _)| k.clone())
                {
                    st.cache.remove(&oldest);
                }
                let name = created.metadata.name.unwrap_or_default();
                st.cache.insert(
                    key,
                    Series {
                        name,
                        count: 1,
                        sent_count: 1,
                        last_seen: now,
                        last_sent: Instant::now(),
                    },
                );
            }
            Err(e) => {
                tracing::warn!(node = %self.node, reason = %key.reason, "creating Event: {e}")
            }
        }
    }

    /// Counts each Event has on the server and locally (tests and debugging):
    /// `(reason, note, count, sent_count)`, sorted.
    pub async fn series(&self) -> Vec<(String, String, i32, i32)> {
        let st = self.state.lock().await;
        let mut v: Vec<_> = st
            .cache
            .iter()
            .map(|(k, s)| (k.reason.clone(), k.note.clone(), s.count, s.sent_count))
            .collect();
        v.sort();
        v
    }

    async fn patch_series(&self, name: &str, count: i32) -> Result<(), kube::Error> {
        let patch = serde_json::json!({
            "series": EventSeries {
                count,
                last_observed_time: MicroTime(Timestamp::now()),
            }
        });
        self.events
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    fn event(&self, key: &Key, uid: Option<String>) -> Event {
        let now = Timestamp::now();
        Event {
            metadata: ObjectMeta {
                // Unique per occurrence start, like kubectl's and client-go's names.
                name: Some(format!("{}.{:x}", self.node, now.as_nanosecond())),
                namespace: Some(self.cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Reconcile".into()),
            reason: Some(key.reason.clone()),
            note: Some(key.note.clone()),
            type_: Some(if key.warning { "Warning" } else { "Normal" }.into()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.node.clone()),
                uid,
                ..ObjectReference::default()
            }),
            reporting_controller: Some(self.cfg.controller.clone()),
            reporting_instance: Some(truncate_to(&format!("tabby-agent-{}", self.node), 128)),
            ..Event::default()
        }
    }
}
