//! The controller's writes, request by request, against a mocked API server (`tower-test`,
//! the pattern of kube-rs's controller example): exact methods, paths, preconditions and
//! bodies, and the re-read-and-retry on 409.

use http::{Method, Request, Response};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use tabby_api::ipam::node::BlockPlan;
use tabby_api::v1alpha1::{IPAMBlock, IPPool, IPPoolStatus, PodReference};
use tabby_ipam_controller::write::{self, Outcome};
use tower_test::mock::{self, Handle};

type H = Handle<Request<Body>, Response<Body>>;

fn mocked() -> (Client, H) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

/// Takes the next request, checks method and path, returns its JSON body (Null if none).
async fn expect(h: &mut H, method: Method, path: &str, reply: (u16, Value)) -> (String, Value) {
    let (req, send) = h.next_request().await.expect("a request");
    assert_eq!(req.method(), method, "method of {}", req.uri());
    assert_eq!(req.uri().path(), path);
    let query = req.uri().query().unwrap_or_default().to_string();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    send.send_response(
        Response::builder()
            .status(reply.0)
            .body(Body::from(serde_json::to_vec(&reply.1).unwrap()))
            .unwrap(),
    );
    (query, body)
}

fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code}),
    )
}

fn block_json(rv: &str, allocations: Value) -> Value {
    json!({
        "apiVersion": "tabby.dev/v1alpha1", "kind": "IPAMBlock",
        "metadata": {"name": "10-0-0-0-28", "resourceVersion": rv},
        "spec": {"cidr": "10.0.0.0/28", "pool": "p", "node": "n1"},
        "status": {"allocations": allocations}
    })
}

fn alloc(ordinal: u32, handle: &str, uid: &str) -> Value {
    json!({"ordinal": ordinal, "handle": handle, "time": "2026-01-01T00:00:00Z",
           "pod": {"namespace": "default", "name": format!("pod-{uid}"), "uid": uid}})
}

fn pod_ref(uid: &str) -> PodReference {
    PodReference {
        namespace: "default".into(),
        name: format!("pod-{uid}"),
        uid: uid.into(),
    }
}

const BLOCKS: &str = "/apis/tabby.dev/v1alpha1/ipamblocks";

#[tokio::test]
async fn create_block_posts_the_spec_and_treats_409_as_done() {
    let (client, mut h) = mocked();
    let api: Api<IPAMBlock> = Api::all(client);
    let plan = BlockPlan {
        name: "10-0-0-0-28".into(),
        cidr: "10.0.0.0/28".parse().unwrap(),
        pool: "p".into(),
        node: "n1".into(),
    };
    let server = tokio::spawn(async move {
        let (_, body) = expect(
            &mut h,
            Method::POST,
            BLOCKS,
            (201, block_json("1", json!([]))),
        )
        .await;
        assert_eq!(body["metadata"]["name"], "10-0-0-0-28");
        assert_eq!(
            body["spec"],
            json!({"cidr": "10.0.0.0/28", "pool": "p", "node": "n1"})
        );
        assert!(
            body.get("status").is_none_or(Value::is_null),
            "spec only: {body}"
        );
        expect(&mut h, Method::POST, BLOCKS, status(409, "AlreadyExists")).await;
    });
    assert_eq!(
        write::create_block(&api, &plan).await.unwrap(),
        Outcome::Done
    );
    assert_eq!(
        write::create_block(&api, &plan).await.unwrap(),
        Outcome::AlreadyDone
    );
    server.await.unwrap();
}

