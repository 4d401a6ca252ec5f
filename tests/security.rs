//! The trust boundary as docs/SECURITY.md draws it, shown with real users:
//! a member of the daemon's group uses the daemon without any of its
//! secrets.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use common::{BIN, Node};

/// A uid and gid no account has: the user only exists by number.
const STRANGER: u32 = 54_321;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `bin args` as uid/gid [`STRANGER`] with `group` as a supplementary group.
fn as_member(node: &Node, bin: &str, group: u32, args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={STRANGER}"))
        .arg(format!("--regid={STRANGER}"))
        .arg(format!("--groups={group}"))
        .arg("--")
        .arg(bin)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CHI_SERVER_CONF", node.config_path());
    cmd.output().unwrap()
}

/// The packaged daemon runs as its own user with a cluster key only it may
/// read (mode 0600); the members of its group run `status`, `ping` and
/// `pool` against it, and those work: clients read the segment names, the
/// run directory and the discovery file, never the key.
#[test]
fn a_group_member_without_the_key_uses_a_keyed_daemon() {
    if !is_root() {
        eprintln!("skipped: switching users needs root (CI runs as root)");
        return;
    }
    let mut node = Node::new("member");
    let dir = node.dir.path().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = dir.join("cluster.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Debian's `users` group (gid 100) stands for the package's `chimaera`.
    let (group, gid) = ("users", 100);
    node.write_config(
        "info",
        &format!(
            "network:\n  cluster_key_file: {}\nshared_memory:\n  group: {group}\n",
            key.display()
        ),
    );
    std::fs::set_permissions(node.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    // The test binary's directory may not be open to others: a copy is.
    let bin = dir.join("chimaera");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin.to_str().unwrap().to_string();

    let d = node.spawn(&[]);
    node.wait_running(d);

    let cat = as_member(&node, "/bin/cat", gid, &[key.to_str().unwrap()]);
    assert!(
        !cat.status.success(),
        "the member must not be able to read the key: {cat:?}"
    );
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["ping", "-n", "3"],
        &["pool", "list"],
        &[
            "pool",
            "create",
            "scratch",
            "bdev",
            "--params",
            r#"{"kind":"ram","size":"1M"}"#,
        ],
        &["pool", "destroy", "scratch"],
    ] {
        let out = as_member(&node, &bin, gid, args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "chimaera {args:?} as a group member: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = as_member(&node, &bin, gid, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["running"], true, "{v}");
    assert_eq!(v["cluster"]["authenticated"], true, "{v}");

    // Someone outside the group is refused, and says so.
    let out = as_member(&node, &bin, STRANGER, &["ping"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not allowed") || err.contains("Permission denied"),
        "{err}"
    );

    assert_eq!(node.output(&["stop"]).status.code(), Some(0));
    assert!(node.wait_exit(d, Duration::from_secs(10)).success());
}
