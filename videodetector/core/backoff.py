"""Backoff: the exponential delay shared by reconnects, crash restarts and post retries.

Each wait is twice the previous one, from ``initial`` up to ``cap``; ``reset()``
goes back to ``initial`` once things work again (frames flow, a post succeeds,
a restarted pipeline has run for a while).
"""

from __future__ import annotations


class Backoff:
    def __init__(self, initial: float, cap: float) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"backoff needs 0 < initial <= cap, got {initial!r}, {cap!r}")
        self.initial, self.cap = initial, cap
        self.delay = initial

    def next(self) -> float:
        """The delay to wait now; the following one doubles (up to the cap)."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.initial
