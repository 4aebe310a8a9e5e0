"""Best face search: which snapshots of a tracked face get posted, and when.

Pure logic (SDK 2.6, 5.1.2 "Best Face Search"): no video, no I/O, no clocks. The
pipeline calls one selector per camera, per frame, with stream time ``t`` in seconds.

Modes (``make_selector`` maps the command line onto them):

* ``-r 0`` -> ``OfflineSelector``: one post per track, its best candidate, when
  the track ends.
* ``-r 1 --rt-perm 1`` -> ``RealtimePermSelector``: the best candidate of each
  ``rt-delay`` window, windows anchored at the track's first (postable) observation.
* ``-r 1 --rt-perm 0`` -> ``RealtimeDynamicSelector``: posts of increasing quality,
  at least ``rt-delay`` apart.
* ``--realtime1844`` -> ``Realtime1844Selector``: realtime (per ``--rt-perm``) and
  offline together, labelled ``"realtime"`` / ``"offline"``.

"Better" everywhere means: higher ``score``; tie -> higher ``direction_score``;
tie -> earlier ``t`` (see ``better``).

``--min-score`` / ``--min-dir-score`` are applied in one place, ``ScoreFilter``,
which ``make_selector`` wraps around every selector: a candidate is postable iff
``score >= min_score`` and ``direction_score >= min_dir_score``. Non-postable
candidates are dropped before selection, so they never start a track or a window.

Memory: each selector keeps O(1) candidates per live track (the payload may be a
whole frame); ``end_track`` forgets the track, so a reused id starts fresh.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol

DEFAULT_DYNAMIC_STEP = 0.1  # quality units; see RealtimeDynamicSelector
# Absorbs float error in time comparisons (1 ns): frame i/25 lands in rt-perm window
# i // 5 at 200 ms, and a dynamic post at 15/25 s is 200 ms after one at 10/25 s.
_TIME_EPS = 1e-9


@dataclass(frozen=True)
class Candidate:
    """One observation of a tracked face. ``payload`` is opaque to this module."""

    track_id: int
    t: float  # stream time, seconds
    score: float  # face quality: 0 best, negative worse
    direction_score: float  # frontality: 0 frontal, negative worse
    payload: object = None
    label: str = ""  # "realtime" / "offline" with --realtime1844, else ""


class BestFrameSelector(Protocol):
    def observe(self, c: Candidate) -> list[Candidate]: ...

    def end_track(self, track_id: int, t: float) -> list[Candidate]: ...

    def tick(self, t: float) -> list[Candidate]: ...

    def finish(self, t: float) -> list[Candidate]: ...


def _quality_key(c: Candidate) -> tuple[float, float, float]:
    return (c.score, c.direction_score, -c.t)


def better(a: Candidate | None, b: Candidate) -> Candidate:
    """The better of ``a`` and ``b`` (``a`` may be None). Ties keep ``a``."""
    if a is None or _quality_key(b) > _quality_key(a):
        return b
    return a


def _finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


def _positive(name: str, value: float) -> float:
    if _finite(name, value) <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _flush_all(sel: BestFrameSelector, track_ids: list[int], t: float) -> list[Candidate]:
    out: list[Candidate] = []
    for tid in track_ids:
        out.extend(sel.end_track(tid, t))
    return out


class OfflineSelector:
    """``-r 0``: keep the best candidate per track; post it when the track ends."""

    def __init__(self) -> None:
        self._best: dict[int, Candidate] = {}

    def observe(self, c: Candidate) -> list[Candidate]:
        self._best[c.track_id] = better(self._best.get(c.track_id), c)
        return []

    def end_track(self, track_id: int, t: float) -> list[Candidate]:
        best = self._best.pop(track_id, None)
        return [best] if best is not None else []

    def tick(self, t: float) -> list[Candidate]:
        return []

    def finish(self, t: float) -> list[Candidate]:
        return _flush_all(self, list(self._best), t)


@dataclass
class _Window:
    start: float  # t of the track's first observation
    index: int  # current window: [start + index*delay, start + (index+1)*delay)
    best: Candidate | None


class RealtimePermSelector:
    """``-r 1 --rt-perm 1``: post the best candidate of each ``rt_delay`` window.

    Window ``k`` of a track is ``[t0 + k*d, t0 + (k+1)*d)``, ``t0`` = the track's
    first observation. A window closes (its best is posted) on the first
    ``observe`` of that track or ``tick`` with ``t >= window end``; the pending
    best is posted on ``end_track``/``finish``. Empty windows post nothing.
    A candidate older than the current window (out-of-order time) joins it.
    """

    def __init__(self, rt_delay_s: float) -> None:
        self.rt_delay_s = _positive("rt_delay_s", rt_delay_s)
        self._tracks: dict[int, _Window] = {}

    def _index(self, w: _Window, t: float) -> int:
        return math.floor((t - w.start) / self.rt_delay_s + _TIME_EPS)

    def _advance(self, w: _Window, t: float) -> list[Candidate]:
        k = self._index(w, t)
        if k <= w.index:
            return []
        done, w.index, w.best = w.best, k, None
        return [done] if done is not None else []

    def observe(self, c: Candidate) -> list[Candidate]:
        w = self._tracks.get(c.track_id)
        if w is None:
            self._tracks[c.track_id] = _Window(start=c.t, index=0, best=c)
            return []
        out = self._advance(w, c.t)
        w.best = better(w.best, c)
        return out

    def end_track(self, track_id: int, t: float) -> list[Candidate]:
        w = self._tracks.pop(track_id, None)
        return [w.best] if w is not None and w.best is not None else []

    def tick(self, t: float) -> list[Candidate]:
        out: list[Candidate] = []
        for w in self._tracks.values():
            out.extend(self._advance(w, t))
        return out

    def finish(self, t: float) -> list[Candidate]:
        return _flush_all(self, list(self._tracks), t)


@dataclass
class _Dynamic:
    threshold: float
    last_score: float | None = None  # score of the last post
    last_post_t: float | None = None
    held: Candidate | None = None  # best candidate that passed, waiting for the delay


class RealtimeDynamicSelector:
    """``-r 1 --rt-perm 0``: post snapshots of a face in order of increasing quality.

    Per track:

    * A candidate *passes* if ``score >= threshold`` and it is strictly better in
      score than the last post. The threshold starts at ``min_score``; after a post
      of score ``s`` it becomes ``min(s + step, 0.0)`` (``step`` in quality units,
      default 0.1; the strict-improvement rule stops a perfect 0 from reposting).
    * The best passing candidate is *held*; it is posted as soon as ``rt_delay``
      has passed since the previous post (at once for the first post), on the
      ``observe`` or ``tick`` that reaches that time. A better passing candidate
      replaces the held one, so what gets posted is the best seen so far.
    * ``end_track``/``finish`` post the held candidate even inside the delay: it is
      the best snapshot of a face that is leaving, and dropping it would lose it.
      This is the only case where two posts of a track may be < ``rt_delay`` apart.
    * ``end_track`` forgets the track: the threshold is back to ``min_score``.
    """

    def __init__(
        self, rt_delay_s: float, min_score: float, step: float = DEFAULT_DYNAMIC_STEP
    ) -> None:
        self.rt_delay_s = _positive("rt_delay_s", rt_delay_s)
        self.min_score = _finite("min_score", min_score)
        self.step = _positive("step", step)
        self._tracks: dict[int, _Dynamic] = {}

    def _passes(self, s: _Dynamic, c: Candidate) -> bool:
        return c.score >= s.threshold and (s.last_score is None or c.score > s.last_score)

    def _too_soon(self, elapsed: float) -> bool:
        return elapsed + _TIME_EPS < self.rt_delay_s

    def _release(self, s: _Dynamic, t: float) -> list[Candidate]:
        c = s.held
        if c is None or (s.last_post_t is not None and self._too_soon(t - s.last_post_t)):
            return []
        s.held, s.last_score, s.last_post_t = None, c.score, t
        s.threshold = min(c.score + self.step, 0.0)
        return [c]

    def observe(self, c: Candidate) -> list[Candidate]:
        s = self._tracks.setdefault(c.track_id, _Dynamic(threshold=self.min_score))
        if self._passes(s, c):
            s.held = better(s.held, c)
        return self._release(s, c.t)

    def end_track(self, track_id: int, t: float) -> list[Candidate]:
        s = self._tracks.pop(track_id, None)
        if s is None:
            return []
        s.last_post_t = None  # the face is leaving: post the held candidate now
        return self._release(s, t)

    def tick(self, t: float) -> list[Candidate]:
        out: list[Candidate] = []
        for s in self._tracks.values():
            out.extend(self._release(s, t))
        return out

    def finish(self, t: float) -> list[Candidate]:
        return _flush_all(self, list(self._tracks), t)


def _labelled(cs: list[Candidate], label: str) -> list[Candidate]:
    return [dataclasses.replace(c, label=label) for c in cs]


class Realtime1844Selector:
    """``--realtime1844``: a realtime selector and an offline one side by side.

    Every call goes to both; realtime posts come first, labelled ``"realtime"``,
    then offline posts, labelled ``"offline"``.
    """

    def __init__(self, realtime: BestFrameSelector, offline: BestFrameSelector | None = None):
        self.realtime = realtime
        self.offline = offline if offline is not None else OfflineSelector()

    def _both(self, name: str, *args: object) -> list[Candidate]:
        rt = getattr(self.realtime, name)(*args)
        off = getattr(self.offline, name)(*args)
        return _labelled(rt, "realtime") + _labelled(off, "offline")

    def observe(self, c: Candidate) -> list[Candidate]:
        return self._both("observe", c)

    def end_track(self, track_id: int, t: float) -> list[Candidate]:
        return self._both("end_track", track_id, t)

    def tick(self, t: float) -> list[Candidate]:
        return self._both("tick", t)

    def finish(self, t: float) -> list[Candidate]:
        return self._both("finish", t)


class ScoreFilter:
    """Drops candidates below ``min_score`` / ``min_dir_score`` before ``inner`` sees them."""

    def __init__(self, inner: BestFrameSelector, min_score: float, min_dir_score: float):
        self.inner = inner
        self.min_score = _finite("min_score", min_score)
        self.min_dir_score = _finite("min_dir_score", min_dir_score)

    def postable(self, c: Candidate) -> bool:
        return c.score >= self.min_score and c.direction_score >= self.min_dir_score

    def observe(self, c: Candidate) -> list[Candidate]:
        return self.inner.observe(c) if self.postable(c) else []

    def end_track(self, track_id: int, t: float) -> list[Candidate]:
        return self.inner.end_track(track_id, t)

    def tick(self, t: float) -> list[Candidate]:
        return self.inner.tick(t)

    def finish(self, t: float) -> list[Candidate]:
        return self.inner.finish(t)


def make_selector(
    realtime: bool,
    rt_perm: bool,
    rt_delay_ms: float,
    realtime1844: bool,
    min_score: float,
    min_dir_score: float,
    *,
    dynamic_step: float = DEFAULT_DYNAMIC_STEP,
) -> BestFrameSelector:
    """Selector for the command-line options. ``--realtime1844`` overrides ``-r``.

    ``rt_delay_ms`` is validated (> 0) only when a realtime selector is built.
    """
    min_score = _finite("min_score", min_score)
    min_dir_score = _finite("min_dir_score", min_dir_score)
    inner: BestFrameSelector = OfflineSelector()
    if realtime or realtime1844:
        delay_s = _positive("rt_delay_ms", rt_delay_ms) / 1000.0
        rt: BestFrameSelector
        if rt_perm:
            rt = RealtimePermSelector(delay_s)
        else:
            rt = RealtimeDynamicSelector(delay_s, min_score, dynamic_step)
        inner = Realtime1844Selector(rt) if realtime1844 else rt
    return ScoreFilter(inner, min_score, min_dir_score)
