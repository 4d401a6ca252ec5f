//! A harness for tests that run the real `chimaera` binary: each test gets its
//! own directory, segment names, run directory, log file and port, so tests
//! run in parallel and never touch a real installation.
#![allow(dead_code)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_chimaera");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    chimaera::sys::free_listen_port().unwrap()
}

pub struct Node {
    pub dir: tempfile::TempDir,
    pub tag: String,
    pub port: u16,
    pub children: Vec<Child>,
}

impl Node {
    /// A node with small segments (4 MiB + 2 + 2 in 16 MiB) and the given
    /// extra YAML lines appended to its config file.
    pub fn new(name: &str) -> Node {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("chit_{name}_{}_{n}", std::process::id());
        let node = Node {
            dir: tempfile::Builder::new()
                .prefix("chimaera-test-")
                .tempdir()
                .unwrap(),
            tag,
            port: free_port(),
            children: Vec::new(),
        };
        node.write_config("info", "");
        node
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("chimaera.yaml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log").join("chimaera.log")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn segment_names(&self) -> [String; 3] {
        ["main", "client", "runtime"].map(|s| format!("{}_{s}", self.tag))
    }

    pub fn discovery_path(&self) -> PathBuf {
        self.run_dir()
            .join(format!("{}.toml", self.segment_names()[0]))
    }

    /// (Re)writes the config file with a log level; `extra` is YAML of the
    /// form "section:\n  key: value\n" whose keys override the base ones.
    pub fn write_config(&self, level: &str, extra: &str) {
        let [main, client, runtime] = self.segment_names();
        let base = format!(
            "memory:\n  main_segment_size: 4M\n  client_data_segment_size: 2M\n  runtime_data_segment_size: 2M\n  shm_size: 16M\n\
             performance:\n  queue_depth: 64\n\
             network:\n  zmq_port: {port}\n\
             logging:\n  level: {level}\n  file: {log}\n\
             shared_memory:\n  main_segment_name: {main}\n  client_data_segment_name: {client}\n  runtime_data_segment_name: {runtime}\n\
             runtime:\n  run_dir: {run}\n",
            port = self.port,
            log = self.log_path().display(),
            run = self.run_dir().display(),
        );
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for text in [base.as_str(), extra] {
            let mut current = String::new();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if let Some(name) = line.strip_suffix(':').filter(|_| !line.starts_with(' ')) {
                    current = name.to_string();
                    if !sections.iter().any(|(s, _)| *s == current) {
                        sections.push((current.clone(), Vec::new()));
                    }
                } else {
                    let (k, v) = line.trim().split_once(':').expect("key: value");
                    let keys = &mut sections
                        .iter_mut()
                        .find(|(s, _)| *s == current)
                        .expect("section first")
                        .1;
                    match keys.iter_mut().find(|(key, _)| key == k) {
                        Some(kv) => kv.1 = v.trim().to_string(),
                        None => keys.push((k.to_string(), v.trim().to_string())),
                    }
                }
            }
        }
        let text: String = sections
            .iter()
            .map(|(s, kv)| {
                format!(
                    "{s}:\n{}",
                    kv.iter()
                        .map(|(k, v)| format!("  {k}: {v}\n"))
                        .collect::<String>()
                )
            })
            .collect();
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// The binary with this node's config and a clean CHI_* environment.
    pub fn command(&self, bin: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CHI_") || k.starts_with("NOTIFY_SOCKET") || k.starts_with("WATCHDOG_")
            {
                cmd.env_remove(k.as_ref());
            }
        }
        cmd.env("CHI_SERVER_CONF", self.config_path());
        cmd.args(args);
        cmd
    }

    pub fn chimaera(&self, args: &[&str]) -> Command {
        self.command(BIN, args)
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.chimaera(args).output().unwrap()
    }

    /// Starts `chimaera run` with extra environment; stderr goes to a file.
    pub fn spawn(&mut self, env: &[(&str, &str)]) -> usize {
        let mut cmd = self.chimaera(&["run"]);
        cmd.envs(env.iter().copied());
        let err = std::fs::File::create(
            self.dir
                .path()
                .join(format!("stderr.{}", self.children.len())),
        )
        .unwrap();
        cmd.stdout(Stdio::null()).stderr(err);
        self.children.push(cmd.spawn().unwrap());
        self.children.len() - 1
    }

    pub fn stderr_of(&self, idx: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("stderr.{idx}"))).unwrap_or_default()
    }

    pub fn pid(&self, idx: usize) -> u32 {
        self.children[idx].id()
    }

    /// Waits until `status` says running; panics with the daemon's stderr if not.
    pub fn wait_running(&mut self, idx: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(st) = self.children[idx].try_wait().unwrap() {
                panic!("daemon exited early with {st}: {}", self.stderr_of(idx));
            }
            if self.output(&["status"]).status.code() == Some(0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon not running after 20s: {}", self.stderr_of(idx));
    }

    /// Waits for a child to exit, bounded.
    pub fn wait_exit(&mut self, idx: usize, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.children[idx].try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {limit:?}: {}",
                self.stderr_of(idx)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, idx: usize, sig: i32) {
        let rc = unsafe_kill(self.pid(idx), sig);
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid(idx));
    }

    pub fn segments_present(&self) -> Vec<String> {
        self.segment_names()
            .into_iter()
            .filter(|n| Path::new("/dev/shm").join(n).exists())
            .collect()
    }

    /// A client of this node's runtime, in the test process.
    pub fn client(&self) -> chimaera::client::Client {
        chimaera::client::Client::connect_with(&self.load_options()).expect("client connects")
    }

    /// What a client of this node loads: its config file and nothing else.
    pub fn load_options(&self) -> chimaera::config::LoadOptions {
        chimaera::config::LoadOptions {
            config_path: Some(self.config_path()),
            sets: vec![],
            system_config: None,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

fn unsafe_kill(pid: u32, sig: i32) -> i32 {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) }
}

impl Drop for Node {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for name in self.segment_names() {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
        }
    }
}

/// The receiving end of sd_notify, as systemd has it: a datagram socket.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: UnixDatagram,
    pub seen: Vec<String>,
}

impl NotifySocket {
    pub fn new(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            path,
            sock,
            seen: Vec::new(),
        }
    }

    /// Reads messages until one has a line equal to `line`; returns that message.
    pub fn wait_for(&mut self, line: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if msg.lines().any(|l| l == line) {
                    return msg;
                }
            }
        }
        panic!("no {line:?} within {limit:?}; saw {:?}", self.seen);
    }

    /// Reads one message if one arrives within the socket's timeout.
    pub fn try_recv(&mut self) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.seen.push(msg.clone());
        Some(msg)
    }

    /// Drops what already waits in the socket, then listens for `quiet`:
    /// the messages heard then that have a line equal to `line`.
    pub fn heard_after_drain(&mut self, line: &str, quiet: Duration) -> Vec<String> {
        while self.try_recv().is_some() {}
        let before = self.seen.len();
        let start = Instant::now();
        while start.elapsed() < quiet {
            let _ = self.try_recv();
        }
        self.seen[before..]
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .cloned()
            .collect()
    }

    pub fn position(&self, line: &str) -> Option<usize> {
        self.seen.iter().position(|m| m.lines().any(|l| l == line))
    }
}

/// xorshift64*: a fixed seed makes a failure reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
