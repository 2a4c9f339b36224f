//! Network namespaces made with `ip netns`, their links and addresses, and running Rust closures
//! inside them with `setns(2)`.

use std::fs::File;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::CloneFlags;

use crate::{LabError, Result, run};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace, deleted (with every process still in it killed) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `tabby-t-<pid>-<n>` with `lo` up.
    pub fn new() -> Result<Netns> {
        let name = format!(
            "tabby-t-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.link_up("lo")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's handle, for `setns`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// A command that will run `program` inside the namespace (`ip netns exec`, which execs, so
    /// the child's pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `argv` inside the namespace; its stdout when it exits 0.
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| LabError::Invalid("exec: empty command".into()))?;
        run(self.command(program).args(args))
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    pub fn link_up(&self, ifname: &str) -> Result<()> {
        self.ip(&["link", "set", ifname, "up"]).map(drop)
    }

    /// Adds an address such as `10.0.0.1/30` or `fd00::1/64`. IPv6 addresses skip duplicate
    /// address detection (`nodad`) so they are usable at once; the lab has no duplicates.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        let addr: IpAddr = cidr
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| LabError::Invalid(format!("not an address/prefix: {cidr}")))?;
        let mut args = vec!["addr", "add", cidr, "dev", ifname];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        self.ip(&args).map(drop)
    }

    /// `sysctl -w key=value` inside the namespace (e.g. `net.ipv4.ip_forward`, `1`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Pids of the processes whose network namespace this is.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let out = run(Command::new("ip").args(["netns", "pids", &self.name]))?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Anything left running would keep the namespace alive after `ip netns del`.
        if let Ok(pids) = self.pids() {
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("netlab: could not delete namespace {}: {e}", self.name);
        }
    }
}

/// Creates a veth pair with one end in each namespace, both ends up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    run(Command::new("ip").args([
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]))?;
    a.link_up(a_if)?;
    b.link_up(b_if)
}

impl Netns {
    /// Creates a veth pair `self:my_if <-> other:peer_if`, both ends up.
    pub fn veth_to(&self, my_if: &str, other: &Netns, peer_if: &str) -> Result<()> {
        veth(self, my_if, other, peer_if)
    }
}

fn enter(ns_name: &str, handle: &File) -> Result<()> {
    nix::sched::setns(handle, CloneFlags::CLONE_NEWNET).map_err(|source| LabError::Setns {
        ns: ns_name.to_string(),
        source,
    })
}

fn open_handle(ns: &Netns) -> Result<File> {
    File::open(ns.path()).map_err(|source| LabError::Io {
        what: format!("opening {}", ns.path()),
        source,
    })
}

/// Runs `f` on a fresh thread that has entered `ns`'s network namespace, and returns its result.
/// Sockets created in `f` live in that namespace (and stay there if `f` returns them). A panic in
/// `f` is propagated to the caller.
pub fn in_netns<T: Send, F: FnOnce() -> T + Send>(ns: &Netns, f: F) -> Result<T> {
    let handle = open_handle(ns)?;
    let name = ns.name.clone();
    std::thread::scope(|s| {
        let joined = s
            .spawn(move || {
                enter(&name, &handle)?;
                Ok(f())
            })
            .join();
        match joined {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Like [`in_netns`], but the thread keeps running: for servers and receivers that live for the
/// whole test. Join the handle to get `f`'s result.
pub fn spawn_in_netns<T, F>(ns: &Netns, f: F) -> Result<std::thread::JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = open_handle(ns)?;
    let name = ns.name.clone();
    std::thread::Builder::new()
        .name(format!("in-{name}"))
        .spawn(move || {
            enter(&name, &handle)?;
            Ok(f())
        })
        .map_err(|source| LabError::Io {
            what: "spawning a thread".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skip_unless_root_and;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn names_are_unique_and_prefixed() {
        let a = format!("tabby-t-{}-", std::process::id());
        // Only the name logic; no namespace is created here.
        let n1 = NEXT.fetch_add(1, Ordering::Relaxed);
        let n2 = NEXT.fetch_add(1, Ordering::Relaxed);
        assert_ne!(n1, n2);
        assert!(format!("{a}{n1}").starts_with("tabby-t-"));
    }

    #[test]
    fn two_namespaces_veth_ping_and_sockets() {
        if skip_unless_root_and(&["ip", "ping"]) {
            return;
        }
        let a = Netns::new().unwrap();
        let b = Netns::new().unwrap();
        a.veth_to("va", &b, "vb").unwrap();
        a.add_addr("va", "10.99.0.1/30").unwrap();
        b.add_addr("vb", "10.99.0.2/30").unwrap();
        a.add_addr("va", "fd00:99::1/64").unwrap();
        b.add_addr("vb", "fd00:99::2/64").unwrap();
        a.exec(&["ping", "-c", "1", "-W", "2", "10.99.0.2"])
            .unwrap();
        a.exec(&["ping", "-c", "1", "-W", "2", "fd00:99::2"])
            .unwrap();

        // A listener made in b is reachable from a closure running in a, and not from the root
        // namespace's view of the world (10.99.0.2 is not configured there).
        let listener = in_netns(&b, || TcpListener::bind("[fd00:99::2]:17900"))
            .unwrap()
            .unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, peer) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            (buf, peer)
        });
        in_netns(&a, || {
            let mut c = TcpStream::connect("[fd00:99::2]:17900").unwrap();
            c.write_all(b"hello").unwrap();
        })
        .unwrap();
        let (buf, peer) = server.join().unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(peer.ip().to_string(), "fd00:99::1");

        // spawn_in_netns sees the namespace's own interfaces.
        let names = spawn_in_netns(&a, || {
            std::fs::read_dir("/sys/class/net").map(|d| d.count())
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
        // /sys reflects the mount namespace, not the thread's net namespace, so only check it ran.
        assert!(names.is_ok());

        let name = a.name().to_string();
        drop(a);
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    }

    #[test]
    fn bad_address_is_an_error_not_a_panic() {
        if skip_unless_root_and(&["ip"]) {
            return;
        }
        let a = Netns::new().unwrap();
        assert!(matches!(
            a.add_addr("lo", "nonsense"),
            Err(LabError::Invalid(_))
        ));
        assert!(matches!(
            a.add_addr("nope0", "10.0.0.1/24"),
            Err(LabError::Command { .. })
        ));
        assert!(a.exec(&[]).is_err());
    }
}
