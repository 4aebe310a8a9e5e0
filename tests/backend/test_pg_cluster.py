"""tests/pg.py itself: who the server runs as, and a kept data directory (bench_pg.py
--keep/--reuse) that survives a stop."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests import pg
from tests.pg import SYSTEM_USER, PgCluster


def test_server_runs_as_the_caller_or_as_pgserver_under_root(pg_cluster: PgCluster) -> None:
    """As root the server runs as the unprivileged ``pgserver``; as any other user it runs
    as that user (CI without root: nothing to create, no chown)."""
    if pg_cluster.datadir is None:
        pytest.skip("an outside server (FKVIDEO_TEST_PG)")
    owner = (pg_cluster.datadir / "data" / "postmaster.pid").stat().st_uid
    expected = SYSTEM_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    assert pwd.getpwuid(owner).pw_name == expected
    assert pg_cluster.user == (SYSTEM_USER if os.geteuid() == 0 else None)
    with psycopg.connect(pg_cluster.url, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A 0700 folder of the caller's (not tmp_path: concurrent pytest runs reset the
    permissions of /tmp/pytest-of-<user> to 0700)."""
    path = Path(tempfile.mkdtemp(prefix="fkvideo-kept-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_kept_cluster_keeps_its_databases(pg_cluster: PgCluster, private_dir: Path) -> None:
    """A kept data directory anywhere (under root: in a 0700 folder of root's, which the
    server user, in its own group, may only traverse) survives a stop."""
    if pg_cluster.datadir is None:
        pytest.skip("an outside server (FKVIDEO_TEST_PG): nothing is started here")
    folder = private_dir / "kept" / "postgres"
    cluster = PgCluster.open(folder, durable=False)
    try:
        url = cluster.database("bench_store")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (42)")
        throwaway = cluster.new_database("gone").rsplit("/", 1)[1]
        other = PgCluster.open(folder, durable=False)  # another bench while it runs
        assert other.attached and other.port == cluster.port
        other.stop()  # leaves the server running
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
    finally:
        cluster.stop()
    assert (folder / "data" / "PG_VERSION").is_file()  # stop left it in place
    cluster = PgCluster.open(folder, durable=False)
    try:
        assert cluster.database("bench_store").rsplit("/", 1)[1] == "bench_store"
        with psycopg.connect(cluster.database("bench_store"), autocommit=True) as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        assert "bench_store" in names and throwaway not in names  # new_database: dropped
        with pytest.raises(ValueError, match="bad database name"):
            cluster.database("no; DROP")
    finally:
        cluster.stop()


def test_a_port_taken_before_the_start_is_not_fatal(pg_cluster: PgCluster,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL cannot bind port 0: the port is picked before the start. Another process
    that took it meanwhile (here: holds it from the start) makes the server start again on
    another port, not fail the tests."""
    if pg_cluster.datadir is None:
        pytest.skip("an outside server (FKVIDEO_TEST_PG): nothing is started here")
    with socket.create_server(("127.0.0.1", 0)) as stranger:
        taken = stranger.getsockname()[1]
        picks = iter([taken])
        real = pg.__dict__["_free_port"]
        monkeypatch.setattr(pg, "_free_port", lambda: next(picks, None) or real())
        cluster = PgCluster.start()
        try:
            assert cluster.port != taken
            with psycopg.connect(cluster.new_database(), autocommit=True) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            cluster.stop()
