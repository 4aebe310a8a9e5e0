"""The backend's state and face logic: enrollment, identification, persons (8.2), friends (8.3).

``Backend`` owns the database, the image files, the in-memory indexes and the
models. Its methods are synchronous (routers call them in a worker thread); all
writes happen in ``db.transaction()``, which holds the single write lock.

The database is the truth; the index and the image files follow it:

* every index change made in a transaction registers its undo (``db.on_rollback``), so a
  failed statement or COMMIT (full disk) leaves the index as the database is;
* images are written before the transaction that refers to them and removed again when it
  does not commit; images of deleted faces are removed only after the delete committed;
* ``*.tmp`` files of writes cut short by a crash are removed at start.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, partial
from typing import Any

import numpy as np

from videodetector.backend import changes, model_choice, person_match, person_store, thumbs
from videodetector.backend.auth import TokenChecker
from videodetector.backend.embeddings import VECTOR_SQL, last_change, vector_of
from videodetector.backend.engine import (
    Box,
    FoundFace,
    NewFace,
    face_box_json,
    shared_engine,
)
from videodetector.backend.errors import ApiError, bad_param, not_found
from videodetector.backend.extraction import emotions_unavailable
from videodetector.backend.imaging import (
    THUMBNAIL_QUALITY,
    Photo,
    as_aligned_face,
    content_hash,
    decode_for_thumbnails,
    decode_plain_png,
    png_as_uploaded,
    thumbnail,
    validate_photo,
)
from videodetector.backend.index import IndexRegistry
from videodetector.backend.metrics import NULL_OBSERVER, Observer
from videodetector.backend.plugin_host import PluginHost
from videodetector.backend.probe import enroll_faces
from videodetector.backend.settings import AUTO_MODEL, Settings
from videodetector.backend.storage import FileStore, open_database
from videodetector.backend.stores.cameras import SqlCameraStore
from videodetector.backend.stores.faces import SqlIdempotencyStore, face_store, index_feed
from videodetector.backend.stores.galleries import SqlGalleryStore
from videodetector.backend.stores.history import SqlHistoryStore
from videodetector.backend.stores.persons import SqlPersonStore
from videodetector.backend.stores.report import SqlReportStore
from videodetector.backend.stores.stats import SqlStatsStore
from videodetector.backend.stores.sync import SqlSyncStore
from videodetector.backend.stores.tokens import SqlTokenStore
from videodetector.backend.stores.watchlists import SqlWatchListStore
from videodetector.backend.stores.webhooks import SqlWebhookStore
from videodetector.backend.timeutil import iso, now
from videodetector.backend.websession import SessionStore
from videodetector.core.confidence import confidence_from_cosine
from videodetector.core.images import encode
from videodetector.core.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

DEFAULT_GALLERY = changes.DEFAULT_GALLERY
TOMBSTONE_PRUNE_INTERVAL = 3600.0  # seconds between prunes of old sync tombstones
FACE_LOG_TTL = 86400.0  # seconds a face_log row is kept (PostgreSQL; see Backend.catch_up)
GALLERY_RE = re.compile(r"^[a-zA-Z0-9_-]{1,48}$")


@dataclass
class FacePost:
    """A parsed POST /face request (images still encoded)."""

    photo: bytes | None
    face_images: list[bytes]  # face0, face1, ...: normalized faces from the video detector
    boxes: list[Box] | None
    mf_selector: str = "biggest"
    meta: str = ""
    galleries: list[str] = field(default_factory=list)
    cam_id: str | None = None
    timestamp: datetime | None = None
    detector_params: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    want_attrs: frozenset[str] = frozenset()  # {'gender', 'age'}
    idempotency_key: str | None = None


def emotions_json(attrs: dict[str, Any]) -> str | None:
    """A face's stored ``emotions`` column: the JSON list of names, or None (not asked)."""
    names = attrs.get("emotions")
    return None if names is None else json.dumps(list(names))


def extra_json(post_extra: dict[str, Any], face_extra: dict[str, Any]) -> str | None:
    """The stored ``extra`` of a face: the request's extra fields and its annotations."""
    merged = {**post_extra, **face_extra}
    return json.dumps(merged) if merged else None


def box_key(box: Box) -> str:
    """The identify result key: ``"[x1, y1, x2, y2]"``."""
    return json.dumps([round(v) for v in box])


def check_gallery_name(name: str, param: str = "gallery") -> str:
    if not isinstance(name, str) or not GALLERY_RE.match(name):
        raise bad_param(param, f"gallery names are 1-48 characters of [a-zA-Z0-9_-], "
                        f"got {name!r}", name)
    return name


