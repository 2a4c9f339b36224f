//! Churn: nodes join and leave at random while thousands of allocations and releases run
//! through the agent's IPAM client, with the real controller handing out and taking back
//! blocks. Zero duplicate addresses at any time, zero leaks at the end, blocks of removed nodes
//! released. The seed is printed; `TABBY_CHURN_SEED` replays one.

mod ipam_common;

use std::time::Duration;

use ipam_common::*;

fn seed() -> u64 {
    std::env::var("TABBY_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7ab_b1e5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_200_nodes_5000_operations_against_kube_sim() {
    let seed = seed();
    eprintln!("churn seed {seed} (TABBY_CHURN_SEED={seed} replays it)");
    let (_sim, client) = sim().await;
    // Dual-stack: every allocation writes two blocks. GC is off: the churn has no Pod objects,
    // and allocations of live handles must survive; released nodes are the controller's job.
    create_pool(&client, "churn-v4", "10.64.0.0/16", 26).await;
    create_pool(&client, "churn-v6", "fd00:64::/112", 122).await;
    let _ctl = controller(&client, "churn-ctl", &["--gc-grace", "0"]);
    let params = ChurnParams {
        seed,
        nodes: 200,
        initial_nodes: 60,
        operations: 5_000,
        workers: 16,
        prefix: "churn-".into(),
        cooldown: Duration::from_secs(1),
        wait: Duration::from_secs(20),
        node_labels: Default::default(),
    };
    let report = tokio::time::timeout(Duration::from_secs(180), churn(&client, &params))
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: churn did not finish within 180 s"));
    eprintln!("churn seed {seed}: {report:?}");
    // Workers in flight when the count is reached finish their operation.
    let ops = report.allocations + report.releases;
    assert!(
        (params.operations..params.operations + params.workers).contains(&ops),
        "{ops} operations"
    );
    assert_eq!(report.joins, params.nodes, "every node joined");
    assert!(report.leaves > 20, "nodes left during the run: {report:?}");
    assert_eq!(
        report.waited_out, 0,
        "no allocation waited out its deadline"
    );
    assert!(
        report.elapsed < Duration::from_secs(90),
        "seed {seed}: took {:?}",
        report.elapsed
    );
}
