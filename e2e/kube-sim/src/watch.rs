//! Watch streams: newline-delimited JSON `WatchEvent`s, replay from a resourceVersion, synthetic
//! ADDED events for a fresh watch, bookmarks, `timeoutSeconds`, 410 for versions older than the
//! retained history, and selector transitions (an object leaving a selector is a DELETED event).
//!
//! Owns the per-watch task. Must not mutate state.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{ApiRequest, Shared, at_version, error_response, resolve};
use crate::store::{Event, EventType};

/// What one watch selects.
struct Filter {
    rt: Arc<ResourceType>,
    version: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str())
        {
            return false;
        }
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        let mut v = serde_json::to_vec(
            &json!({"type": kind, "object": at_version(obj, &self.rt, &self.version)}),
        )
        .unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }

    /// The bytes to send for an event, if this watch sees it.
    fn render(&self, ev: &Event) -> Option<Bytes> {
        if ev.gr != self.rt.gr {
            return None;
        }
        let now = self.matches(&ev.object);
        let before = ev.old.as_ref().is_some_and(|o| self.matches(o));
        let kind = match ev.kind {
            EventType::Added if now => EventType::Added,
            EventType::Deleted if now || before => EventType::Deleted,
            EventType::Modified if now && before => EventType::Modified,
            EventType::Modified if now => EventType::Added,
            EventType::Modified if before => EventType::Deleted,
            _ => return None,
        };
        let plain = kind == ev.kind && self.version == self.rt.storage_version();
        if plain {
            return Some(
                ev.wire
                    .get_or_init(|| self.line(ev.kind.as_str(), &ev.object))
                    .clone(),
            );
        }
        Some(self.line(kind.as_str(), &ev.object))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(&self.version), "metadata": meta});
        let mut v =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

fn expired_line(requested: u64, oldest: u64) -> Bytes {
    let status =
        ApiError::expired(format!("too old resource version: {requested} ({oldest})")).to_status();
    let mut v = serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct Setup {
    filter: Filter,
    first: Vec<Bytes>,
    rx: broadcast::Receiver<Arc<Event>>,
    last: u64,
    expired: bool,
    bookmarks: bool,
    timeout: Duration,
}

fn setup(shared: &Shared, req: &ApiRequest) -> Result<Setup, ApiError> {
    let q = |k: &str| {
        req.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    };
    let labels = LabelSelector::parse(q("labelSelector").unwrap_or(""))?;
    let bookmarks = matches!(q("allowWatchBookmarks"), Some("true" | "1"));
    let send_initial = matches!(q("sendInitialEvents"), Some("true" | "1"));
    let timeout = match q("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        // The real server picks a random timeout between 30 and 60 minutes.
        None => Duration::from_secs(1800),
    };
    let requested: Option<u64> = match q("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    let state = shared.lock();
    let rt = resolve(&state, &req.target)?;
    let fields = FieldSelector::parse_for(
        q("fieldSelector").unwrap_or(""),
        crate::server::selectable(&rt, &req.target.version),
    )?;
    let filter = Filter {
        rt,
        version: req.target.version.clone(),
        namespace: req.target.namespace.clone(),
        labels,
        fields,
    };
    let rx = state.subscribe();
    let mut first = Vec::new();
    let mut expired = false;
    let last;
    match requested {
        Some(rv) if !send_initial => match state.since(rv) {
            Some(events) => {
                first.extend(events.iter().filter_map(|e| filter.render(e)));
                last = state.rv.max(rv);
            }
            None => {
                first.push(expired_line(rv, state.compacted_through + 1));
                expired = true;
                last = state.rv;
            }
        },
        _ => {
            if let Some(bucket) = state.bucket(&filter.rt.gr) {
                first.extend(
                    bucket
                        .values()
                        .filter(|o| filter.matches(o))
                        .map(|o| filter.line("ADDED", o)),
                );
            }
            last = state.rv;
            if send_initial {
                first.push(filter.bookmark(last, true));
            }
        }
    }
    Ok(Setup {
        filter,
        first,
        rx,
        last,
        expired,
        bookmarks,
        timeout,
    })
}

/// Serves one watch request.
pub fn serve(shared: Arc<Shared>, req: ApiRequest) -> Response {
    let s = match setup(&shared, &req) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    tokio::spawn(run(shared, s, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn run(shared: Arc<Shared>, s: Setup, tx: mpsc::Sender<Bytes>) {
    let Setup {
        filter,
        first,
        mut rx,
        mut last,
        expired,
        bookmarks,
        timeout,
    } = s;
    for line in first {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    if expired {
        return;
    }
    let mut drop_rx = shared.drop_watches.subscribe();
    drop_rx.mark_unchanged();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(shared.bookmark_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(ev) => {
                    if ev.rv <= last {
                        continue;
                    }
                    last = ev.rv;
                    if let Some(line) = filter.render(&ev)
                        && tx.send(line).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // This watcher fell behind the live feed: catch up from the history (as the
                    // real watch cache does) or, if it is gone, end with 410 like the real server.
                    let (events, fresh, oldest) = {
                        let state = shared.lock();
                        (state.since(last), state.subscribe(), state.compacted_through + 1)
                    };
                    rx = fresh;
                    match events {
                        Some(evs) => {
                            for ev in evs {
                                if ev.rv <= last {
                                    continue;
                                }
                                last = ev.rv;
                                if let Some(line) = filter.render(&ev)
                                    && tx.send(line).await.is_err()
                                {
                                    return;
                                }
                            }
                        }
                        None => {
                            let _ = tx.send(expired_line(last, oldest)).await;
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick(), if bookmarks => {
                if tx.send(filter.bookmark(last, false)).await.is_err() {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = drop_rx.changed() => return,
            _ = tx.closed() => return,
        }
    }
}
