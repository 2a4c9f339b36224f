//! The routers under test: the lab's addresses, each target's configuration (pure functions of
//! the topology, tested below), starting it in its namespace, its version and its memory.
//!
//! Every target is configured to the same contract: eBGP, AS 65000; injectors AS 65001.. are
//! passive neighbours whose routes are all accepted and to which nothing is exported; the monitor
//! (AS 65100) is a passive neighbour that gets every best route and sends nothing. FRR runs with
//! zebra (next-hop tracking) but without installing routes (`bgp no-rib`, the configuration
//! form of bgpd's `-n`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tabby_netlab::{Bird, Frr, Gobgp, LabError, Netns, Process, wait_until};

use super::workload::Workload;

/// The target's AS.
pub const TARGET_AS: u32 = 65000;
/// The monitor's AS.
pub const MONITOR_AS: u32 = 65100;

/// Which router is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Tabby,
    Bird,
    Frr,
    Gobgp,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Tabby => "tabby-bgpd",
            TargetKind::Bird => "BIRD",
            TargetKind::Frr => "FRR",
            TargetKind::Gobgp => "GoBGP",
        }
    }

    /// The process whose peak memory is the target's (`/proc/<pid>/comm`).
    pub fn main_process(self) -> &'static str {
        match self {
            TargetKind::Tabby => "tabby-bgpd",
            TargetKind::Bird => "bird",
            TargetKind::Frr => "bgpd",
            TargetKind::Gobgp => "gobgpd",
        }
    }
}

/// Addresses on the one /24 between the target's namespace and the lab's (never loopback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub peers: usize,
}

impl Topology {
    pub const PREFIX_LEN: u8 = 24;
    pub fn target(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, 1)
    }
    pub fn monitor(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, 2)
    }
    /// Injector `i`'s address: 10.0.0.11 + i (`Workload` caps the peers at 99).
    pub fn injector(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, 11 + i as u8)
    }
    pub fn injectors(&self) -> impl Iterator<Item = (usize, Ipv4Addr, u32)> + '_ {
        (0..self.peers).map(|i| (i, self.injector(i), Workload::injector_as(i)))
    }
}

/// `bird.conf`: one BGP protocol per neighbour; `direct` because they share the link.
pub fn bird_conf(t: &Topology) -> String {
    let mut c = format!(
        "router id {target};\nprotocol device {{ }}\n",
        target = t.target()
    );
    for (i, addr, asn) in t.injectors() {
        c += &format!(
            "protocol bgp inj{i} {{ local {target} as {TARGET_AS}; neighbor {addr} as {asn}; \
             direct; passive on; ipv4 {{ import all; export none; }}; }}\n",
            target = t.target()
        );
    }
    c += &format!(
        "protocol bgp monitor {{ local {target} as {TARGET_AS}; neighbor {mon} as {MONITOR_AS}; \
         direct; passive on; ipv4 {{ import none; export all; }}; }}\n",
        target = t.target(),
        mon = t.monitor()
    );
    c
}

/// `bgpd.conf` for FRR.
pub fn frr_conf(t: &Topology) -> String {
    let mut c = String::from(
        "frr defaults traditional\nhostname bench-target\n\
         ! Same as bgpd -n: keep zebra for next-hop tracking, install nothing.\nbgp no-rib\n\
         route-map BENCH-NONE deny 10\n",
    );
    c += &format!(
        "router bgp {TARGET_AS}\n bgp router-id {}\n no bgp ebgp-requires-policy\n \
         no bgp default ipv4-unicast\n",
        t.target()
    );
    let neighbours: Vec<(Ipv4Addr, u32)> = t
        .injectors()
        .map(|(_, a, asn)| (a, asn))
        .chain([(t.monitor(), MONITOR_AS)])
        .collect();
    for &(addr, asn) in &neighbours {
        c += &format!(" neighbor {addr} remote-as {asn}\n neighbor {addr} passive\n");
    }
    // Advertise as soon as best paths change (MRAI 0), as BIRD does.
    c += &format!(
        " neighbor {} advertisement-interval 0\n address-family ipv4 unicast\n",
        t.monitor()
    );
    for (addr, _) in neighbours {
        c += &format!("  neighbor {addr} activate\n");
        if addr != t.monitor() {
            c += &format!("  neighbor {addr} route-map BENCH-NONE out\n");
        }
    }
    c += " exit-address-family\n";
    c
}

