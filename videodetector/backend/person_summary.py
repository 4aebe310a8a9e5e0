"""What a persons grid shows of each person, for a whole page in one SQL query.

``GET /persons`` used to answer only ``id``, ``meta`` and ``face_count``, so a grid asked
``GET /person/id`` and ``GET /face/id`` for every card. :func:`summaries` computes the best
face, first / last sighting, the sighting count, the cameras and friend-or-foe of a list of
persons in one statement (a window over their faces, grouped per person): the cost is one
query per page, whatever the page size.

Definitions (the same in ``GET /person/id``):

* a *sighting* is a camera event: a face of the person posted with a ``cam_id``;
* ``first_seen`` / ``last_seen`` are the capture times of the first and last sighting
  (null when no camera saw the person: all its faces were uploaded without ``cam_id``);
* ``best_face`` is the person's representative face: its best-quality face, the newest among
  equals (as dynamic person creation ranks them, ``person_match.best_faces``);
* ``friend`` is the flag of the person's newest face, as in ``GET /person/id``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from videodetector.backend.person_match import DEFAULT_QUALITY
from videodetector.backend.storage import Database, json_list, placeholders

Urls = Callable[[str | None], str | None]


class BestFace(BaseModel):
    """The person's representative (best-quality) face."""

    id: int = Field(description="face id (GET /v1/face/id/{id})")
    thumbnail: str | None = Field(description="URL of the face's thumbnail")
    normalized: str | None = Field(description="URL of the aligned face crop")


class PersonSummary(BaseModel):
    """One person of ``GET /persons``."""

    id: int
    meta: str = Field(description="the person's name (user-defined string)")
    face_count: int = Field(description="all faces of the person")
    timestamp: str = Field(description="when the person was created (UTC)")
    best_face: BestFace | None = Field(description="null when the person has no face")
    sightings: int = Field(description="camera events of the person (faces with a cam_id)")
    first_seen: str | None = Field(description="capture time (UTC) of the first sighting")
    last_seen: str | None = Field(description="capture time (UTC) of the last sighting")
    cam_ids: list[str] = Field(description="cameras that saw the person, sorted")
    friend: bool = Field(description="friend (true) or foe, as of the person's newest face")


class PersonPage(BaseModel):
    """A page of persons, newest first."""

    results: list[PersonSummary]
    next_page: str | None = Field(description="path of the next (older) page, or null")
    prev_page: str | None = Field(description="path of the previous (newer) page, or null")


class CameraSightings(BaseModel):
    """The sightings of one person by one camera (``GET /person/id``'s ``cameras``)."""

    cam_id: str
    sightings: int
    first_seen: str
    last_seen: str


def _summary_sql(n: int) -> str:
    marks = placeholders(n)
    return f"""
WITH f AS (
    SELECT person_id, id, cam_id, timestamp, friend, thumbnail, normalized,
           ROW_NUMBER() OVER (PARTITION BY person_id
                              ORDER BY COALESCE(quality, ?) DESC, id DESC) AS best_rank,
           ROW_NUMBER() OVER (PARTITION BY person_id ORDER BY id DESC) AS newest_rank
    FROM faces WHERE user_id = ? AND person_id IN ({marks})
)
SELECT p.id, p.meta, p.created,
       COUNT(f.id) AS face_count,
       COUNT(f.cam_id) AS sightings,
       MIN(CASE WHEN f.cam_id IS NOT NULL THEN f.timestamp END) AS first_seen,
       MAX(CASE WHEN f.cam_id IS NOT NULL THEN f.timestamp END) AS last_seen,
       json_group_array(DISTINCT f.cam_id) FILTER (WHERE f.cam_id IS NOT NULL) AS cam_ids,
       MAX(CASE WHEN f.best_rank = 1 THEN f.id END) AS best_id,
       MAX(CASE WHEN f.best_rank = 1 THEN f.thumbnail END) AS best_thumbnail,
       MAX(CASE WHEN f.best_rank = 1 THEN f.normalized END) AS best_normalized,
       MAX(CASE WHEN f.newest_rank = 1 THEN f.friend END) AS friend
FROM persons p LEFT JOIN f ON f.person_id = p.id
WHERE p.user_id = ? AND p.id IN ({marks})
GROUP BY p.id"""


def summary_json(row: sqlite3.Row, urls: Urls) -> dict[str, Any]:
    best = None
    if row["best_id"] is not None:
        best = {"id": row["best_id"], "thumbnail": urls(row["best_thumbnail"]),
                "normalized": urls(row["best_normalized"])}
    return {
        "id": row["id"], "meta": row["meta"], "face_count": row["face_count"],
        "timestamp": row["created"], "best_face": best, "sightings": row["sightings"],
        "first_seen": row["first_seen"], "last_seen": row["last_seen"],
        "cam_ids": sorted(json_list(row["cam_ids"])), "friend": bool(row["friend"]),
    }


def summaries(db: Database, user: int, ids: Sequence[int], urls: Urls
              ) -> dict[int, dict[str, Any]]:
    """``{person id: summary}`` of ``user``'s persons among ``ids``, in one query."""
    if not ids:
        return {}
    rows = db.rows(_summary_sql(len(ids)), [DEFAULT_QUALITY, user, *ids, user, *ids])
    return {r["id"]: summary_json(r, urls) for r in rows}


def camera_sightings(db: Database, user: int, person: int) -> list[dict[str, Any]]:
    """Per camera: how often and from when to when it saw the person (most sightings first)."""
    rows = db.rows(
        "SELECT cam_id, COUNT(*) AS n, MIN(timestamp) AS first, MAX(timestamp) AS last "
        "FROM faces WHERE user_id = ? AND person_id = ? AND cam_id IS NOT NULL "
        "GROUP BY cam_id ORDER BY n DESC, cam_id", (user, person))
    return [{"cam_id": r["cam_id"], "sightings": r["n"], "first_seen": r["first"],
             "last_seen": r["last"]} for r in rows]
