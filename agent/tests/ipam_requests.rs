//! The agent's IPAM client, request by request, against a mocked API server (`tower-test`):
//! exact methods, paths, field selectors, `resourceVersion` preconditions and bodies, the
//! re-read-and-retry on 409, the roll-back of a half-done dual-stack allocation, and that
//! repeated or impossible requests write nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tabby_agent::ipam::{ClientConfig, IpamClient, IpamError, PodRequest};
use tabby_api::v1alpha1::PodReference;
use tower_test::mock::{self, Handle, SendResponse};

type H = Handle<Request<Body>, Response<Body>>;

const BLOCKS: &str = "/apis/tabby.dev/v1alpha1/ipamblocks";
const POOLS: &str = "/apis/tabby.dev/v1alpha1/ippools";

fn mocked() -> (IpamClient, H) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = IpamClient::new(
        Client::new(svc, "default"),
        "n1",
        ClientConfig {
            max_attempts: 3,
            ..ClientConfig::default()
        },
    );
    (client, handle)
}

/// One request the client made.
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
    send: SendResponse<Response<Body>>,
}

async fn next(h: &mut H) -> Seen {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), h.next_request())
        .await
        .expect("a request within 5 s")
        .expect("a request");
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Seen {
        method,
        path,
        query,
        body,
        send,
    }
}

fn reply(send: SendResponse<Response<Body>>, code: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason,
           "reason": reason, "code": code})
}

fn pool(name: &str, cidr: &str, block: u8) -> Value {
    json!({"apiVersion": "tabby.dev/v1alpha1", "kind": "IPPool",
           "metadata": {"name": name, "resourceVersion": "1"},
           "spec": {"cidr": cidr, "blockSize": block}})
}

fn block(cidr: &str, rv: &str, allocations: Value) -> Value {
    let name = tabby_api::ipam::name::block_name(cidr.parse().unwrap());
    let pool = if cidr.contains(':') { "v6" } else { "v4" };
    json!({"apiVersion": "tabby.dev/v1alpha1", "kind": "IPAMBlock",
           "metadata": {"name": name, "resourceVersion": rv},
           "spec": {"cidr": cidr, "pool": pool, "node": "n1"},
           "status": {"allocations": allocations}})
}

fn alloc(ordinal: u32, handle: &str) -> Value {
    json!({"ordinal": ordinal, "handle": handle, "time": "2026-01-01T00:00:00Z",
           "pod": {"namespace": "default", "name": format!("pod-{handle}"), "uid": format!("uid-{handle}")}})
}

fn list(kind: &str, rv: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "tabby.dev/v1alpha1", "kind": kind, "metadata": {"resourceVersion": rv},
           "items": items})
}

