"""A micro-batcher run by its callers: items submitted while a call runs go into the next
call together.

``MicroBatcher(run, slots, max_batch, max_pending).submit(item)`` returns ``run([item, ...])``'s
answer for ``item``. No thread of its own and no fixed wait: a caller that finds a free slot
(fewer than ``slots`` calls running) runs the pending items at once, its own among them;
callers that arrive while every slot is busy wait, and the next caller to find a slot free
runs up to ``max_batch`` of them, oldest first, in one call. So an idle batcher adds no
latency, and a busy one batches exactly the items that would otherwise have queued.

An error of a batched call is not given to every item of it: each item is then run alone,
so only the item(s) failing alone get their own error, the others their answers. At most
``max_pending`` items wait (a further ``submit`` blocks until there is room). ``close()``
refuses new items and fails the pending ones with ``BatcherClosed``; calls already running
finish and deliver their answers.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class BatcherClosed(RuntimeError):
    """The batcher was closed before this item was run."""


class _Job(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class MicroBatcher(Generic[T, R]):
    """Batches concurrent ``submit`` calls into calls of ``run`` (see the module doc).

    ``run`` takes a non-empty list of items and returns a sequence of as many answers, in
    order; it may be called from ``slots`` threads at once (e.g. one per infer request)."""

    def __init__(self, run: Callable[[list[T]], Sequence[R]], slots: int = 1,
                 max_batch: int = 8, max_pending: int = 256) -> None:
        for name, value in (("slots", slots), ("max_batch", max_batch),
                            ("max_pending", max_pending)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"a micro-batcher needs {name} >= 1, got {value!r}")
        self._run = run
        self.slots = slots
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._cond = threading.Condition()
        self._pending: collections.deque[_Job[T, R]] = collections.deque()
        self._busy = 0
        self._closed = False
        self.calls = 0  # calls of ``run`` made (batched ones; single retries not counted)
        self.items = 0  # items those calls carried

    def submit(self, item: T) -> R:
        """``run``'s answer for ``item`` (or its error), computed alone or with others."""
        job: _Job[T, R] = _Job(item)
        with self._cond:
            while len(self._pending) >= self.max_pending and not self._closed:
                self._cond.wait()
            if self._closed:
                raise BatcherClosed("the micro-batcher is closed")
            self._pending.append(job)
        while True:
            with self._cond:
                while not job.done and not (self._pending and self._busy < self.slots):
                    self._cond.wait()
                if job.done:
                    if job.error is not None:
                        raise job.error
                    return job.result  # type: ignore[return-value]
                n = min(len(self._pending), self.max_batch)
                batch = [self._pending.popleft() for _ in range(n)]
                self._busy += 1
                self.calls += 1
                self.items += n
                self._cond.notify_all()  # room in the queue
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Job[T, R]]) -> None:
        outcomes: list[tuple[R | None, BaseException | None]] = []
        try:
            outcomes = self._outcomes([job.item for job in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to every caller, then raised
            outcomes = [(None, exc)] * len(batch)
            raise
        finally:
            with self._cond:
                for job, (result, error) in zip(batch, outcomes, strict=True):
                    job.result, job.error, job.done = result, error, True
                self._busy -= 1
                self._cond.notify_all()

    def _outcomes(self, items: list[T]) -> list[tuple[R | None, BaseException | None]]:
        """(answer, None) or (None, error) per item: one call, or one call per item if the
        batched call failed (so one bad item fails only itself)."""
        try:
            results = list(self._run(items))
            if len(results) != len(items):
                raise RuntimeError(f"a batched call gave {len(results)} answers for "
                                   f"{len(items)} items")
            return [(r, None) for r in results]
        except Exception as exc:  # noqa: BLE001 - each item's own error is found below
            if len(items) == 1:
                return [(None, exc)]
        out: list[tuple[R | None, BaseException | None]] = []
        for item in items:
            try:
                out.append((self._run([item])[0], None))
            except Exception as exc:  # noqa: BLE001 - that item's caller gets it
                out.append((None, exc))
        return out

    def close(self) -> None:
        """Refuse new items and fail the pending ones (``BatcherClosed``); running calls
        finish and deliver their answers."""
        with self._cond:
            self._closed = True
            while self._pending:
                job = self._pending.popleft()
                job.error, job.done = BatcherClosed("the micro-batcher was closed"), True
            self._cond.notify_all()
