"""Log an ongoing failure (e.g. a spool that cannot be written) once per interval, not per item.

``Trouble`` follows one condition that can fail many times in a row:

* the first failure logs one ERROR naming the cause;
* while it lasts, at most one WARNING per ``interval`` seconds sums up what happened since
  the previous line (failures, and what the caller did: items held, dropped, ...);
* the first success after a failure logs one INFO with the totals of the episode.

It does not keep a timer thread: a summary is written on the next event after the interval.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

LOG_INTERVAL = 10.0  # seconds between two summary lines of one ongoing failure


class Trouble:
    """Rate-limited logging of one recurring failure; see the module docs."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, what: str, *,
                 interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0:
            raise ValueError(f"log interval must be > 0, got {interval!r}")
        self._log = logger
        self._what = what
        self._interval = interval
        self._clock = clock
        self._active = False
        self._last_line = 0.0
        self._since_line: Counter[str] = Counter()  # events since the last line
        self._episode: Counter[str] = Counter()  # events since the failure began
        self._last_error = ""

    @property
    def active(self) -> bool:
        return self._active

    def failed(self, exc: BaseException, **events: int) -> None:
        """One more failure; ``events`` (e.g. ``held=1``) are counted for the summaries."""
        self._last_error = str(exc) or type(exc).__name__
        self._count({"failures": 1, **events})
        now = self._clock()
        if not self._active:
            self._active = True
            self._last_line = now
            self._since_line.clear()
            self._log.error("%s failed: %s (logged again at most every %gs while it lasts)",
                            self._what, self._last_error, self._interval)
            return
        self._maybe_summary(now)

    def note(self, **events: int) -> None:
        """Count events that belong to the ongoing failure without a new failure."""
        if self._active:
            self._count(events)
            self._maybe_summary(self._clock())

    def recovered(self, detail: str = "") -> None:
        """The condition works again: one INFO line with the episode's totals."""
        if not self._active:
            return
        self._active = False
        self._log.info("%s works again%s (while it failed: %s)", self._what,
                       f"; {detail}" if detail else "", _fmt(self._episode))
        self._episode.clear()
        self._since_line.clear()

    def _count(self, events: dict[str, int]) -> None:
        self._since_line.update(events)
        self._episode.update(events)

    def _maybe_summary(self, now: float) -> None:
        if now - self._last_line < self._interval:
            return
        self._last_line = now
        self._log.warning("%s still failing (%s): in the last %.0fs %s", self._what,
                          self._last_error, self._interval, _fmt(self._since_line))
        self._since_line.clear()


def _fmt(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()) if n) or "nothing"