fn pod(handle: &str, annotations: &[(&str, &str)]) -> PodRequest {
    PodRequest {
        handle: handle.into(),
        pod: PodReference {
            namespace: "default".into(),
            name: format!("pod-{handle}"),
            uid: format!("uid-{handle}"),
        },
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Answers the two parallel LISTs (IPPools, this node's IPAMBlocks) in whatever order they come,
/// checking the block list is scoped to the node by field selector.
async fn answer_reads(h: &mut H, pools: Vec<Value>, blocks: Vec<Value>, rv: &str) {
    let mut pools = Some(pools);
    let mut blocks = Some(blocks);
    for _ in 0..2 {
        let s = next(h).await;
        assert_eq!(s.method, Method::GET);
        match s.path.as_str() {
            POOLS => reply(
                s.send,
                200,
                &list("IPPoolList", rv, pools.take().expect("one pool list")),
            ),
            BLOCKS => {
                assert!(
                    s.query.contains("fieldSelector=spec.node%3Dn1"),
                    "block list scoped to the node: {}",
                    s.query
                );
                reply(
                    s.send,
                    200,
                    &list("IPAMBlockList", rv, blocks.take().expect("one block list")),
                );
            }
            other => panic!("unexpected read of {other}"),
        }
    }
}

async fn expect_block_list(h: &mut H, blocks: Vec<Value>, rv: &str) {
    let s = next(h).await;
    assert_eq!((s.method, s.path.as_str()), (Method::GET, BLOCKS));
    assert!(
        s.query.contains("fieldSelector=spec.node%3Dn1"),
        "{}",
        s.query
    );
    reply(s.send, 200, &list("IPAMBlockList", rv, blocks));
}

fn ordinals(body: &Value) -> Vec<(u64, String)> {
    body["status"]["allocations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["ordinal"].as_u64().unwrap(),
                a["handle"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The client's side ends: no request is left unanswered or unexpected.
async fn no_more(h: &mut H) {
    assert!(
        tokio::time::timeout(Duration::from_secs(5), h.next_request())
            .await
            .expect("the client is dropped")
            .is_none(),
        "no further request"
    );
}

#[tokio::test]
async fn allocate_writes_status_on_the_read_version_and_retries_a_conflict() {
    let (client, mut h) = mocked();
    let server = tokio::spawn(async move {
        answer_reads(
            &mut h,
            vec![pool("v4", "10.0.0.0/24", 28)],
            vec![block("10.0.0.0/28", "5", json!([alloc(0, "other")]))],
            "5",
        )
        .await;
        // First write: on resourceVersion 5, ordinal 1 (the lowest free), status only.
        let s = next(&mut h).await;
        assert_eq!(
            (s.method.clone(), s.path.as_str()),
            (
                Method::PUT,
                "/apis/tabby.dev/v1alpha1/ipamblocks/10-0-0-0-28/status"
            )
        );
        assert_eq!(s.body["metadata"]["resourceVersion"], "5");
        assert_eq!(ordinals(&s.body), [(0, "other".into()), (1, "c1".into())]);
        let ours = &s.body["status"]["allocations"][1];
        assert_eq!(
            ours["pod"],
            json!({"namespace": "default", "name": "pod-c1", "uid": "uid-c1"})
        );
        assert_eq!(s.body["spec"]["node"], "n1", "spec sent unchanged");
        reply(s.send, 409, &status(409, "Conflict"));
        // Conflict: read the node's blocks again; ordinal 1 was taken meanwhile.
        expect_block_list(
            &mut h,
            vec![block(
                "10.0.0.0/28",
                "7",
                json!([alloc(0, "other"), alloc(1, "racer")]),
            )],
            "7",
        )
        .await;
        let s = next(&mut h).await;
        assert_eq!(s.method, Method::PUT);
        assert_eq!(s.body["metadata"]["resourceVersion"], "7");
        assert_eq!(
            ordinals(&s.body),
            [(0, "other".into()), (1, "racer".into()), (2, "c1".into())]
        );
        let mut written = s.body.clone();
        written["metadata"]["resourceVersion"] = json!("8");
        reply(s.send, 200, &written);
        no_more(&mut h).await;
    });
    let got = client
        .allocate(&pod("c1", &[]), Duration::ZERO)
        .await
        .unwrap();
    drop(client);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].address.to_string(), "10.0.0.2");
    assert_eq!(got[0].cidr.to_string(), "10.0.0.0/28");
    assert_eq!(
        (got[0].block.as_str(), got[0].pool.as_str(), got[0].existing),
        ("10-0-0-0-28", "v4", false)
    );
    server.await.unwrap();
}

#[tokio::test]
async fn repeated_allocate_returns_the_same_addresses_and_writes_nothing() {
    let (client, mut h) = mocked();
    let server = tokio::spawn(async move {
        answer_reads(
            &mut h,
            vec![pool("v4", "10.0.0.0/24", 28), pool("v6", "fd00::/120", 124)],
            vec![
                block("10.0.0.0/28", "5", json!([alloc(3, "c1")])),
                block("fd00::/124", "5", json!([alloc(0, "x"), alloc(9, "c1")])),
            ],
            "5",
        )
        .await;
        no_more(&mut h).await;
    });
    let got = client
        .allocate(&pod("c1", &[]), Duration::ZERO)
        .await
        .unwrap();
    drop(client);
    let addrs: Vec<(String, bool)> = got
        .iter()
        .map(|a| (a.address.to_string(), a.existing))
        .collect();
    assert_eq!(
        addrs,
        [
            ("10.0.0.3".to_string(), true),
            ("fd00::9".to_string(), true)
        ]
    );
    server.await.unwrap();
}

#[tokio::test]
async fn full_blocks_and_no_blocks_are_try_again_without_a_write() {
    for (case, blocks) in [
        (
            "every address allocated",
            vec![block(
                "10.0.0.0/30",
                "5",
                json!([alloc(0, "a"), alloc(1, "b"), alloc(2, "c"), alloc(3, "d")]),
            )],
        ),
        ("no block yet", vec![]),
    ] {
        let (client, mut h) = mocked();
        let server = tokio::spawn(async move {
            answer_reads(&mut h, vec![pool("v4", "10.0.0.0/24", 30)], blocks, "5").await;
            no_more(&mut h).await;
        });
        let err = client
            .allocate(&pod("c1", &[]), Duration::ZERO)
            .await
            .unwrap_err();
        drop(client);
        assert!(err.is_try_again(), "{case}: {err}");
        assert!(
            matches!(err, IpamError::NoAddressYet { ref node, .. } if node == "n1"),
            "{case}"
        );
        server.await.unwrap();
    }
}

#[tokio::test]
async fn a_failed_second_family_releases_the_first_again() {
    let (client, mut h) = mocked();
    let server = tokio::spawn(async move {
        answer_reads(
            &mut h,
            vec![pool("v4", "10.0.0.0/24", 28), pool("v6", "fd00::/120", 124)],
            vec![
                block("10.0.0.0/28", "5", json!([])),
                block("fd00::/124", "6", json!([])),
            ],
            "6",
        )
        .await;
        let s = next(&mut h).await;
        assert_eq!(s.path, format!("{BLOCKS}/10-0-0-0-28/status"));
        assert_eq!(ordinals(&s.body), [(0, "c1".into())]);
        let mut v4 = s.body.clone();
        v4["metadata"]["resourceVersion"] = json!("7");
        reply(s.send, 200, &v4);
        let s = next(&mut h).await;
        assert_eq!(s.path, format!("{BLOCKS}/fd00-0-0-0-0-0-0-0-124/status"));
        reply(s.send, 422, &status(422, "Invalid"));
        // The failed family's view is read again (it holds an unwritten change) ...
        expect_block_list(&mut h, vec![], "8").await;
        // ... and the IPv4 address is given back: fresh read, then a write without it.
        let s = next(&mut h).await;
        assert_eq!(
            (s.method.clone(), s.path.as_str()),
            (
                Method::GET,
                "/apis/tabby.dev/v1alpha1/ipamblocks/10-0-0-0-28"
            )
        );
        reply(s.send, 200, &v4);
        let s = next(&mut h).await;
        assert_eq!(
            (s.method.clone(), s.path.as_str()),
            (
                Method::PUT,
                "/apis/tabby.dev/v1alpha1/ipamblocks/10-0-0-0-28/status"
            )
        );
        assert_eq!(s.body["metadata"]["resourceVersion"], "7");
        assert!(ordinals(&s.body).is_empty());
        assert_eq!(
            s.body["status"]["released"][0]["ordinal"], 0,
            "into cooldown"
        );
        reply(s.send, 200, &s.body.clone());
        no_more(&mut h).await;
    });
    let err = client
        .allocate(&pod("c1", &[]), Duration::ZERO)
        .await
        .unwrap_err();
    drop(client);
    assert!(matches!(err, IpamError::Api { .. }), "{err}");
    assert!(err.to_string().contains("fd00-0-0-0-0-0-0-0-124"), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn requested_addresses_and_pools_are_checked() {
    // (case, annotations, expected error words)
    let cases = [
        (
            "address held by another pod",
            ("tabby.dev/ipaddrs", "10.0.0.0"),
            "already allocated to handle \"other\"",
        ),
        (
            "address on no block of the node",
            ("tabby.dev/ipaddrs", "10.0.1.1"),
            "not in any block of node n1",
        ),
        (
            "pool that does not exist",
            ("tabby.dev/ippools", "gpu"),
            "no IPPool named \"gpu\"",
        ),
    ];
    for (case, ann, words) in cases {
        let (client, mut h) = mocked();
        let server = tokio::spawn(async move {
            answer_reads(
                &mut h,
                vec![pool("v4", "10.0.0.0/24", 28)],
                vec![block("10.0.0.0/28", "5", json!([alloc(0, "other")]))],
                "5",
            )
            .await;
            no_more(&mut h).await;
        });
        let err = client
            .allocate(&pod("c1", &[ann]), Duration::ZERO)
            .await
            .unwrap_err();
        drop(client);
        assert!(!err.is_try_again(), "{case}");
        assert!(err.to_string().contains(words), "{case}: {err}");
        server.await.unwrap();
    }
}

#[tokio::test]
async fn a_requested_free_address_is_given() {
    let (client, mut h) = mocked();
    let server = tokio::spawn(async move {
        answer_reads(
            &mut h,
            vec![pool("v4", "10.0.0.0/24", 28)],
            vec![block("10.0.0.0/28", "5", json!([alloc(0, "other")]))],
            "5",
        )
        .await;
        let s = next(&mut h).await;
        assert_eq!(ordinals(&s.body), [(0, "other".into()), (9, "c1".into())]);
        reply(s.send, 200, &s.body.clone());
        no_more(&mut h).await;
    });
    let got = client
        .allocate(
            &pod("c1", &[("tabby.dev/ipaddrs", "10.0.0.9")]),
            Duration::ZERO,
        )
        .await
        .unwrap();
    drop(client);
    assert_eq!(got[0].address.to_string(), "10.0.0.9");
    server.await.unwrap();
}

#[tokio::test]
async fn release_retries_a_conflict_and_is_idempotent() {
    let (client, mut h) = mocked();
    let server = tokio::spawn(async move {
        expect_block_list(
            &mut h,
            vec![
                block("10.0.0.0/28", "3", json!([alloc(4, "c1")])),
                block("10.0.0.16/28", "3", json!([alloc(0, "zz")])),
            ],
            "3",
        )
        .await;
        let s = next(&mut h).await;
        assert_eq!(
            (s.method.clone(), s.path.as_str()),
            (
                Method::PUT,
                "/apis/tabby.dev/v1alpha1/ipamblocks/10-0-0-0-28/status"
            )
        );
        assert_eq!(s.body["metadata"]["resourceVersion"], "3");
        reply(s.send, 409, &status(409, "Conflict"));
        let s = next(&mut h).await;
        assert_eq!(
            (s.method.clone(), s.path.as_str()),
            (
                Method::GET,
                "/apis/tabby.dev/v1alpha1/ipamblocks/10-0-0-0-28"
            )
        );
        reply(
            s.send,
            200,
            &block("10.0.0.0/28", "4", json!([alloc(2, "new"), alloc(4, "c1")])),
        );
        let s = next(&mut h).await;
        assert_eq!(s.body["metadata"]["resourceVersion"], "4");
        assert_eq!(
            ordinals(&s.body),
            [(2, "new".into())],
            "the other writer's change is kept"
        );
        assert_eq!(s.body["status"]["released"][0]["ordinal"], 4);
        reply(s.send, 200, &s.body.clone());
        // Second DEL: nothing held any more, nothing written.
        expect_block_list(
            &mut h,
            vec![block("10.0.0.0/28", "5", json!([alloc(2, "new")]))],
            "5",
        )
        .await;
        no_more(&mut h).await;
    });
    let got = client.release("c1").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].address.to_string(), "10.0.0.4");
    assert!(client.release("c1").await.unwrap().is_empty());
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn invalid_requests_are_refused_before_any_request() {
    let (client, mut h) = mocked();
    let server = tokio::spawn(async move { no_more(&mut h).await });
    let err = client
        .allocate(&pod("", &[]), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("handle \"\": must not be empty"),
        "{err}"
    );
    let err = client.release("a b").await.unwrap_err();
    assert!(err.to_string().contains("printable ASCII"), "{err}");
    drop(client);
    server.await.unwrap();
}
