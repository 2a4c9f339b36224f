//! RBAC audit: each component's rendered roles allow exactly the API calls it declares next
//! to its client code — nothing missing, nothing extra — for every values matrix entry.

use tabby_agent::daemon::API_CALLS as AGENT_API_CALLS;
use tabby_chart_tests::{audit, ci_values, granted, helm, helm_template, parse_documents};
use tabby_ipam_controller::controller::API_CALLS as CONTROLLER_API_CALLS;

const NS: &str = "tabby-system";

#[test]
fn each_component_is_allowed_exactly_its_calls() {
    let Some(helm) = helm() else {
        eprintln!("skipping: .tools/bin/helm missing; run scripts/fetch-tools.sh");
        return;
    };
    for values in ci_values() {
        let docs = parse_documents(&helm_template(&helm, NS, &[&values], &[]).expect("render"))
            .expect("parse");
        for (sa, calls) in [
            ("tabby-agent", AGENT_API_CALLS),
            ("tabby-ipam-controller", CONTROLLER_API_CALLS),
        ] {
            let g = granted(&docs, NS, sa)
                .unwrap_or_else(|e| panic!("{}: {sa}: {e}", values.display()));
            let a = audit(calls, &g);
            assert!(
                a.is_exact(),
                "{} — ServiceAccount {sa}:\n  missing: {:#?}\n  extra: {:#?}",
                values.display(),
                a.missing,
                a.extra
            );
        }
    }
}

#[test]
fn components_do_not_share_service_accounts() {
    let Some(helm) = helm() else {
        eprintln!("skipping: .tools/bin/helm missing; run scripts/fetch-tools.sh");
        return;
    };
    let docs = parse_documents(&helm_template(&helm, NS, &[], &[]).expect("render")).unwrap();
    let sa_of = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .and_then(|d| d["spec"]["template"]["spec"]["serviceAccountName"].as_str())
            .map(str::to_string)
    };
    assert_eq!(sa_of("DaemonSet").as_deref(), Some("tabby-agent"));
    assert_eq!(
        sa_of("Deployment").as_deref(),
        Some("tabby-ipam-controller")
    );
}
