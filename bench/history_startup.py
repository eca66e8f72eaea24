"""
`python -m bench.history_startup`: how long the CSV store's start-up takes
with a long room history (issue 13: 10,000 rooms x 1,000 lines, under 3 s).

Builds a data directory in a temporary directory under /tmp (removed after,
unless --keep): one account, ROOMS rooms in rooms.csv, and for each room
LINES lines of history spread over DAYS day segments, written directly as
the store writes them (the same header and row format, not through the
store: building takes seconds, not hours). Then times
``CsvStore.load_now()`` (median of --runs, page cache warm after the build;
--cold evicts the files' pages first; --drop-caches, as root, drops the
whole machine's page cache, directories and inodes too, as after a reboot)
and checks what it loaded.
The figure goes in docs/PERFORMANCE.md, "Issue 13: history".
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from chatd.persistence import CsvStore, ROOMS_TABLE, USERS_TABLE, _encode_rows
from chatd.store import HistoryTail
from chatd.stores.csv_history import HISTORY_TABLE

#: A safe ceiling for what this script may write (bytes): it refuses sizes beyond it.
MAX_BYTES = 4 << 30


def build(data_dir: str, rooms: int, lines: int, days: int) -> int:
    """Write the data directory; returns the bytes of history written."""
    os.makedirs(os.path.join(data_dir, "history"), mode=0o700)
    with open(os.path.join(data_dir, "users.csv"), "wb") as users:
        users.write(_encode_rows([USERS_TABLE.header(), ["owner", "$argon2id$v=19$m=8,t=1,p=1$x$y", "t"]]))
    room_rows = [ROOMS_TABLE.header()] + [[f"room{n}", "owner", "2026-01-01T00:00:00Z", f"r{n:08x}"]
                                          for n in range(rooms)]
    with open(os.path.join(data_dir, "rooms.csv"), "wb") as out:
        out.write(_encode_rows(room_rows))
    header = _encode_rows([HISTORY_TABLE.header()])
    per_day = -(-lines // days)
    # One room's segments, built once: the rows are the same in every room (ids, times, texts).
    segments = []
    for day in range(days):
        first = day * per_day + 1
        rows = [[str(i), f"2026-10-{day + 1:02d}T12:{(i // 60) % 60:02d}:{i % 60:02d}.000000Z", "say", "someone",
                 f"line {i} of a conversation that goes on for a while", str(i)]
                for i in range(first, min(first + per_day, lines + 1))]
        segments.append((f"2026-10-{day + 1:02d}.csv", header + _encode_rows(rows)))
    written = 0
    for n in range(rooms):
        room_dir = os.path.join(data_dir, "history", f"r{n:08x}")
        os.mkdir(room_dir, 0o700)
        for name, data in segments:
            with open(os.path.join(room_dir, name), "wb") as out:
                out.write(data)
            written += len(data)
    return written


def evict(data_dir: str) -> None:
    """Write back and drop the cached pages of every file under ``data_dir`` (not the machine's whole cache)."""
    os.sync()
    for directory, _, files in os.walk(data_dir):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


#: The longest the sync before a drop of the caches may take (seconds).
SYNC_TIMEOUT = 120


def drop_caches() -> str | None:
    """
    Write back dirty pages (``sync``, at most SYNC_TIMEOUT s) and drop the
    page cache, dentries and inodes (``echo 3 > /proc/sys/vm/drop_caches``);
    returns why it could not (not root, no such file, sync too slow), or None.
    """
    if os.geteuid() != 0:
        return "not root: /proc/sys/vm/drop_caches needs root (run as root, or use --cold)"
    try:
        subprocess.run(["sync"], check=True, timeout=SYNC_TIMEOUT)
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("3\n")
    except subprocess.TimeoutExpired:
        return f"sync took over {SYNC_TIMEOUT} s"
    except (OSError, subprocess.CalledProcessError) as error:
        return f"could not drop the caches: {error}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.history_startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rooms", type=int, default=10_000)
    ap.add_argument("--lines", type=int, default=1_000, help="lines of history per room")
    ap.add_argument("--days", type=int, default=10, help="day segments per room")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold", action="store_true",
                    help="evict the data files' pages from the page cache before each run (posix_fadvise DONTNEED "
                         "on each file: only this script's files; directories and inodes stay cached)")
    ap.add_argument("--drop-caches", action="store_true",
                    help="as root: sync and drop the whole page cache, dentries and inodes before each run "
                         "(echo 3 > /proc/sys/vm/drop_caches: a start after a reboot); refuses if it cannot")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args(argv)
    if args.drop_caches and os.geteuid() != 0:
        ap.error("--drop-caches: " + (drop_caches() or ""))
    if args.rooms * args.lines * 80 > MAX_BYTES or args.days < 1 or args.runs < 1:
        ap.error(f"refusing: about {args.rooms * args.lines * 80 >> 20} MiB, over the {MAX_BYTES >> 20} MiB bound")
    base = tempfile.mkdtemp(prefix="chatd-history-startup-", dir="/tmp")
    data_dir = os.path.join(base, "data")
    try:
        started = time.perf_counter()
        size = build(data_dir, args.rooms, args.lines, args.days)
        print(f"built {args.rooms} rooms x {args.lines} lines ({args.days} segments each, "
              f"{size / 2**20:.0f} MiB) in {time.perf_counter() - started:.1f} s")
        timings = []
        for _ in range(args.runs):
            if args.cold:
                evict(data_dir)
            if args.drop_caches:
                why = drop_caches()
                if why is not None:
                    print(f"--drop-caches: {why}", file=sys.stderr)
                    return 1
            store = CsvStore(data_dir, run=None, clock=None, now=lambda: "")  # type: ignore[arg-type]  # load_now runs in this thread
            started = time.perf_counter()
            loaded = store.load_now()
            timings.append(time.perf_counter() - started)
            expected = HistoryTail(args.lines, args.lines)
            assert len(loaded.rooms) == args.rooms and len(loaded.history) == args.rooms, "rooms missing"
            assert all(tail == expected for tail in loaded.history.values()), "a wrong tail"
            assert not loaded.repairs and not loaded.migrations, loaded.repairs + loaded.migrations
        print(f"load_now(): median {statistics.median(timings):.3f} s over {args.runs} run(s) "
              f"({', '.join(f'{t:.3f}' for t in timings)}){' cold' if args.cold else ''}{' caches dropped' if args.drop_caches else ''}")
        return 0
    finally:
        if args.keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(base)


if __name__ == "__main__":
    sys.exit(main())
