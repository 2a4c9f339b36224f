//! In-memory object storage: objects by group/resource + namespace + name, one global
//! monotonically increasing resourceVersion, and a bounded history of change events for watches.
//!
//! Owns the state that a snapshot persists. Must not know about HTTP, verbs or validation; the
//! verb logic in `crate::server` works on [`State`] under one lock so that every write and the
//! event it produces are atomic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::resources::{GroupResource, Registry};

/// Namespace ("" for cluster-scoped) and name.
pub type ObjKey = (String, String);

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed (carries its last state).
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as stored in the history and sent to live watchers.
#[derive(Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Which resource.
    pub gr: GroupResource,
    /// Change type.
    pub kind: EventType,
    /// Object after the change (for deletes: the last state, with the delete's resourceVersion).
    pub object: Arc<Value>,
    /// Object before the change (for selector transitions on watches).
    pub old: Option<Arc<Value>>,
    /// The event's wire form at the storage version, encoded once and shared by every watcher.
    pub wire: OnceLock<Bytes>,
}

/// All mutable state of the emulator.
pub struct State {
    /// Served types.
    pub registry: Registry,
    /// Last issued resourceVersion.
    pub rv: u64,
    /// Stored objects.
    pub objects: HashMap<GroupResource, BTreeMap<ObjKey, Arc<Value>>>,
    /// Retained events, oldest first.
    pub history: VecDeque<Arc<Event>>,
    /// Every event with rv <= this has left the history (watches from older versions get 410).
    pub compacted_through: u64,
    /// History size limit.
    pub window: usize,
    events: broadcast::Sender<Arc<Event>>,
}

impl State {
    /// Empty state with built-in types.
    pub fn new(window: usize, events: broadcast::Sender<Arc<Event>>) -> Self {
        State {
            registry: Registry::with_builtins(),
            rv: 0,
            objects: HashMap::new(),
            history: VecDeque::new(),
            compacted_through: 0,
            window: window.max(1),
            events,
        }
    }

    /// Subscribes to live events. Call with the state locked so nothing is missed between a
    /// replay and the subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Objects of one resource.
    pub fn bucket(&self, gr: &GroupResource) -> Option<&BTreeMap<ObjKey, Arc<Value>>> {
        self.objects.get(gr)
    }

    /// One object.
    pub fn get(&self, gr: &GroupResource, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(gr)?
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Stores `obj` under a fresh resourceVersion and records the event. Returns the stored object.
    pub fn put(
        &mut self,
        gr: &GroupResource,
        mut obj: Value,
        kind: EventType,
        old: Option<Arc<Value>>,
    ) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
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
        let obj = Arc::new(obj);
        self.objects
            .entry(gr.clone())
            .or_default()
            .insert((ns, name), obj.clone());
        self.record(Event {
            rv,
            gr: gr.clone(),
            kind,
            object: obj.clone(),
            old,
            wire: OnceLock::new(),
        });
        obj
    }

    /// Removes an object, recording a DELETED event with a fresh resourceVersion.
    pub fn remove(&mut self, gr: &GroupResource, ns: &str, name: &str) -> Option<Arc<Value>> {
        let old = self
            .objects
            .get_mut(gr)?
            .remove(&(ns.to_owned(), name.to_owned()))?;
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*old).clone();
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let last = Arc::new(last);
        self.record(Event {
            rv,
            gr: gr.clone(),
            kind: EventType::Deleted,
            object: last.clone(),
            old: Some(old),
            wire: OnceLock::new(),
        });
        Some(last)
    }

    fn record(&mut self, ev: Event) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > self.window {
            if let Some(old) = self.history.pop_front() {
                self.compacted_through = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(ev);
    }

    /// Drops the whole history and moves the resourceVersion past it, so that every watch from a
    /// version issued before the compaction (including the latest one) gets 410 on reconnect.
    /// The resourceVersion skips one value, which clients must tolerate anyway (it is global).
    pub fn compact(&mut self) {
        self.rv += 1;
        self.history.clear();
        self.compacted_through = self.rv;
    }

    /// Events after `rv` for `gr`, or `None` when they are no longer retained (410).
    pub fn since(&self, rv: u64) -> Option<Vec<Arc<Event>>> {
        if rv < self.compacted_through {
            return None;
        }
        // History is sorted by rv; find the first event after `rv`.
        let start = self.history.partition_point(|e| e.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }

    /// Serializable snapshot (objects and resourceVersion; history is not kept, as after a real
    /// watch-cache restart).
    pub fn snapshot(&self) -> Value {
        let mut objects = Vec::new();
        for (gr, bucket) in &self.objects {
            for obj in bucket.values() {
                objects.push(serde_json::json!({"group": gr.group, "resource": gr.resource, "object": **obj}));
            }
        }
        serde_json::json!({"resourceVersion": self.rv, "objects": objects})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(window: usize) -> State {
        let (tx, _) = broadcast::channel(16);
        State::new(window, tx)
    }

    #[test]
    fn resource_versions_are_global_and_increasing() {
        let mut s = state(10);
        let nodes = GroupResource::new("", "nodes");
        let cms = GroupResource::new("", "configmaps");
        let a = s.put(
            &nodes,
            json!({"metadata": {"name": "a"}}),
            EventType::Added,
            None,
        );
        let b = s.put(
            &cms,
            json!({"metadata": {"name": "b", "namespace": "x"}}),
            EventType::Added,
            None,
        );
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert_eq!(b["metadata"]["resourceVersion"], "2");
        let d = s.remove(&nodes, "", "a").unwrap();
        assert_eq!(d["metadata"]["resourceVersion"], "3");
        assert!(s.get(&nodes, "", "a").is_none());
        assert!(s.get(&cms, "x", "b").is_some());
    }

    #[test]
    fn history_window_compacts() {
        let mut s = state(3);
        let gr = GroupResource::new("", "nodes");
        for i in 0..5 {
            s.put(
                &gr,
                json!({"metadata": {"name": format!("n{i}")}}),
                EventType::Added,
                None,
            );
        }
        assert_eq!(s.compacted_through, 2);
        assert!(s.since(1).is_none(), "rv 1 is older than the window");
        let ev = s.since(2).unwrap();
        assert_eq!(ev.iter().map(|e| e.rv).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(s.since(5).unwrap().len(), 0);
        s.compact();
        assert!(
            s.since(5).is_none(),
            "the latest version before compaction is gone too"
        );
        assert!(s.since(6).is_some());
    }
}
