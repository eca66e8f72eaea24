"""
`python -m bench.postgres_store`: what the PostgreSQL store's writes cost
(issue 17): an ``append_history`` of 100 events (one room; ten rooms of 10)
and a register's ``add_user`` with its log row, against the CSV store doing
the same on the same disk.

Starts a private PostgreSQL cluster (tests/pg.py's, under /tmp, removed
after) with PostgreSQL's default, durable settings (fsync and
synchronous_commit on: a COMMIT waits for the WAL's fsync, as a CSV append
waits for its own), and runs each store synchronously in this process (one
connection: :class:`chatd.stores.postgres.Direct`; the server adds a thread
hop of tens of µs). Prints the median and 90th percentile of --runs.
The figures go in docs/PERFORMANCE.md, "Issue 17: the PostgreSQL store".
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from chatd.core.events import EventKind, RoomEvent
from chatd.persistence import CsvStore
from chatd.store import HistoryBatch, LogEvent, RoomRecord, UserRecord

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from pg import Cluster, binaries  # noqa: E402  (the tests' private cluster)

NOW = "2026-11-30T01:00:00Z"
HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"


def _done(d: defer.Deferred[Any]) -> None:
    failures: list[Any] = []
    d.addErrback(failures.append)
    if failures:
        failures[0].raiseException()


def _timed(runs: int, make: Callable[[int], defer.Deferred[Any]]) -> tuple[float, float]:
    """Median and 90th percentile of ``make(n)`` (a synchronous store's call), in ms."""
    times = []
    for n in range(runs):
        start = time.perf_counter()
        _done(make(n))
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]


def _batches(first: int, rooms: list[str], per_room: int) -> list[HistoryBatch]:
    return [HistoryBatch(room, first - 1, [RoomEvent(room, first + i, 1_790_000_000.0 + first + i, "someone",
                                                     EventKind.SAY, f"line {first + i} of a conversation")
                                           for i in range(per_room)]) for room in rooms]


def measure(store: Any, runs: int) -> dict[str, tuple[float, float]]:
    rooms = [f"r{n}" for n in range(10)]
    for room in rooms:
        _done(store.add_room(RoomRecord(room, "owner", NOW, room)))
    return {
        "append_history, 1 room x 100 events": _timed(runs, lambda n: store.append_history(
            _batches(1 + n * 100, ["r0"], 100))),
        "append_history, 10 rooms x 10 events": _timed(runs, lambda n: store.append_history(
            _batches(1 + n * 10, rooms, 10))),
        "add_user + register row (a register)": _timed(runs, lambda n: store.add_user(
            UserRecord(f"user{n}", HASH, NOW), LogEvent("register", f"user{n}", details={"address": "::1"}))),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.postgres_store", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args(argv)
    bindir = binaries()
    if bindir is None:
        print("PostgreSQL is not installed (apt-get install postgresql)", file=sys.stderr)
        return 2
    from chatd.stores.postgres import PostgresStore

    cluster = Cluster(bindir, settings=()).start()
    scratch = tempfile.mkdtemp(prefix="chatd-bench-csv-")
    try:
        pg = PostgresStore(cluster.create_database(), Clock(), lambda: NOW)
        _done(pg.load())
        csv = CsvStore(os.path.join(scratch, "data"), run=defer.maybeDeferred, clock=Clock(), now=lambda: NOW)
        csv.load_now()
        results = {"PostgreSQL": measure(pg, args.runs), "CSV": measure(csv, args.runs)}
    finally:
        cluster.remove()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'operation':40} {'PostgreSQL median / p90 ms':>28} {'CSV median / p90 ms':>22}")
    for operation in results["PostgreSQL"]:
        (pm, p9), (cm, c9) = results["PostgreSQL"][operation], results["CSV"][operation]
        print(f"{operation:40} {pm:16.2f} / {p9:7.2f} {cm:12.2f} / {c9:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
