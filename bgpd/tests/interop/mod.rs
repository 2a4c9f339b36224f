//! Shared pieces of the interoperability suite (`bgpd/tests/interop_*.rs`): the real
//! `tabby-bgpd` binary started inside a network namespace, its HTTP API read from inside that
//! namespace, config builders, and a two-namespace topology over one veth.
//!
//! Owns only what it starts: each [`Tabby`] is killed on drop (with its log printed when the
//! test is failing); namespaces are `tabby_netlab::Netns`, deleted on drop. Every wait is
//! bounded.

#![allow(dead_code)] // each interop_*.rs uses a different subset

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tabby_netlab::{Netns, Process, in_netns};

pub const BIN: &str = env!("CARGO_BIN_EXE_tabby-bgpd");

/// The HTTP API listens on the namespace's own loopback (each namespace has its own).
pub const HTTP: &str = "127.0.0.1:9179";

/// Addresses on the shared link: the reference daemon is `.1`/`::1`, we are `.2`/`::2`.
pub const THEM4: &str = "10.77.0.1";
pub const US4: &str = "10.77.0.2";
pub const THEM6: &str = "fd00:77::1";
pub const US6: &str = "fd00:77::2";

/// Two namespaces (`them`, `us`) joined by a veth named `eth0` on both sides, with IPv4 and
/// IPv6 addresses.
pub struct Link {
    pub them: Netns,
    pub us: Netns,
}

impl Link {
    pub fn new() -> Link {
        let them = Netns::new().expect("netns");
        let us = Netns::new().expect("netns");
        them.veth_to("eth0", &us, "eth0").expect("veth");
        them.add_addr("eth0", &format!("{THEM4}/24")).expect("addr");
        us.add_addr("eth0", &format!("{US4}/24")).expect("addr");
        them.add_addr("eth0", &format!("{THEM6}/64")).expect("addr");
        us.add_addr("eth0", &format!("{US6}/64")).expect("addr");
        Link { them, us }
    }

    /// Makes the link silent, or normal again: nftables in `them` drops every packet on
    /// `eth0` both ways, so our side sees neither a reset nor an ICMP error, only silence.
    pub fn blackhole(&self, on: bool) {
        let mut c = self.them.command("nft");
        if on {
            c.args(["add table inet tabby_blackhole ; \
                 add chain inet tabby_blackhole in { type filter hook input priority -300 ; } ; \
                 add chain inet tabby_blackhole out { type filter hook output priority -300 ; } ; \
                 add rule inet tabby_blackhole in iifname eth0 drop ; \
                 add rule inet tabby_blackhole out oifname eth0 drop"]);
        } else {
            c.args(["delete table inet tabby_blackhole"]);
        }
        tabby_netlab::run(&mut c).expect("nft");
    }
}

/// A plain GoBGP router in its own namespace with a veth to our namespace (`10.8<i>.0.1`, us
/// `10.8<i>.0.2`, our interface `src<i>`), peering with us (AS 65002) — a second source of
/// paths for tests that need several paths for one prefix from different neighbours.
pub struct GobgpSource {
    pub ns: Netns,
    pub gobgp: tabby_netlab::Gobgp,
    pub addr: String,
    pub our_addr: String,
    pub asn: u32,
}

impl GobgpSource {
    /// Source number `i` (1..=9) with AS `asn`, linked to `us`; started, not yet Established.
    pub fn start(us: &Netns, i: u8, asn: u32) -> GobgpSource {
        let (addr, our_addr) = (format!("10.8{i}.0.1"), format!("10.8{i}.0.2"));
        let ns = Netns::new().expect("netns");
        us.veth_to(&format!("src{i}"), &ns, "eth0").expect("veth");
        us.add_addr(&format!("src{i}"), &format!("{our_addr}/24"))
            .expect("addr");
        ns.add_addr("eth0", &format!("{addr}/24")).expect("addr");
        let gobgp = tabby_netlab::Gobgp::start(
            &ns,
            &format!(
                "[global.config]\n  as = {asn}\n  router-id = \"{addr}\"\n  port = 179\n\
                 [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{our_addr}\"\n    \
                 peer-as = 65002\n  [neighbors.timers.config]\n    connect-retry = 1\n    \
                 hold-time = 9\n    keepalive-interval = 3\n  [[neighbors.afi-safis]]\n    \
                 [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n"
            ),
        )
        .expect("gobgpd");
        GobgpSource {
            ns,
            gobgp,
            addr,
            our_addr,
            asn,
        }
    }

    /// Our `[[peers]]` table for it.
    pub fn peer(&self) -> String {
        peer(&self.addr, self.asn, "")
    }

    pub fn wait_established(&self, timeout: Duration) {
        self.gobgp
            .wait_established(&self.our_addr, timeout)
            .expect("GoBGP source Established");
    }

    /// Announces `prefix` (IPv4) with itself as next hop.
    pub fn announce(&self, prefix: &str) {
        self.gobgp
            .gobgp(&[
                "global", "rib", "-a", "ipv4", "add", prefix, "nexthop", &self.addr,
            ])
            .expect("gobgp rib add");
    }

