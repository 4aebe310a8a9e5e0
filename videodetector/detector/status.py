"""The daemon's health endpoint: ``GET /metrics`` (Prometheus text, written by
prometheus_client), ``GET /healthz``.

``StatusServer(host, port, registry)`` serves ``generate_latest(registry)``: any object with
``collect()`` yielding metric families (a ``CollectorRegistry``, a ``Collector``).
``render_metrics`` is the same rendering without a socket.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# generate_latest writes the 0.0.4 text format (whatever CONTENT_TYPE_LATEST says)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render_metrics(source: Collector | Iterable[Metric]) -> str:
    """Prometheus text exposition (0.0.4) of a registry, a collector or metric families."""
    collector = source if hasattr(source, "collect") else _Families(source)  # type: ignore[arg-type]
    return generate_latest(collector).decode()  # type: ignore[arg-type]


class StatusServer:
    """A tiny HTTP server on its own thread. Port 0 picks a free port (see ``.port``)."""

    def __init__(self, host: str, port: int, registry: Collector) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.split("?")[0] == "/metrics":
                    try:
                        body = generate_latest(registry)  # type: ignore[arg-type]
                    except Exception:  # a metrics bug must not kill the endpoint
                        log.exception("collecting metrics failed")
                        self.send_error(500, "collecting metrics failed")
                        return
                    ctype = CONTENT_TYPE
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
