//! The status publisher and Node Events against `tabby-kube-sim` (the real HTTP API path through
//! `kube::Client`): the object created with its owner reference, the rate limit, coalescing,
//! recovery after deletion, conflict handling, series deduplication of Events — and that only the
//! API calls the agent declares (`tabby_agent::daemon::API_CALLS`) are made.

mod peering_fixtures;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use tabby_agent::daemon::API_CALLS as AGENT_API_CALLS;
use tabby_agent::status::{EventsConfig, NodeEvents, PublisherConfig, StatusPublisher};
use tabby_api::rbac::Verb;
use tabby_api::v1alpha1::nodenetworkstatus::{NodeNetworkStatus, NodeNetworkStatusStatus};
use tabby_kube_sim::{Config, KubeSim};

async fn sim() -> (KubeSim, Client) {
    let sim = KubeSim::start(Config::default())
        .await
        .expect("start kube-sim");
    sim.install_crds(tabby_api::v1alpha1::crds())
        .await
        .expect("install CRDs");
    let client = sim.client().await.expect("client");
    (sim, client)
}

async fn create_node(client: &Client, name: &str) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes
        .create(
            &PostParams::default(),
            &Node {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            },
        )
        .await
        .expect("create node");
    n.metadata.uid.expect("uid")
}

fn status(established: u32, total: u32, routes: u32) -> NodeNetworkStatusStatus {
    NodeNetworkStatusStatus {
        sessions_established: established,
        sessions_total: total,
        routes_programmed: routes,
        ..NodeNetworkStatusStatus::default()
    }
}

/// Waits until the object's status satisfies `f` (bounded).
async fn wait_for(
    api: &Api<NodeNetworkStatus>,
    name: &str,
    what: &str,
    f: impl Fn(&NodeNetworkStatusStatus) -> bool,
) -> NodeNetworkStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(o)) = api.get_opt(name).await
            && o.status.as_ref().is_some_and(&f)
        {
            return o;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls made, per `verb resource[/subresource]`, that `AGENT_API_CALLS` does not declare,
/// leaving out the calls the test itself makes (`by_test`).
fn undeclared(stats: &BTreeMap<String, u64>, by_test: &[&str]) -> Vec<String> {
    stats
        .keys()
        .filter(|k| !by_test.contains(&k.as_str()))
        .filter(|k| {
            let Some((verb, rest)) = k.split_once(' ') else {
                return true;
            };
            let (resource, sub) = match rest.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (rest, None),
            };
            let (res, group) = resource.split_once('.').unwrap_or((resource, ""));
            !AGENT_API_CALLS.iter().any(|c| {
                let v = match c.verb {
                    Verb::Get => "get",
                    Verb::List => "list",
                    Verb::Watch => "watch",
                    Verb::Create => "create",
                    Verb::Update => "update",
                    Verb::Patch => "patch",
                    Verb::Delete => "delete",
                };
                v == verb && c.group == group && c.resource == res && c.subresource == sub
            })
        })
        .cloned()
        .collect()
}

