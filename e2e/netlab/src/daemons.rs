//! The reference routing daemons — FRR (zebra + bgpd), BIRD 2, GoBGP — each run in a namespace
//! with a private runtime directory (config, pid files, control sockets, logs), waited on until
//! its control socket answers, and stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{LabError, Netns, Process, Result, run, wait_until};

/// How long a daemon may take to answer its control socket after start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn io(what: String) -> impl FnOnce(std::io::Error) -> LabError {
    move |source| LabError::Io { what, source }
}

fn runtime_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(io(format!("creating a {prefix} runtime dir")))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

/// FRR's `zebra` and `bgpd` in one namespace, run as user `frr` from a private directory.
///
/// `bgpd_conf` is an ordinary `bgpd.conf`; remember that FRR needs
/// `no bgp ebgp-requires-policy` before it sends eBGP routes, and does not peer over 127/8.
#[derive(Debug)]
pub struct Frr {
    // Field order matters: the daemons stop before their directory is removed.
    bgpd: Process,
    zebra: Process,
    netns: String,
    dir: tempfile::TempDir,
}

impl Frr {
    pub const ZEBRA: &'static str = "/usr/lib/frr/zebra";
    pub const BGPD: &'static str = "/usr/lib/frr/bgpd";

    /// Starts zebra then bgpd in `ns` with `bgpd_conf`, and waits until vtysh reaches bgpd.
    pub fn start(ns: &Netns, bgpd_conf: &str) -> Result<Frr> {
        let dir = runtime_dir("tabby-frr-")?;
        let d = dir.path();
        write(&d.join("zebra.conf"), "hostname zebra\n")?;
        write(&d.join("bgpd.conf"), bgpd_conf)?;
        // The daemons drop to frr:frr and must be able to write pid files and sockets here.
        let user = nix::unistd::User::from_name("frr")
            .ok()
            .flatten()
            .ok_or_else(|| {
                LabError::Invalid("user `frr` does not exist (is FRR installed?)".into())
            })?;
        for p in [d.to_path_buf(), d.join("zebra.conf"), d.join("bgpd.conf")] {
            std::os::unix::fs::chown(&p, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(io(format!("chown frr {}", p.display())))?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(io(format!("chmod {}", d.display())))?;

        let zserv = d.join("zserv.api");
        let common = |daemon: &str| {
            let mut c = ns.command(daemon);
            c.arg("-f")
                .arg(d.join(format!("{}.conf", short_name(daemon))))
                .arg("-i")
                .arg(d.join(format!("{}.pid", short_name(daemon))))
                .arg("-z")
                .arg(&zserv)
                .arg("--vty_socket")
                .arg(d)
                .args(["-u", "frr", "-g", "frr", "-P", "0", "--log", "stdout"]);
            c
        };
        let mut zebra = Process::spawn("FRR zebra", common(Self::ZEBRA), &d.join("zebra.log"))?;
        wait_until(
            "FRR zebra's zserv socket",
            READY_TIMEOUT,
            || zebra.check_running().map(|()| zserv.exists()),
            String::new,
        )
        .map_err(|e| e.with_log(zebra.log_tail(20)))?;
        let bgpd = Process::spawn("FRR bgpd", common(Self::BGPD), &d.join("bgpd.log"))?;
        let mut frr = Frr {
            bgpd,
            zebra,
            netns: ns.name().to_string(),
            dir,
        };
        wait_until(
            "FRR bgpd's vty socket",
            READY_TIMEOUT,
            || {
                frr.bgpd.check_running()?;
                Ok(frr.vtysh("show bgp summary").is_ok())
            },
            String::new,
        )
        .map_err(|e| e.with_log(frr.bgpd.log_tail(20)))?;
        Ok(frr)
    }

    /// Runs one vtysh command against this instance.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, "vtysh", "--vty_socket"])
            .arg(self.dir.path())
            .args(["-c", command]);
        run(&mut c)
    }

    /// Runs a vtysh `show ... json` command and parses its output.
    pub fn vtysh_json(&self, command: &str) -> Result<serde_json::Value> {
        let out = self.vtysh(command)?;
        serde_json::from_str(&out)
            .map_err(|e| LabError::Invalid(format!("`{command}` did not return JSON ({e}): {out}")))
    }

    /// State of the BGP session with `peer` as FRR reports it (`Established`, `Active`, ...).
    pub fn peer_state(&self, peer: &str) -> Result<String> {
        let v = self.vtysh_json(&format!("show bgp neighbors {peer} json"))?;
        Ok(v.get(peer)
            .and_then(|p| p.get("bgpState"))
            .and_then(|s| s.as_str())
            .unwrap_or("unknown")
            .to_string())
    }

    /// Waits until the session with `peer` is Established, or fails with bgpd's log.
    pub fn wait_established(&self, peer: &str, timeout: Duration) -> Result<()> {
        wait_until(
            &format!("FRR session with {peer} to be Established"),
            timeout,
            || Ok(self.peer_state(peer)? == "Established"),
            || self.bgpd.log_tail(30),
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn bgpd_log(&self) -> String {
        self.bgpd.log_tail(200)
    }

    pub fn zebra_log(&self) -> String {
        self.zebra.log_tail(200)
    }
}

fn short_name(daemon: &str) -> &str {
    daemon.rsplit('/').next().unwrap_or(daemon)
}

/// BIRD 2 in one namespace. BIRD wants `direct` (or `multihop`) on eBGP sessions between
/// directly connected neighbours in the lab.
#[derive(Debug)]
pub struct Bird {
    process: Process,
    netns: String,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Bird {
    /// Starts `bird -f` with `conf` in `ns` and waits until `birdc` answers.
    pub fn start(ns: &Netns, conf: &str) -> Result<Bird> {
        let dir = runtime_dir("tabby-bird-")?;
        let d = dir.path();
        let conf_path = d.join("bird.conf");
        write(&conf_path, conf)?;
        let socket = d.join("bird.ctl");
        let mut c = ns.command("bird");
        c.arg("-f")
            .arg("-c")
            .arg(&conf_path)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(d.join("bird.pid"));
        let process = Process::spawn("BIRD", c, &d.join("bird.log"))?;
        let mut bird = Bird {
            process,
            netns: ns.name().to_string(),
            socket,
            dir,
        };
        wait_until(
            "BIRD's control socket",
            READY_TIMEOUT,
            || {
                bird.process.check_running()?;
                Ok(bird.birdc("show status").is_ok())
            },
            String::new,
        )
        .map_err(|e| e.with_log(bird.process.log_tail(20)))?;
        Ok(bird)
    }

    /// Runs one `birdc` command (e.g. `show protocols all`).
    pub fn birdc(&self, command: &str) -> Result<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, "birdc", "-s"])
            .arg(&self.socket)
            .args(command.split_whitespace());
        run(&mut c)
    }

    /// The BGP state BIRD reports for protocol `name` (`Established`, `Active`, `Connect`...).
    pub fn bgp_state(&self, name: &str) -> Result<String> {
        let out = self.birdc(&format!("show protocols all {name}"))?;
        parse_bird_bgp_state(&out)
            .ok_or_else(|| LabError::Invalid(format!("no BGP state for {name} in: {out}")))
    }

    /// Waits until BGP protocol `name` is Established, or fails with BIRD's log.
    pub fn wait_established(&self, name: &str, timeout: Duration) -> Result<()> {
        wait_until(
            &format!("BIRD protocol {name} to be Established"),
            timeout,
            || Ok(self.bgp_state(name).is_ok_and(|s| s == "Established")),
            || self.process.log_tail(30),
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        self.process.log_tail(200)
    }
}

/// `BGP state:          Established` in `birdc show protocols all`.
fn parse_bird_bgp_state(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("BGP state:"))
        .map(|s| s.trim().to_string())
}

/// `BGP state = ESTABLISHED, up for ...` in `gobgp neighbor <addr>`.
fn parse_gobgp_state(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("BGP state ="))
        .map(|s| s.split(',').next().unwrap_or(s).trim().to_ascii_lowercase())
}

