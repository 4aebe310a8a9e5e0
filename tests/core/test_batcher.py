"""core/batcher.py: concurrent submissions batched into calls run by the callers."""

from __future__ import annotations

import threading
import time

import pytest

from videodetector.core.batcher import BatcherClosed, MicroBatcher


class Recorder:
    """``run`` doubling its items, recording each call's items and the calls running at once;
    ``gate`` (when set) holds every call until it is set."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.calls: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.started = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.calls.append(list(items))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.started.set()
        try:
            if self.gate is not None:
                assert self.gate.wait(10)
            time.sleep(self.delay)
            if any(i < 0 for i in items):
                raise ValueError(f"negative item among {items}")
            return [2 * i for i in items]
        finally:
            with self.lock:
                self.running -= 1


def wait_for(condition, seconds: float = 10.0) -> None:
    """Wait until ``condition()`` holds (polled every 5 ms; fails after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        time.sleep(0.005)


def submit_all(batcher: MicroBatcher, items: list[int]) -> dict[int, object]:
    out: dict[int, object] = {}

    def one(i: int) -> None:
        try:
            out[i] = batcher.submit(i)
        except Exception as exc:  # noqa: BLE001 - the test looks at which
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    return out


def test_an_idle_batcher_runs_a_lone_item_at_once_in_its_callers_thread():
    seen = []
    batcher = MicroBatcher(lambda items: seen.append(threading.get_ident()) or items, slots=2)
    t0 = time.perf_counter()
    assert batcher.submit(7) == 7
    # run in the caller's thread, so no wait; the bound only catches a batching window (a
    # loaded CI machine can preempt a thread for tens of ms: no tight figure here)
    assert time.perf_counter() - t0 < 1.0
    assert seen == [threading.get_ident()]
    assert (batcher.calls, batcher.items) == (1, 1)


def test_concurrent_callers_each_get_their_own_answer_in_batches():
    run = Recorder(delay=0.02)
    batcher = MicroBatcher(run, slots=2, max_batch=4)
    out = submit_all(batcher, list(range(40)))
    assert out == {i: 2 * i for i in range(40)}
    assert sorted(i for call in run.calls for i in call) == list(range(40))  # each run once
    assert max(len(c) for c in run.calls) > 1  # batched: 40 callers, 2 slots of 20 ms
    assert max(len(c) for c in run.calls) <= 4
    assert run.most_running <= 2
    assert batcher.calls == len(run.calls) < 40 and batcher.items == 40


def test_one_bad_item_fails_only_its_own_caller():
    gate = threading.Event()
    run = Recorder(gate=gate)
    batcher = MicroBatcher(run, slots=1, max_batch=8)
    first = threading.Thread(target=batcher.submit, args=(100,))
    first.start()  # holds the only slot: the items below queue and run as one batch
    assert run.started.wait(10)
    items = [1, 2, -3, 4, 5]
    threads_out: dict[int, object] = {}
    waiter = threading.Thread(target=lambda: threads_out.update(submit_all(batcher, items)))
    waiter.start()
    wait_for(lambda: len(batcher._pending) == len(items))  # noqa: SLF001
    gate.set()
    waiter.join(10)
    first.join(10)
    assert sorted(run.calls[1]) == sorted(items)  # the five went in one call, which failed
    assert {i: v for i, v in threads_out.items() if i != -3} == {1: 2, 2: 4, 4: 8, 5: 10}
    assert isinstance(threads_out[-3], ValueError) and "-3" in str(threads_out[-3])
    assert batcher.submit(6) == 12  # the batcher still serves


def test_an_error_of_a_lone_item_is_raised_to_its_caller():
    batcher = MicroBatcher(Recorder(), slots=1)
    with pytest.raises(ValueError, match="-1"):
        batcher.submit(-1)


def test_a_wrong_number_of_answers_is_an_error_not_a_mixup():
    batcher = MicroBatcher(lambda items: [0], slots=1)
    assert batcher.submit(5) == 0
    gate = threading.Event()
    calls = []

    def run(items):
        calls.append(items)
        gate.wait(10)
        return [0]  # one answer whatever the items

    batcher = MicroBatcher(run, slots=1)
    first = threading.Thread(target=batcher.submit, args=(1,))
    first.start()
    wait_for(lambda: len(calls) == 1)  # 1 holds the slot
    out: dict[int, object] = {}
    waiter = threading.Thread(target=lambda: out.update(submit_all(batcher, [2, 3])))
    waiter.start()
    wait_for(lambda: len(batcher._pending) == 2)  # noqa: SLF001 - 2 and 3 wait together
    gate.set()
    waiter.join(10)
    first.join(10)
    assert out == {2: 0, 3: 0}  # retried alone after the batched call's 1 answer for 2
    assert sorted(calls[1]) == [2, 3] and sorted(calls[2:]) == [[2], [3]]


def test_close_fails_pending_items_lets_the_running_call_finish_and_refuses_new_ones():
    gate = threading.Event()
    run = Recorder(gate=gate)
    batcher = MicroBatcher(run, slots=1)
    out: dict[int, object] = {}
    first = threading.Thread(target=lambda: out.update({1: batcher.submit(1)}))
    first.start()
    assert run.started.wait(10)
    waiter = threading.Thread(target=lambda: out.update(submit_all(batcher, [2, 3])))
    waiter.start()
    wait_for(lambda: len(batcher._pending) == 2)  # noqa: SLF001
    batcher.close()
    waiter.join(10)
    assert isinstance(out[2], BatcherClosed) and isinstance(out[3], BatcherClosed)
    gate.set()
    first.join(10)
    assert out[1] == 2  # the running call delivered
    with pytest.raises(BatcherClosed):
        batcher.submit(4)
    assert [c for c in run.calls] == [[1]]


def test_the_queue_is_bounded():
    gate = threading.Event()
    run = Recorder(gate=gate)
    batcher = MicroBatcher(run, slots=1, max_batch=8, max_pending=2)
    first = threading.Thread(target=batcher.submit, args=(1,))
    first.start()
    assert run.started.wait(10)
    out: dict[int, object] = {}
    waiter = threading.Thread(target=lambda: out.update(submit_all(batcher, [2, 3, 4, 5])))
    waiter.start()
    # two wait in the queue, two are held at the door (blocked on the room condition)
    wait_for(lambda: len(batcher._room._waiters) == 2)  # noqa: SLF001
    assert len(batcher._pending) == 2  # noqa: SLF001
    gate.set()
    waiter.join(10)
    first.join(10)
    assert out == {2: 4, 3: 6, 4: 8, 5: 10}
    assert all(len(c) <= 2 for c in run.calls[1:])


def test_a_base_exception_reaches_every_caller_of_its_batch():
    gate = threading.Event()
    calls = []

    def run(items):
        calls.append(items)
        if len(calls) == 1:
            gate.wait(10)
            return items
        raise KeyboardInterrupt  # not an Exception: not retried item by item

    batcher = MicroBatcher(run, slots=1)
    first = threading.Thread(target=batcher.submit, args=(1,))
    first.start()
    wait_for(lambda: len(calls) == 1)  # 1 holds the slot
    out: dict[int, object] = {}

    def one(i: int) -> None:
        try:
            out[i] = batcher.submit(i)
        except BaseException as exc:  # noqa: BLE001
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in (2, 3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(batcher._pending) == 2)  # noqa: SLF001 - 2 and 3 wait together
    gate.set()
    for t in threads:
        t.join(10)
    first.join(10)
    assert not any(t.is_alive() for t in threads)  # nobody left waiting
    assert all(isinstance(out[i], KeyboardInterrupt) for i in (2, 3))


@pytest.mark.parametrize("kwargs", [{"slots": 0}, {"max_batch": 0}, {"max_pending": 0},
                                    {"slots": 1.5}])
def test_limits_are_validated(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MicroBatcher(lambda items: items, **kwargs)
