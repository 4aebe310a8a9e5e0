"""A real PostgreSQL 16 with pgvector for the tests, started and stopped by the tests themselves.

Where the server comes from, first found wins:

1. ``FKVIDEO_TEST_PG`` = a ``postgresql://`` URL of a running server whose user may create
   databases (and the ``vector`` extension); nothing is started.
2. The binaries of the ``pgserver`` wheel (PyPI: PostgreSQL 16 + pgvector, a test
   dependency), else Debian's ``/usr/lib/postgresql/<version>/bin`` (``apt-get install
   postgresql postgresql-<version>-pgvector``).

PostgreSQL refuses to run as root (CI runs as root): then initdb and the server run as the
unprivileged system user ``pgserver`` (created with ``useradd`` when missing, as the pgserver
package itself does), the data directory is a fresh ``/tmp/fkvideo-pg-*`` owned by it, and the
folders leading to the binaries are made traversable. The server listens on 127.0.0.1 on a free
port with ``fsync=off`` (test data, speed). PostgreSQL cannot bind port 0 (its ``port`` is 1 to
65535): the port is held (``tests.ports``) from before the start until ``stop``, so no other
process takes it while the server starts or while a fault test has it stopped
(``server_stop``/``server_start``). Each test database is ``CREATE DATABASE ... TEMPLATE`` of
one that has the extension already (a few ms).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.ports import hold_port

SYSTEM_USER = "pgserver"
TEMPLATE_DB = "fkvideo_template"


class PgUnavailable(RuntimeError):
    """PostgreSQL could not be started here (the message says why)."""


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("pgserver")  # not imported: it only brings the binaries
    if spec is not None and spec.submodule_search_locations:
        bindir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
        if (bindir / "postgres").is_file():
            return bindir
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return Path(found[-1]).parent
    raise PgUnavailable("no PostgreSQL binaries: neither the pgserver wheel nor Debian's "
                        "postgresql package is installed (scripts/setup.sh installs them)")


def _ensure_user(name: str) -> int:
    import pwd
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin",
                        name], check=True, capture_output=True)
        return pwd.getpwnam(name).pw_uid


def _traversable(path: Path) -> None:
    """o+rx on ``path``'s folders up to / and on everything below ``path`` (the binaries and
    their libraries, for the unprivileged server user)."""
    for p in [path, *path.parents]:
        p.chmod(p.stat().st_mode | 0o055)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(root) / name
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o055)


@dataclass
class PgCluster:
    """One throwaway PostgreSQL server (``start``/``stop``), or an outside one (``url``)."""

    url: str = ""  # of the maintenance database, as the superuser
    datadir: Path | None = None
    bindir: Path | None = None
    user: str | None = None  # the system user the server runs as (root: SYSTEM_USER)
    port: int = 0
    durable: bool = False  # fsync and synchronous commit on (benchmarks), off for tests
    keep: bool = False  # a kept data directory (``open``): ``stop`` leaves it in place
    attached: bool = False  # ``open`` found its server running: ``stop`` leaves it running
    _dbs: list[str] = field(default_factory=list)
    _held: socket.socket | None = None  # holds ``port`` (tests.ports) for a launched server

    @classmethod
    def start(cls, durable: bool = False) -> PgCluster:
        """``durable``: fsync and synchronous commit on, as a site runs it (benchmarks);
        tests run without them."""
        outside = os.environ.get("FKVIDEO_TEST_PG")
        if outside:
            cluster = cls(url=outside)
        else:
            cluster = cls(bindir=_bin_dir())
            cluster._launch(durable)
        cluster._make_template()
        return cluster

    @classmethod
    def open(cls, folder: Path, durable: bool = True) -> PgCluster:
        """A server on the data directory ``folder`` (benchmarks: built once, measured many
        times): initdb when it is new, else the databases already there are reused; ``stop``
        stops the server and leaves the folder. A server already running on ``folder`` (another
        bench's) is used as it is and left running."""
        cluster = cls(bindir=_bin_dir(), keep=True)
        cluster._launch(durable, Path(folder))
        cluster._make_template()
        return cluster

    def _run(self, *args: str) -> None:
        assert self.bindir is not None
        kw: dict = {}
        if self.user:  # its own group too: root's group would take root's group bits
            import pwd
            kw = {"user": self.user, "group": pwd.getpwnam(self.user).pw_gid,
                  "extra_groups": []}
        r = subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True,
                           text=True, timeout=60, **kw)
        if r.returncode:
            raise PgUnavailable(f"{args[0]} failed ({r.returncode}): {r.stderr.strip()[-800:]}")

    def _launch(self, durable: bool = False, folder: Path | None = None) -> None:
        assert self.bindir is not None
        self.durable = durable
        if folder is None:
            self.datadir = Path(tempfile.mkdtemp(prefix="fkvideo-pg-"))
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self.datadir = folder.resolve()
        if os.geteuid() == 0:  # postgres will not run as root
            self.user = SYSTEM_USER
            try:
                uid = _ensure_user(SYSTEM_USER)
                _traversable(self.bindir.parent)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise PgUnavailable(f"running as root, and no unprivileged user "
                                    f"{SYSTEM_USER!r} could be set up: {exc}") from exc
            if folder is not None:  # the server user must reach the kept folder
                for p in self.datadir.parents:
                    p.chmod(p.stat().st_mode | 0o001)
            os.chown(self.datadir, uid, -1)
            self.datadir.chmod(0o700)
        pgdata = self.datadir / "data"
        if folder is not None and self._running(pgdata):  # another process's server: use it
            self.attached = True
            return
        if not (pgdata / "PG_VERSION").is_file():
            self._run("initdb", "-D", str(pgdata), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--locale=C")
        self._held = hold_port()  # released by stop (PostgreSQL sets SO_REUSEADDR too)
        self.port = self._held.getsockname()[1]
        try:
            self.server_start()
        except PgUnavailable:
            self._release()
            raise
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def _running(self, pgdata: Path) -> bool:
        """Whether a server runs on ``pgdata`` (then ``port`` and ``url`` are its)."""
        pid_file = pgdata / "postmaster.pid"
        if not pid_file.is_file():
            return False
        try:
            self._run("pg_ctl", "-D", str(pgdata), "status")
        except PgUnavailable:
            return False
        self.port = int(pid_file.read_text().splitlines()[3])
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return True

    def _server_options(self) -> str:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.datadir} -c max_connections=300 "
        return opts + ("-c shared_buffers=256MB" if self.durable else "-F -c shared_buffers=32MB "
                       "-c synchronous_commit=off -c full_page_writes=off")

    def server_stop(self) -> None:
        """Stop the server now (fault tests: the database goes away)."""
        assert self.datadir is not None
        self._run("pg_ctl", "-D", str(self.datadir / "data"), "-w", "-m", "fast", "stop")

    def server_start(self) -> None:
        assert self.datadir is not None
        opts = self._server_options()
        self._run("pg_ctl", "-D", str(self.datadir / "data"), "-w", "-t", "60", "-o", opts,
                  "-l", str(self.datadir / "log"), "start")

    def _admin(self, *statements: str, db: str | None = None) -> None:
        import psycopg
        url = self.url if db is None else self.db_url(db)
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                    for sql in statements:
                        conn.execute(sql)
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PgUnavailable(f"cannot connect to {url}: {exc}") from exc
                time.sleep(0.2)

    def _make_template(self) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}", f"CREATE DATABASE {TEMPLATE_DB}")
        try:
            self._admin("CREATE EXTENSION IF NOT EXISTS vector", db=TEMPLATE_DB)
        except Exception as exc:
            raise PgUnavailable(f"the pgvector extension is not available: {exc}") from exc
        self._dbs.append(TEMPLATE_DB)

    def db_url(self, name: str) -> str:
        base, _, _ = self.url.rpartition("/")
        return f"{base}/{name}"

    def database(self, name: str) -> str:
        """The URL of the database ``name``, created (empty, with the vector extension) when
        missing; kept by ``stop`` on a kept cluster."""
        import psycopg
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"bad database name: {name!r}")
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone()
        if not exists:
            self._admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
        return self.db_url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database (with the vector extension); returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
        self._dbs.append(name)
        return self.db_url(name)

    def copy_database(self, url: str, prefix: str = "c") -> str:
        """A new database with the contents of the one at ``url`` (nobody connected to it)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {url.rsplit('/', 1)[1]}")
        self._dbs.append(name)
        return self.db_url(name)

    def stop(self) -> None:
        if self.keep:  # the throwaway databases (new_database) go; database(name) ones stay
            for name in reversed(self._dbs):
                if name != TEMPLATE_DB:
                    try:
                        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                    except PgUnavailable:
                        pass
        if self.attached:
            return
        if self.datadir is None:  # an outside server: drop what we made
            for name in reversed(self._dbs):
                try:
                    self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                except PgUnavailable:
                    pass
            return
        try:
            self._run("pg_ctl", "-D", str(self.datadir / "data"), "-w", "-m",
                      "fast" if self.keep else "immediate", "stop")
        except PgUnavailable:
            pass
        self._release()
        if not self.keep:
            shutil.rmtree(self.datadir, ignore_errors=True)
