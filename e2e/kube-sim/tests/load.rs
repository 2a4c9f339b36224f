//! Load: many Nodes and custom objects with many concurrent watchers stay responsive. Reports list
//! latency, watch fan-out time and request rates.
//!
//! `cargo test` runs a reduced size (500 Nodes, 5,000 objects, 20 watchers). The full size of the
//! issue (5,000 Nodes, 50,000 objects, 100 watchers) runs with `KUBE_SIM_LOAD=full`, e.g.
//! `KUBE_SIM_LOAD=full cargo test --release -p tabby-kube-sim --test load -- --nocapture`;
//! figures are recorded in docs/benchmarks.md.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "load.tabby.dev",
    version = "v1alpha1",
    kind = "Item",
    status = "ItemStatus"
)]
pub struct ItemSpec {
    pub node: String,
    pub cidr: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct ItemStatus {
    pub used: u32,
}

struct Size {
    nodes: usize,
    objects: usize,
    watchers: usize,
    burst: usize,
}

fn size() -> Size {
    match std::env::var("KUBE_SIM_LOAD").as_deref() {
        Ok("full") => Size {
            nodes: 5_000,
            objects: 50_000,
            watchers: 100,
            burst: 1_000,
        },
        _ => Size {
            nodes: 500,
            objects: 5_000,
            watchers: 20,
            burst: 200,
        },
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_objects_and_watchers_stay_responsive() {
    let sz = size();
    let sim = common::start_with(tabby_kube_sim::Config {
        watch_window: 200_000,
        ..Default::default()
    })
    .await;
    let client = sim.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Item::crd())
        .await
        .unwrap();
    let items: Api<Item> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());

    let t = Instant::now();
    futures::stream::iter(0..sz.nodes)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let n: Node = serde_json::from_value(common::node(
                    &format!("node-{i:05}"),
                    json!({"rack": format!("r{}", i % 40)}),
                ))
                .unwrap();
                nodes.create(&PostParams::default(), &n).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    futures::stream::iter(0..sz.objects)
        .map(|i| {
            let items = items.clone();
            async move {
                let spec = ItemSpec {
                    node: format!("node-{:05}", i % sz.nodes),
                    cidr: format!("10.{}.{}.0/26", i / 256 % 256, i % 256),
                };
                items
                    .create(
                        &PostParams::default(),
                        &Item::new(&format!("item-{i:06}"), spec),
                    )
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let populate = t.elapsed();
    let creates = sz.nodes + sz.objects;
    assert_eq!(sim.count("", "nodes"), sz.nodes);
    assert_eq!(sim.count("load.tabby.dev", "items"), sz.objects);

    // List latency.
    let t = Instant::now();
    let all_nodes = nodes.list(&ListParams::default()).await.unwrap();
    let list_nodes = t.elapsed();
    assert_eq!(all_nodes.items.len(), sz.nodes);
    let t = Instant::now();
    let all_items = items.list(&ListParams::default()).await.unwrap();
    let list_items = t.elapsed();
    assert_eq!(all_items.items.len(), sz.objects);
    let t = Instant::now();
    let mut pages = 0;
    let mut seen = 0;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = items.list(&lp).await.unwrap();
        pages += 1;
        seen += page.items.len();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    let list_paged = t.elapsed();
    assert_eq!(seen, sz.objects);
    let t = Instant::now();
    let selected = nodes
        .list(&ListParams::default().labels("rack=r7"))
        .await
        .unwrap();
    let list_selector = t.elapsed();
    assert_eq!(
        selected.items.len(),
        (0..sz.nodes).filter(|i| i % 40 == 7).count()
    );

    // Watchers from the list's resourceVersion.
    let rv = all_items.metadata.resource_version.clone().unwrap();
    let counters: Arc<Vec<AtomicUsize>> =
        Arc::new((0..sz.watchers).map(|_| AtomicUsize::new(0)).collect());
    let mut tasks = Vec::new();
    for w in 0..sz.watchers {
        let items = items.clone();
        let counters = counters.clone();
        let rv = rv.clone();
        let stream = items
            .watch(
                &WatchParams::default().timeout(290).disable_bookmarks(),
                &rv,
            )
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            while let Some(ev) = stream.next().await {
                if let Ok(WatchEvent::Modified(_)) = ev {
                    counters[w].fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let all_reached = |n: usize| {
        let counters = counters.clone();
        async move { counters.iter().all(|c| c.load(Ordering::Relaxed) >= n) }
    };

    // One write: time until every watcher has it.
    let t = Instant::now();
    items
        .patch_status(
            "item-000000",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"used": 1}})),
        )
        .await
        .unwrap();
    assert!(
        common::eventually(Duration::from_secs(30), || all_reached(1)).await,
        "every watcher saw the first update"
    );
    let fanout_one = t.elapsed();

    // A burst of writes while measuring GET latency.
    let t = Instant::now();
    let writer = {
        let items = items.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..sz.burst)
                .map(|i| {
                    let items = items.clone();
                    async move {
                        let name = format!("item-{:06}", (i * 7 + 1) % sz.objects);
                        items
                            .patch_status(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(json!({"status": {"used": i + 2}})),
                            )
                            .await
                            .map(|_| ())
                    }
                })
                .buffer_unordered(8)
                .try_collect::<Vec<_>>()
                .await
        })
    };
    let mut get_lat = Vec::new();
    for i in 0..50 {
        let g = Instant::now();
        nodes
            .get(&format!("node-{:05}", i % sz.nodes))
            .await
            .unwrap();
        get_lat.push(g.elapsed());
    }
    writer.await.unwrap().unwrap();
    let writes = t.elapsed();
    assert!(
        common::eventually(Duration::from_secs(60), || all_reached(1 + sz.burst)).await,
        "every watcher saw the whole burst"
    );
    let fanout_burst = t.elapsed();
    get_lat.sort();
    for t in &tasks {
        t.abort();
    }

    let report = format!(
        "kube-sim load: {} nodes, {} custom objects, {} watchers\n\
         populate: {} creates in {:.1} s ({:.0}/s)\n\
         list nodes (all {}): {:.1} ms\n\
         list custom objects (all {}): {:.1} ms\n\
         list custom objects paged (limit 500, {} pages): {:.1} ms\n\
         list nodes with label selector: {:.1} ms\n\
         watch fan-out, 1 update to {} watchers: {:.1} ms\n\
         watch fan-out, burst of {} updates to {} watchers ({} events delivered): {:.1} ms (writes done in {:.1} ms)\n\
         GET latency during the burst: p50 {:.2} ms, p99 {:.2} ms",
        sz.nodes,
        sz.objects,
        sz.watchers,
        creates,
        populate.as_secs_f64(),
        creates as f64 / populate.as_secs_f64(),
        sz.nodes,
        ms(list_nodes),
        sz.objects,
        ms(list_items),
        pages,
        ms(list_paged),
        ms(list_selector),
        sz.watchers,
        ms(fanout_one),
        sz.burst,
        sz.watchers,
        sz.burst * sz.watchers,
        ms(fanout_burst),
        ms(writes),
        ms(get_lat[get_lat.len() / 2]),
        ms(get_lat[get_lat.len() * 99 / 100]),
    );
    eprintln!("{report}");
    // Responsiveness bounds, generous enough for a debug build on 2 cores.
    assert!(
        list_nodes < Duration::from_secs(10) && list_items < Duration::from_secs(30),
        "{report}"
    );
    assert!(
        get_lat[get_lat.len() / 2] < Duration::from_secs(1),
        "{report}"
    );
    sim.shutdown().await;
}
