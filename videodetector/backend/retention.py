"""History retention: camera events older than ``history_max_age`` are deleted.

A site posts faces all day; without a bound, the photos fill the disk in weeks. With
``history_max_age`` > 0 (seconds; 0 keeps everything, the default), a background thread
deletes, every ``history_cleanup_interval`` seconds:

* camera events (faces posted with a ``cam_id``) whose capture ``timestamp`` is older than
  the limit, with their images -- except faces an operator put in a gallery other than
  ``default`` (a watch list is not history);
* then persons left without any face whose ``meta`` is empty (the ones dynamic person
  creation made; a person an operator named is kept).

Enrolled faces (no ``cam_id``) are never touched. The age is judged by the capture time the
detector sent, so a recording processed long after it was made expires by its own dates.
Deletion runs in batches, each in its own short transaction, so requests are not held up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from videodetector.backend import person_store
from videodetector.backend.service import Backend

log = logging.getLogger(__name__)

BATCH = 500


def expire_history(backend: Backend, now: float | None = None) -> tuple[int, int]:
    """Delete what has outlived ``history_max_age``; returns (faces, persons) deleted."""
    max_age = backend.settings.history_max_age
    if max_age <= 0:
        return 0, 0
    cutoff = (time.time() if now is None else now) - max_age
    faces = 0
    while batch := _expired_faces(backend, cutoff):
        by_user: dict[int, list[int]] = defaultdict(list)
        for face_id, user in batch:
            by_user[user].append(face_id)
        deleted = sum(backend.delete_faces(user, ids) for user, ids in by_user.items())
        faces += deleted
        if not deleted:  # deleted meanwhile by a request: nothing more to do this round
            break
    with backend.db.transaction() as conn:
        persons = conn.execute(
            "DELETE FROM persons WHERE meta = '' AND NOT EXISTS "
            "(SELECT 1 FROM faces f WHERE f.person_id = persons.id)").rowcount
        if persons:
            person_store.forget_deleted_persons(conn)
    if faces or persons:
        log.info("history retention: deleted %d camera event(s) older than %g s and %d "
                 "person(s) left without faces", faces, max_age, persons)
    return faces, persons


def _expired_faces(backend: Backend, cutoff: float) -> list[tuple[int, int]]:
    rows = backend.db.rows(
        "SELECT id, user_id FROM faces WHERE cam_id IS NOT NULL AND ts < ? AND NOT EXISTS "
        "(SELECT 1 FROM face_galleries g WHERE g.face_id = faces.id) ORDER BY id LIMIT ?",
        (cutoff, BATCH))
    return [(r["id"], r["user_id"]) for r in rows]


class RetentionThread:
    """Runs :func:`expire_history` now and then every ``history_cleanup_interval`` seconds."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="history-retention",
                                        daemon=True)

    def start(self) -> RetentionThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        interval = self.backend.settings.history_cleanup_interval
        while not self._stop.is_set():
            try:
                expire_history(self.backend)
            except Exception:  # keep serving; try again at the next round
                log.exception("history retention failed")
            self._stop.wait(interval)
