//! The C client as a Debian user gets it: libchimaera0 and libchimaera-dev
//! (with chimaera, the daemon) installed by apt in a bookworm container,
//! then examples/clients/c/ping.c and examples/clients/cpp/ping.cpp built
//! with `pkg-config --cflags --libs chimaera` by gcc and g++ and run, as a
//! member of the group chimaera, against the packaged daemon.
//!
//! Like tests/docker.rs, it prints "SKIPPED …" and passes only when no
//! Docker engine answers. The compilers come from Debian's mirror into a
//! local image, `chimaera-c-toolchain:bookworm` (debian:bookworm-slim with
//! gcc, g++, libc6-dev and pkg-config), built once and kept as a cache like
//! the base image; the image with the packages is this test's own and is
//! removed after it.

#[path = "support/deploy.rs"]
mod deploy;

use deploy::{Container, run, skip_without_docker};
use std::fs;
use std::time::{Duration, Instant};

const TOOLCHAIN: &str = "chimaera-c-toolchain:bookworm";

/// The toolchain image, built from the local base image when missing.
fn toolchain_image() {
    deploy::base_image();
    if deploy::image_exists(TOOLCHAIN) {
        return;
    }
    let _guard = deploy::lock("c-toolchain-image");
    if deploy::image_exists(TOOLCHAIN) {
        return;
    }
    let ctx = tempfile::tempdir_in(deploy::work_dir()).unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}\n\
             RUN apt-get update \\\n \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc g++ libc6-dev pkg-config \\\n \
             && rm -rf /var/lib/apt/lists/*\n",
            deploy::BASE_IMAGE
        ),
    )
    .unwrap();
    eprintln!("capi docker test: building {TOOLCHAIN} (gcc, g++, pkg-config from Debian's mirror)");
    run(
        1800,
        &[
            "docker",
            "build",
            "-t",
            TOOLCHAIN,
            ctx.path().to_str().unwrap(),
        ],
    )
    .expect_ok();
}

/// An image of this test process: the toolchain, the three packages
/// installed by apt, the example sources in /src. Removed when dropped.
struct TestImage {
    tag: String,
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = run(120, &["docker", "rmi", "-f", &self.tag]);
    }
}

fn test_image() -> TestImage {
    toolchain_image();
    let daemon = deploy::deb();
    let [lib, dev] = deploy::client_debs();
    let ctx = tempfile::tempdir_in(deploy::work_dir()).unwrap();
    for deb in [&daemon, &lib, &dev] {
        fs::copy(deb, ctx.path().join(deb.file_name().unwrap())).unwrap();
    }
    for (dir, file) in [("c", "ping.c"), ("cpp", "ping.cpp")] {
        fs::create_dir_all(ctx.path().join("src").join(dir)).unwrap();
        fs::copy(
            deploy::repo().join("examples/clients").join(dir).join(file),
            ctx.path().join("src").join(dir).join(file),
        )
        .unwrap();
    }
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {TOOLCHAIN}\n\
             COPY *.deb /tmp/debs/\n\
             RUN apt-get update \\\n \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends /tmp/debs/*.deb \\\n \
             && rm -rf /var/lib/apt/lists/* /tmp/debs\n\
             COPY src /src\n"
        ),
    )
    .unwrap();
    let image = TestImage {
        tag: format!("chimaera-capi-test:{}", std::process::id()),
    };
    run(
        1800,
        &[
            "docker",
            "build",
            "--label",
            &format!("{}={}", deploy::LABEL, std::process::id()),
            "-t",
            &image.tag,
            ctx.path().to_str().unwrap(),
        ],
    )
    .expect_ok();
    image
}

/// `sh -c script` in the container as user `alice`.
fn as_alice(c: &Container, script: &str) -> deploy::Run {
    c.exec(&["runuser", "-u", "alice", "--", "sh", "-c", script])
}

#[test]
fn c_and_cpp_examples_build_from_the_packages_and_run_in_bookworm() {
    if skip_without_docker("c_and_cpp_examples_build_from_the_packages_and_run_in_bookworm") {
        return;
    }
    deploy::remove_stale_test_objects();
    let image = test_image();
    let c = Container::start(
        "capi",
        &[
            "--shm-size=128m",
            "-e",
            "CHI_MAIN_SEGMENT_SIZE=32M",
            "-e",
            "CHI_CLIENT_DATA_SEGMENT_SIZE=16M",
            "-e",
            "CHI_RUNTIME_DATA_SEGMENT_SIZE=16M",
            "-e",
            "CHI_SHM_SIZE=64M",
            "-e",
            "CHI_SCHED_WORKERS=2",
            &image.tag,
            "sleep",
            "infinity",
        ],
    );
    let installed = c
        .exec(&[
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${Status}\n",
            "chimaera",
            "libchimaera0",
            "libchimaera-dev",
        ])
        .expect_ok()
        .stdout;
    assert_eq!(
        installed.matches("install ok installed").count(),
        3,
        "{installed}"
    );
    // The ldconfig trigger ran: the loader's cache knows the soname.
    let cache = c.exec(&["ldconfig", "-p"]).expect_ok().stdout;
    assert!(cache.contains("libchimaera.so.0 "), "{cache}");

    // The packaged daemon as its own user; a user of the group chimaera
    // (`adduser alice chimaera`, as packaging/README.md says) builds and
    // runs the clients.
    c.exec(&[
        "sh",
        "-c",
        "install -d -o chimaera -g chimaera -m 0750 /run/chimaera && useradd -m -G chimaera alice",
    ])
    .expect_ok();
    run(
        60,
        &[
            "docker", "exec", "-d", &c.name, "runuser", "-u", "chimaera", "--", "chimaera", "run",
        ],
    )
    .expect_ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = as_alice(&c, "chimaera status");
        if r.ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never answered:\n{}\n{}",
            r.describe(),
            c.exec(&["sh", "-c", "cat /var/log/chimaera/chimaera.log"])
                .stdout
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let build = as_alice(
        &c,
        "set -e; cd ~; \
         cc -std=c11 -Wall -Wextra -Werror /src/c/ping.c $(pkg-config --cflags --libs chimaera) -o ping-c; \
         g++ -std=c++17 -Wall -Wextra -Werror /src/cpp/ping.cpp $(pkg-config --cflags --libs chimaera) -o ping-cpp; \
         ldd ping-c",
    )
    .expect_ok();
    assert!(
        build
            .stdout
            .lines()
            .any(|l| l.contains("libchimaera.so.0 => /")
                && l.contains("-linux-gnu/libchimaera.so.0")),
        "{}",
        build.describe()
    );

    let ping = as_alice(&c, "~/ping-c -n 2000 --json").expect_ok();
    let v: serde_json::Value = serde_json::from_str(ping.stdout.trim()).expect("one JSON object");
    assert_eq!(v["count"], 2000, "{v}");
    assert_eq!(v["library"], env!("CARGO_PKG_VERSION"), "{v}");
    assert!(v["p50_ns"].as_u64().unwrap() > 0, "{v}");
    eprintln!("C ping in the container: {v}");

    let cpp = as_alice(&c, "~/ping-cpp -n 500").expect_ok();
    assert!(
        cpp.stdout.contains("500 pings from C++") && cpp.stdout.contains("wrapper checks passed"),
        "{}",
        cpp.describe()
    );
    eprintln!("{}", cpp.stdout.trim());

    // Stopped, the runtime is gone for the client too, with its reason.
    c.exec(&["chimaera", "stop"]).expect_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    let gone = loop {
        let r = as_alice(&c, "~/ping-c -n 10");
        if !r.ok() {
            break r;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(gone.status, Some(69), "{}", gone.describe());
    assert!(gone.stderr.contains("CHIMAERA_ERR_"), "{}", gone.describe());
}
