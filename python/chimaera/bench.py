"""``python -m chimaera.bench``: the Python client's speed.

Measures, in one run:

- ``rtt``: synchronous ``Client.call`` of the admin no-op (PING), timed one
  by one with ``time.perf_counter_ns`` around the call, after a warm-up;
- ``tasks_per_s``: tasks pipelined through ``Client.submit_many`` and
  ``chimaera.wait_all``, in batches, two batches in flight (the next one is
  submitted before the previous one is waited for).

Which daemon: by default the bench starts a private one, as ``chimaera bench
local`` does (one worker, private segment names and run directory in a
temporary directory, removed afterwards; the daemon dies with the bench),
from the ``chimaera`` binary given by ``--chimaera``, else ``$CHIMAERA_BIN``,
else ``chimaera`` on ``PATH``. This process then pins itself to the last CPU
(the daemon's worker takes the first), as the Rust bench does. With
``--config FILE`` it measures the running runtime that file names instead
(its workers, its other clients: figures then depend on that runtime).

``--json`` prints one JSON object with ``rtt_p50_ns``, ``rtt_p99_ns``,
``tasks_per_s`` and, for scale, the ratios to Ray 2.60 on the machine this
was written on (a 3.5 ms round trip, about 950 tasks/s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

from . import ADMIN_POOL, AdminMethod, ChimaeraError, Client, wait_all

RAY_RTT_NS = 3_500_000
RAY_TASKS_PER_S = 950.0


def _percentile(sorted_ns: List[int], p: float) -> int:
    if not sorted_ns:
        return 0
    i = round((len(sorted_ns) - 1) * p)
    return sorted_ns[min(i, len(sorted_ns) - 1)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the daemon's child process: SIGTERM it when the bench dies,
    however the bench ends (PR_SET_PDEATHSIG)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


class PrivateDaemon:
    """A daemon of the bench's own, stopped and removed by :meth:`stop`."""

    def __init__(self, binary: str, workers: int = 1) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"chimaera-pybench-{os.getpid()}-")
        tag = f"chipybench_{os.getpid()}"
        self.config = os.path.join(self.dir, "bench.yaml")
        with open(self.config, "w") as f:
            f.write(
                f"workers:\n  sched_threads: {workers}\n  process_reaper_threads: 1\n"
                "memory:\n  main_segment_size: 64M\n  client_data_segment_size: 32M\n"
                "  runtime_data_segment_size: 32M\n  shm_size: 128M\n"
                f"network:\n  zmq_port: {_free_port()}\n"
                'logging:\n  level: warning\n  file: ""\n'
                "performance:\n  queue_depth: 4096\n"
                f"shared_memory:\n  main_segment_name: {tag}_main\n"
                f"  client_data_segment_name: {tag}_client\n  runtime_data_segment_name: {tag}_runtime\n"
                f"runtime:\n  run_dir: {self.dir}\n"
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHI_") and k != "NOTIFY_SOCKET"}
        self.stderr = open(os.path.join(self.dir, "stderr"), "w+")
        self.proc = subprocess.Popen(
            [binary, "run", "--config", self.config],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            preexec_fn=_die_with_parent,
        )

    def connect(self, limit: float = 20.0) -> Client:
        deadline = time.monotonic() + limit
        while True:
            try:
                return Client(config=self.config)
            except ChimaeraError:
                if self.proc.poll() is not None:
                    self.stderr.seek(0)
                    raise RuntimeError(f"the bench daemon exited ({self.proc.returncode}): {self.stderr.read()}")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def rtts(client: Client, samples: int, warmup: int) -> List[int]:
    """Round trips of synchronous admin no-ops, in ns, sorted."""
    call = client.call
    clock = time.perf_counter_ns
    pool, ping = ADMIN_POOL, int(AdminMethod.PING)
    for _ in range(warmup):
        call(pool, ping)
    out = [0] * samples
    for i in range(samples):
        t = clock()
        call(pool, ping)
        out[i] = clock() - t
    out.sort()
    return out


def pipelined(client: Client, batch: int, seconds: float) -> float:
    """Tasks per second through submit_many and wait_all, two batches in flight."""
    inputs = [b""] * batch
    pool, ping = ADMIN_POOL, int(AdminMethod.PING)
    submit_many = client.submit_many
    done = 0
    start = time.perf_counter()
    pending = submit_many(pool, ping, inputs)
    while time.perf_counter() - start < seconds:
        following = submit_many(pool, ping, inputs)
        wait_all(pending)
        done += batch
        pending = following
    wait_all(pending)
    done += batch
    return done / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    daemon: Optional[PrivateDaemon] = None
    if args.config:
        client = Client(config=args.config)
        where = args.config
    else:
        binary = args.chimaera or os.environ.get("CHIMAERA_BIN") or shutil.which("chimaera")
        if not binary:
            raise SystemExit(
                "chimaera.bench: no chimaera binary to start a daemon with: pass --chimaera PATH "
                "(or set CHIMAERA_BIN), or --config FILE of a running runtime"
            )
        # The client must find the private daemon by its file alone, as the
        # daemon was started with it alone.
        for k in [k for k in os.environ if k.startswith("CHI_")]:
            del os.environ[k]
        daemon = PrivateDaemon(binary)
        where = "private"
    try:
        if daemon is not None:
            client = daemon.connect()
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) > 1:
                os.sched_setaffinity(0, {cpus[-1]})
        samples = rtts(client, args.samples, args.warmup)
        tps = pipelined(client, args.batch, args.seconds)
        p50 = _percentile(samples, 0.5)
        return {
            "rtt_p50_ns": p50,
            "rtt_p99_ns": _percentile(samples, 0.99),
            "tasks_per_s": round(tps),
            "rtt_samples": len(samples),
            "batch": args.batch,
            "seconds": args.seconds,
            "daemon": where,
            "workers": client.lanes,
            "python": sys.version.split()[0],
            "ray_rtt_ns": RAY_RTT_NS,
            "ray_tasks_per_s": RAY_TASKS_PER_S,
            "rtt_vs_ray": round(RAY_RTT_NS / max(p50, 1), 1),
            "tasks_per_s_vs_ray": round(tps / RAY_TASKS_PER_S, 1),
        }
    finally:
        if daemon is not None:
            daemon.stop()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chimaera.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--chimaera", metavar="BIN", help="the chimaera binary the private daemon runs")
    where.add_argument("--config", metavar="FILE", help="measure the running runtime this file names instead")
    parser.add_argument("--samples", type=int, default=100_000, help="timed round trips (default 100000)")
    parser.add_argument("--warmup", type=int, default=10_000, help="untimed round trips first (default 10000)")
    parser.add_argument("--seconds", type=float, default=2.0, help="pipelined run time (default 2)")
    parser.add_argument("--batch", type=int, default=1024, help="tasks per submit_many (default 1024)")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.batch < 1 or args.warmup < 0 or args.seconds <= 0:
        parser.error("--samples and --batch must be at least 1, --warmup at least 0, --seconds above 0")
    # SIGTERM ends the bench through its finally: the daemon is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"python {report['python']}, {report['workers']} worker(s), daemon: {report['daemon']}")
        print(
            f"call rtt (admin no-op): p50 {report['rtt_p50_ns'] / 1000:.2f} µs, "
            f"p99 {report['rtt_p99_ns'] / 1000:.2f} µs over {report['rtt_samples']} calls "
            f"({report['rtt_vs_ray']}x Ray's 3.5 ms)"
        )
        print(
            f"pipelined (submit_many/wait_all, batches of {report['batch']}): "
            f"{report['tasks_per_s']:,} tasks/s ({report['tasks_per_s_vs_ray']}x Ray's 950/s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
