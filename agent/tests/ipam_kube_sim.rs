//! The agent's IPAM client against `tabby-kube-sim`: dual-stack allocation, idempotency,
//! concurrent writers on one block, cooldown, release, and the bounded wait for a block. Blocks
//! are created here as the controller would (spec only), so each case controls exactly what
//! the node holds.

mod ipam_common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipam_common::*;
use kube::Client;
use kube::api::{Api, PostParams};
use tabby_agent::ipam::{ClientConfig, IpamClient, IpamError};
use tabby_api::ipam::name::block_name;
use tabby_api::v1alpha1::{IPAMBlock, IPAMBlockSpec};

async fn create_block(client: &Client, cidr: &str, pool: &str, node: &str) {
    let api: Api<IPAMBlock> = Api::all(client.clone());
    let name = block_name(cidr.parse().unwrap());
    let spec = IPAMBlockSpec {
        cidr: cidr.into(),
        pool: pool.into(),
        node: node.into(),
    };
    api.create(&PostParams::default(), &IPAMBlock::new(&name, spec))
        .await
        .expect("create block");
}

fn cfg(cooldown_ms: u64) -> ClientConfig {
    ClientConfig {
        cooldown: Duration::from_millis(cooldown_ms),
        max_attempts: 50,
        poll_interval: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_allocation_is_idempotent_and_release_is_too() {
    let (_sim, c) = sim().await;
    create_pool(&c, "v4", "10.1.0.0/24", 28).await;
    create_pool(&c, "v6", "fd00:1::/120", 124).await;
    create_block(&c, "10.1.0.16/28", "v4", "n1").await;
    create_block(&c, "fd00:1::30/124", "v6", "n1").await;
    create_block(&c, "10.1.0.32/28", "v4", "n2").await;
    let ipam = IpamClient::new(c.clone(), "n1", cfg(30_000));
    let got = ipam.allocate(&pod("c1"), Duration::ZERO).await.unwrap();
    let addrs: Vec<String> = got.iter().map(|a| a.address.to_string()).collect();
    assert_eq!(
        addrs,
        ["10.1.0.16", "fd00:1::30"],
        "first ordinal of each family's block"
    );
    assert!(got.iter().all(|a| !a.existing));
    let again = ipam.allocate(&pod("c1"), Duration::ZERO).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|a| (a.address, a.existing))
            .collect::<Vec<_>>(),
        got.iter().map(|a| (a.address, true)).collect::<Vec<_>>()
    );
    let second = ipam.allocate(&pod("c2"), Duration::ZERO).await.unwrap();
    assert_eq!(second[0].address.to_string(), "10.1.0.17");
    // Release: both families, into cooldown; twice is a no-op; others untouched.
    let rel = ipam.release("c1").await.unwrap();
    assert_eq!(rel.len(), 2);
    assert!(ipam.release("c1").await.unwrap().is_empty());
    let all = allocations(&blocks(&c).await);
    let holders: BTreeSet<&str> = all.values().map(|(h, _)| h.as_str()).collect();
    assert_eq!(holders, BTreeSet::from(["c2"]));
    // Cooling down: the next pod does not get c1's old address.
    let third = ipam.allocate(&pod("c3"), Duration::ZERO).await.unwrap();
    assert_eq!(third[0].address.to_string(), "10.1.0.18");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_allocations_on_one_node_never_share_an_address() {
    let (_sim, c) = sim().await;
    create_pool(&c, "v4", "10.2.0.0/24", 26).await;
    create_block(&c, "10.2.0.64/26", "v4", "n1").await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            IpamClient::new(c, "n1", cfg(30_000))
                .allocate(&pod(&format!("c{i}")), Duration::ZERO)
                .await
        }));
    }
    let mut seen: BTreeSet<IpAddr> = BTreeSet::new();
    for t in tasks {
        let got = t.await.unwrap().expect("allocation");
        assert!(
            seen.insert(got[0].address),
            "{} handed out twice",
            got[0].address
        );
    }
    assert_eq!(seen.len(), 64, "the whole /26, every address once");
    assert_eq!(allocations(&blocks(&c).await).len(), 64);
    let ipam = IpamClient::new(c.clone(), "n1", cfg(30_000));
    let err = ipam
        .allocate(&pod("c64"), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(err.is_try_again(), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_block_up_to_the_deadline_and_for_a_cooldown_to_end() {
    let (_sim, c) = sim().await;
    create_pool(&c, "v4", "10.3.0.0/24", 30).await;
    let ipam = IpamClient::new(c.clone(), "n1", cfg(1_500));
    // No block and nobody creating one: NoAddressYet after the wait, not before, not much later.
    let t = Instant::now();
    let err = ipam
        .allocate(&pod("c0"), Duration::from_millis(700))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpamError::NoAddressYet { family: None, .. }),
        "{err}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // A block appears while the client waits: the watch wakes it.
    let creator = {
        let c = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            create_block(&c, "10.3.0.4/30", "v4", "n1").await;
        })
    };
    let t = Instant::now();
    let got = ipam
        .allocate(&pod("c1"), Duration::from_secs(10))
        .await
        .unwrap();
    creator.await.unwrap();
    assert_eq!(got[0].address.to_string(), "10.3.0.4");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "woke on the new block: {:?}",
        t.elapsed()
    );
    // Fill the /30, release one: the next request waits out the cooldown, then gets it.
    for h in ["c2", "c3", "c4"] {
        ipam.allocate(&pod(h), Duration::ZERO).await.unwrap();
    }
    // Taken before the release, so it does not depend on how long the release and the next
    // request take on a loaded machine.
    let released_at = Instant::now();
    ipam.release("c2").await.unwrap();
    let err = ipam.allocate(&pod("c5"), Duration::ZERO).await.unwrap_err();
    assert!(err.is_try_again(), "{err}");
    let got = ipam
        .allocate(&pod("c5"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        got[0].address.to_string(),
        "10.3.0.5",
        "c2's address after its cooldown"
    );
    // metav1.Time has second precision: the stored release time is rounded down, so the
    // 1.5 s cooldown ends 0.5-1.5 s after the release.
    assert!(
        released_at.elapsed() >= Duration::from_millis(400),
        "{:?}",
        released_at.elapsed()
    );
    // A requested address that is cooling down is "not yet" as well, and is given once cool.
    ipam.release("c3").await.unwrap();
    let ask = {
        let mut p = pod("c6");
        p.annotations
            .insert("tabby.dev/ipaddrs".into(), "10.3.0.6".into());
        p
    };
    assert!(
        ipam.allocate(&ask, Duration::ZERO)
            .await
            .unwrap_err()
            .is_try_again()
    );
    let got = ipam.allocate(&ask, Duration::from_secs(10)).await.unwrap();
    assert_eq!(got[0].address.to_string(), "10.3.0.6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_controller_a_joining_node_gets_addresses_of_both_families() {
    let (_sim, c) = sim().await;
    create_pool(&c, "v4", "10.4.0.0/24", 28).await;
    create_pool(&c, "v6", "fd00:4::/120", 124).await;
    let _ctl = controller(&c, "ctl", &["--gc-grace", "0"]);
    create_node(&c, "n1").await;
    let ipam = IpamClient::new(c.clone(), "n1", cfg(1_000));
    // The controller gives n1 a block per family; the first pod waits for the blocks, and
    // gets both families once both exist (a wait may end after the first block alone).
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let got = ipam
            .allocate(&pod("c1"), Duration::from_secs(20))
            .await
            .unwrap();
        if got.len() == 2 || Instant::now() > deadline {
            break got;
        }
        ipam.release("c1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].address.is_ipv4() && got[1].address.is_ipv6());
    assert!(got.iter().all(|a| a.cidr.contains(&a.address)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_asking_for_a_pool_waits_for_the_block_the_controller_carves_on_demand() {
    let (_sim, c) = sim().await;
    create_pool(&c, "a-default", "10.5.0.0/24", 28).await;
    create_pool(&c, "gpu", "10.6.0.0/24", 28).await;
    let _ctl = controller(&c, "ctl", &["--gc-grace", "0"]);
    create_node(&c, "n1").await;
    let ipam = IpamClient::new(c.clone(), "n1", cfg(1_000));
    let first = ipam
        .allocate(&pod("plain"), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(first[0].pool, "a-default", "pools tried in name order");
    // The pending pod (as the kubelet sees it during CNI ADD) names the gpu pool.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.clone(), "default");
    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pod-g1", "namespace": "default",
                     "annotations": {"tabby.dev/ippools": "gpu"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "pause"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p)
        .await
        .expect("create pod");
    let mut req = pod("g1");
    req.pod.namespace = "default".into();
    req.annotations
        .insert("tabby.dev/ippools".into(), "gpu".into());
    assert!(
        ipam.allocate(&req, Duration::ZERO)
            .await
            .unwrap_err()
            .is_try_again(),
        "no gpu block yet"
    );
    let got = ipam.allocate(&req, Duration::from_secs(20)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].pool, "gpu");
    assert!(got[0].address.to_string().starts_with("10.6.0."), "{got:?}");
}
