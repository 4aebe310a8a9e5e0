"""The backend's state and face logic: enrollment, identification, persons (8.2), friends (8.3).

``Backend`` owns the database, the image files, the in-memory indexes and the
models. Its methods are synchronous (routers call them in a worker thread); all
writes happen in ``db.transaction()``, which holds the single write lock.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from videodetector.backend import person_match, person_store
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
        self.tokens = TokenChecker(self.db)
        self.index = IndexRegistry()
        self.engine = shared_engine(settings.model_threads, settings.detector_threshold)
        self._keys_since_prune = 0
        self.persons = person_match.Matcher(settings)
        person_store.migrate(self.db)
        self._load_index()
        self._prune_idempotency()

    def close(self) -> None:
        self.db.close()

    def _load_index(self) -> None:
        t0 = time.monotonic()
        n = 0
        with self.db.lock:
            cur = self.db.conn.execute(
                "SELECT id, user_id, cam_id, person_id, embedding FROM faces ORDER BY id")
            for row in cur:
                vec = np.frombuffer(row["embedding"], np.float32)
                self.index(row["user_id"]).add(row["id"], vec, row["cam_id"], row["person_id"])
                n += 1
        log.info("loaded %d face embeddings in %.2f s", n, time.monotonic() - t0)

    def _prune_idempotency(self) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM idempotency WHERE created < ?",
                         (time.time() - self.settings.idempotency_ttl,))

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
        galleries = self.check_galleries(user, post.galleries)
        photo, faces = self.faces_of_request(post.photo, post.face_images, post.boxes,
                                             post.mf_selector, post.want_attrs)
        ts = post.timestamp or now()
        written = self._write_images(user, post, photo, faces)
        try:
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
        self._keys_since_prune += 1
        if self._keys_since_prune >= 1000:  # forget keys older than idempotency_ttl
            conn.execute("DELETE FROM idempotency WHERE created < ?",
                         (time.time() - self.settings.idempotency_ttl,))
            self._keys_since_prune = 0

    def _write_images(self, user: int, post: FacePost, photo: Photo | None,
                      faces: list[NewFace]) -> dict[str, Any]:
        """Store the photo once and each face's thumbnail and normalized image."""
        files = self.files
        if photo is not None:
            photo_rel = files.new_name(user, "photo", photo.ext)
            files.write(photo_rel, photo.data)
            photo_hash = photo.sha256
        else:  # only normalized faces were posted: the first one stands for the photo
            photo_rel = files.new_name(user, "photo", "png")
            data = encode(faces[0].aligned, "png")
            files.write(photo_rel, data)
            photo_hash = content_hash(post.face_images[0])
        per_face = []
        for face in faces:
            thumb_rel = files.new_name(user, "thumb", "jpeg")
            source = photo.image if photo is not None else face.aligned
            box = face.box if photo is not None else (0, 0, *face.aligned.shape[1::-1])
            files.write(thumb_rel, encode(thumbnail(source, box), "jpeg", 85))
            norm_rel = files.new_name(user, "norm", "png")
            files.write(norm_rel, encode(face.aligned, "png"))
            per_face.append((thumb_rel, norm_rel))
        return {"photo": photo_rel, "photo_hash": photo_hash, "faces": per_face}

    def _delete_written(self, written: dict[str, Any]) -> None:
        self.files.delete(written["photo"])
        for thumb, norm in written["faces"]:
            self.files.delete(thumb)
            self.files.delete(norm)

    def _insert_faces(self, conn: sqlite3.Connection, user: int, post: FacePost,
                      faces: list[NewFace], written: dict[str, Any], galleries: list[str],
                      ts: datetime) -> list[int]:
        index = self.index(user)
        changes = person_store.IndexLog(index)  # person changes to older faces
        # detectorParams (track, quality) describe one face: not the faces of a group photo
        stream_params = post.detector_params if len(faces) == 1 else None
        ids: list[int] = []
        try:
            for face, (thumb, norm) in zip(faces, written["faces"], strict=True):
                a = self.persons.prepare(conn, index, user, face.embedding, face.box,
                                         post.meta, post.cam_id, stream_params,
                                         ts.timestamp())
                face_id = insert(conn, "faces", {
                    "user_id": user, "meta": a.meta, "person_id": a.person,
                    "cam_id": post.cam_id,
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
                    "quality": a.quality, "track": a.track,
                })
                for g in galleries:
                    insert(conn, "face_galleries", {"face_id": face_id, "user_id": user,
                                                    "gallery": g})
                index.add(face_id, face.embedding, post.cam_id, a.person)
                ids.append(face_id)
                person = self.persons.settle(conn, changes, user, face_id, a, post.cam_id,
                                             ts.timestamp())
                if person is not None and post.cam_id is not None:
                    self._update_friend(conn, user, face_id, person, post.cam_id, ts)
        except BaseException:
            for face_id in ids:  # the transaction rolls back: so must the index
                index.remove(face_id)
            changes.revert()
            raise
        return ids

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
        ids = self.gallery_face_ids(user, name)
        self.delete_faces(user, [int(i) for i in ids])
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM galleries WHERE user_id = ? AND name = ?", (user, name))

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
        """PUT /face/id: meta, person_id (UNSET = leave, "" or null = clear, "new" = a new
        person, else an existing person of this token), galleries ops."""
        self.face_row(user, face_id)
        with person_store.person_transaction(self.db, self.index(user)) as (conn, changes):
            if meta is not None:
                update(conn, "faces", {"meta": meta}, "id = ? AND user_id = ?", (face_id, user))
            if person is not _UNSET:  # an operator's move: recorded, never undone by matching
                target = person_store.target_person(conn, user, person)
                person_store.operator_move(conn, changes, user, face_id, target)
            if galleries is not None:
                self._update_galleries(conn, user, face_id, galleries)

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
        rows = self.face_rows(user, ids)
        if not rows:
            return 0
        found = [r["id"] for r in rows]
        with self.db.transaction() as conn:
            marks = placeholders(len(found))
            conn.execute(f"DELETE FROM faces WHERE id IN ({marks})", found)
            conn.execute(f"DELETE FROM face_galleries WHERE face_id IN ({marks})", found)
            index = self.index(user)
            for face_id in found:
                index.remove(face_id)
        for r in rows:
            self.files.delete(r["thumbnail"])
            self.files.delete(r["normalized"])
            if self.db.row("SELECT 1 FROM faces WHERE photo = ?", (r["photo"],)) is None:
                self.files.delete(r["photo"])
        return len(found)

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
