"""The cameras of each user (table ``cameras``, storage.py's schema) and what their detectors
report about them (table ``camera_health``: the newest health report and one preview JPEG per
camera). Both tables are made by the schema's revisions (``backend/migrations``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from videodetector.backend.storage import insert, update
from videodetector.backend.timeutil import iso, now

HEALTH_COLUMNS = frozenset({"report", "received", "preview", "preview_width", "preview_height",
                            "frame_width", "frame_height", "preview_received",
                            "preview_requested"})


class CameraStore(Protocol):
    """Cameras and their health, always within one user's (token's) cameras."""

    def get(self, user: int, cam_id: str) -> Any | None:
        """The camera's row, None when the user has no such camera."""

    def exists(self, user: int, cam_id: str) -> bool: ...

    def list(self, user: int, detector: str | None = None) -> Sequence[Any]:
        """The user's cameras (of one detector when given) in creation order."""

    def create(self, user: int, fields: dict[str, Any]) -> str:
        """A new camera with ``fields`` (meta, url, detector, enabled, roi, rot); its id."""

    def update(self, user: int, cam_id: str, fields: dict[str, Any]) -> None: ...

    def delete(self, user: int, cam_id: str) -> None:
        """The camera and its health and preview."""

    def health(self, cam_id: str) -> Any | None:
        """The camera's ``camera_health`` row (None before its first report)."""

    def all_health(self, user: int) -> Sequence[Any]:
        """Every camera of the user in order: ``cam`` (its id) and its ``camera_health``
        columns (NULL ``cam_id`` when it has none)."""

    def set_health(self, user: int, cam_id: str, values: dict[str, Any]) -> None:
        """Set ``values`` (columns of ``camera_health``) of the camera's row."""

    def preview(self, cam_id: str) -> bytes | None: ...


class SqlCameraStore:
    """``CameraStore`` over SQLite or PostgreSQL (pgdb translates the SQL)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def get(self, user: int, cam_id: str) -> Any | None:
        return self.db.row("SELECT * FROM cameras WHERE id = ? AND user_id = ?", (cam_id, user))

    def exists(self, user: int, cam_id: str) -> bool:
        return self.db.row("SELECT 1 FROM cameras WHERE id = ? AND user_id = ?",
                           (cam_id, user)) is not None

    def list(self, user: int, detector: str | None = None) -> Sequence[Any]:
        sql, args = "SELECT * FROM cameras WHERE user_id = ?", [user]
        if detector is not None:
            sql += " AND detector = ?"
            args.append(detector)
        return self.db.rows(sql + " ORDER BY seq", args)

    def create(self, user: int, fields: dict[str, Any]) -> str:
        cam_id = str(uuid.uuid4())
        with self.db.transaction() as conn:
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM cameras").fetchone()[0]
            insert(conn, "cameras", {"id": cam_id, "user_id": user, "seq": seq, "meta": "",
                                     "enabled": 1, "created": iso(now()), **fields})
        return cam_id

    def update(self, user: int, cam_id: str, fields: dict[str, Any]) -> None:
        with self.db.transaction() as conn:
            update(conn, "cameras", fields, "id = ? AND user_id = ?", (cam_id, user))

    def delete(self, user: int, cam_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM cameras WHERE id = ? AND user_id = ?", (cam_id, user))
            conn.execute("DELETE FROM camera_health WHERE cam_id = ?", (cam_id,))

    def health(self, cam_id: str) -> Any | None:
        return self.db.row("SELECT * FROM camera_health WHERE cam_id = ?", (cam_id,))

    def all_health(self, user: int) -> Sequence[Any]:
        return self.db.rows(
            "SELECT c.id AS cam, h.* FROM cameras c LEFT JOIN camera_health h "
            "ON h.cam_id = c.id WHERE c.user_id = ? ORDER BY c.seq", (user,))

    def set_health(self, user: int, cam_id: str, values: dict[str, Any]) -> None:
        unknown = set(values) - HEALTH_COLUMNS
        if unknown or not values:
            raise ValueError(f"not columns of camera_health: {sorted(unknown) or values}")
        cols = ", ".join(values)
        sets = ", ".join(f"{c} = excluded.{c}" for c in values)
        with self.db.transaction() as conn:
            conn.execute(f"INSERT INTO camera_health (cam_id, user_id, {cols}) VALUES "
                         f"(?, ?, {', '.join('?' * len(values))}) "
                         f"ON CONFLICT(cam_id) DO UPDATE SET {sets}",
                         (cam_id, user, *values.values()))

    def preview(self, cam_id: str) -> bytes | None:
        row = self.db.row("SELECT preview FROM camera_health WHERE cam_id = ?", (cam_id,))
        return None if row is None or row["preview"] is None else bytes(row["preview"])
