"""/metrics of the backend through prometheus_client: the exposition parses, every metric name
is still there, the request / identify / enroll histograms count real requests, and an API
token's view holds that token's own figures and nothing of another tenant. Real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.backend.conftest import SERVER_SETTINGS, Api, person_photo
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings

METRICS_TOKEN = "metrics-secret-0123456789"
# the names the README, bench/soak.py and the other tests read, and the new histograms
FULL_VIEW = {
    "backend_requests": "counter", "backend_request_duration_seconds": "histogram",
    "backend_identify_seconds": "histogram", "backend_identify_search_seconds": "histogram",
    "backend_enroll_seconds": "histogram", "backend_faces": "gauge", "backend_persons": "gauge",
    "backend_cameras": "gauge", "backend_users": "gauge", "backend_gallery_faces": "gauge",
    "backend_plugins_loaded": "gauge", "backend_plugin_errors": "counter",
    "backend_plugin_rejected": "counter", "backend_plugin_face_stored": "counter",
    "backend_person_identity_switches": "gauge", "backend_person_auto_merges": "gauge",
}
TOKEN_VIEW = {"backend_faces", "backend_persons", "backend_cameras", "backend_gallery_faces",
              "backend_person_identity_switches", "backend_person_auto_merges"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store: str | None
           ) -> Iterator[BackendServer]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("metrics"), db=store, **SERVER_SETTINGS,
                        metrics_token=METRICS_TOKEN)
    with BackendServer(settings) as srv:
        yield srv


def scrape(server: BackendServer, token: str | None = None) -> dict[str, object]:
    """{family name: family} of /metrics, with the metrics token or an API token."""
    auth = f"Bearer {METRICS_TOKEN}" if token is None else f"Token {token}"
    r = requests.get(server.url + "/metrics", headers={"Authorization": auth}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def value(families: dict, sample_name: str, **labels: str) -> float:
    family = families[sample_name.removesuffix("_total").removesuffix("_count")
                      .removesuffix("_sum")]
    matches = [s.value for s in family.samples
               if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(matches)


def test_full_view_parses_keeps_every_name_and_counts_identify_and_enroll(server):
    api = Api(server.url, server.create_token())
    before = scrape(server)
    assert {name: f.type for name, f in before.items()} == FULL_VIEW
    api.add_face(person_photo("A"))
    api.add_face(person_photo("B"))
    r = api.post("/v1/identify", files={"photo": person_photo("A")})
    assert r.status_code == 200, r.text
    after = scrape(server)
    route = {"method": "POST", "route": "/v1/face"}
    for name, labels, delta in (
            ("backend_enroll_seconds_count", {}, 2),
            ("backend_identify_seconds_count", {}, 1),
            ("backend_identify_search_seconds_count", {}, 1),  # one face on the probe photo
            ("backend_request_duration_seconds_count", route, 2),
            ("backend_requests_total", {**route, "status": "200"}, 2)):
        assert value(after, name, **labels) - value(before, name, **labels) == delta, name
    search = value(after, "backend_identify_search_seconds_sum")
    assert 0 < search <= value(after, "backend_identify_seconds_sum")
    buckets = [s for s in after["backend_enroll_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets and max(s.value for s in buckets) == value(after,
                                                              "backend_enroll_seconds_count")
    assert value(after, "backend_faces") >= 2 and value(after, "backend_users") >= 1


def test_token_view_is_that_tokens_own_figures_only(server):
    mine, other = (Api(server.url, server.create_token()) for _ in range(2))
    secret_gallery = "g" + uuid.uuid4().hex[:10]
    assert other.post(f"/v1/galleries/{secret_gallery}").status_code == 201
    other.add_face(person_photo("C"), galleries=secret_gallery)
    for _ in range(3):
        assert other.post("/v1/camera", json={"detector": "d"}).status_code in (200, 201)
    own_gallery = "g" + uuid.uuid4().hex[:10]
    assert mine.post(f"/v1/galleries/{own_gallery}").status_code == 201
    assert mine.post("/v1/camera", json={"detector": "d"}).status_code in (200, 201)

    view = scrape(server, mine.token)
    assert set(view) == TOKEN_VIEW  # no requests, latency, users or plugin figures
    assert value(view, "backend_cameras") == 1 and value(view, "backend_faces") == 0
    galleries = {(s.labels["user"], s.labels["gallery"]): s.value
                 for s in view["backend_gallery_faces"].samples}
    assert {g for _, g in galleries} == {"default", own_gallery}
    assert len({u for u, _ in galleries}) == 1  # one user: the token's owner
    full = scrape(server)
    assert value(full, "backend_cameras") >= 4
    assert any(s.labels["gallery"] == secret_gallery
               for s in full["backend_gallery_faces"].samples)


def test_requests_no_route_matched_are_counted_as_unmatched(server):
    """A path no route has (a /v1 one too) is counted under route="unmatched"; it was
    "/v1unmatched" for /v1 paths (seen on a running backend after path tricks)."""
    api = Api(server.url, server.create_token())
    before = scrape(server)
    for path in ("/v1/face/id/..%2F..%2Fetc%2Fpasswd", "/v0/no/such/method", "/nothing"):
        assert api.get(path).status_code == 404
    after = scrape(server)
    labels = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "backend_requests_total", **labels) - value(
        before, "backend_requests_total", **labels) == 3
    routes = {s.labels["route"] for s in after["backend_requests"].samples}
    assert not {r for r in routes if r.endswith("unmatched") and r != "unmatched"}, routes