/// `gobgpd.toml`: a global export policy rejects every route towards the injectors (GoBGP's
/// neighbour condition matches the destination on export).
pub fn gobgp_conf(t: &Topology) -> String {
    let injectors: Vec<String> = t.injectors().map(|(_, a, _)| format!("\"{a}\"")).collect();
    let mut c = format!(
        "[global.config]\n  as = {TARGET_AS}\n  router-id = \"{target}\"\n  port = 179\n  \
         local-address-list = [\"{target}\"]\n\
         [global.apply-policy.config]\n  export-policy-list = [\"bench-no-export-to-injectors\"]\n  \
         default-export-policy = \"accept-route\"\n\
         [[defined-sets.neighbor-sets]]\n  neighbor-set-name = \"injectors\"\n  \
         neighbor-info-list = [{list}]\n\
         [[policy-definitions]]\n  name = \"bench-no-export-to-injectors\"\n  \
         [[policy-definitions.statements]]\n    name = \"reject-injectors\"\n    \
         [policy-definitions.statements.conditions.match-neighbor-set]\n      \
         neighbor-set = \"injectors\"\n    \
         [policy-definitions.statements.actions]\n      route-disposition = \"reject-route\"\n",
        target = t.target(),
        list = injectors.join(", ")
    );
    let neighbours = t
        .injectors()
        .map(|(_, a, asn)| (a, asn))
        .chain([(t.monitor(), MONITOR_AS)]);
    for (addr, asn) in neighbours {
        c += &format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    \
             peer-as = {asn}\n  [neighbors.transport.config]\n    passive-mode = true\n"
        );
    }
    c
}

/// A running target; stopping it is dropping it.
pub enum Running {
    Bird(Bird),
    Frr(Frr),
    Gobgp(Gobgp),
    Tabby {
        process: Process,
        _dir: tempfile::TempDir,
    },
}

impl Running {
    pub fn start(
        kind: TargetKind,
        ns: &Netns,
        topo: &Topology,
        tabby_bin: &Path,
    ) -> Result<Running, LabError> {
        Ok(match kind {
            TargetKind::Bird => Running::Bird(Bird::start(ns, &bird_conf(topo))?),
            TargetKind::Frr => Running::Frr(Frr::start(ns, &frr_conf(topo))?),
            TargetKind::Gobgp => Running::Gobgp(Gobgp::start(ns, &gobgp_conf(topo))?),
            TargetKind::Tabby => start_tabby(ns, topo, tabby_bin)?,
        })
    }

    /// The target's log, for error reports.
    pub fn log_tail(&self) -> String {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        match self {
            Running::Bird(b) => tail(b.log()),
            Running::Frr(f) => tail(f.bgpd_log()),
            Running::Gobgp(g) => tail(g.log()),
            Running::Tabby { process, .. } => process.log_tail(20),
        }
    }
}

/// `tabby-bgpd`'s TOML (format: `bgpd/README.md`). RFC 8212 is its default for eBGP, so the
/// policies say it: everything in from the injectors, everything out to the monitor, and
/// nothing else (no export policy = nothing exported).
pub fn tabby_conf(t: &Topology) -> String {
    let mut c = format!(
        "router_id = \"{target}\"\nasn = {TARGET_AS}\nlisten = [\"{target}\"]\nlisten_port = 179\n\n\
         [[policies]]\nname = \"accept-all\"\ndefault = \"accept\"\n",
        target = t.target()
    );
    for (_, addr, asn) in t.injectors() {
        c += &format!(
            "\n[[peers]]\naddress = \"{addr}\"\nremote_asn = {asn}\npassive = true\n\
             import_policy = \"accept-all\"\n"
        );
    }
    c += &format!(
        "\n[[peers]]\naddress = \"{mon}\"\nremote_asn = {MONITOR_AS}\npassive = true\n\
         export_policy = \"accept-all\"\n",
        mon = t.monitor()
    );
    c
}

/// How long tabby-bgpd may take to listen after start.
const TABBY_READY: Duration = Duration::from_secs(20);

