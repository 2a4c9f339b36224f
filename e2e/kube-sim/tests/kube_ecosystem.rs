//! The `kube` ecosystem runs unchanged against the emulator: Controller with its reflector and the
//! finalizer helper, watchers surviving dropped watches and 410, `Api::replace` conflicts,
//! `patch_status`, server-side apply, and leader election with `kube-lease-manager`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as FinalizerEvent, finalizer};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use common::eventually;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "test.tabby.dev",
    version = "v1alpha1",
    kind = "Block",
    status = "BlockStatus",
    shortname = "blk"
)]
#[kube(printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#)]
pub struct BlockSpec {
    pub node: String,
    pub cidr: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
pub struct BlockStatus {
    pub allocated: u32,
    #[serde(default)]
    pub observed_generation: i64,
}

fn block(name: &str, node: &str, cidr: &str) -> Block {
    let mut b = Block::new(
        name,
        BlockSpec {
            node: node.into(),
            cidr: cidr.into(),
        },
    );
    b.metadata.labels = Some(BTreeMap::from([(
        "tabby.dev/node".to_owned(),
        node.to_owned(),
    )]));
    b
}

async fn install_crd(client: &Client) -> Api<Block> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Block::crd())
        .await
        .expect("create CRD");
    let established = await_condition(
        crds,
        "blocks.test.tabby.dev",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(10), established)
        .await
        .expect("CRD established in time")
        .expect("await");
    Api::all(client.clone())
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict")
}

struct Ctx {
    api: Api<Block>,
    applies: AtomicUsize,
    cleanups: AtomicUsize,
}

