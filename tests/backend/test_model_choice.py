"""embedding_model "auto" (model_choice.py): the rule, and what a real backend start on a real
store (SQLite, and PostgreSQL when one can be started) chooses, records and keeps.

The CPU's bf16 capability is injected (``Backend(settings, cpu_has_bf16=...)``): the tests
do not depend on this machine's CPU. No model runs: a Backend loads its models on first use.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from videodetector.backend.cli import main as cli_main
from videodetector.backend.embeddings import Coverage
from videodetector.backend.model_choice import BF16, F32, PREFERENCE, choose_embedding_model
from videodetector.backend.regenerate import serving_model
from videodetector.backend.server import BackendServer
from videodetector.backend.service import Backend, ModelCoverageError
from videodetector.backend.settings import AUTO_MODEL, EMBEDDING_MODELS, Settings, SettingsError
from videodetector.backend.storage import open_database
from videodetector.backend.stores.store_model import SqlStoreModelStore

INT8 = "sface-2021dec-int8"


def cov(faces: int, **covered: int) -> dict[str, Coverage]:
    """Coverage of every model: ``covered`` by name (f32, bf16, int8), 0 for the others."""
    names = {"f32": F32, "bf16": BF16, "int8": INT8}
    got = {names[k]: v for k, v in covered.items()}
    return {m: Coverage(m, faces, got.get(m, 0)) for m in EMBEDDING_MODELS}


# -- the rule ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("configured", "recorded", "coverage", "cpu", "model", "record"), [
    # an explicit model: that one, whatever the store or the CPU
    (F32, BF16, cov(3, bf16=3), True, F32, False),
    (INT8, None, cov(0), True, INT8, False),
    (BF16, None, cov(5, f32=5), False, BF16, False),
    # auto: the recorded model first
    (AUTO_MODEL, F32, cov(0), True, F32, False),
    (AUTO_MODEL, INT8, cov(4, f32=4), True, INT8, False),
    # auto, nothing recorded, an empty store: the CPU decides
    (AUTO_MODEL, None, cov(0), True, BF16, True),
    (AUTO_MODEL, None, cov(0), False, F32, True),
    (AUTO_MODEL, None, {}, True, BF16, True),
    # auto, nothing recorded, faces: the model covering them all (old default first)
    (AUTO_MODEL, None, cov(7, f32=7), True, F32, True),
    (AUTO_MODEL, None, cov(7, f32=7, bf16=7, int8=7), True, F32, True),
    (AUTO_MODEL, None, cov(7, f32=2, bf16=7), False, BF16, True),
    (AUTO_MODEL, None, cov(7, f32=6, int8=7), True, INT8, True),
    # ... none covers them all: the one covering most, not recorded (the start then fails
    # unless allow_partial)
    (AUTO_MODEL, None, cov(7, f32=3, int8=5), True, INT8, False),
    (AUTO_MODEL, None, cov(7, f32=3, bf16=3), True, F32, False),
])
def test_rule(configured: str, recorded: str | None, coverage: dict[str, Coverage], cpu: bool,
              model: str, record: bool) -> None:
    choice = choose_embedding_model(configured, recorded, coverage, cpu)
    assert (choice.model, choice.record) == (model, record)
    assert choice.reason


@pytest.mark.parametrize(("configured", "recorded"), [("dlib", None), (AUTO_MODEL, "dlib")])
def test_rule_refuses_unknown_models(configured: str, recorded: str | None) -> None:
    with pytest.raises(ValueError, match="dlib"):
        choose_embedding_model(configured, recorded, {}, True)


@settings(max_examples=200, deadline=None)
@given(configured=st.sampled_from((AUTO_MODEL, *EMBEDDING_MODELS)),
       recorded=st.none() | st.sampled_from(EMBEDDING_MODELS),
       faces=st.integers(0, 50), fractions=st.tuples(*(st.floats(0, 1),) * 3),
       cpu=st.booleans())
def test_rule_properties(configured: str, recorded: str | None, faces: int,
                         fractions: tuple[float, float, float], cpu: bool) -> None:
    coverage = {m: Coverage(m, faces, round(f * faces))
                for m, f in zip(EMBEDDING_MODELS, fractions, strict=True)}
    choice = choose_embedding_model(configured, recorded, coverage, cpu)
    assert choice.model in EMBEDDING_MODELS
    complete = [m for m in PREFERENCE if coverage[m].complete]
    if configured != AUTO_MODEL:
        assert choice.model == configured and not choice.record
    elif recorded is not None:
        assert choice.model == recorded and not choice.record
    elif faces == 0:
        assert choice.model == (BF16 if cpu else F32) and choice.record
    elif complete:  # never a model that leaves a face out when one covers them all
        assert choice.model == complete[0] and choice.record
    else:  # the best coverage there is, never recorded
        assert coverage[choice.model].covered == max(c.covered for c in coverage.values())
        assert not choice.record


def test_settings_default_is_auto_and_bad_values_name_the_option() -> None:
    assert Settings().embedding_model == AUTO_MODEL
    with pytest.raises(SettingsError, match="embedding_model must be auto or one of"):
        Settings(embedding_model="automatic")


# -- a real backend on a real store -------------------------------------------------------------

def start(data_dir: Path, db: str | None, cpu: bool, **values: object) -> Backend:
    return Backend(Settings(data_dir=data_dir, db=db, preload_models=False, log_level="warning",
                            **values),  # type: ignore[arg-type]
                   cpu_has_bf16=lambda: cpu)


def recorded(data_dir: Path, db: str | None) -> str | None:
    store = open_database(Settings(data_dir=data_dir, db=db))
    try:
        return SqlStoreModelStore(store).recorded()
    finally:
        store.close()


def old_site(data_dir: Path, db: str | None, faces: int, model: str = F32,
             last_model: str | None = None) -> None:
    """A store as the previous version left it: schema at head, ``faces`` faces enrolled
    with ``model`` (the old default; the last one with ``last_model``), no model recorded."""
    store = open_database(Settings(data_dir=data_dir, db=db))
    rng = np.random.default_rng(1)
    try:
        with store.transaction() as conn:
            conn.execute("INSERT INTO users (token_hash, kind, created) VALUES ('h', 'long', 'c')")
            user = conn.execute("SELECT id FROM users").fetchone()[0]
            for i in range(faces):
                vec = rng.normal(size=128).astype(np.float32)
                conn.execute(
                    "INSERT INTO faces (user_id, meta, timestamp, ts, day, x1, y1, x2, y2, "
                    "photo, photo_hash, thumbnail, normalized, embedding, model) VALUES "
                    "(?, ?, 't', ?, 'd', 0, 0, 1, 1, 'p', 'h', 't', 'n', ?, ?)",
                    (user, f"face {i}", 100.0 + i, (vec / np.linalg.norm(vec)).tobytes(),
                     last_model if last_model and i == faces - 1 else model))
    finally:
        store.close()


def test_new_store_on_a_bf16_cpu_chooses_bf16_and_keeps_it(
        tmp_path: Path, db_url: str | None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "videodetector.backend.service"):
        backend = start(tmp_path, db_url, cpu=True)
    try:
        assert backend.model == backend.settings.embedding_model == BF16
        assert backend.persons.settings.embedding_model == BF16  # person matching's confidence
        assert backend.engine.embedding_model == BF16
        assert backend.configured_model == AUTO_MODEL
        assert f"embedding model {BF16} (auto: new store and this CPU runs bf16)" in caplog.text
    finally:
        backend.close()
    assert recorded(tmp_path, db_url) == BF16
    # the recorded choice survives a restart, also on a CPU without native bf16
    backend = start(tmp_path, db_url, cpu=False)
    try:
        assert backend.model == BF16
        assert backend.model_choice.reason == "auto: recorded for this store"
    finally:
        backend.close()


def test_new_store_on_a_cpu_without_bf16_chooses_f32(tmp_path: Path) -> None:
    backend = start(tmp_path, None, cpu=False)
    backend.close()
    assert backend.model == F32 and recorded(tmp_path, None) == F32


def test_an_existing_f32_store_stays_f32_under_auto(tmp_path: Path, db_url: str | None) -> None:
    """A site upgraded to this version (faces, nothing recorded) keeps its model on a bf16
    CPU, and records it."""
    old_site(tmp_path, db_url, faces=3)
    backend = start(tmp_path, db_url, cpu=True)
    try:
        assert backend.model == F32
        assert backend.model_choice.reason == "auto: it covers the store's 3 faces"
        assert len(backend.index(1)) == 3
    finally:
        backend.close()
    assert recorded(tmp_path, db_url) == F32


def test_a_legacy_sqlite_site_is_upgraded_and_stays_f32(tmp_path: Path) -> None:
    """A database of the code before Alembic (migrated up to head at start) under auto."""
    from tests.backend import legacy_schema

    old = legacy_schema.build_sqlite(tmp_path / "backend.sqlite3")
    vec = np.full(128, 1 / np.sqrt(128), np.float32).tobytes()
    old.execute("INSERT INTO users (token_hash, kind, created) VALUES ('h', 'long', 'c')")
    old.execute("INSERT INTO faces (user_id, meta, timestamp, ts, day, x1, y1, x2, y2, photo, "
                "photo_hash, thumbnail, normalized, embedding) VALUES (1, '', 't', 1.0, 'd', "
                "0, 0, 1, 1, 'p', 'h', 't', 'n', ?)", (vec,))
    old.close()
    backend = start(tmp_path, None, cpu=True)
    backend.close()
    assert backend.model == F32 and recorded(tmp_path, None) == F32


def test_an_explicit_model_is_recorded_and_kept_by_auto(tmp_path: Path,
                                                        db_url: str | None) -> None:
    start(tmp_path, db_url, cpu=True, embedding_model=INT8).close()
    assert recorded(tmp_path, db_url) == INT8
    backend = start(tmp_path, db_url, cpu=True)
    backend.close()
    assert backend.model == INT8 and backend.model_choice.reason == "auto: recorded for this store"
    # a recorded auto choice is replaced by an explicit model that covers the store
    start(tmp_path, db_url, cpu=True, embedding_model=F32).close()
    assert recorded(tmp_path, db_url) == F32


def test_an_explicit_model_that_does_not_cover_the_store_is_not_recorded(
        tmp_path: Path) -> None:
    old_site(tmp_path, None, faces=2)
    with pytest.raises(ModelCoverageError):
        start(tmp_path, None, cpu=True, embedding_model=BF16)
    partial = start(tmp_path, None, cpu=True, embedding_model=BF16, allow_partial=True)
    partial.close()
    assert recorded(tmp_path, None) is None
    backend = start(tmp_path, None, cpu=True)
    backend.close()
    assert backend.model == F32


def test_a_store_covered_by_no_model_fails_under_auto_and_records_nothing(
        tmp_path: Path) -> None:
    """One face enrolled with bf16 (a site that served bf16 with allow_partial), two with
    f32: auto takes f32 (covers most) and fails as an explicit f32 would."""
    old_site(tmp_path, None, faces=3, last_model=BF16)
    with pytest.raises(ModelCoverageError, match=f"--embedding-model {F32}"):
        start(tmp_path, None, cpu=True)
    assert recorded(tmp_path, None) is None


def test_backends_starting_together_on_one_store_agree(tmp_path: Path,
                                                       db_url: str | None) -> None:
    """Both read "nothing recorded" before either writes (the barrier in the CPU probe, which
    runs after that read); one CPU runs bf16, the other does not: the first writer wins."""
    open_database(Settings(data_dir=tmp_path, db=db_url)).close()  # the schema, no faces
    barrier = threading.Barrier(2, timeout=30)
    got: dict[bool, Backend] = {}
    errors: list[BaseException] = []

    def run(cpu: bool) -> None:
        def probe() -> bool:
            barrier.wait()
            return cpu
        try:
            got[cpu] = Backend(Settings(data_dir=tmp_path, db=db_url, preload_models=False),
                               cpu_has_bf16=probe)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(cpu,)) for cpu in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    models = {b.model for b in got.values()}
    for b in got.values():
        b.close()
    assert len(models) == 1 and models == {recorded(tmp_path, db_url)}
    reasons = sorted(b.model_choice.reason for b in got.values())
    assert reasons[1] == "auto: recorded for this store", reasons


def test_regenerate_defaults_to_the_serving_model(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    start(tmp_path, None, cpu=True, embedding_model=INT8).close()
    assert serving_model(Settings(data_dir=tmp_path)) == INT8
    assert serving_model(Settings(data_dir=tmp_path), BF16) == BF16
    assert serving_model(Settings(data_dir=tmp_path, embedding_model=F32)) == F32
    assert cli_main(["regenerate", "--data-dir", str(tmp_path), "--stats-interval", "0",
                     "--log-level", "warning"]) == 0
    assert f"regenerate facens with {INT8}" in capsys.readouterr().err


def test_models_endpoint_says_which_model_and_why(tmp_path: Path) -> None:
    start(tmp_path, None, cpu=True).close()  # the store records bf16 (a bf16 CPU)
    with BackendServer(Settings(data_dir=tmp_path, preload_models=False,
                                log_level="warning")) as srv:
        token = srv.create_token()
        r = requests.get(srv.url + "/v1/models", headers={"Authorization": f"Token {token}"},
                         timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["active"], body["configured"], body["chosen_because"]) == \
        (BF16, AUTO_MODEL, "auto: recorded for this store")


def test_a_store_that_cannot_record_the_choice_still_starts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The COMMIT of the record fails in SQLite itself (a deferred foreign key, as a full disk
    fails a COMMIT in WAL mode; faultkit.CommitFault's way): the backend starts with its choice
    and a warning; the next start records it."""
    old_site(tmp_path, None, faces=2)
    store = open_database(Settings(data_dir=tmp_path))
    with store.lock:
        store.conn.executescript(
            "CREATE TABLE fault_parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE fault_child (ref INTEGER REFERENCES fault_parent (id) "
            "DEFERRABLE INITIALLY DEFERRED);"
            "CREATE TRIGGER fault_settings AFTER INSERT ON settings BEGIN "
            "INSERT INTO fault_child VALUES (1); END;")
    store.close()
    with caplog.at_level(logging.WARNING, "videodetector.backend.model_choice"):
        backend = start(tmp_path, None, cpu=True)
    backend.close()
    assert backend.model == F32 and "could not record the embedding model" in caplog.text
    assert recorded(tmp_path, None) is None
    store = open_database(Settings(data_dir=tmp_path))
    with store.lock:
        store.conn.execute("DROP TRIGGER fault_settings")
    store.close()
    start(tmp_path, None, cpu=True).close()
    assert recorded(tmp_path, None) == F32
