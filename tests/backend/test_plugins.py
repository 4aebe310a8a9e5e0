"""Backend plugins (9.2): loading, the preprocess / face_stored hooks, HTTP handlers, failures
contained and counted, and the example watch-list plugin end to end on a real backend."""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.backend.conftest import SERVER_SETTINGS, Api, error_of, person_photo, side_by_side
from tests.backend.faultkit import CommitFault, assert_consistent
from videodetector.backend.cli import build_parser, settings_from_args
from videodetector.backend.plugin_host import MAX_ABANDONED, PluginHost
from videodetector.backend.plugins import (
    Annotate,
    CandidateFace,
    Plugin,
    Reject,
    StoredFace,
)
from videodetector.backend.server import BackendServer
from videodetector.backend.service import FacePost, NewFace
from videodetector.backend.settings import Settings, SettingsError, read_config_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "watchlist.py"
METRICS_TOKEN = "metrics-secret-0123456789"


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics text parsed: {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}

GATE = '''
import asyncio
import threading
import time

from videodetector.backend.errors import ApiError
from videodetector.backend.plugins import Plugin, annotate, reject


class Gate(Plugin):
    """preprocess by the request's extra field plugin_test; face_stored by meta."""

    def activate(self, app):
        self.calls = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # a face_stored of meta "sleep" waits for it
        app.add_handler("/calls", self.list_calls)
        app.add_handler("/release", self.release_sleeper, methods=("POST",))
        app.add_handler("/boom", self.boom, methods=("GET", "POST"))
        app.add_handler("/public", self.public, auth=False)
        app.add_handler("/gone", self.gone)
        app.add_handler("/async/{word}", self.echo)

    def preprocess(self, face):
        mode = face.extra.get("plugin_test")
        if mode == "reject":
            return reject(f"camera {face.cam_id} is closed")
        if face.meta == "reject-meta":
            return reject("meta says no")
        if mode == "reject-second" and face.index == 1:
            return reject("second face")
        if mode == "annotate":
            return annotate(checked=True, index=face.index, side=int(face.normalized.shape[0]),
                            norm=round(float((face.facen ** 2).sum()), 3))
        if mode == "raise":
            raise RuntimeError("preprocess bug")
        if mode == "nonsense":
            return 42
        return None

    def face_stored(self, face):
        if face.meta == "raise":
            raise RuntimeError("face_stored bug")
        if face.meta == "sleep":  # held until the test releases it (10 s at most)
            self.release.wait(10)
            self.release.clear()
        with self.lock:
            self.calls.append({"user": face.user, "id": face.id,
                               "annotations": dict(face.annotations)})

    def list_calls(self, request, user):
        with self.lock:
            return {"calls": [c for c in self.calls if c["user"] == user]}

    def release_sleeper(self, request, user):
        self.release.set()
        return {"released": True}

    def boom(self, request, user):
        raise ValueError("handler bug")

    def gone(self, request, user):
        raise ApiError(404, "NOT_FOUND", "no such alert")

    def public(self, request, user):
        return {"user": user}

    async def echo(self, request, user):
        await asyncio.sleep(0)
        return {"word": request.path_params["word"], "user": user}
'''

BROKEN = '''
from videodetector.backend.plugins import Plugin


class Broken(Plugin):
    def activate(self, app):
        raise RuntimeError("cannot activate")
'''


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- settings and loading (no server) --------------------------------------------------