async fn reconcile(b: Arc<Block>, ctx: Arc<Ctx>) -> Result<Action, finalizer::Error<kube::Error>> {
    let c = ctx.clone();
    finalizer(&ctx.api, "test.tabby.dev/cleanup", b, move |event| async move {
        match event {
            FinalizerEvent::Apply(b) => {
                c.applies.fetch_add(1, Ordering::SeqCst);
                let status = json!({"status": {"allocated": 1, "observed_generation": b.metadata.generation.unwrap_or(0)}});
                c.api.patch_status(&b.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
                Ok(Action::await_change())
            }
            FinalizerEvent::Cleanup(_) => {
                c.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(_: Arc<Block>, _: &finalizer::Error<kube::Error>, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test]
async fn controller_reflector_and_finalizer() {
    let sim = common::start().await;
    let client = sim.client().await.unwrap();
    let api = install_crd(&client).await;
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        applies: AtomicUsize::new(0),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(api.clone(), watcher::Config::default());
    let store = controller.store();
    let running = tokio::spawn(
        controller
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| async {}),
    );

    api.create(
        &PostParams::default(),
        &block("b1", "node-1", "10.0.0.0/26"),
    )
    .await
    .unwrap();
    let reconciled = eventually(Duration::from_secs(15), || async {
        api.get("b1").await.is_ok_and(|b| {
            b.status
                .as_ref()
                .is_some_and(|s| s.allocated == 1 && s.observed_generation == 1)
                && b.finalizers().iter().any(|f| f == "test.tabby.dev/cleanup")
        })
    })
    .await;
    assert!(
        reconciled,
        "controller added its finalizer and wrote status"
    );
    assert!(
        store
            .get(&kube::runtime::reflector::ObjectRef::new("b1"))
            .is_some(),
        "reflector store has the object"
    );

    api.delete("b1", &DeleteParams::default()).await.unwrap();
    let cleaned = eventually(Duration::from_secs(15), || async {
        api.get_opt("b1").await.is_ok_and(|b| b.is_none())
    })
    .await;
    assert!(
        cleaned,
        "the finalizer helper ran cleanup and removed its finalizer, so the object went away"
    );
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    assert!(
        store
            .get(&kube::runtime::reflector::ObjectRef::new("b1"))
            .is_none()
            || eventually(Duration::from_secs(5), || async {
                store
                    .get(&kube::runtime::reflector::ObjectRef::new("b1"))
                    .is_none()
            })
            .await
    );
    running.abort();
    let stats = sim.stats();
    assert!(
        stats
            .get("patch blocks.test.tabby.dev/status")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{stats:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn watcher_survives_dropped_watches_and_410() {
    let sim = common::start().await;
    let client = sim.client().await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stream = watcher(nodes.clone(), watcher::Config::default().any_semantic())
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(stream.for_each(move |r| {
        if let Ok(n) = r {
            let _ = tx.send(n.name_any());
        }
        async {}
    }));
    let mut wait_for = async |name: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(n)) if n == name => return true,
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    };
    let pp = PostParams::default();
    let mk = |name: &str| serde_json::from_value::<Node>(common::node(name, json!({}))).unwrap();
    nodes.create(&pp, &mk("n1")).await.unwrap();
    assert!(wait_for("n1").await);

    sim.drop_watches();
    tokio::time::sleep(Duration::from_millis(100)).await;
    nodes.create(&pp, &mk("n2")).await.unwrap();
    assert!(
        wait_for("n2").await,
        "watcher resumed after its watch was dropped"
    );
    let lists_before = sim.stats().get("list nodes").copied().unwrap_or(0);

    // Compaction makes the watcher's resourceVersion too old: the server answers 410 and the
    // watcher relists.
    sim.compact();
    sim.drop_watches();
    nodes.create(&pp, &mk("n3")).await.unwrap();
    assert!(wait_for("n3").await, "watcher recovered from 410 Gone");
    let stats = sim.stats();
    assert!(
        stats.get("list nodes").copied().unwrap_or(0) > lists_before,
        "a relist happened after 410: {stats:?}"
    );
    assert!(
        stats.get("watch nodes").copied().unwrap_or(0) >= 3,
        "{stats:?}"
    );
    task.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn raw_watch_semantics() {
    use kube::api::{WatchEvent, WatchParams};
    let sim = common::start().await;
    let client = sim.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let mk = |name: &str, team: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("team".to_owned(), team.to_owned())])),
            ..Default::default()
        },
        ..Default::default()
    };
    let a = cms.create(&pp, &mk("a", "net")).await.unwrap();
    let rv_a = a.resource_version().unwrap();
    cms.create(&pp, &mk("b", "net")).await.unwrap();
    cms.create(&pp, &mk("c", "storage")).await.unwrap();

    // Replay from a resourceVersion: later events, in order.
    let wp = WatchParams::default().timeout(2);
    let events: Vec<_> = cms.watch(&wp, &rv_a).await.unwrap().take(2).collect().await;
    let names: Vec<String> = events
        .into_iter()
        .map(|e| match e.unwrap() {
            WatchEvent::Added(o) => o.name_any(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(names, ["b", "c"]);

    // A selector watch sees an object leave the selector as DELETED.
    let list_rv = cms
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default()
        .labels("team=net")
        .timeout(3)
        .disable_bookmarks();
    let mut stream = cms.watch(&wp, &list_rv).await.unwrap().boxed();
    cms.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "storage"}}})),
    )
    .await
    .unwrap();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Deleted(o) => assert_eq!(o.name_any(), "b"),
        other => panic!("expected DELETED for b, got {other:?}"),
    }
    drop(stream);

    // Bookmarks carry the latest resourceVersion.
    let wp = WatchParams::default().timeout(2).labels("team=none");
    let now_rv = cms
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms.watch(&wp, &now_rv).await.unwrap().boxed();
    match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
        Ok(Some(Ok(WatchEvent::Bookmark(b)))) => assert_eq!(b.metadata.resource_version, now_rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    drop(stream);

    // Too old: ERROR event with 410 Expired.
    sim.compact();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(2), &rv_a)
        .await
        .unwrap()
        .boxed();
    match stream.next().await.unwrap() {
        Ok(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }

    // timeoutSeconds ends the stream.
    let t0 = std::time::Instant::now();
    let rest: Vec<_> = cms
        .watch(
            &WatchParams::default()
                .timeout(1)
                .labels("team=none")
                .disable_bookmarks(),
            "0",
        )
        .await
        .unwrap()
        .collect()
        .await;
    assert!(rest.is_empty());
    assert!(t0.elapsed() < Duration::from_secs(5));
    sim.shutdown().await;
}

