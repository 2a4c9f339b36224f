//! Allocation and release inside one block.
//!
//! Owns the rules for an `IPAMBlockStatus`: the lowest free ordinal is handed out first; an
//! ordinal released goes into cooldown (`status.released`) and is not handed out again until
//! the cooldown has passed; allocating twice for the same handle returns the same address;
//! releasing an unknown handle is a no-op. Every address of the block is usable (see the
//! module docs of [`crate::ipam`]). Functions mutate the status in memory only; the caller
//! writes it back with a compare-and-swap on `resourceVersion` and redoes the whole decision on
//! a conflict. Must not read the clock or touch the API.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::elapsed;
use super::name::{address_of, block_capacity, ordinal_of};
use crate::v1alpha1::ipamblock::MAX_BLOCK_ADDRESSES;
use crate::v1alpha1::{Allocation, IPAMBlockStatus, PodReference, ReleasedOrdinal};

/// What a caller asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocRequest {
    /// Who will hold the address (the container ID); allocation is idempotent per handle.
    pub handle: String,
    /// The pod, recorded for garbage collection.
    pub pod: Option<PodReference>,
    /// A specific address instead of the first free one.
    pub address: Option<IpAddr>,
}

/// A successful allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocated {
    /// Offset within the block.
    pub ordinal: u32,
    /// The address.
    pub address: IpAddr,
    /// `true` when the handle already held this address (nothing changed).
    pub existing: bool,
}

/// Why an allocation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The request has no handle.
    #[error("allocation request has an empty handle")]
    EmptyHandle,
    /// The block's CIDR is larger than any block may be.
    #[error("block {block} is larger than {MAX_BLOCK_ADDRESSES} addresses")]
    BlockTooLarge {
        /// The block.
        block: IpNet,
    },
    /// No ordinal is free; `cooling` of them will be once their cooldown ends.
    #[error("block {block} is full ({cooling} addresses are cooling down after release)")]
    Full {
        /// The block.
        block: IpNet,
        /// Ordinals in cooldown.
        cooling: u32,
    },
    /// The requested address is not in the block.
    #[error("{address} is not in block {block}")]
    OutsideBlock {
        /// The block.
        block: IpNet,
        /// The requested address.
        address: IpAddr,
    },
    /// The requested address belongs to another handle.
    #[error("{address} is already allocated to handle {holder:?}")]
    InUse {
        /// The requested address.
        address: IpAddr,
        /// Its current holder.
        holder: String,
    },
    /// The requested address was released recently.
    #[error("{address} was released at {released} and is cooling down")]
    CoolingDown {
        /// The requested address.
        address: IpAddr,
        /// When it was released.
        released: Timestamp,
    },
    /// The handle already holds a different address in this block.
    #[error("handle {handle:?} already holds {held} in this block, not {requested}")]
    HandleHoldsOther {
        /// The handle.
        handle: String,
        /// The address it holds.
        held: IpAddr,
        /// The address asked for.
        requested: IpAddr,
    },
}

/// Address counts of one block at a point in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockUsage {
    /// Addresses in the block.
    pub capacity: u32,
    /// Allocated.
    pub allocated: u32,
    /// Released and still cooling down.
    pub cooling: u32,
    /// Usable now.
    pub free: u32,
}

fn capacity(block: IpNet) -> Result<u32, AllocError> {
    u32::try_from(block_capacity(block))
        .ok()
        .filter(|c| *c <= MAX_BLOCK_ADDRESSES)
        .ok_or(AllocError::BlockTooLarge { block })
}

/// Drops cooldown entries whose cooldown has passed; returns how many were dropped.
pub fn expire_cooldown(status: &mut IPAMBlockStatus, now: Timestamp, cooldown: Duration) -> usize {
    let before = status.released.len();
    status
        .released
        .retain(|r| !elapsed(r.time.0, now, cooldown));
    before - status.released.len()
}

