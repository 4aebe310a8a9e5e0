"""stores/cameras.py on SQLite and PostgreSQL: cameras stay within their user, health rows
are upserted column by column and go with their camera."""

from __future__ import annotations

from typing import Any

import pytest

from videodetector.backend.stores.cameras import CameraStore, SqlCameraStore


def test_cameras_belong_to_their_user(database: Any, user: int) -> None:  # noqa: F811
    cams: CameraStore = SqlCameraStore(database)
    a = cams.create(user, {"meta": "door", "detector": "d1"})
    b = cams.create(user, {"meta": "hall", "detector": "d2"})
    other = user + 100_000
    assert [r["id"] for r in cams.list(user)] == [a, b]  # creation order
    assert [r["id"] for r in cams.list(user, "d2")] == [b]
    assert cams.get(other, a) is None and not cams.exists(other, a)
    cams.update(other, a, {"meta": "stolen"})  # another user's id changes nothing
    assert cams.get(user, a)["meta"] == "door"
    cams.update(user, a, {"meta": "front door", "enabled": 0})
    row = cams.get(user, a)
    assert (row["meta"], row["enabled"]) == ("front door", 0)


def test_health_upserts_and_goes_with_the_camera(database: Any, user: int) -> None:  # noqa: F811
    cams = SqlCameraStore(database)
    cam = cams.create(user, {})
    assert cams.health(cam) is None and cams.preview(cam) is None
    cams.set_health(user, cam, {"report": "{}", "received": 5.0})
    cams.set_health(user, cam, {"preview": b"\xff\xd8jpeg", "preview_width": 4,
                                "preview_height": 3, "preview_received": 6.0})
    row = cams.health(cam)
    assert (row["report"], row["received"], row["preview_width"]) == ("{}", 5.0, 4)
    assert cams.preview(cam) == b"\xff\xd8jpeg"
    second = cams.create(user, {})
    listed = [(r["cam"], r["cam_id"]) for r in cams.all_health(user)]
    assert listed == [(cam, cam), (second, None)]
    cams.delete(user, cam)
    assert cams.get(user, cam) is None and cams.health(cam) is None


def test_health_columns_are_checked(database: Any, user: int) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="camera_health"):
        SqlCameraStore(database).set_health(user, "x", {"user_id": 1})
