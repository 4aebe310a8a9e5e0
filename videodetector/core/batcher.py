"""A micro-batcher run by its callers: items submitted while a call runs go into the next
call together.

``MicroBatcher(run, slots, max_batch, max_pending).submit(item)`` returns ``run([item, ...])``'s
answer for ``item``. No thread of its own and no fixed wait: a caller that finds a free slot
(fewer than ``slots`` calls running) runs the pending items at once, its own among them;
callers that arrive while every slot is busy wait, and a call that ends hands its slot to
the oldest waiting caller, which runs up to ``max_batch`` waiting items, oldest first (its
own first), in one call. So an idle batcher adds no latency, and a busy one batches exactly
the items that would otherwise have queued. Each waiting caller is woken once (its answer
is there, or it is to run a batch): no broadcast wake-ups under load.

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
    __slots__ = ("batch", "done", "error", "item", "result", "wake")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None
        self.batch: list[_Job[T, R]] | None = None  # set when its caller is to run a batch
        self.wake = threading.Event()  # set once: done, or handed a batch to run

    def answer(self) -> R:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class MicroBatcher(Generic[T, R]):
    """Batches concurrent ``submit`` calls into calls of ``run`` (see the module doc).

    ``run`` takes a non-empty list of items and returns a sequence of as many answers, in
    order; it may be called from ``slots`` threads at once (e.g. one per infer request).
    A waiting caller is woken once: when its answer is there, or to run the next batch (its
    own item first) in the slot a finished call hands over."""

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
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # waited on while the queue is full
        self._pending: collections.deque[_Job[T, R]] = collections.deque()
        self._busy = 0
        self._closed = False
        self.calls = 0  # calls of ``run`` made (batched ones; single retries not counted)
        self.items = 0  # items those calls carried

    def submit(self, item: T) -> R:
        """``run``'s answer for ``item`` (or its error), computed alone or with others."""
        job: _Job[T, R] = _Job(item)
        with self._lock:
            while len(self._pending) >= self.max_pending and not self._closed:
                self._room.wait()
            if self._closed:
                raise BatcherClosed("the micro-batcher is closed")
            self._pending.append(job)
            if self._busy < self.slots:  # a free slot: run now (the queue was empty)
                self._busy += 1
                job.batch = self._take()
        if job.batch is None:
            job.wake.wait()
        if not job.done:  # handed a batch, its own item first
            self._run_batch(job.batch)  # type: ignore[arg-type]
        return job.answer()

    def _take(self) -> list[_Job[T, R]]:
        """The next batch, oldest first (under the lock, with a slot held for it)."""
        n = min(len(self._pending), self.max_batch)
        batch = [self._pending.popleft() for _ in range(n)]
        self.calls += 1
        self.items += n
        self._room.notify(n)
        return batch

    def _run_batch(self, batch: list[_Job[T, R]]) -> None:
        outcomes: list[tuple[R | None, BaseException | None]] = []
        try:
            outcomes = self._outcomes([job.item for job in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to every caller, then raised
            outcomes = [(None, exc)] * len(batch)
            raise
        finally:
            with self._lock:
                for job, (result, error) in zip(batch, outcomes, strict=True):
                    job.result, job.error, job.done = result, error, True
                    job.wake.set()
                if self._pending:  # the slot goes to the oldest waiting caller
                    nxt = self._take()
                    nxt[0].batch = nxt
                    nxt[0].wake.set()
                else:
                    self._busy -= 1

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
        with self._lock:
            self._closed = True
            while self._pending:
                job = self._pending.popleft()
                job.error, job.done = BatcherClosed("the micro-batcher was closed"), True
                job.wake.set()
            self._room.notify_all()
