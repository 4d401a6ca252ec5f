//! Shared helpers of tests/packaging.rs and tests/docker.rs: running external
//! tools with a time limit, building the .deb and the Docker image once per
//! test run (under a file lock, so several test binaries can ask at once),
//! and cleaning up containers even when a test fails.
#![allow(dead_code)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Image tag built and used by the tests (the one docker-compose.yml names).
pub const IMAGE: &str = "chimaera-runtime:latest";
/// Base image of the Dockerfile, built locally by scripts/build-base-image.sh.
pub const BASE_IMAGE: &str = "debian:bookworm-slim";

/// Root of the repository.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directory for build artefacts of these tests (inside the target dir).
pub fn work_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let dir = if target.is_absolute() {
        target
    } else {
        repo().join(target)
    }
    .join("deploy-tests");
    fs::create_dir_all(&dir).expect("create target/deploy-tests");
    dir
}

/// The result of one command.
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
    pub what: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }

    /// Panics with the full output unless the command exited 0.
    pub fn expect_ok(self) -> Run {
        assert!(self.ok(), "{}", self.describe());
        self
    }

    pub fn describe(&self) -> String {
        format!(
            "`{}` {} after {:.1}s\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            if self.timed_out {
                "TIMED OUT".to_string()
            } else {
                format!("exited {:?}", self.status)
            },
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `args[0] args[1..]` with a time limit (coreutils `timeout`, which
/// kills it, TERM then KILL, when the limit passes). Never hangs.
pub fn run_in(dir: Option<&Path>, envs: &[(&str, &str)], limit_secs: u64, args: &[&str]) -> Run {
    let what = args.join(" ");
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=10")
        .arg(limit_secs.to_string())
        .args(args)
        .stdin(Stdio::null());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start `{what}` (coreutils timeout missing?): {e}"));
    let status = out.status.code();
    Run {
        // timeout(1) exits 124 when the limit passed, 137 when it had to KILL.
        timed_out: matches!(status, Some(124) | Some(137))
            && start.elapsed().as_secs() >= limit_secs,
        status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
        what,
    }
}

pub fn run(limit_secs: u64, args: &[&str]) -> Run {
    run_in(None, &[], limit_secs, args)
}

/// Whether `tool args` can be started and exits 0.
pub fn have(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Panics with an install hint when a tool the test needs is missing.
pub fn require(tool: &str, probe: &[&str], hint: &str) {
    assert!(
        have(probe),
        "`{tool}` is needed by this test and is not usable here: {hint}"
    );
}

/// Serialises work across threads of this process and across test binaries
/// (std's advisory file lock, released when the guard drops).
pub struct Lock {
    _thread: std::sync::MutexGuard<'static, ()>,
    file: File,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

pub fn lock(name: &str) -> Lock {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let thread = IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
    let path = work_dir().join(format!("{name}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("open lock file");
    file.lock().expect("lock file");
    Lock {
        _thread: thread,
        file,
    }
}

/// Builds the .deb with `cargo deb` (release build + packaging) once per test
/// process and returns its path. `cargo deb` is incremental: when nothing
/// changed it only repackages, so the package always matches the sources.
/// Each test process has its own output directory (`deb-<pid>`): another
/// test binary running at the same time rebuilds into its own, instead of
/// deleting the package this one is about to copy or mount.
pub fn deb() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        require(
            "cargo-deb",
            &[&cargo, "deb", "--version"],
            "install it with `cargo install cargo-deb --locked`",
        );
        let _guard = lock("cargo-deb");
        remove_stale_deb_dirs();
        let out_dir = work_dir().join(format!("deb-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out_dir);
        fs::create_dir_all(&out_dir).unwrap();
        eprintln!("deploy tests: building the .deb (cargo deb; a release build can take minutes)");
        let r = run_in(
            Some(&repo()),
            &[],
            3600,
            &[&cargo, "deb", "--output", out_dir.to_str().unwrap()],
        )
        .expect_ok();
        let path = fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .unwrap_or_else(|| {
                panic!(
                    "cargo deb wrote no .deb into {}\n{}",
                    out_dir.display(),
                    r.describe()
                )
            });
        eprintln!(
            "deploy tests: built {} in {:.0}s",
            path.display(),
            r.elapsed.as_secs_f64()
        );
        path
    })
    .clone()
}

/// The C client's packages (libchimaera0, libchimaera-dev), built with
/// packaging/build-client-debs.sh once per test process into
/// `client-debs-<pid>`: [lib, dev].
pub fn client_debs() -> [PathBuf; 2] {
    static DEBS: OnceLock<[PathBuf; 2]> = OnceLock::new();
    DEBS.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        require(
            "cargo-deb",
            &[&cargo, "deb", "--version"],
            "install it with `cargo install cargo-deb --locked`",
        );
        let _guard = lock("cargo-deb");
        remove_stale_deb_dirs();
        let out_dir = work_dir().join(format!("client-debs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out_dir);
        let script = repo().join("packaging/build-client-debs.sh");
        eprintln!("deploy tests: building the C client's .debs (a release build can take minutes)");
        let r = run_in(
            Some(&repo()),
            &[("CARGO", &cargo)],
            3600,
            &[script.to_str().unwrap(), out_dir.to_str().unwrap()],
        )
        .expect_ok();
        let find = |prefix: &str| {
            fs::read_dir(&out_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
                })
                .unwrap_or_else(|| {
                    panic!(
                        "no {prefix}*.deb in {}\n{}",
                        out_dir.display(),
                        r.describe()
                    )
                })
        };
        [find("libchimaera0_"), find("libchimaera-dev_")]
    })
    .clone()
}

/// Removes the per-process directories (`deb-<pid>`, `client-debs-<pid>`,
/// `capi-<pid>`) of test processes that are gone.
pub fn remove_stale_deb_dirs() {
    let Ok(entries) = fs::read_dir(work_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if let Some(pid) = name.to_str().and_then(|n| {
            n.strip_prefix("deb-")
                .or_else(|| n.strip_prefix("client-debs-"))
        }) && pid.bytes().all(|b| b.is_ascii_digit())
            && !pid_alive(pid)
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// `Some(reason)` when no Docker engine answers: those tests then print the
/// reason and pass as skipped. An engine that answers but fails a step is a
/// test failure, not a skip.
pub fn docker_unavailable() -> Option<String> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        if !have(&["docker", "--version"]) {
            return Some("the docker CLI is not installed".into());
        }
        let r = run(30, &["docker", "info", "--format", "{{.ServerVersion}}"]);
        if r.ok() && !r.stdout.trim().is_empty() {
            None
        } else {
            Some(format!(
                "no Docker engine answers `docker info`: {}",
                r.stderr.trim()
            ))
        }
    })
    .clone()
}

/// Returns true (after printing why) when the calling test must be skipped.
pub fn skip_without_docker(test: &str) -> bool {
    match docker_unavailable() {
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            true
        }
        None => false,
    }
}

pub fn image_exists(image: &str) -> bool {
    run(60, &["docker", "image", "inspect", image]).ok()
}

/// Makes sure debian:bookworm-slim exists (no registry can be reached here:
/// scripts/build-base-image.sh builds it with debootstrap when missing).
pub fn base_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if image_exists(BASE_IMAGE) {
            return;
        }
        let _guard = lock("base-image");
        if image_exists(BASE_IMAGE) {
            return;
        }
        eprintln!("deploy tests: {BASE_IMAGE} missing, running scripts/build-base-image.sh");
        let script = repo().join("scripts/build-base-image.sh");
        run(1800, &[script.to_str().unwrap()]).expect_ok();
    });
}

