//! The running controller: caches, leader election, the reconcile loop and Events.
//!
//! Design (reflectors + one level-triggered loop rather than `kube::runtime::Controller`): the
//! decisions are cluster-wide (carving must see every block, overlap every pool, GC every pod),
//! so each pass plans from whole caches of Nodes, Pods, IPPools and IPAMBlocks kept by
//! reflectors. Any watch event wakes the loop (debounced by [`DEBOUNCE`]); a timer runs a pass
//! every `--resync` seconds anyway, which drives time-based decisions (GC grace, cooldown,
//! reclaim age). A dropped watch or an API server restart makes the reflector re-list; the next
//! pass sees the result.
//!
//! Leader election: `kube-lease-manager` on a `coordination.k8s.io/v1` Lease. Only the leader
//! writes, and leadership is re-checked before every single write, so a replica that loses the
//! lease stops at the next write. "Leading" is the lease manager's flag AND a Lease seen from
//! the API held by this identity and renewed less than its duration ago ([`lease_held`]), so
//! a replica whose renewals stop reaching the API stops writing before the Lease can expire and
//! a standby take over. The GC memory ([`GcTracker`]) is dropped whenever this replica
//! is not leading, so a new leader waits a full grace period before collecting anything.
//!
//! Owns: the caches, the loop, the mapping from actions to writes, Events and metric values.
//! Must not decide allocation (that is `crate::plan` and `tabby_api::ipam`).

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tabby_api::ipam::IpamConfig;
use tabby_api::ipam::node::{BlockPlan, GcTracker};
use tabby_api::ipam::pool::POOL_ANNOTATION;
use tabby_api::rbac::{ApiCall, Scope, Verb};
use tabby_api::v1alpha1::{IPAMBlock, IPPool};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::config::Args;
use crate::metrics::{Health, Metrics, PoolLabel, PoolState, Role};
use crate::plan::{
    Action, DeleteWhy, NodeInfo, ObjectKind, PodInfo, ReleaseWhy, Snapshot, Warning, plan_pass,
    planned_block,
};
use crate::write::{self, Outcome};

/// Wait after a watch event before a pass, so a burst of events makes one pass.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// How long the loop trusts its own recent writes over a cache that has not caught up.
const OVERLAY_TTL: Duration = Duration::from_secs(30);
/// A repeated Warning is raised again after this long.
const WARNING_REPEAT: Duration = Duration::from_secs(600);
/// Block creations in flight at once when a pass creates many (a burst of joining nodes).
pub const CREATE_BATCH: usize = 16;
/// Field manager / reporting controller name.
pub const CONTROLLER_NAME: &str = "tabby-ipam-controller";

