//! Building, inspecting and removing a lab: the I/O edge of the crate.
//!
//! Owns the lab's processes (detached, in their own process group, so they outlive `up`), its
//! network namespaces and the files in its state directory — all recorded in [`State`] before
//! or as they are made. Must not touch anything it did not record: no root-namespace links,
//! addresses or routes, no process it did not start (pids are checked against their recorded
//! command line before any signal).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::api::{Patch, PatchParams, PostParams};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tabby_api::v1alpha1::{IPAMBlock, NodeNetworkStatus};

use crate::chart;
use crate::plan::{self, NodePlan, Options, PodPlan};
use crate::state::{self, PodRecord, ProcRecord, State};

/// The chart's CRDs, embedded so the lab needs no source tree at run time.
pub const CRDS: &[(&str, &str)] = &[
    (
        "bgpconfigurations.tabby.dev.yaml",
        include_str!("../../../charts/tabby/crds/bgpconfigurations.tabby.dev.yaml"),
    ),
    (
        "bgppeers.tabby.dev.yaml",
        include_str!("../../../charts/tabby/crds/bgppeers.tabby.dev.yaml"),
    ),
    (
        "ipamblocks.tabby.dev.yaml",
        include_str!("../../../charts/tabby/crds/ipamblocks.tabby.dev.yaml"),
    ),
    (
        "ippools.tabby.dev.yaml",
        include_str!("../../../charts/tabby/crds/ippools.tabby.dev.yaml"),
    ),
    (
        "nodenetworkstatuses.tabby.dev.yaml",
        include_str!("../../../charts/tabby/crds/nodenetworkstatuses.tabby.dev.yaml"),
    ),
];

/// Programs the lab runs, besides `ip`, `nsenter` and FRR.
pub const BINARIES: &[&str] = &[
    "tabby-kube-sim",
    "tabby-ipam-controller",
    "tabby-agent",
    "tabby-cni",
    "tabby-lab",
];

/// System programs the lab needs.
pub const SYSTEM_PROGRAMS: &[&str] = &[
    "ip",
    "nsenter",
    "ping",
    "vtysh",
    tabby_netlab::Frr::ZEBRA,
    tabby_netlab::Frr::BGPD,
];

const FRR_ZEBRA: &str = tabby_netlab::Frr::ZEBRA;
const FRR_BGPD: &str = tabby_netlab::Frr::BGPD;

/// How long one step of `up` may take before it fails with the relevant log.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `down` gives each process after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long `up` waits for every agent's `/readyz` before printing what it has.
const READY_WAIT: Duration = Duration::from_secs(20);

/// Everything that can go wrong in the lab, in words.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0}")]
    Options(#[from] plan::OptionsError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(
        "`{binary}` not found (looked in {looked}); build it: cargo build --release -p {package}"
    )]
    MissingBinary {
        binary: String,
        package: String,
        looked: String,
    },
    #[error("the lab needs root (network namespaces, FRR); run it as root")]
    NotRoot,
    #[error("missing programs: {0}; scripts/install-deps.sh installs them")]
    MissingPrograms(String),
    #[error(
        "network namespace(s) {0} exist but no lab is recorded in this state directory; \
         another lab with this prefix may be running (use another --prefix or --state-dir), \
         or remove them with `ip netns del`"
    )]
    Foreign(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Net(#[from] tabby_netlab::LabError),
    #[error(transparent)]
    Chart(#[from] chart::ChartError),
    #[error("Kubernetes API, {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("timed out after {waited:?} waiting for {what}{}", tail(.log))]
    Timeout {
        what: String,
        waited: Duration,
        log: String,
    },
    #[error("{what} exited{}", tail(.log))]
    Exited { what: String, log: String },
    #[error("{0}")]
    Other(String),
}

fn tail(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; last log lines:\n{log}")
    }
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

fn kerr(what: impl Into<String>) -> impl FnOnce(kube::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Kube { what, source }
}

/// Where the lab's programs are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub kube_sim: PathBuf,
    pub controller: PathBuf,
    pub agent: PathBuf,
    pub cni: PathBuf,
    pub lab: PathBuf,
}

/// Directories searched for a binary: `$TABBY_LAB_BIN_DIR` when set, the running executable's
/// directory (and its parent for test executables under `deps/`), then
/// `<workspace>/target/{release,debug}`.
pub fn binary_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("TABBY_LAB_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_path_buf());
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(parent) = dir.parent()
        {
            dirs.push(parent.to_path_buf());
        }
    }
    if let Some(root) = tabby_netlab::workspace_root() {
        dirs.push(root.join("target/release"));
        dirs.push(root.join("target/debug"));
    }
    dirs
}

fn package_of(binary: &str) -> &str {
    match binary {
        "tabby-ipam-controller" => "tabby-ipam-controller",
        other => other,
    }
}

impl Binaries {
    pub fn find() -> Result<Binaries> {
        let dirs = binary_dirs();
        let find = |name: &str| {
            dirs.iter()
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| LabError::MissingBinary {
                    binary: name.into(),
                    package: package_of(name).into(),
                    looked: dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        };
        Ok(Binaries {
            kube_sim: find("tabby-kube-sim")?,
            controller: find("tabby-ipam-controller")?,
            agent: find("tabby-agent")?,
            cni: find("tabby-cni")?,
            lab: find("tabby-lab")?,
        })
    }
}

/// Checks what `up` needs besides our binaries.
pub fn check_system() -> Result<()> {
    if !tabby_netlab::is_root() {
        return Err(LabError::NotRoot);
    }
    let missing: Vec<&str> = SYSTEM_PROGRAMS
        .iter()
        .copied()
        .filter(|p| tabby_netlab::find_program(p).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LabError::MissingPrograms(missing.join(", ")))
    }
}

/// The outcome of [`Lab::up`].
pub enum Up {
    Started(Box<Lab>),
    /// A complete lab already runs in this state directory; nothing was changed.
    AlreadyRunning(Box<Lab>),
}

/// A cluster-scoped API kind the lab reads, patches or deletes by name.
pub trait ClusterObject:
    kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}
impl<K> ClusterObject for K where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// A running lab.
pub struct Lab {
    dir: PathBuf,
    opts: Options,
    state: State,
    bins: Binaries,
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

/// Result of a ping series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingResult {
    pub sent: u32,
    pub received: u32,
}

impl PingResult {
    pub fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.received)
    }
}

fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

fn netns_exists(name: &str) -> bool {
    Path::new(&netns_path(name)).exists()
}

fn run(cmd: &mut Command) -> Result<String> {
    Ok(tabby_netlab::run(cmd)?)
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io(format!("creating {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", path.display())))
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("finding a free port"))
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    log: impl Fn() -> String,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(LabError::Timeout {
                what: what.into(),
                waited: start.elapsed(),
                log: log(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `f` on a thread inside network namespace `netns` (sockets it makes live there).
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = netns_path(netns);
    let handle = std::fs::File::open(&path).map_err(io(format!("opening {path}")))?;
    std::thread::spawn(move || {
        nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| LabError::Other(format!("entering {path}: {e}")))?;
        Ok(f())
    })
    .join()
    .map_err(|_| LabError::Other(format!("the thread inside {netns} panicked")))?
}

/// `GET path` on `addr` inside `netns`: (status, body), or `None` when nothing answers.
pub fn http_get_in(netns: &str, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    in_netns(netns, move || -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut buf = Vec::new();
        let _ = s.take(1 << 20).read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.trim().to_string());
        Some((status, body.unwrap_or_default()))
    })
    .ok()
    .flatten()
}

