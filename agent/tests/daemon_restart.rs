//! `tabby-agent` SIGKILLed and restarted: its kernel routes stay throughout and are adopted
//! (never absent while polled every 10 ms, never duplicated), the peer keeps its route to the
//! restarting node's block (graceful restart helper), the new run announces the restart, and a
//! stale route of ours that nothing wants any more is swept once the peer's table is back.
//! Then SIGTERM: exit 0, routes kept. Needs root; skips otherwise.

mod daemon_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use daemon_common::*;

/// Polls `ip route show proto 84` in namespace `ns` every 10 ms until `stop`: each of `wanted`
/// (line prefixes) must be there exactly once in every poll. Ok: how many polls.
fn poll_routes(
    stop: Arc<AtomicBool>,
    ns: String,
    wanted: Vec<String>,
) -> std::thread::JoinHandle<Result<u32, String>> {
    std::thread::spawn(move || {
        let mut polls = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let out = std::process::Command::new("ip")
                .args(["-n", &ns, "route", "show", "proto", "84"])
                .output()
                .expect("ip route");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            for w in &wanted {
                let n = text.lines().filter(|l| l.starts_with(w.as_str())).count();
                if n != 1 {
                    return Err(format!("poll {polls}: {n} routes {w:?} in\n{text}"));
                }
            }
            polls += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(polls)
    })
}

/// Pool, two Nodes with a block each, both agents (stale routes kept up to 60 s), and waits
/// for the mesh routes on both kernels.
async fn two_node_mesh(lab: &mut Lab, client: &kube::Client) {
    create_pool(client).await;
    for i in 1..=2 {
        create_node(client, lab, i).await;
        create_block(client, lab, i).await;
    }
    for i in 1..=2 {
        lab.start_agent(i, &["--stale-routes-time", "60"]);
    }
    assert!(
        wait_for(Duration::from_secs(30), || mesh_routes_ok(lab, 1)
            && mesh_routes_ok(lab, 2))
        .await
        .is_some(),
        "mesh not up: {:?} / {:?}",
        tabby_routes(&lab.node(1).ns),
        tabby_routes(&lab.node(2).ns)
    );
}

/// A route of ours that no BGP peer or block wants: left by an earlier run, it must survive
/// the restart's adoption and go at the sweep.
const STALE: &str = "10.250.0.0/24";

