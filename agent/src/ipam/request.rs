//! What one pod asks for: validated pod identity, annotations, and the per-family plan.
//!
//! Owns the pure part of an allocation request: checking the handle and pod reference (they
//! end up in `IPAMBlock.status`, whose schema bounds them), parsing the pod annotations
//! (`tabby.dev/ippools` for pools, [`ADDRESS_ANNOTATION`] for specific addresses) and
//! deciding which address families the pod gets and from which pool. Must not do I/O or read
//! the clock; `super::client` reads the objects and carries the plan out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tabby_api::ipam::Family;
use tabby_api::ipam::node::block_cidr;
use tabby_api::ipam::pool::{POOL_ANNOTATION, Pool, parse_pool_annotation, requested_pool};
use tabby_api::v1alpha1::{IPAMBlock, PodReference};
use tabby_api::validation::FieldError;

/// Pod annotation asking for specific addresses: a comma-separated list, at most one per
/// address family (`10.244.3.7,fd00:10::7`). Each must lie in a block of the pod's node (and
/// in the pool named by `tabby.dev/ippools` for its family, when that is set).
pub const ADDRESS_ANNOTATION: &str = "tabby.dev/ipaddrs";

/// Longest handle the `IPAMBlock` schema accepts.
pub const MAX_HANDLE_LEN: usize = 256;

/// One pod's request, as the CNI layer hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRequest {
    /// Who holds the addresses: the container ID (CNI `CNI_CONTAINERID`).
    pub handle: String,
    /// The pod (namespace, name, uid), recorded for garbage collection.
    pub pod: PodReference,
    /// The pod's annotations (only the two Tabby ones are read).
    pub annotations: BTreeMap<String, String>,
}

/// One address to allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyRequest {
    /// The family.
    pub family: Family,
    /// Only from this pool (annotation).
    pub pool: Option<String>,
    /// This address (annotation).
    pub address: Option<IpAddr>,
}

/// Why a request is refused before anything is read or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The handle is empty, too long, or not printable.
    #[error("handle {handle:?}: {reason}")]
    Handle {
        /// The handle as given.
        handle: String,
        /// What is wrong.
        reason: String,
    },
    /// A pod reference field is empty or too long.
    #[error("pod reference {field} {value:?}: {reason}")]
    Pod {
        /// `namespace`, `name` or `uid`.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// An annotation is malformed or names something that does not exist.
    #[error("pod {pod}: {source}")]
    Annotation {
        /// `namespace/name`.
        pod: String,
        /// The annotation and what is wrong with it.
        source: FieldError,
    },
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), RequestError> {
    let reason = if value.is_empty() {
        "must not be empty".to_string()
    } else if value.len() > max {
        format!("must be at most {max} characters, got {}", value.len())
    } else {
        return Ok(());
    };
    Err(RequestError::Pod {
        field,
        value: value.chars().take(80).collect(),
        reason,
    })
}

/// Checks the handle and pod reference against what `IPAMBlock.status` accepts, so a bad
/// request is refused with a clear error instead of a 422 from the API.
pub fn validate(req: &PodRequest) -> Result<(), RequestError> {
    check_handle(&req.handle)?;
    check_len("namespace", &req.pod.namespace, 63)?;
    check_len("name", &req.pod.name, 253)?;
    check_len("uid", &req.pod.uid, 128)?;
    Ok(())
}

/// Checks a handle (container ID): 1–256 printable ASCII characters, no whitespace.
pub fn check_handle(handle: &str) -> Result<(), RequestError> {
    let reason = if handle.is_empty() {
        "must not be empty".to_string()
    } else if handle.len() > MAX_HANDLE_LEN {
        format!(
            "must be at most {MAX_HANDLE_LEN} characters, got {}",
            handle.len()
        )
    } else if !handle.bytes().all(|b| b.is_ascii_graphic()) {
        "must be printable ASCII without spaces".to_string()
    } else {
        return Ok(());
    };
    Err(RequestError::Handle {
        handle: handle.chars().take(80).collect(),
        reason,
    })
}

