"""Thumbnails made on first read (issue 10: a detector's post makes none).

A post of one normalized face (``face0``) with its photo stores the photo as uploaded and
names the face's thumbnail without writing it: the name says which stored photo and which
box it is cut from, signed with a key kept in the data directory::

    <user>/<day>/<photo token>_tb_<photo ext>_<x1>_<y1>_<x2>_<y2>_<mac>.jpeg

The first ``GET /<upload_path>/<that name>`` (``make_on_read``) checks the signature, cuts
the thumbnail from the stored photo exactly as the post would have (the same
:func:`imaging.decode_for_thumbnails` of the same bytes and box, the same JPEG encode: the
same bytes), and stores it (written to a temporary file of its own, fsynced, renamed into
place, its directory fsynced: concurrent readers each write the same bytes, one rename
wins). Only names this server signed are made, so a reader cannot have arbitrary crops
stored, and only while a face has the name (``faces.thumbnail``, looked up through the
``faces_photo`` index): after ``regenerate --regenerate thumbs`` (or re-detection) gave the
face another thumbnail, its old name is a 404 and makes no file no face refers to. A photo
that cannot be decoded is refused at post time, as before
(:func:`imaging.validate_photo` decodes every byte)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from videodetector.backend.errors import ApiError
from videodetector.backend.imaging import THUMBNAIL_QUALITY, Box, decode_for_thumbnails
from videodetector.backend.storage import TMP_SUFFIX, FileStore
from videodetector.core.durable import fsync_path, write_atomic
from videodetector.core.images import encode
from videodetector.core.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

KEY_FILE = "thumbnail.key"  # in the data directory, shared by the processes sharing it
KEY_BYTES = 32
MAX_STORED_BYTES = 1 << 30  # a stored photo was checked against the limits of its post
MAX_STORED_SIDE = 100_000
_NUMBER = r"-?[0-9][0-9.e+-]*"
_NAME = re.compile(rf"(?P<dir>[0-9]+/[0-9]{{8}})/(?P<token>[0-9a-f]{{24}})_tb_"
                   rf"(?P<ext>jpeg|png|webp)_(?P<box>{_NUMBER}_{_NUMBER}_{_NUMBER}_{_NUMBER})"
                   r"_(?P<mac>[0-9a-f]{32})\.jpeg")


def _read_keys(path: Path) -> tuple[bytes, ...]:
    data = path.read_bytes()
    if not data or len(data) % KEY_BYTES:
        raise OSError(f"the thumbnail key file {path} is {len(data)} bytes, not a multiple "
                      f"of {KEY_BYTES}")
    return tuple(data[i:i + KEY_BYTES] for i in range(0, len(data), KEY_BYTES))


def _publish(data_dir: Path, data: bytes, replace: bool) -> None:
    """Write the key file whole (fsynced, linked or renamed into place, its directory
    fsynced): durable before any name is signed with it."""
    path = data_dir / KEY_FILE
    tmp = data_dir / f"{KEY_FILE}.{secrets.token_hex(6)}{TMP_SUFFIX}"
    write_atomic(tmp, data)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if another process made it first: theirs is kept
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(data_dir)


def load_keys(data_dir: Path) -> tuple[bytes, ...]:
    """The keys of ``data_dir``: the first signs new names, any of them verifies one (a
    migrated data directory keeps its source's keys, ``add_keys``). Made on first use;
    the processes sharing the data directory agree on the first file linked in place."""
    path = data_dir / KEY_FILE
    if not path.exists():
        _publish(data_dir, secrets.token_bytes(KEY_BYTES), replace=False)
    return _read_keys(path)


def add_keys(source_dir: Path, target_dir: Path) -> int:
    """Give ``target_dir`` the thumbnail keys of ``source_dir`` it lacks (fkvideo_backend
    migrate-db copies the images: names signed by the source must still verify); returns
    how many were added. The target's own signing key stays first."""
    if not (source_dir / KEY_FILE).exists():
        return 0
    source = _read_keys(source_dir / KEY_FILE)
    target = _read_keys(target_dir / KEY_FILE) if (target_dir / KEY_FILE).exists() else ()
    missing = [k for k in source if k not in target]
    if missing:
        target_dir.mkdir(parents=True, exist_ok=True)
        _publish(target_dir, b"".join((*target, *missing)), replace=True)
    return len(missing)


def _mac(key: bytes, photo_rel: str, box_text: str) -> str:
    return hmac.new(key, f"{photo_rel}|{box_text}".encode(), hashlib.sha256).hexdigest()[:32]


def photo_token(photo_rel: str) -> tuple[str, str, str] | None:
    """(directory, token, ext) of a stored photo's name ``<user>/<day>/<token>_photo.<ext>``."""
    m = re.fullmatch(r"([0-9]+/[0-9]{8})/([0-9a-f]{24})_photo\.(jpeg|png|webp)", photo_rel)
    return None if m is None else (m[1], m[2], m[3])


def lazy_name(key: bytes, photo_rel: str, box: Box) -> str | None:
    """The signed name of ``box``'s thumbnail on the stored photo ``photo_rel``; None when
    the photo's name is not one this store makes (the thumbnail is then made now)."""
    parts = photo_token(photo_rel)
    if parts is None:
        return None
    folder, token, ext = parts
    box_text = "_".join(repr(float(v)) for v in box)
    return f"{folder}/{token}_tb_{ext}_{box_text}_{_mac(key, photo_rel, box_text)}.jpeg"


def is_lazy_name(rel: str) -> bool:
    """Whether ``rel`` has the form of a :func:`lazy_name` (signature not checked)."""
    return _NAME.fullmatch(rel) is not None


def parse_lazy(keys: tuple[bytes, ...], rel: str) -> tuple[str, Box] | None:
    """(stored photo name, box) of a name :func:`lazy_name` signed with one of ``keys``,
    else None."""
    m = _NAME.fullmatch(rel)
    if m is None:
        return None
    photo_rel = f"{m['dir']}/{m['token']}_photo.{m['ext']}"
    if not any(hmac.compare_digest(m["mac"], _mac(k, photo_rel, m["box"])) for k in keys):
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in m["box"].split("_"))
    except ValueError:
        return None
    return photo_rel, (x1, y1, x2, y2)


