//! The churn flow of `ipam_churn.rs`, smaller, against a real cluster from `KUBECONFIG`.
//!
//! `#[ignore]`d: run with `cargo test -p tabby-agent --test ipam_real_cluster -- --ignored`.
//! It needs the Tabby CRDs (created if absent) and permission to create Nodes, IPPools and
//! IPAMBlocks. It creates an IPPool (`TABBY_CHURN_CIDR`, default `10.199.0.0/16`, which must
//! not overlap the cluster's pools) selecting only the Nodes it creates (fake Node objects with
//! a test label; no kubelet runs on them), runs the controller in this process (unless
//! `TABBY_EXTERNAL_CONTROLLER=1`, when the cluster's own controller is used, whose
//! `--cooldown` must then be given as `TABBY_CHURN_COOLDOWN` seconds), and removes everything
//! it created at the end.

mod ipam_common;

use std::collections::BTreeMap;
use std::time::Duration;

use ipam_common::*;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use tabby_api::v1alpha1::{IPPool, IPPoolSpec};

const LABEL: &str = "tabby.dev/churn-test";

async fn cleanup(client: &kube::Client, run: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mine = ListParams::default().labels(&format!("{LABEL}={run}"));
    if let Ok(list) = nodes.list(&mine).await {
        for n in list.items {
            let name = n.metadata.name.unwrap_or_default();
            let _ = nodes.delete(&name, &DeleteParams::default()).await;
        }
    }
    // The controller releases the nodes' blocks, then lets the pool's finalizer go; wait for
    // that (bounded) before the in-process controller is dropped.
    let pools: Api<IPPool> = Api::all(client.clone());
    let pool = format!("{run}-v4");
    let _ = pools.delete(&pool, &DeleteParams::default()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        if matches!(pools.get_opt(&pool).await, Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("IPPool {pool} still present after 120 s; remove it and its blocks by hand");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real cluster from KUBECONFIG"]
async fn churn_against_a_real_cluster() {
    let client = kube::Client::try_default()
        .await
        .expect("a cluster from KUBECONFIG");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in tabby_api::v1alpha1::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        if crds.get_opt(&name).await.expect("read CRDs").is_none() {
            crds.create(&PostParams::default(), &crd)
                .await
                .expect("create CRD");
        }
    }
    let seed: u64 = std::env::var("TABBY_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7ab_b1e5);
    let run = format!("tabby-churn-{}", std::process::id());
    eprintln!("real-cluster churn {run}, seed {seed}");
    let cidr = std::env::var("TABBY_CHURN_CIDR").unwrap_or_else(|_| "10.199.0.0/16".into());
    let external = std::env::var("TABBY_EXTERNAL_CONTROLLER").is_ok_and(|v| v == "1");
    let cooldown: u64 = std::env::var("TABBY_CHURN_COOLDOWN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if external { 30 } else { 1 });
    let labels: BTreeMap<String, String> = [(LABEL.to_string(), run.clone())].into();
    let pools: Api<IPPool> = Api::all(client.clone());
    pools
        .create(
            &PostParams::default(),
            &IPPool::new(
                &format!("{run}-v4"),
                IPPoolSpec {
                    cidr,
                    block_size: Some(28),
                    node_selector: Some(LabelSelector {
                        match_labels: Some(labels.clone()),
                        ..LabelSelector::default()
                    }),
                    disabled: false,
                    nat_outgoing: false,
                    disable_bgp_export: false,
                },
            ),
        )
        .await
        .expect("create the test pool");
    let cooldown_flag = cooldown.to_string();
    let _ctl = (!external).then(|| {
        controller(
            &client,
            &format!("{run}-ctl"),
            &["--gc-grace", "0", "--cooldown", &cooldown_flag],
        )
    });
    let params = ChurnParams {
        seed,
        nodes: 20,
        initial_nodes: 8,
        operations: 300,
        workers: 4,
        prefix: format!("{run}-n"),
        cooldown: Duration::from_secs(cooldown),
        wait: Duration::from_secs(60),
        node_labels: labels,
    };
    let result = tokio::time::timeout(Duration::from_secs(600), churn(&client, &params)).await;
    cleanup(&client, &run).await;
    let report = result.expect("churn finished within 10 minutes");
    eprintln!("{run}: {report:?}");
    assert_eq!(report.waited_out, 0);
}