#[tokio::test]
async fn replace_conflicts_patch_status_and_server_side_apply() {
    let sim = common::start().await;
    let client = sim.client().await.unwrap();
    let api = install_crd(&client).await;
    let pp = PostParams::default();
    let created = api
        .create(&pp, &block("b", "node-1", "10.0.0.0/26"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    // Optimistic concurrency through Api::replace.
    let mut first = created.clone();
    first.spec.node = "node-2".into();
    let replaced = api.replace("b", &pp, &first).await.unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    let mut stale = created.clone();
    stale.spec.node = "node-3".into();
    let err = api.replace("b", &pp, &stale).await.unwrap_err();
    assert!(is_conflict(&err), "{err:?}");

    // patch_status: status changes, spec and generation do not.
    let st = api
        .patch_status(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"allocated": 7}, "spec": {"node": "ignored"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.as_ref().map(|s| s.allocated), Some(7));
    assert_eq!(st.spec.node, "node-2");
    assert_eq!(st.metadata.generation, Some(2));
    // replace_status with a stale resourceVersion conflicts too.
    let mut stale_status = replaced.clone();
    stale_status.status = Some(BlockStatus {
        allocated: 1,
        observed_generation: 0,
    });
    let err = api
        .replace_status("b", &pp, &stale_status)
        .await
        .unwrap_err();
    assert!(is_conflict(&err), "{err:?}");
    // Status apply by an agent.
    let st = api
        .patch_status("b", &PatchParams::apply("agent").force(), &Patch::Apply(json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Block", "status": {"allocated": 3, "observed_generation": 2}})))
        .await
        .unwrap();
    assert_eq!(st.status.map(|s| s.allocated), Some(3));

    // Server-side apply: create, conflict, force, and fields left to their owner.
    let cfg_a = json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Block", "metadata": {"name": "s"}, "spec": {"node": "n1", "cidr": "10.1.0.0/26"}});
    let s = api
        .patch("s", &PatchParams::apply("ctrl-a"), &Patch::Apply(&cfg_a))
        .await
        .unwrap();
    assert_eq!(s.spec.node, "n1");
    let cfg_b = json!({"apiVersion": "test.tabby.dev/v1alpha1", "kind": "Block", "metadata": {"name": "s"}, "spec": {"node": "n2", "cidr": "10.1.0.0/26"}});
    let err = api
        .patch("s", &PatchParams::apply("ctrl-b"), &Patch::Apply(&cfg_b))
        .await
        .unwrap_err();
    assert!(is_conflict(&err), "{err:?}");
    let s = api
        .patch(
            "s",
            &PatchParams::apply("ctrl-b").force(),
            &Patch::Apply(&cfg_b),
        )
        .await
        .unwrap();
    assert_eq!(s.spec.node, "n2");
    let managers: Vec<String> = s
        .metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"ctrl-a".to_owned()) && managers.contains(&"ctrl-b".to_owned()),
        "{managers:?}"
    );
    // Re-applying the same configuration is a no-op: same resourceVersion.
    let again = api
        .patch("s", &PatchParams::apply("ctrl-b"), &Patch::Apply(&cfg_b))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), s.resource_version());
    sim.shutdown().await;
}

