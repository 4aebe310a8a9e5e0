"""What a backend plugin (9.2) is written against: ``Plugin``, its context and its hooks.

A plugin is a Python module ``<name>.py`` (or a package ``<name>/``) in one of the
``plugins_dirs``, loaded when ``<name>`` is in ``plugins_enabled`` (or that is ``*``). It
defines one subclass of ``Plugin``; the backend makes one instance and calls:

* ``activate(app)`` once at start (the reference's ``activate(app, ctx, plugin_name,
  plugin_source)``; ``self.ctx``, ``self.name``, ``self.source`` are set): add HTTP handlers
  with ``app.add_handler(path, handler)`` -- mounted at ``/v1/plugins/<name><path>``;
* ``preprocess(face)`` for every face about to be enrolled (``POST /face``, batch
  enrollment), before anything is written: return ``reject(reason)`` to refuse the request
  (400 ``PLUGIN_REJECTED`` with the reason), ``annotate(**values)`` to store values with the
  face (its ``extra["plugins"][<name>]``), or ``None``;
* ``face_stored(face)`` once for every face whose transaction COMMITTED, in a background
  worker after the request was answered (never for a rolled-back write, nor a replay);
* ``deactivate()`` at shutdown.

A hook that raises is logged (once per plugin and kind) and counted on ``/metrics``
(``backend_plugin_errors_total``); the face is then treated as if the plugin did not exist.
This module imports nothing of the backend's internals, so a plugin may import it freely.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from starlette.requests import Request

    from videodetector.backend.service import Backend
    from videodetector.backend.settings import Settings

# handler(request, user) -> a JSON-able value or a starlette Response; sync or async.
# ``user`` is the token's user id (None on a handler added with auth=False).
Handler = Callable[["Request", "int | None"], "Any | Awaitable[Any]"]


@dataclass(frozen=True)
class Reject:
    """``preprocess`` refuses the face (and so the request that brought it)."""

    reason: str


@dataclass(frozen=True)
class Annotate:
    """``preprocess`` stores ``values`` (JSON-able) with the face."""

    values: Mapping[str, Any]


def reject(reason: str) -> Reject:
    return Reject(str(reason))


def annotate(**values: Any) -> Annotate:
    return Annotate(dict(values))


@dataclass(frozen=True)
class CandidateFace:
    """A face about to be enrolled (the reference's ``ExtractionFace``)."""

    user: int  # the token's user id (the reference's ``self.user``)
    index: int  # position among the request's faces
    bbox: dict[str, int]  # x1, y1, x2, y2 in the photo
    facen: np.ndarray  # the embedding, float32, unit length (read-only)
    normalized: np.ndarray  # the aligned face, RGB uint8 (read-only)
    meta: str
    galleries: tuple[str, ...]
    cam_id: str | None
    gender: str | None = None
    age: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # the request's extra fields


@dataclass(frozen=True)
class StoredFace:
    """A face whose transaction committed (given to ``face_stored``)."""

    user: int
    id: int
    bbox: dict[str, int]
    facen: np.ndarray
    meta: str  # as posted (a person's inherited meta: read the row with ``ctx.face``)
    galleries: tuple[str, ...]
    cam_id: str | None
    annotations: Mapping[str, Any] = field(default_factory=dict)  # this plugin's own


@dataclass(frozen=True)
class Route:
    path: str
    handler: Handler
    methods: tuple[str, ...]
    auth: bool


class PluginApp:
    """The reference's ``app`` given to ``activate``: collects the plugin's HTTP handlers."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add_handler(self, path: str, handler: Handler, methods: Sequence[str] = ("GET",),
                    auth: bool = True) -> None:
        """``handler`` at ``/v1/plugins/<plugin name><path>`` (Starlette path syntax,
        ``/alerts/{id}``). ``auth`` (the default): ``Authorization: Token`` required, as
        the reference's ``BaseHandler`` does; 401 otherwise."""
        if not isinstance(path, str) or not path.startswith("/") or ".." in path:
            raise ValueError(f"a handler path starts with '/' and has no '..', got {path!r}")
        if not callable(handler):
            raise ValueError(f"handler for {path!r} is not callable: {handler!r}")
        verbs = tuple(m.upper() for m in methods)
        if not verbs:
            raise ValueError(f"no HTTP methods for {path!r}")
        self.routes.append(Route(path.rstrip("/") or "/", handler, verbs, auth))


class PluginContext:
    """The reference's ``ctx``: the backend's state (database, index, models) and a few
    shortcuts. ``backend`` is the whole ``service.Backend`` (direct access, level 1 of 9.2)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def settings(self) -> Settings:
        return self.backend.settings

    def face(self, user: int, face_id: int) -> dict[str, Any] | None:
        """A stored face as a dict (no embedding; ``galleries`` added), or None
        (the reference's ``ctx.faces.find_one``)."""
        rows = self.backend.face_rows(user, [face_id])
        if not rows:
            return None
        out = {k: rows[0][k] for k in rows[0].keys() if k != "embedding"}
        out["galleries"] = self.backend.galleries_of([face_id])[face_id]
        return out

    def identify(self, user: int, facen: np.ndarray, gallery: str | None = None, n: int = 1,
                 threshold: float | None = None) -> list[tuple[int, float]]:
        """(face id, confidence) of the user's ``n`` most similar faces, in ``gallery``
        (the reference's ``ctx.faces.identify``)."""
        probe = _Probe(np.asarray(facen, np.float32))
        return self.backend.identify(user, [probe], n, threshold, gallery)[0]

    def galleries(self, user: int) -> list[str]:
        return self.backend.gallery_names(user)


@dataclass(frozen=True)
class _Probe:
    embedding: np.ndarray


class Plugin:
    """Subclass this in a plugin module; override the hooks you need."""

    def __init__(self, ctx: PluginContext, name: str, source: Path,
                 config: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.name = name  # the module name, as in plugins_enabled
        self.source = source  # the module's file
        self.config = config  # <plugins dir>/<name>.json if there is one, else {}

    def activate(self, app: PluginApp) -> None:
        """Called once at start; add HTTP handlers here. Raising = not loaded."""

    def preprocess(self, face: CandidateFace) -> Reject | Annotate | None:
        """Before a face is stored: ``reject(reason)``, ``annotate(**values)`` or None."""
        return None

    def face_stored(self, face: StoredFace) -> None:
        """After a face's transaction committed (background worker, bounded time)."""

    def deactivate(self) -> None:
        """At shutdown."""


def overrides(plugin: Plugin, hook: str) -> bool:
    """``plugin``'s class implements ``hook`` itself (the base class's no-op is skipped)."""
    return getattr(type(plugin), hook) is not getattr(Plugin, hook)
