//! The `tabby.dev/v1alpha1` API: every CRD Tabby defines, all cluster-scoped.
//!
//! Owns the wire types (what `kubectl` shows and the API server validates) and their Rust-side
//! validation. Must not hold behaviour beyond validation: allocation lives in `crate::ipam`.

// `#[kube(printcolumn(type_ = "integer", ...))]` repeats a key by design (one column each);
// clippy's duplicated-attributes lint misreads the derive's arguments as duplicate attributes.
#[allow(clippy::duplicated_attributes)]
pub mod bgpconfiguration;
#[allow(clippy::duplicated_attributes)]
pub mod bgppeer;
#[allow(clippy::duplicated_attributes)]
pub mod ipamblock;
#[allow(clippy::duplicated_attributes)]
pub mod ippool;
#[allow(clippy::duplicated_attributes)]
pub mod nodenetworkstatus;

pub use bgpconfiguration::{BGPConfiguration, BGPConfigurationSpec};
pub use bgppeer::{BGPPeer, BGPPeerSpec};
pub use ipamblock::{
    Allocation, IPAMBlock, IPAMBlockSpec, IPAMBlockStatus, PodReference, ReleasedOrdinal,
};
pub use ippool::{IPPool, IPPoolSpec, IPPoolStatus};
pub use nodenetworkstatus::{NodeNetworkStatus, NodeNetworkStatusSpec, NodeNetworkStatusStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group.
pub const GROUP: &str = "tabby.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";

/// Every CRD of this version, in a stable order (by plural name).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut all = vec![
        BGPConfiguration::crd(),
        BGPPeer::crd(),
        IPAMBlock::crd(),
        IPPool::crd(),
        NodeNetworkStatus::crd(),
    ];
    all.sort_by(|a, b| a.spec.names.plural.cmp(&b.spec.names.plural));
    all
}
