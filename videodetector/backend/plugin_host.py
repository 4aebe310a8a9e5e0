"""Loading backend plugins (9.2) and calling them without letting them break the backend.

``PluginHost.load(settings, backend)`` imports ``plugins_enabled`` from ``plugins_dirs``
(absolute directories; nothing by default). Every failure of a plugin -- at load, in a
hook, in its HTTP handler, a ``face_stored`` call over ``plugin_hook_timeout`` or dropped
because its queue is full -- is logged once per (plugin, kind) and counted
(``backend_plugin_errors_total{plugin, kind}`` on /metrics); it never fails a request the
plugin is not in charge of:

* a plugin that fails to load is skipped (the backend starts without it);
* a ``preprocess`` hook that raises or answers nonsense: the face proceeds as if the plugin
  did not exist (fail-open; a plugin that must fail closed returns ``reject``);
* ``face_stored`` runs in the plugin's own worker thread after the commit, each call bounded
  by ``plugin_hook_timeout`` (a call that overruns is abandoned, counted, and at most
  ``MAX_ABANDONED`` such calls run at once -- events beyond that are dropped and counted);
* a handler that raises answers 500 ``PLUGIN_ERROR`` on its own route only.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import queue
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from videodetector.backend.errors import ApiError
from videodetector.backend.plugins import (
    Annotate,
    CandidateFace,
    Plugin,
    PluginApp,
    PluginContext,
    Reject,
    Route,
    StoredFace,
    overrides,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from videodetector.backend.service import Backend, FacePost, NewFace
    from videodetector.backend.settings import Settings

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PREFIXES = ("/v1/plugins", "/v0/plugins")  # a plugin's handlers: <prefix>/<name><path>
QUEUE_SIZE = 1000  # face_stored events waiting per plugin
MAX_ABANDONED = 4  # face_stored calls past their timeout still running, per plugin
MAX_ANNOTATION = 16384  # characters of one plugin's annotation of one face, as JSON
MAX_REASON = 500  # characters of a rejection reason
KINDS = ("load", "preprocess", "face_stored", "timeout", "dropped", "handler", "deactivate")


class PluginLoadError(Exception):
    """A plugin could not be loaded; the message says why."""


def _read(value: np.ndarray) -> np.ndarray:
    out = np.array(value, copy=True)
    out.flags.writeable = False
    return out


def _bbox(box: Any) -> dict[str, int]:
    return {"x1": round(box[0]), "y1": round(box[1]), "x2": round(box[2]), "y2": round(box[3])}


class PluginHost:
    """The loaded plugins, their counters and their ``face_stored`` workers."""

    def __init__(self, hook_timeout: float = 5.0) -> None:
        self.plugins: list[Plugin] = []
        self.routes: dict[str, list[Route]] = {}
        self.hook_timeout = hook_timeout
        self.errors: Counter[tuple[str, str]] = Counter()
        self.rejected: Counter[str] = Counter()
        self.stored_calls: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._workers: dict[str, _StoredWorker] = {}

    # -- loading ------------------------------------------------------------------

    @classmethod
    def load(cls, settings: Settings, backend: Backend) -> PluginHost:
        host = cls(settings.plugin_hook_timeout)
        if not settings.plugins_enabled:
            return host
        ctx = PluginContext(backend)
        for name, source in find_plugins(settings.plugins_dirs, settings.plugins_enabled,
                                         host):
            try:
                plugin, app = _instantiate(name, source, ctx)
            except Exception as exc:  # noqa: BLE001 - any failure of the plugin's code
                host.failed(name, "load", exc)
                continue
            host.add(plugin, app.routes)
        return host

    def add(self, plugin: Plugin, routes: list[Route]) -> None:
        self.plugins.append(plugin)
        self.routes[plugin.name] = routes
        if overrides(plugin, "face_stored"):
            self._workers[plugin.name] = _StoredWorker(self, plugin)
        log.info("plugin %s loaded from %s (%d handlers)", plugin.name, plugin.source,
                 len(routes))

    def failed(self, name: str, kind: str, exc: BaseException | str) -> None:
        """Count a plugin failure; log the first of each (plugin, kind)."""
        with self._lock:
            self.errors[(name, kind)] += 1
            first = (name, kind) not in self._logged
            self._logged.add((name, kind))
        if first:
            info = exc if isinstance(exc, BaseException) else None
            log.error("plugin %s failed (%s): %s; further %s failures of it are only counted",
                      name, kind, exc, kind, exc_info=info)

    # -- hooks ----------------------------------------------------------------------

    def preprocess(self, user: int, post: FacePost, faces: list[NewFace]) -> None:
        """Every plugin's ``preprocess`` on every face: a rejection raises ApiError 400
        PLUGIN_REJECTED; annotations go to ``face.extra["plugins"][<name>]``."""
        hooked = [p for p in self.plugins if overrides(p, "preprocess")]
        if not hooked:
            return
        for i, face in enumerate(faces):
            candidate = CandidateFace(
                user=user, index=i, bbox=_bbox(face.box), facen=_read(face.embedding),
                normalized=_read(face.aligned), meta=post.meta,
                galleries=tuple(post.galleries), cam_id=post.cam_id,
                gender=face.attrs.get("gender"), age=face.attrs.get("age"),
                extra=dict(post.extra))
            for plugin in hooked:
                self._preprocess_one(plugin, candidate, face)

    def _preprocess_one(self, plugin: Plugin, candidate: CandidateFace, face: NewFace) -> None:
        try:
            verdict = plugin.preprocess(candidate)
            if isinstance(verdict, Reject):
                reason = str(verdict.reason)[:MAX_REASON] or "refused"
            elif isinstance(verdict, Annotate):
                values = dict(verdict.values)
                if len(json.dumps(values, allow_nan=False)) > MAX_ANNOTATION:
                    raise ValueError(f"annotation over {MAX_ANNOTATION} characters as JSON")
            elif verdict is not None:
                raise TypeError(f"preprocess returned {type(verdict).__name__}, expected "
                                "reject(...), annotate(...) or None")
        except Exception as exc:  # noqa: BLE001 - fail open: as if the plugin did not exist
            self.failed(plugin.name, "preprocess", exc)
            return
        if isinstance(verdict, Reject):
            with self._lock:
                self.rejected[plugin.name] += 1
            raise ApiError(400, "PLUGIN_REJECTED",
                           f"face {candidate.index} refused by plugin {plugin.name!r}: {reason}",
                           plugin=plugin.name, face=candidate.index, bbox=candidate.bbox)
        if isinstance(verdict, Annotate):
            face.extra.setdefault("plugins", {})[plugin.name] = values

    def face_stored(self, user: int, post: FacePost, faces: list[NewFace],
                    ids: list[int]) -> None:
        """Queue ``face_stored`` for each committed face (never waits)."""
        if not self._workers:
            return
        for face, face_id in zip(faces, ids, strict=True):
            for name, worker in self._workers.items():
                worker.submit(StoredFace(
                    user=user, id=face_id, bbox=_bbox(face.box), facen=_read(face.embedding),
                    meta=post.meta, galleries=tuple(post.galleries), cam_id=post.cam_id,
                    annotations=dict(face.extra.get("plugins", {}).get(name, {}))))

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued ``face_stored`` call ran (tests, shutdown)."""
        return all(w.drain(timeout) for w in self._workers.values())

    def close(self) -> None:
        self.drain(min(self.hook_timeout * 2, 10.0))
        for worker in self._workers.values():
            worker.stop()
        for plugin in self.plugins:
            if overrides(plugin, "deactivate"):
                try:
                    plugin.deactivate()
                except Exception as exc:  # noqa: BLE001
                    self.failed(plugin.name, "deactivate", exc)

    # -- HTTP handlers and metrics ---------------------------------------------------

    def mount(self, app: FastAPI, backend: Backend) -> None:
        """Each plugin's handlers under ``/v1/plugins/<name>`` (and ``/v0``)."""
        for name, routes in self.routes.items():
            for route in routes:
                endpoint = self._endpoint(name, route, backend)
                for prefix in PREFIXES:
                    app.add_api_route(f"{prefix}/{name}{route.path}".rstrip("/"), endpoint,
                                      methods=list(route.methods), include_in_schema=False)

    def _endpoint(self, name: str, route: Route, backend: Backend
                  ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            user = None
            if route.auth:
                user = await run_in_threadpool(backend.tokens.user_for_header,
                                               request.headers.get("authorization"))
            try:
                if inspect.iscoroutinefunction(route.handler):
                    result = await route.handler(request, user)
                else:
                    result = await run_in_threadpool(route.handler, request, user)
                if isinstance(result, Response):
                    return result
                return JSONResponse(result)
            except (ApiError, HTTPException):  # the plugin's own answer (e.g. a 404)
                raise
            except Exception as exc:  # noqa: BLE001 - 500 on this plugin's route only
                self.failed(name, "handler", exc)
                return JSONResponse({"code": "PLUGIN_ERROR", "reason": f"plugin {name!r} "
                                     f"failed: {type(exc).__name__}", "plugin": name},
                                    status_code=500)

        return endpoint

    def collect(self) -> Iterator[Metric]:
        """Metric families for /metrics (a prometheus_client ``Collector``)."""
        with self._lock:
            errors = sorted(self.errors.items())
            rejected = sorted(self.rejected.items())
            calls = sorted(self.stored_calls.items())
        yield GaugeMetricFamily("backend_plugins_loaded", "Plugins loaded (9.2).",
                                value=len(self.plugins))
        family = CounterMetricFamily("backend_plugin_errors_total", "Plugin failures by plugin "
                                     f"and kind ({', '.join(KINDS)}).", labels=["plugin", "kind"])
        for (name, kind), n in errors:
            family.add_metric([name, kind], n)
        yield family
        for metric, help_text, counts in (
                ("backend_plugin_rejected_total", "Faces refused by a plugin's preprocess.",
                 rejected),
                ("backend_plugin_face_stored_total", "face_stored calls that returned.", calls)):
            family = CounterMetricFamily(metric, help_text, labels=["plugin"])
            for name, n in counts:
                family.add_metric([name], n)
            yield family

    def metrics_text(self) -> str:
        return generate_latest(self).decode()  # type: ignore[arg-type]


def find_plugins(dirs: tuple[Path, ...], enabled: tuple[str, ...], host: PluginHost
                 ) -> list[tuple[str, Path]]:
    """(name, module file or package directory) of each enabled plugin, from the first
    directory that has it. ``*`` = every module in the directories. A missing directory or
    plugin is logged and counted (kind ``load``), never fatal."""
    existing = []
    for d in dirs:
        if d.is_dir():
            existing.append(d)
        else:
            log.error("plugins_dirs: %s is not a directory; no plugin is loaded from it", d)
    names = list(enabled)
    if "*" in names:
        names = sorted({_module_name(p) for d in existing for p in d.iterdir()} - {None})
    out = []
    for name in names:
        source = next((s for d in existing for s in (d / f"{name}.py", d / name / "__init__.py")
                       if s.is_file()), None)
        if source is None:
            host.failed(name, "load", f"no {name}.py or {name}/__init__.py in plugins_dirs "
                        f"({', '.join(map(str, dirs)) or 'none'})")
            continue
        out.append((name, source))
    return out


def _module_name(path: Path) -> str | None:
    """The plugin name of a directory entry, or None (private, not Python)."""
    if path.name.startswith("_"):
        return None
    if path.suffix == ".py" and path.is_file() and NAME_RE.match(path.stem):
        return path.stem
    if path.is_dir() and (path / "__init__.py").is_file() and NAME_RE.match(path.name):
        return path.name
    return None


def _import(name: str, source: Path) -> ModuleType:
    modname = f"fkvideo_plugins.{name}"
    package = source.name == "__init__.py"
    spec = importlib.util.spec_from_file_location(
        modname, source, submodule_search_locations=[str(source.parent)] if package else None)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"cannot import {source}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return module


def plugin_class(module: ModuleType) -> type[Plugin]:
    """The one ``Plugin`` subclass the module defines."""
    found = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Plugin)
             and v is not Plugin and v.__module__ == module.__name__]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(c.__name__ for c in found)})"
        raise PluginLoadError(f"{module.__file__} defines {what} subclass of "
                              "videodetector.backend.plugins.Plugin; exactly one is needed")
    return found[0]