    pub fn withdraw(&self, prefix: &str) {
        self.gobgp
            .gobgp(&["global", "rib", "-a", "ipv4", "del", prefix])
            .expect("gobgp rib del");
    }
}

/// The ADD-PATH send set-up shared by the interop tests: two [`GobgpSource`]s (AS 65021 and
/// 65022) and `tabby-bgpd` (AS 65002) with ADD-PATH send toward the receiver at `THEM4` (AS
/// `receiver_asn`); every session up and both sources announcing `prefix`.
pub fn add_path_sources<'a>(
    link: &'a Link,
    receiver_asn: u32,
    prefix: &str,
    timeout: Duration,
) -> ([GobgpSource; 2], Tabby<'a>) {
    let sources = [
        GobgpSource::start(&link.us, 1, 65021),
        GobgpSource::start(&link.us, 2, 65022),
    ];
    let peers = format!(
        "{}{}{}",
        peer(
            THEM4,
            receiver_asn,
            "add_path = { send = [\"ipv4-unicast\"] }"
        ),
        sources[0].peer(),
        sources[1].peer()
    );
    let tabby = Tabby::start(&link.us, &config(US4, 65002, &peers));
    tabby.wait_established(THEM4, timeout);
    for s in &sources {
        tabby.wait_established(&s.addr, timeout);
        s.wait_established(timeout);
        s.announce(prefix);
    }
    (sources, tabby)
}

/// A top-level config with an accept-all policy named `all`, listening dual-stack. `extra` is
/// appended verbatim (peers, originate, graceful_restart tables …).
pub fn config(router_id: &str, asn: u32, extra: &str) -> String {
    format!(
        "router_id = \"{router_id}\"\nasn = {asn}\nlisten = [\"::\"]\n\n{extra}\n\
         [[policies]]\nname = \"all\"\ndefault = \"accept\"\n"
    )
}

/// A `[[peers]]` table with short timers and the accept-all policy both ways; `extra` lines
/// are added to the table.
pub fn peer(address: &str, remote_asn: u32, extra: &str) -> String {
    let hold = if extra.contains("hold_time") {
        ""
    } else {
        "hold_time = 9\n"
    };
    format!(
        "[[peers]]\naddress = \"{address}\"\nremote_asn = {remote_asn}\n{hold}\
         connect_retry = 1\nimport_policy = \"all\"\nexport_policy = \"all\"\n{extra}\n"
    )
}

/// An `[[originate]]` table with a community and a large community derived from `tag`.
pub fn originate(prefix: &str, tag: u32) -> String {
    format!(
        "[[originate]]\nprefix = \"{prefix}\"\ncommunities = [\"{tag}:7\"]\n\
         large_communities = [\"{tag}:1:2\"]\n\n"
    )
}

/// A running `tabby-bgpd` in a namespace; killed on drop.
pub struct Tabby<'a> {
    ns: &'a Netns,
    process: Option<Process>,
    dir: tempfile::TempDir,
    starts: usize,
}

