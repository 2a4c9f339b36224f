//! The chart's custom resources (IPPools, BGPConfiguration, BGPPeers) are valid against the
//! CRDs' OpenAPI schemas and CEL rules: for every matrix entry, the chart's `crds/` are
//! applied to `tabby-kube-sim` and then every rendered custom resource is created there —
//! any 422 is a failure. A deliberately broken object is refused, so the check can fail.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::Value;
use tabby_chart_tests::{chart_dir, ci_values, helm, helm_template, parse_documents, yaml_files};
use tabby_kube_sim::{Config, KubeSim};

const NS: &str = "kube-system";

async fn sim_with_chart_crds() -> (KubeSim, Client, Vec<CustomResourceDefinition>) {
    let sim = KubeSim::start(Config::default())
        .await
        .expect("start kube-sim");
    let client = sim.client().await.expect("client");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crds = Vec::new();
    for f in yaml_files(&chart_dir().join("crds")) {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&f).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        api.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("kube-sim refused CRD {}: {e}", f.display()));
        crds.push(crd);
    }
    assert_eq!(crds.len(), 5, "charts/tabby/crds/ holds the five CRDs");
    (sim, client, crds)
}

fn resource_for(crds: &[CustomResourceDefinition], doc: &Value) -> ApiResource {
    let api_version = doc["apiVersion"].as_str().unwrap_or("");
    let kind = doc["kind"].as_str().unwrap_or("");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let crd = crds
        .iter()
        .find(|c| c.spec.group == group && c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD in charts/tabby/crds for {api_version} {kind}"));
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        &crd.spec.names.plural,
    )
}

async fn create(client: &Client, ar: &ApiResource, doc: &Value) -> Result<(), kube::Error> {
    let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("dynamic object");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    // Served shortly after the CRD is created: retry a 404 for a moment.
    let mut last = None;
    for _ in 0..50 {
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                last = Some(kube::Error::Api(s));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

#[tokio::test]
async fn every_rendered_custom_resource_is_accepted_by_the_crds() {
    let Some(helm) = helm() else {
        eprintln!("skipping: .tools/bin/helm missing; run scripts/fetch-tools.sh");
        return;
    };
    for values in ci_values() {
        let (sim, client, crds) = sim_with_chart_crds().await;
        let docs = parse_documents(&helm_template(&helm, NS, &[&values], &[]).expect("render"))
            .expect("parse");
        let ours: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                d["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("tabby.dev/"))
            })
            .collect();
        assert!(
            !ours.is_empty(),
            "{}: no custom resources",
            values.display()
        );
        for doc in &ours {
            let ar = resource_for(&crds, doc);
            create(&client, &ar, doc).await.unwrap_or_else(|e| {
                panic!(
                    "{}: {} {} refused: {e}",
                    values.display(),
                    doc["kind"],
                    doc["metadata"]["name"]
                )
            });
        }
        // What was created is what the API now lists (defaults applied, nothing pruned away).
        for doc in &ours {
            let ar = resource_for(&crds, doc);
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let name = doc["metadata"]["name"].as_str().unwrap();
            let stored = api.get(name).await.expect("stored");
            for (k, v) in doc["spec"].as_object().unwrap() {
                assert_eq!(
                    &stored.data["spec"][k],
                    v,
                    "{}: {} {name}: spec.{k} changed on the way in",
                    values.display(),
                    doc["kind"]
                );
            }
        }
        sim.shutdown().await;
    }
}

/// Every rendered object of a kind kube-sim serves (ServiceAccounts, ConfigMaps and our
/// custom resources; not workloads or RBAC, which it does not emulate) is accepted as rendered.
#[tokio::test]
async fn every_rendered_object_kube_sim_serves_is_accepted() {
    let Some(helm) = helm() else {
        eprintln!("skipping: .tools/bin/helm missing; run scripts/fetch-tools.sh");
        return;
    };
    let (sim, client, _crds) = sim_with_chart_crds().await;
    // Let the CRDs' endpoints appear before discovering them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let docs = parse_documents(&helm_template(&helm, NS, &[], &[]).expect("render")).unwrap();
    let mut applied = Vec::new();
    let mut not_served = std::collections::BTreeSet::new();
    for doc in &docs {
        let api_version = doc["apiVersion"].as_str().unwrap_or("");
        let kind = doc["kind"].as_str().unwrap_or("");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let Some((ar, caps)) = discovery.resolve_gvk(&GroupVersionKind::gvk(group, version, kind))
        else {
            not_served.insert(format!("{api_version} {kind}"));
            continue;
        };
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(client.clone(), NS, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("object");
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("{kind} {} refused: {e}", doc["metadata"]["name"]));
        applied.push(kind.to_string());
    }
    eprintln!("applied {applied:?}; kube-sim does not serve {not_served:?}");
    for want in ["ServiceAccount", "ConfigMap", "IPPool", "BGPConfiguration"] {
        assert!(applied.iter().any(|k| k == want), "{want} was not applied");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn an_object_the_crd_forbids_is_refused() {
    let Some(helm) = helm() else {
        eprintln!("skipping: .tools/bin/helm missing; run scripts/fetch-tools.sh");
        return;
    };
    let (sim, client, crds) = sim_with_chart_crds().await;
    let docs = parse_documents(&helm_template(&helm, NS, &[], &[]).expect("render")).unwrap();
    let pool = docs.iter().find(|d| d["kind"] == "IPPool").unwrap();
    let ar = resource_for(&crds, pool);
    // blockSize 33 passes the field's own range (20-128) but not the CEL rule for IPv4.
    let mut bad = pool.clone();
    bad["spec"]["blockSize"] = serde_json::json!(33);
    match create(&client, &ar, &bad).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(s.message.contains("blockSize"), "{}", s.message);
        }
        other => panic!("expected 422, got {other:?}"),
    }
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    sim.shutdown().await;
}
