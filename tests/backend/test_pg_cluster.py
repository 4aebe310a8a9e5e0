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


def test_the_port_stays_the_clusters_while_it_is_stopped() -> None:
    """PostgreSQL cannot bind port 0: its port is held (tests.ports) from before the start
    until ``stop``. No other process can bind it while the server runs, nor while a fault
    test has it stopped, and the server comes back on it."""
    if os.environ.get("FKVIDEO_TEST_PG"):
        pytest.skip("an outside server (FKVIDEO_TEST_PG): nothing is started here")
    cluster = PgCluster.start()
    try:
        cluster.server_stop()
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", cluster.port))
        cluster.server_start()
        with psycopg.connect(cluster.new_database(), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        cluster.stop()
    # stop released it: the holder is closed and a server can listen there again. (Not a
    # plain bind: the test's own connections leave the port in TIME_WAIT for up to 60 s,
    # which refuses a bind without SO_REUSEADDR whoever held the port.)
    assert cluster._held is None  # noqa: SLF001
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", cluster.port))
        other.listen()
