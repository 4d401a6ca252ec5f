"""Type stubs of the native half of the chimaera client (python/src)."""

import os
from typing import Any, Iterable, Iterator, List, Literal, Optional, Sequence, SupportsIndex, Tuple, Union, overload

ADMIN_POOL: int
LAYOUT_VERSION: int
__version__: str

_Data = Union[bytes, bytearray, memoryview]

class Pool:
    """A pool of the runtime; converts to its id (``int(pool)``), so it can
    be passed wherever a pool id is."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def module(self) -> str: ...
    def __index__(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class Task:
    """A submitted task."""

    @property
    def pool(self) -> int: ...
    @property
    def method(self) -> int: ...
    def wait(self, timeout: Optional[float] = None) -> bytes:
        """Waits (without the GIL) and returns the output, or raises the
        task's error; ``TimedOut`` after ``timeout`` seconds leaves the task
        running and waitable."""
    def done(self) -> bool:
        """Whether the task has completed; never blocks."""

class TaskBatch(Sequence[Task]):
    """The tasks of one ``Client.submit_many``, in order; ``wait_all`` takes it whole."""

    @property
    def pool(self) -> int: ...
    @property
    def method(self) -> int: ...
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int) -> Task: ...
    @overload
    def __getitem__(self, index: slice) -> List[Task]: ...
    def __iter__(self) -> Iterator[Task]: ...

class TaskBatchIterator(Iterator[Task]):
    def __iter__(self) -> "TaskBatchIterator": ...
    def __next__(self) -> Task: ...

class Client:
    """A connection to the chimaera runtime on this host."""

    def __init__(self, config: Union[str, "os.PathLike[str]", None] = None) -> None: ...
    @property
    def runtime_pid(self) -> int: ...
    @property
    def lanes(self) -> int: ...
    def ping(self, timeout: Optional[float] = None) -> float:
        """Round trip of an admin no-op, in seconds."""
    def call(
        self,
        pool: SupportsIndex,
        method: SupportsIndex,
        data: Optional[_Data] = None,
        timeout: Optional[float] = None,
    ) -> bytes:
        """Runs a task and returns its output (the GIL is released while waiting)."""
    def submit(self, pool: SupportsIndex, method: SupportsIndex, data: Optional[_Data] = None) -> Task:
        """Submits a task; returns at once."""
    def submit_many(self, pool: SupportsIndex, method: SupportsIndex, inputs: Iterable[_Data]) -> TaskBatch:
        """Submits one task per input; returns their Tasks, in order, as a TaskBatch."""
    def create_pool(self, name: str, module: str, params: Any = None) -> Pool:
        """Creates (or gets) a pool; ``params`` is a JSON string or JSON-able value."""
    def destroy_pool(self, pool: Union[str, SupportsIndex]) -> Pool:
        """Destroys a pool named by name, id or Pool; returns it."""
    def pools(self) -> List[Pool]:
        """The runtime's pools."""
    def stats(self) -> "dict[str, Any]":
        """The runtime's counters."""

@overload
def wait_all(
    tasks: Union[TaskBatch, Iterable[Union[Task, TaskBatch]]],
    timeout: Optional[float] = None,
    return_exceptions: Literal[False] = False,
) -> List[bytes]:
    """Waits for every task (one GIL release) and returns their outputs in
    order, raising the first failed task's error."""

@overload
def wait_all(
    tasks: Union[TaskBatch, Iterable[Union[Task, TaskBatch]]],
    timeout: Optional[float] = None,
    *,
    return_exceptions: bool,
) -> List[Union[bytes, BaseException]]:
    """As above; with ``return_exceptions``, a failed task's exception takes
    its place in the list."""

def admin_methods() -> Sequence[Tuple[str, int]]:
    """The admin pool's method numbers, by name."""