#[tokio::test]
async fn leader_election_with_kube_lease_manager() {
    let sim = common::start().await;
    let client = sim.client().await.unwrap();
    let build = |id: &str| {
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "tabby-ipam-controller")
            .with_namespace("kube-system")
            .with_identity(id)
            .with_duration(5)
            .with_grace(2)
            .build()
    };
    let a = build("controller-a").await.unwrap();
    let (rx_a, task_a) = a.watch().await;
    let a_leads = eventually(Duration::from_secs(15), || async { *rx_a.borrow() }).await;
    assert!(a_leads, "the first candidate acquires the lease");

    let b = build("controller-b").await.unwrap();
    let (rx_b, task_b) = b.watch().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !*rx_b.borrow(),
        "the second candidate waits while the leader renews"
    );
    assert!(*rx_a.borrow());

    // Kill the leader without releasing the lease: the other takes over after expiry.
    task_a.abort();
    let b_leads = eventually(Duration::from_secs(30), || async { *rx_b.borrow() }).await;
    assert!(
        b_leads,
        "the second candidate takes over once the lease expires"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease = leases.get("tabby-ipam-controller").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("controller-b"));
    assert!(spec.lease_transitions.unwrap_or(0) >= 1);
    drop(rx_b);
    let _ = tokio::time::timeout(Duration::from_secs(5), task_b).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn event_recorder_creates_then_patches_series() {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let sim = common::start().await;
    let client = sim.client().await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(common::node("node-1", json!({}))).unwrap(),
        )
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tabby-ipam-controller".into(),
            instance: Some("pod-0".into()),
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "BlockAssigned".into(),
        note: Some("10.0.0.0/26".into()),
        action: "Assign".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&node, &());
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), "default");
    let list = events.list(&Default::default()).await.unwrap();
    assert_eq!(
        list.items.len(),
        1,
        "the repeat became a series on the same Event"
    );
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("BlockAssigned"));
    assert_eq!(
        e.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("node-1")
    );
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    let stats = sim.stats();
    assert_eq!(
        stats.get("create events.events.k8s.io").copied(),
        Some(1),
        "{stats:?}"
    );
    assert_eq!(
        stats.get("patch events.events.k8s.io").copied(),
        Some(1),
        "{stats:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn watcher_with_streaming_lists() {
    let sim = common::start().await;
    let client = sim.client().await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    for n in ["a", "b"] {
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(common::node(n, json!({}))).unwrap(),
            )
            .await
            .unwrap();
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    let stream = watcher(nodes.clone(), watcher::Config::default().streaming_lists())
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(stream.for_each(move |r| {
        if let Ok(n) = r {
            s2.lock().unwrap().push(n.name_any());
        }
        async {}
    }));
    assert!(
        eventually(Duration::from_secs(10), || async {
            seen.lock().unwrap().len() >= 2
        })
        .await,
        "initial events arrive over the watch"
    );
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(common::node("c", json!({}))).unwrap(),
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            seen.lock().unwrap().contains(&"c".to_owned())
        })
        .await
    );
    let stats = sim.stats();
    assert_eq!(
        stats.get("list nodes"),
        None,
        "streaming lists use no list call: {stats:?}"
    );
    task.abort();
    sim.shutdown().await;
}

/// `KubeSim::install_crds`: the resource is served as soon as it returns (no polling), and a
/// CRD the API refuses (here: already exists) is an error naming it.
#[tokio::test]
async fn install_crds_serves_at_once_and_names_a_refused_crd() {
    let sim = common::start().await;
    sim.install_crds([Block::crd()]).await.expect("install");
    let client = sim.client().await.expect("client");
    let blocks: Api<Block> = Api::all(client);
    assert!(
        blocks
            .list(&ListParams::default())
            .await
            .expect("served at once")
            .items
            .is_empty()
    );
    let err = sim.install_crds([Block::crd()]).await.unwrap_err();
    match &err {
        tabby_kube_sim::SimError::Crd { name, source } => {
            assert_eq!(name, "blocks.test.tabby.dev");
            assert!(
                matches!(source, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
                "{source}"
            );
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("blocks.test.tabby.dev"), "{err}");
}
