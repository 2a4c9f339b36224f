//! The `tabby-agent` binary on three nodes (one network namespace each, a shared bridge)
//! against `tabby-kube-sim`: the iBGP mesh comes up from the Node objects alone (node-3's Node
//! has no address: its agent autodetects `interface=eth0` and annotates the Node), every node
//! blackholes its own block and routes (proto 84) to every other node's block via that node,
//! agents are ready and publish NodeNetworkStatus, and — after the API server dropped every
//! watch and compacted its history (re-watches get 410 Gone) — a BGPPeer added for one node
//! opens one more session without touching any mesh session. Needs root; skips otherwise.

mod daemon_common;

use std::time::{Duration, Instant};

use daemon_common::*;
use kube::api::{Api, PostParams};
use serde_json::json;
use tabby_api::v1alpha1::{BGPPeer, NodeNetworkStatus};

#[test]
fn mesh_comes_up_and_a_new_peer_resets_no_session() {
    if skip_unless_root_and(&["ip", "ss"]) {
        return;
    }
    let mut lab = Lab::dual_stack(3, 101);
    lab.block_on(async |lab: &mut Lab, client, sim| {
        create_pool(&client).await;
        create_pool6(&client).await;
        for i in 1..=3 {
            if i == 3 {
                create_node_with(&client, "node-3", json!({})).await;
            } else {
                create_node(&client, lab, i).await;
            }
            create_block(&client, lab, i).await;
            create_block6(&client, lab, i).await;
        }
        let start = Instant::now();
        for i in 1..=2 {
            lab.start_agent(i, &["--stale-routes-time", "30"]);
        }
        lab.start_agent(
            3,
            &[
                "--stale-routes-time",
                "30",
                "--ipv4-autodetect",
                "interface=eth0",
                "--ipv6-autodetect",
                "interface=eth0",
            ],
        );
        let up = wait_for(Duration::from_secs(30), || {
            (1..=3).all(|i| mesh_routes_ok(lab, i))
        })
        .await;
        let up = up.unwrap_or_else(|| {
            panic!(
                "mesh routes not complete within 30 s: {:?}",
                (1..=3)
                    .map(|i| (tabby_routes(&lab.node(i).ns), tabby_routes6(&lab.node(i).ns)))
                    .collect::<Vec<_>>()
            )
        });
        eprintln!(
            "mesh up: every node has its blackhole and routes to the others {:.2} s after the agents started",
            (start.elapsed().min(up)).as_secs_f64()
        );
        // Each node: two mesh sessions (one TCP connection per pair: only one side connects).
        for i in 1..=3 {
            let conns = bgp_connections(&lab.node(i).ns);
            // Two mesh peers, one session per family each.
            assert_eq!(conns.len(), 4, "node-{i} BGP connections: {conns:?}");
        }
        // Only routes of ours, exactly one per block: no duplicates.
        for i in 1..=3 {
            let routes = tabby_routes(&lab.node(i).ns);
            assert_eq!(routes.len(), 3, "node-{i}: {routes:?}");
            let routes6 = tabby_routes6(&lab.node(i).ns);
            assert_eq!(routes6.len(), 3, "node-{i}: {routes6:?}");
        }

        // Every agent is ready, serves metrics, and its NodeNetworkStatus shows both sessions.
        for i in 1..=3 {
            let ns = &lab.node(i).ns;
            assert!(
                wait_for(Duration::from_secs(15), || {
                    agent_http(ns, "/readyz").is_some_and(|(c, _)| c == 200)
                })
                .await
                .is_some(),
                "node-{i} not ready: {:?}",
                agent_http(ns, "/readyz")
            );
            let (code, metrics) = agent_http(ns, "/metrics").expect("metrics");
            assert_eq!(code, 200);
            assert!(metrics.contains("tabby_agent_routes"), "{metrics}");
        }
        let statuses: Api<NodeNetworkStatus> = Api::all(client.clone());
        for i in 1..=3 {
            let name = lab.node(i).name.clone();
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut last = None;
            let mut ok = false;
            while !ok && Instant::now() < deadline {
                last = statuses.get_opt(&name).await.ok().flatten().and_then(|o| o.status);
                ok = last
                    .as_ref()
                    .is_some_and(|s| s.sessions_established == 4 && s.sessions_total == 4);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(ok, "NodeNetworkStatus {name}: {last:?}");
        }

        let node3 = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
            .get("node-3")
            .await
            .unwrap();
        let ann = node3.metadata.annotations.unwrap_or_default();
        assert_eq!(
            ann.get("tabby.dev/ipv4-address").map(String::as_str),
            Some(format!("{}/24", lab.node(3).address).as_str()),
            "node-3's autodetected IPv4 address annotation"
        );
        assert_eq!(
            ann.get("tabby.dev/ipv6-address").cloned(),
            lab.node(3).address6.as_ref().map(|a| format!("{a}/64")),
            "node-3's autodetected IPv6 address annotation"
        );

        // Every watch ends and the history is gone: the agents' watchers must re-list.
        sim.compact();
        sim.drop_watches();
        tokio::time::sleep(Duration::from_millis(200)).await;

        // A BGPPeer for node-1 only, towards a router that does not answer.
        let before: Vec<_> = (1..=3).map(|i| bgp_connections(&lab.node(i).ns)).collect();
        let tor = format!("10.{}.0.200", lab.net);
        let peer: BGPPeer = serde_json::from_value(json!({
            "apiVersion": "tabby.dev/v1alpha1",
            "kind": "BGPPeer",
            "metadata": {"name": "tor-node-1"},
            "spec": {"peerIP": tor, "asNumber": 65000, "node": "node-1"},
        }))
        .unwrap();
        Api::<BGPPeer>::all(client.clone())
            .create(&PostParams::default(), &peer)
            .await
            .expect("create BGPPeer");
        let ns1 = &lab.node(1).ns;
        assert!(
            wait_for(Duration::from_secs(10), || connecting_to(ns1, &tor))
                .await
                .is_some(),
            "node-1 never tried to connect to the new peer {tor}"
        );
        // Give a wrongly reset session time to show.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for i in 1..=3 {
            let after = bgp_connections(&lab.node(i).ns);
            assert_eq!(
                after,
                before[i - 1],
                "node-{i}: mesh connections changed after adding a BGPPeer"
            );
            assert!(mesh_routes_ok(lab, i), "node-{i} lost mesh routes");
        }
        // The other nodes do not peer with it.
        for i in 2..=3 {
            assert!(!connecting_to(&lab.node(i).ns, &tor), "node-{i} peers with {tor}");
        }
    });
}