/// Most bytes [`tcp_echo`] reads on either side.
const TCP_ECHO_LIMIT: u64 = 16 << 20;

/// A bounded TCP exchange between two namespaces: a server bound to `to` inside `to_ns`
/// accepts one connection, reads until the client's FIN and sends every byte back; the
/// client, inside `from_ns`, sends `payload`, half-closes, and reads the echo. Returns
/// (bytes the server received, bytes the client got back). Every step times out in seconds.
pub fn tcp_echo(
    from_ns: &str,
    to_ns: &str,
    to: SocketAddr,
    payload: Vec<u8>,
) -> Result<(usize, Vec<u8>)> {
    let step = Duration::from_secs(10);
    let listener = in_netns(to_ns, move || std::net::TcpListener::bind(to))?
        .map_err(io(format!("listening on {to} in {to_ns}")))?;
    let server = std::thread::spawn(move || -> std::io::Result<usize> {
        // A non-blocking accept polled against a deadline: a client that never arrives
        // cannot hang the test.
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + step;
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no connection arrived",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(step))?;
        s.set_write_timeout(Some(step))?;
        let mut buf = Vec::new();
        (&mut s).take(TCP_ECHO_LIMIT).read_to_end(&mut buf)?;
        s.write_all(&buf)?;
        Ok(buf.len())
    });
    let client = in_netns(from_ns, move || -> std::io::Result<Vec<u8>> {
        let mut s = std::net::TcpStream::connect_timeout(&to, step)?;
        s.set_read_timeout(Some(step))?;
        s.set_write_timeout(Some(step))?;
        s.write_all(&payload)?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut back = Vec::new();
        s.take(TCP_ECHO_LIMIT).read_to_end(&mut back)?;
        Ok(back)
    });
    let served = server
        .join()
        .map_err(|_| LabError::Other(format!("the TCP server on {to} panicked")));
    // The client's error first: it says why (refused, unreachable) where the server only
    // saw nobody arrive.
    let back = client?.map_err(io(format!("TCP client in {from_ns} to {to}")))?;
    let served = served?.map_err(io(format!("TCP server on {to} in {to_ns}")))?;
    Ok((served, back))
}

/// Parses ping's summary line (`3 packets transmitted, 3 received, ...`).
pub fn parse_ping(out: &str) -> Option<PingResult> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    Some(PingResult {
        sent: nums.next()?,
        received: nums.next()?,
    })
}

