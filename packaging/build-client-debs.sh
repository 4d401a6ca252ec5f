#!/usr/bin/env bash
# Builds the C client's Debian packages into OUTDIR (default target/debian):
#
#   libchimaera0_<version>_<arch>.deb     libchimaera.so.0 (the shared library)
#   libchimaera-dev_<version>_<arch>.deb  chimaera.h, chimaera.hpp, chimaera.pc,
#                                          libchimaera.so, libchimaera.a, examples
#
# cargo-deb makes both from crates/chimaera-capi (variants `lib` and `dev`,
# multiarch paths); this script then does what dh_strip, dh_shlibdeps,
# dh_makeshlibs and dh_md5sums would, which cargo-deb does not for a
# library: strips the library and the archive, computes Depends from the
# libraries libchimaera.so.0 links, writes the shlibs file (so programs
# linked against it depend on libchimaera0) and md5sums.
#
# Needs cargo-deb, dpkg-dev (dpkg-shlibdeps) and binutils (strip).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-target/debian}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
stage="$(mktemp -d "${TMPDIR:-/tmp}/chimaera-client-debs.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

"${CARGO:-cargo}" deb -p chimaera-capi --variant lib --multiarch=same --output "$stage/lib.deb"
"${CARGO:-cargo}" deb -p chimaera-capi --variant dev --multiarch=same --no-build --output "$stage/dev.deb"

# name version arch of a .deb
field() { dpkg-deb -f "$1" "$2"; }

finish() {
    local deb="$1" kind="$2" root="$stage/root-$2"
    dpkg-deb -R "$deb" "$root"
    case "$kind" in
    lib)
        local so
        so="$(find "$root/usr/lib" -type f -name 'libchimaera.so.*')"
        strip --remove-section=.comment --remove-section=.note --strip-unneeded "$so"
        # dpkg-shlibdeps reads debian/control from its working directory.
        mkdir -p "$stage/shlibdeps/debian"
        printf 'Source: chimaera\n\nPackage: libchimaera0\nArchitecture: any\n' >"$stage/shlibdeps/debian/control"
        local depends
        depends="$(cd "$stage/shlibdeps" && dpkg-shlibdeps -O "$so" | sed -n 's/^shlibs:Depends=//p')"
        [ -n "$depends" ] || { echo "build-client-debs: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
        sed -i "/^Depends:/d" "$root/DEBIAN/control"
        sed -i "/^Version:/a Depends: $depends" "$root/DEBIAN/control"
        local upstream
        upstream="$(field "$deb" Version)"
        printf 'libchimaera 0 libchimaera0 (>= %s)\n' "${upstream%-*}" >"$root/DEBIAN/shlibs"
        chmod 0644 "$root/DEBIAN/shlibs"
        ;;
    dev)
        strip --strip-debug --remove-section=.comment --remove-section=.note \
            --enable-deterministic-archives "$root"/usr/lib/*/libchimaera.a
        ;;
    esac
    sed -i "s/^Installed-Size:.*/Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)/" "$root/DEBIAN/control"
    (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
    chmod 0644 "$root/DEBIAN/md5sums"
    local name
    name="$(field "$deb" Package)_$(field "$deb" Version)_$(field "$deb" Architecture).deb"
    dpkg-deb --root-owner-group -Zxz --build "$root" "$out/$name" >/dev/null
    echo "$out/$name"
}

finish "$stage/lib.deb" lib
finish "$stage/dev.deb" dev