/// Every API request this controller makes, for the chart's RBAC audit (`e2e/chart`): the
/// rendered ClusterRole/Role must allow exactly these, nothing more. Keep it next to the calls:
/// a call added here without a rule in `charts/tabby/templates/controller-rbac.yaml` (or a rule
/// left there after its call is gone) fails the audit.
#[rustfmt::skip]
pub const API_CALLS: &[ApiCall] = {
    use tabby_api::rbac::Scope::{Cluster, OwnNamespace};
    use tabby_api::rbac::TABBY_GROUP as G;
    use tabby_api::rbac::Verb::*;
    const L: &str = "coordination.k8s.io";
    const E: &str = "events.k8s.io";
    const fn c(v: Verb, g: &'static str, r: &'static str, s: Option<&'static str>, sc: Scope, why: &'static str) -> ApiCall {
        ApiCall::new(v, g, r, s, sc, why)
    }
    &[
        // Reflectors in `run` (a watcher lists, then watches).
        c(List,   "", "nodes", None, Cluster, "Node cache"),
        c(Watch,  "", "nodes", None, Cluster, "Node cache"),
        c(List,   "", "pods", None, Cluster, "Pod cache (garbage collection)"),
        c(Watch,  "", "pods", None, Cluster, "Pod cache (garbage collection)"),
        c(List,   G, "ippools", None, Cluster, "IPPool cache"),
        c(Watch,  G, "ippools", None, Cluster, "IPPool cache"),
        c(List,   G, "ipamblocks", None, Cluster, "IPAMBlock cache"),
        c(Watch,  G, "ipamblocks", None, Cluster, "IPAMBlock cache"),
        // `write::release`: fresh reads of the pod and the block, then a CAS status write.
        c(Get,    "", "pods", None, Cluster, "release re-checks the pod"),
        c(Get,    G, "ipamblocks", None, Cluster, "release re-reads the block"),
        c(Update, G, "ipamblocks", Some("status"), Cluster, "release (compare-and-swap)"),
        // `write::create_block`, `write::delete_block`.
        c(Create, G, "ipamblocks", None, Cluster, "assign a block"),
        c(Delete, G, "ipamblocks", None, Cluster, "reclaim or release a block"),
        // `write::pool_finalizer`, `write::pool_status`.
        c(Get,    G, "ippools", None, Cluster, "fresh read before a pool write"),
        c(Update, G, "ippools", None, Cluster, "pool finalizer"),
        c(Update, G, "ippools", Some("status"), Cluster, "pool status"),
        // kube-lease-manager (get, create, patch) and the Lease reflector in `run`.
        c(Get,    L, "leases", None, OwnNamespace, "leader election"),
        c(Create, L, "leases", None, OwnNamespace, "leader election"),
        c(Patch,  L, "leases", None, OwnNamespace, "leader election"),
        c(List,   L, "leases", None, OwnNamespace, "Lease cache"),
        c(Watch,  L, "leases", None, OwnNamespace, "Lease cache"),
        // The Recorder: Events about Nodes, Pods, IPPools and IPAMBlocks, in any namespace.
        c(Create, E, "events", None, Cluster, "Events"),
        c(Patch,  E, "events", None, Cluster, "repeated Events (series count)"),
    ]
};

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Leader election could not start.
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// Cause.
        source: kube_lease_manager::LeaseManagerError,
    },
    /// The leader election task ended (it only ends on an error it cannot recover from).
    #[error("leader election on Lease {namespace}/{name} stopped")]
    LeaseEnded {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
    },
    /// A cache's writer went away before it synced.
    #[error("the {0} cache stopped before it synced")]
    CacheStopped(&'static str),
}

/// Whether `lease` (as last seen from the API) shows `identity` holding it at `now`: held by
/// us, and renewed less than its duration ago. A second, independent check next to
/// `kube-lease-manager`'s flag, which stays `true` while its renewals fail with API errors:
/// a replica whose renewals stop reaching the API stops writing once its lease would expire,
/// before a standby may take over.
pub fn lease_held(lease: Option<&Lease>, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return false;
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return false;
    }
    let (Some(renewed), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return false;
    };
    let expires = renewed.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(secs));
    now < expires
}

fn reflect<K>(api: Api<K>, notify: Arc<Notify>, what: &'static str) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    reflect_with(api, watcher::Config::default(), notify, what)
}

fn reflect_with<K>(
    api: Api<K>,
    config: watcher::Config,
    notify: Arc<Notify>,
    what: &'static str,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config).default_backoff().reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => notify.notify_one(),
                Err(e) => warn!(cache = what, error = %e, "watch error; retrying with backoff"),
            }
        }
    });
    reader
}

/// Recent writes the caches may not show yet.
#[derive(Default)]
struct Overlay {
    created: BTreeMap<String, (IPAMBlock, Instant)>,
    /// Deleted blocks by name, with the resourceVersion that was deleted: a block re-created
    /// under the same name (a reclaimed CIDR) has another version and is not hidden.
    deleted: BTreeMap<String, (String, Instant)>,
}

impl Overlay {
    fn apply(&mut self, blocks: &mut Vec<IPAMBlock>) {
        let now = Instant::now();
        let seen: BTreeMap<String, String> = blocks
            .iter()
            .filter_map(|b| {
                Some((
                    b.metadata.name.clone()?,
                    b.metadata.resource_version.clone().unwrap_or_default(),
                ))
            })
            .collect();
        self.deleted
            .retain(|n, (rv, t)| seen.get(n) == Some(rv) && now.duration_since(*t) < OVERLAY_TTL);
        // Keep a created block while the cache shows no such name, or only the deleted
        // version of it.
        let deleted = &self.deleted;
        self.created.retain(|n, (_, t)| {
            now.duration_since(*t) < OVERLAY_TTL
                && seen
                    .get(n)
                    .is_none_or(|rv| deleted.get(n).is_some_and(|(d, _)| d == rv))
        });
        blocks.retain(|b| {
            let name = b.metadata.name.as_deref().unwrap_or_default();
            self.deleted.get(name).is_none_or(|(rv, _)| {
                b.metadata.resource_version.as_deref().unwrap_or_default() != rv
            })
        });
        blocks.extend(self.created.values().map(|(b, _)| b.clone()));
    }

