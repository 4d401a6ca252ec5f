"""Many Python threads at once, and waits that leave the GIL to others."""

from __future__ import annotations

import threading
import time
from typing import List

from helpers import sleep_ms

import chimaera
from chimaera import ADMIN_POOL, AdminMethod


def run_threads(n: int, target) -> List[BaseException]:  # type: ignore[no-untyped-def]
    """Runs target(i) in n threads started together; returns their errors."""
    start = threading.Barrier(n)
    errors: List[BaseException] = []

    def body(i: int) -> None:
        try:
            start.wait(10)
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a thread is stuck"
    return errors


def test_many_threads_submitting_at_once(client: chimaera.Client) -> None:
    calls = 400

    def work(i: int) -> None:
        for k in range(calls):
            data = b"%d:%d" % (i, k)
            # Each thread mixes every way of submitting on one shared client.
            if k % 3 == 0:
                assert client.call(ADMIN_POOL, AdminMethod.ECHO, data) == data
            elif k % 3 == 1:
                assert client.submit(ADMIN_POOL, AdminMethod.ECHO, data).wait(timeout=10) == data
            else:
                inputs = [data + b"/%d" % j for j in range(50)]
                assert chimaera.wait_all(client.submit_many(ADMIN_POOL, AdminMethod.ECHO, inputs)) == inputs

    before = sum(w["tasks_done"] for w in client.stats()["workers"])
    assert run_threads(16, work) == []
    after = sum(w["tasks_done"] for w in client.stats()["workers"])
    per_thread = sum(50 if k % 3 == 2 else 1 for k in range(calls))
    # Every task ran (the stats call itself is one more).
    assert after - before - 1 == 16 * per_thread


def test_many_threads_each_with_its_own_client(shared_daemon) -> None:  # type: ignore[no-untyped-def]
    def work(i: int) -> None:
        c = shared_daemon.client()
        inputs = [b"%d-%d" % (i, j) for j in range(500)]
        assert chimaera.wait_all(c.submit_many(ADMIN_POOL, AdminMethod.ECHO, inputs)) == inputs

    assert run_threads(8, work) == []


def test_threads_waiting_for_one_task_all_get_its_output(client: chimaera.Client) -> None:
    task = client.submit(ADMIN_POOL, AdminMethod.SLEEP, sleep_ms(300))
    batch = client.submit_many(ADMIN_POOL, AdminMethod.ECHO, [b"b"] * 4)
    outputs: List[bytes] = []

    def work(i: int) -> None:
        outputs.append(task.wait(timeout=10))
        outputs.append(batch[i % 4].wait(timeout=10))
        outputs.extend(chimaera.wait_all(batch, timeout=10))

    assert run_threads(8, work) == []
    assert outputs.count(b"") == 8 and outputs.count(b"b") == 8 * 5


def test_waiting_releases_the_gil(client: chimaera.Client) -> None:
    # Another thread notes the time every 1000 turns of a Python loop; it
    # can only turn while the waiting thread has let the GIL go.
    stamps: List[float] = []
    stop = threading.Event()

    def count() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            if n % 1000 == 0:
                stamps.append(time.monotonic())

    counter = threading.Thread(target=count)
    counter.start()
    try:
        for wait in (
            lambda: client.call(ADMIN_POOL, AdminMethod.SLEEP, sleep_ms(400)),
            lambda: client.submit(ADMIN_POOL, AdminMethod.SLEEP, sleep_ms(400)).wait(),
            lambda: chimaera.wait_all(client.submit_many(ADMIN_POOL, AdminMethod.SLEEP, [sleep_ms(400)])),
        ):
            t = time.monotonic()
            wait()
            end = time.monotonic()
            assert end - t >= 0.4
            # Well inside the wait, away from its start and end, where the
            # waiting thread runs Python code itself.
            during = [s for s in stamps if t + 0.1 < s < end - 0.1]
            assert len(during) > 20, len(during)
    finally:
        stop.set()
        counter.join()
