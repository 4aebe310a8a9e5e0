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
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np

from videodetector.backend.auth import TokenChecker
from videodetector.backend.confidence import confidence_from_cosine
from videodetector.backend.engine import Box, FoundFace, shared_engine
from videodetector.backend.errors import ApiError, bad_param, not_found
from videodetector.backend.imaging import (
    Photo,
    as_aligned_face,
    content_hash,
    decode_photo,
    thumbnail,
)
from videodetector.backend.index import IndexRegistry
from videodetector.backend.params import INT64_MAX, exact_int
from videodetector.backend.settings import Settings
from videodetector.backend.storage import Database, FileStore, insert, placeholders, update
from videodetector.backend.timeutil import iso, now
from videodetector.images import encode

log = logging.getLogger(__name__)

DEFAULT_GALLERY = "default"
GALLERY_RE = re.compile(r"^[a-zA-Z0-9_-]{1,48}$")


@dataclass
class NewFace:
    """A face ready to store or search: where it is, its normalized image and embedding."""

    box: Box
    aligned: np.ndarray
    embedding: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)  # gender, gender_confidence, age


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


def face_box_json(box: Box) -> dict[str, int]:
    return {"x1": round(box[0]), "x2": round(box[2]), "y1": round(box[1]), "y2": round(box[3])}


def box_key(box: Box) -> str:
    """The identify result key: ``"[x1, y1, x2, y2]"``."""
    return json.dumps([round(v) for v in box])


def check_gallery_name(name: str, param: str = "gallery") -> str:
    if not isinstance(name, str) or not GALLERY_RE.match(name):
        raise bad_param(param, f"gallery names are 1-48 characters of [a-zA-Z0-9_-], "
                        f"got {name!r}", name)
    return name


