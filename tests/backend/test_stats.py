"""Gallery statistics (8.6): /stat/list, /stat/info scoped to the token; per-gallery face
counts on /metrics. Real backend, real models."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families

from tests.backend.conftest import Api, error_of, person_photo


def make_gallery(api: Api) -> str:
    name = "g" + uuid.uuid4().hex[:10]
    assert api.post(f"/v1/galleries/{name}").status_code == 201
    return name


def test_list_and_info_count_faces_per_gallery(api: Api, server):
    g1, g2 = sorted([make_gallery(api), make_gallery(api)])
    api.add_face(person_photo("A"), galleries=g1)
    api.add_face(person_photo("B"), galleries=f"{g1},{g2}")
    api.add_face(person_photo("C"))
    for prefix in ("", "/v1", "/v0"):
        r = api.get(f"{prefix}/stat/list/1/99")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == 3
        assert [(g["id"], g["name"], g["cnt_linear"]) for g in body["galleries"]] == [
            (1, "default", 3), (2, g1, 2), (3, g2, 1)]
        assert all(g["cnt_indexed"] == 0 and g["cnt_preindex"] == 0 for g in body["galleries"])
    assert api.get("/stat/list/2/1").json() == {
        "galleries": [{"id": 2, "name": g1, "cnt_linear": 2, "cnt_indexed": 0,
                       "cnt_preindex": 0, "faces": 2, "facen_bytes": 2 * 128 * 4}], "total": 3}
    assert api.get("/stat/list/4/10").json() == {"galleries": [], "total": 3}

    info = api.get(f"/stat/info/{g1}").json()
    assert info["name"] == g1 and info["id"] == 2 and info["cnt_linear"] == 2
    assert info["persons"] == 2 and info["index_file"] == "none"
    assert info["created"]
    small = info["images_bytes"]
    assert small > 0
    everything = api.get("/v1/stat/info/default").json()
    assert everything["cnt_linear"] == 3 and everything["images_bytes"] > small
    # the byte count is the stored files' sizes
    files = server.backend.files
    rows = server.backend.db.rows(
        "SELECT photo, thumbnail, normalized FROM faces f JOIN face_galleries g "
        "ON g.face_id = f.id WHERE g.gallery = ?", (g1,))
    names = {n for r in rows for n in r}
    assert small == sum(files.path(n).stat().st_size for n in names)


def test_stats_are_scoped_to_the_token(api: Api, server):
    g = make_gallery(api)
    api.add_face(person_photo("D"), galleries=g)
    other = Api(server.url, server.create_token())
    assert other.get("/stat/list/1/10").json()["galleries"] == [
        {"id": 1, "name": "default", "cnt_linear": 0, "cnt_indexed": 0, "cnt_preindex": 0,
         "faces": 0, "facen_bytes": 0}]
    error_of(other.get(f"/stat/info/{g}"), 404, "NOT_FOUND")
    error_of(Api(server.url, None).get("/stat/list/1/10"), 401, "AUTH_FAILED")


def test_stat_parameters_are_validated(api: Api):
    error_of(api.get("/stat/list/0/10"), 400, "BAD_PARAM")
    error_of(api.get("/stat/list/1/1001"), 400, "BAD_PARAM")
    error_of(api.get("/stat/list/x/1"), 400, "BAD_PARAM")
    error_of(api.get("/stat/info/bad%20name"), 400, "BAD_PARAM")


def gallery_faces(text: str) -> dict[tuple[str, str], float]:
    """``backend_gallery_faces`` samples of a /metrics text: {(user, gallery): faces}."""
    return {(sample.labels["user"], sample.labels["gallery"]): sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "backend_gallery_faces" for sample in family.samples}


def test_metrics_count_faces_per_gallery(api: Api):
    g = make_gallery(api)
    text = api.get("/metrics").text
    assert "# TYPE backend_gallery_faces gauge" in text
    (user,) = {u for u, gallery in gallery_faces(text) if gallery == g}
    assert gallery_faces(text)[(user, g)] == 0
    api.add_face(person_photo("A"), galleries=g)
    api.add_face(person_photo("B"))
    counts = gallery_faces(api.get("/metrics").text)
    assert counts == {(user, g): 1, (user, "default"): 2}  # this token's galleries only
