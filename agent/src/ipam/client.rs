//! The agent's allocation client: pod addresses from the node's own IPAMBlocks, through the API.
//!
//! Owns the requests: read the IPPools and this node's IPAMBlocks (`fieldSelector=spec.node=`,
//! both lists in parallel), let the pure core (`tabby_api::ipam::node`) pick the address, and
//! write the block's **status only**, with `replace_status` on the `resourceVersion` that was
//! read. On 409 (someone else wrote the block: another CNI call, the controller releasing) or
//! 404 (the block was reclaimed) the blocks are read again and the decision redone, up to
//! [`ClientConfig::max_attempts`] times. Nothing is ever written to a block's spec: the
//! controller owns that.
//!
//! A dual-stack pod gets one address per family; if a later family fails, the addresses this
//! call wrote for earlier families are released again (into cooldown), so a failed request
//! leaves nothing behind. Release by handle is idempotent, as CNI DEL requires.
//!
//! When no address can be had *yet* (the node has no block of a family, every block is full, or
//! a requested address is cooling down) the error is [`IpamError::NoAddressYet`]; with a
//! non-zero wait the client watches this node's blocks (and re-tries at least every
//! [`ClientConfig::poll_interval`], since a cooldown ends without any API event) until the
//! deadline. The CNI layer maps a final `NoAddressYet` to CNI error code 11 ("try again later").
//!
//! Must not decide which address: that is `tabby_api::ipam`; must not touch netlink.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use tabby_api::ipam::block::{self, AllocError, AllocRequest};
use tabby_api::ipam::node::{self, NodeAllocError, Scope, block_cidr};
use tabby_api::ipam::pool::Pool;
use tabby_api::ipam::{Family, IpamConfig};
use tabby_api::v1alpha1::{IPAMBlock, IPPool};
use tabby_api::validation::join;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::request::{self, FamilyRequest, PodRequest, RequestError};

/// Client settings. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long a released address stays unusable; must equal the controller's `--cooldown`
    /// (default 30 s).
    pub cooldown: Duration,
    /// Attempts per compare-and-swap write before giving up with [`IpamError::Conflicts`]
    /// (default 10; each conflict means another writer made progress).
    pub max_attempts: usize,
    /// While waiting for an address, try again at least this often (default 1 s).
    pub poll_interval: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            cooldown: IpamConfig::default().cooldown,
            max_attempts: 10,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// One address given to a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// The address.
    pub address: IpAddr,
    /// The block it came from.
    pub cidr: IpNet,
    /// The block's object name.
    pub block: String,
    /// The block's pool.
    pub pool: String,
    /// `true` when the handle already held it (a repeated ADD; nothing was written).
    pub existing: bool,
}

/// One address released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// The address.
    pub address: IpAddr,
    /// The block's object name.
    pub block: String,
}

/// Why an allocation or release failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The request itself is invalid (handle, pod reference, annotations).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// No address can be had yet; try again later (CNI code 11).
    #[error("node {node}: no {} address available yet{}: {reason}",
        family.map(|f| f.to_string()).unwrap_or_else(|| "pod".into()),
        pool.as_ref().map(|p| format!(" from IPPool {p}")).unwrap_or_default())]
    NoAddressYet {
        /// This node.
        node: String,
        /// The family, when one was being allocated.
        family: Option<Family>,
        /// The pool asked for, if any.
        pool: Option<String>,
        /// Why (no block, all full, address cooling down).
        reason: String,
    },
    /// The request cannot be served as asked (address in use, not on this node, …).
    #[error("node {node}: {source}")]
    Refused {
        /// This node.
        node: String,
        /// What the IPAM core refused.
        source: NodeAllocError,
    },
    /// The API refused or could not be reached.
    #[error("{what}: {source}")]
    Api {
        /// The request, naming the object.
        what: String,
        /// Cause.
        source: kube::Error,
    },
    /// Every attempt met a conflicting write.
    #[error("{what}: still conflicting after {attempts} attempts")]
    Conflicts {
        /// The write, naming the object.
        what: String,
        /// Attempts made.
        attempts: usize,
    },
}

