//! The agent's [`Handler`]: CNI ADD, DEL, CHECK, STATUS and GC over IPAM, the pod datapath and
//! the route reconciler.
//!
//! ADD: pod from `CNI_ARGS` → GET the Pod (UID, annotations) → allocate (keyed by container
//! ID) → plumb the veth → hand the host routes to the route reconciler → answer. Any failure
//! after the allocation rolls back the interface (deleting it takes its routes along), the
//! route reconciler's entries and the allocation.
//!
//! Serialisation: every request holds its container ID's lock for its whole run (a retried or
//! overlapping request for one container never interleaves), and IPAM writes of this node go
//! one at a time through `ipam_turn`. The client's compare-and-swap already prevents duplicate
//! addresses and lost updates; taking turns keeps 50 parallel ADDs from spending their retries
//! on conflicts with each other (this agent is the only writer of its blocks' status besides
//! the controller's releases). Waiting for a block happens outside the turn.
//!
//! Must not touch routes itself (the datapath writes the pod's host routes; the route
//! reconciler owns them afterwards) nor interfaces other than the datapath's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use tabby_api::v1alpha1::{IPAMBlock, PodReference};
use tabby_cni::datapath::{Datapath, DelOutcome, PodSpec, host_ifname, pod_key};
use tabby_cni::server::Handler;
use tabby_cni::spec::{Attachment, CniError, CniResult, ErrorCode, Request};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::locks::KeyedLocks;
use super::reconcile;
use crate::ipam::{IpamClient, IpamError, PodRequest};
use crate::metrics::IpamCounters;
use crate::routes::ReconcilerHandle;

/// What the handler needs; built by [`super::start`].
pub struct AgentHandler {
    pub(crate) client: kube::Client,
    pub(crate) node: String,
    pub(crate) ipam: IpamClient,
    pub(crate) routes: ReconcilerHandle,
    pub(crate) datapath: Datapath,
    pub(crate) block_wait: Duration,
    pub(crate) retry_interval: Duration,
    pub(crate) mtu: Option<u32>,
    pub(crate) locks: KeyedLocks,
    pub(crate) ipam_turn: tokio::sync::Mutex<()>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) ipam_counters: Arc<IpamCounters>,
}

/// Bound on one API step of a request (the Pod read, one allocation attempt, a release): a
/// hung API server turns into code 11 the runtime retries, well within the shim's wait.
pub const API_TIMEOUT: Duration = Duration::from_secs(20);

fn err(code: ErrorCode, msg: impl Into<String>) -> CniError {
    CniError::new(code, msg)
}

/// The CNI error for a failed allocation. `waited` is how long ADD waited for an address.
pub fn allocation_error(e: &IpamError, waited: Duration) -> CniError {
    match e {
        IpamError::NoAddressYet { .. } => err(
            ErrorCode::TRY_AGAIN_LATER,
            format!(
                "{e} (waited {:.1} s for the IPAM controller to assign a block or for a \
                 cooldown to end; the runtime will retry)",
                waited.as_secs_f64()
            ),
        ),
        IpamError::Api { .. } | IpamError::Conflicts { .. } => err(
            ErrorCode::TRY_AGAIN_LATER,
            format!("allocating a pod address: {e}"),
        ),
        IpamError::Request(_) | IpamError::Refused { .. } => err(
            ErrorCode::AGENT_FAILURE,
            format!("allocating a pod address: {e}"),
        ),
    }
}

/// Checks that `prev` (a CHECK's `prevResult`) carries every address the container holds.
pub fn check_prev_result(prev: Option<&CniResult>, held: &[IpAddr]) -> Result<(), CniError> {
    let Some(prev) = prev else {
        return Err(err(
            ErrorCode::INVALID_NETWORK_CONFIG,
            "CHECK needs prevResult (the result of the ADD being checked)",
        ));
    };
    let missing: Vec<String> = held
        .iter()
        .filter(|a| !prev.ips.iter().any(|ip| ip.address.addr() == **a))
        .map(|a| a.to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(err(
            ErrorCode::CHECK_FAILED,
            format!(
                "prevResult lacks the pod's address{} {}",
                if missing.len() > 1 { "es" } else { "" },
                missing.join(", ")
            ),
        ))
    }
}

