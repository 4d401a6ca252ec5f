"""A real daemon per test (or per module): the `chimaera` binary of this
repository (``$CHIMAERA_BIN``, else target/debug or target/release, the
newer), run with a private configuration: its own segment names, run
directory, log file and port, as tests/common does for the Rust tests, so
tests run beside each other and beside a real installation."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

import chimaera

REPO = Path(__file__).resolve().parents[2]
_counter = itertools.count()


def chimaera_bin() -> str:
    given = os.environ.get("CHIMAERA_BIN")
    if given:
        return given
    built = [p for p in (REPO / "target/debug/chimaera", REPO / "target/release/chimaera") if p.exists()]
    if not built:
        pytest.fail("no chimaera binary: build one (cargo build) or set CHIMAERA_BIN")
    return str(max(built, key=lambda p: p.stat().st_mtime))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """A `chimaera run` of our own; :meth:`stop` (or the fixture) ends it
    and removes its segments."""

    def __init__(self, base: Path, name: str, extra: str = "") -> None:
        self.dir = base
        self.tag = f"chipy_{name}_{os.getpid()}_{next(_counter)}"
        self.config = str(base / "chimaera.yaml")
        self.log = base / "chimaera.log"
        self.proc: Optional[subprocess.Popen] = None
        (base / "run").mkdir(exist_ok=True)
        Path(self.config).write_text(
            "workers:\n  sched_threads: 2\n"
            "memory:\n  main_segment_size: 4M\n  client_data_segment_size: 2M\n"
            "  runtime_data_segment_size: 2M\n  shm_size: 16M\n"
            "performance:\n  queue_depth: 64\n"
            f"network:\n  zmq_port: {_free_port()}\n"
            f"logging:\n  level: info\n  file: {self.log}\n"
            f"shared_memory:\n  main_segment_name: {self.tag}_main\n"
            f"  client_data_segment_name: {self.tag}_client\n"
            f"  runtime_data_segment_name: {self.tag}_runtime\n"
            f"runtime:\n  run_dir: {base / 'run'}\n" + extra
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Daemon":
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHI_") and k != "NOTIFY_SOCKET"}
        self.stderr = open(self.dir / "stderr", "w+")
        self.proc = subprocess.Popen(
            [chimaera_bin(), "run", "--config", self.config],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                chimaera.Client(config=self.config)
                return self
            except chimaera.ChimaeraError:
                if self.proc.poll() is not None:
                    pytest.fail(f"the daemon exited with {self.proc.returncode}: {self.output()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the daemon did not come up in 20 s: {self.output()}")
                time.sleep(0.02)

    def output(self) -> str:
        self.stderr.flush()
        return (self.dir / "stderr").read_text() + (self.log.read_text() if self.log.exists() else "")

    def client(self) -> chimaera.Client:
        return chimaera.Client(config=self.config)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.stderr.close()
        for kind in ("main", "client", "runtime"):
            try:
                os.unlink(f"/dev/shm/{self.tag}_{kind}")
            except FileNotFoundError:
                pass


@pytest.fixture(autouse=True, scope="session")
def _no_chi_environment() -> Iterator[None]:
    """The caller's CHI_* variables (CHI_RUN_DIR above all) would move the
    client away from the test's daemon."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("CHI_")}
    for k in saved:
        del os.environ[k]
    yield
    os.environ.update(saved)


def _daemon(tmp: Path, name: str) -> Iterator[Daemon]:
    d = Daemon(tmp, name).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """A daemon of this test's own (for tests that stop or kill it)."""
    yield from _daemon(tmp_path, request.node.name[:20])


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """One daemon for the tests of a module that leave it running."""
    yield from _daemon(tmp_path_factory.mktemp("daemon"), request.module.__name__.split(".")[-1][:20])


@pytest.fixture
def client(shared_daemon: Daemon) -> chimaera.Client:
    return shared_daemon.client()