#[tokio::test]
async fn delete_block_carries_the_resource_version_precondition() {
    let (client, mut h) = mocked();
    let api: Api<IPAMBlock> = Api::all(client);
    let server = tokio::spawn(async move {
        let path = format!("{BLOCKS}/10-0-0-0-28");
        let (_, body) = expect(
            &mut h,
            Method::DELETE,
            &path,
            (200, block_json("7", json!([]))),
        )
        .await;
        assert_eq!(body["preconditions"], json!({"resourceVersion": "7"}));
        // An agent wrote an allocation in between: the precondition fails.
        let (_, body) = expect(&mut h, Method::DELETE, &path, status(409, "Conflict")).await;
        assert_eq!(body["preconditions"]["resourceVersion"], "7");
        expect(&mut h, Method::DELETE, &path, status(404, "NotFound")).await;
    });
    assert_eq!(
        write::delete_block(&api, "10-0-0-0-28", "7").await.unwrap(),
        Outcome::Done
    );
    assert!(matches!(
        write::delete_block(&api, "10-0-0-0-28", "7").await.unwrap(),
        Outcome::Skipped(_)
    ));
    assert_eq!(
        write::delete_block(&api, "10-0-0-0-28", "7").await.unwrap(),
        Outcome::AlreadyDone
    );
    server.await.unwrap();
}

#[tokio::test]
async fn gc_release_rechecks_the_pod_and_retries_on_conflict() {
    let (client, mut h) = mocked();
    let server = tokio::spawn(async move {
        // Pod re-check: gone.
        expect(
            &mut h,
            Method::GET,
            "/api/v1/namespaces/default/pods/pod-u1",
            status(404, "NotFound"),
        )
        .await;
        let path = format!("{BLOCKS}/10-0-0-0-28");
        let status_path = format!("{path}/status");
        expect(
            &mut h,
            Method::GET,
            &path,
            (200, block_json("5", json!([alloc(2, "h1", "u1")]))),
        )
        .await;
        let (_, body) = expect(&mut h, Method::PUT, &status_path, status(409, "Conflict")).await;
        assert_eq!(body["metadata"]["resourceVersion"], "5");
        assert_eq!(body["status"].get("allocations"), None, "{body}");
        assert_eq!(body["status"]["released"][0]["ordinal"], 2);
        // The agent allocated ordinal 3 meanwhile: re-read, re-apply, keep its allocation.
        expect(
            &mut h,
            Method::GET,
            &path,
            (
                200,
                block_json("6", json!([alloc(2, "h1", "u1"), alloc(3, "h2", "u2")])),
            ),
        )
        .await;
        let (_, body) = expect(
            &mut h,
            Method::PUT,
            &status_path,
            (200, block_json("7", json!([alloc(3, "h2", "u2")]))),
        )
        .await;
        assert_eq!(body["metadata"]["resourceVersion"], "6");
        assert_eq!(body["status"]["allocations"], json!([alloc(3, "h2", "u2")]));
        assert_eq!(body["status"]["released"][0]["ordinal"], 2);
    });
    let out = write::release(
        &client,
        "10-0-0-0-28",
        2,
        "h1",
        Some(&pod_ref("u1")),
        Timestamp::now(),
    )
    .await
    .unwrap();
    assert_eq!(out, Outcome::Done);
    server.await.unwrap();
}