fn host_prefix(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

impl AgentHandler {
    fn pod_spec(&self, req: &Request, addresses: Vec<IpAddr>) -> PodSpec {
        PodSpec {
            container_id: req.container_id().to_string(),
            netns: req.env.netns.clone().unwrap_or_default(),
            ifname: req.ifname().to_string(),
            host_ifname: host_ifname(&pod_key(req.env.pod.as_ref(), req.container_id())),
            addresses,
            mtu: req.config.mtu.or(self.mtu),
        }
    }

    /// GETs the pod: its UID (checked against `CNI_ARGS` when given) and annotations.
    async fn pod_request(&self, req: &Request) -> Result<PodRequest, CniError> {
        let Some(pod) = &req.env.pod else {
            return Err(err(
                ErrorCode::INVALID_ENV,
                "CNI_ARGS lacks K8S_POD_NAMESPACE and K8S_POD_NAME: Tabby gives addresses to \
                 Kubernetes pods only",
            ));
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let found = tokio::time::timeout(API_TIMEOUT, api.get_opt(&pod.name))
            .await
            .map_err(|_| {
                err(
                    ErrorCode::TRY_AGAIN_LATER,
                    format!(
                        "reading pod {}/{} from the API: no answer within {API_TIMEOUT:?}",
                        pod.namespace, pod.name
                    ),
                )
            })?
            .map_err(|e| {
                err(
                    ErrorCode::TRY_AGAIN_LATER,
                    format!(
                        "reading pod {}/{} from the API: {e}",
                        pod.namespace, pod.name
                    ),
                )
            })?;
        let Some(found) = found else {
            return Err(err(
                ErrorCode::AGENT_FAILURE,
                format!(
                    "pod {}/{} does not exist in the API (deleted while its sandbox was being \
                     created?)",
                    pod.namespace, pod.name
                ),
            ));
        };
        let api_uid = found.metadata.uid.clone().unwrap_or_default();
        let uid = match &pod.uid {
            Some(uid) if !api_uid.is_empty() && *uid != api_uid => {
                return Err(err(
                    ErrorCode::AGENT_FAILURE,
                    format!(
                        "pod {}/{} has UID {api_uid} in the API, but the runtime asked for \
                         UID {uid}: the sandbox is for an older pod of that name",
                        pod.namespace, pod.name
                    ),
                ));
            }
            Some(uid) => uid.clone(),
            None => api_uid,
        };
        Ok(PodRequest {
            handle: req.container_id().to_string(),
            pod: PodReference {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid,
            },
            annotations: found.metadata.annotations.unwrap_or_default(),
        })
    }

    /// Allocates, taking the node's IPAM turn for each attempt and waiting (outside the turn)
    /// up to `block_wait` while no address can be had yet.
    async fn allocate(&self, pr: &PodRequest) -> Result<Vec<crate::ipam::Assigned>, CniError> {
        let r = self.allocate_waiting(pr).await;
        self.ipam_counters.allocated(r.is_ok());
        r
    }

    async fn allocate_waiting(
        &self,
        pr: &PodRequest,
    ) -> Result<Vec<crate::ipam::Assigned>, CniError> {
        let started = Instant::now();
        let deadline = started + self.block_wait;
        loop {
            let r = {
                let _turn = self.ipam_turn.lock().await;
                match tokio::time::timeout(API_TIMEOUT, self.ipam.allocate(pr, Duration::ZERO))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(err(
                            ErrorCode::TRY_AGAIN_LATER,
                            format!(
                                "allocating a pod address: the API gave no answer within \
                                 {API_TIMEOUT:?}"
                            ),
                        ));
                    }
                }
            };
            match r {
                Ok(a) => return Ok(a),
                Err(e) if e.is_try_again() && Instant::now() < deadline => {
                    debug!(handle = %pr.handle, error = %e, "no address yet; waiting");
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(left.min(self.retry_interval)).await;
                }
                Err(e) => return Err(allocation_error(&e, started.elapsed())),
            }
        }
    }

    async fn release(&self, handle: &str) -> Result<Vec<IpAddr>, CniError> {
        let r = self.release_in_turn(handle).await;
        self.ipam_counters.released(r.is_ok());
        r
    }

    async fn release_in_turn(&self, handle: &str) -> Result<Vec<IpAddr>, CniError> {
        let _turn = self.ipam_turn.lock().await;
        let released = tokio::time::timeout(API_TIMEOUT, self.ipam.release(handle))
            .await
            .map_err(|_| {
                err(
                    ErrorCode::TRY_AGAIN_LATER,
                    format!(
                        "releasing the addresses of {handle}: the API gave no answer within \
                         {API_TIMEOUT:?}"
                    ),
                )
            })?;
        match released {
            Ok(r) => Ok(r.into_iter().map(|r| r.address).collect()),
            Err(e) => Err(err(
                ErrorCode::TRY_AGAIN_LATER,
                format!("releasing the addresses of {handle}: {e}"),
            )),
        }
    }

    /// Undoes an ADD: interface (with its routes), the reconciler's entries, the allocation.
    async fn roll_back(&self, req: &Request, addresses: &[IpAddr]) {
        let spec = self.pod_spec(req, vec![]);
        if let Err(e) = self
            .datapath
            .del(&spec.host_ifname, req.container_id())
            .await
        {
            warn!(container = req.container_id(), error = %e, "rollback: deleting the interface failed");
        }
        for a in addresses {
            let _ = self.routes.remove_pod_route(host_prefix(*a));
        }
        if let Err(e) = self.release(req.container_id()).await {
            warn!(container = req.container_id(), error = %e.msg,
                "rollback: releasing the allocation failed; DEL or GC will release it");
        }
    }

    async fn do_add(&self, req: &Request) -> Result<CniResult, CniError> {
        let started = Instant::now();
        let pr = self.pod_request(req).await?;
        let pod_read = started.elapsed();
        let assigned = self.allocate(&pr).await?;
        let allocated = started.elapsed();
        let addresses: Vec<IpAddr> = assigned.iter().map(|a| a.address).collect();
        let spec = self.pod_spec(req, addresses.clone());
        let attachment = match self.datapath.add(&spec).await {
            Ok(a) => a,
            Err(e) => {
                self.roll_back(req, &addresses).await;
                return Err(e.to_cni());
            }
        };
        for a in &addresses {
            if self
                .routes
                .set_pod_route(host_prefix(*a), attachment.host_index)
                .is_err()
            {
                self.roll_back(req, &addresses).await;
                return Err(err(
                    ErrorCode::AGENT_FAILURE,
                    "the agent's route reconciler is not running; cannot keep the pod's host \
                     route",
                ));
            }
        }
        // Where an ADD's time goes: the Pod read, the allocation (including the IPAM turn and any
        // wait for a block), the datapath.
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        info!(container = req.container_id(), pod = %format!("{}/{}", pr.pod.namespace, pr.pod.name),
            addresses = ?addresses, host_ifname = %attachment.host_ifname,
            repeated = assigned.iter().all(|a| a.existing),
            pod_read_ms = ms(pod_read), ipam_ms = ms(allocated - pod_read),
            datapath_ms = ms(started.elapsed() - allocated), "pod attached");
        Ok(attachment.cni_result())
    }

    /// The host interface of a container: from the pod's name when `CNI_ARGS` has it, else
    /// found by owner.
    async fn find_host_ifname(&self, req: &Request) -> Option<String> {
        if req.env.pod.is_some() {
            return Some(self.pod_spec(req, vec![]).host_ifname);
        }
        match reconcile::host_veths().await {
            Ok(v) => v
                .into_iter()
                .find(|v| v.owner.as_deref() == Some(req.container_id()))
                .map(|v| v.name),
            Err(e) => {
                warn!(error = %e, "DEL without pod arguments: could not list interfaces");
                None
            }
        }
    }

    /// This container's addresses on this node, read-only.
    async fn held(&self, handle: &str) -> Result<Vec<IpAddr>, CniError> {
        let all = reconcile::node_allocations(&self.client, &self.node)
            .await
            .map_err(|e| err(ErrorCode::TRY_AGAIN_LATER, e.to_string()))?;
        Ok(all
            .get(handle)
            .map(|h| h.addresses.clone())
            .unwrap_or_default())
    }
}

