"""``--post-uniq``: limit how many posts one person gets within ``uc-max-time-diff``.

Pure logic, one filter per camera; time is the stream time in seconds.

Interpretation of SDK 2.6 (``--post-uniq``, ``--uc-max-time-diff``, ``--uc-max-dup``,
``--uc-max-avg-shift``):

* A new post is a *duplicate* of an earlier **allowed** post if
  ``|t_new - t_old| <= max_time_diff_s``, the Euclidean distance between the two
  bbox centres is ``<= max_avg_shift_px`` ("avg shift" = distance between the
  centres of the two posted bboxes, in full-frame pixels), and, when a
  ``similar`` callback is given, ``similar(key_old, key_new)`` is true (the
  pipeline may pass embeddings with a cosine test, or track ids). Without a
  callback, position and time alone decide.
* ``max_dup`` is the most posts one person gets per window: a post is allowed iff
  fewer than ``max_dup`` earlier allowed posts are its duplicates. The window
  slides, so once the oldest duplicate is more than ``max_time_diff_s`` old the
  person may be posted again.
* Rejected posts are counted (``suppressed``) but not remembered, so they do not
  extend the window. Entries older than ``max_time_diff_s`` are forgotten.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Similar = Callable[[object, object], bool]


@dataclass(frozen=True)
class _Post:
    t: float
    centre: tuple[float, float]
    key: object


def _number(name: str, value: float, minimum: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or (minimum is not None and v < minimum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return v


def _centre(centre: tuple[float, float]) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in centre)
    except (TypeError, ValueError):
        x = y = math.nan
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"centre must be two finite numbers, got {centre!r}")
    return (x, y)


class UniqFilter:
    """Suppresses repeated posts of one person (see the module docstring)."""

    def __init__(
        self,
        max_time_diff_s: float,
        max_dup: int,
        max_avg_shift_px: float,
        similar: Similar | None = None,
    ) -> None:
        if isinstance(max_dup, bool) or not isinstance(max_dup, int) or max_dup < 1:
            raise ValueError(f"max_dup must be an integer >= 1, got {max_dup!r}")
        self.max_time_diff_s = _number("max_time_diff_s", max_time_diff_s, 0.0)
        self.max_dup = max_dup
        self.max_avg_shift_px = _number("max_avg_shift_px", max_avg_shift_px, 0.0)
        self.similar = similar
        self.suppressed = 0
        self._posts: deque[_Post] = deque()  # allowed posts, in call order

    def _expire(self, t: float) -> None:
        while self._posts and t - self._posts[0].t > self.max_time_diff_s:
            self._posts.popleft()

    def _is_duplicate(self, old: _Post, new: _Post) -> bool:
        if abs(new.t - old.t) > self.max_time_diff_s:
            return False
        dx, dy = new.centre[0] - old.centre[0], new.centre[1] - old.centre[1]
        if math.hypot(dx, dy) > self.max_avg_shift_px:
            return False
        return self.similar is None or bool(self.similar(old.key, new.key))

    def allow(self, t: float, centre: tuple[float, float], key: object = None) -> bool:
        """True if the face may be posted (and remember it); False if suppressed."""
        new = _Post(_number("t", t), _centre(centre), key)
        self._expire(new.t)
        dups = sum(1 for old in self._posts if self._is_duplicate(old, new))
        if dups >= self.max_dup:
            self.suppressed += 1
            return False
        self._posts.append(new)
        return True
