"""
A private PostgreSQL cluster for the tests of chatd.stores.postgres: Debian's
binaries (/usr/lib/postgresql/*/bin), ``initdb`` into a temporary directory
(as the ``postgres`` OS user when the tests run as root: initdb refuses
root; ``subprocess``'s ``user=``, so the PID we hold is postgres's own),
``postgres`` on a free loopback port with its socket in that directory,
stopped by its PID (SIGINT: PostgreSQL's fast shutdown). Never the
packaged service. docs/OPERATIONS.md, "PostgreSQL store".

Fixtures: ``pg_cluster`` (one per session, fsync off: the tests check
chatd, not PostgreSQL's own durability), ``pg_dsn`` (a fresh, empty
database on it per test, dropped after) and ``own_pg_cluster`` (a cluster
for one test, which may stop and start it).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from daemon import Conn, free_port

#: Settings for a test cluster: fast and small (no fsync, which only matters if the machine crashes).
FAST = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=60")


def binaries() -> str | None:
    """The directory of the newest installed PostgreSQL's programs, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[-3]))
    return os.path.dirname(found[-1]) if found else None


class Cluster:
    """
    One private cluster: :meth:`start` (initdb on the first start), :meth:`stop`
    (SIGINT to its PID, waited for), :meth:`dsn` for a database on it,
    :meth:`create_database`. ``settings``: extra ``postgres`` arguments.
    """

    def __init__(self, bindir: str, settings: tuple[str, ...] = FAST) -> None:
        self.bindir = bindir
        self.settings = settings
        # Short: the socket's path (DIR/.s.PGSQL.PORT) must fit in 107 bytes.
        self.dir = tempfile.mkdtemp(prefix="chatd-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        #: subprocess arguments that run a program as the ``postgres`` user (when we are root).
        self._as: dict[str, object] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self._names = itertools.count(1)

    def _run(self, *command: str) -> None:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
                       **self._as)  # type: ignore[call-overload]

    def start(self, timeout: float = 30.0) -> Cluster:
        if not os.path.exists(self.data):
            self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-A", "trust", "-U", "chatd",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        log = open(os.path.join(self.dir, "postgres.log"), "ab")
        self.process = subprocess.Popen(  # type: ignore[call-overload]
            [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port), "-k", self.dir,
             "-c", "listen_addresses=127.0.0.1", *self.settings], stdout=log, stderr=log,
            **self._as)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{self.log()}")
            ready = subprocess.run([os.path.join(self.bindir, "pg_isready"), "-q", "-h", "127.0.0.1",
                                    "-p", str(self.port)], timeout=10)
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not accept connections within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shut-down (SIGINT to the PID we started), waited for."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "postgres.log"), encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://chatd@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        name = f"chatd_test_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {dsn.rsplit('/', 1)[1]} WITH (FORCE)")


def need_binaries() -> str:
    """The PostgreSQL programs' directory; skips the test (with why) if there are none, or no psycopg."""
    bindir = binaries()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres; .ci/run installs "
                    "Debian's postgresql)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install '.[postgres]')")
    return bindir


def _running() -> Iterator[Cluster]:
    cluster = Cluster(need_binaries()).start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One private PostgreSQL cluster for the session, stopped by PID at the end."""
    yield from _running()


@pytest.fixture
def own_pg_cluster() -> Iterator[Cluster]:
    """A private cluster for one test alone (one that stops and starts it), removed after."""
    yield from _running()


@pytest.fixture
def pg_dsn(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh, empty database of the session's cluster, dropped after the test."""
    dsn = pg_cluster.create_database()
    try:
        yield dsn
    finally:
        pg_cluster.drop_database(dsn)


def talk_in_lab(port: int, lines: int, *first: str) -> None:
    """On a daemon: register ann, create and enter lab, send ``first`` (commands) and ``line 1``..``line N``."""
    ann = Conn(port)
    ann.register("ann")
    ann.enter("ann", "lab", create=True)
    ann.send(*first, *(f"line {n}" for n in range(1, lines + 1)))
    ann.expect(rf"ann: line {lines}\r\n")
    ann.close()


def back_in_lab(port: int) -> str:
    """On a daemon (restarted): ann logs in and joins lab; the text up to the join (the replay)."""
    ann = Conn(port)
    ann.login("ann")
    ann.send("join lab")
    return ann.expect(r"\* ann joined lab\r\n")