#[tokio::test]
async fn gc_release_never_touches_a_live_pod_or_a_reassigned_address() {
    let (client, mut h) = mocked();
    let server = tokio::spawn(async move {
        // The pod exists with the same uid: nothing more is requested.
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod-u1", "namespace": "default", "uid": "u1"}});
        expect(
            &mut h,
            Method::GET,
            "/api/v1/namespaces/default/pods/pod-u1",
            (200, pod),
        )
        .await;
        // Second call: the pod is gone, but the ordinal now belongs to someone else.
        expect(
            &mut h,
            Method::GET,
            "/api/v1/namespaces/default/pods/pod-u1",
            status(404, "NotFound"),
        )
        .await;
        expect(
            &mut h,
            Method::GET,
            &format!("{BLOCKS}/10-0-0-0-28"),
            (200, block_json("9", json!([alloc(2, "h9", "u9")]))),
        )
        .await;
        // Nothing else: no write.
        assert!(h.next_request().await.is_none(), "no write expected");
    });
    let out = write::release(
        &client,
        "10-0-0-0-28",
        2,
        "h1",
        Some(&pod_ref("u1")),
        Timestamp::now(),
    )
    .await
    .unwrap();
    assert!(matches!(out, Outcome::Skipped(_)), "{out:?}");
    let out = write::release(
        &client,
        "10-0-0-0-28",
        2,
        "h1",
        Some(&pod_ref("u1")),
        Timestamp::now(),
    )
    .await
    .unwrap();
    assert_eq!(out, Outcome::AlreadyDone);
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn pool_status_and_finalizer_retry_on_conflict() {
    let (client, mut h) = mocked();
    let api: Api<IPPool> = Api::all(client);
    let pool = |rv: &str, fin: Value| {
        json!({"apiVersion": "tabby.dev/v1alpha1", "kind": "IPPool",
               "metadata": {"name": "p", "resourceVersion": rv, "finalizers": fin},
               "spec": {"cidr": "10.0.0.0/24"}})
    };
    let server = tokio::spawn(async move {
        let path = "/apis/tabby.dev/v1alpha1/ippools/p";
        expect(&mut h, Method::GET, path, (200, pool("1", json!([])))).await;
        let (_, body) = expect(
            &mut h,
            Method::PUT,
            &format!("{path}/status"),
            status(409, "Conflict"),
        )
        .await;
        assert_eq!(body["metadata"]["resourceVersion"], "1");
        expect(&mut h, Method::GET, path, (200, pool("2", json!([])))).await;
        let (_, body) = expect(
            &mut h,
            Method::PUT,
            &format!("{path}/status"),
            (200, pool("3", json!([]))),
        )
        .await;
        assert_eq!(body["metadata"]["resourceVersion"], "2");
        assert_eq!(body["status"]["blocksAssigned"], 4);
        // Finalizer: added with replace on the read version, retried on 409.
        expect(&mut h, Method::GET, path, (200, pool("3", json!([])))).await;
        expect(&mut h, Method::PUT, path, status(409, "Conflict")).await;
        expect(
            &mut h,
            Method::GET,
            path,
            (200, pool("4", json!(["other"]))),
        )
        .await;
        let (_, body) = expect(
            &mut h,
            Method::PUT,
            path,
            (
                200,
                pool("5", json!(["other", "tabby.dev/ipam-controller"])),
            ),
        )
        .await;
        assert_eq!(body["metadata"]["resourceVersion"], "4");
        assert_eq!(
            body["metadata"]["finalizers"],
            json!(["other", "tabby.dev/ipam-controller"])
        );
    });
    let st = IPPoolStatus {
        blocks_assigned: 4,
        ..IPPoolStatus::default()
    };
    assert_eq!(
        write::pool_status(&api, "p", &st).await.unwrap(),
        Outcome::Done
    );
    assert_eq!(
        write::pool_finalizer(&api, "p", true).await.unwrap(),
        Outcome::Done
    );
    server.await.unwrap();
}

#[tokio::test]
async fn persistent_conflicts_give_up_after_max_attempts() {
    let (client, mut h) = mocked();
    let api: Api<IPPool> = Api::all(client);
    let server = tokio::spawn(async move {
        let path = "/apis/tabby.dev/v1alpha1/ippools/p";
        let pool = json!({"apiVersion": "tabby.dev/v1alpha1", "kind": "IPPool",
               "metadata": {"name": "p", "resourceVersion": "1"}, "spec": {"cidr": "10.0.0.0/24"}});
        for _ in 0..write::MAX_ATTEMPTS {
            expect(&mut h, Method::GET, path, (200, pool.clone())).await;
            expect(
                &mut h,
                Method::PUT,
                &format!("{path}/status"),
                status(409, "Conflict"),
            )
            .await;
        }
    });
    let st = IPPoolStatus {
        blocks_assigned: 1,
        ..IPPoolStatus::default()
    };
    let err = write::pool_status(&api, "p", &st).await.unwrap_err();
    assert!(matches!(err, write::WriteError::Conflicts { .. }), "{err}");
    assert!(err.to_string().contains("IPPool p"), "{err}");
    server.await.unwrap();
}