    fn created(&mut self, block: IPAMBlock) {
        let name = block.metadata.name.clone().unwrap_or_default();
        self.created.insert(name, (block, Instant::now()));
    }

    fn deleted(&mut self, name: &str, resource_version: &str) {
        self.created.remove(name);
        self.deleted.insert(
            name.to_string(),
            (resource_version.to_string(), Instant::now()),
        );
    }
}

struct Caches {
    nodes: Store<Node>,
    pods: Store<Pod>,
    pools: Store<IPPool>,
    blocks: Store<IPAMBlock>,
}

impl Caches {
    fn snapshot(&self, overlay: &mut Overlay) -> Snapshot {
        let nodes = self
            .nodes
            .state()
            .iter()
            .filter_map(|n| {
                Some(NodeInfo {
                    name: n.metadata.name.clone()?,
                    labels: n.metadata.labels.clone().unwrap_or_default(),
                })
            })
            .collect();
        let pods = self
            .pods
            .state()
            .iter()
            .filter_map(|p| {
                Some(PodInfo {
                    namespace: p.metadata.namespace.clone()?,
                    name: p.metadata.name.clone()?,
                    uid: p.metadata.uid.clone()?,
                    node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                    pending: p
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .is_none_or(|ph| ph == "Pending"),
                    pool_annotation: p
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(POOL_ANNOTATION).cloned()),
                })
            })
            .collect();
        let pools = self.pools.state().iter().map(|p| (**p).clone()).collect();
        let mut blocks: Vec<IPAMBlock> =
            self.blocks.state().iter().map(|b| (**b).clone()).collect();
        overlay.apply(&mut blocks);
        Snapshot {
            nodes,
            pods,
            pools,
            blocks,
        }
    }
}

fn reference(w: &Warning) -> ObjectReference {
    let (api_version, kind) = match w.kind {
        ObjectKind::Node => ("v1", "Node"),
        ObjectKind::Pod => ("v1", "Pod"),
        ObjectKind::IPPool => ("tabby.dev/v1alpha1", "IPPool"),
        ObjectKind::IPAMBlock => ("tabby.dev/v1alpha1", "IPAMBlock"),
    };
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: Some(w.name.clone()),
        namespace: w.namespace.clone(),
        ..ObjectReference::default()
    }
}

fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.into()),
        ..ObjectReference::default()
    }
}

