//! A BGPPeer that cannot be applied — its MD5 password Secret does not exist — is reported in the
//! node's NodeNetworkStatus (`PeersApplied` False, naming the Secret) and leaves the mesh
//! session alone; creating the Secret (in the agent's namespace, seen by the Secret watch)
//! applies the peer without a restart. The `tabby-agent` binary on two nodes in network
//! namespaces against `tabby-kube-sim`. Needs root; skips otherwise.

mod daemon_common;

use std::time::{Duration, Instant};

use daemon_common::*;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use tabby_api::v1alpha1::nodenetworkstatus::NodeNetworkStatusStatus;
use tabby_api::v1alpha1::{BGPPeer, NodeNetworkStatus};

const NS: &str = "tabby-system";

/// Polls node `name`'s status until `ok` holds (15 s at most); the last status seen.
async fn status_until(
    client: &Client,
    name: &str,
    ok: impl Fn(&NodeNetworkStatusStatus) -> bool,
) -> (bool, Option<NodeNetworkStatusStatus>) {
    let api: Api<NodeNetworkStatus> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = None;
    while Instant::now() < deadline {
        last = api
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|o| o.status);
        if last.as_ref().is_some_and(&ok) {
            return (true, last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (false, last)
}

fn peers_applied(s: &NodeNetworkStatusStatus) -> Option<&str> {
    s.conditions
        .iter()
        .find(|c| c.type_ == "PeersApplied")
        .map(|c| c.status.as_str())
}

#[test]
fn a_peer_with_a_missing_secret_is_reported_and_recovers_when_it_appears() {
    if skip_unless_root_and(&["ip", "ss"]) {
        return;
    }
    let mut lab = Lab::new(2, 103);
    lab.block_on(async |lab: &mut Lab, client, _sim| {
        let ns: Namespace = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        )
        .unwrap();
        let _ = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await;
        create_pool(&client).await;
        for i in 1..=2 {
            create_node(&client, lab, i).await;
            create_block(&client, lab, i).await;
        }
        let tor = format!("10.{}.0.200", lab.net);
        let peer: BGPPeer = serde_json::from_value(json!({
            "apiVersion": "tabby.dev/v1alpha1",
            "kind": "BGPPeer",
            "metadata": {"name": "tor"},
            "spec": {
                "peerIP": tor, "asNumber": 65000, "node": "node-1",
                "password": {"name": "bgp-secrets", "key": "tor"},
            },
        }))
        .unwrap();
        Api::<BGPPeer>::all(client.clone())
            .create(&PostParams::default(), &peer)
            .await
            .expect("create BGPPeer");
        for i in 1..=2 {
            lab.start_agent(i, &[]);
        }
        assert!(
            wait_for(Duration::from_secs(30), || mesh_routes_ok(lab, 1)
                && mesh_routes_ok(lab, 2))
            .await
            .is_some(),
            "the mesh must come up despite the broken BGPPeer"
        );
        let (reported, last) = status_until(&client, "node-1", |s| {
            peers_applied(s) == Some("False")
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("bgp-secrets"))
        })
        .await;
        assert!(
            reported,
            "node-1 status does not report the missing Secret: {last:#?}"
        );
        assert!(
            !connecting_to(&lab.node(1).ns, &tor),
            "a peer without its password must not be configured"
        );
        let mesh = bgp_connections(&lab.node(1).ns);

        // The Secret appears: the peer is applied, no restart, the mesh untouched.
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bgp-secrets", "namespace": NS},
            "data": {"tor": "czNjcmV0"}, // "s3cret"
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create Secret");
        let ns1 = &lab.node(1).ns;
        assert!(
            wait_for(Duration::from_secs(10), || connecting_to(ns1, &tor))
                .await
                .is_some(),
            "node-1 never tried the peer after its Secret appeared"
        );
        let (recovered, last) =
            status_until(&client, "node-1", |s| peers_applied(s) == Some("True")).await;
        assert!(recovered, "PeersApplied did not recover: {last:#?}");
        assert_eq!(bgp_connections(ns1), mesh, "the mesh session was reset");
        assert_eq!(lab.node(1).starts, 1);
    });
}