class Backend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.data_dir / "backend.sqlite3")
        self.files = FileStore(settings.data_dir / "uploads")
        self.files.remove_temporaries()
        self.tokens = TokenChecker(self.db)
        self.index = IndexRegistry(
            ann_min=settings.index_ann_min_faces, catchup=settings.index_ann_catchup,
            snapshot_dir=settings.data_dir / "index", lock=self.db.lock)
        self.engine = shared_engine(settings.model_threads, settings.detector_threshold)
        self._keys_since_prune = 0
        self._load_index()
        self._prune_idempotency()

    def close(self) -> None:
        self.index.close()
        self.db.close()

    def _load_index(self) -> None:
        """The embeddings from the database, then each large gallery's HNSW graph from its
        snapshot (caught up with the database) or built in the background (index.py)."""
        t0 = time.monotonic()
        with self.db.lock:
            n = self.index.load(self.db.conn)
            log.info("loaded %d face embeddings in %.2f s", n, time.monotonic() - t0)
            self.index.open_graphs()
        log.info("index ready in %.2f s", time.monotonic() - t0)

    def _prune_idempotency(self) -> None:
        try:
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM idempotency WHERE created < ?",
                             (time.time() - self.settings.idempotency_ttl,))
        except sqlite3.OperationalError as exc:  # e.g. a full disk: start anyway, prune later
            log.warning("could not forget old idempotency keys: %s", exc)

    # -- images and faces -----------------------------------------------------

    def decode(self, data: bytes, param: str) -> Photo:
        s = self.settings
        return decode_photo(data, param, s.max_photo_bytes, s.max_size)

    def find_faces(self, photo: Photo, boxes: list[Box] | None, selector: str,
                   photo_param: str = "photo", bbox_param: str = "bbox") -> list[FoundFace]:
        """Faces on a photo: in the given boxes, or detected and chosen by ``mf_selector``."""
        if boxes:
            return [self.engine.locate(photo.image, b, bbox_param) for b in boxes]
        found = self.engine.detect(photo.image, self.settings.min_face_size)
        if not found:
            raise bad_param(photo_param, f"No faces found on {photo_param}")
        found.sort(key=lambda f: f.area, reverse=True)
        if selector == "reject" and len(found) > 1:
            raise bad_param("mf_selector", f"Too many faces: {len(found)}", "reject",
                            faces=[face_box_json(f.box) for f in found])
        return found if selector == "all" else found[:1]

    def check_attrs_request(self, gender: bool, age: bool, emotions: bool) -> frozenset[str]:
        """The face attributes wanted; refuse what this backend cannot answer."""
        if emotions:
            raise bad_param("emotions", "emotion recognition is not available: this backend "
                            "has no emotion model; do not send emotions=true", True)
        if (gender or age) and not self.settings.gae:
            raise bad_param("gender" if gender else "age", "gender/age recognition is "
                            "disabled; start the backend with --gae", True)
        return frozenset(name for name, on in (("gender", gender), ("age", age)) if on)

    def analyze(self, photo: Photo, found: list[FoundFace], want_attrs: frozenset[str]
                ) -> list[NewFace]:
        out = []
        for face in found:
            aligned, emb = self.engine.embed(photo.image, face)
            attrs = (self.engine.estimate_age_gender(photo.image, face.landmarks, aligned,
                                                     want_attrs) if want_attrs else {})
            out.append(NewFace(face.box, aligned, emb, attrs))
        return out

    def analyze_aligned(self, images: list[Photo], boxes: list[Box] | None,
                        photo: Photo | None, want_attrs: frozenset[str]) -> list[NewFace]:
        """Faces uploaded already normalized (``face0``...): embedded as they are."""
        if boxes and len(boxes) != len(images):
            raise bad_param("bbox", f"bbox has {len(boxes)} boxes for {len(images)} "
                            "normalized faces (face0, face1, ...)", len(boxes))
        out = []
        for i, img in enumerate(images):
            aligned = as_aligned_face(img.image)
            if boxes:
                box = boxes[i]
            else:
                w, h = photo.size if photo is not None else img.size
                box = (0.0, 0.0, float(w), float(h))
            emb = self.engine.embed_aligned(aligned)
            attrs = (self.engine.estimate_age_gender(aligned, None, aligned, want_attrs)
                     if want_attrs else {})
            out.append(NewFace(box, aligned, emb, attrs))
        return out

    def faces_of_request(self, photo_bytes: bytes | None, face_images: list[bytes],
                         boxes: list[Box] | None, selector: str, want_attrs: frozenset[str],
                         photo_param: str = "photo") -> tuple[Photo | None, list[NewFace]]:
        photo = self.decode(photo_bytes, photo_param) if photo_bytes is not None else None
        if face_images:
            imgs = [self.decode(d, f"face{i}") for i, d in enumerate(face_images)]
            return photo, self.analyze_aligned(imgs, boxes, photo, want_attrs)
        if photo is None:
            raise bad_param(photo_param, f"{photo_param} is required (an uploaded image, "
                            "or an http(s) URL with --fetch-urls)")
        return photo, self.analyze(photo, self.find_faces(photo, boxes, selector, photo_param),
                                   want_attrs)

    # -- enrollment (POST /face) -----------------------------------------------

    def replay(self, user: int, key: str) -> list[int] | None:
        """The face ids stored by an earlier request with this Idempotency-Key, if any."""
        text = self.db.scalar("SELECT face_ids FROM idempotency WHERE user_id = ? AND key = ?",
                              (user, key))
        return None if text is None else json.loads(text)

    def add_faces(self, user: int, post: FacePost) -> list[int]:
        """Detect/embed, then store every face atomically; returns the new face ids."""
        self.check_galleries(user, post.galleries)
        photo, faces = self.faces_of_request(post.photo, post.face_images, post.boxes,
                                             post.mf_selector, post.want_attrs)
        return self.store_faces(user, post, photo, faces)

    def store_faces(self, user: int, post: FacePost, photo: Photo | None,
                    faces: list[NewFace]) -> list[int]:
        """Store analyzed faces: their images, then their rows in one transaction (with the
        Idempotency-Key); all of it or, on any failure, none of it."""
        galleries = self.check_galleries(user, post.galleries)
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
        return ids

    def _remember(self, conn: sqlite3.Connection, user: int, key: str, ids: list[int]) -> None:
        insert(conn, "idempotency", {"user_id": user, "key": key, "face_ids": json.dumps(ids),
                                     "created": time.time()})
        self.db.on_rollback(partial(setattr, self, "_keys_since_prune", self._keys_since_prune))
        self._keys_since_prune += 1
        if self._keys_since_prune >= 1000:  # forget keys older than idempotency_ttl
            conn.execute("DELETE FROM idempotency WHERE created < ?",
                         (time.time() - self.settings.idempotency_ttl,))
            self._keys_since_prune = 0

    def _write_images(self, user: int, post: FacePost, photo: Photo | None,
                      faces: list[NewFace], written: dict[str, Any]) -> None:
        """Store the photo once and each face's thumbnail and normalized image. Every file
        is listed in ``written["names"]`` before it is written, so a failure part way
        (a full disk) leaves nothing behind once ``_delete_written`` ran."""
        names: list[str] = written["names"]

        def write(kind: str, ext: str, data: bytes) -> str:
            rel = self.files.new_name(user, kind, ext)
            names.append(rel)
            self.files.write(rel, data)
            return rel

        if photo is not None:
            written["photo"] = write("photo", photo.ext, photo.data)
            written["photo_hash"] = photo.sha256
        else:  # only normalized faces were posted: the first one stands for the photo
            written["photo"] = write("photo", "png", encode(faces[0].aligned, "png"))
            written["photo_hash"] = content_hash(post.face_images[0])
        per_face = written["faces"] = []
        for face in faces:
            source = photo.image if photo is not None else face.aligned
            box = face.box if photo is not None else (0, 0, *face.aligned.shape[1::-1])
            thumb_rel = write("thumb", "jpeg", encode(thumbnail(source, box), "jpeg", 85))
            norm_rel = write("norm", "png", encode(face.aligned, "png"))
            per_face.append((thumb_rel, norm_rel))

    def _delete_written(self, written: dict[str, Any]) -> None:
        for rel in written["names"]:
            self.files.delete(rel)

    def _insert_faces(self, conn: sqlite3.Connection, user: int, post: FacePost,
                      faces: list[NewFace], written: dict[str, Any], galleries: list[str],
                      ts: datetime) -> list[int]:
        ids: list[int] = []
        for face, (thumb, norm) in zip(faces, written["faces"], strict=True):
            meta, person = post.meta, None
            if self.settings.person_identify:
                person, meta = self._assign_person(conn, user, face, post.cam_id, meta)
            face_id = insert(conn, "faces", {
                "user_id": user, "meta": meta, "person_id": person, "cam_id": post.cam_id,
                "timestamp": iso(ts), "ts": ts.timestamp(), "day": ts.date().isoformat(),
                **face_box_json(face.box), "photo": written["photo"],
                "photo_hash": written["photo_hash"], "thumbnail": thumb, "normalized": norm,
                "gender": face.attrs.get("gender"),
                "gender_confidence": face.attrs.get("gender_confidence"),
                "age": face.attrs.get("age"),
                "detector_params": (None if post.detector_params is None
                                    else json.dumps(post.detector_params)),
                "extra": json.dumps(post.extra) if post.extra else None,
                "embedding": np.asarray(face.embedding, np.float32).tobytes(),
            })
            for g in galleries:
                insert(conn, "face_galleries", {"face_id": face_id, "user_id": user,
                                                "gallery": g})
            if person is not None and post.cam_id is not None:
                self._update_friend(conn, user, face_id, person, post.cam_id, ts)
            self._index_add(user, face_id, face.embedding, post.cam_id, person)
            ids.append(face_id)
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

    def _index_set_person(self, user: int, face_id: int, person: int | None) -> None:
        index = self.index(user)
        old = index.person_of(face_id)
        index.set_person(face_id, person)
        self.db.on_rollback(partial(index.set_person, face_id, old))

    def _assign_person(self, conn: sqlite3.Connection, user: int, face: NewFace,
                       cam_id: str | None, meta: str) -> tuple[int, str]:
        """8.2: join the person of the most similar face (same camera unless global) at or
        above person_identify_threshold, inheriting its meta; else start a new person."""
        s = self.settings
        index = self.index(user)
        mask = index.mask(cam_id=cam_id, any_cam=s.person_identify_global, with_person=True)
        hits = index.search(face.embedding, 1, mask)
        if hits and float(confidence_from_cosine(hits[0][1])) >= s.person_identify_threshold:
            person = index.person_of(hits[0][0])
            if person is not None:
                if not meta:
                    meta = conn.execute("SELECT meta FROM faces WHERE id = ?",
                                        (hits[0][0],)).fetchone()[0]
                return person, meta
        person = insert(conn, "persons", {"user_id": user, "meta": meta, "created": iso(now())})
        return person, meta

    def _update_friend(self, conn: sqlite3.Connection, user: int, face_id: int, person: int,
                       cam_id: str, ts: datetime) -> None:
        """8.3: a friend has been seen on >= friend_count distinct days by this camera within
        [ts - friend_interval, ts] (ts: the event's own timestamp)."""
        s = self.settings
        days = conn.execute(
            "SELECT COUNT(DISTINCT day) FROM faces WHERE user_id = ? AND person_id = ? "
            "AND cam_id = ? AND ts BETWEEN ? AND ?",
            (user, person, cam_id, ts.timestamp() - s.friend_interval, ts.timestamp()),
        ).fetchone()[0]
        if days >= s.friend_count:
            conn.execute("UPDATE faces SET friend = 1 WHERE id = ?", (face_id,))

    # -- galleries ------------------------------------------------------------

    def gallery_names(self, user: int) -> list[str]:
        rows = self.db.rows("SELECT name FROM galleries WHERE user_id = ? ORDER BY name", (user,))
        return [DEFAULT_GALLERY] + [r[0] for r in rows]

    def check_galleries(self, user: int, names: list[str], param: str = "galleries"
                        ) -> list[str]:
        """Custom gallery names that exist (``default`` is implied and dropped)."""
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
        if name != DEFAULT_GALLERY and self.db.row(
                "SELECT 1 FROM galleries WHERE user_id = ? AND name = ?", (user, name)) is None:
            raise ApiError(404, "NOT_FOUND", f"gallery {name!r} not found", param="gallery",
                           value=name)

    def create_gallery(self, user: int, name: str) -> None:
        check_gallery_name(name)
        with self.db.transaction() as conn:
            if name == DEFAULT_GALLERY or conn.execute(
                    "SELECT 1 FROM galleries WHERE user_id = ? AND name = ?",
                    (user, name)).fetchone():
                raise bad_param("gallery", f"gallery {name!r} already exists", name)
            insert(conn, "galleries", {"user_id": user, "name": name, "created": iso(now())})

    def delete_gallery(self, user: int, name: str) -> None:
        """Delete a custom gallery and all faces in it."""
        if name == DEFAULT_GALLERY:
            raise bad_param("gallery", "the default gallery cannot be deleted", name)
        self.require_gallery(user, name)
        with self.db.transaction() as conn:  # the faces and the gallery, or neither
            ids = [int(i) for i in self.gallery_face_ids(user, name)]
            rows = self._delete_face_rows(conn, user, ids)
            conn.execute("DELETE FROM galleries WHERE user_id = ? AND name = ?", (user, name))
        self._delete_face_files(rows)

    def gallery_face_ids(self, user: int, name: str) -> np.ndarray:
        rows = self.db.rows("SELECT face_id FROM face_galleries WHERE user_id = ? AND "
                            "gallery = ?", (user, name))
        return np.array([r[0] for r in rows], np.int64)

    # -- reading, updating and deleting faces -------------------------------

    def face_rows(self, user: int, ids: list[int]) -> list[sqlite3.Row]:
        """Rows for ``ids`` in the given order (missing ids are skipped)."""
        if not ids:
            return []
        rows = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for r in self.db.rows(f"SELECT * FROM faces WHERE user_id = ? AND id IN "
                                  f"({placeholders(len(chunk))})", (user, *chunk)):
                rows[r["id"]] = r
        return [rows[i] for i in ids if i in rows]

    def face_row(self, user: int, face_id: int) -> sqlite3.Row:
        rows = self.face_rows(user, [face_id])
        if not rows:
            raise not_found("face", face_id)
        return rows[0]

    def galleries_of(self, ids: list[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {i: [DEFAULT_GALLERY] for i in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for r in self.db.rows(f"SELECT face_id, gallery FROM face_galleries WHERE face_id "
                                  f"IN ({placeholders(len(chunk))}) ORDER BY gallery", chunk):
                out[r[0]].append(r[1])
        return out

    def update_face(self, user: int, face_id: int, meta: str | None, person: Any,
                    galleries: dict[str, list[str]] | None) -> None:
        """PUT /face/id: meta, person_id (None = leave, "" or null = clear), galleries ops."""
        self.face_row(user, face_id)
        with self.db.transaction() as conn:
            values: dict[str, Any] = {}
            if meta is not None:
                values["meta"] = meta
            if person is not _UNSET:
                values["person_id"] = self._own_person(conn, user, person)
            update(conn, "faces", values, "id = ? AND user_id = ?", (face_id, user))
            if galleries is not None:
                self._update_galleries(conn, user, face_id, galleries)
            if "person_id" in values:
                self._index_set_person(user, face_id, values["person_id"])

    def _own_person(self, conn: sqlite3.Connection, user: int, person: Any) -> int | None:
        if person is None or person == "":
            return None
        pid = exact_int(person)
        if pid is None or not 0 < pid <= INT64_MAX:
            raise bad_param("person_id", "person_id must be a positive integer", person)
        owner = conn.execute("SELECT user_id FROM persons WHERE id = ?", (pid,)).fetchone()
        if owner is None:
            insert(conn, "persons", {"id": pid, "user_id": user, "meta": "",
                                     "created": iso(now())})
        elif owner[0] != user:
            raise bad_param("person_id", f"person_id {pid} is not available", person)
        return pid

    def _update_galleries(self, conn: sqlite3.Connection, user: int, face_id: int,
                          ops: dict[str, list[str]]) -> None:
        for op, names in ops.items():
            if op == "del":
                if DEFAULT_GALLERY in names:
                    raise bad_param("galleries", "faces cannot be removed from the default "
                                    "gallery", names)
                for g in names:
                    conn.execute("DELETE FROM face_galleries WHERE face_id = ? AND gallery = ?",
                                 (face_id, g))
                continue
            valid = self.check_galleries(user, names)
            if op == "set":
                conn.execute("DELETE FROM face_galleries WHERE face_id = ?", (face_id,))
            for g in valid:
                conn.execute("INSERT OR IGNORE INTO face_galleries VALUES (?, ?, ?)",
                             (face_id, user, g))

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
        for start in range(0, len(found), 500):
            chunk = found[start:start + 500]
            marks = placeholders(len(chunk))
            conn.execute(f"DELETE FROM faces WHERE id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM face_galleries WHERE face_id IN ({marks})", chunk)
        for face_id in found:
            self._index_remove(user, face_id)
        return rows

    def _delete_face_files(self, rows: list[sqlite3.Row]) -> None:
        """After the delete committed: the images no remaining face refers to."""
        for r in rows:
            self.files.delete(r["thumbnail"])
            self.files.delete(r["normalized"])
            if self.db.row("SELECT 1 FROM faces WHERE photo = ?", (r["photo"],)) is None:
                self.files.delete(r["photo"])

    # -- search ---------------------------------------------------------------

    def identify(self, user: int, faces: list[NewFace], n: int, threshold: float | None,
                 gallery: str | None = None) -> list[list[tuple[int, float]]]:
        """For each face, up to ``n`` (face_id, confidence) at or above ``threshold``."""
        limit = self.settings.max_identify_limit
        if limit:
            n = min(n, limit)
        with self.db.lock:
            index = self.index(user)
            mask = None
            if gallery not in (None, DEFAULT_GALLERY):
                mask = index.mask(face_ids=self.gallery_face_ids(user, gallery))
            out = []
            for face in faces:
                hits = index.search(face.embedding, n, mask)
                conf = [(fid, float(confidence_from_cosine(cos))) for fid, cos in hits]
                out.append([(fid, c) for fid, c in conf
                            if threshold is None or c >= threshold])
        return out


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()
UNSET = _UNSET


class _Replayed(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, ids: list[int]) -> None:
        super().__init__("idempotent replay")
        self.ids = ids
