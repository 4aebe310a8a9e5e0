"""A blocking queue put that stays responsive to a stop condition."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_SECONDS = 0.1


def put_while(q: queue.Queue[T], item: T, keep_trying: Callable[[], bool],
              limit: float | None = None) -> bool:
    """Put ``item``, waiting for room while ``keep_trying()`` holds and ``limit`` seconds (if
    given) have not passed. True if the item was queued."""
    deadline = None if limit is None else time.monotonic() + limit
    while keep_trying() and (deadline is None or time.monotonic() < deadline):
        try:
            q.put(item, timeout=POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False
