"""The daemon's health endpoint: ``GET /metrics`` in Prometheus text format, ``GET /healthz``.

``StatusServer(port, collect)`` serves whatever ``collect()`` returns: a list of
``Metric`` (name, help, type, and one value per label set). Rendering is a pure
function so it is tested without a socket.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    kind: str  # "gauge" or "counter"
    values: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(metrics: list[Metric]) -> str:
    """Prometheus exposition format 0.0.4."""
    lines: list[str] = []
    for m in metrics:
        if m.kind not in ("gauge", "counter"):
            raise ValueError(f"metric {m.name}: kind must be gauge or counter, got {m.kind!r}")
        lines.append(f"# HELP {m.name} {m.help}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        for labels, value in sorted(m.values.items()):
            lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{m.name}{{{lab}}} {float(value):g}" if lab else f"{m.name} {value:g}")
    return "\n".join(lines) + "\n"


class StatusServer:
    """A tiny HTTP server on its own thread. Port 0 picks a free port (see ``.port``)."""

    def __init__(self, host: str, port: int, collect: Callable[[], list[Metric]]) -> None:
        collect_fn = collect

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.split("?")[0] == "/metrics":
                    try:
                        body = render_metrics(collect_fn()).encode()
                    except Exception:  # a metrics bug must not kill the endpoint
                        log.exception("collecting metrics failed")
                        self.send_error(500, "collecting metrics failed")
                        return
                    ctype = "text/plain; version=0.0.4; charset=utf-8"
                elif self.path.split("?")[0] == "/healthz":
                    body, ctype = b"ok\n", "text/plain"
                else:
                    self.send_error(404, "try /metrics")
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("status: " + fmt, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="status",
                                        daemon=True)

    def start(self) -> StatusServer:
        self._thread.start()
        log.info("status endpoint on http://%s:%d/metrics", *self._server.server_address[:2])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