impl<'a> Tabby<'a> {
    /// Writes `config` and starts the daemon in `ns`; waits until its HTTP API answers.
    pub fn start(ns: &'a Netns, config: &str) -> Tabby<'a> {
        let dir = tempfile::Builder::new()
            .prefix("tabby-bgpd-interop-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("bgpd.toml"), config).expect("write config");
        let mut t = Tabby {
            ns,
            process: None,
            dir,
            starts: 0,
        };
        t.spawn(&[]);
        t
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("bgpd.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("bgpd.log")
    }

    fn spawn(&mut self, args: &[&str]) {
        let mut c = self.ns.command(BIN);
        c.arg("--config")
            .arg(self.config_path())
            .arg("--http")
            .arg(HTTP)
            .args(args)
            .env("RUST_LOG", "info");
        self.starts += 1;
        let p = Process::spawn("tabby-bgpd", c, &self.log_path()).expect("spawn tabby-bgpd");
        self.process = Some(p);
        let start = Instant::now();
        while self.get("/healthz").is_none() {
            if let Some(Err(e)) = self.process.as_mut().map(Process::check_running) {
                panic!("tabby-bgpd did not start: {e}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "tabby-bgpd's HTTP API did not answer within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's whole log (stderr), across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Replaces the config file and sends SIGHUP; waits until the reload is logged.
    pub fn reload(&self, config: &str) {
        let before = self.log().matches("reload").count();
        std::fs::write(self.config_path(), config).expect("write config");
        self.signal(Signal::SIGHUP);
        wait("the reload to be logged", Duration::from_secs(10), || {
            (self.log().matches("reload").count() > before).then_some(())
        });
    }

    pub fn signal(&self, s: Signal) {
        let p = self.process.as_ref().expect("running");
        let pid = i32::try_from(p.pid()).expect("pid");
        kill(Pid::from_raw(pid), s).expect("kill");
    }

    /// `kill -9`: no NOTIFICATION, sockets simply closed by the kernel.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(2));
        }
    }

    /// Starts the daemon again with the same config (after [`Tabby::kill9`]), with `args`.
    pub fn restart(&mut self, args: &[&str]) {
        assert!(self.process.is_none(), "still running");
        self.spawn(args);
    }

    /// A bounded HTTP/1.0 GET from inside the namespace: (status, body), or None when the API
    /// does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let path = path.to_string();
        in_netns(self.ns, move || http_get(&path)).ok().flatten()
    }

    /// GET returning JSON; None unless 200 with a JSON body.
    pub fn json(&self, path: &str) -> Option<Value> {
        let (code, body) = self.get(path)?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Our Adj-RIB-Out toward `peer` (`/rib?peer=..&dir=out`): the routes' count as reported,
    /// and their ADD-PATH path ids, sorted.
    pub fn adj_rib_out_path_ids(&self, peer: &str) -> (Value, Vec<u64>) {
        let out = self
            .json(&format!("/rib?peer={peer}&dir=out"))
            .expect("adj-rib-out");
        let mut ids: Vec<u64> = out["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["path_id"].as_u64())
            .collect();
        ids.sort_unstable();
        (out["count"].clone(), ids)
    }

    /// `/peers/{addr}`.
    pub fn peer(&self, addr: &str) -> Option<Value> {
        self.json(&format!("/peers/{addr}"))
    }

    pub fn peer_state(&self, addr: &str) -> String {
        self.peer(addr)
            .and_then(|p| p["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Waits until the session with `addr` is Established.
    pub fn wait_established(&self, addr: &str, within: Duration) -> Value {
        wait_or(
            &format!("tabby-bgpd's session with {addr} to be Established"),
            within,
            || self.peer(addr).filter(|p| p["state"] == "Established"),
            || format!("{:?}\n{}", self.peer(addr), self.log_tail(30)),
        )
    }

    /// Our RIB entry for `prefix` (all paths), once present.
    pub fn wait_route(&self, prefix: &str, within: Duration) -> Value {
        wait_or(
            &format!("tabby-bgpd to have {prefix}"),
            within,
            || self.json(&format!("/rib/{prefix}")),
            || self.log_tail(30),
        )
    }

    /// Our RIB entry for `prefix` once it satisfies `ok`.
    pub fn wait_route_where(
        &self,
        prefix: &str,
        within: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_or(
            &format!("tabby-bgpd's {prefix} to reach the expected state"),
            within,
            || self.json(&format!("/rib/{prefix}")).filter(|v| ok(v)),
            || {
                format!(
                    "{:?}\n{}",
                    self.json(&format!("/rib/{prefix}")),
                    self.log_tail(30)
                )
            },
        )
    }

    /// Waits until `prefix` is gone from our RIB (404).
    pub fn wait_no_route(&self, prefix: &str, within: Duration) {
        wait_or(
            &format!("tabby-bgpd to drop {prefix}"),
            within,
            || {
                let (code, _) = self.get(&format!("/rib/{prefix}"))?;
                (code == 404).then_some(())
            },
            || self.log_tail(30),
        )
    }

    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn starts(&self) -> usize {
        self.starts
    }
}

impl Drop for Tabby<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- tabby-bgpd log ----\n{}", self.log_tail(200));
        }
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(2));
        }
    }
}

fn http_get(path: &str) -> Option<(u16, String)> {
    let addr = HTTP.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// Polls `check` every 100 ms until it returns Some, for at most `within`; panics with `what`.
pub fn wait<T>(what: &str, within: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_or(what, within, check, String::new)
}

/// Like [`wait`], with `context` added to the panic message.
pub fn wait_or<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() >= within {
            panic!(
                "timed out after {within:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that `check` stays None for `during` (something must NOT happen).
pub fn never<T: std::fmt::Debug>(
    what: &str,
    during: Duration,
    mut check: impl FnMut() -> Option<T>,
) {
    let start = Instant::now();
    while start.elapsed() < during {
        if let Some(v) = check() {
            panic!("{what} happened: {v:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `vtysh -c` with several commands in one session (for `conf t` … sequences).
pub fn vtysh(frr: &tabby_netlab::Frr, ns: &Netns, commands: &[&str]) -> String {
    let mut c = ns.command("vtysh");
    c.arg("--vty_socket").arg(frr.dir());
    for cmd in commands {
        c.args(["-c", cmd]);
    }
    tabby_netlab::run(&mut c).expect("vtysh")
}

/// The first path of a `/rib/{prefix}` answer.
pub fn best(route: &Value) -> &Value {
    &route["paths"][0]
}

/// Skip check for every interop test: root, the daemon binary, and `programs`.
pub fn skip(programs: &[&str]) -> bool {
    let mut all = vec![BIN];
    all.extend_from_slice(programs);
    tabby_netlab::skip_unless_root_and(&all)
}

/// `ip netns exec` of a program that must succeed, for small lab tweaks.
pub fn exec(ns: &Netns, argv: &[&str]) -> String {
    ns.exec(argv).expect("exec in netns")
}

/// Runs a command that must succeed.
pub fn run(cmd: &mut Command) -> String {
    tabby_netlab::run(cmd).expect("command")
}
