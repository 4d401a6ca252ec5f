//! The C library (crates/chimaera-capi) with a real C compiler against a
//! real daemon: tests/capi/api.c drives every call, its errors and its
//! threads; examples/clients/c/ping.c prints its round trips; the C++
//! wrapper runs examples/clients/cpp/ping.cpp; the static archive links
//! with the flags chimaera.pc gives; the shared library exports exactly
//! the header's functions under the soname libchimaera.so.0.
//!
//! Tools: cc and c++ (gcc, g++), binutils (readelf, nm).

mod common;
#[path = "support/deploy.rs"]
mod deploy;

use common::Node;
use deploy::{repo, run, run_in};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The library as a user's machine has it: `lib/libchimaera.so.0` (the
/// soname), `lib/libchimaera.so` linking to it, and `lib/libchimaera.a`,
/// built by cargo in this test's profile (the daemon's), once per process.
fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile_dir = Path::new(common::BIN).parent().unwrap().to_path_buf();
        let mut args = vec![cargo.as_str(), "build", "-p", "chimaera-capi"];
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            args.push("--release");
        }
        let _guard = deploy::lock("capi-build");
        run_in(Some(&repo()), &[], 1800, &args).expect_ok();
        deploy::remove_stale_deb_dirs();
        let dir = out_dir().join("lib");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            profile_dir.join("libchimaera.so"),
            dir.join("libchimaera.so.0"),
        )
        .unwrap();
        std::os::unix::fs::symlink("libchimaera.so.0", dir.join("libchimaera.so")).unwrap();
        std::fs::copy(profile_dir.join("libchimaera.a"), dir.join("libchimaera.a")).unwrap();
        dir
    })
}

/// This process's directory for the library and the programs it compiles
/// (removed by a later run once this process is gone).
fn out_dir() -> PathBuf {
    deploy::work_dir().join(format!("capi-{}", std::process::id()))
}

fn include_dir() -> PathBuf {
    repo().join("crates/chimaera-capi/include")
}

/// Compiles `sources` with `compiler` and `flags` into a fresh executable.
fn compile(compiler: &str, sources: &[PathBuf], flags: &[&str], name: &str) -> PathBuf {
    std::fs::create_dir_all(out_dir()).unwrap();
    let out = out_dir().join(name);
    let include = format!("-I{}", include_dir().display());
    let mut args: Vec<&str> = vec![compiler, "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"];
    args.push(&include);
    let srcs: Vec<String> = sources.iter().map(|s| s.display().to_string()).collect();
    args.extend(srcs.iter().map(String::as_str));
    args.extend_from_slice(&["-o", out.to_str().unwrap()]);
    args.extend_from_slice(flags);
    run(300, &args).expect_ok();
    out
}

/// Against the shared library, as `-lchimaera` finds it.
fn compile_shared(compiler: &str, source: &str, std: &str, name: &str) -> PathBuf {
    let libs = format!("-L{}", lib_dir().display());
    compile(
        compiler,
        &[repo().join(source)],
        &[std, &libs, "-lchimaera", "-pthread"],
        name,
    )
}

/// Runs a compiled client with the library on its path and a clean CHI_*
/// environment (as `Node::command` gives the daemon).
fn client(node: &Node, exe: &Path, args: &[&str]) -> Command {
    let mut cmd = node.command(exe.to_str().unwrap(), args);
    cmd.env("LD_LIBRARY_PATH", lib_dir());
    cmd
}

fn started(name: &str) -> Node {
    let mut node = Node::new(name);
    let i = node.spawn(&[]);
    node.wait_running(i);
    node
}

