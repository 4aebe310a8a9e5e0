"""Issue 7 item 1: a client never chooses a new person's id (no exhausted sequence, no oracle).

Before the fix, ``PUT /face/id`` with ``"person_id": 9223372036854775807`` created that person,
after which every person creation failed for every tenant (the AUTOINCREMENT sequence was
exhausted), and the answer told a free id (200) from another tenant's (400).
"""

from __future__ import annotations

from tests.backend.conftest import Api, error_of, person_photo
from videodetector.backend.params import INT64_MAX
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings
from videodetector.backend.storage import open_database


def test_put_person_id_must_be_an_own_existing_person(server: BackendServer, api: Api):
    other = Api(server.url, server.create_token())
    theirs = other.add_face(person_photo("B"), cam_id="c1")["person_id"]
    face = api.add_face(person_photo("A"), cam_id="c1")
    mine = face["person_id"]
    answers = []
    for pid in (INT64_MAX, str(INT64_MAX), theirs, 987654321):
        r = api.put(f"/v1/face/id/{face['id']}", json={"person_id": pid})
        body = error_of(r, 404, "NOT_FOUND")
        answers.append((body["param"], body["reason"].replace(str(pid), "N")))
    assert len(set(answers)) == 1  # another tenant's id answers like a free one: no oracle
    # nothing was created: new persons still get ordinary ids, for every tenant
    for who in (api, other):
        new = who.add_face(person_photo("C"), cam_id="c9")["person_id"]
        assert isinstance(new, int) and 0 < new < 2**53
    assert api.get(f"/v1/face/id/{face['id']}").json()["person_id"] == mine
    assert other.get(f"/v1/person/id/{theirs}").json()["faces"]  # untouched


def test_put_person_id_new_and_own(api: Api):
    a = api.add_face(person_photo("A"), cam_id="c1")
    b = api.add_face(person_photo("B"), cam_id="c1")
    r = api.put(f"/v1/face/id/{a['id']}", json={"person_id": "new"})
    assert r.status_code == 200, r.text
    created = r.json()["person_id"]
    assert created not in (None, a["person_id"], b["person_id"]) and created < 2**53
    assert api.get(f"/v1/person/id/{created}").json()["faces"] == [a["id"]]
    r = api.put(f"/v1/face/id/{b['id']}", json={"person_id": created})
    assert r.status_code == 200 and r.json()["person_id"] == created
    r = api.put(f"/v1/face/id/{b['id']}", json={"person_id": ""})
    assert r.status_code == 200 and r.json()["person_id"] is None
    r = api.put(f"/v1/face/id/{a['id']}", json={"person_id": None})  # JSON null clears too
    assert r.status_code == 200 and r.json()["person_id"] is None, r.text
    r = api.put(f"/v1/face/id/{a['id']}", json={"meta": "x"})  # absent: the person stays
    assert r.status_code == 200 and r.json()["person_id"] is None


def test_a_database_poisoned_by_an_old_version_is_repaired(db_url, tmp_path):
    settings = Settings(data_dir=tmp_path, db=db_url, person_identify=True, log_level="warning")
    with BackendServer(settings) as srv:
        api = Api(srv.url, srv.create_token())
        face = api.add_face(person_photo("A"), cam_id="c1")
    db = open_database(settings)
    with db.transaction() as conn:  # what the old PUT /face/id {"person_id": 2**63 - 1} left
        conn.execute("INSERT INTO persons (id, user_id, meta, created) VALUES (?, 1, 'x', '')",
                     (INT64_MAX,))
        conn.execute("UPDATE faces SET person_id = ? WHERE id = ?", (INT64_MAX, face["id"]))
    db.close()
    cursor = _sync_cursor(settings)
    with BackendServer(settings) as srv:
        api = Api(srv.url, api.token)
        moved = api.get(f"/v1/face/id/{face['id']}").json()["person_id"]
        assert 0 < moved < 2**53
        # the renumbered person's face is in the change feed with its new person id
        feed = api.get("/v1/faces/sync", params={"cursor": cursor}).json()
        assert [(f["id"], f["person_id"]) for f in feed["faces"]] == [(face["id"], moved)]
        assert api.get(f"/v1/person/id/{moved}").json()["meta"] == "x"
        new = api.add_face(person_photo("B"), cam_id="c1")["person_id"]  # was a 503
        assert 0 < new < 2**53 and new != moved
    db = open_database(settings)
    with db.transaction() as conn:  # the rogue person deleted since (retention), its sequence
        if db_url is None:  # value left behind
            conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'persons'",
                         (INT64_MAX,))
        else:
            conn.execute("SELECT setval('persons_id_seq', ?)", (INT64_MAX,))
    db.close()
    with BackendServer(settings) as srv:
        api = Api(srv.url, api.token)
        newer = api.add_face(person_photo("C"), cam_id="c1")["person_id"]
        assert new < newer < 2**53


def _sync_cursor(settings: Settings) -> int:
    """The newest change's seq (the cursor a client synced up to now would hold)."""
    from videodetector.backend import changes

    db = open_database(settings)
    try:
        return changes.last_seq(db)
    finally:
        db.close()
