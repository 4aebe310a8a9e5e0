"""The routers converted by issue 11 (stores-b's part) stay thin: no SQL (their storage owner
in ``videodetector/backend/stores/`` has it), no ``run_in_threadpool`` plumbing and no nested
``work()`` closures; route handlers are plain ``def`` (FastAPI runs them in its threadpool;
reading the body happens in async dependencies)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BACKEND = Path(__file__).resolve().parents[2] / "videodetector" / "backend"
CONVERTED = ["cameras", "camhealth", "webhooks", "watchlists", "stats", "sync", "history",
             "report"]
SQL = re.compile(r"\b(SELECT\s+\S|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                 r"CREATE\s+(TABLE|INDEX|TRIGGER|UNIQUE)|DROP\s+(TABLE|INDEX)|"
                 r"ON\s+CONFLICT|PRAGMA\s)")
ROUTE_METHODS = {"get", "post", "put", "delete", "patch", "api_route"}


def problems(source: str) -> list[str]:
    """What makes a router module fat: SQL text, threadpool plumbing, nested closures in
    handlers, async handlers."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found = SQL.search(node.value)
            if found:
                out.append(f"line {node.lineno}: SQL {found.group(0)!r}")
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name == "run_in_threadpool":
                out.append(f"line {node.lineno}: run_in_threadpool")
        elif isinstance(node, ast.ImportFrom) and any(a.name == "run_in_threadpool"
                                                      for a in node.names):
            out.append(f"line {node.lineno}: imports run_in_threadpool")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_route(node):
            out.extend(_handler_problems(node))
    return out


def _is_route(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
               and d.func.attr in ROUTE_METHODS for d in fn.decorator_list)


def _handler_problems(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    out = []
    if isinstance(fn, ast.AsyncFunctionDef):
        out.append(f"line {fn.lineno}: handler {fn.name} is async def")
    for inner in ast.walk(fn):
        if inner is not fn and isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
            out.append(f"line {inner.lineno}: handler {fn.name} nests def {inner.name}")
    return out


@pytest.mark.parametrize("module", CONVERTED)
def test_router_module_is_thin(module: str) -> None:
    path = BACKEND / f"{module}.py"
    assert problems(path.read_text()) == [], path


def test_the_check_finds_what_it_looks_for() -> None:
    fat = '''
from starlette.concurrency import run_in_threadpool

@router.get("/x")
async def handler(request):
    def work():
        return db.rows("SELECT * FROM cameras WHERE id = ?", (1,))
    return await run_in_threadpool(work)

def helper(conn):
    conn.execute(f"INSERT INTO t ({cols}) VALUES (?)")
    conn.execute("UPDATE webhooks SET cursor = 1")
    conn.execute("DELETE FROM t")
'''
    found = "\n".join(problems(fat))
    for what in ("imports run_in_threadpool", "async def", "nests def work", "'SELECT *'",
                 "INSERT INTO", "UPDATE webhooks SET", "DELETE FROM", ": run_in_threadpool"):
        assert what in found, (what, found)
    thin = '''
@router.get("/x")
def handler(user: UserDep, cams: CamerasDep) -> dict:
    """Select the camera; update nothing."""
    return cams.get(user, "x")
'''
    assert problems(thin) == []