def test_nothing_loads_by_default(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    write(tmp_path, "eager.py", f"open({str(marker)!r}, 'w').close()\n")
    assert Settings().plugins_enabled == () and Settings().plugins_dirs == ()
    host = PluginHost.load(Settings(plugins_dirs=(tmp_path,)), None)  # type: ignore[arg-type]
    assert host.plugins == [] and not marker.exists()


@pytest.mark.parametrize(("changes", "message"), [
    ({"plugins_dirs": ("relative/dir",), "plugins_enabled": ("x",)}, "plugins_dirs"),
    ({"plugins_dirs": ("/p",), "plugins_enabled": ("../x",)}, "plugins_enabled"),
    ({"plugins_dirs": ("/p",), "plugins_enabled": ("os.path",)}, "plugins_enabled"),
    ({"plugins_enabled": ("x",)}, "needs plugins_dirs"),
    ({"plugin_hook_timeout": 0.0}, "plugin_hook_timeout"),
])
def test_plugin_settings_are_checked(changes: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings(**changes)


def test_plugin_settings_from_flags_and_config_file(tmp_path: Path) -> None:
    ini = tmp_path / "facenapi.ini"
    ini.write_text("plugins_dirs = '/etc/findface/plugins/video, /etc/findface/plugins/html'\n"
                   "plugins_enabled = '*'\n", encoding="utf-8")
    s = Settings.from_mapping(read_config_file(ini))
    assert s.plugins_dirs == (Path("/etc/findface/plugins/video"),
                              Path("/etc/findface/plugins/html"))
    assert s.plugins_enabled == ("*",)
    args = build_parser().parse_args(["serve", "-c", str(ini), "--plugins-enabled", "a,b",
                                      "--plugin-hook-timeout", "2.5"])
    s = settings_from_args(args)
    assert s.plugins_enabled == ("a", "b") and s.plugin_hook_timeout == 2.5
    assert len(s.plugins_dirs) == 2


def load(dirs: tuple[Path, ...], *names: str) -> PluginHost:
    s = Settings(plugins_dirs=dirs, plugins_enabled=names)
    return PluginHost.load(s, None)  # type: ignore[arg-type]


def test_load_failures_are_skipped_logged_once_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "plugins"
    write(d, "good.py", "from videodetector.backend.plugins import Plugin\n"
                        "class Good(Plugin):\n    pass\n")
    write(d, "syntax.py", "def broken(:\n")
    write(d, "raises.py", "raise ImportError('no such dependency')\n")
    write(d, "noclass.py", "from videodetector.backend.plugins import Plugin\nX = Plugin\n")
    write(d, "twoclasses.py", "from videodetector.backend.plugins import Plugin\n"
                              "class A(Plugin):\n    pass\nclass B(Plugin):\n    pass\n")
    write(d, "badconfig.py", "from videodetector.backend.plugins import Plugin\n"
                             "class C(Plugin):\n    pass\n")
    write(d, "badconfig.json", "[1, 2]")
    write(d, "broken.py", BROKEN)
    write(d, "pkg/__init__.py", "from videodetector.backend.plugins import Plugin\n"
                                "from .helper import LIMIT\n"
                                "class P(Plugin):\n    limit = LIMIT\n")
    write(d, "pkg/helper.py", "LIMIT = 3\n")
    write(d, "pkg/config.json", '{"gallery": "vip"}')
    with caplog.at_level(logging.ERROR, logger="videodetector.backend.plugin_host"):
        host = load((tmp_path / "missing-dir", d), "good", "syntax", "raises", "noclass",
                    "twoclasses", "badconfig", "broken", "absent", "pkg")
    assert [p.name for p in host.plugins] == ["good", "pkg"]
    assert host.plugins[1].config == {"gallery": "vip"} and host.plugins[1].limit == 3
    failed = {name for (name, kind) in host.errors if kind == "load"}
    assert failed == {"syntax", "raises", "noclass", "twoclasses", "badconfig", "broken",
                      "absent"}
    text = caplog.text
    assert "missing-dir is not a directory" in text
    assert "defines no subclass" in text and "defines 2 (A, B)" in text
    assert "cannot activate" in text and "no absent.py" in text
    metrics = metric_samples(host.metrics_text())
    assert metrics[("backend_plugin_errors_total", (("kind", "load"), ("plugin", "syntax")))] == 1
    assert metrics[("backend_plugins_loaded", ())] == 2


def test_star_loads_every_module_of_the_directories(tmp_path: Path) -> None:
    for name in ("one", "two", "_private"):
        write(tmp_path, f"{name}.py", "from videodetector.backend.plugins import Plugin\n"
                                      f"class {name.strip('_').title()}(Plugin):\n    pass\n")
    write(tmp_path, "notes.txt", "not a plugin")
    host = load((tmp_path,), "*")
    assert [p.name for p in host.plugins] == ["one", "two"] and not host.errors


def test_face_stored_returns_while_the_hook_still_runs() -> None:
    """The hooks are queued, never waited for: ``face_stored`` returns while the plugin's
    call is still blocked (told by the hook's state, not by timing the call)."""
    started, release = threading.Event(), threading.Event()

    class Held(Plugin):
        def face_stored(self, face: StoredFace) -> None:
            started.set()
            release.wait(30)

    host = PluginHost(hook_timeout=30.0)
    host.add(Held(None, "held", Path("/p/held.py"), {}), [])  # type: ignore[arg-type]
    face = NewFace((0, 0, 9, 9), np.zeros((112, 112, 3), np.uint8), np.ones(128, np.float32))
    call = threading.Thread(target=host.face_stored, args=(7, FacePost(None, [], None), [face],
                                                           [1]))
    call.start()
    assert started.wait(10)  # the hook runs (in the plugin's worker)
    call.join(10)
    returned = not call.is_alive()  # (before the hook is released)
    release.set()
    assert returned  # returned while the hook was still held
    assert host.drain(10)
    assert not host.errors
    host.close()


def test_stuck_face_stored_calls_are_abandoned_then_events_dropped_and_counted() -> None:
    release = threading.Event()
    seen: list[int] = []

    class Stuck(Plugin):
        def face_stored(self, face: StoredFace) -> None:
            seen.append(face.id)
            release.wait(10)

    host = PluginHost(hook_timeout=0.05)
    host.add(Stuck(None, "stuck", Path("/p/stuck.py"), {}), [])  # type: ignore[arg-type]
    faces = [NewFace((0, 0, 9, 9), np.zeros((112, 112, 3), np.uint8), np.ones(128, np.float32))
             for _ in range(MAX_ABANDONED + 3)]
    host.face_stored(7, FacePost(None, [], None), faces, list(range(1, len(faces) + 1)))
    assert host.drain(10)
    assert seen == list(range(1, MAX_ABANDONED + 1))  # in order; later ones not started
    assert host.errors[("stuck", "timeout")] == MAX_ABANDONED
    assert host.errors[("stuck", "dropped")] == 3
    release.set()
    host.close()


def test_the_documented_example_plugin_loads_and_refuses(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    source = doc.split("# /etc/fkvideo/plugins/adults_only.py\n", 1)[1].split("```", 1)[0]
    write(tmp_path, "adults_only.py", source)
    write(tmp_path, "adults_only.json", '{"min_age": 21}')
    host = load((tmp_path,), "adults_only")
    assert not host.errors and [r.path for r in host.routes["adults_only"]] == ["/stats"]
    face = CandidateFace(user=1, index=0, bbox={"x1": 0, "y1": 0, "x2": 9, "y2": 9},
                         facen=np.zeros(128, np.float32), normalized=np.zeros((112, 112, 3)),
                         meta="", galleries=(), cam_id=None, age=19.6)
    plugin = host.plugins[0]
    assert plugin.preprocess(face) == Reject("estimated age 20 is under 21")
    assert plugin.preprocess(replace(face, age=30.0)) == Annotate({"checked_by": "adults_only"})


# -- a real backend with plugins -----------------------------------------------------------

class Receiver:
    """An HTTP endpoint outside the product that the watch-list plugin POSTs alerts to;
    it answers 500 to an alert from camera ``fail-cam``."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                self.send_response(500 if body.get("cam_id") == "fail-cam" else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/alerts"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Path:
    d = tmp_path_factory.mktemp("plugins")
    write(d, "gate.py", GATE)
    write(d, "broken.py", BROKEN)
    shutil.copy(EXAMPLE, d / "watchlist.py")
    (d / "watchlist.json").write_text(json.dumps({
        "gallery": "watchlist", "threshold": 0.7, "alerts_file": str(d / "alerts.jsonl"),
        "url": receiver.url, "timeout": 2.0}))
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, plugin_dir: Path, store: str | None
           ) -> Iterator[BackendServer]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("backend"), db=store, **SERVER_SETTINGS,
                        metrics_token=METRICS_TOKEN, plugins_dirs=(plugin_dir,),
                        plugins_enabled=("gate", "broken", "watchlist", "missing"),
                        plugin_hook_timeout=0.5)
    with BackendServer(settings) as srv:
        yield srv


@pytest.fixture
def api(server: BackendServer) -> Api:
    return Api(server.url, server.create_token())


def plugin_errors(server: BackendServer, plugin: str, kind: str) -> int:
    assert server.backend is not None
    return server.backend.plugins.errors[(plugin, kind)]


def gate_calls(api: Api, server: BackendServer) -> list[dict]:
    assert server.backend is not None and server.backend.plugins.drain(10)
    r = api.get("/v1/plugins/gate/calls")
    assert r.status_code == 200, r.text
    return r.json()["calls"]


def face_count(api: Api) -> int:
    r = api.get("/v1/faces")
    assert r.status_code == 200, r.text
    return len(r.json()["results"])


def stored_extra(server: BackendServer, face_id: int) -> dict:
    assert server.backend is not None
    return json.loads(server.backend.db.scalar("SELECT extra FROM faces WHERE id = ?",
                                               (face_id,)) or "{}")


def test_preprocess_reject_stores_nothing_and_says_why(api: Api, server: BackendServer) -> None:
    body = api.add_face(person_photo("A"), status=400, plugin_test="reject", cam_id="door")
    assert body["code"] == "PLUGIN_REJECTED" and body["plugin"] == "gate"
    assert "camera door is closed" in body["reason"] and body["face"] == 0
    # one face of a group photo refused: the whole request is (all-or-nothing, as always)
    r = api.post("/v1/face", files={"photo": ("p.jpg", side_by_side(
        person_photo("A"), person_photo("B")), "image/jpeg")},
        data={"mf_selector": "all", "plugin_test": "reject-second"})
    assert error_of(r, 400, "PLUGIN_REJECTED")["face"] == 1
    assert face_count(api) == 0 and gate_calls(api, server) == []
    assert server.backend is not None and server.backend.plugins.rejected["gate"] >= 2
    assert_consistent(server.backend)  # no image left behind by the refused requests


def test_preprocess_sees_the_video_detectors_normalized_faces(api: Api, server: BackendServer
                                                              ) -> None:
    face = api.add_face(person_photo("B"))
    normalized = api.session.get(face["normalized"], timeout=30).content
    r = api.post("/v1/face", files={"face0": ("f.png", normalized, "image/png")},
                 data={"cam_id": "cam-7", "bbox": "[[10, 20, 122, 132]]",
                       "plugin_test": "reject"})
    assert "camera cam-7 is closed" in error_of(r, 400, "PLUGIN_REJECTED")["reason"]
    r = api.post("/v1/face", files={"face0": ("f.png", normalized, "image/png")},
                 data={"cam_id": "cam-7", "plugin_test": "annotate"})
    assert r.status_code == 200, r.text
    assert stored_extra(server, r.json()["results"][0]["id"])["plugins"]["gate"]["side"] == 112
    assert face_count(api) == 2


def test_preprocess_annotation_is_stored_with_each_face(api: Api, server: BackendServer
                                                         ) -> None:
    r = api.post("/v1/face", files={"photo": ("p.jpg", side_by_side(
        person_photo("A"), person_photo("B")), "image/jpeg")},
        data={"mf_selector": "all", "plugin_test": "annotate"})
    assert r.status_code == 200, r.text
    ids = [f["id"] for f in r.json()["results"]]
    assert len(ids) == 2
    for i, face_id in enumerate(ids):
        extra = stored_extra(server, face_id)
        assert extra["plugin_test"] == "annotate"  # the request's own extra field kept
        assert extra["plugins"]["gate"] == {"checked": True, "index": i, "side": 112,
                                            "norm": 1.0}
    calls = gate_calls(api, server)
    assert sorted(c["id"] for c in calls) == sorted(ids)
    assert all(c["annotations"]["checked"] is True for c in calls)


def test_raising_or_nonsense_preprocess_lets_the_face_through(
        api: Api, server: BackendServer, caplog: pytest.LogCaptureFixture) -> None:
    before = plugin_errors(server, "gate", "preprocess")
    with caplog.at_level(logging.ERROR, logger="videodetector.backend.plugin_host"):
        for mode in ("raise", "raise", "nonsense"):
            face = api.add_face(person_photo("C"), plugin_test=mode)
            assert "plugins" not in stored_extra(server, face["id"])
    assert plugin_errors(server, "gate", "preprocess") == before + 3
    logged = [r for r in caplog.records if "plugin gate failed (preprocess)" in r.getMessage()]
    assert len(logged) == (1 if before == 0 else 0)  # once per plugin and kind
    assert "preprocess bug" in logged[0].getMessage() if logged else True
    assert face_count(api) == 3


def test_face_stored_once_per_committed_face_never_for_a_rollback_or_replay(
        api: Api, server: BackendServer) -> None:
    assert server.backend is not None
    first = api.add_face(person_photo("A"), meta="x")
    headers = {"Idempotency-Key": "plugin-replay-1"}
    r1 = api.post("/v1/face", files={"photo": ("p.jpg", person_photo("B"), "image/jpeg")},
                  headers=headers)
    r2 = api.post("/v1/face", files={"photo": ("p.jpg", person_photo("B"), "image/jpeg")},
                  headers=headers)
    assert r1.status_code == r2.status_code == 200
    replayed = r1.json()["results"][0]["id"]
    with CommitFault(server.backend.db):
        r = api.post("/v1/face", files={"photo": ("p.jpg", person_photo("C"), "image/jpeg")})
        assert r.status_code == 503, r.text
    calls = gate_calls(api, server)
    assert sorted(c["id"] for c in calls) == sorted([first["id"], replayed])
    assert face_count(api) == 2
    assert_consistent(server.backend)


def test_raising_and_slow_face_stored_never_delay_or_fail_requests(
        api: Api, server: BackendServer) -> None:
    raised = plugin_errors(server, "gate", "face_stored")
    timeouts = plugin_errors(server, "gate", "timeout")
    api.add_face(person_photo("A"), meta="raise")
    # the slow hook is held until released below (not a 2 s sleep timed against the answer,
    # which a loaded machine can take 1.5 s to give): had the answer waited for the hook,
    # it would have come after the hook's 10 s wait, with the hook's call recorded
    slow = api.add_face(person_photo("B"), meta="sleep")
    after = api.add_face(person_photo("C"))  # served while the slow hook still runs
    assert server.backend is not None and server.backend.plugins.drain(10)
    assert plugin_errors(server, "gate", "face_stored") == raised + 1
    assert plugin_errors(server, "gate", "timeout") == timeouts + 1  # held > 0.5 s timeout
    ids = {c["id"] for c in gate_calls(api, server)}
    assert after["id"] in ids  # the next event did not wait for the slow one
    assert slow["id"] not in ids  # still held: the answer came first
    assert api.post("/v1/plugins/gate/release").json() == {"released": True}
    deadline = time.monotonic() + 10
    while slow["id"] not in {c["id"] for c in gate_calls(api, server)}:  # finished late
        assert time.monotonic() < deadline, "the released hook's call was not counted"
        time.sleep(0.05)
    metrics = metric_samples(
        api.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text)
    assert metrics[("backend_plugin_errors_total", (("kind", "timeout"), ("plugin", "gate")))] \
        == timeouts + 1


def test_handlers_are_mounted_under_the_prefix_with_token_auth(
        api: Api, server: BackendServer) -> None:
    anon = Api(server.url, None)
    error_of(anon.get("/v1/plugins/gate/calls"), 401, "AUTH_FAILED")
    error_of(Api(server.url, "wrong").get("/v1/plugins/gate/calls"), 401, "AUTH_FAILED")
    assert api.get("/v1/plugins/gate/calls").json() == {"calls": []}
    assert api.get("/v0/plugins/gate/calls/").status_code == 200
    assert anon.get("/v1/plugins/gate/public").json() == {"user": None}
    r = api.get("/v1/plugins/gate/async/hello")
    assert r.status_code == 200 and r.json()["word"] == "hello"
    assert isinstance(r.json()["user"], int)
    assert api.post("/v1/plugins/gate/calls").status_code == 405
    # a plugin that failed to load, or was never found, has no routes; the server runs
    assert api.get("/v1/plugins/broken/anything").status_code == 404
    assert plugin_errors(server, "broken", "load") == 1
    assert plugin_errors(server, "missing", "load") == 1


def test_a_raising_handler_fails_only_its_own_route(
        api: Api, server: BackendServer, caplog: pytest.LogCaptureFixture) -> None:
    before = plugin_errors(server, "gate", "handler")
    with caplog.at_level(logging.ERROR, logger="videodetector.backend.plugin_host"):
        for _ in range(2):
            r = api.get("/v1/plugins/gate/boom")
            assert r.status_code == 500 and r.json() == {
                "code": "PLUGIN_ERROR", "reason": "plugin 'gate' failed: ValueError",
                "plugin": "gate"}
    logged = [r for r in caplog.records if "plugin gate failed (handler)" in r.getMessage()]
    assert len(logged) == (1 if before == 0 else 0)  # logged once, counted always
    assert plugin_errors(server, "gate", "handler") == before + 2
    error_of(api.get("/v1/plugins/gate/gone"), 404, "NOT_FOUND")  # its own answer, not a bug
    assert plugin_errors(server, "gate", "handler") == before + 2
    api.add_face(person_photo("D"))  # everything else works
    assert api.get("/v1/plugins/gate/calls").status_code == 200


def test_batch_enrollment_reports_a_rejection_per_item(api: Api, server: BackendServer) -> None:
    items = [{"photo": base64.b64encode(person_photo(n)).decode(), "meta": meta}
             for n, meta in (("A", "reject-meta"), ("B", "fine"))]
    r = api.post("/v1/faces/batch", json={"items": items})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["status"] == "fail" and first["code"] == "PLUGIN_REJECTED"
    assert "meta says no" in first["reason"]
    assert second["status"] == "success" and len(second["face_ids"]) == 1
    assert [c["id"] for c in gate_calls(api, server)] == second["face_ids"]


def mirrored(jpeg: bytes) -> bytes:
    im = Image.open(io.BytesIO(jpeg)).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = im.resize((im.width * 9 // 10, im.height * 9 // 10))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_watchlist_example_alerts_on_a_match(api: Api, server: BackendServer,
                                             plugin_dir: Path, receiver: Receiver) -> None:
    assert api.post("/v1/galleries/watchlist").status_code in (200, 201, 204)
    wanted = api.add_face(person_photo("A"), galleries="watchlist", meta="wanted: A")
    seen = api.add_face(mirrored(person_photo("A")), cam_id="gate-1")  # same person
    api.add_face(person_photo("B"), cam_id="gate-1")  # someone else: no alert
    assert server.backend is not None and server.backend.plugins.drain(10)
    alerts = api.get("/v1/plugins/watchlist/alerts").json()["alerts"]
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert alert["face_id"] == seen["id"] and alert["match_face_id"] == wanted["id"]
    assert alert["match_meta"] == "wanted: A" and alert["cam_id"] == "gate-1"
    assert 0.7 <= alert["confidence"] <= 1.0
    lines = [json.loads(x) for x in (plugin_dir / "alerts.jsonl").read_text().splitlines()]
    assert alert in lines
    other = Api(server.url, server.create_token())  # another token sees none of them
    assert other.get("/v1/plugins/watchlist/alerts").json() == {"alerts": []}
    error_of(api.get("/v1/plugins/watchlist/alerts?limit=0"), 400, "BAD_PARAM")
    error_of(Api(server.url, None).get("/v1/plugins/watchlist/alerts"), 401, "AUTH_FAILED")
    assert alert in receiver.bodies  # POSTed to the configured URL too
    # the receiver fails: the alert is still written, the failure counted
    failures = plugin_errors(server, "watchlist", "face_stored")
    again = api.add_face(mirrored(person_photo("A")), cam_id="fail-cam")
    assert server.backend.plugins.drain(10)
    assert plugin_errors(server, "watchlist", "face_stored") == failures + 1
    assert [a["face_id"] for a in api.get("/v1/plugins/watchlist/alerts").json()["alerts"]] \
        == [again["id"], seen["id"]]
