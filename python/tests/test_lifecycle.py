"""A runtime that is not there, that dies under waiting threads, that
stops; waits interrupted by signals."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import List

import pytest
from conftest import Daemon
from helpers import sleep_ms

import chimaera
from chimaera import ADMIN_POOL, AdminMethod


def test_no_runtime_is_not_running(tmp_path: Path) -> None:
    never_started = Daemon(tmp_path, "absent")
    with pytest.raises(chimaera.NotRunning) as e:
        chimaera.Client(config=never_started.config)
    assert isinstance(e.value, ConnectionError) and isinstance(e.value, chimaera.ChimaeraError)
    assert "discovery file" in str(e.value)


def test_a_missing_configuration_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(chimaera.ConfigError, match="does not exist"):
        chimaera.Client(config=tmp_path / "nowhere.yaml")


def test_a_stale_discovery_file_is_not_running(daemon: Daemon) -> None:
    daemon.client().ping()
    daemon.kill()
    assert daemon.proc is not None
    daemon.proc.wait(timeout=10)
    # The discovery file and segments of a killed runtime remain; the
    # liveness lock says it is gone.
    with pytest.raises(chimaera.NotRunning):
        chimaera.Client(config=daemon.config)


def test_threads_waiting_on_a_killed_runtime_hear_runtime_gone_within_a_second(daemon: Daemon) -> None:
    client = daemon.client()
    task = client.submit(ADMIN_POOL, AdminMethod.SLEEP, sleep_ms(20_000))
    batch = client.submit_many(ADMIN_POOL, AdminMethod.SLEEP, [sleep_ms(20_000)] * 3)
    errors: List[BaseException] = []
    took: List[float] = []
    killed = threading.Event()
    killed_at: List[float] = []

    def waiter(fn):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - the test inspects it
                killed.wait(5)
                took.append(time.monotonic() - killed_at[0])
                errors.append(e)

        return threading.Thread(target=run)

    threads = [
        waiter(task.wait),
        waiter(lambda: chimaera.wait_all(batch)),
        waiter(lambda: client.call(ADMIN_POOL, AdminMethod.SLEEP, sleep_ms(20_000))),
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)  # all three are waiting, without the GIL
    killed_at.append(time.monotonic())
    daemon.kill(signal.SIGKILL)
    killed.set()
    for t in threads:
        t.join(10)
    assert len(errors) == 3, errors
    for e in errors:
        assert isinstance(e, chimaera.RuntimeGone), repr(e)
        assert e.pid == daemon.pid
    assert max(took) < 1.0, took
    # And a new task is refused rather than lost.
    with pytest.raises((chimaera.RuntimeGone, chimaera.Stopping, chimaera.QueueFull)):
        client.call(ADMIN_POOL, AdminMethod.PING, timeout=2)


def test_a_stopped_runtime_takes_no_more_tasks(daemon: Daemon) -> None:
    client = daemon.client()
    assert client.call(ADMIN_POOL, AdminMethod.ECHO, b"x") == b"x"
    daemon.kill(signal.SIGTERM)
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=15) == 0
    t = time.monotonic()
    with pytest.raises(chimaera.Stopping):
        client.call(ADMIN_POOL, AdminMethod.PING)
    assert time.monotonic() - t < 1.0
    with pytest.raises(chimaera.NotRunning):
        chimaera.Client(config=daemon.config)


class Interrupted(Exception):
    pass


def test_a_signal_handler_interrupts_a_wait(client: chimaera.Client) -> None:
    # Ctrl-C is SIGINT's handler raising KeyboardInterrupt; pytest keeps
    # that one for itself, so an alarm's handler stands in for it.
    def handler(signum, frame):  # type: ignore[no-untyped-def]
        raise Interrupted()

    old = signal.signal(signal.SIGALRM, handler)
    try:
        for wait in (
            lambda: client.call(ADMIN_POOL, AdminMethod.SLEEP, sleep_ms(5000)),
            lambda: client.submit(ADMIN_POOL, AdminMethod.SLEEP, sleep_ms(5000)).wait(),
            lambda: chimaera.wait_all(client.submit_many(ADMIN_POOL, AdminMethod.SLEEP, [sleep_ms(5000)])),
        ):
            t = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(Interrupted):
                wait()
            assert time.monotonic() - t < 0.6
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
