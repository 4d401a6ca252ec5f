"""The package as installed: its stubs, constants and wheel; `python -m
chimaera` and `python -m chimaera.bench` as a user runs them."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path
from typing import Dict, Set

from conftest import Daemon, chimaera_bin
from helpers import run_python

import chimaera
import chimaera._chimaera as native

PACKAGE = Path(chimaera.__file__).parent


def stub_names() -> Dict[str, Set[str]]:
    """Top-level names of _chimaera.pyi and, for its classes, their members."""
    tree = ast.parse((PACKAGE / "_chimaera.pyi").read_text())
    names: Dict[str, Set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = {
                n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AnnAssign)) and hasattr(n, "name")
            }
        elif isinstance(node, ast.FunctionDef):
            names[node.name] = set()
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = set()
    return {k: v for k, v in names.items() if not k.startswith("_") or k == "__version__"}


def test_the_stubs_describe_the_native_module() -> None:
    stubs = stub_names()
    public = {n for n in dir(native) if not n.startswith("_")} | {"__version__"}
    assert set(stubs) == public
    for name, members in stubs.items():
        obj = getattr(native, name)
        if inspect.isclass(obj):
            runtime = {m for m in dir(obj) if not m.startswith("_")}
            # Dunder methods the stub declares must exist too.
            assert members - {m for m in members if not m.startswith("_")} <= set(dir(obj)), name
            assert {m for m in members if not m.startswith("_")} == runtime, name


def test_everything_public_has_a_docstring() -> None:
    for name in ("Client", "Task", "TaskBatch", "Pool", "wait_all"):
        assert getattr(chimaera, name).__doc__, name
    for name in ("ping", "call", "submit", "submit_many", "create_pool", "destroy_pool", "pools", "stats"):
        assert getattr(chimaera.Client, name).__doc__, name
    for name in ("wait", "done"):
        assert getattr(chimaera.Task, name).__doc__, name
    for name in chimaera.errors.__all__:
        assert getattr(chimaera, name).__doc__, name
    assert (PACKAGE / "py.typed").exists()


def test_admin_methods_are_the_runtimes() -> None:
    assert {m.name: m.value for m in chimaera.AdminMethod} == dict(native.admin_methods())
    assert chimaera.ADMIN_POOL == 0


def test_errors_derive_from_chimaera_error() -> None:
    for name in chimaera.errors.__all__:
        assert issubclass(getattr(chimaera, name), chimaera.ChimaeraError), name
    assert issubclass(chimaera.TimedOut, TimeoutError)
    assert issubclass(chimaera.NoSuchMethod, chimaera.ModuleError)


def test_one_abi3_wheel_for_every_cpython_from_3_9() -> None:
    # The native module is built for the stable ABI, not this interpreter.
    assert Path(native.__file__).name == "_chimaera.abi3.so"


def test_python_m_chimaera_ping_and_pools(shared_daemon: Daemon) -> None:
    out = run_python(["-m", "chimaera", "--config", shared_daemon.config, "ping", "-n", "3"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(line.startswith(f"reply from runtime pid {shared_daemon.pid}: seq=") for line in lines) == 3
    assert lines[-1].startswith("3 pings, 3 answered, 0 lost: min ")
    out = run_python(["-m", "chimaera", "-c", shared_daemon.config, "ping", "-n", "5", "--json"])
    report = json.loads(out.stdout)
    assert report["answered"] == 5 and report["lost"] == 0 and 0 < report["min_ns"] <= report["max_ns"]
    out = run_python(["-m", "chimaera", "-c", shared_daemon.config, "pools", "--json"])
    assert json.loads(out.stdout)[0] == {"id": 0, "name": "admin", "module": "admin"}


def test_python_m_chimaera_without_a_runtime(tmp_path: Path) -> None:
    out = run_python(["-m", "chimaera", "--config", Daemon(tmp_path, "absent").config, "ping"])
    assert out.returncode == 3
    assert out.stderr.startswith("chimaera: the chimaera runtime is not running")
    out = run_python(["-m", "chimaera", "ping", "-n", "0"])
    assert out.returncode == 2


def test_the_bench_prints_its_figures_as_json(tmp_path: Path) -> None:
    # Short runs: this checks the bench works, not how fast (see README).
    args = ["-m", "chimaera.bench", "--json", "--chimaera", chimaera_bin()]
    args += ["--samples", "2000", "--warmup", "200", "--seconds", "0.3"]
    out = run_python(args, timeout=120, extra_env={"TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert 0 < report["rtt_p50_ns"] <= report["rtt_p99_ns"] < 1_000_000_000
    assert report["tasks_per_s"] > 0 and report["rtt_samples"] == 2000
    assert report["rtt_vs_ray"] == round(3_500_000 / report["rtt_p50_ns"], 1)
    assert report["daemon"] == "private" and report["workers"] == 1
    # Its daemon's directory (config, run dir) is gone with it.
    assert list(tmp_path.iterdir()) == []