/// Builds chimaera-runtime:latest from docker/Dockerfile with the freshly
/// built .deb, once per test process. The build context is a copy of
/// docker/ plus the .deb, as a user would lay it out.
pub fn image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        remove_stale_test_objects();
        base_image();
        let deb = deb();
        let _guard = lock("docker-build");
        let ctx = tempfile::Builder::new()
            .prefix("chimaera-docker-ctx")
            .tempdir_in(work_dir())
            .unwrap();
        for f in ["Dockerfile", "entrypoint.sh"] {
            fs::copy(repo().join("docker").join(f), ctx.path().join(f)).unwrap();
        }
        fs::copy(&deb, ctx.path().join(deb.file_name().unwrap())).unwrap();
        eprintln!("deploy tests: docker build -t {IMAGE} (installs the .deb from Debian's mirror)");
        let r = run(
            1800,
            &["docker", "build", "-t", IMAGE, ctx.path().to_str().unwrap()],
        )
        .expect_ok();
        eprintln!(
            "deploy tests: image built in {:.0}s",
            r.elapsed.as_secs_f64()
        );
    });
    IMAGE
}

/// Label put on every container, network and volume the tests create, with
/// the pid of the test process, so that leftovers of a killed run can be
/// found and removed.
pub const LABEL: &str = "chimaera-deploy-test";

fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// Removes containers (and their anonymous volumes) left by earlier test runs
/// that were killed before they could clean up.
pub fn remove_stale_test_objects() {
    let r = run(
        60,
        &[
            "docker",
            "ps",
            "-a",
            "--filter",
            &format!("label={LABEL}"),
            "--format",
            "{{.ID}} {{.Label \"chimaera-deploy-test\"}}",
        ],
    );
    for line in r.stdout.lines() {
        let mut it = line.split_whitespace();
        if let (Some(id), Some(pid)) = (it.next(), it.next())
            && !pid_alive(pid)
        {
            let _ = run(60, &["docker", "rm", "-f", "-v", id]);
        }
    }
}

/// A unique name for a container, project or volume of this test process.
pub fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "chi-test-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        what
    )
}

/// `docker logs` of a container (ours or compose's), both streams, the
/// command given `secs` to answer.
fn logs_of(name: &str, secs: u64) -> String {
    let r = run(secs, &["docker", "logs", name]);
    format!("{}{}", r.stdout, r.stderr)
}

/// Polls the logs of container `name` until `done` holds for them, within
/// `limit`; panics with `what` and the logs otherwise.
pub fn wait_for_logs(name: &str, limit: Duration, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let logs = logs_of(name, 30);
        if done(&logs) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {what} within {limit:?}:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A container that is removed (with its anonymous volumes) when dropped,
/// also when the test panics.
pub struct Container {
    pub name: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run(60, &["docker", "rm", "-f", "-v", &self.name]);
    }
}

impl Container {
    /// `docker run -d --name <unique> --label … <args…>`; the caller puts the
    /// image (and command) at the end of `args`.
    pub fn start(what: &str, args: &[&str]) -> Container {
        let c = Container { name: unique(what) };
        let label = format!("{LABEL}={}", std::process::id());
        let mut all = vec!["docker", "run", "-d", "--name", &c.name, "--label", &label];
        all.extend_from_slice(args);
        run(300, &all).expect_ok();
        c
    }

    pub fn inspect(&self, format: &str) -> String {
        run(60, &["docker", "inspect", "-f", format, &self.name])
            .expect_ok()
            .stdout
            .trim()
            .to_string()
    }

    pub fn logs(&self) -> String {
        logs_of(&self.name, 60)
    }

    pub fn exec(&self, args: &[&str]) -> Run {
        let mut all = vec!["docker", "exec", &self.name];
        all.extend_from_slice(args);
        run(120, &all)
    }

    /// Waits until the container has exited and returns its exit code.
    pub fn wait_exit(&self, limit: Duration) -> i64 {
        let deadline = Instant::now() + limit;
        loop {
            if self.inspect("{{.State.Status}}") == "exited" {
                return self.inspect("{{.State.ExitCode}}").parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {:?}; logs:\n{}",
                self.name,
                limit,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until Docker's HEALTHCHECK reports healthy; panics with the logs
    /// if the container exits, turns unhealthy or the limit passes.
    pub fn wait_healthy(&self, limit: Duration) {
        wait_healthy(&self.name, limit);
    }
}

pub fn wait_healthy(name: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let r = run(
            60,
            &[
                "docker",
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.Health.Status}}",
                name,
            ],
        );
        let state = r.stdout.trim().to_string();
        if state == "running healthy" {
            return;
        }
        let logs = || {
            let r = run(60, &["docker", "logs", name]);
            format!("{}{}", r.stdout, r.stderr)
        };
        assert!(
            r.ok() && !state.starts_with("exited") && !state.ends_with("unhealthy"),
            "{name} is `{state}` instead of healthy; logs:\n{}",
            logs()
        );
        assert!(
            Instant::now() < deadline,
            "{name} not healthy after {limit:?} (`{state}`); logs:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A /16 of 172.16.0.0/12 that no Docker network uses, preferring the
/// compose file's own 172.20.
pub fn free_subnet() -> String {
    let ids = run(60, &["docker", "network", "ls", "-q"])
        .expect_ok()
        .stdout;
    let mut used = String::new();
    for id in ids.split_whitespace() {
        used += &run(
            60,
            &[
                "docker",
                "network",
                "inspect",
                "-f",
                "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                id,
            ],
        )
        .stdout;
    }
    let routes = run(10, &["ip", "route"]).stdout;
    (20..32)
        .chain(16..20)
        .map(|n| format!("172.{n}"))
        .find(|p| !used.contains(&format!("{p}.")) && !routes.contains(&format!("{p}.")))
        .expect("no free 172.x.0.0/16 for the test cluster")
}