def thumbnail_jpeg(photo: bytes, box: Box) -> bytes:
    """The stored thumbnail of ``box`` on ``photo``: what a post of this photo with this one
    box stores (:meth:`Backend._write_images`)."""
    decoded = decode_for_thumbnails(photo, "photo", MAX_STORED_BYTES, MAX_STORED_SIDE, [box])
    return encode(decoded.thumbnail(box), "jpeg", THUMBNAIL_QUALITY)


_store_log = RateLimitedLog(log)


def make_on_read(files: FileStore, keys: tuple[bytes, ...], rel: str,
                 in_use: Callable[[str, str], bool]) -> Path | bytes | None:
    """The thumbnail ``rel`` made and stored now from its photo, or None: not a signed name,
    no face has it any more (``in_use(photo, rel)`` False: the face was deleted, or
    ``regenerate`` gave it another thumbnail), or its photo is gone or unreadable. When it
    cannot be stored (a full disk, a read-only store), its bytes: the reader gets it anyway,
    made again on the next read, and the failure is logged once a minute.

    A face deleted, or given another thumbnail, while its thumbnail is made leaves no file:
    the deletion removes the photo before the thumbnail (``Backend._delete_face_files``),
    ``regenerate`` commits the new name before it removes the old file. So either the read
    finds the photo gone or the name unused once the thumbnail is written, and removes it
    here, or the other's removal of the thumbnail comes after the write."""
    parsed = parse_lazy(keys, rel)
    if parsed is None:
        return None
    photo_rel, box = parsed
    photo_path, path = files.path(photo_rel), files.path(rel)
    if photo_path is None or path is None or not in_use(photo_rel, rel):
        return None
    if path.is_file():  # made by a concurrent reader meanwhile
        return path
    try:
        data = thumbnail_jpeg(photo_path.read_bytes(), box)
    except FileNotFoundError:
        return None
    except ApiError as exc:
        log.warning("thumbnail %s: its stored photo cannot be decoded: %s", rel, exc.reason)
        return None
    # a temporary file of this reader's own: concurrent readers never write one file
    try:
        files.write_all([(rel, data)], tmp_tag=secrets.token_hex(6))
    except OSError as exc:
        _store_log.log(logging.WARNING, "store", "thumbnail %s made on read but not stored "
                       "(served anyway, made again on the next read): %s", rel, exc)
        return data
    if not photo_path.exists() or not in_use(photo_rel, rel):  # changed meanwhile
        files.delete(rel)
        return None
    return path
