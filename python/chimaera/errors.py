"""The exceptions of the chimaera client.

Every error the client raises derives from :class:`ChimaeraError`. Where a
built-in exception means the same, the class derives from it too, so
``except TimeoutError`` catches :class:`TimedOut` and ``except
ConnectionError`` catches :class:`NotRunning` and :class:`RuntimeGone`.

The native module (``chimaera._chimaera``) raises these classes; they live
in Python so that they can have several bases and docstrings.
"""

from __future__ import annotations

__all__ = [
    "ChimaeraError",
    "NotRunning",
    "VersionMismatch",
    "QueueFull",
    "TimedOut",
    "RuntimeGone",
    "Stopping",
    "NoSuchPool",
    "NodeUnavailable",
    "ModuleError",
    "NoSuchMethod",
    "BadInput",
    "PermissionDenied",
    "TooManyClients",
    "ConfigError",
]


class ChimaeraError(Exception):
    """Base class of every error of the chimaera client."""


class NotRunning(ChimaeraError, ConnectionError):
    """No runtime runs where the configuration points (no discovery file,
    no segments, or a stale discovery file of a runtime that is gone).
    Start one (``chimaera run``) or point the client at it (``config=``)."""


class VersionMismatch(ChimaeraError):
    """The runtime uses another shared-memory layout than this client: use a
    client of the runtime's release."""


class QueueFull(ChimaeraError):
    """The runtime's lanes or task records stayed full until the task's
    deadline: too much work is outstanding; wait for some of it."""


class TimedOut(ChimaeraError, TimeoutError):
    """A wait ran out: the caller's ``timeout``, or the runtime's own
    ``task_timeout`` (the runtime completed the task as timed out). After
    the caller's timeout the task still runs; ``Task.wait`` may be called
    again."""


class RuntimeGone(ChimaeraError, ConnectionError):
    """The runtime died (or stopped) while a task was outstanding.

    Attributes:
        pid: the process id of the runtime that went away.
    """

    pid: int = 0


class Stopping(ChimaeraError):
    """The runtime is stopping and takes no more tasks."""


class NoSuchPool(ChimaeraError, LookupError):
    """No pool has the task's pool id.

    Attributes:
        pool: the pool id asked for.
    """

    pool: int = 0


class NodeUnavailable(ChimaeraError):
    """The task's node is down, unknown or unreachable."""


class ModuleError(ChimaeraError):
    """The module that ran the task failed it.

    Attributes:
        status: the task's status code (2: the module failed it; 4: no such
            method; 6: the input was refused).
        message: the module's message.
    """

    status: int = 0
    message: str = ""


class NoSuchMethod(ModuleError):
    """The pool's module has no method of that number (status 4)."""


class BadInput(ModuleError, ValueError):
    """The module refused the task's input (status 6)."""


class PermissionDenied(ChimaeraError, PermissionError):
    """Not allowed to use the runtime: be the owner of its segments or a
    member of its ``shared_memory.group``."""


class TooManyClients(ChimaeraError):
    """Every client slot of the runtime is taken."""


class ConfigError(ChimaeraError):
    """The configuration file given (or named by ``CHI_SERVER_CONF``) is
    missing or cannot be read."""