/// GoBGP's `gobgpd` in one namespace, its gRPC API on the namespace's own loopback.
#[derive(Debug)]
pub struct Gobgp {
    process: Process,
    netns: String,
    api_port: u16,
    dir: tempfile::TempDir,
}

impl Gobgp {
    /// gRPC port on the namespace's loopback (each namespace has its own, so no clashes).
    pub const API_PORT: u16 = 50051;

    /// Starts `gobgpd` with the TOML `conf` in `ns` and waits until `gobgp global` answers.
    pub fn start(ns: &Netns, conf_toml: &str) -> Result<Gobgp> {
        let dir = runtime_dir("tabby-gobgp-")?;
        let d = dir.path();
        let conf_path = d.join("gobgpd.toml");
        write(&conf_path, conf_toml)?;
        let mut c = ns.command("gobgpd");
        c.arg("-f")
            .arg(&conf_path)
            .args(["-t", "toml", "-p", "--pprof-disable"])
            .arg(format!("--api-hosts=127.0.0.1:{}", Self::API_PORT));
        let process = Process::spawn("gobgpd", c, &d.join("gobgpd.log"))?;
        let mut g = Gobgp {
            process,
            netns: ns.name().to_string(),
            api_port: Self::API_PORT,
            dir,
        };
        wait_until(
            "gobgpd's API",
            READY_TIMEOUT,
            || {
                g.process.check_running()?;
                Ok(g.gobgp(&["global"]).is_ok())
            },
            String::new,
        )
        .map_err(|e| e.with_log(g.process.log_tail(20)))?;
        Ok(g)
    }