/// Parses the value of [`ADDRESS_ANNOTATION`]: addresses, trimmed, at most one per family.
pub fn parse_address_annotation(value: &str) -> Result<Vec<IpAddr>, FieldError> {
    let path = format!("metadata.annotations[{ADDRESS_ANNOTATION}]");
    let mut out: Vec<IpAddr> = Vec::new();
    for entry in value.split(',').map(str::trim) {
        let addr: IpAddr = entry
            .parse()
            .map_err(|_| FieldError::new(&path, format!("{entry:?} is not an IP address")))?;
        if let Some(other) = out
            .iter()
            .find(|a| a.is_ipv4() == addr.is_ipv4() && **a != addr)
        {
            return Err(FieldError::new(
                &path,
                format!("{other} and {addr} are the same family; give one address per family"),
            ));
        }
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

fn family_of(addr: &IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// Decides which families the pod gets, from which pool and at which address:
///
/// * every family the node holds a block of (not counting blocks of `draining` pools: a pool
///   being deleted or disabled hands out nothing new);
/// * plus the family of every pool named by `tabby.dev/ippools` (the controller gives the node
///   a block of that pool on demand while the pod is pending) and of every address named by
///   [`ADDRESS_ANNOTATION`].
///
/// An empty result means the node has no block yet (the caller waits or reports "try again").
pub fn plan(
    req: &PodRequest,
    node: &str,
    blocks: &[IPAMBlock],
    pools: &[Pool],
    draining: &BTreeSet<String>,
) -> Result<Vec<FamilyRequest>, RequestError> {
    let pod = format!("{}/{}", req.pod.namespace, req.pod.name);
    let annotation_err = |source| RequestError::Annotation {
        pod: pod.clone(),
        source,
    };
    let names = match req.annotations.get(POOL_ANNOTATION) {
        Some(v) => parse_pool_annotation(v).map_err(annotation_err)?,
        None => Vec::new(),
    };
    let addresses = match req.annotations.get(ADDRESS_ANNOTATION) {
        Some(v) => parse_address_annotation(v).map_err(annotation_err)?,
        None => Vec::new(),
    };
    let mut families: BTreeSet<Family> = blocks
        .iter()
        .filter(|b| b.spec.node == node && !draining.contains(&b.spec.pool))
        .filter_map(block_cidr)
        .map(|c| Family::of(&c))
        .collect();
    let mut out = Vec::new();
    let mut by_family: BTreeMap<Family, Option<String>> = BTreeMap::new();
    for family in [Family::V4, Family::V6] {
        let pool = requested_pool(&names, pools, family).map_err(annotation_err)?;
        if let Some(p) = pool {
            if draining.contains(&p.name) || p.disabled || p.terminating {
                let why = if p.terminating || !p.disabled {
                    "is being deleted"
                } else {
                    "is disabled (spec.disabled)"
                };
                return Err(annotation_err(FieldError::new(
                    format!("metadata.annotations[{POOL_ANNOTATION}]"),
                    format!("IPPool {} {why}: it hands out no new addresses", p.name),
                )));
            }
            families.insert(family);
            by_family.insert(family, Some(p.name.clone()));
        }
    }
    for a in &addresses {
        families.insert(family_of(a));
    }
    for family in families {
        out.push(FamilyRequest {
            family,
            pool: by_family.get(&family).cloned().flatten(),
            address: addresses.iter().copied().find(|a| family_of(a) == family),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabby_api::v1alpha1::IPAMBlockSpec;

    /// (case, blocks, annotations, draining pools, expected plan)
    type PlanCase<'a> = (
        &'a str,
        &'a [IPAMBlock],
        Vec<(&'a str, &'a str)>,
        Vec<&'a str>,
        Vec<FamilyRequest>,
    );
    /// (annotations, draining pools, annotation named in the error, words in the message)
    type BadCase<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str, &'a str);

    fn block(cidr: &str, pool: &str, node: &str) -> IPAMBlock {
        let net: ipnet::IpNet = cidr.parse().unwrap();
        IPAMBlock::new(
            &tabby_api::ipam::name::block_name(net),
            IPAMBlockSpec {
                cidr: cidr.into(),
                pool: pool.into(),
                node: node.into(),
            },
        )
    }

    fn req(annotations: &[(&str, &str)]) -> PodRequest {
        PodRequest {
            handle: "c0ffee".into(),
            pod: PodReference {
                namespace: "default".into(),
                name: "web-0".into(),
                uid: "uid-1".into(),
            },
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Scenario 9 of the e2e suite: a disabled pool hands out nothing new — named in the
    /// annotation it is an error that says so; its blocks on the node do not count.
    #[test]
    fn a_disabled_pool_hands_out_nothing_new() {
        let mut ps = pools();
        for p in &mut ps {
            if p.name == "gpu" {
                p.disabled = true;
            }
        }
        let err = plan(
            &req(&[(POOL_ANNOTATION, "gpu")]),
            "n1",
            &[],
            &ps,
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("IPPool gpu is disabled"), "{err}");
        // The client puts disabled pools among the draining ones: their blocks do not count.
        let blocks = [block("10.250.0.0/26", "gpu", "n1")];
        let closed: BTreeSet<String> = ["gpu".to_string()].into();
        assert!(
            plan(&req(&[]), "n1", &blocks, &ps, &closed)
                .unwrap()
                .is_empty()
        );
    }

    fn pools() -> Vec<Pool> {
        vec![
            Pool::new("v4", "10.244.0.0/16".parse().unwrap(), 26),
            Pool::new("gpu", "10.250.0.0/16".parse().unwrap(), 26),
            Pool::new("v6", "fd00:10::/64".parse().unwrap(), 122),
        ]
    }

    fn fr(family: Family, pool: Option<&str>, address: Option<&str>) -> FamilyRequest {
        FamilyRequest {
            family,
            pool: pool.map(Into::into),
            address: address.map(|a| a.parse().unwrap()),
        }
    }

    #[test]
    fn families_follow_the_nodes_blocks_and_the_annotations() {
        let blocks = vec![
            block("10.244.0.0/26", "v4", "n1"),
            block("fd00:10::/122", "v6", "n1"),
            block("10.244.0.64/26", "v4", "n2"),
        ];
        let none = BTreeSet::new();
        let v6_only = vec![block("fd00:10::/122", "v6", "n1")];
        let cases: Vec<PlanCase> = vec![
            (
                "dual-stack node: one address per family",
                &blocks,
                vec![],
                vec![],
                vec![fr(Family::V4, None, None), fr(Family::V6, None, None)],
            ),
            (
                "another node's blocks do not count",
                &blocks[2..],
                vec![],
                vec![],
                vec![],
            ),
            (
                "a draining pool's blocks do not count",
                &blocks,
                vec![],
                vec!["v6"],
                vec![fr(Family::V4, None, None)],
            ),
            (
                "a requested pool adds its family even before the node has a block of it",
                &v6_only,
                vec![(POOL_ANNOTATION, "gpu")],
                vec![],
                vec![
                    fr(Family::V4, Some("gpu"), None),
                    fr(Family::V6, None, None),
                ],
            ),
            (
                "a requested address picks its family's address",
                &blocks,
                vec![(ADDRESS_ANNOTATION, " fd00:10::7 ")],
                vec![],
                vec![
                    fr(Family::V4, None, None),
                    fr(Family::V6, None, Some("fd00:10::7")),
                ],
            ),
            (
                "pool and address together",
                &blocks,
                vec![
                    (POOL_ANNOTATION, "gpu,v6"),
                    (ADDRESS_ANNOTATION, "10.250.0.9"),
                ],
                vec![],
                vec![
                    fr(Family::V4, Some("gpu"), Some("10.250.0.9")),
                    fr(Family::V6, Some("v6"), None),
                ],
            ),
        ];
        for (case, bs, ann, draining, want) in cases {
            let draining: BTreeSet<String> = draining.into_iter().map(Into::into).collect();
            let got = plan(&req(&ann), "n1", bs, &pools(), &draining).unwrap();
            assert_eq!(got, want, "{case}");
        }
        assert!(
            plan(&req(&[]), "n1", &[], &pools(), &none)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_annotations_name_the_annotation_and_the_entry() {
        let blocks = vec![block("10.244.0.0/26", "v4", "n1")];
        let cases: &[BadCase] = &[
            (
                &[(POOL_ANNOTATION, "nope")],
                &[],
                POOL_ANNOTATION,
                "no IPPool named \"nope\"",
            ),
            (
                &[(POOL_ANNOTATION, "v4,gpu")],
                &[],
                POOL_ANNOTATION,
                "both IPv4 pools",
            ),
            (
                &[(POOL_ANNOTATION, "Bad_Name")],
                &[],
                POOL_ANNOTATION,
                "Bad_Name",
            ),
            (
                &[(POOL_ANNOTATION, "gpu")],
                &["gpu"],
                POOL_ANNOTATION,
                "being deleted",
            ),
            (
                &[(ADDRESS_ANNOTATION, "10.0.0.300")],
                &[],
                ADDRESS_ANNOTATION,
                "not an IP address",
            ),
            (
                &[(ADDRESS_ANNOTATION, "10.0.0.1,10.0.0.2")],
                &[],
                ADDRESS_ANNOTATION,
                "same family",
            ),
            (
                &[(ADDRESS_ANNOTATION, "")],
                &[],
                ADDRESS_ANNOTATION,
                "not an IP address",
            ),
        ];
        for (ann, draining, annotation, words) in cases {
            let draining: BTreeSet<String> = draining.iter().map(|s| s.to_string()).collect();
            let err = plan(&req(ann), "n1", &blocks, &pools(), &draining).unwrap_err();
            let RequestError::Annotation { pod, source } = &err else {
                panic!("{ann:?}: {err:?}");
            };
            assert_eq!(pod, "default/web-0");
            assert_eq!(
                source.path,
                format!("metadata.annotations[{annotation}]"),
                "{ann:?}"
            );
            assert!(err.to_string().contains(words), "{ann:?}: {err}");
        }
        // The same address twice is one request, not an error.
        assert_eq!(
            parse_address_annotation("10.0.0.1, 10.0.0.1").unwrap(),
            ["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn handle_and_pod_reference_are_bounded() {
        let ok = req(&[]);
        assert_eq!(validate(&ok), Ok(()));
        let long = "x".repeat(MAX_HANDLE_LEN + 1);
        // (case, handle, namespace, name, uid, words in the error)
        let cases = [
            (
                "empty handle",
                "",
                "ns",
                "n",
                "u",
                "handle \"\": must not be empty",
            ),
            ("long handle", long.as_str(), "ns", "n", "u", "at most 256"),
            ("space in handle", "a b", "ns", "n", "u", "printable ASCII"),
            (
                "empty namespace",
                "h",
                "",
                "n",
                "u",
                "namespace \"\": must not be empty",
            ),
            (
                "empty name",
                "h",
                "ns",
                "",
                "u",
                "name \"\": must not be empty",
            ),
            (
                "empty uid",
                "h",
                "ns",
                "n",
                "",
                "uid \"\": must not be empty",
            ),
        ];
        for (case, handle, namespace, name, uid, words) in cases {
            let r = PodRequest {
                handle: handle.into(),
                pod: PodReference {
                    namespace: namespace.into(),
                    name: name.into(),
                    uid: uid.into(),
                },
                annotations: BTreeMap::new(),
            };
            let err = validate(&r).unwrap_err().to_string();
            assert!(err.contains(words), "{case}: {err}");
        }
        let mut r = req(&[]);
        r.pod.namespace = "n".repeat(64);
        assert!(validate(&r).unwrap_err().to_string().contains("at most 63"));
    }
}
