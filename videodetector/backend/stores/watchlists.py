"""Watch-list settings of galleries (table ``gallery_settings``) and the cameras with
"unknown face" alerts (table ``camera_alerts``), both made by the schema's revisions
(``backend/migrations``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class WatchListStore(Protocol):
    """Per user: each gallery's watch-list settings and each camera's unknown-face alerts."""

    def settings(self, user: int) -> Sequence[Any]:
        """Rows (gallery, watchlist, color, threshold) of the user's existing galleries, by
        gallery name (a deleted gallery's settings are left out)."""

    def put(self, user: int, gallery: str, watchlist: bool, color: str, threshold: str
            ) -> None: ...

    def forget(self, user: int, gallery: str) -> None:
        """Drop a gallery's settings."""

    def unknown_alert_cameras(self, user: int) -> set[str]:
        """The user's existing cameras with unknown-face alerts on."""

    def set_unknown_alerts(self, user: int, cam_id: str, on: bool) -> None: ...


class SqlWatchListStore:
    """``WatchListStore`` over SQLite or PostgreSQL (pgdb translates the SQL)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def settings(self, user: int) -> Sequence[Any]:
        return self.db.rows(
            "SELECT s.gallery, s.watchlist, s.color, s.threshold FROM gallery_settings s "
            "JOIN galleries g ON g.user_id = s.user_id AND g.name = s.gallery "
            "WHERE s.user_id = ? ORDER BY s.gallery", (user,))

    def put(self, user: int, gallery: str, watchlist: bool, color: str, threshold: str
            ) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO gallery_settings (user_id, gallery, watchlist, color, "
                         "threshold) VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, gallery) DO "
                         "UPDATE SET watchlist = excluded.watchlist, color = excluded.color, "
                         "threshold = excluded.threshold",
                         (user, gallery, int(watchlist), color, threshold))

    def forget(self, user: int, gallery: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM gallery_settings WHERE user_id = ? AND gallery = ?",
                         (user, gallery))

    def unknown_alert_cameras(self, user: int) -> set[str]:
        rows = self.db.rows("SELECT a.cam_id FROM camera_alerts a JOIN cameras c ON "
                            "c.id = a.cam_id AND c.user_id = a.user_id "
                            "WHERE a.user_id = ? AND a.unknown = 1", (user,))
        return {r[0] for r in rows}

    def set_unknown_alerts(self, user: int, cam_id: str, on: bool) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO camera_alerts (user_id, cam_id, unknown) VALUES (?, ?, ?) "
                         "ON CONFLICT (user_id, cam_id) DO UPDATE SET unknown = excluded.unknown",
                         (user, cam_id, int(on)))