/// Counts of `status` at `now` (entries whose cooldown has passed count as free).
pub fn usage(
    block: IpNet,
    status: &IPAMBlockStatus,
    now: Timestamp,
    cooldown: Duration,
) -> BlockUsage {
    let capacity = u32::try_from(block_capacity(block)).unwrap_or(u32::MAX);
    let allocated = count(status.allocations.iter().filter(|a| a.ordinal < capacity));
    let cooling = count(
        status
            .released
            .iter()
            .filter(|r| r.ordinal < capacity && !elapsed(r.time.0, now, cooldown)),
    );
    BlockUsage {
        capacity,
        allocated,
        cooling,
        free: capacity.saturating_sub(allocated).saturating_sub(cooling),
    }
}

fn count<I: Iterator>(it: I) -> u32 {
    u32::try_from(it.count()).unwrap_or(u32::MAX)
}

/// The address `handle` holds in this block, if any.
pub fn find_handle(block: IpNet, status: &IPAMBlockStatus, handle: &str) -> Option<(u32, IpAddr)> {
    status
        .allocations
        .iter()
        .find(|a| a.handle == handle)
        .and_then(|a| address_of(block, a.ordinal).map(|ip| (a.ordinal, ip)))
}

/// Allocates an address in `block` for `req` at `now`.
pub fn allocate(
    block: IpNet,
    status: &mut IPAMBlockStatus,
    req: &AllocRequest,
    now: Timestamp,
    cooldown: Duration,
) -> Result<Allocated, AllocError> {
    if req.handle.is_empty() {
        return Err(AllocError::EmptyHandle);
    }
    let cap = capacity(block)?;
    if let Some((ordinal, address)) = find_handle(block, status, &req.handle) {
        return match req.address {
            Some(requested) if requested != address => Err(AllocError::HandleHoldsOther {
                handle: req.handle.clone(),
                held: address,
                requested,
            }),
            _ => Ok(Allocated {
                ordinal,
                address,
                existing: true,
            }),
        };
    }
    expire_cooldown(status, now, cooldown);
    let ordinal = match req.address {
        Some(address) => {
            let ordinal = ordinal_of(block, address)
                .filter(|o| *o < cap)
                .ok_or(AllocError::OutsideBlock { block, address })?;
            if let Some(a) = status.allocations.iter().find(|a| a.ordinal == ordinal) {
                return Err(AllocError::InUse {
                    address,
                    holder: a.handle.clone(),
                });
            }
            if let Some(r) = status.released.iter().find(|r| r.ordinal == ordinal) {
                return Err(AllocError::CoolingDown {
                    address,
                    released: r.time.0,
                });
            }
            ordinal
        }
        None => {
            // `cap` ≤ 4096, so the bitmap is bounded whatever the status says.
            let mut used = vec![false; cap as usize];
            let taken = status
                .allocations
                .iter()
                .map(|a| a.ordinal)
                .chain(status.released.iter().map(|r| r.ordinal));
            for o in taken {
                if let Some(slot) = used.get_mut(o as usize) {
                    *slot = true;
                }
            }
            let first = used.iter().position(|u| !u);
            match first.and_then(|o| u32::try_from(o).ok()) {
                Some(o) => o,
                None => {
                    return Err(AllocError::Full {
                        block,
                        cooling: count(status.released.iter()),
                    });
                }
            }
        }
    };
    let address = address_of(block, ordinal).ok_or(AllocError::Full { block, cooling: 0 })?;
    let entry = Allocation {
        ordinal,
        handle: req.handle.clone(),
        pod: req.pod.clone(),
        time: Time(now),
    };
    // Keep the list sorted by ordinal so the status diff of a write stays small and stable.
    let at = status.allocations.partition_point(|a| a.ordinal < ordinal);
    status.allocations.insert(at, entry);
    Ok(Allocated {
        ordinal,
        address,
        existing: false,
    })
}

/// Moves `ordinal` from the allocations into cooldown.
fn release_at(status: &mut IPAMBlockStatus, index: usize, now: Timestamp) -> Allocation {
    let a = status.allocations.remove(index);
    status.released.retain(|r| r.ordinal != a.ordinal);
    let at = status.released.partition_point(|r| r.ordinal < a.ordinal);
    status.released.insert(
        at,
        ReleasedOrdinal {
            ordinal: a.ordinal,
            time: Time(now),
        },
    );
    status.last_release_time = Some(Time(now));
    a
}

