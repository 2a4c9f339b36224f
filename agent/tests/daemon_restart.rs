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
        create_pool(&client).await;
        for i in 1..=2 {
            create_node(&client, lab, i).await;
            create_block(&client, lab, i).await;
        }
        for i in 1..=2 {
            lab.start_agent(i, &["--stale-routes-time", "60"]);
        }
        assert!(
            wait_for(Duration::from_secs(30), || mesh_routes_ok(lab, 1) && mesh_routes_ok(lab, 2))
                .await
                .is_some(),
            "mesh not up: {:?} / {:?}",
            tabby_routes(&lab.node(1).ns),
            tabby_routes(&lab.node(2).ns)
        );

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
        let watch = |ns_name: String, wanted: Vec<String>| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut polls = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let out = std::process::Command::new("ip")
                        .args(["-n", &ns_name, "route", "show", "proto", "84"])
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
        };
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