fn output_of(mut cmd: Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn c_api_against_a_real_daemon() {
    let exe = compile_shared("cc", "tests/capi/api.c", "-std=c11", "capi-api");
    let node = started("capi_all");
    let config = node.config_path();
    let cmd = client(&node, &exe, &["all", config.to_str().unwrap(), VERSION]);
    let (code, stdout, stderr) = output_of(cmd, Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
}

#[test]
fn c_client_hears_of_a_dead_runtime_while_it_waits() {
    let exe = compile_shared("cc", "tests/capi/api.c", "-std=c11", "capi-gone");
    let node = started("capi_gone");
    let config = node.config_path();
    let mut child = client(&node, &exe, &["gone", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "waiting");
    node.signal(0, libc::SIGKILL);
    let killed = Instant::now();
    let verdict = lines.next().unwrap().unwrap();
    let status = child.wait().unwrap();
    let took = killed.elapsed();
    assert!(status.success(), "{verdict}");
    assert!(
        verdict.starts_with("CHIMAERA_ERR_RUNTIME_GONE: ") && verdict.contains("went away"),
        "{verdict}"
    );
    assert!(took < Duration::from_secs(3), "heard after {took:?}");
}

#[test]
fn c_client_without_a_runtime_is_told_why() {
    let exe = compile_shared("cc", "tests/capi/api.c", "-std=c11", "capi-absent");
    let node = Node::new("capi_absent");
    let config = node.config_path();
    let cmd = client(&node, &exe, &["absent", config.to_str().unwrap()]);
    let (code, stdout, stderr) = output_of(cmd, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
}

/// The C example: its human line and its JSON (the fields of `chimaera
/// ping --json`), against the runtime the configuration names.
#[test]
fn c_ping_example_prints_its_round_trips() {
    let exe = compile_shared("cc", "examples/clients/c/ping.c", "-std=c11", "capi-ping");
    let node = started("capi_ping");
    let config = node.config_path();
    let cmd = client(&node, &exe, &["-n", "2000", "--json"]);
    let (code, stdout, stderr) = output_of(cmd, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["client"], "c");
    assert_eq!(v["library"], VERSION);
    assert_eq!(v["count"], 2000);
    let ns = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(0 < ns("min_ns"), "{v}");
    assert!(
        ns("min_ns") <= ns("p50_ns") && ns("p50_ns") <= ns("p99_ns"),
        "{v}"
    );
    assert!(ns("p99_ns") <= ns("max_ns"), "{v}");

    let cmd = client(
        &node,
        &exe,
        &["-n", "100", "--config", config.to_str().unwrap()],
    );
    let (code, stdout, stderr) = output_of(cmd, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with(&format!("100 pings from C (libchimaera {VERSION}): min ")),
        "{stdout}"
    );

    let cmd = client(&node, &exe, &["-n", "0"]);
    let (code, _, stderr) = output_of(cmd, Duration::from_secs(60));
    assert_eq!(code, Some(64), "{stderr}");
    drop(node);
    let node = Node::new("capi_ping_absent");
    let (code, _, stderr) = output_of(client(&node, &exe, &[]), Duration::from_secs(60));
    assert_eq!(code, Some(69), "{stderr}");
    assert!(
        stderr.contains("cannot connect") && stderr.contains("CHIMAERA_ERR_NOT_RUNNING"),
        "{stderr}"
    );
}

/// The C++ wrapper (header-only, RAII, exceptions) and its example.
#[test]
fn cpp_wrapper_against_a_real_daemon() {
    let exe = compile_shared(
        "c++",
        "examples/clients/cpp/ping.cpp",
        "-std=c++17",
        "capi-cpp",
    );
    let node = started("capi_cpp");
    let cmd = client(&node, &exe, &["-n", "500"]);
    let (code, stdout, stderr) = output_of(cmd, Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("500 pings from C++"), "{stdout}");
    assert!(stdout.contains("wrapper checks passed"), "{stdout}");
    let node = Node::new("capi_cpp_absent");
    let (code, _, stderr) = output_of(client(&node, &exe, &[]), Duration::from_secs(60));
    assert_eq!(code, Some(69), "{stderr}");
    assert!(
        stderr.contains("CHIMAERA_ERR_NOT_RUNNING") && stderr.contains("not running"),
        "{stderr}"
    );
}

/// The header alone compiles as C99, C11 and C++11 (the oldest each
/// supports) with every warning an error.
#[test]
fn header_compiles_as_c_and_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("only.c");
    std::fs::write(
        &src,
        "#include <chimaera.h>\n#include <chimaera.h>\nint main(void) { return CHIMAERA_OK; }\n",
    )
    .unwrap();
    let cpp = dir.path().join("only.cpp");
    std::fs::copy(&src, &cpp).unwrap();
    for (compiler, source, std) in [
        ("cc", &src, "-std=c99"),
        ("cc", &src, "-std=c11"),
        ("c++", &cpp, "-std=c++11"),
    ] {
        compile(
            compiler,
            std::slice::from_ref(source),
            &["-c", std],
            "capi-only",
        );
    }
    // The C++ wrapper needs C++17.
    let hpp = dir.path().join("wrapper.cpp");
    std::fs::write(
        &hpp,
        "#include <chimaera.hpp>\n#include <chimaera.hpp>\nint main() { return 0; }\n",
    )
    .unwrap();
    compile("c++", &[hpp], &["-c", "-std=c++17"], "capi-hpp");
}

/// libchimaera.a links with chimaera.pc's `Libs.private` and runs; the
/// program needs no libchimaera.so.
#[test]
fn static_archive_links_with_the_pc_files_private_libs() {
    let pc = std::fs::read_to_string(repo().join("crates/chimaera-capi/chimaera.pc")).unwrap();
    let private: Vec<&str> = pc
        .lines()
        .find_map(|l| l.strip_prefix("Libs.private:"))
        .expect("Libs.private in chimaera.pc")
        .split_whitespace()
        .collect();
    let mut flags = vec!["-std=c11"];
    let archive = lib_dir().join("libchimaera.a");
    flags.push(archive.to_str().unwrap());
    flags.extend(private);
    let exe = compile(
        "cc",
        &[repo().join("examples/clients/c/ping.c")],
        &flags,
        "capi-static",
    );
    let needed = run(60, &["readelf", "-d", exe.to_str().unwrap()])
        .expect_ok()
        .stdout;
    assert!(!needed.contains("libchimaera"), "{needed}");
    let node = started("capi_static");
    let mut cmd = node.command(exe.to_str().unwrap(), &["-n", "200"]);
    cmd.env_remove("LD_LIBRARY_PATH");
    let (code, stdout, stderr) = output_of(cmd, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("200 pings from C"), "{stdout}");
}

/// The functions the header declares, by name.
fn header_functions() -> BTreeSet<String> {
    let header = std::fs::read_to_string(include_dir().join("chimaera.h")).unwrap();
    header
        .lines()
        .filter(|l| !l.starts_with("//") && !l.starts_with(' ') && !l.starts_with('#'))
        .filter_map(|l| {
            let name = l.split('(').next()?.rsplit([' ', '*']).next()?;
            (l.contains('(') && name.starts_with("chimaera_")).then(|| name.to_string())
        })
        .collect()
}

/// The shared library's soname is libchimaera.so.0, it exports exactly
/// the functions chimaera.h declares (nothing of Rust's), and a program
/// linked with -lchimaera records the soname.
#[test]
fn shared_library_exports_the_headers_functions_under_its_soname() {
    let so = lib_dir().join("libchimaera.so.0");
    let dynamic = run(60, &["readelf", "-d", so.to_str().unwrap()])
        .expect_ok()
        .stdout;
    assert!(
        dynamic.contains("Library soname: [libchimaera.so.0]"),
        "{dynamic}"
    );
    let nm = run(
        60,
        &[
            "nm",
            "-D",
            "--defined-only",
            "--format=posix",
            so.to_str().unwrap(),
        ],
    )
    .expect_ok()
    .stdout;
    let exported: BTreeSet<String> = nm
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (name, kind) = (f.next()?, f.next()?);
            (kind == "T").then(|| name.to_string())
        })
        .collect();
    let declared = header_functions();
    assert!(declared.len() >= 20, "{declared:?}");
    assert_eq!(exported, declared, "nm -D:\n{nm}");
    let exe = compile_shared("cc", "examples/clients/c/ping.c", "-std=c11", "capi-soname");
    let needed = run(60, &["readelf", "-d", exe.to_str().unwrap()])
        .expect_ok()
        .stdout;
    assert!(
        needed.contains("Shared library: [libchimaera.so.0]"),
        "{needed}"
    );
}