/// Address strings (no prefix) from a CNI result's `ips`.
pub fn result_addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip["address"].as_str())
                .filter_map(|a| a.split('/').next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn dyn_api(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    let plural = format!("{}s", kind.to_lowercase());
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tabby.dev", "v1alpha1", kind),
        &plural,
    );
    Api::all_with(client.clone(), &ar)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Lab {
    /// Builds the lab described by `opts` in `dir` (created if needed), or finds it running.
    pub fn up(opts: Options, dir: &Path) -> Result<Up> {
        opts.validate()?;
        check_system()?;
        let bins = Binaries::find()?;
        let helm = chart::find_helm()?;
        if let Some(old) = State::load(dir)? {
            if old.complete && lab_alive(&old) {
                return Ok(Up::AlreadyRunning(Box::new(Lab::attach_state(
                    dir, old, bins,
                )?)));
            }
            eprintln!(
                "tabby-lab: a previous lab in {} is incomplete or partly gone; removing it first",
                dir.display()
            );
            down(dir)?;
        }
        let mut names: Vec<String> = plan::nodes(&opts)
            .iter()
            .flat_map(|n| {
                std::iter::once(n.netns.clone()).chain(n.pods.iter().map(|p| p.netns.clone()))
            })
            .collect();
        names.push(plan::tor_netns(&opts.prefix));
        let taken: Vec<String> = names.into_iter().filter(|n| netns_exists(n)).collect();
        if !taken.is_empty() {
            return Err(LabError::Foreign(taken.join(", ")));
        }
        mkdir(dir, 0o755)?;
        mkdir(&dir.join("logs"), 0o755)?;
        let st = State {
            prefix: opts.prefix.clone(),
            nodes: opts.nodes,
            ipv6: opts.ipv6,
            mesh: opts.mesh,
            tor_password: opts.tor_password.clone(),
            pods_per_node: opts.pods_per_node,
            ..State::default()
        };
        st.save(dir)?;
        // Rendered before anything runs: a chart that does not render stops `up` here.
        let objects = chart::default_objects(&helm, &opts, dir)?;
        let rt = runtime()?;
        let mut lab = start_api(dir, st, &bins, rt)?;
        lab.opts = opts;
        let built = lab.build(&objects);
        if let Err(e) = built {
            // Leave the record so `down` (or the next `up`) removes what was made.
            let _ = lab.save();
            return Err(e);
        }
        lab.state.complete = true;
        lab.save()?;
        Ok(Up::Started(Box::new(lab)))
    }

    /// The lab recorded in `dir`, for status queries and test operations.
    pub fn attach(dir: &Path) -> Result<Lab> {
        let st = State::load(dir)?
            .ok_or_else(|| LabError::Other(format!("no lab recorded in {}", dir.display())))?;
        Lab::attach_state(dir, st, Binaries::find()?)
    }

    fn attach_state(dir: &Path, st: State, bins: Binaries) -> Result<Lab> {
        let rt = runtime()?;
        let client = rt.block_on(client_from(&dir.join("kubeconfig")))?;
        let opts = Options {
            prefix: st.prefix.clone(),
            nodes: st.nodes,
            ipv6: st.ipv6,
            mesh: st.mesh,
            tor_password: st.tor_password.clone(),
            pods_per_node: st.pods_per_node,
            ..Options::default()
        };
        Ok(Lab {
            dir: dir.to_path_buf(),
            opts,
            state: st,
            bins,
            rt,
            client,
        })
    }

    fn save(&self) -> Result<()> {
        Ok(self.state.save(&self.dir)?)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Runs a future on the lab's runtime (for tests that talk to the API).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The user's kubeconfig (kube-sim in the root namespace).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The lab's nodes (without those removed).
    pub fn nodes(&self) -> Vec<NodePlan> {
        plan::nodes(&self.opts)
            .into_iter()
            .filter(|n| !self.state.removed.contains(&n.name))
            .collect()
    }

    pub fn node(&self, name: &str) -> Result<NodePlan> {
        self.nodes()
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| LabError::Other(format!("no node {name} in the lab")))
    }

    pub fn tor_netns(&self) -> String {
        plan::tor_netns(&self.opts.prefix)
    }

    fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }

    pub fn agent_log(&self, node: &str) -> PathBuf {
        self.dir.join("logs").join(format!("agent-{node}.log"))
    }

    fn log_path(&self, role: &str) -> PathBuf {
        self.dir
            .join("logs")
            .join(format!("{}.log", role.replace('/', "-")))
    }

    /// Starts a detached process (see [`spawn_detached`]) and records it.
    fn spawn(&mut self, role: &str, argv: Vec<String>, env: &[(&str, String)]) -> Result<()> {
        let rec = spawn_detached(&self.log_path(role), role, argv, env)?;
        self.state.processes.insert(role.into(), rec);
        self.save()
    }

    /// Restarts a recorded process with its recorded command line and environment.
    fn respawn(&mut self, role: &str) -> Result<()> {
        let rec = self
            .state
            .processes
            .get(role)
            .cloned()
            .ok_or_else(|| LabError::Other(format!("no process {role} recorded")))?;
        let env: Vec<(&str, String)> = rec
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        self.spawn(role, rec.launch.clone(), &env)
    }

    fn check_process(&self, role: &str) -> Result<()> {
        match self.state.processes.get(role) {
            Some(rec) if state::is_alive(rec.pid) => Ok(()),
            Some(rec) => Err(LabError::Exited {
                what: role.into(),
                log: log_tail(&rec.log, 30),
            }),
            None => Err(LabError::Other(format!("{role} was never started"))),
        }
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        // Recorded first: an interrupted `up` still removes it.
        if !self.state.netns.iter().any(|n| n == name) {
            self.state.netns.push(name.into());
            self.save()?;
        }
        if !netns_exists(name) {
            ip(&["netns", "add", name])?;
        }
        ip(&["-n", name, "link", "set", "lo", "up"]).map(drop)
    }

    fn sysctl(&self, netns: &str, key: &str, value: &str) -> Result<()> {
        run(Command::new("ip")
            .args(["netns", "exec", netns, "sysctl", "-q", "-w"])
            .arg(format!("{key}={value}")))
        .map(drop)
    }

    /// Everything after kube-sim: the chart's CRDs and default `objects`, controller, ToR,
    /// nodes, pods, convergence.
    fn build(&mut self, objects: &[Value]) -> Result<()> {
        self.apply_objects(objects)?;
        self.start_controller()?;
        self.start_tor()?;
        for n in self.nodes() {
            self.start_node(&n)?;
        }
        for n in self.nodes() {
            self.wait_node_blocks(&n.name)?;
        }
        for n in self.nodes() {
            for p in &n.pods {
                self.add_pod(&n, p)?;
            }
        }
        self.wait_converged(STEP_TIMEOUT)?;
        // Readiness needs every session Established; the report shows whoever is still not
        // ready after this, with the agent's reason.
        let start = Instant::now();
        while start.elapsed() < READY_WAIT
            && !(self
                .nodes()
                .iter()
                .all(|n| self.agent_ready(&n.name).is_some_and(|(s, _)| s == 200))
                && self
                    .node_statuses()
                    .is_ok_and(|m| m.len() >= self.opts.nodes))
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn apply_objects(&mut self, objects: &[Value]) -> Result<()> {
        let client = self.client.clone();
        let opts = self.opts.clone();
        let objects = objects.to_vec();
        self.rt.block_on(async move {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            for (file, text) in CRDS {
                let crd: CustomResourceDefinition = serde_yaml::from_str(text)
                    .map_err(|e| LabError::Other(format!("embedded CRD {file}: {e}")))?;
                match crds.create(&PostParams::default(), &crd).await {
                    Ok(_) => {}
                    Err(e) if is_conflict(&e) => {}
                    Err(e) => return Err(kerr(format!("creating CRD {file}"))(e)),
                }
            }
            if let Some(secret) = plan::tor_secret(&opts) {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), plan::SYSTEM_NAMESPACE);
                let s: Secret = serde_json::from_value(secret)
                    .map_err(|e| LabError::Other(format!("ToR Secret: {e}")))?;
                create_or_keep(&secrets, &s, "the ToR password Secret").await?;
            }
            for obj in objects {
                let kind = obj["kind"].as_str().unwrap_or_default().to_string();
                let api = dyn_api(&client, &kind);
                let o: DynamicObject = serde_json::from_value(obj)
                    .map_err(|e| LabError::Other(format!("{kind}: {e}")))?;
                // The CRD's endpoints may take a moment to appear.
                let start = Instant::now();
                loop {
                    match api.create(&PostParams::default(), &o).await {
                        Ok(_) => break,
                        Err(e) if is_conflict(&e) => break,
                        Err(e) if is_not_found(&e) && start.elapsed() < Duration::from_secs(10) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => return Err(kerr(format!("creating {kind}"))(e)),
                    }
                }
            }
            Ok(())
        })
    }

    fn start_controller(&mut self) -> Result<()> {
        let port = free_port()?;
        self.state.controller_port = port;
        let argv = vec![
            self.bins.controller.display().to_string(),
            format!("--listen=127.0.0.1:{port}"),
            "--lease-name=tabby-ipam-controller".into(),
            format!("--cooldown={}", self.opts.cooldown_s),
            "--resync=5".into(),
            format!("--gc-grace={}", self.opts.gc_grace_s),
        ];
        let env = [
            ("KUBECONFIG", self.kubeconfig().display().to_string()),
            ("POD_NAME", "tabby-ipam-controller-lab".into()),
            ("TABBY_LEASE_NAMESPACE", plan::SYSTEM_NAMESPACE.into()),
            ("RUST_LOG", "info".into()),
        ];
        self.spawn("controller", argv, &env)?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = self.log_path("controller");
        wait_for(
            "the IPAM controller to be ready",
            STEP_TIMEOUT,
            || log_tail(&log, 30),
            || {
                self.check_process("controller")?;
                Ok(http_get_root(addr, "/readyz")
                    .filter(|(s, _)| *s == 200)
                    .map(drop))
            },
        )
    }

    fn start_tor(&mut self) -> Result<()> {
        let ns = self.tor_netns();
        self.add_netns(&ns)?;
        let nsx = ns.as_str();
        if ip(&["-n", nsx, "link", "show", "br0"]).is_err() {
            ip(&["-n", nsx, "link", "add", "br0", "type", "bridge"])?;
        }
        ip(&["-n", nsx, "link", "set", "br0", "up"])?;
        let _ = ip(&[
            "-n",
            nsx,
            "addr",
            "add",
            &format!("{}/24", plan::TOR_IPV4),
            "dev",
            "br0",
        ]);
        if self.opts.ipv6 {
            let _ = ip(&[
                "-n",
                nsx,
                "addr",
                "add",
                &format!("{}/64", plan::TOR_IPV6),
                "dev",
                "br0",
                "nodad",
            ]);
            // A link-local address from the start: the kernel makes one only once a port
            // brings carrier, and until then FRR resets every IPv6 session ("nexthop_set
            // failed ... br0 does not have a v6 LL address").
            let _ = ip(&[
                "-n",
                nsx,
                "addr",
                "add",
                "fe80::1/64",
                "dev",
                "br0",
                "nodad",
            ]);
        }
        self.sysctl(nsx, "net.ipv4.ip_forward", "1")?;
        self.sysctl(nsx, "net.ipv6.conf.all.forwarding", "1")?;
        // FRR drops to user frr: its directory must be its own and reachable.
        let d = self.dir.join("tor");
        mkdir(&d, 0o755)?;
        write_file(&d.join("zebra.conf"), "hostname tor-zebra\n")?;
        write_file(&d.join("bgpd.conf"), &plan::tor_bgpd_conf(&self.opts))?;
        let user = nix::unistd::User::from_name("frr")
            .ok()
            .flatten()
            .ok_or_else(|| {
                LabError::Other("user `frr` does not exist (is FRR installed?)".into())
            })?;
        for p in [d.clone(), d.join("zebra.conf"), d.join("bgpd.conf")] {
            std::os::unix::fs::chown(&p, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(io(format!("chown frr {}", p.display())))?;
        }
        let zserv = d.join("zserv.api");
        let frr = |daemon: &str, short: &str| -> Vec<String> {
            let mut v = nsenter(nsx);
            v.extend([
                daemon.to_string(),
                "-f".into(),
                d.join(format!("{short}.conf")).display().to_string(),
                "-i".into(),
                d.join(format!("{short}.pid")).display().to_string(),
                "-z".into(),
                zserv.display().to_string(),
                "--vty_socket".into(),
                d.display().to_string(),
                "-u".into(),
                "frr".into(),
                "-g".into(),
                "frr".into(),
                "-P".into(),
                "0".into(),
                "--log".into(),
                "stdout".into(),
            ]);
            v
        };
        self.spawn("tor-zebra", frr(FRR_ZEBRA, "zebra"), &[])?;
        let zlog = self.log_path("tor-zebra");
        wait_for(
            "FRR zebra's zserv socket",
            STEP_TIMEOUT,
            || log_tail(&zlog, 20),
            || {
                self.check_process("tor-zebra")?;
                Ok(zserv.exists().then_some(()))
            },
        )?;
        self.spawn("tor-bgpd", frr(FRR_BGPD, "bgpd"), &[])?;
        let blog = self.log_path("tor-bgpd");
        wait_for(
            "FRR bgpd's vty socket",
            STEP_TIMEOUT,
            || log_tail(&blog, 20),
            || {
                self.check_process("tor-bgpd")?;
                Ok(self.tor_vtysh("show bgp summary").is_ok().then_some(()))
            },
        )
    }

    /// One vtysh command on the ToR.
    pub fn tor_vtysh(&self, command: &str) -> Result<String> {
        let d = self.dir.join("tor");
        run(Command::new("ip")
            .args(["netns", "exec", &self.tor_netns(), "vtysh", "--vty_socket"])
            .arg(&d)
            .args(["-c", command]))
    }

    /// A vtysh `... json` command on the ToR, parsed.
    pub fn tor_json(&self, command: &str) -> Result<Value> {
        let out = self.tor_vtysh(command)?;
        serde_json::from_str(&out)
            .map_err(|e| LabError::Other(format!("`{command}` did not return JSON ({e}): {out}")))
    }

    /// The ToR's BGP neighbours and their states (`10.77.0.11` -> `Established`).
    pub fn tor_sessions(&self) -> Result<BTreeMap<String, String>> {
        let v = self.tor_json("show bgp neighbors json")?;
        Ok(v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, p)| p.get("bgpState").is_some())
                    .map(|(ip, p)| {
                        (
                            ip.clone(),
                            p["bgpState"].as_str().unwrap_or("?").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Routes the ToR installed from BGP: prefix -> next hops.
    pub fn tor_routes(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let mut out = BTreeMap::new();
        let mut families = vec!["show ip route bgp json"];
        if self.opts.ipv6 {
            families.push("show ipv6 route bgp json");
        }
        for cmd in families {
            let v = self.tor_json(cmd)?;
            if let Some(m) = v.as_object() {
                for (prefix, entries) in m {
                    let hops: Vec<String> = entries
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|e| e["selected"].as_bool().unwrap_or(false))
                        .flat_map(|e| e["nexthops"].as_array().cloned().unwrap_or_default())
                        .filter_map(|h| h["ip"].as_str().map(str::to_string))
                        .collect();
                    if !hops.is_empty() {
                        out.insert(prefix.clone(), hops);
                    }
                }
            }
        }
        Ok(out)
    }

    fn start_node(&mut self, n: &NodePlan) -> Result<()> {
        let ns = n.netns.clone();
        let nsx = ns.as_str();
        self.add_netns(nsx)?;
        let tor = self.tor_netns();
        if ip(&["-n", nsx, "link", "show", "eth0"]).is_err() {
            ip(&[
                "link", "add", &n.tor_if, "netns", &tor, "type", "veth", "peer", "name", "eth0",
                "netns", nsx,
            ])?;
        }
        ip(&["-n", &tor, "link", "set", &n.tor_if, "master", "br0", "up"])?;
        ip(&["-n", nsx, "link", "set", "eth0", "up"])?;
        let _ = ip(&[
            "-n",
            nsx,
            "addr",
            "add",
            &format!("{}/24", n.ipv4),
            "dev",
            "eth0",
        ]);
        if let Some(v6) = n.ipv6 {
            let _ = ip(&[
                "-n",
                nsx,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
        }
        self.sysctl(nsx, "net.ipv4.ip_forward", "1")?;
        self.sysctl(nsx, "net.ipv6.conf.all.forwarding", "1")?;

        // The Node object, as a kubelet registers it.
        let client = self.client.clone();
        let node_obj = plan::node_object(n);
        self.rt.block_on(async move {
            let nodes: Api<Node> = Api::all(client);
            let node: Node = serde_json::from_value(node_obj.clone())
                .map_err(|e| LabError::Other(format!("Node object: {e}")))?;
            create_or_keep(&nodes, &node, "a Node").await?;
            let name = node_obj["metadata"]["name"].as_str().unwrap_or_default();
            nodes
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": node_obj["status"]})),
                )
                .await
                .map_err(kerr(format!("setting {name}'s addresses")))?;
            Ok::<_, LabError>(())
        })?;

        // The node's API proxy and its kubeconfig.
        let api: SocketAddr = self
            .state
            .api_server
            .trim_start_matches("https://")
            .parse()
            .map_err(|e| {
                LabError::Other(format!("API server address {}: {e}", self.state.api_server))
            })?;
        let role = format!("proxy/{}", n.name);
        let argv = vec![
            self.bins.lab.display().to_string(),
            "api-proxy".into(),
            "--netns".into(),
            nsx.into(),
            "--listen".into(),
            plan::NODE_API_ADDR.into(),
            "--to".into(),
            api.to_string(),
        ];
        self.spawn(&role, argv, &[("RUST_LOG", "warn".into())])?;
        let node_api: SocketAddr = plan::NODE_API_ADDR
            .parse()
            .map_err(|e| LabError::Other(format!("{}: {e}", plan::NODE_API_ADDR)))?;
        let plog = self.log_path(&role);
        wait_for(
            &format!("{}'s API proxy", n.name),
            STEP_TIMEOUT,
            || log_tail(&plog, 10),
            || {
                self.check_process(&role)?;
                let up = in_netns(nsx, move || {
                    std::net::TcpStream::connect_timeout(&node_api, Duration::from_secs(1)).is_ok()
                })?;
                Ok(up.then_some(()))
            },
        )?;
        let nd = self.node_dir(&n.name);
        mkdir(&nd, 0o755)?;
        let kubeconfig = nd.join("kubeconfig");
        write_file(
            &kubeconfig,
            &node_kubeconfig(
                &self.kubeconfig(),
                &format!("https://{}", plan::NODE_API_ADDR),
            )?,
        )?;
        write_file(
            &nd.join("10-tabby.conflist"),
            &serde_json::to_string_pretty(&plan::conflist(
                &self.cni_socket(&n.name).display().to_string(),
            ))
            .unwrap_or_default(),
        )?;
        self.start_agent(&n.name)
    }

    /// The node's CNI socket.
    pub fn cni_socket(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("run").join("cni.sock")
    }

    fn agent_role(node: &str) -> String {
        format!("agent/{node}")
    }

    /// Starts (or restarts) `node`'s agent with the contract's flags (agent-contracts §1).
    pub fn start_agent(&mut self, node: &str) -> Result<()> {
        let role = Self::agent_role(node);
        if self.state.processes.contains_key(&role) {
            return self.respawn(&role);
        }
        let n = self.node(node)?;
        let nd = self.node_dir(node);
        let mut argv = nsenter(&n.netns);
        argv.extend([
            self.bins.agent.display().to_string(),
            "--node-name".into(),
            node.into(),
            "--namespace".into(),
            plan::SYSTEM_NAMESPACE.into(),
            "--listen".into(),
            format!("0.0.0.0:{}", plan::AGENT_STATUS_PORT),
            "--cni-socket".into(),
            self.cni_socket(node).display().to_string(),
            "--state-dir".into(),
            nd.join("state").display().to_string(),
            "--kubeconfig".into(),
            nd.join("kubeconfig").display().to_string(),
            "--ipv4-autodetect".into(),
            "interface=eth0".into(),
        ]);
        if n.ipv6.is_some() {
            argv.extend(["--ipv6-autodetect".into(), "interface=eth0".into()]);
        }
        // TABBY_LAB_AGENT_LOG overrides the agents' filter (e.g. `info,tabby_bgp=debug` to see
        // every session transition while chasing a session that stays down).
        let filter = std::env::var("TABBY_LAB_AGENT_LOG").unwrap_or_else(|_| "info".into());
        self.spawn(&role, argv, &[("RUST_LOG", filter)])
    }

    /// Stops `node`'s agent with `signal` (SIGKILL: no goodbye, kernel routes stay).
    pub fn stop_agent(&mut self, node: &str, signal: Signal) -> Result<bool> {
        let role = Self::agent_role(node);
        let rec = self
            .state
            .processes
            .get(&role)
            .ok_or_else(|| LabError::Other(format!("no agent recorded for {node}")))?;
        Ok(state::stop(rec, signal, Duration::from_secs(10)))
    }

    /// The agent's `/readyz` answer: (status, body).
    pub fn agent_ready(&self, node: &str) -> Option<(u16, String)> {
        let n = self.node(node).ok()?;
        http_get_in(
            &n.netns,
            ([127, 0, 0, 1], plan::AGENT_STATUS_PORT).into(),
            "/readyz",
        )
    }

    /// Waits until `node`'s agent answers `/healthz` (it is up; readiness may wait for peers).
    pub fn wait_agent_up(&self, node: &str, timeout: Duration) -> Result<()> {
        let n = self.node(node)?;
        let role = Self::agent_role(node);
        let log = self.agent_log_path(node);
        wait_for(
            &format!("{node}'s agent to answer /healthz"),
            timeout,
            || log_tail(&log, 30),
            || {
                self.check_process(&role)?;
                Ok(http_get_in(
                    &n.netns,
                    ([127, 0, 0, 1], plan::AGENT_STATUS_PORT).into(),
                    "/healthz",
                )
                .filter(|(s, _)| *s == 200)
                .map(drop))
            },
        )
    }

    fn agent_log_path(&self, node: &str) -> PathBuf {
        self.log_path(&Self::agent_role(node))
    }

    /// IPAMBlocks by node: node -> CIDRs.
    pub fn blocks(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let client = self.client.clone();
        self.rt.block_on(async move {
            let api: Api<IPAMBlock> = Api::all(client);
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(kerr("listing IPAMBlocks"))?;
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for b in list.items {
                out.entry(b.spec.node.clone())
                    .or_default()
                    .push(b.spec.cidr.clone());
            }
            for v in out.values_mut() {
                v.sort();
            }
            Ok(out)
        })
    }

    /// NodeNetworkStatus objects by node (empty when the agents do not publish them).
    pub fn node_statuses(&self) -> Result<BTreeMap<String, NodeNetworkStatus>> {
        let client = self.client.clone();
        self.rt.block_on(async move {
            let api: Api<NodeNetworkStatus> = Api::all(client);
            match api.list(&ListParams::default()).await {
                Ok(list) => Ok(list
                    .items
                    .into_iter()
                    .map(|s| (s.spec.node.clone(), s))
                    .collect()),
                Err(e) if is_not_found(&e) => Ok(BTreeMap::new()),
                Err(e) => Err(kerr("listing NodeNetworkStatuses")(e)),
            }
        })
    }

    fn wait_node_blocks(&self, node: &str) -> Result<()> {
        let role = Self::agent_role(node);
        let clog = self.log_path("controller");
        wait_for(
            &format!("a block for {node}"),
            STEP_TIMEOUT,
            || log_tail(&clog, 20),
            || {
                self.check_process("controller")?;
                self.check_process(&role)?;
                Ok(self
                    .blocks()?
                    .get(node)
                    .is_some_and(|b| !b.is_empty())
                    .then_some(()))
            },
        )
    }

    /// Tabby's routes (protocol 84) in `netns`: destination -> the rest of `ip route`'s line.
    pub fn tabby_routes(&self, netns: &str) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let mut fams = vec!["-4"];
        if self.opts.ipv6 {
            fams.push("-6");
        }
        for fam in fams {
            let text = ip(&[fam, "-n", netns, "route", "show", "proto", "84"])?;
            for line in text.lines() {
                let mut words = line.split_whitespace();
                let mut dst = words.next().unwrap_or_default().to_string();
                let mut rest: Vec<&str> = words.collect();
                if dst == "blackhole" || dst == "unreachable" {
                    let kind = dst.clone();
                    dst = rest.first().map(|s| s.to_string()).unwrap_or_default();
                    rest[0] = &kind;
                    out.insert(dst, rest.join(" "));
                    continue;
                }
                out.insert(dst, rest.join(" "));
            }
        }
        Ok(out)
    }

    /// Runs the CNI plugin for `pod` on `n` as a runtime does: the pod's netns made with
    /// `ip netns add`, CNI_* variables, the network configuration on stdin. Retries while the
    /// agent says "try again later" (code 11).
    fn add_pod(&mut self, n: &NodePlan, p: &PodPlan) -> Result<()> {
        if self.state.pods.contains_key(&p.netns) {
            return Ok(());
        }
        let p = &self.prepare_pod(n, p)?;
        let started = Instant::now();
        let result = loop {
            let (code, out) = self.cni(n, p, "ADD")?;
            if code == 0 {
                break out;
            }
            let retry = out["code"].as_u64() == Some(11);
            if !retry || started.elapsed() > STEP_TIMEOUT {
                return Err(LabError::Other(format!(
                    "tabby-cni ADD for {} on {} failed (exit {code}): {out}",
                    p.name, n.name
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        self.state.pods.insert(
            p.netns.clone(),
            PodRecord {
                node: n.name.clone(),
                name: p.name.clone(),
                container_id: p.container_id.clone(),
                addresses: result_addresses(&result),
            },
        );
        self.save()
    }

    /// What the kubelet and runtime do before they call the plugin: the pod's network
    /// namespace (`ip netns add`, recorded) and its Pod object. Returns the plan with the uid
    /// the API server gave the Pod.
    pub fn prepare_pod(&mut self, n: &NodePlan, p: &PodPlan) -> Result<PodPlan> {
        self.add_netns(&p.netns)?;
        let client = self.client.clone();
        let pod_obj = plan::pod_object(p, &n.name);
        let name = p.name.clone();
        // The API server assigns the uid; the runtime passes the Pod's real one.
        let uid = self.rt.block_on(async move {
            let pods: Api<Pod> = Api::namespaced(client, plan::POD_NAMESPACE);
            let pod: Pod = serde_json::from_value(pod_obj)
                .map_err(|e| LabError::Other(format!("Pod object: {e}")))?;
            create_or_keep(&pods, &pod, "a Pod").await?;
            let live = pods
                .get(&name)
                .await
                .map_err(kerr(format!("reading Pod {name}")))?;
            Ok::<_, LabError>(live.metadata.uid)
        })?;
        Ok(PodPlan {
            uid: uid.unwrap_or_else(|| p.uid.clone()),
            ..p.clone()
        })
    }

    /// One CNI invocation for `p` on `n`: (exit code, parsed stdout).
    pub fn cni(&self, n: &NodePlan, p: &PodPlan, command: &str) -> Result<(i32, Value)> {
        let conflist = plan::conflist(&self.cni_socket(&n.name).display().to_string());
        let stdin = plan::plugin_stdin(&conflist).to_string();
        let cni_path = self
            .bins
            .cni
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let mut child = Command::new(&self.bins.cni)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &p.container_id)
            .env("CNI_NETNS", netns_path(&p.netns))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", plan::cni_args(p))
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("running tabby-cni"))?;
        if let Some(mut s) = child.stdin.take() {
            s.write_all(stdin.as_bytes())
                .map_err(io("writing tabby-cni's stdin"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(io("waiting for tabby-cni"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}))
        };
        Ok((out.status.code().unwrap_or(-1), v))
    }

    /// The lab's pods with their addresses, by pod netns.
    pub fn pods(&self) -> &BTreeMap<String, PodRecord> {
        &self.state.pods
    }

    /// The first IPv4 address of the pod in `pod_netns`.
    pub fn pod_ipv6(&self, pod_netns: &str) -> Option<String> {
        self.state
            .pods
            .get(pod_netns)?
            .addresses
            .iter()
            .find(|a| a.contains(':'))
            .cloned()
    }

    /// The first IPv4 address of the pod in `pod_netns`.
    pub fn pod_ipv4(&self, pod_netns: &str) -> Option<String> {
        self.state
            .pods
            .get(pod_netns)?
            .addresses
            .iter()
            .find(|a| !a.contains(':'))
            .cloned()
    }

    /// Waits until every node has Tabby routes for every other node's blocks, and the ToR has
    /// a route for every block.
    pub fn wait_converged(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let last = match self.convergence_gap() {
                Ok(None) => return Ok(()),
                Ok(Some(gap)) => gap,
                Err(e) => e.to_string(),
            };
            for n in self.nodes() {
                self.check_process(&Self::agent_role(&n.name))?;
            }
            if start.elapsed() > timeout {
                return Err(LabError::Timeout {
                    what: "routes to converge".into(),
                    waited: start.elapsed(),
                    log: last,
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// What is still missing before the lab has converged, in words; `None` when nothing.
    pub fn convergence_gap(&self) -> Result<Option<String>> {
        let blocks = self.blocks()?;
        let tor = self.tor_routes()?;
        for n in self.nodes() {
            let routes = self.tabby_routes(&n.netns)?;
            for (owner, cidrs) in &blocks {
                for c in cidrs {
                    if !routes.contains_key(c) {
                        return Ok(Some(format!(
                            "{} has no route for {c} ({owner}'s block)",
                            n.name
                        )));
                    }
                }
            }
        }
        for (owner, cidrs) in &blocks {
            for c in cidrs {
                if !tor.contains_key(c) {
                    return Ok(Some(format!(
                        "the ToR has no route for {c} ({owner}'s block)"
                    )));
                }
            }
        }
        Ok(None)
    }

    /// `ping` from inside `netns` to `dst`: `count` packets every `interval_ms`.
    pub fn ping(&self, netns: &str, dst: &str, count: u32, interval_ms: u32) -> Result<PingResult> {
        let out = Command::new("ip")
            .args(["netns", "exec", netns, "ping", "-n", "-q"])
            .args(["-c", &count.to_string()])
            .args(["-i", &format!("{:.3}", f64::from(interval_ms) / 1000.0)])
            .args(["-W", "1", dst])
            .output()
            .map_err(io("running ping"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_ping(&text).ok_or_else(|| {
            LabError::Other(format!(
                "ping {dst} from {netns}: no summary ({}{})",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
    }

    /// Changes the password in the ToR peer's Secret (what an operator rotating it does).
    pub fn set_tor_secret(&self, password: &str) -> Result<()> {
        let client = self.client.clone();
        let patch = plan::tor_secret_data(password);
        self.rt.block_on(async move {
            let secrets: Api<Secret> = Api::namespaced(client, plan::SYSTEM_NAMESPACE);
            let mut s = secrets
                .get(plan::TOR_SECRET.0)
                .await
                .map_err(kerr("reading the ToR Secret"))?;
            let data: std::collections::BTreeMap<String, k8s_openapi::ByteString> =
                serde_json::from_value(patch["data"].clone())
                    .map_err(|e| LabError::Other(format!("Secret data: {e}")))?;
            s.data = Some(data);
            s.string_data = None;
            secrets
                .replace(plan::TOR_SECRET.0, &PostParams::default(), &s)
                .await
                .map_err(kerr("updating the ToR Secret"))?;
            Ok(())
        })
    }

    /// Deletes the BGPPeer `name` (what an operator removing a peering does).
    pub fn delete_bgp_peer(&self, name: &str) -> Result<()> {
        self.delete_cluster_object::<tabby_api::v1alpha1::BGPPeer>(name)
    }

    /// Deletes the IPPool `name`; the controller's finalizer holds it until it is drained.
    pub fn delete_ip_pool(&self, name: &str) -> Result<()> {
        self.delete_cluster_object::<tabby_api::v1alpha1::IPPool>(name)
    }

    /// The IPPool `name`, or `None` once it is gone.
    pub fn ip_pool(&self, name: &str) -> Result<Option<tabby_api::v1alpha1::IPPool>> {
        self.get_cluster_object(name)
    }

    /// Deletes the cluster-scoped object `name` of kind `K`.
    pub fn delete_cluster_object<K: ClusterObject>(&self, name: &str) -> Result<()> {
        let api: Api<K> = Api::all(self.client.clone());
        let what = format!("deleting {} {name}", K::kind(&()));
        self.rt
            .block_on(api.delete(name, &kube::api::DeleteParams::default()))
            .map(drop)
            .map_err(kerr(what))
    }

    /// The cluster-scoped object `name` of kind `K`, or `None` when there is none.
    pub fn get_cluster_object<K: ClusterObject>(&self, name: &str) -> Result<Option<K>> {
        let api: Api<K> = Api::all(self.client.clone());
        let what = format!("reading {} {name}", K::kind(&()));
        self.rt.block_on(api.get_opt(name)).map_err(kerr(what))
    }

    /// A JSON merge patch to the cluster-scoped object `name` of kind `K` (what `kubectl patch
    /// --type merge` does); the object as stored afterwards.
    pub fn merge_patch_cluster_object<K: ClusterObject>(
        &self,
        name: &str,
        patch: Value,
    ) -> Result<K> {
        let api: Api<K> = Api::all(self.client.clone());
        let what = format!("patching {} {name}", K::kind(&()));
        self.rt
            .block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(patch)))
            .map_err(kerr(what))
    }

    /// Adds one more node (scale out): namespace, veth, Node object, agent, its pods.
    pub fn add_node(&mut self) -> Result<NodePlan> {
        self.opts.nodes += 1;
        self.state.nodes = self.opts.nodes;
        self.save()?;
        let n = plan::node(&self.opts, self.opts.nodes);
        self.start_node(&n)?;
        self.wait_node_blocks(&n.name)?;
        for p in &n.pods {
            self.add_pod(&n, p)?;
        }
        Ok(n)
    }

    /// Calls one of kube-sim's fault endpoints (`restart`, `drop-watches`, `compact`): an API
    /// server restart, every watch dropped, the watch history gone (reconnects get 410 Gone).
    pub fn api_fault(&self, what: &str) -> Result<()> {
        let client = self.client.clone();
        let req = http::Request::post(format!("/_sim/{what}"))
            .body(Vec::new())
            .map_err(|e| LabError::Other(format!("building /_sim/{what}: {e}")))?;
        self.rt
            .block_on(client.request_text(req))
            .map(drop)
            .map_err(kerr(format!("POST /_sim/{what}")))
    }

    /// Starts one more pod on `node` through the CNI (named with the next free letter).
    pub fn add_pod_to(&mut self, node: &str) -> Result<PodPlan> {
        let n = self.node(node)?;
        let taken = self.state.pods.values().filter(|p| p.node == node).count();
        let wide = Options {
            pods_per_node: taken + 1,
            ..self.opts.clone()
        };
        let p = plan::node(&wide, n.index)
            .pods
            .pop()
            .ok_or_else(|| LabError::Other(format!("no pod slot left on {node}")))?;
        if taken + 1 > 26 || self.state.pods.contains_key(&p.netns) {
            return Err(LabError::Other(format!("no pod slot left on {node}")));
        }
        self.add_pod(&n, &p)?;
        Ok(p)
    }

    /// Removes `node` as a dead machine leaves a cluster: its agent is SIGKILLed (no goodbye),
    /// its namespaces and API proxy go, then its Pod objects and its Node object are deleted.
    pub fn remove_node(&mut self, node: &str) -> Result<()> {
        let n = self.node(node)?;
        for role in [Self::agent_role(node), format!("proxy/{node}")] {
            if let Some(rec) = self.state.processes.get(&role) {
                state::stop(rec, Signal::SIGKILL, Duration::from_secs(5));
            }
        }
        for p in &n.pods {
            if netns_exists(&p.netns) {
                ip(&["netns", "del", &p.netns])?;
            }
            self.state.pods.remove(&p.netns);
        }
        if netns_exists(&n.netns) {
            ip(&["netns", "del", &n.netns])?;
        }
        self.state.removed.push(node.to_string());
        self.save()?;
        let client = self.client.clone();
        let names: Vec<String> = n.pods.iter().map(|p| p.name.clone()).collect();
        let node_name = node.to_string();
        self.rt.block_on(async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), plan::POD_NAMESPACE);
            for name in names {
                match pods.delete(&name, &Default::default()).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(kerr(format!("deleting Pod {name}"))(e)),
                }
            }
            let nodes: Api<Node> = Api::all(client);
            match nodes.delete(&node_name, &Default::default()).await {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(kerr(format!("deleting Node {node_name}"))(e)),
            }
        })
    }

    /// Restarts the ToR's FRR (both daemons SIGKILLed, then started with the same config).
    pub fn restart_tor(&mut self) -> Result<()> {
        for role in ["tor-bgpd", "tor-zebra"] {
            if let Some(rec) = self.state.processes.get(role) {
                state::stop(rec, Signal::SIGKILL, Duration::from_secs(5));
            }
        }
        let d = self.dir.join("tor");
        for stale in [
            "zserv.api",
            "zebra.vty",
            "bgpd.vty",
            "zebra.pid",
            "bgpd.pid",
        ] {
            let _ = std::fs::remove_file(d.join(stale));
        }
        self.respawn("tor-zebra")?;
        let zserv = d.join("zserv.api");
        let zlog = self.log_path("tor-zebra");
        wait_for(
            "FRR zebra's zserv socket",
            STEP_TIMEOUT,
            || log_tail(&zlog, 20),
            || {
                self.check_process("tor-zebra")?;
                Ok(zserv.exists().then_some(()))
            },
        )?;
        self.respawn("tor-bgpd")?;
        let blog = self.log_path("tor-bgpd");
        wait_for(
            "FRR bgpd's vty socket",
            STEP_TIMEOUT,
            || log_tail(&blog, 20),
            || {
                self.check_process("tor-bgpd")?;
                Ok(self.tor_vtysh("show bgp summary").is_ok().then_some(()))
            },
        )
    }

    /// Removes the lab (see [`down`]).
    pub fn down(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        down(&dir).map(drop)
    }
}

/// Removes the lab recorded in `dir`: processes (agents first, each only if its pid still runs
/// the recorded command line), then network namespaces (pods, nodes, ToR; killing anything
/// left inside), then the files `up` wrote. Idempotent: a missing record or a half-removed
/// lab is fine.
pub fn down(dir: &Path) -> Result<bool> {
    let Some(st) = State::load(dir)? else {
        return Ok(false);
    };
    // Agents first (they may still talk to the API and their peers while they stop), then
    // everything else; each group stopped in parallel.
    let (agents, others): (Vec<_>, Vec<_>) = st
        .processes
        .iter()
        .partition(|(role, _)| role.starts_with("agent/"));
    for group in [agents, others] {
        std::thread::scope(|s| {
            for (role, rec) in group {
                s.spawn(move || {
                    let start = Instant::now();
                    state::stop(rec, Signal::SIGTERM, STOP_GRACE);
                    if start.elapsed() >= STOP_GRACE {
                        eprintln!(
                            "tabby-lab: {role} did not stop within {STOP_GRACE:?} of SIGTERM; \
                             killed (log: {})",
                            rec.log.display()
                        );
                    }
                });
            }
        });
    }
    for ns in st.netns.iter().rev() {
        if !netns_exists(ns) {
            continue;
        }
        if let Ok(pids) = ip(&["netns", "pids", ns]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Err(e) = ip(&["netns", "del", ns]) {
            eprintln!("tabby-lab: could not delete network namespace {ns}: {e}");
        }
    }
    for sub in ["logs", "nodes", "tor"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(io(format!("removing {}", p.display())))?;
        }
    }
    for f in ["kubeconfig", "kube-sim.token", chart::RUN_VALUES] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    std::fs::remove_file(dir.join(state::STATE_FILE)).map_err(io(format!(
        "removing {}",
        dir.join(state::STATE_FILE).display()
    )))?;
    // The directory itself goes when it is now empty (it may be a user's or a test's).
    let _ = std::fs::remove_dir(dir);
    Ok(true)
}

/// Starts a detached process — its own process group, so a Ctrl-C on `make lab` or the end
/// of `up` leaves it running — with its output appended to `log`.
fn spawn_detached(
    log: &Path,
    role: &str,
    argv: Vec<String>,
    env: &[(&str, String)],
) -> Result<ProcRecord> {
    let out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(format!("opening {}", log.display())))?;
    let err = out.try_clone().map_err(io("duplicating a log handle"))?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| LabError::Other(format!("{role}: empty command")))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        // Plain logs in the files (tracing's colours are for terminals).
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(io(format!("starting {role}: {}", argv.join(" "))))?;
    // The child is reaped by `down` (when we are its parent) or by init after we exit.
    let pid = child.id();
    drop(child);
    Ok(ProcRecord {
        pid,
        argv: exec_argv(&argv),
        launch: argv,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        log: log.to_path_buf(),
    })
}

/// True when the recorded lab's API server, controller and agents still run.
fn lab_alive(st: &State) -> bool {
    st.processes
        .iter()
        .filter(|(role, _)| !role.starts_with("proxy"))
        .all(|(_, rec)| state::is_running(rec))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("starting the async runtime"))
}

/// `nsenter --net=<netns> --`: runs the rest of the argv in the namespace (and execs it, so the
/// pid is the program's) without a new mount namespace.
fn nsenter(netns: &str) -> Vec<String> {
    vec![
        "nsenter".into(),
        format!("--net={}", netns_path(netns)),
        "--".into(),
    ]
}

/// The command line the process shows once running: `nsenter` execs what follows `--`.
fn exec_argv(launch: &[String]) -> Vec<String> {
    if launch.first().is_some_and(|p| p == "nsenter")
        && let Some(i) = launch.iter().position(|a| a == "--")
    {
        return launch[i + 1..].to_vec();
    }
    launch.to_vec()
}

/// `GET` on an address in the root namespace.
fn http_get_root(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

async fn create_or_keep<K>(api: &Api<K>, obj: &K, what: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(kerr(format!("creating {what}"))(e)),
    }
}

async fn client_from(path: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| LabError::Other(format!("reading {}: {e}", path.display())))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| LabError::Other(format!("using {}: {e}", path.display())))?;
    kube::Client::try_from(cfg).map_err(kerr("building the client"))
}

/// `kubeconfig` with every cluster's `server` replaced (the nodes reach the API through their
/// proxy; certificate and token stay the same).
pub fn node_kubeconfig(kubeconfig: &Path, server: &str) -> Result<String> {
    let text = std::fs::read_to_string(kubeconfig)
        .map_err(io(format!("reading {}", kubeconfig.display())))?;
    rewrite_server(&text, server)
}

/// The pure part of [`node_kubeconfig`].
pub fn rewrite_server(kubeconfig_yaml: &str, server: &str) -> Result<String> {
    let mut v: serde_yaml::Value = serde_yaml::from_str(kubeconfig_yaml)
        .map_err(|e| LabError::Other(format!("kubeconfig is not YAML: {e}")))?;
    let clusters = v
        .get_mut("clusters")
        .and_then(|c| c.as_sequence_mut())
        .ok_or_else(|| LabError::Other("kubeconfig has no clusters".into()))?;
    for c in clusters {
        if let Some(cluster) = c.get_mut("cluster").and_then(|c| c.as_mapping_mut()) {
            cluster.insert("server".into(), server.into());
        }
    }
    serde_yaml::to_string(&v).map_err(|e| LabError::Other(format!("writing kubeconfig: {e}")))
}

/// Starts kube-sim (TLS, a bearer token) and returns the lab connected to it.
fn start_api(
    dir: &Path,
    mut st: State,
    bins: &Binaries,
    rt: tokio::runtime::Runtime,
) -> Result<Lab> {
    let token: String = {
        use rand::Rng;
        let mut r = rand::rng();
        (0..32)
            .map(|_| char::from(b'a' + r.random_range(0..26u8)))
            .collect()
    };
    let kubeconfig = dir.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let argv = vec![
        bins.kube_sim.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--kubeconfig-out".into(),
        kubeconfig.display().to_string(),
        "--tls".into(),
    ];
    let log = dir.join("logs").join("kube-sim.log");
    let rec = spawn_detached(
        &log,
        "kube-sim",
        argv,
        &[("KUBE_SIM_TOKEN", token), ("RUST_LOG", "warn".into())],
    )?;
    st.processes.insert("kube-sim".into(), rec.clone());
    st.save(dir)?;
    let server = wait_for(
        "tabby-kube-sim's kubeconfig",
        STEP_TIMEOUT,
        || log_tail(&log, 20),
        || {
            if !state::is_alive(rec.pid) {
                return Err(LabError::Exited {
                    what: "kube-sim".into(),
                    log: log_tail(&log, 20),
                });
            }
            let Ok(text) = std::fs::read_to_string(&kubeconfig) else {
                return Ok(None);
            };
            let v: serde_yaml::Value = match serde_yaml::from_str(&text) {
                Ok(v) => v,
                Err(_) => return Ok(None),
            };
            Ok(v["clusters"][0]["cluster"]["server"]
                .as_str()
                .map(str::to_string))
        },
    )?;
    st.api_server = server;
    st.save(dir)?;
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod {}", kubeconfig.display())))?;
    let client = rt.block_on(client_from(&kubeconfig))?;
    let c = client.clone();
    let log2 = log.clone();
    rt.block_on(async move {
        let start = Instant::now();
        loop {
            match c.apiserver_version().await {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > STEP_TIMEOUT => {
                    return Err(LabError::Timeout {
                        what: format!("kube-sim to answer ({e})"),
                        waited: start.elapsed(),
                        log: log_tail(&log2, 20),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })?;
    Ok(Lab {
        dir: dir.to_path_buf(),
        opts: Options::default(),
        state: st,
        bins: bins.clone(),
        rt,
        client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_crds_are_exactly_the_charts() {
        let root = tabby_netlab::workspace_root().unwrap();
        let mut files: Vec<String> = std::fs::read_dir(root.join("charts/tabby/crds"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let embedded: Vec<&str> = CRDS.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            files, embedded,
            "update CRDS when the chart's crds/ changes"
        );
        for (f, text) in CRDS {
            let crd: CustomResourceDefinition = serde_yaml::from_str(text).unwrap();
            assert!(crd.spec.group == "tabby.dev", "{f}");
        }
    }

    #[test]
    fn ping_summary_is_parsed() {
        let out = "--- 10.244.0.2 ping statistics ---\n\
                   200 packets transmitted, 199 received, 0.5% packet loss, time 2010ms\n";
        assert_eq!(
            parse_ping(out),
            Some(PingResult {
                sent: 200,
                received: 199
            })
        );
        let out = "5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 4ms\n";
        assert_eq!(parse_ping(out).unwrap().lost(), 5);
        assert_eq!(parse_ping("connect: Network is unreachable"), None);
    }

    #[test]
    fn cni_result_addresses_drop_the_prefix() {
        let r = json!({"ips": [{"address": "10.244.0.5/32"}, {"address": "fd44::5/128"}]});
        assert_eq!(result_addresses(&r), ["10.244.0.5", "fd44::5"]);
        assert!(result_addresses(&json!({})).is_empty());
    }

    #[test]
    fn nsenter_launches_show_the_program_once_running() {
        let mut argv = nsenter("x");
        argv.extend(["/bin/agent".to_string(), "--a".into()]);
        assert_eq!(exec_argv(&argv), ["/bin/agent", "--a"]);
        assert_eq!(exec_argv(&["/bin/p".to_string()]), ["/bin/p"]);
    }

    #[test]
    fn node_kubeconfig_points_at_the_proxy_and_keeps_credentials() {
        let kc = "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: https://127.0.0.1:40000\n    certificate-authority-data: Q0E=\nusers:\n- name: kube-sim\n  user:\n    token: abc\n";
        let out = rewrite_server(kc, "https://127.0.0.1:6443").unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:6443")
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"].as_str(),
            Some("Q0E=")
        );
        assert_eq!(v["users"][0]["user"]["token"].as_str(), Some("abc"));
        assert!(rewrite_server("nope: 1", "x").is_err());
    }

    #[test]
    fn binary_dirs_include_the_workspace_targets() {
        let dirs = binary_dirs();
        assert!(dirs.iter().any(|d| d.ends_with("target/release")));
        assert!(dirs.iter().any(|d| d.ends_with("target/debug")));
    }
}
