//! Writes the node's `NodeNetworkStatus` in the background.
//!
//! [`StatusPublisher::publish`] only stores the newest status in a `watch` channel: it never
//! blocks and never fails, so the agent's loops can call it on every change. The writer task:
//!
//! - **coalesces**: only the newest status is ever written; a burst of publishes costs at most
//!   one write now and one after `min_interval`;
//! - **writes only on change**: timestamps aside (condition transition times and `lastErrorTime`
//!   are kept from the previous write while their condition or error stays the same, and
//!   `updateTime` is stamped at write), an identical status is not written;
//! - **creates the object** on first start, named after the node, with an owner reference to the
//!   Node so the API server's garbage collector deletes it with the Node; adds the reference to an
//!   object that lacks it;
//! - **compare-and-swap**: `PUT …/status` with the resourceVersion it last saw; a 409 re-reads
//!   and retries, a 404 (someone deleted it) re-creates;
//! - **retries** other errors with exponential backoff, always with the newest status;
//! - **re-checks** the object every `resync_interval` (a Get), so a deleted object comes back
//!   even when nothing changes.
//!
//! API calls (all in `tabby_agent::daemon::API_CALLS`): get/create/update
//! `nodenetworkstatuses`, update `nodenetworkstatuses/status`, get `nodes` (the owner's uid).
//! Must not write anything else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, PostParams};
use tabby_api::v1alpha1::nodenetworkstatus::{
    NodeNetworkStatus, NodeNetworkStatusSpec, NodeNetworkStatusStatus,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};

/// Timing of the writer.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// At most one write per this interval.
    pub min_interval: Duration,
    /// Re-read the object this often and restore it if it was deleted or changed.
    pub resync_interval: Duration,
    /// First retry delay after a failed write; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            min_interval: Duration::from_secs(2),
            resync_interval: Duration::from_secs(300),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Counters of the writer, for metrics and tests.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Successful status writes.
    pub writes: AtomicU64,
    /// Failed attempts (each retried).
    pub errors: AtomicU64,
    /// Times the object had to be created (first start, or after someone deleted it).
    pub creates: AtomicU64,
    /// 409s on the status write (someone else wrote in between), each followed by a re-read.
    pub conflicts: AtomicU64,
}

/// The handle; dropping it stops the writer.
pub struct StatusPublisher {
    tx: watch::Sender<Option<NodeNetworkStatusStatus>>,
    stats: Arc<PublisherStats>,
    task: JoinHandle<()>,
}

impl StatusPublisher {
    /// Starts the writer for node `node` with default timings and the given rate limit.
    pub fn spawn(client: kube::Client, node: String, min_interval: Duration) -> Self {
        Self::spawn_with(
            client,
            node,
            PublisherConfig {
                min_interval,
                ..PublisherConfig::default()
            },
        )
    }

    /// Starts the writer with explicit timings.
    pub fn spawn_with(client: kube::Client, node: String, cfg: PublisherConfig) -> Self {
        let (tx, rx) = watch::channel(None);
        let stats = Arc::new(PublisherStats::default());
        let writer = Writer {
            api: Api::all(client.clone()),
            nodes: Api::all(client),
            node,
            cfg,
            object: None,
            stats: stats.clone(),
        };
        let task = tokio::spawn(writer.run(rx));
        StatusPublisher { tx, stats, task }
    }

    /// Hands over the newest status. Never blocks; the writer picks it up.
    pub fn publish(&self, status: NodeNetworkStatusStatus) {
        self.tx.send_replace(Some(status));
    }

    /// The writer's counters.
    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }
}

impl Drop for StatusPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0} consecutive conflicts writing the status")]
    Conflicts(u32),
}

/// What one write did; both carry the status the server now holds.
enum Outcome {
    Wrote(NodeNetworkStatusStatus),
    Held(NodeNetworkStatusStatus),
}

/// How many 409/404 round trips one write may take before it counts as failed.
const MAX_CAS_ATTEMPTS: u32 = 5;

struct Writer {
    api: Api<NodeNetworkStatus>,
    nodes: Api<Node>,
    node: String,
    cfg: PublisherConfig,
    /// The object as last read or written (its resourceVersion is the CAS token).
    object: Option<NodeNetworkStatus>,
    stats: Arc<PublisherStats>,
}

