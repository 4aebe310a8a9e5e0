"""The package's three parts: core/ is shared, detector/ and backend/ are two programs on it.

The detector must run on a host without the backend's code paths (and vice versa the core must
not pull either program in), so the import graph is checked here, statically.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "videodetector"


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports (``from x import y`` counts ``x`` and ``x.y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize(("part", "forbidden"), [
    ("detector", ("videodetector.backend",)),
    ("core", ("videodetector.backend", "videodetector.detector", "videodetector.tools")),
    ("tools", ("videodetector.backend",)),
])
def test_a_part_never_imports_what_it_must_not(part: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((PACKAGE / part).rglob("*.py"))
    assert files, f"no modules under videodetector/{part}"
    offending = {
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in files for module in imported_modules(path)
        if module.startswith(forbidden)
    }
    assert not offending, sorted(offending)


def test_the_import_scan_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from videodetector.backend.service import Backend\nimport videodetector.core\n")
    assert "videodetector.backend.service" in imported_modules(bad)
    assert "videodetector.core" in imported_modules(bad)