impl Handler for AgentHandler {
    async fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(err(
                ErrorCode::TRY_AGAIN_LATER,
                "the Tabby agent is not ready (starting or stopping); try again",
            ));
        }
        let _g = self.locks.lock(req.container_id()).await;
        self.do_add(req).await
    }

    async fn del(&self, req: &Request) -> Result<(), CniError> {
        let cid = req.container_id();
        let _g = self.locks.lock(cid).await;
        // The interface and the allocation go in parallel: deleting a veth is ~20 ms of the
        // kernel's RCU grace period, the release one API round trip. Releasing first is safe:
        // the address cools down (30 s by default) before anyone can have it, and a failed
        // interface deletion fails the DEL, which the runtime retries.
        let unplumb = async {
            let Some(name) = self.find_host_ifname(req).await else {
                return Ok(());
            };
            match self.datapath.del(&name, cid).await {
                Ok(DelOutcome::Deleted | DelOutcome::Absent) => Ok(()),
                Ok(DelOutcome::OtherOwner(owner)) => {
                    debug!(container = cid, host_ifname = %name, %owner,
                        "DEL: the interface belongs to another container; left alone");
                    Ok(())
                }
                Err(e) => Err(e.to_cni()),
            }
        };
        let (unplumbed, released) = tokio::join!(unplumb, self.release(cid));
        if let Ok(released) = &released {
            for a in released {
                let _ = self.routes.remove_pod_route(host_prefix(*a));
            }
            if !released.is_empty() {
                info!(container = cid, addresses = ?released, "pod detached");
            }
        }
        unplumbed?;
        released.map(drop)
    }

    async fn check(&self, req: &Request) -> Result<(), CniError> {
        let cid = req.container_id();
        let _g = self.locks.lock(cid).await;
        let held = self.held(cid).await?;
        if held.is_empty() {
            return Err(err(
                ErrorCode::UNKNOWN_CONTAINER,
                format!(
                    "container {cid} holds no address on node {}: it was never added here, or \
                     it was deleted",
                    self.node
                ),
            ));
        }
        check_prev_result(req.config.prev_result.as_ref(), &held)?;
        let mut spec = self.pod_spec(req, held);
        if let Some(name) = self.find_host_ifname(req).await {
            spec.host_ifname = name;
        }
        self.datapath
            .check(&spec)
            .await
            .map(drop)
            .map_err(|e| e.to_cni())
    }

    async fn status(&self, _req: &Request) -> Result<(), CniError> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(err(
                ErrorCode::PLUGIN_NOT_AVAILABLE,
                "the Tabby agent is not ready (starting or stopping)",
            ));
        }
        let api: Api<IPAMBlock> = Api::all(self.client.clone());
        let lp = ListParams::default()
            .fields(&format!("spec.node={}", self.node))
            .limit(1);
        match api.list(&lp).await {
            Ok(l) if l.items.is_empty() => Err(err(
                ErrorCode::PLUGIN_NOT_AVAILABLE,
                format!(
                    "node {} has no IPAMBlock yet: the IPAM controller has not assigned one \
                     (is an IPPool selecting this node?)",
                    self.node
                ),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(err(
                ErrorCode::PLUGIN_NOT_AVAILABLE,
                format!("the Kubernetes API cannot be read: {e}"),
            )),
        }
    }

    async fn gc(&self, _req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let valid: BTreeSet<String> = valid.iter().map(|a| a.container_id.clone()).collect();
        let holdings: BTreeMap<_, _> = reconcile::node_allocations(&self.client, &self.node)
            .await
            .map_err(|e| err(ErrorCode::TRY_AGAIN_LATER, e.to_string()))?;
        let live: std::collections::HashSet<String> = valid.iter().cloned().collect();
        let mut released = 0;
        for handle in reconcile::stale_handles(&holdings, &valid) {
            let _g = self.locks.lock(&handle).await;
            for a in self.release(&handle).await? {
                let _ = self.routes.remove_pod_route(host_prefix(a));
                released += 1;
            }
        }
        let removed = self
            .datapath
            .reconcile(&live)
            .await
            .map_err(|e| e.to_cni())?;
        info!(
            released,
            removed = removed.len(),
            "CNI GC: released stale allocations and interfaces"
        );
        Ok(())
    }
}
