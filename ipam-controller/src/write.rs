//! The controller's writes to the API, each one compare-and-swap.
//!
//! Owns how a planned [`crate::plan::Action`] becomes requests: block creation (the name is
//! derived from the CIDR, so two controllers or two passes creating the same block collide
//! with 409 AlreadyExists instead of overlapping), block deletion with a `resourceVersion`
//! precondition (an allocation written by an agent in between makes the delete fail with 409,
//! so it is never lost), releases re-checked against a fresh read of the pod and the block and
//! written with `replace_status` on the read `resourceVersion`, and pool finalizer/status
//! updates with `replace` on the read `resourceVersion`. On 409 the object is read again and
//! the change re-applied, up to [`MAX_ATTEMPTS`] times. Must not decide anything: the
//! decisions are made in `crate::plan`.
//!
//! Two writers, one object: the controller writes IPAMBlock spec (create/delete) and, for a
//! release only, IPAMBlock status; the node agent writes IPAMBlock status. Both write status
//! with `replace_status` on the `resourceVersion` they read, so whichever writes second gets
//! 409, re-reads and re-applies its change on the other's result: neither change is lost.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use tabby_api::ipam::block::release_if_unchanged;
use tabby_api::ipam::node::BlockPlan;
use tabby_api::v1alpha1::{IPAMBlock, IPAMBlockSpec, IPPool, IPPoolStatus, PodReference};

use crate::plan::POOL_FINALIZER;

/// Attempts per compare-and-swap write before giving up until the next pass.
pub const MAX_ATTEMPTS: usize = 5;

/// What a write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The change was written.
    Done,
    /// Nothing to write: the object already is as wanted (or already gone).
    AlreadyDone,
    /// Not written, on purpose: the reason says why (e.g. the pod is alive, the block changed).
    Skipped(String),
}

/// A write that failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API refused or could not be reached.
    #[error("{what}: {source}")]
    Api {
        /// The write, naming the object.
        what: String,
        /// Cause.
        source: kube::Error,
    },
    /// Every attempt met a conflicting write.
    #[error("{what}: still conflicting after {MAX_ATTEMPTS} attempts")]
    Conflicts {
        /// The write, naming the object.
        what: String,
    },
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn api_err(what: &str) -> impl FnOnce(kube::Error) -> WriteError + '_ {
    move |source| WriteError::Api {
        what: what.to_string(),
        source,
    }
}

/// Creates the planned block. 409 (it exists already) is [`Outcome::AlreadyDone`]: the next
/// pass sees the existing block.
pub async fn create_block(api: &Api<IPAMBlock>, plan: &BlockPlan) -> Result<Outcome, WriteError> {
    let block = IPAMBlock::new(
        &plan.name,
        IPAMBlockSpec {
            cidr: plan.cidr.to_string(),
            pool: plan.pool.clone(),
            node: plan.node.clone(),
        },
    );
    match api.create(&PostParams::default(), &block).await {
        Ok(_) => Ok(Outcome::Done),
        Err(e) if is_status(&e, 409) => Ok(Outcome::AlreadyDone),
        Err(e) => Err(api_err(&format!("creating IPAMBlock {}", plan.name))(e)),
    }
}

/// Deletes a block only if it is still at `resource_version`. 409 (it changed) is
/// [`Outcome::Skipped`]; 404 is [`Outcome::AlreadyDone`].
pub async fn delete_block(
    api: &Api<IPAMBlock>,
    name: &str,
    resource_version: &str,
) -> Result<Outcome, WriteError> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some(resource_version.to_string()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(Outcome::Done),
        Err(e) if is_status(&e, 404) => Ok(Outcome::AlreadyDone),
        Err(e) if is_status(&e, 409) => Ok(Outcome::Skipped(format!(
            "IPAMBlock {name} changed since resourceVersion {resource_version}"
        ))),
        Err(e) => Err(api_err(&format!("deleting IPAMBlock {name}"))(e)),
    }
}

