//! Shared by the end-to-end tests: gating, a lab torn down on drop, captures and ping floods.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tabby_lab::lab::{Binaries, SYSTEM_PROGRAMS};
use tabby_lab::{Lab, Options, PingResult, Up};

/// True (after saying why) when the end-to-end tests cannot run here.
pub fn skip() -> bool {
    let mut programs: Vec<&str> = SYSTEM_PROGRAMS.to_vec();
    programs.push("tcpdump");
    if tabby_netlab::skip_unless_root_and(&programs) {
        return true;
    }
    if let Err(e) = Binaries::find() {
        eprintln!(
            "SKIP: {e}. `cargo test --workspace` builds every binary; alone, run \
             `cargo build -p tabby-kube-sim -p tabby-ipam-controller -p tabby-agent -p tabby-cni` first"
        );
        return true;
    }
    // `up` renders the chart's default objects with the pinned helm (`make deps` fetches it).
    if let Err(e) = tabby_lab::chart::find_helm() {
        eprintln!("SKIP: {e}");
        return true;
    }
    false
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A lab with its own prefix and state directory, removed on drop (even when the test fails).
pub struct TestLab {
    lab: Option<Lab>,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub up_time: Duration,
}

impl TestLab {
    pub fn up(mut opts: Options) -> TestLab {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        opts.prefix = format!("te{}x{n}-", std::process::id() % 100_000);
        let tmp = tempfile::Builder::new()
            .prefix("tabby-lab-e2e-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().join("lab");
        let start = Instant::now();
        let result = Lab::up(opts, &dir);
        let lab = match result {
            Ok(Up::Started(lab)) => *lab,
            Ok(Up::AlreadyRunning(_)) => {
                let _ = tabby_lab::down(&dir);
                panic!("a fresh state directory cannot hold a running lab")
            }
            Err(e) => {
                let logs = dump_logs(&dir);
                let _ = tabby_lab::down(&dir);
                panic!("lab up failed: {e}\n{logs}");
            }
        };
        let up_time = start.elapsed();
        eprintln!("lab {} up in {:.1} s", dir.display(), up_time.as_secs_f64());
        TestLab {
            lab: Some(lab),
            dir,
            _tmp: tmp,
            up_time,
        }
    }

    pub fn lab(&self) -> &Lab {
        self.lab.as_ref().expect("lab")
    }

    pub fn lab_mut(&mut self) -> &mut Lab {
        self.lab.as_mut().expect("lab")
    }

    /// The last lines of every log, for failure messages.
    pub fn logs(&self) -> String {
        dump_logs(&self.dir)
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", dump_logs(&self.dir));
        }
        drop(self.lab.take());
        if let Err(e) = tabby_lab::down(&self.dir) {
            eprintln!("lab down failed: {e}");
        }
    }
}

fn dump_logs(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir.join("logs")) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("==== {} ====\n", p.display()));
        out.push_str(&lines[lines.len().saturating_sub(25)..].join("\n"));
        out.push('\n');
    }
    out
}

/// A ping flood running in a namespace until [`Flood::stop`].
pub struct Flood {
    child: Option<Child>,
}

impl Flood {
    /// Pings `dst` from `netns` every `interval_ms` (root may go below 200 ms).
    pub fn start(netns: &str, dst: &str, interval_ms: u32) -> Flood {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "ping", "-n", "-q", "-W", "1"])
            .args(["-i", &format!("{:.3}", f64::from(interval_ms) / 1000.0)])
            .arg(dst)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ping");
        Flood { child: Some(child) }
    }

    /// Interrupts ping (SIGINT: it prints its statistics) and returns them.
    pub fn stop(mut self) -> PingResult {
        let child = self.child.take().expect("child");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let out = child.wait_with_output().expect("ping output");
        let text = String::from_utf8_lossy(&out.stdout);
        tabby_lab::lab::parse_ping(&text).unwrap_or_else(|| {
            panic!(
                "no ping summary: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A tcpdump on `ifname` in `netns`, text output, until [`Capture::finish`].
pub struct Capture {
    child: Option<Child>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    pub fn start(netns: &str, ifname: &str, filter: &str) -> Capture {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cap.pcap");
        // -Z root: Debian's tcpdump drops to user tcpdump, who cannot write into our 0700
        // directory. --immediate-mode: otherwise libpcap hands packets over in blocks, once a
        // second, and the SIGINT that ends the capture would lose the last block.
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "tcpdump",
                "-Z",
                "root",
                "--immediate-mode",
            ])
            .args(["-i", ifname, "-nn", "-U", "-w"])
            .arg(&file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        // tcpdump says "listening on" once the capture runs.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                log2.lock().unwrap().push(line);
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("tcpdump did not start listening");
        Capture {
            child: Some(child),
            file,
            log,
            _dir: dir,
        }
    }

    /// Stops the capture and returns its packets as tcpdump prints them (`-nn`).
    pub fn finish(mut self) -> Vec<String> {
        if let Some(c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = c.wait_with_output();
        }
        let out = Command::new("tcpdump")
            .args(["-nn", "-r"])
            .arg(&self.file)
            .output()
            .expect("tcpdump -r");
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        if lines.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
            eprintln!(
                "capture {}: {:?}; {} bytes; tcpdump -r: {}",
                self.file.display(),
                self.log.lock().unwrap(),
                std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        lines
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `check` until it is true or `timeout` passes; panics with `what` and `context()`.
pub fn eventually(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