impl IpamError {
    /// Whether waiting may help (the CNI layer answers code 11 "try again later").
    pub fn is_try_again(&self) -> bool {
        matches!(self, Self::NoAddressYet { .. })
    }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> IpamError {
    let what = what.into();
    move |source| IpamError::Api { what, source }
}

/// What one read of the API gives.
struct View {
    /// Valid pools.
    pools: Vec<Pool>,
    /// Pools being deleted.
    draining: BTreeSet<String>,
    /// This node's valid blocks.
    blocks: Vec<IPAMBlock>,
    /// The block list's resourceVersion (where a wait starts watching).
    resource_version: Option<String>,
}

/// The allocation client of one node.
#[derive(Clone)]
pub struct IpamClient {
    blocks: Api<IPAMBlock>,
    pools: Api<IPPool>,
    node: String,
    cfg: ClientConfig,
    ipam: IpamConfig,
}

impl IpamClient {
    /// A client allocating for `node` through `client`.
    pub fn new(client: kube::Client, node: impl Into<String>, cfg: ClientConfig) -> Self {
        let ipam = IpamConfig {
            cooldown: cfg.cooldown,
            ..IpamConfig::default()
        };
        Self {
            blocks: Api::all(client.clone()),
            pools: Api::all(client),
            node: node.into(),
            cfg,
            ipam,
        }
    }

    /// The node this client allocates for.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn node_blocks(&self) -> ListParams {
        ListParams::default().fields(&format!("spec.node={}", self.node))
    }

    async fn list_blocks(&self) -> Result<(Vec<IPAMBlock>, Option<String>), IpamError> {
        let list = self
            .blocks
            .list(&self.node_blocks())
            .await
            .map_err(api_err(format!(
                "listing the IPAMBlocks of node {}",
                self.node
            )))?;
        let rv = list.metadata.resource_version.clone();
        Ok((self.usable(list.items), rv))
    }

    /// This node's blocks that pass validation (an invalid block is external input gone wrong:
    /// it is logged and never allocated from).
    fn usable(&self, items: Vec<IPAMBlock>) -> Vec<IPAMBlock> {
        items
            .into_iter()
            .filter(|b| b.spec.node == self.node)
            .filter(|b| match b.validate() {
                Ok(()) => true,
                Err(errors) => {
                    warn!(block = ?b.metadata.name, errors = %join(&errors), "ignoring an invalid IPAMBlock");
                    false
                }
            })
            .collect()
    }

