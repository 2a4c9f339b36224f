//! The best-path change stream for the forwarding table.
//!
//! Each subscriber has a pending map prefix → current ECMP next hops. The speaker loop writes
//! into it (a later change of the same prefix overwrites the earlier one) and wakes the
//! subscriber, which takes the whole map as one batch. So nothing is lost — the subscriber
//! always ends up with every prefix's latest next hops — and a slow subscriber costs at most one
//! entry per prefix, never an unbounded queue, and never slows the speaker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::status::RouteUpdate;
use crate::rib::{Changes, Prefix};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct Pending {
    routes: FastMap<Prefix, Vec<IpAddr>>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Map inserts only: a poisoned lock still holds a consistent map.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A subscriber's end: batches of best-path changes, the current table first.
pub struct Subscription {
    shared: Arc<Shared>,
}

impl Subscription {
    /// Waits for the next batch: every prefix whose next hops changed since the previous batch,
    /// with its current next hops (empty: no route any more). The first batch is the whole
    /// table at subscription time (nothing when the table is empty: then the first batch is the
    /// first change). `None` once the speaker has stopped and everything was delivered.
    pub async fn next_batch(&mut self) -> Option<Vec<RouteUpdate>> {
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let notified = self.shared.notify.notified();
            {
                let mut p = self.shared.lock();
                if !p.routes.is_empty() {
                    return Some(take(&mut p));
                }
                if p.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Like [`Subscription::next_batch`] without waiting: `None` when nothing is pending.
    pub fn try_next_batch(&mut self) -> Option<Vec<RouteUpdate>> {
        let mut p = self.shared.lock();
        if p.routes.is_empty() {
            return None;
        }
        Some(take(&mut p))
    }
}

/// Empties the pending map into a batch sorted by prefix.
fn take(p: &mut Pending) -> Vec<RouteUpdate> {
    let mut out: Vec<RouteUpdate> = std::mem::take(&mut p.routes)
        .into_iter()
        .map(|(prefix, next_hops)| RouteUpdate { prefix, next_hops })
        .collect();
    out.sort_unstable_by_key(|r| r.prefix);
    out
}

/// The speaker loop's side: every live subscriber.
#[derive(Default)]
pub(crate) struct Subscribers {
    list: Vec<Arc<Shared>>,
}

impl Subscribers {
    /// A new subscriber whose first batch is `snapshot`.
    pub(crate) fn add(
        &mut self,
        snapshot: impl Iterator<Item = (Prefix, Vec<IpAddr>)>,
    ) -> Subscription {
        let shared = Arc::new(Shared::default());
        {
            let mut p = shared.lock();
            p.routes.extend(snapshot);
        }
        shared.notify.notify_one();
        self.list.push(shared.clone());
        Subscription { shared }
    }

    /// Hands `changes` to every subscriber; forgets subscribers that went away.
    pub(crate) fn publish(&mut self, changes: &Changes) {
        self.list.retain(|s| Arc::strong_count(s) > 1);
        if changes.is_empty() {
            return;
        }
        for s in &self.list {
            {
                let mut p = s.lock();
                for (prefix, nh) in changes.next_hops() {
                    match p.routes.get_mut(&prefix) {
                        Some(v) => {
                            v.clear();
                            v.extend_from_slice(nh);
                        }
                        None => {
                            p.routes.insert(prefix, nh.to_vec());
                        }
                    }
                }
            }
            s.notify.notify_one();
        }
    }

    /// The speaker stopped: subscribers get what is pending, then `None`.
    pub(crate) fn close(&mut self) {
        for s in self.list.drain(..) {
            s.lock().closed = true;
            s.notify.notify_one();
        }
    }
}