    /// Runs the `gobgp` client with `args` (e.g. `["global", "rib", "add", "10.0.0.0/24"]`).
    pub fn gobgp(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.netns,
            "gobgp",
            "-u",
            "127.0.0.1",
            "-p",
        ])
        .arg(self.api_port.to_string())
        .args(args);
        run(&mut c)
    }

    /// The session state GoBGP reports for `neighbor`, lower case (`established`, `active`...).
    pub fn peer_state(&self, neighbor: &str) -> Result<String> {
        let out = self.gobgp(&["neighbor", neighbor])?;
        parse_gobgp_state(&out)
            .ok_or_else(|| LabError::Invalid(format!("no state for {neighbor} in: {out}")))
    }

    /// Waits until the session with `neighbor` is established, or fails with gobgpd's log.
    pub fn wait_established(&self, neighbor: &str, timeout: Duration) -> Result<()> {
        wait_until(
            &format!("GoBGP session with {neighbor} to be established"),
            timeout,
            || Ok(self.peer_state(neighbor)? == "established"),
            || self.process.log_tail(30),
        )
    }

    /// `gobgp ... -j` parsed as JSON.
    pub fn gobgp_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = args.to_vec();
        a.push("-j");
        let out = self.gobgp(&a)?;
        serde_json::from_str(&out).map_err(|e| {
            LabError::Invalid(format!("gobgp {args:?} did not return JSON ({e}): {out}"))
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        self.process.log_tail(200)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skip_unless_root_and;

    /// Two namespaces over a veth; in each test one daemon peers with another.
    fn pair() -> (Netns, Netns) {
        let a = Netns::new().unwrap();
        let b = Netns::new().unwrap();
        a.veth_to("eth0", &b, "eth0").unwrap();
        a.add_addr("eth0", "10.88.0.1/30").unwrap();
        b.add_addr("eth0", "10.88.0.2/30").unwrap();
        (a, b)
    }

    fn frr_conf(my_as: u32, peer: &str, peer_as: u32, network: &str) -> String {
        format!(
            "hostname frr{my_as}\n\
             router bgp {my_as}\n bgp router-id 1.1.1.{}\n no bgp ebgp-requires-policy\n no bgp network import-check\n \
             no bgp default ipv4-unicast\n neighbor {peer} remote-as {peer_as}\n \
             neighbor {peer} timers 3 9\n neighbor {peer} timers connect 1\n \
             address-family ipv4 unicast\n  neighbor {peer} activate\n  network {network}\n \
             exit-address-family\n",
            my_as % 200
        )
    }

    #[test]
    fn frr_and_gobgp_establish_and_exchange_a_route() {
        if skip_unless_root_and(&[Frr::BGPD, Frr::ZEBRA, "vtysh", "gobgpd", "gobgp"]) {
            return;
        }
        let (a, b) = pair();
        let frr = Frr::start(
            &a,
            &frr_conf(4_200_000_001, "10.88.0.2", 65002, "192.0.2.0/24"),
        )
        .unwrap();
        let gobgp = Gobgp::start(
            &b,
            r#"[global.config]
  as = 65002
  router-id = "10.88.0.2"
  port = 179
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.88.0.1"
    peer-as = 4200000001
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3
"#,
        )
        .unwrap();
        frr.wait_established("10.88.0.2", Duration::from_secs(40))
            .unwrap();
        gobgp
            .wait_established("10.88.0.1", Duration::from_secs(10))
            .unwrap();
        wait_until(
            "GoBGP to learn 192.0.2.0/24",
            Duration::from_secs(20),
            || Ok(gobgp.gobgp(&["global", "rib"])?.contains("192.0.2.0/24")),
            || gobgp.gobgp(&["global", "rib"]).unwrap_or_default(),
        )
        .unwrap();
        let summary = frr
            .vtysh_json("show bgp ipv4 unicast summary json")
            .unwrap();
        assert_eq!(summary["as"], 4_200_000_001u64);
    }

    #[test]
    fn state_parsers() {
        let bird = "peer1      BGP        ---        up     12:00:00.000  Established\n  \
                    BGP state:          Established\n    Neighbor address: 10.0.0.2\n";
        assert_eq!(parse_bird_bgp_state(bird).as_deref(), Some("Established"));
        assert_eq!(parse_bird_bgp_state("nothing"), None);
        let gobgp = "BGP neighbor is 10.9.9.9, remote AS 65002\n  BGP version 4\n  \
                     BGP state = ESTABLISHED, up for 00:00:03\n";
        assert_eq!(parse_gobgp_state(gobgp).as_deref(), Some("established"));
        assert_eq!(
            parse_gobgp_state("  BGP state = ACTIVE\n").as_deref(),
            Some("active")
        );
        assert_eq!(parse_gobgp_state(""), None);
    }

    #[test]
    fn bird_starts_and_answers_birdc() {
        if skip_unless_root_and(&["bird", "birdc"]) {
            return;
        }
        let (a, _b) = pair();
        let bird = Bird::start(
            &a,
            "router id 10.88.0.1;\nlog stderr all;\nprotocol device {}\n\
             protocol static s4 { ipv4; route 198.51.100.0/24 blackhole; }\n\
             protocol bgp peer1 { local 10.88.0.1 as 65001; neighbor 10.88.0.2 as 65002; direct;\n\
               ipv4 { import all; export all; }; }\n",
        )
        .unwrap();
        let protocols = bird.birdc("show protocols").unwrap();
        assert!(
            protocols.contains("peer1") && protocols.contains("s4"),
            "{protocols}"
        );
        let routes = bird.birdc("show route").unwrap();
        assert!(routes.contains("198.51.100.0/24"), "{routes}");
    }

    #[test]
    fn bird_and_frr_establish_and_exchange_a_route() {
        if skip_unless_root_and(&["bird", "birdc", Frr::BGPD, Frr::ZEBRA, "vtysh"]) {
            return;
        }
        let (a, b) = pair();
        let bird = Bird::start(
            &a,
            "router id 10.88.0.1;\nprotocol device {}\n\
             protocol static s4 { ipv4; route 198.51.100.0/24 blackhole; }\n\
             protocol bgp frr { local 10.88.0.1 as 65001; neighbor 10.88.0.2 as 4200000009;\n\
               direct; connect retry time 1; ipv4 { import all; export all; }; }\n",
        )
        .unwrap();
        let frr = Frr::start(
            &b,
            &frr_conf(4_200_000_009, "10.88.0.1", 65001, "192.0.2.0/24"),
        )
        .unwrap();
        bird.wait_established("frr", Duration::from_secs(40))
            .unwrap();
        frr.wait_established("10.88.0.1", Duration::from_secs(10))
            .unwrap();
        wait_until(
            "each side to learn the other's route",
            Duration::from_secs(20),
            || {
                Ok(bird.birdc("show route")?.contains("192.0.2.0/24")
                    && frr
                        .vtysh("show bgp ipv4 unicast")?
                        .contains("198.51.100.0/24"))
            },
            String::new,
        )
        .unwrap();
    }

    #[test]
    fn bad_config_fails_fast_with_the_log() {
        if skip_unless_root_and(&["bird", "birdc"]) {
            return;
        }
        let (a, _b) = pair();
        let e = Bird::start(&a, "this is not bird config;\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("BIRD exited early"), "{e}");
    }
}