    async fn read(&self) -> Result<View, IpamError> {
        let (pools, (blocks, resource_version)) = tokio::try_join!(
            async {
                self.pools
                    .list(&ListParams::default())
                    .await
                    .map_err(api_err("listing IPPools"))
            },
            self.list_blocks()
        )?;
        let mut valid = Vec::new();
        let mut draining = BTreeSet::new();
        for p in &pools.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            // A pool being deleted or disabled hands out nothing new; its pods keep their
            // addresses.
            if p.metadata.deletion_timestamp.is_some() || p.spec.disabled {
                draining.insert(name.clone());
            }
            match Pool::from_ippool(p) {
                Ok(pool) => valid.push(pool),
                Err(errors) => {
                    debug!(pool = %name, errors = %join(&errors), "ignoring an invalid IPPool")
                }
            }
        }
        Ok(View {
            pools: valid,
            draining,
            blocks,
            resource_version,
        })
    }

    /// Allocates one address per family for `req`, waiting up to `wait` for one to become
    /// available (zero: fail at once with [`IpamError::NoAddressYet`]). Idempotent per handle:
    /// a repeated call returns the same addresses with `existing` set and writes nothing.
    pub async fn allocate(
        &self,
        req: &PodRequest,
        wait: Duration,
    ) -> Result<Vec<Assigned>, IpamError> {
        request::validate(req)?;
        let deadline = Instant::now() + wait;
        loop {
            let (result, rv) = self.try_allocate(req).await;
            match result {
                Err(e) if e.is_try_again() => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    debug!(node = %self.node, handle = %req.handle, error = %e, "waiting for an address");
                    self.wait_for_change(rv.as_deref(), left).await;
                }
                r => return r,
            }
        }
    }

    async fn try_allocate(
        &self,
        req: &PodRequest,
    ) -> (Result<Vec<Assigned>, IpamError>, Option<String>) {
        let mut view = match self.read().await {
            Ok(v) => v,
            Err(e) => return (Err(e), None),
        };
        let wanted = match request::plan(req, &self.node, &view.blocks, &view.pools, &view.draining)
        {
            Ok(w) => w,
            Err(e) => return (Err(e.into()), view.resource_version),
        };
        if wanted.is_empty() {
            let e = IpamError::NoAddressYet {
                node: self.node.clone(),
                family: None,
                pool: None,
                reason: "the node has no IPAMBlock yet".into(),
            };
            return (Err(e), view.resource_version);
        }
        let mut out: Vec<Assigned> = Vec::new();
        for fr in &wanted {
            match self.allocate_family(req, fr, &mut view).await {
                Ok(a) => out.push(a),
                Err(e) => {
                    let written: Vec<&Assigned> = out.iter().filter(|a| !a.existing).collect();
                    for a in written {
                        if let Err(re) = self.release_in(&a.block, &req.handle).await {
                            warn!(block = %a.block, handle = %req.handle, error = %re,
                                "could not undo a partial allocation; CNI DEL or GC will release it");
                        }
                    }
                    return (Err(e), view.resource_version);
                }
            }
        }
        (Ok(out), view.resource_version)
    }

    async fn allocate_family(
        &self,
        req: &PodRequest,
        fr: &FamilyRequest,
        view: &mut View,
    ) -> Result<Assigned, IpamError> {
        let ar = AllocRequest {
            handle: req.handle.clone(),
            pod: Some(req.pod.clone()),
            address: fr.address,
        };
        let scope = Scope {
            node: &self.node,
            family: fr.family,
            pool: fr.pool.as_deref(),
        };
        let not_yet = |reason: String| IpamError::NoAddressYet {
            node: self.node.clone(),
            family: Some(fr.family),
            pool: fr.pool.clone(),
            reason,
        };
        let mut what = format!("allocating a {} address on node {}", fr.family, self.node);
        for attempt in 1..=self.cfg.max_attempts {
            let now = Timestamp::now();
            let a = match node::allocate(
                &mut view.blocks,
                scope,
                &view.draining,
                &ar,
                now,
                &self.ipam,
            ) {
                Ok(a) => a,
                Err(e @ (NodeAllocError::NoBlock { .. } | NodeAllocError::Full { .. })) => {
                    return Err(not_yet(e.to_string()));
                }
                Err(
                    e @ NodeAllocError::Block {
                        source: AllocError::CoolingDown { .. },
                        ..
                    },
                ) => return Err(not_yet(e.to_string())),
                Err(source) => {
                    return Err(IpamError::Refused {
                        node: self.node.clone(),
                        source,
                    });
                }
            };
            let b = &view.blocks[a.block_index];
            let assigned = Assigned {
                address: a.address,
                cidr: block_cidr(b).unwrap_or_else(|| IpNet::from(a.address)),
                block: a.block.clone(),
                pool: b.spec.pool.clone(),
                existing: a.existing,
            };
            if a.existing {
                return Ok(assigned);
            }
            what = format!(
                "writing the status of IPAMBlock {} (allocating {} to {})",
                a.block, a.address, req.handle
            );
            match self
                .blocks
                .replace_status(&a.block, &PostParams::default(), b)
                .await
            {
                Ok(updated) => {
                    view.blocks[a.block_index] = updated;
                    return Ok(assigned);
                }
                Err(e) if matches!(code(&e), Some(409 | 404)) => {
                    debug!(block = %a.block, attempt, error = %e, "block changed under us; reading again");
                    let (blocks, rv) = self.list_blocks().await?;
                    view.blocks = blocks;
                    view.resource_version = rv;
                }
                Err(e) => {
                    // The in-memory block holds the unwritten change: read again before any
                    // later use of the view.
                    if let Ok((blocks, rv)) = self.list_blocks().await {
                        view.blocks = blocks;
                        view.resource_version = rv;
                    }
                    return Err(api_err(what)(e));
                }
            }
        }
        Err(IpamError::Conflicts {
            what,
            attempts: self.cfg.max_attempts,
        })
    }

    /// Waits until this node's blocks change, `poll_interval` passes, or `left` runs out.
    async fn wait_for_change(&self, rv: Option<&str>, left: Duration) {
        let step = left.min(self.cfg.poll_interval);
        let secs = u32::try_from(step.as_secs().max(1)).unwrap_or(u32::MAX);
        let wp = WatchParams::default()
            .fields(&format!("spec.node={}", self.node))
            .timeout(secs);
        let changed = async {
            if let Some(rv) = rv
                && let Ok(stream) = self.blocks.watch(&wp, rv).await
            {
                let mut stream = std::pin::pin!(stream);
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(
                            WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Deleted(_),
                        ) => {
                            return;
                        }
                        Ok(WatchEvent::Bookmark(_)) => continue,
                        // 410 Gone or a broken stream: fall back to polling.
                        Ok(WatchEvent::Error(_)) | Err(_) => break,
                    }
                }
            }
            std::future::pending::<()>().await;
        };
        let _ = tokio::time::timeout(step, changed).await;
    }

    /// Releases every address `handle` holds on this node (each into cooldown). Idempotent:
    /// releasing a handle that holds nothing returns an empty list and writes nothing.
    pub async fn release(&self, handle: &str) -> Result<Vec<Released>, IpamError> {
        request::check_handle(handle)?;
        let list = self
            .blocks
            .list(&self.node_blocks())
            .await
            .map_err(api_err(format!(
                "listing the IPAMBlocks of node {}",
                self.node
            )))?;
        let mut out = Vec::new();
        // Invalid blocks too: a handle's address is released wherever it sits on this node.
        for b in list.items.into_iter().filter(|b| {
            b.spec.node == self.node
                && b.status
                    .as_ref()
                    .is_some_and(|s| s.allocations.iter().any(|a| a.handle == handle))
        }) {
            if let Some(r) = self.release_from(b, handle).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Releases `handle` from block `name` (read fresh).
    async fn release_in(&self, name: &str, handle: &str) -> Result<Option<Released>, IpamError> {
        let what = format!("reading IPAMBlock {name}");
        match self.blocks.get_opt(name).await.map_err(api_err(what))? {
            Some(b) => self.release_from(b, handle).await,
            None => Ok(None),
        }
    }

    async fn release_from(
        &self,
        mut b: IPAMBlock,
        handle: &str,
    ) -> Result<Option<Released>, IpamError> {
        let name = b.metadata.name.clone().unwrap_or_default();
        let what = format!("writing the status of IPAMBlock {name} (releasing {handle})");
        for attempt in 1..=self.cfg.max_attempts {
            if b.spec.node != self.node {
                return Ok(None);
            }
            let cidr = block_cidr(&b);
            let status = b.status.get_or_insert_with(Default::default);
            let Some(gone) = block::release_handle(status, handle, Timestamp::now()) else {
                return Ok(None);
            };
            let address = cidr.and_then(|c| tabby_api::ipam::name::address_of(c, gone.ordinal));
            match self
                .blocks
                .replace_status(&name, &PostParams::default(), &b)
                .await
            {
                Ok(_) => {
                    return Ok(address.map(|address| Released {
                        address,
                        block: name,
                    }));
                }
                Err(e) if code(&e) == Some(409) => {
                    debug!(block = %name, attempt, "block changed under us; reading again");
                    match self
                        .blocks
                        .get_opt(&name)
                        .await
                        .map_err(api_err(format!("reading IPAMBlock {name}")))?
                    {
                        Some(fresh) => b = fresh,
                        None => return Ok(None),
                    }
                }
                Err(e) if code(&e) == Some(404) => return Ok(None),
                Err(e) => return Err(api_err(what)(e)),
            }
        }
        Err(IpamError::Conflicts {
            what,
            attempts: self.cfg.max_attempts,
        })
    }
}
