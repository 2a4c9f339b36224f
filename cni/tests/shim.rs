//! The `tabby-cni` binary on its own and against a server with a scripted handler: exact exit
//! codes and error objects for bad invocations, VERSION, an absent agent, chaining and
//! version conversion through the socket. No root needed.

mod common;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{config, shim};
use serde_json::{Value, json};
use tabby_cni::server::{CniServer, Handler, check_peer};
use tabby_cni::spec::{Attachment, CniError, CniResult, ErrorCode, Request, Version};

const ADD_ENV: [(&str, &str); 6] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/run/netns/nowhere"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
    ("CNI_PATH", "/usr/lib/cni"),
];

fn env_without(key: &str) -> Vec<(&'static str, &'static str)> {
    ADD_ENV.iter().copied().filter(|(k, _)| *k != key).collect()
}

fn env_with(key: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut v = env_without(key);
    v.push((key, value));
    v
}

#[test]
fn version_is_answered_locally() {
    let dir = tempfile::tempdir().unwrap();
    let r = shim(
        &dir.path().join("absent.sock"),
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert_eq!(r.code, 0, "{}", r.raw);
    assert_eq!(
        r.stdout,
        Some(
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        )
    );
}

/// (environment, stdin, expected code, message fragment, why).
type Case = (
    Vec<(&'static str, &'static str)>,
    String,
    u32,
    &'static str,
    &'static str,
);

#[test]
fn bad_invocations_get_exact_error_objects() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("absent.sock");
    let good = config("1.0.0", json!({}));
    // (env, stdin, code, message fragment, why) — none of these reach the agent.
    let cases: Vec<Case> = vec![
        (
            env_without("CNI_COMMAND"),
            good.clone(),
            4,
            "CNI_COMMAND",
            "missing command",
        ),
        (
            env_with("CNI_COMMAND", "FROB"),
            good.clone(),
            4,
            "FROB",
            "unknown command",
        ),
        (
            env_without("CNI_IFNAME"),
            good.clone(),
            4,
            "CNI_IFNAME",
            "missing ifname",
        ),
        (
            env_without("CNI_NETNS"),
            good.clone(),
            4,
            "CNI_NETNS",
            "ADD without netns",
        ),
        (
            env_with("CNI_CONTAINERID", "../x"),
            good.clone(),
            4,
            "CNI_CONTAINERID",
            "bad container id",
        ),
        (
            env_with("CNI_ARGS", "oops"),
            good.clone(),
            4,
            "CNI_ARGS",
            "bad CNI_ARGS",
        ),
        (
            ADD_ENV.to_vec(),
            "{\"cniVersion\": ".into(),
            6,
            "not valid JSON",
            "malformed config",
        ),
        (
            ADD_ENV.to_vec(),
            config("9.9.9", json!({})),
            1,
            "9.9.9",
            "unsupported version",
        ),
        (
            ADD_ENV.to_vec(),
            config("1.0.0", json!({"type": "ptp"})),
            7,
            "ptp",
            "wrong type",
        ),
        (
            ADD_ENV.to_vec(),
            config("1.0.0", json!({"name": ""})),
            7,
            "name",
            "empty name",
        ),
        (
            ADD_ENV.to_vec(),
            config(
                "1.0.0",
                json!({"ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}}),
            ),
            2,
            "ipam",
            "ipam unsupported",
        ),
        (
            env_with("CNI_COMMAND", "CHECK"),
            config("0.3.1", json!({})),
            1,
            "CHECK",
            "CHECK in 0.3.1",
        ),
        (
            env_with("CNI_COMMAND", "CHECK"),
            config("1.0.0", json!({})),
            7,
            "prevResult",
            "CHECK without prevResult",
        ),
    ];
    for (env, stdin, code, frag, why) in cases {
        let r = shim(&sock, &env, &stdin);
        assert_eq!(r.code, 1, "{why}: exit code; {}", r.raw);
        let out = r.stdout.unwrap_or_else(|| panic!("{why}: no error object"));
        assert_eq!(out["code"], json!(code), "{why}: {out}");
        assert!(
            out["msg"].as_str().unwrap().contains(frag),
            "{why}: `{}` lacks `{frag}`",
            out["msg"]
        );
        // The error is printed in the caller's version when it could be read.
        let v: Value = serde_json::from_str(&stdin).unwrap_or(Value::Null);
        let expect_version = v["cniVersion"]
            .as_str()
            .filter(|s| Version::parse(s).is_some())
            .unwrap_or("1.1.0");
        assert_eq!(out["cniVersion"], json!(expect_version), "{why}");
    }
}

#[test]
fn absent_agent_means_try_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("absent.sock");
    let r = shim(&sock, &ADD_ENV, &config("1.0.0", json!({})));
    assert_eq!(r.code, 1);
    let out = r.stdout.unwrap();
    assert_eq!(out["code"], 11, "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("not reachable"),
        "{out}"
    );
    assert!(
        out["msg"].as_str().unwrap().contains("absent.sock"),
        "{out}"
    );
    // STATUS answers "plugin not available" instead (SPEC §2 STATUS).
    let r = shim(
        &sock,
        &[("CNI_COMMAND", "STATUS")],
        &config("1.1.0", json!({})),
    );
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout.unwrap()["code"], 50);
    // The socket named in the configuration wins over the default.
    let other = dir.path().join("named.sock");
    let r = shim(
        &sock,
        &ADD_ENV,
        &config("1.0.0", json!({"agentSocket": other.to_str().unwrap()})),
    );
    assert!(
        r.stdout.unwrap()["msg"]
            .as_str()
            .unwrap()
            .contains("named.sock")
    );
}