fn start_tabby(ns: &Netns, topo: &Topology, bin: &Path) -> Result<Running, LabError> {
    let dir = tempfile::Builder::new()
        .prefix("tabby-bench-bgpd-")
        .tempdir()
        .map_err(|source| LabError::Io {
            what: "creating tabby-bgpd's runtime dir".into(),
            source,
        })?;
    let conf = dir.path().join("bgpd.toml");
    std::fs::write(&conf, tabby_conf(topo)).map_err(|source| LabError::Io {
        what: format!("writing {}", conf.display()),
        source,
    })?;
    let bin = bin.to_str().ok_or_else(|| {
        LabError::Invalid(format!("tabby-bgpd path is not UTF-8: {}", bin.display()))
    })?;
    let mut cmd = ns.command(bin);
    cmd.arg("--config").arg(&conf);
    let mut process = Process::spawn("tabby-bgpd", cmd, &dir.path().join("bgpd.log"))?;
    let pid = process.pid();
    wait_until(
        "tabby-bgpd to listen on port 179",
        TABBY_READY,
        || {
            process.check_running()?;
            Ok(std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
                .is_ok_and(|t| listens_on(&t, 179)))
        },
        String::new,
    )
    .map_err(|e| e.with_log(process.log_tail(20)))?;
    Ok(Running::Tabby { process, _dir: dir })
}

/// Whether `/proc/<pid>/net/tcp` (the process's namespace) has a socket in LISTEN (state `0A`)
/// on `port`.
pub fn listens_on(proc_net_tcp: &str, port: u16) -> bool {
    let want = format!("{port:04X}");
    proc_net_tcp.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].rsplit(':').next() == Some(want.as_str()) && f[3] == "0A"
    })
}

/// Peak and current memory of one process of the target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProcessMemory {
    pub pid: i32,
    pub name: String,
    /// `VmHWM`: peak resident set size, bytes.
    pub peak_rss_bytes: u64,
    /// `VmRSS` when read, bytes.
    pub rss_bytes: u64,
}

