"""Python client of the chimaera runtime.

Submit tasks to the chimaera daemon on this host through its shared memory::

    import chimaera

    client = chimaera.Client()                 # or Client(config="/path/chimaera.yaml")
    client.ping()                              # round trip of an admin no-op, in seconds
    out = client.call(chimaera.ADMIN_POOL, chimaera.AdminMethod.ECHO, b"hi")
    task = client.submit(chimaera.ADMIN_POOL, chimaera.AdminMethod.PING)
    task.wait(timeout=1.0)
    tasks = client.submit_many(chimaera.ADMIN_POOL, chimaera.AdminMethod.ECHO, [b"a", b"b"])
    chimaera.wait_all(tasks)                   # [b"a", b"b"]

Waiting never holds the GIL. Errors derive from :class:`ChimaeraError`.
See python/README.md for the whole API.
"""

from __future__ import annotations

import collections.abc
import enum

from ._chimaera import (
    ADMIN_POOL,
    LAYOUT_VERSION,
    Client,
    Pool,
    Task,
    TaskBatch,
    __version__,
    wait_all,
)
from . import errors
from .errors import (
    BadInput,
    ChimaeraError,
    ConfigError,
    ModuleError,
    NodeUnavailable,
    NoSuchMethod,
    NoSuchPool,
    NotRunning,
    PermissionDenied,
    QueueFull,
    RuntimeGone,
    Stopping,
    TimedOut,
    TooManyClients,
    VersionMismatch,
)


class AdminMethod(enum.IntEnum):
    """Method numbers of the admin pool (pool id :data:`ADMIN_POOL`)."""

    PING = 0
    """Does nothing: its round trip is the runtime's latency."""
    STATS = 1
    """Output: the runtime's counters as JSON (see :meth:`Client.stats`)."""
    STOP = 2
    """Stops the runtime gracefully, as SIGTERM does."""
    FLUSH = 3
    """Completes once every lane is empty and no other task runs."""
    CREATE_POOL = 4
    """Input: JSON ``{"name", "module", "params"}`` (see :meth:`Client.create_pool`)."""
    DESTROY_POOL = 5
    """Input: JSON ``{"name": ...}`` or ``{"id": ...}``."""
    LIST_POOLS = 6
    """Output: the pools as a JSON list."""
    ECHO = 7
    """Output = input."""
    SLEEP = 8
    """Input: u64 little-endian milliseconds; sleeps without holding its worker."""
    SPIN = 9
    """Input: u64 little-endian milliseconds; busy-waits (a stuck module)."""
    FAN_OUT = 10
    """Input: u32 little-endian n; runs n PING subtasks and outputs their count."""


__all__ = [
    "ADMIN_POOL",
    "LAYOUT_VERSION",
    "AdminMethod",
    "Client",
    "Pool",
    "Task",
    "TaskBatch",
    "wait_all",
    "__version__",
]
# The exceptions, as errors.py lists them (one list to keep).
__all__ += errors.__all__

# A TaskBatch is a sequence of Tasks (len, index, iterate, in, reversed).
collections.abc.Sequence.register(TaskBatch)

del collections, enum
