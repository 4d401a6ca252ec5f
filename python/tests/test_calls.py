"""Calls, tasks, batches and pools against a real daemon."""

from __future__ import annotations

import array
import json
import struct
import time

import pytest
from helpers import sleep_ms

import chimaera
from chimaera import ADMIN_POOL, AdminMethod


def test_ping_is_a_round_trip_in_seconds(client: chimaera.Client) -> None:
    rtts = [client.ping() for _ in range(100)]
    assert all(isinstance(r, float) for r in rtts)
    # A local round trip through shared memory: well under a millisecond
    # typically, and surely under a second.
    assert 0 < min(rtts) and max(rtts) < 1.0
    assert client.ping(timeout=5.0) > 0


def test_call_runs_the_task_on_its_input(client: chimaera.Client) -> None:
    assert client.call(ADMIN_POOL, AdminMethod.ECHO, b"hello") == b"hello"
    # Every bytes-like input, and none (empty).
    assert client.call(ADMIN_POOL, AdminMethod.ECHO, bytearray(b"ba")) == b"ba"
    assert client.call(ADMIN_POOL, AdminMethod.ECHO, memoryview(b"xmvx")[1:3]) == b"mv"
    assert client.call(ADMIN_POOL, AdminMethod.ECHO, array.array("B", [1, 2])) == b"\x01\x02"
    assert client.call(ADMIN_POOL, AdminMethod.ECHO) == b""
    assert client.call(ADMIN_POOL, AdminMethod.PING) == b""
    # Beyond a record's inline bytes: through the data segments both ways.
    big = bytes(range(256)) * 1024
    assert client.call(ADMIN_POOL, AdminMethod.ECHO, big) == big
    # FAN_OUT runs n subtasks and reports how many completed.
    assert client.call(ADMIN_POOL, AdminMethod.FAN_OUT, struct.pack("<I", 5)) == struct.pack("<I", 5)