/// A `kB` field of `/proc/<pid>/status` in bytes, e.g. `VmHWM:    95232 kB`.
pub fn status_field_bytes(status: &str, field: &str) -> Option<u64> {
    let rest = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    let mut words = rest.split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

/// Memory of every process in the target's namespace (the daemon, and zebra for FRR).
pub fn memory(ns: &Netns) -> Result<Vec<ProcessMemory>, LabError> {
    let mut out = Vec::new();
    for pid in ns.pids()? {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}"));
        // A process may exit between listing and reading (a transient CLI): skip it.
        let (Ok(comm), Ok(status)) = (read("comm"), read("status")) else {
            continue;
        };
        let (Some(peak), Some(rss)) = (
            status_field_bytes(&status, "VmHWM"),
            status_field_bytes(&status, "VmRSS"),
        ) else {
            continue;
        };
        out.push(ProcessMemory {
            pid,
            name: comm.trim().to_string(),
            peak_rss_bytes: peak,
            rss_bytes: rss,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.pid.cmp(&b.pid)));
    Ok(out)
}

/// The first line a daemon prints for `--version` (stdout or stderr), for the report.
pub fn version(kind: TargetKind, tabby_bin: &Path) -> String {
    let program: PathBuf = match kind {
        TargetKind::Tabby => tabby_bin.to_path_buf(),
        TargetKind::Bird => "bird".into(),
        TargetKind::Frr => Frr::BGPD.into(),
        TargetKind::Gobgp => "gobgpd".into(),
    };
    match Command::new(&program).arg("--version").output() {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(e) => format!("unknown ({}: {e})", program.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        Topology { peers: 2 }
    }

    #[test]
    fn addresses_are_distinct_and_off_loopback() {
        let t = Topology { peers: 99 };
        let mut all: Vec<Ipv4Addr> = t.injectors().map(|(_, a, _)| a).collect();
        all.push(t.target());
        all.push(t.monitor());
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert!(
            all.iter()
                .all(|a| !a.is_loopback() && a.octets()[..3] == [10, 0, 0])
        );
        assert_eq!(t.injector(98), Ipv4Addr::new(10, 0, 0, 109));
    }

    #[test]
    fn bird_conf_has_every_neighbour_with_the_contract() {
        let c = bird_conf(&topo());
        for want in [
            "router id 10.0.0.1;",
            "protocol bgp inj0 { local 10.0.0.1 as 65000; neighbor 10.0.0.11 as 65001;",
            "protocol bgp inj1 { local 10.0.0.1 as 65000; neighbor 10.0.0.12 as 65002;",
            "import all; export none;",
            "protocol bgp monitor { local 10.0.0.1 as 65000; neighbor 10.0.0.2 as 65100;",
            "import none; export all;",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
        assert_eq!(c.matches("passive on").count(), 3);
    }

    #[test]
    fn frr_conf_exports_only_to_the_monitor() {
        let c = frr_conf(&topo());
        for want in [
            "bgp no-rib",
            "router bgp 65000",
            "no bgp ebgp-requires-policy",
            " neighbor 10.0.0.11 remote-as 65001",
            " neighbor 10.0.0.12 remote-as 65002",
            " neighbor 10.0.0.2 remote-as 65100",
            "  neighbor 10.0.0.11 route-map BENCH-NONE out",
            "  neighbor 10.0.0.12 route-map BENCH-NONE out",
            "  neighbor 10.0.0.2 activate",
            " neighbor 10.0.0.2 advertisement-interval 0",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
        assert!(!c.contains("neighbor 10.0.0.2 route-map"), "{c}");
        assert_eq!(c.matches("passive").count(), 3);
    }

    #[test]
    fn gobgp_conf_rejects_export_to_injectors_only() {
        let c = gobgp_conf(&topo());
        assert!(
            c.contains("neighbor-info-list = [\"10.0.0.11\", \"10.0.0.12\"]"),
            "{c}"
        );
        assert!(!c.contains("\"10.0.0.2\", ") && c.contains("neighbor-address = \"10.0.0.2\""));
        assert_eq!(c.matches("[[neighbors]]").count(), 3);
        assert_eq!(c.matches("passive-mode = true").count(), 3);
    }

    #[test]
    fn tabby_conf_follows_rfc_8212_explicitly() {
        let c = tabby_conf(&topo());
        for want in [
            "router_id = \"10.0.0.1\"",
            "asn = 65000",
            "listen = [\"10.0.0.1\"]",
            "[[peers]]\naddress = \"10.0.0.11\"\nremote_asn = 65001\npassive = true\nimport_policy = \"accept-all\"",
            "[[peers]]\naddress = \"10.0.0.12\"\nremote_asn = 65002\npassive = true\nimport_policy = \"accept-all\"",
            "[[peers]]\naddress = \"10.0.0.2\"\nremote_asn = 65100\npassive = true\nexport_policy = \"accept-all\"",
            "name = \"accept-all\"\ndefault = \"accept\"",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
        assert_eq!(c.matches("export_policy").count(), 1, "{c}");
    }

    #[test]
    fn tabby_conf_is_accepted_by_tabby_bgpd_with_the_contract() {
        let t = Topology { peers: 10 };
        let c = tabby_bgpd::config::Config::parse(&tabby_conf(&t), Path::new("/"))
            .unwrap_or_else(|e| panic!("{e}\n{}", tabby_conf(&t)));
        assert_eq!((c.router_id, c.asn), (t.target(), TARGET_AS));
        assert_eq!(c.peers.len(), 11);
        for (i, addr, asn) in t.injectors() {
            let p = &c.peers[&addr.into()];
            assert_eq!(p.remote_asn, asn, "injector {i}");
            assert!(p.passive);
            assert_eq!(p.import_policy.as_deref(), Some("accept-all"));
            assert_eq!(p.export_policy, None, "nothing exported to injector {i}");
        }
        let m = &c.peers[&t.monitor().into()];
        assert_eq!((m.remote_asn, m.passive), (MONITOR_AS, true));
        assert_eq!(m.export_policy.as_deref(), Some("accept-all"));
    }

    #[test]
    fn listening_sockets_in_proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
                 0: 0100000A:00B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n   \
                 1: 0100000A:00B4 0B00000A:9C40 01 00000000:00000000 00:00000000 00000000\n";
        assert!(listens_on(t, 179));
        assert!(!listens_on(t, 180), "established, not listening");
        assert!(!listens_on(t, 40000), "remote port");
        assert!(!listens_on("", 179));
    }

    #[test]
    fn proc_status_fields() {
        let s = "Name:\tbird\nVmPeak:\t  200000 kB\nVmHWM:\t   95232 kB\nVmRSS:\t   90000 kB\n";
        assert_eq!(status_field_bytes(s, "VmHWM"), Some(95232 * 1024));
        assert_eq!(status_field_bytes(s, "VmRSS"), Some(90000 * 1024));
        assert_eq!(status_field_bytes(s, "VmSwap"), None);
        assert_eq!(status_field_bytes("VmHWM:\t12 MB\n", "VmHWM"), None);
        assert_eq!(status_field_bytes("VmHWM:\tlots kB\n", "VmHWM"), None);
        // A field whose name only starts with the one asked for is not it.
        assert_eq!(status_field_bytes("VmHWMX:\t1 kB\n", "VmHWM"), None);
    }
}
