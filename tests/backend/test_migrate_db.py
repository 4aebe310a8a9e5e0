"""``fkvideo_backend migrate-db``: a real SQLite site moved to a real PostgreSQL, compared
through the API afterwards; an interrupted run is run again and nothing is doubled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.backend.conftest import SERVER_SETTINGS, Api, person_photo
from tests.pg import PgCluster
from videodetector.backend import migrate_db
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings
from videodetector.backend.storage import open_database
from videodetector.backend.stores.store_model import SqlStoreModelStore


def _fill(api: Api) -> dict[str, Any]:
    """A small site: two galleries, a camera, camera events that make persons, a merge."""
    assert api.post("/v1/galleries/staff").status_code == 201
    enrolled = [api.add_face(person_photo(n), meta=f"enrolled {n}", galleries="staff")
                for n in ("A", "B")]
    cam = api.post("/v1/camera", json={"meta": "Entrance", "url": "rtsp://cam/1"}).json()
    events = [api.add_face(person_photo(n), cam_id=cam["id"]) for n in ("A", "B", "A")]
    return {"enrolled": enrolled, "cam": cam, "events": events}


def _snapshot(api: Api) -> dict[str, Any]:
    """What a user sees: faces, galleries, persons, cameras, and identify answers."""
    faces = api.get("/v1/faces", params={"limit": 100}).json()["results"]
    ident = api.post("/v1/identify", files={"photo": person_photo("A")},
                     data={"n": 3}).json()["results"]
    return {
        "faces": sorted((f["id"], f["meta"], f.get("person_id"),
                         f["thumbnail"].rsplit("/", 1)[-1]) for f in faces),
        "galleries": api.get("/v1/galleries").json(),
        "persons": sorted((p["id"], p["face_count"]) for p in
                          api.get("/v1/persons", params={"limit": 100}).json()["results"]),
        "cameras": api.get("/v1/camera").json(),
        "identify": {box: sorted((m["face"]["id"], round(m["confidence"], 4)) for m in hits)
                     for box, hits in ident.items()},
    }


def _migrate(source: Path, url: str, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "videodetector.backend.cli", "migrate-db", "--from", str(source),
         "--to", url, "--to-data-dir", str(target), "--batch", "2"],
        capture_output=True, text=True, timeout=300)


def test_a_site_moved_to_postgresql_answers_the_same(pg_cluster: PgCluster,
                                                     tmp_path: Path) -> None:
    person_photo("A")  # skips without the models' photos
    source, target = tmp_path / "sqlite-site", tmp_path / "pg-site"
    url = pg_cluster.new_database()
    with BackendServer(Settings(data_dir=source, **SERVER_SETTINGS)) as old:
        token = old.create_token()
        api = Api(old.url, token)
        _fill(api)
        before = _snapshot(api)
    out = _migrate(source, url, target)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "migration verified" in out.stdout and "| NO |" not in out.stdout, out.stdout
    with BackendServer(Settings(data_dir=target, db=url, **SERVER_SETTINGS)) as new:
        api = Api(new.url, token)  # the old token works: users moved with their hashes
        assert _snapshot(api) == before
        face_id = before["faces"][0][0]
        face = api.get(f"/v1/face/id/{face_id}").json()
        assert api.get(face["thumbnail"].replace(new.url, "")).status_code == 200  # image moved
        added = api.add_face(person_photo("C"), meta="after the move")
        assert added["id"] > max(f[0] for f in before["faces"])  # the ids go on after the copy


def test_an_interrupted_migration_is_run_again_and_doubles_nothing(
        pg_cluster: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    person_photo("A")
    source, target = tmp_path / "sqlite-site", tmp_path / "pg-site"
    url = pg_cluster.new_database()
    # a site on sface-2021dec (its recorded model) whatever auto would choose for a new store
    with BackendServer(Settings(data_dir=source, embedding_model="sface-2021dec",
                                **SERVER_SETTINGS)) as old:
        api = Api(old.url, old.create_token())
        site = _fill(api)
        face = site["events"][0]  # "not this person" fills person_blocks (no primary key)
        r = api.post(f"/v1/person/id/{face['person_id']}/not_this_person",
                     json={"face_ids": [face["id"]]})
        assert r.status_code == 200, r.text

    def settings_for(**values: Any) -> Settings:
        return Settings(**{k: v for k, v in values.items() if v is not None})

    real_copy, calls = migrate_db.copy_table, []

    def crash_in_faces(src: Any, pg: Any, plan: migrate_db.TablePlan, batch: int,
                       lock: Any) -> int:
        calls.append(plan.name)
        if plan.name == "faces":  # one batch lands, then the process "dies"
            real_copy(src, pg, plan, batch, lock)
            raise KeyboardInterrupt("killed")
        return real_copy(src, pg, plan, batch, lock)

    monkeypatch.setattr(migrate_db, "copy_table", crash_in_faces)
    options = migrate_db.MigrateOptions(source, url, target, batch=2, sample=10)
    with pytest.raises(KeyboardInterrupt):
        migrate_db.migrate(options, settings_for, echo=lambda _: None)
    assert "faces" in calls
    # cut short before the settings table was copied, the target already serves the
    # source's model (not what auto would choose for an empty store on this CPU)
    store = open_database(Settings(data_dir=target, db=url))
    assert SqlStoreModelStore(store).recorded() == "sface-2021dec"
    store.close()
    monkeypatch.setattr(migrate_db, "copy_table", real_copy)
    report = migrate_db.migrate(options, settings_for, echo=lambda _: None)
    assert report.ok, migrate_db.format_report(report)
    again = migrate_db.migrate(options, settings_for, echo=lambda _: None)  # idempotent
    assert again.ok, migrate_db.format_report(again)
    counts = {name: detail for name, _, detail in again.checks if name.startswith("rows ")}
    assert counts["rows faces"] == "5 -> 5" and counts["rows person_blocks"] == "1 -> 1", counts
    assert again.images[0] == 0 and again.images[1] > 0  # nothing left to copy


def test_bad_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--from"):
        migrate_db.MigrateOptions(tmp_path, "postgresql://x/y", tmp_path)
    (tmp_path / "backend.sqlite3").touch()
    with pytest.raises(ValueError, match="--to"):
        migrate_db.MigrateOptions(tmp_path, "/var/lib/site", tmp_path)
    with pytest.raises(ValueError, match="--batch"):
        migrate_db.MigrateOptions(tmp_path, "postgresql://x/y", tmp_path, batch=0)


def test_upsert_sql_per_kind_of_table() -> None:
    keyed = migrate_db.TablePlan("faces", ("id", "meta"), ("id",))
    assert migrate_db.upsert_sql(keyed).endswith(
        'ON CONFLICT ("id") DO UPDATE SET "meta" = EXCLUDED."meta"')
    only_key = migrate_db.TablePlan("regenerate_done", ("job", "face_id"), ("job", "face_id"))
    assert migrate_db.upsert_sql(only_key).endswith("DO NOTHING")
    assert "ON CONFLICT" not in migrate_db.upsert_sql(
        migrate_db.TablePlan("person_blocks", ("user_id", "face_id"), ()))