/// Releases the address `handle` holds in this block into cooldown. `None` when it holds
/// none (releasing twice is harmless, as CNI DEL requires).
pub fn release_handle(
    status: &mut IPAMBlockStatus,
    handle: &str,
    now: Timestamp,
) -> Option<Allocation> {
    let index = status.allocations.iter().position(|a| a.handle == handle)?;
    Some(release_at(status, index, now))
}

/// Releases `ordinal` only if it is still held by `handle` for the pod with `uid` — the
/// garbage collector's re-check, so an address that changed hands since the decision is never
/// taken from its new owner.
pub fn release_if_unchanged(
    status: &mut IPAMBlockStatus,
    ordinal: u32,
    handle: &str,
    uid: Option<&str>,
    now: Timestamp,
) -> Option<Allocation> {
    let index = status.allocations.iter().position(|a| {
        a.ordinal == ordinal && a.handle == handle && a.pod.as_ref().map(|p| p.uid.as_str()) == uid
    })?;
    Some(release_at(status, index, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }
    fn req(handle: &str) -> AllocRequest {
        AllocRequest {
            handle: handle.into(),
            pod: None,
            address: None,
        }
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    const CD: Duration = Duration::from_secs(30);

    #[test]
    fn first_and_last_addresses_are_usable() {
        let block: IpNet = "10.244.0.64/30".parse().unwrap();
        let mut st = IPAMBlockStatus::default();
        let got: Vec<IpAddr> = (0..4)
            .map(|i| {
                allocate(block, &mut st, &req(&format!("h{i}")), t(0), CD)
                    .unwrap()
                    .address
            })
            .collect();
        assert_eq!(
            got,
            ["10.244.0.64", "10.244.0.65", "10.244.0.66", "10.244.0.67"].map(ip)
        );
        assert_eq!(
            allocate(block, &mut st, &req("h4"), t(0), CD),
            Err(AllocError::Full { block, cooling: 0 })
        );
        let v6: IpNet = "fd00::/127".parse().unwrap();
        let mut st6 = IPAMBlockStatus::default();
        assert_eq!(
            allocate(v6, &mut st6, &req("a"), t(0), CD).unwrap().address,
            ip("fd00::")
        );
        assert_eq!(
            allocate(v6, &mut st6, &req("b"), t(0), CD).unwrap().address,
            ip("fd00::1")
        );
    }

    #[test]
    fn idempotent_per_handle() {
        let block: IpNet = "10.0.0.0/28".parse().unwrap();
        let mut st = IPAMBlockStatus::default();
        let a = allocate(block, &mut st, &req("h"), t(0), CD).unwrap();
        let b = allocate(block, &mut st, &req("h"), t(5), CD).unwrap();
        assert_eq!((a.ordinal, a.existing), (0, false));
        assert_eq!((b.ordinal, b.existing), (0, true));
        assert_eq!(st.allocations.len(), 1);
        // Same handle, same specific address: still idempotent; a different one: refused.
        let mut same = req("h");
        same.address = Some(ip("10.0.0.0"));
        assert!(allocate(block, &mut st, &same, t(6), CD).unwrap().existing);
        same.address = Some(ip("10.0.0.5"));
        assert!(matches!(
            allocate(block, &mut st, &same, t(6), CD),
            Err(AllocError::HandleHoldsOther { .. })
        ));
    }

    #[test]
    fn cooldown_table() {
        let block: IpNet = "10.0.0.0/30".parse().unwrap();
        let mut st = IPAMBlockStatus::default();
        for h in ["a", "b"] {
            allocate(block, &mut st, &req(h), t(0), CD).unwrap();
        }
        assert_eq!(release_handle(&mut st, "a", t(10)).unwrap().ordinal, 0);
        assert_eq!(
            release_handle(&mut st, "a", t(11)),
            None,
            "double release is a no-op"
        );
        assert_eq!(st.last_release_time, Some(Time(t(10))));
        // (case, time, expected ordinal of a new allocation)
        let u = usage(block, &st, t(20), CD);
        assert_eq!((u.allocated, u.cooling, u.free), (1, 1, 2));
        assert_eq!(
            allocate(block, &mut st, &req("c"), t(20), CD)
                .unwrap()
                .ordinal,
            2
        );
        assert_eq!(
            allocate(block, &mut st, &req("d"), t(25), CD)
                .unwrap()
                .ordinal,
            3
        );
        assert_eq!(
            allocate(block, &mut st, &req("e"), t(39), CD),
            Err(AllocError::Full { block, cooling: 1 }),
            "ordinal 0 still cooling 29 s after release"
        );
        assert_eq!(
            allocate(block, &mut st, &req("e"), t(40), CD)
                .unwrap()
                .ordinal,
            0
        );
        assert!(st.released.is_empty());
    }

    #[test]
    fn specific_address_table() {
        let block: IpNet = "10.0.0.0/29".parse().unwrap();
        let mut st = IPAMBlockStatus::default();
        allocate(block, &mut st, &req("holder"), t(0), CD).unwrap();
        allocate(block, &mut st, &req("gone"), t(0), CD).unwrap();
        release_handle(&mut st, "gone", t(1)).unwrap();
        let ask = |a: &str| AllocRequest {
            handle: "new".into(),
            pod: None,
            address: Some(ip(a)),
        };
        assert!(matches!(
            allocate(block, &mut st, &ask("10.0.0.0"), t(2), CD),
            Err(AllocError::InUse { holder, .. }) if holder == "holder"
        ));
        assert!(matches!(
            allocate(block, &mut st, &ask("10.0.0.1"), t(2), CD),
            Err(AllocError::CoolingDown { .. })
        ));
        assert!(matches!(
            allocate(block, &mut st, &ask("10.0.0.8"), t(2), CD),
            Err(AllocError::OutsideBlock { .. })
        ));
        assert!(matches!(
            allocate(block, &mut st, &ask("fd00::1"), t(2), CD),
            Err(AllocError::OutsideBlock { .. })
        ));
        let got = allocate(block, &mut st, &ask("10.0.0.7"), t(2), CD).unwrap();
        assert_eq!((got.ordinal, got.existing), (7, false));
        assert_eq!(
            allocate(block, &mut st, &req(""), t(2), CD),
            Err(AllocError::EmptyHandle)
        );
        let ords: Vec<u32> = st.allocations.iter().map(|a| a.ordinal).collect();
        assert_eq!(ords, [0, 7], "allocations stay sorted");
    }

    #[test]
    fn gc_recheck_never_takes_a_new_owner() {
        let block: IpNet = "10.0.0.0/30".parse().unwrap();
        let pod = |uid: &str| PodReference {
            namespace: "ns".into(),
            name: "p".into(),
            uid: uid.into(),
        };
        let mut st = IPAMBlockStatus::default();
        let mut r = req("h1");
        r.pod = Some(pod("uid-1"));
        allocate(block, &mut st, &r, t(0), CD).unwrap();
        assert_eq!(
            release_if_unchanged(&mut st, 0, "h1", Some("uid-2"), t(1)),
            None
        );
        assert_eq!(
            release_if_unchanged(&mut st, 0, "h2", Some("uid-1"), t(1)),
            None
        );
        assert!(release_if_unchanged(&mut st, 0, "h1", Some("uid-1"), t(1)).is_some());
        assert!(st.allocations.is_empty());
    }

    #[test]
    fn garbage_in_status_cannot_panic() {
        let block: IpNet = "10.0.0.0/30".parse().unwrap();
        let mut st = IPAMBlockStatus::default();
        st.allocations.push(Allocation {
            ordinal: 4_000_000,
            handle: "x".into(),
            pod: None,
            time: Time(t(0)),
        });
        st.released.push(ReleasedOrdinal {
            ordinal: u32::MAX,
            time: Time(t(0)),
        });
        assert_eq!(
            allocate(block, &mut st, &req("a"), t(1), CD)
                .unwrap()
                .ordinal,
            0
        );
        let big: IpNet = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            allocate(big, &mut st, &req("b"), t(1), CD),
            Err(AllocError::BlockTooLarge { block: big })
        );
    }
}
