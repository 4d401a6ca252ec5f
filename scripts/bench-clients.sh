#!/usr/bin/env bash
# The C client's round trip against the Rust client's, in one run, on one
# daemon: examples/clients/c/ping.c (libchimaera, timed in C around
# chimaera_call) and `chimaera ping` (the Rust client), alternated ROUNDS
# times with COUNT synchronous admin pings each. Prints each round's
# medians and the ratio of their medians; exits 1 when C is more than
# 1.2 times Rust's.
#
#   scripts/bench-clients.sh [COUNT [ROUNDS]]     (default 20000 5)
#
# Release builds of both; a private daemon (its own segments, one worker,
# removed at exit); nothing of a running installation is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT="${1:-20000}"
ROUNDS="${2:-5}"
LIMIT=1.2

cargo build --release --quiet -p chimaera -p chimaera-capi
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
rel="$target/release"

work="$(mktemp -d /tmp/chimaera-bench-clients.XXXXXX)"
daemon=""
cleanup() {
    if [ -n "$daemon" ]; then
        kill -TERM "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The library as installed: the soname, the link name.
mkdir -p "$work/lib" "$work/run"
cp "$rel/libchimaera.so" "$work/lib/libchimaera.so.0"
ln -s libchimaera.so.0 "$work/lib/libchimaera.so"
cc -std=c11 -O2 -Icrates/chimaera-capi/include examples/clients/c/ping.c \
    -L"$work/lib" -lchimaera -o "$work/ping-c"

tag="chibenchc_$$"
port="$(( 20000 + $$ % 20000 ))"
cat >"$work/bench.yaml" <<EOF
workers:
  sched_threads: 1
memory:
  main_segment_size: 64M
  client_data_segment_size: 32M
  runtime_data_segment_size: 32M
  shm_size: 128M
network:
  zmq_port: $port
logging:
  level: warning
  file: ""
performance:
  queue_depth: 4096
shared_memory:
  main_segment_name: ${tag}_main
  client_data_segment_name: ${tag}_client
  runtime_data_segment_name: ${tag}_runtime
runtime:
  run_dir: $work/run
EOF
# Only this file locates the daemon, for the daemon and both clients.
for v in $(env | sed -n 's/^\(CHI_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done
export CHI_SERVER_CONF="$work/bench.yaml"

"$rel/chimaera" run >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 1 200); do
    "$rel/chimaera" status >/dev/null 2>&1 && break
    kill -0 "$daemon" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
    sleep 0.05
done

# The daemon pins its worker to the first CPU; the clients take the last,
# as `chimaera bench local` does, so neither waits for the other's core.
pin=()
last_cpu=$(( $(nproc) - 1 ))
if [ "$last_cpu" -gt 0 ] && command -v taskset >/dev/null 2>&1; then
    pin=(taskset -c "$last_cpu")
fi

p50() { grep -o '"p50_ns":[0-9]*' | head -1 | cut -d: -f2; }
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

printf 'round  C p50 (ns)  Rust p50 (ns)\n'
: >"$work/c" && : >"$work/rust"
for r in $(seq 1 "$ROUNDS"); do
    c="$(LD_LIBRARY_PATH="$work/lib" "${pin[@]}" "$work/ping-c" -n "$COUNT" --json | p50)"
    rust="$("${pin[@]}" "$rel/chimaera" ping -n "$COUNT" --json --quiet | p50)"
    echo "$c" >>"$work/c"
    echo "$rust" >>"$work/rust"
    printf '%5d  %11s  %13s\n' "$r" "$c" "$rust"
done
c="$(median <"$work/c")"
rust="$(median <"$work/rust")"
ratio="$(awk -v c="$c" -v r="$rust" 'BEGIN {printf "%.3f", c / r}')"
printf 'median of %d rounds of %d pings: C %s ns, Rust %s ns, C/Rust %s (limit %s)\n' \
    "$ROUNDS" "$COUNT" "$c" "$rust" "$ratio" "$LIMIT"
awk -v x="$ratio" -v l="$LIMIT" 'BEGIN {exit !(x <= l)}' || {
    echo "bench-clients: the C client is more than ${LIMIT}x the Rust client" >&2
    exit 1
}