impl Writer {
    async fn run(mut self, mut rx: watch::Receiver<Option<NodeNetworkStatusStatus>>) {
        // What the API server holds, as far as we know (with its timestamps).
        let mut written: Option<NodeNetworkStatusStatus> = None;
        let mut last_write: Option<Instant> = None;
        loop {
            let resync = tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return; // the handle is gone
                    }
                    false
                }
                _ = sleep(self.cfg.resync_interval) => true,
            };
            if let Some(t) = last_write {
                sleep_until(t + self.cfg.min_interval).await;
            }
            if resync {
                // Re-read: a deleted or edited object is noticed and restored below.
                self.object = None;
            }
            let mut backoff = self.cfg.retry_initial;
            loop {
                let Some(latest) = rx.borrow_and_update().clone() else {
                    break;
                };
                let desired = carry_times(written.as_ref(), latest);
                if !resync && written.as_ref().map(strip) == Some(strip(&desired)) {
                    break;
                }
                match self.write(desired).await {
                    Ok(Outcome::Wrote(w)) => {
                        self.stats.writes.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(node = %self.node, "NodeNetworkStatus written");
                        written = Some(w);
                        last_write = Some(Instant::now());
                        break;
                    }
                    Ok(Outcome::Held(w)) => {
                        written = Some(w);
                        break;
                    }
                    Err(e) => {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            node = %self.node,
                            retry_in = ?backoff,
                            "writing NodeNetworkStatus: {e}"
                        );
                        sleep(backoff).await;
                        backoff = (backoff * 2).min(self.cfg.retry_max);
                    }
                }
            }
        }
    }

    /// Writes `desired` (stamped with `updateTime`), unless the server already holds the same
    /// content.
    async fn write(&mut self, desired: NodeNetworkStatusStatus) -> Result<Outcome, WriteError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut current = match self.object.take() {
                Some(o) => o,
                None => self.ensure_object().await?,
            };
            if let Some(held) = current.status.clone()
                && strip(&held) == strip(&desired)
            {
                self.object = Some(current);
                return Ok(Outcome::Held(held));
            }
            let mut stamped = desired.clone();
            stamped.update_time = Some(super::time(SystemTime::now()));
            current.status = Some(stamped);
            match self
                .api
                .replace_status(&self.node, &PostParams::default(), &current)
                .await
            {
                Ok(o) => {
                    let held = o.status.clone().unwrap_or(desired);
                    self.object = Some(o);
                    return Ok(Outcome::Wrote(held));
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => {
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(node = %self.node, "NodeNetworkStatus changed under us; re-reading");
                    self.object = self.api.get_opt(&self.node).await?;
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => {
                    tracing::info!(node = %self.node, "NodeNetworkStatus was deleted; re-creating");
                    self.object = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(WriteError::Conflicts(MAX_CAS_ATTEMPTS))
    }

    /// The object, read or created, with the owner reference to the Node in place.
    async fn ensure_object(&mut self) -> Result<NodeNetworkStatus, WriteError> {
        let existing = match self.api.get_opt(&self.node).await? {
            Some(o) => o,
            None => {
                let mut obj = NodeNetworkStatus::new(
                    &self.node,
                    NodeNetworkStatusSpec {
                        node: self.node.clone(),
                    },
                );
                obj.metadata = ObjectMeta {
                    name: Some(self.node.clone()),
                    owner_references: self.owner().await?.map(|o| vec![o]),
                    ..ObjectMeta::default()
                };
                match self.api.create(&PostParams::default(), &obj).await {
                    Ok(o) => {
                        self.stats.creates.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(node = %self.node, "NodeNetworkStatus created");
                        return Ok(o);
                    }
                    // Created by someone else (an earlier agent) in between: use theirs.
                    Err(kube::Error::Api(s)) if s.is_already_exists() => {
                        self.api.get(&self.node).await?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let owned = existing
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|refs| refs.iter().any(|r| r.kind == "Node" && r.name == self.node));
        if owned {
            return Ok(existing);
        }
        let Some(owner) = self.owner().await? else {
            return Ok(existing);
        };
        let mut with_owner = existing;
        with_owner
            .metadata
            .owner_references
            .get_or_insert_with(Vec::new)
            .push(owner);
        match self
            .api
            .replace(&self.node, &PostParams::default(), &with_owner)
            .await
        {
            Ok(o) => Ok(o),
            // Changed in between: the next round re-reads and tries again.
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(self.api.get(&self.node).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// The owner reference to our Node; `None` (with a warning) when the Node does not exist,
    /// so the status is still written.
    async fn owner(&self) -> Result<Option<OwnerReference>, WriteError> {
        let Some(node) = self.nodes.get_opt(&self.node).await? else {
            tracing::warn!(node = %self.node, "Node not found: NodeNetworkStatus gets no owner reference");
            return Ok(None);
        };
        let Some(uid) = node.metadata.uid else {
            return Ok(None);
        };
        Ok(Some(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.node.clone(),
            uid,
            // blockOwnerDeletion would need update on nodes/finalizers; not wanted.
            block_owner_deletion: None,
            controller: None,
        }))
    }
}

/// The status without `updateTime` (what "changed" compares).
fn strip(s: &NodeNetworkStatusStatus) -> NodeNetworkStatusStatus {
    NodeNetworkStatusStatus {
        update_time: None,
        ..s.clone()
    }
}

/// Keeps the previous transition times of conditions whose status did not change, and the
/// previous `lastErrorTime` while the error is the same (Kubernetes condition conventions).
pub fn carry_times(
    prev: Option<&NodeNetworkStatusStatus>,
    mut next: NodeNetworkStatusStatus,
) -> NodeNetworkStatusStatus {
    let Some(prev) = prev else { return next };
    for c in &mut next.conditions {
        if let Some(p) = prev
            .conditions
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            c.last_transition_time = p.last_transition_time.clone();
        }
    }
    if next.last_error.is_some() && next.last_error == prev.last_error {
        next.last_error_time = prev.last_error_time.clone();
    }
    next
}