def _config(name: str, source: Path) -> dict[str, Any]:
    """``<dir>/<name>.json`` beside the plugin (or ``config.json`` in its package)."""
    path = (source.parent / "config.json" if source.name == "__init__.py"
            else source.with_suffix(".json"))
    if not path.is_file():
        return {}
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise PluginLoadError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def _instantiate(name: str, source: Path, ctx: PluginContext) -> tuple[Plugin, PluginApp]:
    if not NAME_RE.match(name):
        raise PluginLoadError(f"plugin names are Python identifiers, got {name!r}")
    cls = plugin_class(_import(name, source))
    plugin = cls(ctx, name, source, _config(name, source))
    app = PluginApp()
    plugin.activate(app)
    return plugin, app


class _StoredWorker:
    """One plugin's ``face_stored`` calls, in order, each bounded by the host's timeout."""

    def __init__(self, host: PluginHost, plugin: Plugin) -> None:
        self.host = host
        self.plugin = plugin
        self.queue: queue.Queue[StoredFace | None] = queue.Queue(QUEUE_SIZE)
        self.abandoned = 0  # calls past their timeout, still running
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"plugin-{plugin.name}",
                                       daemon=True)
        self.thread.start()

    def submit(self, face: StoredFace) -> None:
        try:
            self.queue.put_nowait(face)
        except queue.Full:
            self.host.failed(self.plugin.name, "dropped", f"face_stored queue full "
                             f"({QUEUE_SIZE}); face {face.id} not notified")

    def drain(self, timeout: float) -> bool:
        done = threading.Event()
        threading.Thread(target=lambda: (self.queue.join(), done.set()), daemon=True).start()
        return done.wait(timeout)

    def stop(self) -> None:
        try:
            self.queue.put(None, timeout=1.0)
        except queue.Full:
            return
        self.thread.join(1.0)

    def _run(self) -> None:
        while True:
            face = self.queue.get()
            try:
                if face is None:
                    return
                self._call(face)
            finally:
                self.queue.task_done()

    def _call(self, face: StoredFace) -> None:
        name = self.plugin.name
        with self._lock:
            if self.abandoned >= MAX_ABANDONED:
                self.host.failed(name, "dropped", f"{self.abandoned} face_stored calls are "
                                 f"still running past their timeout; face {face.id} dropped")
                return
        finished = threading.Event()
        timed_out = threading.Event()

        def run() -> None:
            try:
                self.plugin.face_stored(face)
                with self.host._lock:
                    self.host.stored_calls[name] += 1
            except Exception as exc:  # noqa: BLE001
                self.host.failed(name, "face_stored", exc)
            finally:
                with self._lock:
                    finished.set()
                    if timed_out.is_set():
                        self.abandoned -= 1

        threading.Thread(target=run, name=f"plugin-{name}-call", daemon=True).start()
        if not finished.wait(self.host.hook_timeout):
            with self._lock:
                if not finished.is_set():
                    timed_out.set()
                    self.abandoned += 1
            if timed_out.is_set():
                self.host.failed(name, "timeout", f"face_stored of face {face.id} took longer "
                                 f"than plugin_hook_timeout ({self.host.hook_timeout:g} s)")
