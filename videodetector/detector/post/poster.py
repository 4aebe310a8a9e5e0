"""Poster: delivers snapshots to the server in order, without losing any it accepted.

Write-ahead: a snapshot is *accepted* (``submit`` returns ``Accepted.SPOOLED``) only once it
is durably in the on-disk spool (written to a ``.tmp`` file, fsync'ed, renamed, directory
fsync'ed; see ``spool.py``). From then on it survives ``kill -9`` and power loss: the sender
posts from the spool and removes the file only after a 2xx answer.

* ``submit`` never blocks on the network; it waits for the disk (one fsync'ed write, a few
  ms; see ``bench/spool_rate.py``).
* When the spool cannot be written (a full disk, a read-only or missing directory), the
  snapshot is held in a bounded memory queue instead (``Accepted.MEMORY``: delivered if the
  process lives, lost on a crash) -- at most ``post_queue`` snapshots, counting one being
  sent. Beyond that the new snapshot is dropped (``Accepted.DROPPED``, counted per reason in
  ``stats()``). The failure is logged once when it starts, then at most once per
  ``log_interval`` seconds (counts, not one line per snapshot), and once when the spool
  works again. Every ``submit`` tries the spool again, moving the memory queue to the spool
  first (in order): once space is back, the spool works again without a restart.
* One sender thread posts the oldest pending item: the spool head, else the memory head
  (every spooled item is older than every item in memory).
  - 2xx: delivered (``ok``), the item leaves the spool.
  - connection error, timeout, 408, 429, 5xx: the server could not take it. The item
    stays at the head of the spool (an item from memory goes to the FRONT of the spool if
    it can) and the sender waits (exponential back-off, capped at ``retry_max_delay``)
    before retrying (``retries``). A 429 or 503 with ``Retry-After`` waits at least that
    long (up to ``MAX_RETRY_AFTER``).
  - any other status: the request itself is bad; the response body is logged, the item
    is counted in ``failed`` and moved to the spool's ``rejected/`` folder (not retried,
    not deleted: an operator can inspect it). A 500 repeated
    ``MAX_SERVER_ERRORS_PER_ITEM`` times for the same item is treated the same way, so one
    snapshot the server cannot process does not block the ones behind it.
* ``stop(timeout)`` keeps delivering for at most ``timeout`` seconds; the spool keeps the
  rest, and the memory queue (if any) is moved to it. On the next start the spool is
  delivered first. An item in flight at a crash or stop may be delivered twice: the
  ``Idempotency-Key`` header lets the server store it once.

Stats (``stats()``): ok, failed, spooled (items written to the spool), spool_dropped
(oldest items dropped by the spool bound), retries, queue_len (memory), spool_len,
spool_bytes, spool_write_errors, spool_ok (1/0: the last write worked), and the snapshots
lost per reason: ``dropped_spool_unwritable`` (the spool refused it and the memory queue was
full), ``dropped_at_stop`` (held in memory at stop, the spool still refusing).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import requests

from videodetector.core.backoff import Backoff
from videodetector.detector.post.request import PostSettings, build_request
from videodetector.detector.post.spool import Spool
from videodetector.detector.post.trouble import LOG_INTERVAL, Trouble
from videodetector.detector.snapshot import Snapshot
from videodetector.detector.timing import NULL, Observer

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429})
# A server that answers 500 to the same snapshot this many times in a row is failing on that
# item (not down: down is a connection error, 502/503/504): it is set aside so the snapshots
# behind it are not blocked forever.
MAX_SERVER_ERRORS_PER_ITEM = 5
BACKOFF_INITIAL = 0.5  # seconds
MAX_RETRY_AFTER = 300.0  # seconds: the longest Retry-After the poster honours
_BODY_LOG_LIMIT = 500


class PosterSettings(PostSettings, Protocol):
    """The part of DetectorConfig the poster reads."""

    req_timeout: float
    to_verify_cert: bool
    post_queue: int
    spool_dir: str
    spool_max_bytes: int
    retry_max_delay: float


class Accepted(enum.Enum):
    """What ``submit`` did with a snapshot."""

    SPOOLED = "spooled"  # durably on disk: survives a crash, delivered at the latest on restart
    MEMORY = "memory"  # the spool could not be written: held in memory, lost on a crash
    DROPPED = "dropped"  # the spool could not be written and the memory queue was full

    @property
    def kept(self) -> bool:
        return self is not Accepted.DROPPED


DROP_REASONS = ("spool_unwritable", "at_stop")


class Outcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"  # the request is bad: do not retry, keep it aside
    RETRY = "retry"  # the server could not take it now
    SERVER_ERROR = "server_error"  # 500: retried, but set aside if it repeats for this item


@dataclass
class _Item:
    snap: Snapshot
    spool_seq: int | None  # None: taken from memory


class Poster:
    """Posts snapshots from a background thread; see the module docs."""

    def __init__(
        self,
        cfg: PosterSettings,
        session: requests.Session | None = None,
        *,
        spool: Spool | None = None,
        backoff_initial: float = BACKOFF_INITIAL,
        cam_id: str = "",
        log_interval: float = LOG_INTERVAL,
        post_seconds: Observer = NULL,
    ) -> None:
        if cfg.post_queue < 1:
            raise ValueError(f"post_queue must be >= 1, got {cfg.post_queue!r}")
        if spool is None and not cfg.spool_dir:
            raise ValueError("Poster needs a spool: set spool_dir (--spool-dir)")
        self.cfg = cfg
        self._cam_id = cam_id
        self._log = logging.LoggerAdapter(log, {"cam_id": cam_id or None})
        self._session = session or requests.Session()
        self._spool = spool if spool is not None else Spool(cfg.spool_dir, cfg.spool_max_bytes)
        self._backoff_initial = backoff_initial
        self._post_seconds = post_seconds  # a histogram of HTTP round trips
        self._memory: deque[Snapshot] = deque()
        self._cond = threading.Condition()
        self._inflight: _Item | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._deadline = float("inf")  # set by stop(): deliver until then
        self._closed = False  # after stop(): the sender must not touch anything
        self._wake = threading.Event()  # cuts a back-off short (stop)
        self._counts = dict.fromkeys(
            ("ok", "failed", "spooled", "retries", "spool_write_errors",
             *(f"dropped_{reason}" for reason in DROP_REASONS)), 0)
        self._server_wait: float | None = None  # the last answer's Retry-After, seconds
        self._item_errors: dict[str, int] = {}  # 500 answers in a row, per idempotency key
        self._spool_trouble = Trouble(
            self._log, f"poster: writing to the spool {self._spool.directory}",
            interval=log_interval)

    # -- public API ------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("Poster already started")
        backlog = len(self._spool)
        if backlog:
            self._log.info("poster: %d snapshot(s) in the spool from a previous run go first",
                           backlog)
        self._thread = threading.Thread(target=self._run, name="poster", daemon=True)
        self._thread.start()

    def submit(self, snap: Snapshot) -> Accepted:
        """Accept ``snap`` for posting: durably in the spool when this returns SPOOLED.
        Never waits for the network; waits for one fsync'ed write."""
        with self._cond:
            if self._closed:
                self._for(snap).warning("poster: submit after stop")
                if self._to_spool(snap):
                    return Accepted.SPOOLED
                self._drop("at_stop")
                return Accepted.DROPPED
            if self._memory_to_spool() and self._to_spool(snap):
                result = Accepted.SPOOLED
            else:
                result = self._hold(snap)
            self._cond.notify()
            return result

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver for at most ``timeout`` s; what is left stays in the spool. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._stopping = True
            self._deadline = time.monotonic() + max(timeout, 0.0)
            self._cond.notify_all()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(timeout, 0.0) + 0.5)
        with self._cond:
            if self._inflight is not None and self._inflight.spool_seq is None:
                # from memory, hence older than anything in the spool: it goes first
                if not self._to_spool(self._inflight.snap, front=True):
                    self._memory.appendleft(self._inflight.snap)
            if not self._memory_to_spool():
                self._log.error("poster: stopped, %d snapshot(s) could not be spooled and are lost",
                                len(self._memory))
                self._drop("at_stop", len(self._memory))
                self._memory.clear()
            self._closed = True
            self._inflight = None
            left = len(self._spool)
        if left:
            self._log.info("poster: stopped, %d snapshot(s) left in the spool %s",
                           left, self._spool.directory)
        self._spool.close()

    def stats(self) -> dict[str, int]:
        with self._cond:
            counts = dict(self._counts)
            counts["queue_len"] = len(self._memory)
            counts["spool_ok"] = int(not self._spool_trouble.active)
        counts["spool_len"] = len(self._spool)
        counts["spool_bytes"] = self._spool.bytes
        counts["spool_dropped"] = self._spool.dropped
        return counts

    # -- queue handling (call with self._cond held) -------------------------------

    def _to_spool(self, snap: Snapshot, *, front: bool = False) -> bool:
        """Write to the spool; False if the disk refuses, e.g. when it is full (logged once
        per interval, not per snapshot)."""
        try:
            self._spool.push(snap, front=front)
        except OSError as exc:
            self._counts["spool_write_errors"] += 1
            self._spool_trouble.failed(exc)
            return False
        self._counts["spooled"] += 1
        if self._spool_trouble.active:
            self._spool_trouble.recovered(f"{len(self._memory)} snapshot(s) held in memory "
                                          "are moved to it")
        return True

    def _hold(self, snap: Snapshot) -> Accepted:
        """The spool refused ``snap``: keep it in memory if the bound allows, else drop it."""
        in_memory = len(self._memory) + int(self._inflight is not None
                                            and self._inflight.spool_seq is None)
        if in_memory >= self.cfg.post_queue:
            self._drop("spool_unwritable")
            return Accepted.DROPPED
        self._memory.append(snap)
        self._spool_trouble.note(held_in_memory=1)
        return Accepted.MEMORY

    def _drop(self, reason: str, n: int = 1) -> None:
        self._counts[f"dropped_{reason}"] += n
        self._spool_trouble.note(**{f"dropped_{reason}": n})

    def _memory_to_spool(self) -> bool:
        """Move the memory queue, oldest first, to the spool; False if it stopped early."""
        while self._memory:
            if not self._to_spool(self._memory[0]):
                return False
            self._memory.popleft()
        return True

    def _next_item(self) -> _Item | None:
        head = self._spool.peek_oldest()
        if head is not None:
            return _Item(snap=head[1], spool_seq=head[0])
        if self._memory:
            return _Item(snap=self._memory.popleft(), spool_seq=None)
        return None

    # -- the sender thread --------------------------------------------------------

    def _run(self) -> None:
        try:
            self._send_loop()
        except Exception:  # a bug: make it loud; accepted items stay in memory/spool
            self._log.critical("poster: the sender thread crashed, posting stopped", exc_info=True)

    def _send_loop(self) -> None:
        cap = self.cfg.retry_max_delay
        backoff = Backoff(min(self._backoff_initial, cap), cap)
        while True:
            with self._cond:
                item = self._wait_for_item()
                if item is None:
                    return
                self._inflight = item
            outcome = self._post(item.snap)
            with self._cond:
                if self._closed:
                    return
                self._inflight = None
                outcome = self._settle(item, outcome)
            if outcome is Outcome.RETRY:
                if self._stopping:  # the server is unreachable: the spool keeps the rest
                    return
                self._pause(max(backoff.next(), self._server_wait or 0.0))
            else:
                backoff.reset()

    def _wait_for_item(self) -> _Item | None:
        """The next item to send, waiting for one; None when the sender should end."""
        while True:
            if self._closed or (self._stopping and time.monotonic() >= self._deadline):
                return None
            item = self._next_item()
            if item is not None:
                return item
            if self._stopping:
                return None
            self._cond.wait()

    def _settle(self, item: _Item, outcome: Outcome) -> Outcome:
        """Book the result of one attempt; returns it as RETRY, OK or FAILED."""
        key = item.snap.idempotency_key
        if outcome is Outcome.SERVER_ERROR:
            self._item_errors[key] = self._item_errors.get(key, 0) + 1
            too_many = self._item_errors[key] >= MAX_SERVER_ERRORS_PER_ITEM
            outcome = Outcome.FAILED if too_many else Outcome.RETRY
        if outcome is Outcome.RETRY:
            self._counts["retries"] += 1
            if item.spool_seq is None and not self._to_spool(item.snap, front=True):
                self._memory.appendleft(item.snap)
            self._memory_to_spool()
            return outcome
        self._item_errors.pop(key, None)
        if outcome is Outcome.OK:
            self._counts["ok"] += 1
            if item.spool_seq is not None:
                self._spool.remove(item.spool_seq)
            return outcome
        self._counts["failed"] += 1
        self._set_aside(item)
        return outcome

    def _set_aside(self, item: _Item) -> None:
        """A refused snapshot is kept on disk (spool ``rejected/``), never silently lost."""
        try:
            path = self._spool.set_aside(item.spool_seq, item.snap)
        except OSError as exc:
            self._for(item.snap).error("poster: cannot keep refused %s on disk, lost: %s",
                                       item.snap.idempotency_key, exc)
            return
        self._for(item.snap).error("poster: %s refused by the server, kept in %s",
                                   item.snap.idempotency_key, path)

    def _pause(self, seconds: float) -> None:
        """Back-off wait; ends early at stop (never past the stop deadline)."""
        with self._cond:
            remaining = self._deadline - time.monotonic()
        self._wake.wait(max(0.0, min(seconds, remaining)))

    def _post(self, snap: Snapshot) -> Outcome:
        self._server_wait = None
        try:
            req = build_request(snap, self.cfg)
        except Exception:
            self._for(snap).exception("poster: cannot build the request for %s",
                                      snap.idempotency_key)
            return Outcome.FAILED
        try:
            t0 = time.perf_counter()
            resp = self._session.post(
                req.url, headers=dict(req.headers), data=list(req.data), files=list(req.files),
                timeout=self.cfg.req_timeout, verify=self.cfg.to_verify_cert,
            )
            self._post_seconds.observe(time.perf_counter() - t0)
            if resp.status_code in (429, 503):
                self._server_wait = retry_after(resp.headers.get("Retry-After"))
            return _classify(snap, req.url, resp, self._for(snap))
        except requests.RequestException as exc:
            self._for(snap).warning("poster: post to %s failed (%s), will retry", req.url, exc)
            return Outcome.RETRY
        except Exception:  # e.g. a header value that cannot be encoded: retrying won't help
            self._for(snap).exception("poster: cannot post %s", snap.idempotency_key)
            return Outcome.FAILED

    def _for(self, snap: Snapshot) -> logging.LoggerAdapter:
        """The logger of a line about ``snap``: its camera's prefix (the snapshot's own camera
        when this poster was made without one)."""
        if self._cam_id or not snap.cam_id:
            return self._log
        return logging.LoggerAdapter(log, {"cam_id": snap.cam_id})


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header (RFC 9110: delay-seconds or an HTTP-date) in seconds,
    within 0..MAX_RETRY_AFTER; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _classify(snap: Snapshot, url: str, resp: requests.Response,
              logger: logging.Logger | logging.LoggerAdapter = log) -> Outcome:
    status = resp.status_code
    if 200 <= status < 300:
        logger.debug("poster: posted %s (%d)", snap.idempotency_key, status)
        return Outcome.OK
    body = resp.text[:_BODY_LOG_LIMIT]
    if status >= 500 or status in RETRY_STATUSES:
        logger.warning("poster: %s answered %d, will retry: %s", url, status, body)
        return Outcome.SERVER_ERROR if status == 500 else Outcome.RETRY
    logger.error("poster: %s rejected %s with %d: %s", url, snap.idempotency_key, status, body)
    return Outcome.FAILED
