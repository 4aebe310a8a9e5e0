"""path_component: a camera id or detector name as one safe file-name component.

Spool folders are named after camera ids, which come from the backend or the
command line and may hold anything ("/", "..", spaces, non-ASCII letters).
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.-]")


def path_component(name: str, fallback: str) -> str:
    """``name`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``.

    When that changed anything (or left ``""``, ``.`` or ``..``), eight hex digits of
    the original's SHA-256 are appended, so two different names never share a folder
    (``a/b`` and ``a_b`` stay apart). ``fallback`` stands in for an empty result.
    """
    safe = _UNSAFE_RE.sub("_", name)
    if safe == name and safe not in ("", ".", ".."):
        return safe
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{safe.strip('.') or fallback}-{digest}"
