"""Random sequences of store operations, some failing, keep the index and the database equal.

A hypothesis state machine drives a real ``Backend`` (real SQLite, real files; the faces come
already embedded, so no model runs) with face adds (with Idempotency-Keys, galleries and
dynamic persons), deletes, person changes and gallery deletes, each possibly hit by a fault:
the disk full for the image files, or SQLite refusing the COMMIT. After every step the
index must be the database (ids, embeddings, cameras, persons), the files on disk those the
database refers to, and the database what the successful operations made it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.backend.faultkit import CommitFault, DiskFull, assert_consistent
from videodetector.backend.service import Backend, FacePost, NewFace
from videodetector.backend.settings import Settings
from videodetector.backend.storage import CommitFailed

USERS = (1, 2)
# fsync dominates on a real disk; RAM (tmpfs) keeps the 30 examples at a few seconds
FAST_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
FAULTS = st.sampled_from([None, None, "commit", "disk"])


def embedding(seed: int) -> np.ndarray:
    """One of a few people (seed // 4), each seen with a little noise: faces of one person
    join its person (person_identify), the others start new persons."""
    rng = np.random.default_rng(seed // 4)
    v = rng.standard_normal(128)
    v += 0.05 * np.random.default_rng(seed).standard_normal(128)
    return (v / np.linalg.norm(v)).astype(np.float32)


class StoreMachine(RuleBasedStateMachine):
    disk: DiskFull  # set by the test (it needs pytest's monkeypatch)
    ann_min = 0  # index_ann_min_faces: 0 = exact search only, small = the HNSW path too

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-state-", dir=FAST_DIR))
        self.backend = Backend(Settings(data_dir=self.dir, person_identify=True,
                                        preload_models=False, log_level="critical",
                                        index_ann_min_faces=self.ann_min,
                                        index_ann_catchup=4))
        self.commit_fault = CommitFault(self.backend.db)
        self.faces: dict[int, dict[int, int | None]] = {u: {} for u in USERS}  # id -> person
        self.in_gallery: dict[int, set[int]] = {u: set() for u in USERS}
        self.has_gallery = {u: False for u in USERS}
        self.keys: dict[tuple[int, str], list[int]] = {}

    def teardown(self) -> None:
        self.disk.on = False
        self.backend.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def faulty(self, fault: str | None) -> tuple[type[BaseException], ...]:
        """Switch ``fault`` on; the exceptions it may cause."""
        self.commit_fault.set(fault == "commit")
        self.disk.on = fault == "disk"
        return {None: (), "commit": (CommitFailed,), "disk": (OSError,)}[fault]

    def clear(self) -> None:
        self.commit_fault.set(False)
        self.disk.on = False

    def persons_in_db(self, user: int, ids: list[int]) -> dict[int, int | None]:
        return {r["id"]: r["person_id"] for r in self.backend.face_rows(user, ids)}

    @rule(user=st.sampled_from(USERS), seeds=st.lists(st.integers(0, 15), min_size=1,
                                                      max_size=2),
          cam=st.sampled_from([None, "c1", "c2"]), key=st.sampled_from([None, "k0", "k1"]),
          gallery=st.booleans(), fault=FAULTS)
    def add(self, user: int, seeds: list[int], cam: str | None, key: str | None,
            gallery: bool, fault: str | None) -> None:
        faces = [NewFace((0.0, 0.0, 112.0, 112.0), np.full((112, 112, 3), s, np.uint8),
                         embedding(s)) for s in seeds]
        gallery = gallery and self.has_gallery[user]
        post = FacePost(photo=None, face_images=[bytes(seeds)], boxes=None, cam_id=cam,
                        galleries=["g"] if gallery else [], idempotency_key=key)
        earlier = self.keys.get((user, key)) if key else None
        expected = self.faulty(fault)
        if earlier is not None and fault == "commit":
            expected = ()  # a replay writes nothing: there is nothing to commit
        try:
            ids = self.backend.store_faces(user, post, None, faces)
        except expected:
            return
        finally:
            self.clear()
        assert not expected, f"{fault} did not fail the add"
        if earlier is not None:
            assert ids == earlier
            return
        assert len(ids) == len(faces)
        self.faces[user].update(self.persons_in_db(user, ids))
        if gallery:
            self.in_gallery[user].update(ids)
        if key:
            self.keys[(user, key)] = ids

    @precondition(lambda self: any(self.faces.values()))
    @rule(data=st.data(), fault=FAULTS)
    def delete(self, data: st.DataObject, fault: str | None) -> None:
        user = data.draw(st.sampled_from([u for u in USERS if self.faces[u]]))
        ids = data.draw(st.lists(st.sampled_from(sorted(self.faces[user])), min_size=1,
                                 max_size=3, unique=True))
        expected = self.faulty(fault if fault == "commit" else None)  # no file is written
        try:
            n = self.backend.delete_faces(user, [*ids, 999_999])
        except expected:
            return
        finally:
            self.clear()
        assert not expected and n == len(ids)
        for face_id in ids:
            del self.faces[user][face_id]
            self.in_gallery[user].discard(face_id)

    @precondition(lambda self: any(self.faces.values()))
    @rule(data=st.data(), fault=FAULTS)
    def set_person(self, data: st.DataObject, fault: str | None) -> None:
        user = data.draw(st.sampled_from([u for u in USERS if self.faces[u]]))
        face_id = data.draw(st.sampled_from(sorted(self.faces[user])))
        own = sorted({p for p in self.faces[user].values() if p is not None})
        person = data.draw(st.sampled_from([None, "new", *own]))  # a client never picks an id
        current = self.faces[user][face_id]
        expected = self.faulty(fault if fault == "commit" else None)
        try:
            self.backend.update_face(user, face_id, None, person, None)
        except expected:
            return
        finally:
            self.clear()
        if person == "new":
            person = self.backend.db.scalar("SELECT person_id FROM faces WHERE id = ?",
                                            (face_id,))
            assert person is not None and person not in own
        assert not expected or person == current  # a move to where it is writes nothing
        self.faces[user][face_id] = person

    @rule(user=st.sampled_from(USERS), fault=FAULTS)
    def create_or_delete_gallery(self, user: int, fault: str | None) -> None:
        expected = self.faulty(fault if fault == "commit" else None)
        try:
            if self.has_gallery[user]:
                self.backend.delete_gallery(user, "g")
            else:
                self.backend.create_gallery(user, "g")
        except expected:
            return
        finally:
            self.clear()
        assert not expected
        if self.has_gallery[user]:
            for face_id in self.in_gallery[user]:
                del self.faces[user][face_id]
            self.in_gallery[user] = set()
        self.has_gallery[user] = not self.has_gallery[user]

    @invariant()
    def index_is_the_database(self) -> None:
        stored = assert_consistent(self.backend)
        for user in USERS:
            assert stored.get(user, set()) == set(self.faces[user])
            assert self.persons_in_db(user, sorted(self.faces[user])) == self.faces[user]
        with self.backend.db.lock:
            assert not self.backend.db.conn.in_transaction

    @invariant()
    def graph_searches_return_the_stored_faces(self) -> None:
        """With a graph, a search for all faces returns exactly the stored ones (no deleted
        or rolled-back face, none twice), with their exact cosines."""
        if not self.ann_min:
            return
        assert self.backend.index.wait(30)
        for user in USERS:
            index = self.backend.index(user)
            if index.ann is None or not len(index):
                continue
            assert index.uses_ann() == (len(index) >= self.ann_min)
            stored = set(self.faces[user])
            for face_id in sorted(stored)[:3]:
                hits = index.search(index.vector(face_id), len(index))
                assert [h[0] for h in hits if h[0] == face_id] == [face_id]
                assert {h[0] for h in hits} == stored and len(hits) == len(stored)


def test_index_and_database_agree_through_random_faults(monkeypatch):
    StoreMachine.disk = DiskFull(monkeypatch)
    run_state_machine_as_test(StoreMachine, settings=settings(
        max_examples=30, stateful_step_count=12, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))


class GraphStoreMachine(StoreMachine):
    ann_min = 3  # each user's graph is built (in the background) from its 3rd face


def test_index_graph_and_database_agree_through_random_faults(monkeypatch):
    GraphStoreMachine.disk = DiskFull(monkeypatch)
    run_state_machine_as_test(GraphStoreMachine, settings=settings(
        max_examples=25, stateful_step_count=12, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))


def test_commit_fault_is_real_sqlite(tmp_path):
    """The injected fault: SQLite itself refuses the COMMIT and leaves the transaction open
    (the case the backend failed to roll back)."""
    backend = Backend(Settings(data_dir=tmp_path, preload_models=False))
    try:
        with CommitFault(backend.db):
            conn = backend.db.conn
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO galleries VALUES (1, 'x', 'now')")
            try:
                conn.execute("COMMIT")
                raise AssertionError("COMMIT succeeded")
            except sqlite3.IntegrityError:
                assert conn.in_transaction
            conn.execute("ROLLBACK")
    finally:
        backend.close()


def test_a_stale_index_entry_does_not_block_new_faces(tmp_path, caplog):
    """Belt and braces for 'face 14 is already indexed': should the index ever hold an id
    the database does not (a rollback lost), the face SQLite stores under that id replaces
    it, loudly, instead of failing every later post until a restart."""
    backend = Backend(Settings(data_dir=tmp_path, preload_models=False))
    try:
        backend.index(1).add(1, embedding(0), "stale-cam", 99)  # SQLite's next id is 1
        face = NewFace((0.0, 0.0, 112.0, 112.0), np.zeros((112, 112, 3), np.uint8),
                       embedding(5))
        post = FacePost(photo=None, face_images=[b"f"], boxes=None, cam_id="c1")
        assert backend.store_faces(1, post, None, [face]) == [1]
        assert_consistent(backend)
        assert "lost rollback" in caplog.text
    finally:
        backend.close()