/// Releases `ordinal` of `block` held by `handle` (for `pod`), after re-checking that the pod
/// (same namespace, name and uid) does not exist, and only if the fresh block still shows the
/// same holder. Written with `replace_status` on the read `resourceVersion`; retried on 409.
pub async fn release(
    client: &kube::Client,
    block: &str,
    ordinal: u32,
    handle: &str,
    pod: Option<&PodReference>,
    now: Timestamp,
) -> Result<Outcome, WriteError> {
    let what = format!("releasing ordinal {ordinal} of IPAMBlock {block}");
    if let Some(p) = pod {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
        let live = pods.get_opt(&p.name).await.map_err(api_err(&what))?;
        if live.is_some_and(|l| l.metadata.uid.as_deref() == Some(p.uid.as_str())) {
            return Ok(Outcome::Skipped(format!(
                "pod {}/{} (uid {}) exists",
                p.namespace, p.name, p.uid
            )));
        }
    }
    let blocks: Api<IPAMBlock> = Api::all(client.clone());
    for _ in 0..MAX_ATTEMPTS {
        let Some(mut b) = blocks.get_opt(block).await.map_err(api_err(&what))? else {
            return Ok(Outcome::AlreadyDone);
        };
        let status = b.status.get_or_insert_with(Default::default);
        let uid = pod.map(|p| p.uid.as_str());
        if release_if_unchanged(status, ordinal, handle, uid, now).is_none() {
            return Ok(Outcome::AlreadyDone);
        }
        match blocks
            .replace_status(block, &PostParams::default(), &b)
            .await
        {
            Ok(_) => return Ok(Outcome::Done),
            Err(e) if is_status(&e, 409) => continue,
            Err(e) if is_status(&e, 404) => return Ok(Outcome::AlreadyDone),
            Err(e) => return Err(api_err(&what)(e)),
        }
    }
    Err(WriteError::Conflicts { what })
}

/// Adds or removes [`POOL_FINALIZER`] on a pool (read, change, `replace`; retried on 409).
pub async fn pool_finalizer(
    api: &Api<IPPool>,
    name: &str,
    add: bool,
) -> Result<Outcome, WriteError> {
    let what = format!(
        "{} the finalizer of IPPool {name}",
        if add { "adding" } else { "removing" }
    );
    for _ in 0..MAX_ATTEMPTS {
        let Some(mut p) = api.get_opt(name).await.map_err(api_err(&what))? else {
            return Ok(Outcome::AlreadyDone);
        };
        let finalizers = p.metadata.finalizers.get_or_insert_with(Vec::new);
        let has = finalizers.iter().any(|f| f == POOL_FINALIZER);
        if has == add {
            return Ok(Outcome::AlreadyDone);
        }
        if add {
            if p.metadata.deletion_timestamp.is_some() {
                return Ok(Outcome::Skipped(format!("IPPool {name} is being deleted")));
            }
            finalizers.push(POOL_FINALIZER.to_string());
        } else {
            finalizers.retain(|f| f != POOL_FINALIZER);
        }
        match api.replace(name, &PostParams::default(), &p).await {
            Ok(_) => return Ok(Outcome::Done),
            Err(e) if is_status(&e, 409) => continue,
            Err(e) if is_status(&e, 404) => return Ok(Outcome::AlreadyDone),
            Err(e) => return Err(api_err(&what)(e)),
        }
    }
    Err(WriteError::Conflicts { what })
}

/// Writes a pool's status (read, set, `replace_status`; retried on 409).
pub async fn pool_status(
    api: &Api<IPPool>,
    name: &str,
    status: &IPPoolStatus,
) -> Result<Outcome, WriteError> {
    let what = format!("writing the status of IPPool {name}");
    for _ in 0..MAX_ATTEMPTS {
        let Some(mut p) = api.get_opt(name).await.map_err(api_err(&what))? else {
            return Ok(Outcome::AlreadyDone);
        };
        if p.status.as_ref() == Some(status) {
            return Ok(Outcome::AlreadyDone);
        }
        p.status = Some(status.clone());
        match api.replace_status(name, &PostParams::default(), &p).await {
            Ok(_) => return Ok(Outcome::Done),
            Err(e) if is_status(&e, 409) => continue,
            Err(e) if is_status(&e, 404) => return Ok(Outcome::AlreadyDone),
            Err(e) => return Err(api_err(&what)(e)),
        }
    }
    Err(WriteError::Conflicts { what })
}