class ModelCoverageError(RuntimeError):
    """The active embedding model does not cover every stored face (and no --allow-partial)."""


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()
UNSET = _UNSET


class Backend:
    def __init__(self, settings: Settings,
                 cpu_has_bf16: Callable[[], bool] = model_choice.cpu_runs_bf16) -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_database(settings)
        # embedding_model "auto" resolved for this store, before anything uses the model
        self.configured_model = settings.embedding_model
        self.model_choice = self._choose_model(cpu_has_bf16)
        self.settings = settings = settings.with_changes(embedding_model=self.model_choice.model)
        self.files = FileStore(settings.data_dir / "uploads")
        self.files.remove_temporaries()
        # the storage owners (stores/): all SQL of their resource
        self.faces_store = face_store(self.db, settings.pg_ef_search)
        self.idempotency_store = SqlIdempotencyStore(self.db)
        self.galleries_store = SqlGalleryStore(self.db)
        self.persons_store = SqlPersonStore(self.db)
        self.tokens_store = SqlTokenStore(self.db)
        self.index_feed = index_feed(self.db)
        self.cameras_store = SqlCameraStore(self.db)  # and their health
        self.history_store = SqlHistoryStore(self.db)  # events: pages, counts, matches
        self.watchlists_store = SqlWatchListStore(self.db)
        self.webhooks_store = SqlWebhookStore(self.db)
        self.stats_store = SqlStatsStore(self.db)
        self.sync_store = SqlSyncStore(self.db)
        self.report_store = SqlReportStore(self.db)
        self.sessions_store = SessionStore(self.db)  # the console's logins
        self.tokens = TokenChecker(self.tokens_store)
        self.model = settings.embedding_model
        # vectors of self.model only (embeddings.py); one graph snapshot folder per model
        self.index = IndexRegistry(
            ann_min=settings.index_ann_min_faces, catchup=settings.index_ann_catchup,
            snapshot_dir=settings.data_dir / "index" / self.model, lock=self.db.lock)
        self.unusable_faces = 0  # faces whose landmarks could not place a face (skipped)
        self._unusable_log = RateLimitedLog(log)
        self.engine = shared_engine(settings.model_threads, settings.detector_threshold,
                                    self.model, settings.embed_max_batch)
        self._keys_since_prune = 0
        self._regen_seq = 0  # the last ``regenerated`` row applied to the index
        self._data_version = -1
        self.plugins = PluginHost()  # none; create_app loads the configured plugins (9.2)
        self.persons = person_match.Matcher(settings)
        person_store.migrate(self.db)
        self._log_seq = 0  # the last face_log row applied to the index (PostgreSQL)
        if self.db.dialect == "postgresql":
            self.faces_store.ensure_vector_index(self.model, self.index.dim)
        self.search_seconds: Observer = NULL_OBSERVER  # /identify's index search (/metrics)
        self._load_index()
        # facen shows self.model's vectors: another model's before, every cursor resyncs
        changes.follow_facen_model(self.db, self.model)
        self._prune_idempotency()
        self.prune_tombstones()

    def close(self) -> None:
        self.index.close()
        self.db.close()

    def _choose_model(self, cpu_has_bf16: Callable[[], bool]) -> model_choice.ModelChoice:
        try:
            choice = model_choice.resolve_embedding_model(self.db, self.configured_model,
                                                          cpu_has_bf16)
        except ValueError:
            self.db.close()
            raise
        if choice.record:
            choice = model_choice.record_choice(self.db, choice)
        log.info("embedding model %s (%s)", choice.model, choice.reason)
        return choice

    def _load_index(self) -> None:
        """Index every face's vector of ``self.model``. Faces without one (not regenerated
        yet) stop the start unless ``allow_partial``; then they are left out of searches."""
        t0 = time.monotonic()
        with self.db.lock:
            if self.db.dialect == "postgresql":  # before the faces: a later change is applied
                self._log_seq = self.index_feed.last_logged()
            self._regen_seq = last_change(self.db)
            self._data_version = self._db_data_version()
            n, missing = self.index.load(self.db.conn, VECTOR_SQL, {"m": self.model})
        if missing and not self.settings.allow_partial:
            self.index.close()
            self.db.close()
            raise ModelCoverageError(
                f"{missing} of {n + missing} faces have no {self.model} embedding: run "
                f"'fkvideo_backend regenerate --regenerate facens --embedding-model "
                f"{self.model}' first, or serve them partially with --allow-partial")
        if missing:
            log.warning("embedding model %s: %d of %d faces have no embedding yet and are "
                        "not searched (--allow-partial)", self.model, missing, n + missing)
        log.info("loaded %d face embeddings in %.2f s (model %s)", n, time.monotonic() - t0,
                 self.model)
        if not missing and self.configured_model != AUTO_MODEL:
            model_choice.record_configured(self.db, self.model)  # auto keeps it from now on
        with self.db.lock:
            self.index.open_graphs()  # HNSW graphs of large galleries: snapshot or background
        log.info("index ready in %.2f s", time.monotonic() - t0)
        if self.db.dialect == "postgresql":
            self.db.on_begin = self.catch_up

    def catch_up(self, conn: Any) -> int:
        """PostgreSQL, at the start of a write transaction (under every process's write
        lock): apply to the in-memory index the faces any process added, changed or deleted
        since the last call (``face_log``); returns how many faces were looked at."""
        rows = self.index_feed.logged_since(conn, self._log_seq)
        if not rows:
            return 0
        self._log_seq = int(rows[-1][0])
        changed = {int(r[1]): int(r[2]) for r in rows}
        now_rows = {r["id"]: r for r in
                    self.index_feed.vectors(conn, self.model, list(changed))}
        for face_id, user in changed.items():
            self._apply_face(face_id, user, now_rows.get(face_id))
        return len(changed)

    def _apply_face(self, face_id: int, user: int, row: Any) -> None:
        vec = None if row is None else vector_of(row["vec"])
        index = self.index(user)
        if face_id in index:
            if vec is not None and row["user_id"] == user:
                old_vec, cam, person = index.entry(face_id)
                if (cam, person) == (row["cam_id"], row["person_id"]) and \
                        np.array_equal(old_vec, vec):
                    return  # as indexed (this process's own change)
            index.remove(face_id)
        if vec is not None:
            self.index(row["user_id"]).add(face_id, vec, row["cam_id"], row["person_id"])

    def _db_data_version(self) -> int:
        """Changes when another process committed (SQLite); on PostgreSQL the last
        ``regenerated`` seq, the only outside change this looks for."""
        return self.index_feed.data_version()

    def refresh_regenerated(self) -> int:
        """Apply the vectors another process (``fkvideo_backend regenerate``) committed since
        the last call to the index; returns how many faces changed. Cheap when nothing did
        (one ``PRAGMA data_version``)."""
        with self.db.lock:
            if self.db.conn.in_transaction:
                return 0
            version = self._db_data_version()
            if version == self._data_version:
                return 0
            self._data_version = version
            rows = self.index_feed.regenerated_since(self.db.conn, self.model,
                                                     self._regen_seq)
            self._regen_seq = max([self._regen_seq, last_change(self.db)])
            for row in rows:
                index = self.index(row["user_id"])
                index.remove(row["id"])
                vec = vector_of(row["vec"])
                if vec is not None:
                    index.add(row["id"], vec, row["cam_id"], row["person_id"])
        if rows:
            log.info("applied %d regenerated %s embeddings", len(rows), self.model)
        return len(rows)

    def _prune_idempotency(self) -> None:
        try:
            with self.db.transaction() as conn:
                self.idempotency_store.forget_before(
                    conn, time.time() - self.settings.idempotency_ttl)
        except sqlite3.OperationalError as exc:  # e.g. a full disk: start anyway, prune later
            log.warning("could not forget old idempotency keys: %s", exc)

    def prune_tombstones(self) -> None:
        """Forget sync tombstones older than ``sync_tombstone_ttl`` (changes.py)."""
        self._tombstones_pruned = time.monotonic()
        try:
            changes.prune_tombstones(self.db, self.settings.sync_tombstone_ttl)
            if self.db.dialect == "postgresql":  # every process applies it within the hour
                with self.db.transaction() as conn:  # (each write transaction; this one too)
                    self.index_feed.forget_logged(conn, time.time() - FACE_LOG_TTL)
        except sqlite3.OperationalError as exc:  # e.g. a full disk: serve anyway, prune later
            log.warning("could not prune sync tombstones: %s", exc)

    def prune_tombstones_hourly(self) -> None:
        if time.monotonic() - self._tombstones_pruned >= TOMBSTONE_PRUNE_INTERVAL:
            self.prune_tombstones()

    # -- images and faces -----------------------------------------------------

    def decode_normalized(self, data: bytes, param: str) -> Photo:
        """A normalized face (``face0``...): at most ``max_normalized_size`` on a side."""
        s = self.settings
        return decode_plain_png(data, param, s.max_photo_bytes, s.max_normalized_size,
                                "max_normalized_size")

    def check_attrs_request(self, gender: bool, age: bool, emotions: bool) -> frozenset[str]:
        """The face attributes wanted; refuse gender/age without --gae. ``emotions`` is
        always accepted and wanted when it can be answered; otherwise the routes say why in
        the response's ``unavailable`` (:meth:`emotions_unavailable`)."""
        if (gender or age) and not self.settings.gae:
            raise bad_param("gender" if gender else "age", "gender/age recognition is "
                            "disabled; start the backend with --gae", True)
        emotions = emotions and self.emotions_unavailable() is None
        return frozenset(name for name, on in (("gender", gender), ("age", age),
                                               ("emotions", emotions)) if on)

    def emotions_unavailable(self) -> str | None:
        """Why emotions cannot be answered (--gae off, model not loadable), or None."""
        return emotions_unavailable(self.settings.gae, self.engine)

    def analyze_face(self, photo: Photo, face: FoundFace, want_attrs: frozenset[str]
                     ) -> NewFace | None:
        """One face aligned, embedded (and its attributes); None when its landmarks cannot
        place a face (counted, logged at most once a minute)."""
        try:
            aligned, emb = self.engine.embed(photo.image, face)
        except ValueError as exc:  # degenerate landmarks: one face, not the whole request
            self.unusable_faces += 1
            self._unusable_log.log(logging.WARNING, "unusable", "a face could not be aligned "
                                   "and was skipped (%d so far): %s", self.unusable_faces, exc)
            return None
        attrs = (self.engine.estimate_age_gender(photo.image, face.landmarks, aligned,
                                                 want_attrs, face.box) if want_attrs else {})
        return NewFace(face.box, aligned, emb, attrs)

    def analyze_aligned(self, images: list[bytes], boxes: list[Box] | None,
                        photo: Photo | None, want_attrs: frozenset[str]) -> list[NewFace]:
        """Faces uploaded already normalized (``face0``...): embedded as they are. Decoded
        one at a time, each kept only at the model's size."""
        if boxes and len(boxes) != len(images):
            raise bad_param("bbox", f"bbox has {len(boxes)} boxes for {len(images)} "
                            "normalized faces (face0, face1, ...)", len(boxes))
        out = []
        for i, data in enumerate(images):
            img = self.decode_normalized(data, f"face{i}")
            aligned = as_aligned_face(img.image)
            if boxes:
                box = boxes[i]
            else:
                w, h = photo.size if photo is not None else img.size
                box = (0.0, 0.0, float(w), float(h))
            png = png_as_uploaded(img, aligned)
            del img  # only the model-sized face is kept
            emb = self.engine.embed_aligned(aligned)
            attrs = (self.engine.estimate_age_gender(aligned, None, aligned, want_attrs)
                     if want_attrs else {})
            out.append(NewFace(box, aligned, emb, attrs, aligned_png=png))
        return out

    def faces_of_request(self, photo_bytes: bytes | None, face_images: list[bytes],
                         boxes: list[Box] | None, selector: str, want_attrs: frozenset[str],
                         photo_param: str = "photo") -> tuple[Photo | None, list[NewFace]]:
        if face_images:  # the photo is only stored, with thumbnails: decoded for those
            photo = None if photo_bytes is None else self._photo_for_thumbnails(
                photo_bytes, photo_param, boxes, len(face_images))
            return photo, self.analyze_aligned(face_images, boxes, photo, want_attrs)
        if photo_bytes is None:
            raise bad_param(photo_param, f"{photo_param} is required (an uploaded image, "
                            "or an http(s) URL with --fetch-urls)")
        # a large JPEG decoded at reduced scale (probe.py); a full-scale decode answers the
        # same within tolerance, exactly under 2560 px (tests/backend/full_scale.py)
        return enroll_faces(self, photo_bytes, boxes, selector, want_attrs, photo_param)

    def _photo_for_thumbnails(self, data: bytes, param: str, boxes: list[Box] | None,
                              faces: int) -> Photo:
        """The photo of normalized faces, for their thumbnails: validated only (every byte
        decoded, no pixel kept) when its one face's thumbnail is made on first read
        (``thumbs.py``: a detector's post), else decoded for the thumbnails now."""
        s = self.settings
        if s.thumbnails_on_read and faces == 1 and boxes:
            return validate_photo(data, param, s.max_photo_bytes, s.max_size)
        return decode_for_thumbnails(data, param, s.max_photo_bytes, s.max_size, boxes)

    @cached_property
    def thumbnail_keys(self) -> tuple[bytes, ...]:
        """The keys of the names of thumbnails made on read (thumbs.py; the first signs)."""
        return thumbs.load_keys(self.settings.data_dir)

    # -- enrollment (POST /face) -----------------------------------------------

    def replay(self, user: int, key: str) -> list[int] | None:
        """The face ids stored by an earlier request with this Idempotency-Key, if any."""
        return self.idempotency_store.earlier(user, key)

    def add_faces(self, user: int, post: FacePost) -> list[int]:
        """Detect/embed, then store every face atomically; returns the new face ids."""
        self.check_galleries(user, post.galleries)
        self.refresh_regenerated()  # person identification searches the index
        photo, faces = self.faces_of_request(post.photo, post.face_images, post.boxes,
                                             post.mf_selector, post.want_attrs)
        return self.store_faces(user, post, photo, faces)

    def store_faces(self, user: int, post: FacePost, photo: Photo | None,
                    faces: list[NewFace]) -> list[int]:
        """Store analyzed faces: their images, then their rows in one transaction (with the
        Idempotency-Key); all of it or, on any failure, none of it."""
        galleries = self.check_galleries(user, post.galleries)
        self.plugins.preprocess(user, post, faces)  # may refuse (ApiError) or annotate
        ts = post.timestamp or now()
        written: dict[str, Any] = {"names": []}
        try:
            self._write_images(user, post, photo, faces, written)
            with self.db.transaction() as conn:
                if post.idempotency_key:
                    earlier = self.replay(user, post.idempotency_key)
                    if earlier is not None:
                        raise _Replayed(earlier)
                ids = self._insert_faces(conn, user, post, faces, written, galleries, ts)
                if post.idempotency_key:
                    self._remember(conn, user, post.idempotency_key, ids)
        except _Replayed as replayed:
            self._delete_written(written)
            return replayed.ids
        except BaseException:
            self._delete_written(written)
            raise
        self.plugins.face_stored(user, post, faces, ids)  # committed: queued, never waits
        return ids

    def _remember(self, conn: sqlite3.Connection, user: int, key: str, ids: list[int]) -> None:
        self.idempotency_store.remember(conn, user, key, ids, time.time())
        self.db.on_rollback(partial(setattr, self, "_keys_since_prune", self._keys_since_prune))
        self._keys_since_prune += 1
        if self._keys_since_prune >= 1000:  # forget keys older than idempotency_ttl
            self.idempotency_store.forget_before(conn,
                                                 time.time() - self.settings.idempotency_ttl)
            self._keys_since_prune = 0

    def _write_images(self, user: int, post: FacePost, photo: Photo | None,
                      faces: list[NewFace], written: dict[str, Any]) -> None:
        """Store the photo once and each face's thumbnail and normalized image. Every file
        is listed in ``written["names"]`` before it is written, so a failure part way
        (a full disk) leaves nothing behind once ``_delete_written`` ran. The files are
        written together (``FileStore.write_all``: their directory fsynced once)."""
        names: list[str] = written["names"]
        files: list[tuple[str, bytes]] = []

        def write(kind: str, ext: str, data: bytes) -> str:
            rel = self.files.new_name(user, kind, ext)
            names.append(rel)
            files.append((rel, data))
            return rel

        if photo is not None:
            written["photo"] = write("photo", photo.ext, photo.data)
            written["photo_hash"] = photo.sha256
        else:  # only normalized faces were posted: the first one stands for the photo
            written["photo"] = write("photo", "png", faces[0].normalized_png())
            written["photo_hash"] = content_hash(post.face_images[0])
        per_face = written["faces"] = []
        for face in faces:
            thumb_rel = self._thumbnail_on_read(photo, written["photo"], face.box)
            if thumb_rel is None:
                thumb = (photo.thumbnail(face.box) if photo is not None else
                         thumbnail(face.aligned, (0, 0, *face.aligned.shape[1::-1])))
                thumb_rel = write("thumb", "jpeg", encode(thumb, "jpeg", THUMBNAIL_QUALITY))
            norm_rel = write("norm", "png", face.normalized_png())
            per_face.append((thumb_rel, norm_rel))
        self.files.write_all(files)

    def _thumbnail_on_read(self, photo: Photo | None, photo_rel: str, box: Box) -> str | None:
        """The signed name of a thumbnail made on first read when ``photo`` was only
        validated (:meth:`_photo_for_thumbnails`), else None (it is made now)."""
        if photo is None or photo.image is not None or photo.reduced is not None:
            return None
        name = thumbs.lazy_name(self.thumbnail_keys[0], photo_rel, box)
        if name is None:
            raise ValueError(f"the stored photo's name {photo_rel!r} cannot be signed")
        return name

    def _delete_written(self, written: dict[str, Any]) -> None:
        for rel in written["names"]:
            self.files.delete(rel)

    def _insert_faces(self, conn: sqlite3.Connection, user: int, post: FacePost,
                      faces: list[NewFace], written: dict[str, Any], galleries: list[str],
                      ts: datetime) -> list[int]:
        index = self.index(user)
        person_log = person_store.IndexLog(index, self.db)  # person changes to older faces
        # detectorParams (track, quality) describe one face: not the faces of a group photo
        stream_params = post.detector_params if len(faces) == 1 else None
        ids: list[int] = []
        for face, (thumb, norm) in zip(faces, written["faces"], strict=True):
            a = self.persons.prepare(conn, index, user, face.embedding, face.box, post.meta,
                                     post.cam_id, stream_params, ts.timestamp())
            face_id = self.faces_store.insert(conn, {
                "user_id": user, "meta": a.meta, "person_id": a.person, "cam_id": post.cam_id,
                "timestamp": iso(ts), "ts": ts.timestamp(), "day": ts.date().isoformat(),
                **face_box_json(face.box), "photo": written["photo"],
                "photo_hash": written["photo_hash"], "thumbnail": thumb, "normalized": norm,
                "gender": face.attrs.get("gender"),
                "gender_confidence": face.attrs.get("gender_confidence"),
                "age": face.attrs.get("age"),
                "emotions": emotions_json(face.attrs),
                "detector_params": (None if post.detector_params is None
                                    else json.dumps(post.detector_params)),
                "extra": extra_json(post.extra, face.extra),
                "embedding": np.asarray(face.embedding, np.float32).tobytes(),
                "quality": a.quality, "track": a.track, "model": self.model,
            })
            self.faces_store.link(conn, user, face_id, galleries)
            changes.record(conn, user, face_id, (), [DEFAULT_GALLERY, *galleries])
            self._index_add(user, face_id, face.embedding, post.cam_id, a.person)
            ids.append(face_id)
            person = self.persons.settle(conn, person_log, user, face_id, a, post.cam_id,
                                         ts.timestamp())
            if person is not None and post.cam_id is not None:
                self._update_friend(conn, user, face_id, person, post.cam_id, ts)
        return ids

    # -- the index follows the database (see the module docstring) --------------

    def _index_add(self, user: int, face_id: int, vector: np.ndarray, cam_id: str | None,
                   person: int | None) -> None:
        index = self.index(user)
        if face_id in index:  # SQLite never reuses an id (AUTOINCREMENT): a stale entry
            log.error("face %d of user %d was indexed but not stored (a lost rollback); "
                      "replacing it", face_id, user)
            index.remove(face_id)
        index.add(face_id, vector, cam_id, person)
        self.db.on_rollback(partial(index.remove, face_id))

    def _index_remove(self, user: int, face_id: int) -> None:
        index = self.index(user)
        if face_id in index:
            entry = index.entry(face_id)
            index.remove(face_id)
            self.db.on_rollback(partial(index.add, face_id, *entry))

    def _update_friend(self, conn: sqlite3.Connection, user: int, face_id: int, person: int,
                       cam_id: str, ts: datetime) -> None:
        """8.3: a friend has been seen on >= friend_count distinct days by this camera within
        [ts - friend_interval, ts] (ts: the event's own timestamp)."""
        s = self.settings
        days = self.faces_store.camera_days(conn, user, person, cam_id,
                                            ts.timestamp() - s.friend_interval, ts.timestamp())
        if days >= s.friend_count:
            self.faces_store.mark_friend(conn, face_id)

    # -- galleries ------------------------------------------------------------

    def gallery_names(self, user: int) -> list[str]:
        return [DEFAULT_GALLERY, *self.galleries_store.names(user)]

    def check_galleries(self, user: int, names: list[str], param: str = "galleries"
                        ) -> list[str]:
        """Custom gallery names that exist (``default`` is implied and dropped)."""
        if not names:  # nothing to look up (a detector's post): no query
            return []
        out = []
        existing = set(self.gallery_names(user))
        for name in names:
            check_gallery_name(name, param)
            if name not in existing:
                raise bad_param(param, f"gallery {name!r} does not exist; create it with "
                                f"POST /v1/galleries/{name}", name)
            if name != DEFAULT_GALLERY and name not in out:
                out.append(name)
        return out

    def require_gallery(self, user: int, name: str) -> None:
        check_gallery_name(name)
        if name != DEFAULT_GALLERY and not self.galleries_store.exists(user, name):
            raise ApiError(404, "NOT_FOUND", f"gallery {name!r} not found", param="gallery",
                           value=name)

    def create_gallery(self, user: int, name: str) -> None:
        check_gallery_name(name)
        with self.db.transaction() as conn:
            if name == DEFAULT_GALLERY or self.galleries_store.exists(user, name, conn):
                raise bad_param("gallery", f"gallery {name!r} already exists", name)
            self.galleries_store.add(conn, user, name)

    def delete_gallery(self, user: int, name: str) -> None:
        """Delete a custom gallery and all faces in it."""
        if name == DEFAULT_GALLERY:
            raise bad_param("gallery", "the default gallery cannot be deleted", name)
        self.require_gallery(user, name)
        with self.db.transaction() as conn:  # the faces and the gallery, or neither
            ids = [int(i) for i in self.gallery_face_ids(user, name)]
            rows = self._delete_face_rows(conn, user, ids)
            self.galleries_store.remove(conn, user, name)
        self._delete_face_files(rows)

    def gallery_face_ids(self, user: int, name: str) -> np.ndarray:
        return self.galleries_store.face_ids(user, name)

    # -- reading, updating and deleting faces -------------------------------

    def face_rows(self, user: int, ids: list[int]) -> list[sqlite3.Row]:
        """Rows for ``ids`` in the given order (missing ids are skipped)."""
        return self.faces_store.rows(user, ids) if ids else []

    def face_row(self, user: int, face_id: int) -> sqlite3.Row:
        rows = self.face_rows(user, [face_id])
        if not rows:
            raise not_found("face", face_id)
        return rows[0]

    def galleries_of(self, ids: list[int]) -> dict[int, list[str]]:
        return self.faces_store.galleries_of(ids)

    def update_face(self, user: int, face_id: int, meta: str | None, person: Any,
                    galleries: dict[str, list[str]] | None, attributes: Any = _UNSET,
                    image: FacePost | None = None) -> None:
        """PUT /face/id: meta, person_id (UNSET = leave, "" or null = clear, "new" = a new
        person, else an existing person of this token), galleries ops,
        ``attributes`` (a dict replaces them, None clears them), ``image``: a new photo
        (or normalized ``face0``) for the face, which keeps its id."""
        old = self.face_row(user, face_id)
        new = self._new_image(user, old, image) if image is not None else None
        try:
            with person_store.person_transaction(self.db, self.index(user)) as (conn, log_):
                before = changes.galleries_now(conn, face_id)
                self._update_face_row(conn, user, face_id, meta, person, galleries,
                                      attributes, new, log_)
                changes.record(conn, user, face_id, before, changes.galleries_now(conn, face_id))
        except BaseException:
            if new is not None:
                self._delete_written(new[1])
            raise
        if new is not None:
            self._delete_face_files([old])

    def _new_image(self, user: int, old: sqlite3.Row, post: FacePost
                   ) -> tuple[NewFace, dict[str, Any]]:
        """The one face of a replacement image, analyzed, its images written."""
        photo, faces = self.faces_of_request(post.photo, post.face_images, post.boxes,
                                             post.mf_selector, post.want_attrs)
        if len(faces) != 1:
            param = "face0" if post.face_images else "photo"
            raise bad_param(param, f"a face's image is replaced by exactly one face; found "
                            f"{len(faces)} (use bbox or mf_selector=biggest)", len(faces))
        written: dict[str, Any] = {"names": []}
        try:
            self._write_images(user, post, photo, faces, written)
        except BaseException:
            self._delete_written(written)
            raise
        return faces[0], written

    def _replace_image(self, conn: sqlite3.Connection, user: int, face_id: int,
                       face: NewFace, written: dict[str, Any]) -> None:
        thumb, norm = written["faces"][0]
        self.faces_store.update(conn, user, face_id, {
            **face_box_json(face.box), "photo": written["photo"],
            "photo_hash": written["photo_hash"], "thumbnail": thumb, "normalized": norm,
            "gender": face.attrs.get("gender"),
            "gender_confidence": face.attrs.get("gender_confidence"),
            "age": face.attrs.get("age"),
            "emotions": emotions_json(face.attrs),
            "embedding": np.asarray(face.embedding, np.float32).tobytes(),
        })
        row = self.faces_store.place(conn, face_id)
        self._index_remove(user, face_id)
        self._index_add(user, face_id, face.embedding, row["cam_id"], row["person_id"])

    def _update_face_row(self, conn: sqlite3.Connection, user: int, face_id: int,
                         meta: str | None, person: Any, galleries: dict[str, list[str]] | None,
                         attributes: Any, new: tuple[NewFace, dict[str, Any]] | None,
                         person_log: person_store.IndexLog) -> None:
        if new is not None:
            self._replace_image(conn, user, face_id, *new)
        values: dict[str, Any] = {}
        if attributes is not _UNSET:
            values["extra"] = json.dumps(attributes) if attributes else None
        if meta is not None:
            values["meta"] = meta
        if values:
            self.faces_store.update(conn, user, face_id, values)
        if person is not _UNSET:  # an operator's move: recorded, never undone by matching
            target = person_store.target_person(conn, user, person)
            person_store.operator_move(conn, person_log, user, face_id, target)
        if galleries is not None:
            self._update_galleries(conn, user, face_id, galleries)

    def _update_galleries(self, conn: sqlite3.Connection, user: int, face_id: int,
                          ops: dict[str, list[str]]) -> None:
        for op, names in ops.items():
            if op == "del":
                if DEFAULT_GALLERY in names:
                    raise bad_param("galleries", "faces cannot be removed from the default "
                                    "gallery", names)
                self.faces_store.unlink(conn, face_id, names)
                continue
            valid = self.check_galleries(user, names)
            if op == "set":
                self.faces_store.unlink(conn, face_id)
            self.faces_store.link(conn, user, face_id, valid, keep_existing=True)

    def delete_faces(self, user: int, ids: list[int]) -> int:
        """Delete the user's faces among ``ids``; returns how many there were."""
        if not self.face_rows(user, ids):
            return 0
        with self.db.transaction() as conn:
            rows = self._delete_face_rows(conn, user, ids)
        self._delete_face_files(rows)
        return len(rows)

    def _delete_face_rows(self, conn: sqlite3.Connection, user: int, ids: list[int]
                          ) -> list[sqlite3.Row]:
        """In a transaction: delete the faces (rows and index entries); their rows."""
        rows = self.face_rows(user, ids)
        found = [r["id"] for r in rows]
        changes.record_deleted(conn, user, found)
        self.faces_store.delete(conn, found)
        for face_id in found:
            self._index_remove(user, face_id)
        return rows

    def _delete_face_files(self, rows: list[sqlite3.Row]) -> None:
        """After the delete committed: the images no remaining face refers to; the photo
        before the thumbnail (a thumbnail made on read meanwhile sees its photo gone or is
        removed here: ``thumbs.make_on_read``)."""
        for r in rows:
            if not self.faces_store.photo_in_use(r["photo"]):
                self.files.delete(r["photo"])
            self.files.delete(r["thumbnail"])
            self.files.delete(r["normalized"])

    # -- search ---------------------------------------------------------------

    def identify(self, user: int, faces: list[NewFace], n: int, threshold: float | None,
                 gallery: str | None = None) -> list[list[tuple[int, float]]]:
        """For each face, up to ``n`` (face_id, confidence) at or above ``threshold``."""
        limit = self.settings.max_identify_limit
        if limit:
            n = min(n, limit)
        if self.db.dialect == "postgresql":  # in the database: every process sees every face
            return [self._identify_in_db(user, face, n, threshold, gallery) for face in faces]
        self.refresh_regenerated()
        with self.db.lock:
            index = self.index(user)
            mask = None
            if gallery not in (None, DEFAULT_GALLERY):
                mask = index.mask(face_ids=self.gallery_face_ids(user, gallery))
            out = []
            for face in faces:
                t0 = time.perf_counter()
                hits = index.search(face.embedding, n, mask)
                self.search_seconds.observe(time.perf_counter() - t0)
                conf = [(fid, float(confidence_from_cosine(cos, self.model)))
                        for fid, cos in hits]
                out.append([(fid, c) for fid, c in conf
                            if threshold is None or c >= threshold])
        return out


    def _identify_in_db(self, user: int, face: NewFace, n: int, threshold: float | None,
                        gallery: str | None) -> list[tuple[int, float]]:
        """``identify`` of one face by pgvector (``pgsearch.nearest``: the HNSW cosine index
        of the model, widened or exact when a filter leaves fewer than ``n`` hits): the
        user's faces whose vector of ``self.model`` is in ``faces.vec`` or
        ``embeddings.vec``."""
        t0 = time.perf_counter()
        rows = self.faces_store.nearest(user, self.model, self.index.dim, face.embedding,
                                        n, gallery)
        self.search_seconds.observe(time.perf_counter() - t0)
        out = []
        for face_id, distance in rows:
            c = float(confidence_from_cosine(1.0 - distance, self.model))
            if threshold is None or c >= threshold:
                out.append((face_id, c))
        return out


class _Replayed(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, ids: list[int]) -> None:
        super().__init__("idempotent replay")
        self.ids = ids
