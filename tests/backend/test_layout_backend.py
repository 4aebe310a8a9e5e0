"""The backend's layout (issue 11): routers hold no SQL and stay thin.

Checked statically (``ast``) over every router module (``THIN_ROUTERS``):

* no SQL in a string literal, no ``.execute*`` call and no ``.db`` access: the storage
  owners in ``videodetector/backend/stores/`` hold the database;
* one way to reach a store: ``Backend`` builds each store once (``backend.cameras_store``,
  ...); a router neither builds one (``SqlCameraStore(...)``, a ``*_store(db)`` factory,
  ``.of(db)``) nor gets one any other way than the backend's attribute (or a ``deps.py``
  alias for it);
* no ``run_in_threadpool``: blocking handlers are plain ``def`` (FastAPI runs them in its
  threadpool); only the places in ``THREADPOOL_ALLOWED`` keep it, each for its stated reason;
* a route handler nests no ``def`` (no ``work()`` closures);
* an ``async def`` route handler neither awaits nor touches the backend: reading the body,
  uploads and URLs belongs in an async dependency (``deps.py``), the work in a ``def``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BACKEND = Path(__file__).resolve().parents[2] / "videodetector" / "backend"

THIN_ROUTERS = ["faces", "galleries", "persons", "events", "extract_api", "models_api",
                "batch", "console", "app", "cameras", "camhealth", "history", "webhooks",
                "watchlists", "stats", "sync", "report"]

# (module, function) -> why it may call run_in_threadpool
THREADPOOL_ALLOWED = {
    ("events", "_stream"): "an SSE body: polls the database between awaits for the whole "
                           "stream; a sync generator would hold a worker thread per stream",
    ("app", "lifespan"): "startup: loads the models before the first request",
    ("extract_api", "lifespan"): "startup: loads the models before the first request",
}

# (module, function) -> why it may use ``backend.db`` itself
DB_ALLOWED = {
    ("watchlists", "best_matches"): "reads the in-memory index under the database lock, as "
                                    "Backend.identify does",
    ("stats", "add_metrics"): "hands the database to a /metrics collector read at scrape time",
}

SQL_RE = re.compile(r"\bSELECT\b.*\bFROM\b|\bINSERT\s+(OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b"
                    r"|\bDELETE\s+FROM\b|\bPRAGMA\s+\w+|\bCREATE\s+(TABLE|INDEX)\b", re.S)
ROUTE_METHODS = {"get", "post", "put", "delete", "patch", "head", "options", "api_route"}


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal, f-strings as their literal parts joined."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            text = " ".join(v.value for v in node.values
                            if isinstance(v, ast.Constant) and isinstance(v.value, str))
            out.append((node.lineno, text))
    return out


def _is_route(fn: ast.AsyncFunctionDef | ast.FunctionDef) -> bool:
    for dec in fn.decorator_list:
        call = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(call, ast.Attribute) and call.attr in ROUTE_METHODS:
            return True
    return False


def _functions(tree: ast.AST) -> list[tuple[ast.AST, list[str]]]:
    """Every node with the names of the functions enclosing it (innermost last)."""
    out: list[tuple[ast.AST, list[str]]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = [*scope, child.name]
            out.append((child, inner))
            visit(child, inner)

    visit(tree, [])
    return out


def _builds_a_store(node: ast.AST) -> str | None:
    """The name of the store a call builds (``SqlCameraStore(db)``, ``camera_store(db)``,
    ``X.of(db)``), else None."""
    if not isinstance(node, ast.Call):
        return None
    f = node.func
    name = f.id if isinstance(f, ast.Name) else (f.attr if isinstance(f, ast.Attribute) else "")
    if (name.startswith("Sql") and name.endswith("Store")) or name.endswith("_store") \
            or name == "of":
        return name
    return None


def violations(source: str, module: str) -> list[str]:
    """What makes ``source`` (router module ``module``) not a thin router."""
    tree = ast.parse(source)
    found = [f"{module}:{line}: SQL in a string: {text[:60]!r}"
             for line, text in _strings(tree) if SQL_RE.search(text)]
    for node, scope in _functions(tree):
        line = getattr(node, "lineno", 0)
        if (built := _builds_a_store(node)) is not None:
            found.append(f"{module}:{line}: builds a store ({built}) instead of the backend's")
        if isinstance(node, ast.Attribute) and node.attr == "db" \
                and not any((module, f) in DB_ALLOWED for f in scope):
            found.append(f"{module}:{line}: reaches the database (.db) instead of a store")
        if isinstance(node, ast.Attribute) and node.attr.startswith("execute"):
            found.append(f"{module}:{line}: runs SQL (.{node.attr})")
        name = node.id if isinstance(node, ast.Name) else (
            node.attr if isinstance(node, ast.Attribute) else None)
        if name == "run_in_threadpool" and not any(
                (module, f) in THREADPOOL_ALLOWED for f in scope):
            found.append(f"{module}:{line}: run_in_threadpool in {'.'.join(scope) or module}")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_route(node):
            found += [f"{module}:{inner.lineno}: handler {node.name} nests def {inner.name}"
                      for inner in ast.walk(node) if inner is not node
                      and isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef)]
        if isinstance(node, ast.AsyncFunctionDef) and _is_route(node):
            body = list(ast.walk(node))
            if any(isinstance(n, ast.Await) for n in body) or any(
                    isinstance(n, ast.Name) and n.id == "backend" for n in body):
                found.append(f"{module}:{line}: async handler {node.name} awaits or uses the "
                             "backend: read the request in an async dependency, work in a def")
    return found


@pytest.mark.parametrize("module", THIN_ROUTERS)
def test_a_converted_router_holds_no_sql_and_no_threadpool_plumbing(module: str) -> None:
    path = BACKEND / f"{module}.py"
    assert violations(path.read_text(), module) == []


def test_the_layout_check_sees_what_it_must() -> None:
    bad = '''
from starlette.concurrency import run_in_threadpool
ROWS = f"SELECT * FROM faces WHERE user_id = {1}"

@router.get("/x")
async def handler(request):
    backend = get_backend(request)
    def work():
        return backend.db.rows("DELETE FROM faces WHERE id = ?", (1,))
    return await run_in_threadpool(work)

def cameras(backend):
    return camera_store(backend.db), SqlHistoryStore(backend.db), backend.cameras_store

@router.get("/docs")
async def docs():
    return {"docs": "DELETE /v1/session logs out"}
'''
    found = "\n".join(violations(bad, "bad"))
    assert "SQL in a string: 'SELECT" in found and "SQL in a string: 'DELETE FROM" in found
    assert "(.db)" in found
    assert "builds a store (camera_store)" in found and "(SqlHistoryStore)" in found
    assert "cameras_store" not in found  # the backend's attribute is the way
    assert "run_in_threadpool in handler" in found
    assert "handler handler nests def work" in found
    assert "async handler handler" in found
    assert "async handler docs" not in found  # pure: no await, no backend
    assert "/v1/session" not in found  # an HTTP method in prose is not SQL


def test_the_allowed_threadpool_places_exist() -> None:
    for module, function in THREADPOOL_ALLOWED:
        tree = ast.parse((BACKEND / f"{module}.py").read_text())
        names = {n.name for n in ast.walk(tree)
                 if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        assert function in names, (module, function)


# deferred imports (inside a function) that close an import cycle, left as found: each
# module's own reason; a new one (e.g. service <-> probe, broken in issue 10) fails below
KNOWN_DEFERRED_CYCLES = {
    ("pgdb", "storage"),  # storage.open_database loads pgdb (psycopg) for PostgreSQL only
    # the standalone Extraction API (extract_api) reuses app's middleware and server's
    # uvicorn set-up; app mounts its router (directly and through batch)
    ("app", "extract_api"), ("app", "extract_api", "server"),
    ("app", "batch", "extract_api"), ("app", "batch", "extract_api", "server"),
}


def _backend_imports(tree: ast.Module, deferred: bool) -> set[str]:
    """The backend modules ``tree`` imports at run time: at module level (not under
    ``if TYPE_CHECKING``), and with ``deferred`` also inside functions."""
    names: set[str] = set()

    def visit(body: list[ast.stmt], top: bool) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module and (top or deferred):
                if node.module == "videodetector.backend":
                    names.update(a.name for a in node.names)
                elif node.module.startswith("videodetector.backend."):
                    names.add(node.module.split(".")[2])
            inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for field in ("body", "orelse", "finalbody", "handlers"):
                sub = getattr(node, field, None)
                if isinstance(sub, list):
                    visit(sub, inner)

    visit(tree.body, True)
    return names


def _cycles(deferred: bool) -> set[tuple[str, ...]]:
    """Every import cycle among the backend's modules, as the sorted names on it."""
    modules = {p.stem: p for p in BACKEND.glob("*.py")}
    graph = {m: _backend_imports(ast.parse(p.read_text()), deferred) & modules.keys()
             for m, p in modules.items()}
    found: set[tuple[str, ...]] = set()

    def walk(module: str, path: list[str]) -> None:
        if module in path:
            found.add(tuple(sorted(path[path.index(module):])))
            return
        for nxt in sorted(graph[module]):
            walk(nxt, [*path, module])

    for module in sorted(graph):
        walk(module, [])
    return found


def test_backend_modules_import_each_other_without_cycles() -> None:
    """No import cycle at module level; a function-level import hides one only where
    listed (service <-> probe: probe's shared pieces now live in engine.py)."""
    assert _cycles(deferred=False) == set()
    assert _cycles(deferred=True) <= KNOWN_DEFERRED_CYCLES, _cycles(deferred=True)
