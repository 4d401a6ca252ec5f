"""Small helpers the test modules share (fixtures are in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List, Optional


def sleep_ms(ms: int) -> bytes:
    """Input of the admin SLEEP method: u64 little-endian milliseconds."""
    return ms.to_bytes(8, "little")


def run_python(
    args: List[str], timeout: float = 60, extra_env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:
    """This interpreter on `args` (e.g. ["-m", "chimaera", ...]), without
    CHI_*, from / (so `-m` finds the installed package, not a source tree)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHI_")}
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, *args], env=env, cwd="/", capture_output=True, text=True, timeout=timeout
    )
