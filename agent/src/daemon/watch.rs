//! The agent's view of the cluster: one reflector per kind it reads, all waking one loop.
//!
//! Owns the watches (kube-runtime watchers with their backoff: a dropped watch resumes, a
//! `410 Gone` re-lists) and the caches they fill. Must not interpret objects: the caller takes a
//! [`Snapshot`] and hands it to the pure planners.
//!
//! Watched: every Node (the mesh needs every node's addresses and labels), every IPPool,
//! BGPPeer and BGPConfiguration, this node's IPAMBlocks only (`spec.node=<node>`, a selectable
//! field of the CRD: the routes to other nodes' blocks come from BGP, not from the API), and the
//! Secrets of the agent's namespace (BGP passwords).

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use tabby_api::v1alpha1::{BGPConfiguration, BGPPeer, IPAMBlock, IPPool};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The caches, and the tasks that fill them (aborted on drop).
pub struct Caches {
    pub nodes: Store<Node>,
    pub configurations: Store<BGPConfiguration>,
    pub peers: Store<BGPPeer>,
    pub pools: Store<IPPool>,
    pub blocks: Store<IPAMBlock>,
    pub secrets: Store<Secret>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Caches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Every object the plan is computed from, as the caches hold them now, sorted by name so
/// equal states give equal plans.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<Node>,
    /// The `default` BGPConfiguration, if it exists.
    pub configuration: Option<BGPConfiguration>,
    pub peers: Vec<BGPPeer>,
    pub pools: Vec<IPPool>,
    /// This node's blocks.
    pub blocks: Vec<IPAMBlock>,
    pub secrets: Vec<Secret>,
}

/// The name of the singleton BGPConfiguration (Calico's convention).
pub const CONFIGURATION_NAME: &str = "default";

impl Caches {
    /// Starts every watch. Each event (after the cache was updated) wakes `notify`.
    pub fn start(client: &kube::Client, node: &str, namespace: &str, notify: Arc<Notify>) -> Self {
        let mut tasks = Vec::new();
        let mut all = |t| tasks.push(t);
        let (nodes, t) = reflect(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            notify.clone(),
            "nodes",
        );
        all(t);
        let (configurations, t) = reflect(
            Api::<BGPConfiguration>::all(client.clone()),
            watcher::Config::default(),
            notify.clone(),
            "bgpconfigurations",
        );
        all(t);
        let (peers, t) = reflect(
            Api::<BGPPeer>::all(client.clone()),
            watcher::Config::default(),
            notify.clone(),
            "bgppeers",
        );
        all(t);
        let (pools, t) = reflect(
            Api::<IPPool>::all(client.clone()),
            watcher::Config::default(),
            notify.clone(),
            "ippools",
        );
        all(t);
        let (blocks, t) = reflect(
            Api::<IPAMBlock>::all(client.clone()),
            watcher::Config::default().fields(&format!("spec.node={node}")),
            notify.clone(),
            "ipamblocks",
        );
        all(t);
        let (secrets, t) = reflect(
            Api::<Secret>::namespaced(client.clone(), namespace),
            watcher::Config::default(),
            notify,
            "secrets",
        );
        all(t);
        Caches {
            nodes,
            configurations,
            peers,
            pools,
            blocks,
            secrets,
            tasks,
        }
    }

    /// Waits until every cache has completed its first list.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.nodes.wait_until_ready().await?;
        self.configurations.wait_until_ready().await?;
        self.peers.wait_until_ready().await?;
        self.pools.wait_until_ready().await?;
        self.blocks.wait_until_ready().await?;
        self.secrets.wait_until_ready().await
    }

    pub fn snapshot(&self, node: &str) -> Snapshot {
        let configuration = self
            .configurations
            .state()
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(CONFIGURATION_NAME))
            .map(|c| (**c).clone());
        Snapshot {
            nodes: sorted(&self.nodes),
            configuration,
            peers: sorted(&self.peers),
            pools: sorted(&self.pools),
            // The field selector filters on the server; filter again so a server that
            // ignored it cannot make us announce another node's block.
            blocks: sorted(&self.blocks)
                .into_iter()
                .filter(|b| b.spec.node == node)
                .collect(),
            secrets: sorted(&self.secrets),
        }
    }
}

fn sorted<K: Resource + Clone>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    let mut v: Vec<K> = store.state().iter().map(|o| (**o).clone()).collect();
    v.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    v
}

fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    notify: Arc<Notify>,
    what: &'static str,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config).default_backoff().reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => notify.notify_one(),
                Err(e) => {
                    tracing::warn!(cache = what, error = %e, "watch error; retrying with backoff")
                }
            }
        }
    });
    (reader, task)
}
