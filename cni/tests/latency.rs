//! ADD/DEL latency of `tabby-cni` (shim + server + datapath, with the in-test allocator) next
//! to the reference `ptp` + `host-local` plugins, same node namespace, same run. A measurement,
//! not a check: `#[ignore]`d; run with
//! `cargo test -p tabby-cni --release --test latency -- --ignored --nocapture`.
//! (`tabby-bench cni` is the product benchmark; this is the crate-level probe.)

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Agent, config, env_pairs, pod_env, shim, shim_with};
use serde_json::json;
use tabby_netlab::{Netns, skip_unless_root_and};

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

#[test]
#[ignore = "measurement; run explicitly with --ignored --nocapture"]
fn add_del_latency_against_ptp_host_local() {
    if skip_unless_root_and(&[
        "ip",
        "nsenter",
        "/usr/lib/cni/ptp",
        "/usr/lib/cni/host-local",
    ]) {
        return;
    }
    let n: usize = std::env::var("TABBY_LATENCY_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let node = Netns::new().unwrap();
    node.add_addr("lo", "192.0.2.10/32").unwrap();
    let agent = Agent::start(&node, false, 250);
    let pods: Vec<Netns> = (0..n).map(|_| Netns::new().unwrap()).collect();
    let conf = config("1.0.0", json!({}));

    let (mut add_t, mut del_t) = (Vec::new(), Vec::new());
    for (i, p) in pods.iter().enumerate() {
        let env = pod_env(
            "ADD",
            &format!("t{i}"),
            &p.path(),
            "default",
            &format!("p{i}"),
        );
        let t = Instant::now();
        let r = shim(&agent.socket, &env_pairs(&env), &conf);
        add_t.push(t.elapsed());
        assert_eq!(r.code, 0, "{}", r.raw);
    }
    for (i, p) in pods.iter().enumerate() {
        let env = pod_env(
            "DEL",
            &format!("t{i}"),
            &p.path(),
            "default",
            &format!("p{i}"),
        );
        let t = Instant::now();
        let r = shim(&agent.socket, &env_pairs(&env), &conf);
        del_t.push(t.elapsed());
        assert_eq!(r.code, 0, "{}", r.raw);
    }

    // Reference: ptp + host-local, executed inside the node namespace via nsenter (its own
    // cost is measured separately and reported, not subtracted).
    let data = tempfile::tempdir().unwrap();
    let ref_conf = json!({
        "cniVersion": "1.0.0", "name": "ref", "type": "ptp", "ipMasq": false,
        "ipam": {"type": "host-local", "subnet": "10.88.0.0/16",
                 "dataDir": data.path().to_str().unwrap()}
    })
    .to_string();
    let netns_arg = format!("--net={}", node.path());
    let ptp = || {
        let mut c = Command::new("nsenter");
        c.args([netns_arg.as_str(), "/usr/lib/cni/ptp"]);
        c
    };
    let (mut radd, mut rdel) = (Vec::new(), Vec::new());
    for (i, p) in pods.iter().enumerate() {
        let mut env = pod_env(
            "ADD",
            &format!("r{i}"),
            &p.path(),
            "default",
            &format!("p{i}"),
        );
        env.insert("CNI_IFNAME", "eth1".into());
        let t = Instant::now();
        let r = shim_with(ptp(), &agent.socket, &env_pairs(&env), &ref_conf);
        radd.push(t.elapsed());
        assert_eq!(r.code, 0, "{}", r.raw);
    }
    for (i, p) in pods.iter().enumerate() {
        let mut env = pod_env(
            "DEL",
            &format!("r{i}"),
            &p.path(),
            "default",
            &format!("p{i}"),
        );
        env.insert("CNI_IFNAME", "eth1".into());
        let t = Instant::now();
        let r = shim_with(ptp(), &agent.socket, &env_pairs(&env), &ref_conf);
        rdel.push(t.elapsed());
        assert_eq!(r.code, 0, "{}", r.raw);
    }
    // 50-way concurrent ADD then DEL through Tabby (the reference plugins serialise on
    // host-local's lock, so they are left to `tabby-bench cni`).
    let c = n.min(50);
    let run_all = |cmd: &'static str| -> Vec<Duration> {
        std::thread::scope(|s| {
            let hs: Vec<_> = pods[..c]
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let (agent, conf) = (&agent, &conf);
                    s.spawn(move || {
                        let env = pod_env(
                            cmd,
                            &format!("k{i}"),
                            &p.path(),
                            "default",
                            &format!("k{i}"),
                        );
                        let t = Instant::now();
                        let r = shim(&agent.socket, &env_pairs(&env), conf);
                        assert_eq!(r.code, 0, "{}", r.raw);
                        t.elapsed()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let wall = Instant::now();
    let mut cadd = run_all("ADD");
    let add_wall = wall.elapsed();
    let wall = Instant::now();
    let mut cdel = run_all("DEL");
    let del_wall = wall.elapsed();
    let mut nsenter_t: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let s = Command::new("nsenter")
                .args([netns_arg.as_str(), "/bin/true"])
                .status()
                .unwrap();
            assert!(s.success());
            t.elapsed()
        })
        .collect();
    println!("pods: {n} sequential");
    println!(
        "tabby   ADD p50 {:.2} ms p99 {:.2} ms | DEL p50 {:.2} ms p99 {:.2} ms",
        pct(&mut add_t, 0.5),
        pct(&mut add_t, 0.99),
        pct(&mut del_t, 0.5),
        pct(&mut del_t, 0.99)
    );
    println!(
        "ptp+hl  ADD p50 {:.2} ms p99 {:.2} ms | DEL p50 {:.2} ms p99 {:.2} ms (nsenter alone p50 {:.2} ms)",
        pct(&mut radd, 0.5),
        pct(&mut radd, 0.99),
        pct(&mut rdel, 0.5),
        pct(&mut rdel, 0.99),
        pct(&mut nsenter_t, 0.5)
    );
    println!(
        "tabby {c}-way concurrent: ADD p50 {:.2} ms p99 {:.2} ms (all in {:.0} ms) | DEL p50 {:.2} ms p99 {:.2} ms (all in {:.0} ms)",
        pct(&mut cadd, 0.5),
        pct(&mut cadd, 0.99),
        add_wall.as_secs_f64() * 1000.0,
        pct(&mut cdel, 0.5),
        pct(&mut cdel, 0.99),
        del_wall.as_secs_f64() * 1000.0
    );
}