#[test]
fn sigkill_and_restart_keep_routes_and_sweep_only_stale_ones() {
    if skip_unless_root_and(&["ip", "ss"]) {
        return;
    }
    let mut lab = Lab::new(2, 102);
    lab.block_on(async |lab: &mut Lab, client, _sim| {
        two_node_mesh(lab, &client).await;

        lab.kill_agent(1);
        let peer2 = lab.node(2).address.clone();
        lab.node(1)
            .ns
            .ip(&[
                "route", "add", STALE, "via", &peer2, "proto", "84", "metric", "50",
            ])
            .expect("add the stale route");

        // Poll both kernels while node-1's agent is down and comes back.
        let stop = Arc::new(AtomicBool::new(false));
        let watch = |ns: String, wanted: Vec<String>| poll_routes(stop.clone(), ns, wanted);
        let on1 = watch(
            lab.node(1).ns.name().to_string(),
            vec![
                format!("blackhole {}", block_of(1)),
                format!("{} via {} ", block_of(2), peer2),
            ],
        );
        let on2 = watch(
            lab.node(2).ns.name().to_string(),
            vec![format!("{} via {} ", block_of(1), lab.node(1).address)],
        );

        // Down for a moment, then back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let restarted = Instant::now();
        lab.start_agent(1, &["--stale-routes-time", "60"]);
        let swept = wait_for(Duration::from_secs(30), || {
            !tabby_routes(&lab.node(1).ns)
                .iter()
                .any(|r| r.starts_with(STALE))
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        let polls1 = on1.join().unwrap().unwrap_or_else(|e| panic!("node-1: {e}"));
        let polls2 = on2.join().unwrap().unwrap_or_else(|e| panic!("node-2: {e}"));
        let swept = swept.unwrap_or_else(|| {
            panic!(
                "stale route {STALE} not swept within 30 s: {:?}",
                tabby_routes(&lab.node(1).ns)
            )
        });
        eprintln!(
            "restart: routes present in all {polls1} + {polls2} polls; stale route swept {:.2} s after the restart",
            swept.as_secs_f64().max(restarted.elapsed().as_secs_f64().min(swept.as_secs_f64()))
        );
        let log = lab.agent_log(1);
        if std::env::var_os("TABBY_TEST_SHOW_LOGS").is_some() {
            eprintln!("{log}");
        }
        assert!(
            log.contains("CNI service serving"),
            "the CNI service did not start:\n{log}"
        );
        assert!(
            log.contains("announcing graceful restart"),
            "the second run did not start as a restart:\n{log}"
        );
        assert!(mesh_routes_ok(lab, 1) && mesh_routes_ok(lab, 2));
        assert_eq!(tabby_routes(&lab.node(1).ns).len(), 2);

        // SIGTERM: graceful stop, exit 0, routes kept.
        let mut agent = lab.nodes[0].agent.take().expect("agent 1");
        agent.stop(Duration::from_secs(10));
        assert!(
            lab.agent_log(1).contains("tabby-agent stopped"),
            "no clean stop:\n{}",
            lab.agent_log(1)
        );
        assert!(mesh_routes_ok(lab, 1), "routes flushed on SIGTERM");
        assert!(
            !lab.node(1).state_dir.join("cni.sock").exists(),
            "the CNI socket outlived the agent"
        );
    });
}

/// A speaker-wide setting changes (BGPConfiguration `gracefulRestartTime`, same AS): both
/// agents restart their speakers in process, gracefully — every kernel route stays in every
/// 10 ms poll on both nodes, each agent says it retained its routes and restarted as a
/// graceful restart, the sessions come back and nothing is left to sweep. A route of ours that
/// nothing wants any more (left from before) is swept once the peers' tables are back.
#[test]
fn a_speaker_wide_change_restarts_the_speaker_without_a_gap() {
    if skip_unless_root_and(&["ip", "ss"]) {
        return;
    }
    let mut lab = Lab::new(2, 103);
    lab.block_on(async |lab: &mut Lab, client, _sim| {
        two_node_mesh(lab, &client).await;
        let (peer1, peer2) = (lab.node(1).address.clone(), lab.node(2).address.clone());
        lab.node(1)
            .ns
            .ip(&["route", "add", STALE, "via", &peer2, "proto", "84", "metric", "50"])
            .expect("add the stale route");
        let stop = Arc::new(AtomicBool::new(false));
        let on1 = poll_routes(
            stop.clone(),
            lab.node(1).ns.name().to_string(),
            vec![
                format!("blackhole {}", block_of(1)),
                format!("{} via {} ", block_of(2), peer2),
            ],
        );
        let on2 = poll_routes(
            stop.clone(),
            lab.node(2).ns.name().to_string(),
            vec![
                format!("blackhole {}", block_of(2)),
                format!("{} via {} ", block_of(1), peer1),
            ],
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let changed = Instant::now();
        let cfg: tabby_api::v1alpha1::BGPConfiguration = serde_json::from_value(serde_json::json!({
            "apiVersion": "tabby.dev/v1alpha1",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            // The AS the agents run without a BGPConfiguration: only the restart time changes.
            "spec": {"asNumber": 64512, "gracefulRestartTime": 90},
        }))
        .unwrap();
        kube::Api::<tabby_api::v1alpha1::BGPConfiguration>::all(client.clone())
            .create(&kube::api::PostParams::default(), &cfg)
            .await
            .expect("create BGPConfiguration");
        let restarted = |lab: &Lab, i| lab.agent_log(i).contains("retained across the speaker restart");
        let swept = wait_for(Duration::from_secs(40), || {
            restarted(lab, 1)
                && restarted(lab, 2)
                && !tabby_routes(&lab.node(1).ns).iter().any(|r| r.starts_with(STALE))
                && mesh_routes_ok(lab, 1)
                && mesh_routes_ok(lab, 2)
        })
        .await;
        // A little longer: nothing may go missing after the sweep either.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let polls1 = on1.join().unwrap().unwrap_or_else(|e| panic!("node-1: {e}\n{}", lab.agent_log(1)));
        let polls2 = on2.join().unwrap().unwrap_or_else(|e| panic!("node-2: {e}\n{}", lab.agent_log(2)));
        let swept = swept.unwrap_or_else(|| {
            panic!(
                "no graceful speaker restart and sweep within 40 s: {:?}\n{}",
                tabby_routes(&lab.node(1).ns),
                lab.agent_log(1)
            )
        });
        eprintln!(
            "speaker-wide change: routes present in all {polls1} + {polls2} polls; restarted and swept {:.2} s after the change",
            swept.as_secs_f64().min(changed.elapsed().as_secs_f64())
        );
        for i in 1..=2 {
            let log = lab.agent_log(i);
            if std::env::var_os("TABBY_TEST_SHOW_LOGS").is_some() {
                eprintln!("---- node-{i} ----\n{log}");
            }
            assert!(log.contains("graceful=true"), "node-{i}:\n{log}");
            assert!(
                log.contains("BGP speaker started") && log.contains("restarting=true"),
                "node-{i} did not restart its speaker as a graceful restart:\n{log}"
            );
        }
        assert_eq!(tabby_routes(&lab.node(1).ns).len(), 2);
    });
}
