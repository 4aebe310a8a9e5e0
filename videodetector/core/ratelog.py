"""RateLimitedLog: one log line per kind of event per interval, however often it happens.

A loop that serves many items (frames, faces, reconnect attempts) logs a bad item once,
then at most once per ``interval`` seconds per key, each line saying how many of the same
were not logged since the last one. The counting for metrics is done by the caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object,
            exc_info: BaseException | None = None) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval`` s ago.

        Returns True when the line was written."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            hidden = self._suppressed.pop(key, 0)
        if hidden:
            msg += " (%d more like this since the last such line)"
            args = (*args, hidden)
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True