/// A handler answering from a script, counting calls.
#[derive(Default)]
struct Scripted {
    calls: AtomicUsize,
}

fn our_result() -> CniResult {
    CniResult::from_json(&json!({
        "interfaces": [{"name": "tab0123456789a", "mac": "ee:ee:ee:ee:ee:ee"},
                       {"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1500, "sandbox": "/run/netns/nowhere"}],
        "ips": [{"address": "10.77.0.1/32", "interface": 1}, {"address": "fd77::1/128", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    }))
    .unwrap()
}

impl Handler for Scripted {
    async fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match req.container_id() {
            "full" => Err(CniError::new(
                ErrorCode::TRY_AGAIN_LATER,
                "the node's blocks are full; no new block within 10s",
            )),
            _ => Ok(our_result()),
        }
    }
    async fn del(&self, _req: &Request) -> Result<(), CniError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn check(&self, req: &Request) -> Result<(), CniError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let prev = req.config.prev_result.as_ref().unwrap();
        let want: HashSet<IpAddr> = our_result().ips.iter().map(|i| i.address.addr()).collect();
        let got: HashSet<IpAddr> = prev.ips.iter().map(|i| i.address.addr()).collect();
        if want.is_subset(&got) {
            Ok(())
        } else {
            Err(CniError::new(ErrorCode::CHECK_FAILED, "addresses differ"))
        }
    }
    async fn status(&self, _req: &Request) -> Result<(), CniError> {
        Err(CniError::new(
            ErrorCode::PLUGIN_NOT_AVAILABLE,
            "no IPAM block yet",
        ))
    }
    async fn gc(&self, _req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        if valid.len() == 1 && valid[0].container_id == "keep" {
            Ok(())
        } else {
            Err(CniError::new(
                ErrorCode::AGENT_FAILURE,
                "unexpected GC list",
            ))
        }
    }
}

struct Server {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    handler: Arc<Scripted>,
}

impl Server {
    fn sock(&self) -> std::path::PathBuf {
        self.dir.path().join("run/cni.sock")
    }
}

fn scripted_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = CniServer::bind(&dir.path().join("run/cni.sock")).unwrap();
    let handler = Arc::new(Scripted::default());
    let h = handler.clone();
    rt.spawn(async move { server.serve(h, std::future::pending()).await });
    Server { rt, dir, handler }
}

fn running_as_root() -> bool {
    if tabby_netlab::is_root() {
        true
    } else {
        eprintln!("SKIP: the server accepts root callers only; run as root");
        false
    }
}

#[test]
fn answers_come_back_in_the_requested_version() {
    if !running_as_root() {
        return;
    }
    let s = scripted_server();
    for (version, expect) in [
        (
            "0.4.0",
            json!({"cniVersion": "0.4.0",
                "interfaces": [{"name": "tab0123456789a", "mac": "ee:ee:ee:ee:ee:ee"},
                               {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/nowhere"}],
                "ips": [{"version": "4", "address": "10.77.0.1/32", "interface": 1},
                        {"version": "6", "address": "fd77::1/128", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]}),
        ),
        (
            "1.0.0",
            json!({"cniVersion": "1.0.0",
                "interfaces": [{"name": "tab0123456789a", "mac": "ee:ee:ee:ee:ee:ee"},
                               {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/nowhere"}],
                "ips": [{"address": "10.77.0.1/32", "interface": 1},
                        {"address": "fd77::1/128", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]}),
        ),
        (
            "1.1.0",
            json!({"cniVersion": "1.1.0",
                "interfaces": [{"name": "tab0123456789a", "mac": "ee:ee:ee:ee:ee:ee"},
                               {"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1500, "sandbox": "/run/netns/nowhere"}],
                "ips": [{"address": "10.77.0.1/32", "interface": 1},
                        {"address": "fd77::1/128", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]}),
        ),
    ] {
        let r = shim(&s.sock(), &ADD_ENV, &config(version, json!({})));
        assert_eq!(r.code, 0, "{version}: {}", r.raw);
        assert_eq!(r.stdout, Some(expect), "{version}");
    }
}

#[test]
fn chained_prev_result_is_kept_in_front() {
    if !running_as_root() {
        return;
    }
    let s = scripted_server();
    // Tabby after another plugin (here a loopback-like result): the previous interfaces stay
    // first and Tabby's indices shift.
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "sandbox": "/run/netns/nowhere"}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}],
        "dns": {"nameservers": ["10.96.0.10"]}});
    let r = shim(
        &s.sock(),
        &ADD_ENV,
        &config("1.0.0", json!({"prevResult": prev})),
    );
    assert_eq!(r.code, 0, "{}", r.raw);
    let out = r.stdout.unwrap();
    assert_eq!(out["interfaces"][0]["name"], "lo");
    assert_eq!(out["interfaces"][2]["name"], "eth0");
    assert_eq!(
        out["ips"],
        json!([{"address": "127.0.0.1/8", "interface": 0},
               {"address": "10.77.0.1/32", "interface": 2},
               {"address": "fd77::1/128", "interface": 2}])
    );
    assert_eq!(out["dns"], json!({"nameservers": ["10.96.0.10"]}));

    // CHECK with the chain's final result (what portmap passes through) succeeds; with a
    // result missing our address it fails with Tabby's code.
    let check = |prev: Value| {
        shim(
            &s.sock(),
            &[
                ("CNI_COMMAND", "CHECK"),
                ("CNI_CONTAINERID", "c0ffee"),
                ("CNI_NETNS", "/run/netns/nowhere"),
                ("CNI_IFNAME", "eth0"),
            ],
            &config("1.0.0", json!({"prevResult": prev})),
        )
    };
    let r = check(out.clone());
    assert_eq!((r.code, r.stdout), (0, None));
    let r = check(json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.9/32"}]}));
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout.unwrap()["code"], 101);
}

#[test]
fn agent_errors_status_gc_and_del_pass_through() {
    if !running_as_root() {
        return;
    }
    let s = scripted_server();
    let r = shim(
        &s.sock(),
        &env_with("CNI_CONTAINERID", "full"),
        &config("1.0.0", json!({})),
    );
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        Some(json!({"cniVersion": "1.0.0", "code": 11,
            "msg": "the node's blocks are full; no new block within 10s"}))
    );
    let r = shim(
        &s.sock(),
        &[("CNI_COMMAND", "STATUS")],
        &config("1.1.0", json!({})),
    );
    assert_eq!(
        (r.code, r.stdout),
        (
            1,
            Some(json!({"cniVersion": "1.1.0", "code": 50, "msg": "no IPAM block yet"}))
        )
    );
    let r = shim(
        &s.sock(),
        &[("CNI_COMMAND", "GC")],
        &config(
            "1.1.0",
            json!({"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}),
        ),
    );
    assert_eq!((r.code, r.stdout), (0, None));
    // DEL without a netns (the pod's namespace is gone) is valid and silent.
    let r = shim(
        &s.sock(),
        &env_without("CNI_NETNS")
            .iter()
            .map(|(k, v)| (*k, if *k == "CNI_COMMAND" { "DEL" } else { *v }))
            .collect::<Vec<_>>(),
        &config("1.0.0", json!({})),
    );
    assert_eq!((r.code, r.stdout), (0, None));
    // ADD and DEL reached the handler (STATUS and GC answered from their own methods).
    assert_eq!(s.handler.calls.load(Ordering::SeqCst), 2);
    drop(s.rt);
}

#[test]
fn server_accepts_many_clients_at_once() {
    if !running_as_root() {
        return;
    }
    let s = scripted_server();
    let sock = s.sock();
    let before = s.handler.calls.load(Ordering::SeqCst);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|_| scope.spawn(|| shim(&sock, &ADD_ENV, &config("1.0.0", json!({})))))
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().code, 0);
        }
    });
    assert_eq!(s.handler.calls.load(Ordering::SeqCst) - before, 32);
}

#[test]
fn credential_rule() {
    assert!(check_peer(0, Some(1)).is_ok());
    for uid in [1, 1000, 65534] {
        let e = check_peer(uid, Some(42)).unwrap_err();
        assert_eq!(e.code, ErrorCode::PERMISSION_DENIED);
        assert!(e.msg.contains(&format!("uid {uid} (pid 42)")), "{}", e.msg);
    }
}

#[test]
fn socket_and_directory_modes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = run.join("cni.sock");
    // A stale socket from a previous agent is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let server = CniServer::bind(&sock).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&run), 0o700, "directory tightened");
    assert_eq!(mode(&sock), 0o600);
    drop(server);
    // Something that is not a socket is never removed.
    std::fs::remove_file(&sock).unwrap();
    std::fs::write(&sock, b"precious").unwrap();
    let e = CniServer::bind(&sock).unwrap_err();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&sock).unwrap(), b"precious");
}