/// Runs the controller until leader election fails.
pub async fn run(
    client: Client,
    args: Args,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<(), ControllerError> {
    let cfg = args.ipam();
    let identity = args.identity();
    let notify = Arc::new(Notify::new());
    let caches = Caches {
        nodes: reflect(Api::all(client.clone()), notify.clone(), "Node"),
        pods: reflect(Api::all(client.clone()), notify.clone(), "Pod"),
        pools: reflect(Api::all(client.clone()), notify.clone(), "IPPool"),
        blocks: reflect(Api::all(client.clone()), notify.clone(), "IPAMBlock"),
    };
    health
        .alive
        .store(true, std::sync::atomic::Ordering::Relaxed);
    health.set_role(Role::Starting);
    for (what, ready) in [
        ("Node", caches.nodes.wait_until_ready().await),
        ("Pod", caches.pods.wait_until_ready().await),
        ("IPPool", caches.pools.wait_until_ready().await),
        ("IPAMBlock", caches.blocks.wait_until_ready().await),
    ] {
        ready.map_err(|_| ControllerError::CacheStopped(what))?;
    }
    info!(%identity, "caches synced; standing by for the lease");
    health.set_role(Role::Standby);

    let lease_err = |source| ControllerError::Lease {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        source,
    };
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration.max(1))
        .with_grace(
            args.lease_grace
                .min(args.lease_duration.saturating_sub(1))
                .max(1),
        )
        .with_field_manager(CONTROLLER_NAME)
        .build()
        .await
        .map_err(lease_err)?;
    let (mut leader, _lease_task) = manager.watch().await;
    let lease_cache: Store<Lease> = reflect_with(
        Api::namespaced(client.clone(), &args.lease_namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", args.lease_name)),
        notify.clone(),
        "Lease",
    );
    let holds = |leader: &tokio::sync::watch::Receiver<bool>| {
        *leader.borrow()
            && lease_held(
                lease_cache
                    .state()
                    .iter()
                    .find(|l| l.metadata.name.as_deref() == Some(args.lease_name.as_str()))
                    .map(|l| &**l),
                &identity,
                Timestamp::now(),
            )
    };

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: Some(identity.clone()),
        },
    );
    let mut exec = Executor {
        client: client.clone(),
        blocks: Api::all(client.clone()),
        pools: Api::all(client),
        recorder,
        metrics: metrics.clone(),
        warned: BTreeMap::new(),
    };
    let mut gc = GcTracker::default();
    let mut overlay = Overlay::default();
    let resync = Duration::from_secs(args.resync.max(1));
    let mut was_leading = false;
    loop {
        tokio::select! {
            _ = notify.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(resync) => {}
            changed = leader.changed() => {
                if changed.is_err() {
                    metrics.leader.set(0);
                    return Err(ControllerError::LeaseEnded {
                        namespace: args.lease_namespace.clone(),
                        name: args.lease_name.clone(),
                    });
                }
            }
        }
        let leading = holds(&leader);
        if leading != was_leading {
            info!(%identity, leading, "leadership changed");
            was_leading = leading;
        }
        metrics.leader.set(i64::from(leading));
        health.set_role(if leading { Role::Leader } else { Role::Standby });
        if !leading {
            gc = GcTracker::default();
            overlay = Overlay::default();
            continue;
        }
        let started = Instant::now();
        let snap = caches.snapshot(&mut overlay);
        let plan = plan_pass(&snap, &mut gc, Timestamp::now(), &cfg);
        for (pool, f) in &plan.pools {
            let l = |state: &str| PoolState {
                pool: pool.clone(),
                state: state.into(),
            };
            metrics
                .blocks
                .get_or_create(&PoolLabel { pool: pool.clone() })
                .set(i64::try_from(f.blocks).unwrap_or(i64::MAX));
            metrics
                .addresses
                .get_or_create(&l("used"))
                .set(i64::try_from(f.used).unwrap_or(i64::MAX));
            metrics
                .addresses
                .get_or_create(&l("free"))
                .set(i64::try_from(f.free).unwrap_or(i64::MAX));
        }
        let mut actions = plan.actions.into_iter().peekable();
        while let Some(action) = actions.next() {
            if !holds(&leader) {
                warn!(%identity, "lost the lease; stopping writes");
                break;
            }
            // Block creations are independent of each other (distinct names, each a
            // create that fails with 409 if repeated): a run of them goes out
            // CREATE_BATCH at a time, leadership re-checked before each batch.
            if let Action::CreateBlock(first) = action {
                let mut batch = vec![first];
                // A node's blocks (one per family) stay in one batch: they share one Event.
                while batch.len() < CREATE_BATCH
                    || actions.peek().is_some_and(|a| {
                        matches!(a, Action::CreateBlock(p) if batch.last().is_some_and(|l| l.node == p.node))
                    })
                {
                    match actions.next_if(|a| matches!(a, Action::CreateBlock(_))) {
                        Some(Action::CreateBlock(plan)) => batch.push(plan),
                        _ => break,
                    }
                }
                exec.create_blocks(batch, &mut overlay).await;
                continue;
            }
            exec.execute(action, &mut overlay, &cfg).await;
        }
        metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
    }
}

struct Executor {
    client: Client,
    blocks: Api<IPAMBlock>,
    pools: Api<IPPool>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    warned: BTreeMap<Warning, Instant>,
}