def test_call_refuses_what_is_not_bytes(client: chimaera.Client) -> None:
    with pytest.raises(TypeError, match="encode it first"):
        client.call(ADMIN_POOL, AdminMethod.ECHO, "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes-like"):
        client.call(ADMIN_POOL, AdminMethod.ECHO, 3.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not int"):
        client.call(ADMIN_POOL, AdminMethod.ECHO, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes-like"):
        client.submit_many(ADMIN_POOL, AdminMethod.ECHO, [b"ok", [1, 2]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="timeout"):
        client.call(ADMIN_POOL, AdminMethod.PING, timeout=-1)
    with pytest.raises(OverflowError):
        client.call(-1, AdminMethod.PING)


def test_call_raises_the_tasks_error(client: chimaera.Client) -> None:
    with pytest.raises(chimaera.NoSuchPool) as e:
        client.call(4242, 0)
    assert e.value.pool == 4242 and isinstance(e.value, LookupError)
    with pytest.raises(chimaera.NoSuchMethod) as m:
        client.call(ADMIN_POOL, 99)
    assert isinstance(m.value, chimaera.ModuleError) and m.value.status == 4
    with pytest.raises(chimaera.BadInput) as b:
        client.call(ADMIN_POOL, AdminMethod.FAN_OUT, b"x")
    assert b.value.status == 6 and "4 bytes" in b.value.message
    assert isinstance(b.value, chimaera.ChimaeraError)


def test_call_timeout_gives_up_waiting_not_the_task(client: chimaera.Client) -> None:
    t = time.monotonic()
    with pytest.raises(chimaera.TimedOut) as e:
        client.call(ADMIN_POOL, AdminMethod.SLEEP, sleep_ms(1500), timeout=0.2)
    took = time.monotonic() - t
    assert 0.2 <= took < 1.0, took
    assert isinstance(e.value, TimeoutError) and "still runs" in str(e.value)
    # The client is still fine.
    assert client.call(ADMIN_POOL, AdminMethod.ECHO, b"after") == b"after"


def test_submit_returns_at_once_and_wait_returns_the_output(client: chimaera.Client) -> None:
    t = time.monotonic()
    task = client.submit(ADMIN_POOL, AdminMethod.SLEEP, sleep_ms(300))
    assert time.monotonic() - t < 0.1
    assert not task.done()
    assert (task.pool, task.method) == (ADMIN_POOL, AdminMethod.SLEEP)
    assert "pending" in repr(task)
    assert task.wait() == b""
    assert time.monotonic() - t >= 0.3
    assert task.done() and "done" in repr(task)
    # Settled: the same outcome again, at once.
    assert task.wait(timeout=0) == b""
    echo = client.submit(ADMIN_POOL, AdminMethod.ECHO, b"e")
    assert echo.wait(timeout=5) == b"e" and echo.wait() == b"e"


def test_wait_timeout_leaves_the_task_waitable(client: chimaera.Client) -> None:
    task = client.submit(ADMIN_POOL, AdminMethod.SLEEP, sleep_ms(500))
    with pytest.raises(chimaera.TimedOut):
        task.wait(timeout=0.05)
    with pytest.raises(chimaera.TimedOut):
        task.wait(timeout=0)
    assert not task.done()
    assert task.wait(timeout=5) == b""


def test_a_failed_task_raises_its_error_each_wait(client: chimaera.Client) -> None:
    task = client.submit(4243, 1)
    for _ in range(2):
        with pytest.raises(chimaera.NoSuchPool):
            task.wait()
    assert task.done()


def test_submit_many_and_wait_all_keep_order(client: chimaera.Client) -> None:
    inputs = [i.to_bytes(4, "little") * (i % 20) for i in range(3000)]
    batch = client.submit_many(ADMIN_POOL, AdminMethod.ECHO, inputs)
    assert isinstance(batch, chimaera.TaskBatch) and len(batch) == 3000
    assert chimaera.wait_all(batch) == inputs
    # A batch is a sequence of Tasks sharing its tasks' outcomes.
    assert batch[7].wait() == inputs[7] and batch[-1].wait() == inputs[-1]
    assert [t.wait() for t in batch[10:13]] == inputs[10:13]
    assert sum(1 for _ in batch) == 3000 and all(t.done() for t in batch)
    with pytest.raises(IndexError):
        batch[3000]
    # Any iterable of inputs; a list of Tasks and batches, flattened.
    gen = client.submit_many(ADMIN_POOL, AdminMethod.ECHO, (b"g%d" % i for i in range(3)))
    single = client.submit(ADMIN_POOL, AdminMethod.ECHO, b"one")
    assert chimaera.wait_all([single, gen]) == [b"one", b"g0", b"g1", b"g2"]
    assert chimaera.wait_all(client.submit_many(ADMIN_POOL, AdminMethod.PING, [])) == []


def test_entries_of_a_batch_are_waitable_before_wait_all(client: chimaera.Client) -> None:
    batch = client.submit_many(ADMIN_POOL, AdminMethod.SLEEP, [sleep_ms(200), sleep_ms(1)])
    assert batch[1].wait(timeout=5) == b""
    assert not batch[0].done()
    assert chimaera.wait_all(batch) == [b"", b""]


def test_a_batch_larger_than_the_runtime_holds(client: chimaera.Client) -> None:
    # More tasks than the runtime has task records: submit_many waits for
    # the batch's own oldest tasks rather than for records it holds itself.
    capacity = client.stats()["records_capacity"]
    n = capacity + 3000
    inputs = [i.to_bytes(4, "little") for i in range(n)]
    t = time.monotonic()
    batch = client.submit_many(ADMIN_POOL, AdminMethod.ECHO, inputs)
    assert chimaera.wait_all(batch) == inputs
    assert time.monotonic() - t < 20


def test_wait_all_raises_the_first_error_or_returns_it(client: chimaera.Client) -> None:
    tasks = [
        client.submit(ADMIN_POOL, AdminMethod.ECHO, b"a"),
        client.submit(4244, 0),
        client.submit(ADMIN_POOL, 77),
        client.submit(ADMIN_POOL, AdminMethod.ECHO, b"d"),
    ]
    with pytest.raises(chimaera.NoSuchPool):
        chimaera.wait_all(tasks)
    out = chimaera.wait_all(tasks, return_exceptions=True)
    assert out[0] == b"a" and out[3] == b"d"
    assert isinstance(out[1], chimaera.NoSuchPool) and isinstance(out[2], chimaera.NoSuchMethod)
    with pytest.raises(TypeError, match="Tasks and TaskBatches"):
        chimaera.wait_all([b"not a task"])  # type: ignore[list-item]


def test_wait_all_timeout_leaves_the_tasks_waitable(client: chimaera.Client) -> None:
    batch = client.submit_many(ADMIN_POOL, AdminMethod.SLEEP, [sleep_ms(1), sleep_ms(700)])
    t = time.monotonic()
    with pytest.raises(chimaera.TimedOut):
        chimaera.wait_all(batch, timeout=0.15)
    assert 0.15 <= time.monotonic() - t < 0.6
    assert batch[0].done()
    assert chimaera.wait_all(batch, timeout=5) == [b"", b""]


def test_pools_are_created_used_and_destroyed(client: chimaera.Client) -> None:
    params = {"kind": "ram", "size": "1M", "block_size": 4096}
    pool = client.create_pool("py_bdev", "bdev", params)
    assert (pool.name, pool.module) == ("py_bdev", "bdev") and pool.id != ADMIN_POOL
    assert repr(pool).startswith("Pool(id=")
    # Get-or-create: the same pool for the same ask, params as text too.
    assert client.create_pool("py_bdev", "bdev", json.dumps(params)) == pool
    assert pool in client.pools() and int(pool) == pool.id
    with pytest.raises(chimaera.ModuleError, match="exists with module bdev"):
        client.create_pool("py_bdev", "bdev", {"kind": "ram", "size": "2M"})
    # The bdev module through the Pool object: allocate a block, write, read.
    extent = client.call(pool, 0, struct.pack("<Q", 1))
    offset, length = struct.unpack("<QQ", extent)
    block = bytes(range(256)) * (length // 256)
    client.call(pool, 2, block + struct.pack("<Q", offset))
    assert client.call(pool, 3, struct.pack("<QQ", offset, length)) == block
    assert client.destroy_pool("py_bdev") == pool
    assert pool not in client.pools()
    with pytest.raises(chimaera.NoSuchPool):
        client.call(pool, 3, struct.pack("<QQ", offset, length))
    other = client.create_pool("py_bdev2", "bdev", params)
    assert client.destroy_pool(other.id) == other
    with pytest.raises(chimaera.ModuleError, match="no pool named"):
        client.destroy_pool("py_bdev2")
    with pytest.raises(chimaera.BadInput, match="no module"):
        client.create_pool("py_x", "no_such_module")
    with pytest.raises(ValueError, match="pool name"):
        client.create_pool("bad name!", "bdev")


def test_stats_and_identity(shared_daemon, client: chimaera.Client) -> None:  # type: ignore[no-untyped-def]
    stats = client.stats()
    assert stats["pid"] == shared_daemon.pid == client.runtime_pid
    assert len(stats["workers"]) == client.lanes == 2
    assert "runtime pid" in repr(client)
    assert [p.name for p in client.pools()][0] == "admin"
