"""The camera's prefix in the detector's log lines: ``[lobby 24f0c1d2]``. This module owns it.

A log call about one camera passes the camera's id as ``extra={"cam_id": ...}`` (or through a
``logging.LoggerAdapter``) and does not name the camera in its message; the handler's
:class:`CameraPrefixFilter` turns the id into the record's ``camera`` attribute, which the
format shows once, between brackets (``setup_logging`` in cli.py).

The prefix is the camera's name, as the operator gave it (the ``meta`` of the backend's
camera list), then its id. A UUID (the backend's ids) is cut to its first group, 8 hex
digits: ``grep 24f0c1d2`` finds the camera's lines, and its ``starting`` line gives the full
id once. Any other id (``--camid``, a file name) is shown in full.

A name is text a client sent: control and format characters are dropped, every kind of
white space (newlines, U+2028, tabs) becomes one space, brackets become parentheses (the
prefix ends at the first ``]``), and it is cut to NAME_MAX characters. Ids are cleaned the
same way (an id comes from a backend too). No name can start a new line, colour a terminal
or push the message off the screen.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata

NAME_MAX = 32  # characters of a camera's name in the prefix
ID_MAX = 64  # characters of a camera id that is not a UUID
NO_CAMERA = "-"  # the prefix of a line about no camera in particular

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_BRACKETS = str.maketrans("[]", "()")

_names: dict[str, str] = {}  # cam_id -> its name, as last registered (name_camera)
_lock = threading.Lock()


def clean_text(text: str, limit: int) -> str:
    """``text`` on one line, printable, at most ``limit`` characters (``…`` when cut)."""
    head = text[: limit * 4]  # a 10 MB name is not scanned whole
    kept = "".join(ch for ch in head if not unicodedata.category(ch).startswith("C")
                   or ch.isspace())
    one_line = " ".join(kept.split()).translate(_BRACKETS)
    if len(one_line) <= limit and len(head) == len(text):
        return one_line
    return one_line[: limit - 1] + "…"


def short_id(cam_id: str) -> str:
    """A UUID's first group; any other id cleaned, in full (up to ID_MAX characters)."""
    if _UUID.fullmatch(cam_id):
        return cam_id[:8]
    return clean_text(cam_id, ID_MAX) or "?"


def camera_label(cam_id: str | None, name: str = "") -> str:
    """The text between the brackets: ``name id``, ``id`` without a name, NO_CAMERA without
    an id."""
    if not cam_id:
        return NO_CAMERA
    shown = clean_text(name, NAME_MAX) if name else ""
    return f"{shown} {short_id(cam_id)}" if shown else short_id(cam_id)


def name_camera(cam_id: str, name: str) -> None:
    """Register (or replace; ``""``: forget) the name the prefix shows for ``cam_id``."""
    with _lock:
        if name:
            _names[cam_id] = name
        else:
            _names.pop(cam_id, None)


def label_of(cam_id: str | None) -> str:
    """The prefix text of ``cam_id`` with its registered name."""
    return camera_label(cam_id, _names.get(cam_id, "") if cam_id else "")


class CameraPrefixFilter(logging.Filter):
    """Sets ``record.camera`` from ``record.cam_id`` (NO_CAMERA when the record has none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        cam_id = getattr(record, "cam_id", None)
        record.camera = label_of(str(cam_id) if cam_id else None)
        return True


def full_id(cam_id: str) -> str:
    """``", id <cam_id>"`` when the prefix shows only part of it (for the camera's one
    ``starting`` line, which ties the short id to the full one), else ``""``."""
    return f", id {cam_id}" if short_id(cam_id) != cam_id else ""