impl Executor {
    async fn event(&self, r: &ObjectReference, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, r).await {
            debug!(error = %e, "publishing an Event failed");
        }
    }

    /// Creates `batch` concurrently, then raises one `BlockAssigned` Event per node for the
    /// blocks it got (a dual-stack node's two blocks share one), and records the outcomes as
    /// [`Self::execute`] does for one.
    async fn create_blocks(&mut self, batch: Vec<BlockPlan>, overlay: &mut Overlay) {
        let this = &*self;
        let results = futures::future::join_all(batch.into_iter().map(|plan| async move {
            let r = write::create_block(&this.blocks, &plan).await;
            (plan, r)
        }))
        .await;
        let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (plan, r) in results {
            match r {
                Ok(Outcome::Done) => {
                    self.metrics.assigned.inc();
                    overlay.created(planned_block(&plan));
                    info!(block = %plan.name, node = %plan.node, pool = %plan.pool, "block assigned");
                    per_node.entry(plan.node.clone()).or_default().push(format!(
                        "IPAMBlock {} ({}) from IPPool {}",
                        plan.name, plan.cidr, plan.pool
                    ));
                }
                Ok(Outcome::Skipped(why)) => debug!(block = %plan.name, %why, "write skipped"),
                Ok(Outcome::AlreadyDone) => {}
                Err(e) => {
                    self.metrics.reconcile_errors.inc();
                    warn!(error = %e, "write failed; retried next pass");
                }
            }
        }
        let this = &*self;
        futures::future::join_all(per_node.into_iter().map(|(node, blocks)| async move {
            this.event(
                &node_ref(&node),
                EventType::Normal,
                "BlockAssigned",
                blocks.join("; "),
            )
            .await;
        }))
        .await;
    }

    async fn execute(&mut self, action: Action, overlay: &mut Overlay, _cfg: &IpamConfig) {
        let result = match &action {
            Action::CreateBlock(plan) => {
                let r = write::create_block(&self.blocks, plan).await;
                if let Ok(Outcome::Done) = r {
                    self.metrics.assigned.inc();
                    overlay.created(planned_block(plan));
                    info!(block = %plan.name, node = %plan.node, pool = %plan.pool, "block assigned");
                    self.event(
                        &node_ref(&plan.node),
                        EventType::Normal,
                        "BlockAssigned",
                        format!(
                            "IPAMBlock {} ({}) from IPPool {}",
                            plan.name, plan.cidr, plan.pool
                        ),
                    )
                    .await;
                }
                r
            }
            Action::DeleteBlock {
                name,
                pool,
                node,
                resource_version,
                why,
            } => {
                let r = write::delete_block(&self.blocks, name, resource_version).await;
                if let Ok(Outcome::Done) = r {
                    overlay.deleted(name, resource_version);
                    let (reason, note) = match why {
                        DeleteWhy::Orphan => {
                            self.metrics.deleted.inc();
                            (
                                "BlockReleased",
                                format!(
                                    "empty IPAMBlock {name} of deleted node {node} deleted; its addresses return to IPPool {pool}"
                                ),
                            )
                        }
                        DeleteWhy::Drain => {
                            self.metrics.deleted.inc();
                            (
                                "BlockReleased",
                                format!(
                                    "empty IPAMBlock {name} deleted: IPPool {pool} is being deleted"
                                ),
                            )
                        }
                        DeleteWhy::Reclaim { for_node } => {
                            self.metrics.reclaimed.inc();
                            self.event(
                                &node_ref(for_node),
                                EventType::Normal,
                                "BlockReclaimed",
                                format!("IPPool {pool} is exhausted: empty IPAMBlock {name} taken back from node {node} for this node"),
                            )
                            .await;
                            (
                                "BlockReclaimed",
                                format!(
                                    "IPPool {pool} is exhausted: empty IPAMBlock {name} taken back from this node for node {for_node}"
                                ),
                            )
                        }
                    };
                    info!(block = %name, %node, %pool, reason, "block deleted");
                    self.event(&node_ref(node), EventType::Normal, reason, note)
                        .await;
                }
                r
            }
            Action::Release {
                block,
                ordinal,
                handle,
                pod,
                why,
            } => {
                let r = write::release(
                    &self.client,
                    block,
                    *ordinal,
                    handle,
                    pod.as_ref(),
                    Timestamp::now(),
                )
                .await;
                if let Ok(Outcome::Done) = r {
                    let who = pod.as_ref().map_or_else(
                        || format!("handle {handle}"),
                        |p| format!("pod {}/{} (uid {})", p.namespace, p.name, p.uid),
                    );
                    let note = match why {
                        ReleaseWhy::Gc => {
                            self.metrics.gc_released.inc();
                            format!(
                                "ordinal {ordinal} of IPAMBlock {block} released: {who} is gone"
                            )
                        }
                        ReleaseWhy::NodeGone => {
                            self.metrics.node_gone_released.inc();
                            format!(
                                "ordinal {ordinal} of IPAMBlock {block} released: its node is deleted and {who} is gone"
                            )
                        }
                    };
                    info!(%block, ordinal, ?why, "allocation released");
                    let r = ObjectReference {
                        api_version: Some("tabby.dev/v1alpha1".into()),
                        kind: Some("IPAMBlock".into()),
                        name: Some(block.clone()),
                        ..ObjectReference::default()
                    };
                    self.event(&r, EventType::Normal, "AddressReleased", note)
                        .await;
                }
                r
            }
            Action::PoolFinalizer { pool, add } => {
                write::pool_finalizer(&self.pools, pool, *add).await
            }
            Action::PoolStatus { pool, status } => {
                write::pool_status(&self.pools, pool, status).await
            }
            Action::Warn(w) => {
                let now = Instant::now();
                let fresh = self
                    .warned
                    .get(w)
                    .is_none_or(|t| now.duration_since(*t) >= WARNING_REPEAT);
                if fresh {
                    warn!(object = %w.name, reason = w.reason, "{}", w.message);
                    self.warned
                        .retain(|_, t| now.duration_since(*t) < WARNING_REPEAT);
                    self.warned.insert(w.clone(), now);
                    self.event(
                        &reference(w),
                        EventType::Warning,
                        w.reason,
                        w.message.clone(),
                    )
                    .await;
                }
                Ok(Outcome::AlreadyDone)
            }
        };
        match result {
            Ok(Outcome::Skipped(why)) => debug!(?action, %why, "write skipped"),
            Ok(_) => {}
            Err(e) => {
                self.metrics.reconcile_errors.inc();
                warn!(error = %e, "write failed; retried next pass");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    fn blk(name: &str, rv: &str) -> IPAMBlock {
        let mut b = IPAMBlock::new(
            name,
            tabby_api::v1alpha1::IPAMBlockSpec {
                cidr: "10.0.0.0/28".into(),
                pool: "p".into(),
                node: "n".into(),
            },
        );
        b.metadata.resource_version = Some(rv.into());
        b
    }

    fn view(o: &mut Overlay, cache: &[IPAMBlock]) -> Vec<Option<String>> {
        let mut v = cache.to_vec();
        o.apply(&mut v);
        v.into_iter().map(|b| b.metadata.resource_version).collect()
    }

    #[test]
    fn overlay_bridges_cache_lag_across_delete_and_recreate() {
        let mut o = Overlay::default();
        let old = blk("x", "5");
        // Deleted at rv 5; the cache still shows it: hidden.
        o.deleted("x", "5");
        assert_eq!(
            view(&mut o, std::slice::from_ref(&old)),
            Vec::<Option<String>>::new()
        );
        // Re-created (reclaimed CIDR) before the cache caught up: the new one shows.
        o.created(blk("x", ""));
        assert_eq!(
            view(&mut o, std::slice::from_ref(&old)),
            vec![Some(String::new())]
        );
        // The cache shows the new version: it is taken from the cache, nothing hidden.
        assert_eq!(view(&mut o, &[blk("x", "9")]), vec![Some("9".into())]);
        assert!(o.created.is_empty() && o.deleted.is_empty());
        // A created block the cache lacks is shown once.
        o.created(blk("y", ""));
        assert_eq!(view(&mut o, &[]).len(), 1);
    }

    #[test]
    fn lease_held_needs_holder_and_a_fresh_renewal() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let lease = |holder: Option<&str>, renewed: Option<i64>, dur: Option<i32>| Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                renew_time: renewed
                    .map(|s| MicroTime(Timestamp::from_second(1_800_000_000 + s).unwrap())),
                lease_duration_seconds: dur,
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        // (case, lease, held)
        let cases = [
            (
                "fresh, ours",
                Some(lease(Some("a"), Some(-5), Some(15))),
                true,
            ),
            (
                "expired",
                Some(lease(Some("a"), Some(-15), Some(15))),
                false,
            ),
            (
                "someone else's",
                Some(lease(Some("b"), Some(-1), Some(15))),
                false,
            ),
            ("no holder", Some(lease(None, Some(-1), Some(15))), false),
            (
                "no renew time",
                Some(lease(Some("a"), None, Some(15))),
                false,
            ),
            ("no duration", Some(lease(Some("a"), Some(-1), None)), false),
            ("no lease seen", None, false),
        ];
        for (case, l, want) in cases {
            assert_eq!(lease_held(l.as_ref(), "a", t0), want, "{case}");
        }
    }
}
