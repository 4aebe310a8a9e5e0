"""Every write of a face's visible state records a change for the sync feed (changes.py).

The rows a face's JSON (GET /face, /faces/sync) is made of are ``faces``, ``face_galleries``
and ``embeddings``. This test reads the backend's source, finds every function whose SQL
writes one of them (``UPDATE`` / ``INSERT`` / ``DELETE`` / ``REPLACE``, or ``storage.insert``
/ ``update`` on them) and requires that the function itself calls ``changes.*`` / ``feed.*``
(record, touch, touch_many, record_deleted), or that it is listed in ``RECORDED_BY_CALLER``
and every function that calls it (found by the call's text) records -- or is listed in
turn. A new write path that forgets the feed fails here, with the function's name.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import videodetector.backend as backend_pkg

BACKEND = Path(backend_pkg.__file__).parent
TABLES = ("faces", "face_galleries", "embeddings")
WRITE_SQL = re.compile(r"\b(UPDATE|INSERT(\s+OR\s+\w+)?\s+INTO|DELETE\s+FROM|REPLACE\s+INTO)\s+"
                       rf"({'|'.join(TABLES)})\b", re.IGNORECASE)
FEED_MODULES = ("changes", "feed")  # how the backend's modules import changes.py
FEED_CALLS = {"record", "touch", "touch_many", "record_deleted"}

# A writer that leaves the record to its callers: (module, qualname) -> the text its call
# sites end with (``ast.unparse`` of the called expression).
RECORDED_BY_CALLER = {
    ("stores/faces.py", "SqlFaceStore.insert"): "faces_store.insert",
    ("stores/faces.py", "SqlFaceStore.update"): "faces_store.update",
    ("stores/faces.py", "SqlFaceStore.link"): "faces_store.link",
    ("stores/faces.py", "SqlFaceStore.unlink"): "faces_store.unlink",
    ("stores/faces.py", "SqlFaceStore.delete"): "faces_store.delete",
    ("stores/faces.py", "SqlFaceStore.mark_friend"): "faces_store.mark_friend",
    ("embeddings.py", "store_vector"): "store_vector",
    # Backend methods between the store and the function that records
    ("service.py", "Backend._replace_image"): "self._replace_image",
    ("service.py", "Backend._update_face_row"): "self._update_face_row",
    ("service.py", "Backend._update_galleries"): "self._update_galleries",
    ("service.py", "Backend._update_friend"): "self._update_friend",
}


@dataclass
class Func:
    module: str
    qualname: str
    writes: list[str] = field(default_factory=list)  # the SQL / table it writes
    records: bool = False
    calls: list[str] = field(default_factory=list)  # ast.unparse of each called expression


def _strings(node: ast.AST) -> list[str]:
    """String constants of ``node``; an f-string as its literal parts joined."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return ["".join(v.value for v in node.values
                        if isinstance(v, ast.Constant) and isinstance(v.value, str))]
    return []


class _Visitor(ast.NodeVisitor):
    def __init__(self, module: str) -> None:
        self.module = module
        self.stack: list[Func] = []
        self.names: list[str] = []
        self.funcs: list[Func] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:  # noqa: N802 - ast's names
        self.names.append(node.name)
        self.generic_visit(node)
        self.names.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:  # noqa: N802
        self.names.append(node.name)
        func = Func(self.module, ".".join(self.names))
        self.funcs.append(func)
        self.stack.append(func)
        self.generic_visit(node)
        self.stack.pop()
        self.names.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802
        if self.stack:
            func = self.stack[-1]
            called = ast.unparse(node.func)
            func.calls.append(called)
            head, _, tail = called.rpartition(".")
            if head in FEED_MODULES and tail in FEED_CALLS:
                func.records = True
            if (called in ("insert", "update") and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant) and node.args[1].value in TABLES):
                func.writes.append(f"{called}({node.args[1].value})")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:  # noqa: N802
        self._sql(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:  # noqa: N802
        self._sql(node)
        self.generic_visit(node)

    def _sql(self, node: ast.AST) -> None:
        if not self.stack:
            return
        for text in _strings(node):
            m = WRITE_SQL.search(text)
            if m:
                self.stack[-1].writes.append(m.group(0))


def backend_functions() -> list[Func]:
    out: list[Func] = []
    for path in sorted(BACKEND.rglob("*.py")):
        rel = path.relative_to(BACKEND).as_posix()
        if rel.startswith("migrations/"):  # the schema's own revisions fill face_changes
            continue
        visitor = _Visitor(rel)
        visitor.visit(ast.parse(path.read_text(), rel))
        out += visitor.funcs
    return out


def unrecorded_paths(funcs: list[Func]) -> list[str]:
    """Each chain from a write to a function that neither records nor is listed."""
    problems: list[str] = []
    by_key = {(f.module, f.qualname): f for f in funcs}
    for f in funcs:
        if f.writes and not f.records and (f.module, f.qualname) not in RECORDED_BY_CALLER:
            problems.append(f"{f.module}:{f.qualname} writes {f.writes[0]!r} and records no "
                            f"change (changes.touch / record in the same transaction)")
    for key, suffix in RECORDED_BY_CALLER.items():
        if key not in by_key:
            problems.append(f"{key[0]}:{key[1]} is listed but does not exist (update the list)")
            continue
        callers = [f for f in funcs if any(c == suffix or c.endswith("." + suffix)
                                           for c in f.calls)]
        if not callers:
            problems.append(f"{key[0]}:{key[1]}: no call of {suffix!r} found (update the list)")
        for caller in callers:
            if not caller.records and (caller.module, caller.qualname) not in RECORDED_BY_CALLER:
                problems.append(f"{caller.module}:{caller.qualname} calls {suffix} "
                                f"({key[1]} writes the face) and records no change")
    return problems


def test_every_write_of_a_face_records_a_change() -> None:
    funcs = backend_functions()
    writers = {(f.module, f.qualname) for f in funcs if f.writes}
    # the scan sees the write paths it must (a regex or parser change that finds nothing
    # would pass silently otherwise)
    assert {("person_store.py", "move_faces"), ("regenerate.py", "Regenerator._apply"),
            ("person_store.py", "migrate"), ("stores/faces.py", "SqlFaceStore.mark_friend"),
            ("embeddings.py", "store_vector")} <= writers
    assert unrecorded_paths(funcs) == []


def test_the_scan_catches_a_write_that_forgets_the_feed(tmp_path: Path) -> None:
    source = '''
class Store:
    def set_meta(self, conn, face_id, meta):
        conn.execute("UPDATE faces SET meta = ? WHERE id = ?", (meta, face_id))

def good(conn, user, face_id):
    conn.execute(f"DELETE FROM face_galleries WHERE face_id = {face_id}")
    changes.touch(conn, user, face_id)

def via_store(store, conn):
    store.faces_store.mark_friend(conn, 1)
'''
    visitor = _Visitor("x.py")
    visitor.visit(ast.parse(source))
    found = {f.qualname: f for f in visitor.funcs}
    assert found["Store.set_meta"].writes and not found["Store.set_meta"].records
    assert found["good"].writes and found["good"].records
    problems = unrecorded_paths(visitor.funcs + [Func("stores/faces.py",
                                                      "SqlFaceStore.mark_friend",
                                                      ["UPDATE faces"])])
    assert any("Store.set_meta" in p for p in problems)
    assert any(p.startswith("x.py:via_store calls faces_store.mark_friend") for p in problems)
    assert not any(":good " in p for p in problems)
