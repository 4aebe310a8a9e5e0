"""bench/_env.py: the one preamble of the bench scripts (sys.path and thread pools before numpy)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
ENV_MODULES = {"_env", "_env_omp1"}
# Another helper is changing bench_streams.py; it moves to ``_env_omp1`` when merged.
PENDING: set[str] = set()
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def bench_scripts() -> list[Path]:
    return sorted(p for p in BENCH.glob("*.py")
                  if p.stem not in ENV_MODULES and p.name not in PENDING)


def top_imports(tree: ast.Module) -> list[str]:
    """The top-level module names a script imports, in order."""
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append((node.module or "").split(".")[0])
    return names


@pytest.mark.parametrize("path", bench_scripts(), ids=lambda p: p.name)
def test_bench_imports_env_before_anything_but_the_stdlib(path: Path) -> None:
    """Every bench imports ``_env`` (or ``_env_omp1``) before any non-stdlib module, and
    keeps no preamble of its own (thread variables, ``sys.path`` edits, ``noqa: E402``)."""
    text = path.read_text()
    names = top_imports(ast.parse(text))
    first = next((n for n in names if n not in sys.stdlib_module_names and n != "__future__"),
                 None)
    # a module of the stdlib alone (bench/_proc.py) loads no thread pool: nothing to order
    assert first is None or first in ENV_MODULES, (path.name, first)
    for own in ("sys.path.insert", "noqa: E402", *THREAD_VARS):
        assert own not in text, (path.name, own)


PROBE = """
import {module}
import os
import faiss
import videodetector
print(os.environ.get("OMP_NUM_THREADS", "-"), os.environ.get("OPENBLAS_NUM_THREADS", "-"))
print(faiss.omp_get_max_threads())
print(videodetector.__file__)
"""


def run_env(module: str, **env: str) -> list[str]:
    """Import ``module`` first in a fresh interpreter started in bench/ (as ``python
    bench/NAME.py`` runs), without this tree on PYTHONPATH: its thread variables, faiss's
    OpenMP pool size and where ``videodetector`` came from."""
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARS and k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=BENCH,
                         env={**clean, **env}, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    return out.splitlines()


def test_env_sets_openblas_only_and_puts_this_tree_first() -> None:
    variables, _, source = run_env("_env")
    assert variables.split() == ["-", "1"]
    assert source == str(ROOT / "videodetector" / "__init__.py")  # not another checkout


def test_env_omp1_sizes_openmp_before_faiss_loads_and_keeps_a_given_value() -> None:
    variables, omp_threads, _ = run_env("_env_omp1")
    assert (variables.split(), omp_threads) == (["1", "1"], "1")
    assert run_env("_env_omp1", OMP_NUM_THREADS="2")[:2] == ["2 1", "2"]


def test_an_explicit_pythonpath_checkout_wins(tmp_path: Path) -> None:
    """``PYTHONPATH=<another checkout> python bench/NAME.py``: that checkout's videodetector
    (how a bench is run against an older commit)."""
    other = tmp_path / "videodetector"
    other.mkdir()
    (other / "__init__.py").write_text("")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", "import _env, videodetector; "
                          "print(videodetector.__file__)"], cwd=BENCH,
                         env={**clean, "PYTHONPATH": str(tmp_path)}, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == str(other / "__init__.py")
