"""Spool properties (hypothesis): random put / put on a full disk / take / ack / crash-restart
sequences against a plain list model. Bytes stay bounded, keys stay unique, order is kept,
nothing acknowledged as spooled is lost by a crash (kill -9, with or without an unfinished
write), and a write refused by a full disk leaves nothing behind."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import videodetector.core.durable as durable_module  # where the spool opens its files
from tests.detector.post.disks import SeamDisk
from tests.detector.post.receiver import make_snapshot
from videodetector.detector.post.codec import decode_snapshot, encode_snapshot
from videodetector.detector.post.spool import SUFFIX, Spool
from videodetector.detector.snapshot import Snapshot

SMALL = len(encode_snapshot(make_snapshot(frame_jpeg=None)))
BIG = len(encode_snapshot(make_snapshot()))
MAX_BYTES = 3 * BIG + SMALL  # room for 3 to ~10 items: the bound is reached often


class SpoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spool-prop-"))
        self.spool = Spool(self.dir, MAX_BYTES)
        self.model: list[tuple[str, int]] = []  # (key, size), oldest first
        self.taken: tuple[int, str] | None = None  # (seq, key) of the item being sent
        self.next_seq = 0
        self.dropped = 0  # by the bound, since the spool was opened

    def _snapshot(self, big: bool) -> Snapshot:
        self.next_seq += 1
        return make_snapshot(seq=self.next_seq, **({} if big else {"frame_jpeg": None}))

    @rule(big=st.booleans(), front=st.booleans())
    def put(self, big: bool, front: bool) -> None:
        snap = self._snapshot(big)
        self.spool.push(snap, front=front)
        item = (snap.idempotency_key, len(encode_snapshot(snap)))
        self.model = [item, *self.model] if front else [*self.model, item]
        # the bound drops the OLDEST items, but never the last one left
        while sum(size for _, size in self.model) > MAX_BYTES and len(self.model) > 1:
            self.model.pop(0)
            self.dropped += 1

    @rule(big=st.booleans(), front=st.booleans())
    def put_on_a_full_disk(self, big: bool, front: bool) -> None:
        """ENOSPC: push raises, the spool is unchanged and no partial file is left."""
        disk = SeamDisk(self.dir)
        disk.fill()
        durable_module.open = disk.open  # type: ignore[attr-defined]
        try:
            with pytest.raises(OSError, match="No space left"):
                self.spool.push(self._snapshot(big), front=front)
        finally:
            del durable_module.open  # type: ignore[attr-defined]
        assert disk.refused == 1

    @rule()
    def take(self) -> None:
        head = self.spool.peek_oldest()
        if not self.model:
            assert head is None
            return
        assert head is not None and head[1].idempotency_key == self.model[0][0]
        self.taken = (head[0], head[1].idempotency_key)

    @precondition(lambda self: self.taken is not None)
    @rule()
    def ack(self) -> None:
        assert self.taken is not None
        seq, key = self.taken
        self.spool.remove(seq)  # harmless when the bound dropped it meanwhile
        self.model = [item for item in self.model if item[0] != key]
        self.taken = None

    @rule(unfinished_write=st.booleans())
    def crash_restart(self, unfinished_write: bool) -> None:
        """kill -9: the kernel releases the lock; a write may be cut short mid-way."""
        assert self.spool._lock_file is not None
        self.spool._lock_file.close()  # what process death does to the flock
        if unfinished_write:
            (self.dir / f"{10**15:020d}.tmp").write_bytes(b"FKSNAP1\n half an item")
        self.spool = Spool(self.dir, MAX_BYTES)
        self.dropped = 0
        self.taken = None  # the sender restarts from the head

    @invariant()
    def matches_the_model(self) -> None:
        names = sorted(p.name for p in self.dir.glob(f"*{SUFFIX}"))
        keys = [decode_snapshot((self.dir / n).read_bytes()).idempotency_key for n in names]
        assert keys == [key for key, _ in self.model]  # same items, same order, none lost
        assert len(set(keys)) == len(keys)
        assert len(self.spool) == len(self.model)
        assert self.spool.bytes == sum(size for _, size in self.model)
        assert self.spool.bytes <= MAX_BYTES or len(self.model) == 1
        assert self.spool.dropped == self.dropped
        assert not list(self.dir.glob("*.tmp"))

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)


SpoolMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=12,
                                          deadline=None)
TestSpoolProperties = SpoolMachine.TestCase
