#!/bin/sh
# Build the `debian:bookworm-slim` image locally when it is missing.
#
# No container registry can be reached from the machines this project is
# built and tested on, so `FROM debian:bookworm-slim` cannot be pulled. This
# script makes an equivalent image from Debian's own packages:
#
#   debootstrap --variant=minbase bookworm  (from the Debian mirror)
#   -> slimmed the way the official slim image is (no docs, man pages,
#      locales, apt lists or caches; dpkg excludes so later installs stay slim)
#   -> tar | docker import - debian:bookworm-slim
#
# Everywhere else `docker build` / `docker compose build` simply pulls the
# official image and this script is not needed.
#
# Idempotent: does nothing when the image already exists. Safe to run
# concurrently (serialised with flock). Must run as root (debootstrap).
#
# Environment:
#   BASE_IMAGE     image to create        (default debian:bookworm-slim)
#   DEBIAN_MIRROR  mirror for debootstrap (default http://deb.debian.org/debian)
#   SUITE          Debian suite           (default bookworm)
set -eu

BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE="${SUITE:-bookworm}"
LOCK="${TMPDIR:-/tmp}/chimaera-build-base-image.lock"

say() { printf 'build-base-image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "$BASE_IMAGE already present, nothing to do"
    exit 0
fi

# Serialise concurrent callers (CI script and tests); re-check under the lock.
if [ -z "${CHI_BASE_IMAGE_LOCKED:-}" ] && command -v flock >/dev/null 2>&1; then
    say "waiting for lock $LOCK"
    CHI_BASE_IMAGE_LOCKED=1 exec flock "$LOCK" "$0" "$@"
fi
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "$BASE_IMAGE already present (built by a concurrent run), nothing to do"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root; run as root"
if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

ROOTFS="$(mktemp -d /var/tmp/chimaera-rootfs.XXXXXX)"
cleanup() {
    # debootstrap may leave /proc or /sys mounted inside the target on failure.
    for m in proc sys dev/pts dev; do
        if mountpoint -q "$ROOTFS/$m" 2>/dev/null; then umount -l "$ROOTFS/$m" || true; fi
    done
    rm -rf "$ROOTFS"
}
trap cleanup EXIT INT TERM

ARCH="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
say "debootstrap --variant=minbase $SUITE ($ARCH) from $DEBIAN_MIRROR into $ROOTFS (a few minutes)"
set -- --variant=minbase --arch="$ARCH"
[ -r "$KEYRING" ] && set -- "$@" --keyring="$KEYRING"
debootstrap "$@" "$SUITE" "$ROOTFS" "$DEBIAN_MIRROR" >"$ROOTFS.log" 2>&1 || {
    tail -n 30 "$ROOTFS.log" >&2
    rm -f "$ROOTFS.log"
    die "debootstrap failed"
}
rm -f "$ROOTFS.log"

say "slimming the root file system like the official slim image"
# Keep future package installs slim too (same idea as the official image).
mkdir -p "$ROOTFS/etc/dpkg/dpkg.cfg.d" "$ROOTFS/etc/apt/apt.conf.d" "$ROOTFS/etc/apt/sources.list.d"
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
# Drop files that a container does not need (as in debian:*-slim).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
CFG
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-apt-speedup" <<'CFG'
# No fsync during package installs inside image builds.
force-unsafe-io
CFG
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'CFG'
# Remove downloaded .deb files after every install.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-gzip-indexes" <<'CFG'
Acquire::GzipIndexes "true";
CFG
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages" <<'CFG'
Acquire::Languages "none";
CFG
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-autoremove-suggests" <<'CFG'
Apt::AutoRemove::SuggestsImportant "false";
CFG
# Services must not start inside an image build.
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"

# Sources in deb822 form, as in the official bookworm image.
rm -f "$ROOTFS/etc/apt/sources.list"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<CFG
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
CFG

# Docs, man pages, locales: keep only copyright files.
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
for d in groff info linda lintian/overrides locale man; do
    rm -rf "${ROOTFS:?}/usr/share/${d:?}"/* 2>/dev/null || true
done
# Package lists, caches, logs, and per-host identity.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/archives/partial/* \
    "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old \
    "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* "$ROOTFS"/root/.cache 2>/dev/null || true
mkdir -p "$ROOTFS/var/lib/apt/lists/partial"
find "$ROOTFS/var/log" -type f -exec truncate -s 0 {} + 2>/dev/null || true
rm -f "$ROOTFS"/var/log/bootstrap.log "$ROOTFS"/var/log/alternatives.log "$ROOTFS"/var/log/apt/*.log
: >"$ROOTFS/etc/machine-id" 2>/dev/null || true
rm -f "$ROOTFS/etc/hostname" "$ROOTFS/etc/resolv.conf"

say "importing as $BASE_IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --message "debootstrap --variant=minbase $SUITE, slimmed (scripts/build-base-image.sh)" \
    - "$BASE_IMAGE" >/dev/null
say "done: $(docker image inspect --format '{{.Id}} {{.Size}} bytes' "$BASE_IMAGE")"