fn status_writes(sim: &KubeSim) -> u64 {
    sim.stats()
        .get("update nodenetworkstatuses.tabby.dev/status")
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_owned_object_rate_limits_and_coalesces() {
    let (sim, client) = sim().await;
    let uid = create_node(&client, "n1").await;
    sim.reset_stats();
    let api: Api<NodeNetworkStatus> = Api::all(client.clone());
    let interval = Duration::from_millis(700);
    let publisher = StatusPublisher::spawn(client.clone(), "n1".into(), interval);

    // A burst of 50 different statuses: one write at once, one coalesced write after the
    // interval, carrying the newest.
    let started = Instant::now();
    for i in 0..50 {
        publisher.publish(status(0, 3, i));
    }
    let o = wait_for(&api, "n1", "the newest status", |s| {
        s.routes_programmed == 49
    })
    .await;
    let took = started.elapsed();
    let writes = status_writes(&sim);
    assert!(
        (1..=2).contains(&writes),
        "50 publishes in a burst made {writes} writes"
    );
    if writes == 2 {
        assert!(
            took >= interval,
            "the second write came {took:?} after the first, before min_interval"
        );
    }
    assert_eq!(o.spec.node, "n1");
    let owners = o.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            owners[0].uid.as_str()
        ),
        ("Node", "n1", uid.as_str())
    );
    assert_eq!(owners[0].api_version, "v1");
    assert!(o.status.as_ref().unwrap().update_time.is_some());

    // The same content again: no write at all.
    let before = status_writes(&sim);
    publisher.publish(status(0, 3, 49));
    tokio::time::sleep(interval * 2).await;
    assert_eq!(status_writes(&sim), before, "unchanged status was written");

    // A change after quiet time is written (within the interval of the previous write).
    publisher.publish(status(3, 3, 49));
    wait_for(&api, "n1", "the change", |s| s.sessions_established == 3).await;
    assert_eq!(
        publisher
            .stats()
            .creates
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    let bad = undeclared(&sim.stats(), &[]);
    assert!(bad.is_empty(), "undeclared API calls: {bad:?}");
    drop(publisher);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_the_object_is_deleted_and_after_conflicts() {
    let (sim, client) = sim().await;
    create_node(&client, "n2").await;
    sim.reset_stats();
    let api: Api<NodeNetworkStatus> = Api::all(client.clone());
    let publisher = StatusPublisher::spawn_with(
        client.clone(),
        "n2".into(),
        PublisherConfig {
            min_interval: Duration::from_millis(100),
            resync_interval: Duration::from_millis(600),
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_millis(400),
        },
    );
    publisher.publish(status(1, 2, 5));
    let first = wait_for(&api, "n2", "first write", |s| s.routes_programmed == 5).await;

    // Deleted by someone: the next change re-creates it.
    api.delete("n2", &DeleteParams::default()).await.unwrap();
    publisher.publish(status(2, 2, 6));
    let again = wait_for(&api, "n2", "re-created with the change", |s| {
        s.routes_programmed == 6
    })
    .await;
    assert_ne!(again.metadata.uid, first.metadata.uid, "a new object");
    assert!(again.metadata.owner_references.is_some());

    // Deleted while nothing changes: the periodic re-check restores it.
    api.delete("n2", &DeleteParams::default()).await.unwrap();
    let restored = wait_for(&api, "n2", "restored by the re-check", |s| {
        s.routes_programmed == 6 && s.sessions_established == 2
    })
    .await;
    assert_ne!(restored.metadata.uid, again.metadata.uid);

    // Someone else writes the status (a stale agent) and we publish a change at once: our
    // cached resourceVersion is stale, the 409 makes us re-read, and our write wins.
    let mut theirs = restored.clone();
    theirs.status = Some(status(0, 9, 0));
    api.replace_status("n2", &PostParams::default(), &theirs)
        .await
        .unwrap();
    publisher.publish(status(2, 2, 7));
    wait_for(&api, "n2", "our change over theirs", |s| {
        s.routes_programmed == 7 && s.sessions_total == 2
    })
    .await;
    assert!(
        publisher
            .stats()
            .conflicts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1,
        "the stale write was not a 409"
    );

    // Someone overwrites it again while nothing changes here: the periodic re-check puts our
    // content back.
    let current = api.get("n2").await.unwrap();
    let mut theirs = current.clone();
    theirs.status = Some(status(0, 9, 0));
    api.replace_status("n2", &PostParams::default(), &theirs)
        .await
        .unwrap();
    wait_for(&api, "n2", "our status back", |s| {
        s.sessions_total == 2 && s.routes_programmed == 7
    })
    .await;

    let bad = undeclared(&sim.stats(), &["delete nodenetworkstatuses.tabby.dev"]);
    assert!(bad.is_empty(), "undeclared API calls: {bad:?}");
    drop(publisher);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_the_owner_reference_to_an_existing_object_and_retries_errors() {
    let (sim, client) = sim().await;
    let api: Api<NodeNetworkStatus> = Api::all(client.clone());
    // An object from before (no owner), and the Node appears later than the agent starts.
    api.create(
        &PostParams::default(),
        &NodeNetworkStatus::new(
            "n3",
            tabby_api::v1alpha1::nodenetworkstatus::NodeNetworkStatusSpec { node: "n3".into() },
        ),
    )
    .await
    .unwrap();
    let uid = create_node(&client, "n3").await;
    sim.reset_stats();
    // The API server fails every write for a while.
    sim.set_faults(tabby_kube_sim::Faults {
        error_rate: 1.0,
        error_code: 500,
        verbs: vec!["update".into()],
        ..Default::default()
    });
    let publisher = StatusPublisher::spawn_with(
        client.clone(),
        "n3".into(),
        PublisherConfig {
            min_interval: Duration::from_millis(50),
            resync_interval: Duration::from_secs(60),
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_millis(200),
        },
    );
    publisher.publish(status(0, 1, 1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while publisher
        .stats()
        .errors
        .load(std::sync::atomic::Ordering::Relaxed)
        < 2
    {
        assert!(Instant::now() < deadline, "no failed attempts recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Newer content published while failing is what lands once the server recovers.
    publisher.publish(status(1, 1, 2));
    sim.set_faults(tabby_kube_sim::Faults::default());
    let o = wait_for(&api, "n3", "the newest status after recovery", |s| {
        s.routes_programmed == 2
    })
    .await;
    let owners = o.metadata.owner_references.unwrap_or_default();
    assert!(
        owners.iter().any(|r| r.kind == "Node" && r.uid == uid),
        "{owners:?}"
    );
    let bad = undeclared(&sim.stats(), &[]);
    assert!(bad.is_empty(), "undeclared API calls: {bad:?}");
    drop(publisher);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_events_are_deduplicated_into_series() {
    let (sim, client) = sim().await;
    let uid = create_node(&client, "n4").await;
    sim.reset_stats();
    let events = NodeEvents::with_config(
        client.clone(),
        "n4",
        EventsConfig {
            patch_interval: Duration::from_secs(1),
            ..EventsConfig::default()
        },
    );
    let note = "BGPPeer tor-a, peer 192.0.2.1: MD5 password: Secret tabby-system/tor-pw has no key \"password\"";
    // A flapping problem reported 20 times in a burst.
    for _ in 0..20 {
        events.warn("PeerNotConfigured", note.to_string()).await;
    }
    events
        .normal(
            "SessionEstablished",
            "peer 10.0.0.2 (mesh) Established".into(),
        )
        .await;
    // Same reason, another note: its own Event.
    events
        .warn("PeerNotConfigured", "BGPPeer tor-b: other".into())
        .await;
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = api.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        list.len(),
        3,
        "one Event per (type, reason, note): {list:#?}"
    );
    let e = list
        .iter()
        .find(|e| e.note.as_deref() == Some(note))
        .expect("the warning");
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.reason.as_deref(), Some("PeerNotConfigured"));
    let regarding = e.regarding.as_ref().unwrap();
    assert_eq!(
        (
            regarding.kind.as_deref(),
            regarding.name.as_deref(),
            regarding.uid.as_deref()
        ),
        (Some("Node"), Some("n4"), Some(uid.as_str()))
    );
    assert!(e.event_time.is_some() && e.reporting_controller.is_some());
    let patches_after_burst = sim
        .stats()
        .get("patch events.events.k8s.io")
        .copied()
        .unwrap_or(0);
    assert!(
        patches_after_burst <= 1,
        "20 repeats inside the patch interval made {patches_after_burst} patches"
    );

    // After the interval, one more repeat patches the series with the full count.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    events.warn("PeerNotConfigured", note.to_string()).await;
    let e = api
        .get(
            list.iter()
                .find(|e| e.note.as_deref() == Some(note))
                .unwrap()
                .metadata
                .name
                .as_deref()
                .unwrap(),
        )
        .await
        .unwrap();
    let series = e.series.expect("series after repeats");
    assert_eq!(series.count, 21);
    let creates = sim
        .stats()
        .get("create events.events.k8s.io")
        .copied()
        .unwrap_or(0);
    assert_eq!(creates, 3);

    // Deleted on the server: the next repeat starts a new Event instead of failing forever.
    api.delete(
        e.metadata.name.as_deref().unwrap(),
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    events.warn("PeerNotConfigured", note.to_string()).await;
    let list = api.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(list.len(), 3, "{list:#?}");
    assert!(
        list.iter()
            .any(|e| e.note.as_deref() == Some(note) && e.series.is_none())
    );

    let bad = undeclared(
        &sim.stats(),
        &[
            "list events.events.k8s.io",
            "get events.events.k8s.io",
            "delete events.events.k8s.io",
        ],
    );
    assert!(bad.is_empty(), "undeclared API calls: {bad:?}");
    sim.shutdown().await;
}

/// A full built status — conditions, a left-out peer with its reason, sessions of every type,
/// blocks — passes the CRD's schema and CEL rules on the API server, and reads back equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_status_is_accepted_by_the_crd_schema() {
    use peering_fixtures::*;
    use tabby_agent::status::{StatusInput, build};
    let (sim, client) = sim().await;
    create_node(&client, "a").await;
    let bgppeers = vec![
        bgppeer(
            "tor-a",
            serde_json::json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {},
                   "password": {"name": "tor-pw", "key": "password"}}),
        ),
        bgppeer(
            "rr",
            serde_json::json!({"peerIP": "192.0.2.2", "asNumber": 64512, "node": "a"}),
        ),
    ];
    let w = World {
        nodes: three_nodes(),
        peers: bgppeers.clone(),
        ..World::default()
    };
    let plan = w.plan("a");
    let blocks = vec!["10-244-0-0-26".to_string(), "fd00-10--0-122".to_string()];
    let built = build(&StatusInput {
        plan: Some(&plan),
        plan_error: None,
        peers: &[],
        routes: None,
        blocks: &blocks,
        problems: &[],
        bgppeers: &bgppeers,
        now: std::time::SystemTime::now(),
    });
    assert_eq!(built.sessions.len(), 6, "{:?}", built.sessions);
    assert!(!built.conditions.is_empty());
    let api: Api<NodeNetworkStatus> = Api::all(client.clone());
    let publisher = StatusPublisher::spawn(client.clone(), "a".into(), Duration::from_millis(100));
    publisher.publish(built.clone());
    let o = wait_for(&api, "a", "the built status", |s| s.sessions.len() == 6).await;
    let mut held = o.status.unwrap();
    assert!(held.update_time.is_some());
    held.update_time = None;
    assert_eq!(held, built, "what the server holds is what was built");

    // `kubectl get nns` at a glance: the CRD's printer columns over this status.
    let req = http::Request::get("/apis/tabby.dev/v1alpha1/nodenetworkstatuses")
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let table: serde_json::Value =
        serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let cell = |name: &str| {
        let i = columns.iter().position(|c| *c == name).unwrap();
        table["rows"][0]["cells"][i].clone()
    };
    assert_eq!(cell("Name"), "a");
    assert_eq!(cell("Ready"), "False", "{table}");
    assert_eq!(cell("Established"), 0);
    assert_eq!(cell("Sessions"), 6);
    assert_eq!(cell("Routes"), 0);
    assert_eq!(cell("Blocks"), 2);
    let last = cell("Last Error");
    assert!(
        last.as_str()
            .unwrap()
            .starts_with("BGPPeer tor-a, peer 192.0.2.1: "),
        "{last}"
    );
    assert_eq!(
        publisher
            .stats()
            .errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no write was refused"
    );
    drop(publisher);
    sim.shutdown().await;
}
