"""
`python -m bench.redis_bus`: what the Redis bus (chatd.buses.redis) costs in
CPU per room line (issue 17): one node publishing LINES lines per reactor
turn (one entry per turn: encode + EVALSHA, then XREAD and decode of its own
entry back), and what each further node reading the stream adds (XREAD +
decode + delivery of every entry).

Starts a private redis-server (tests/redis.py's, under /tmp, removed after),
runs every bus in this process on the default reactor and measures this
process's CPU time (``time.process_time``, user and system; redis-server's
own CPU is not counted) over ``--turns`` turns, minus the same loop of turns with no bus
(the loop's own cost). Prints µs of CPU per line and per entry. The figures
go in docs/PERFORMANCE.md, "Issue 17: the Redis bus".

``--rate R`` measures latency instead: the publishing node says R lines per
second for ``--seconds``, one line per reactor turn as a paced room's senders
arrive, and every node (the publisher's own read back included) records the
time from ``publish`` to delivery; prints p50/p99 per node count, the
entries written (how many lines each carried) and the process's CPU per line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from twisted.internet import defer, task

from chatd.buses.redis import RedisBus
from chatd.core.events import EventKind, RoomEvent

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from redis import RedisServer  # noqa: E402  (the tests' private redis-server)

TEXT = "a line of chat of about sixty bytes, as people type them...."


@defer.inlineCallbacks
def _turns(reactor: Any, turns: int, lines: int, bus: RedisBus | None) -> Any:
    """``turns`` reactor turns of ``lines`` published lines each (none published without a bus)."""
    for turn in range(turns):
        if bus is not None:
            for i in range(lines):
                bus.publish(RoomEvent("lab", turn * lines + i + 1, 1764465000.0, "ann", EventKind.SAY, TEXT))
            while len(bus._out) > 4:  # the writer's pace: at most a few entries waiting, as a busy node's
                yield task.deferLater(reactor, 0.0005, lambda: None)
        yield task.deferLater(reactor, 0, lambda: None)


@defer.inlineCallbacks
def measure(reactor: Any, url: str, turns: int, lines: int, readers: int) -> Any:
    """CPU µs per line and per entry: one publishing node, ``readers`` more nodes reading; loop cost removed."""
    started = time.process_time()
    yield _turns(reactor, turns, lines, None)
    loop = time.process_time() - started
    buses = [RedisBus(url, reactor, f"bench{n}", stream=f"bench:{turns}:{lines}:{readers}")
             for n in range(1 + readers)]
    delivered = [0] * len(buses)
    for n, bus in enumerate(buses):
        bus.subscribe(lambda event, n=n: delivered.__setitem__(n, delivered[n] + 1))
    yield defer.gatherResults([bus.start() for bus in buses])
    total = turns * lines
    started = time.process_time()
    user = os.times().user
    yield _turns(reactor, turns, lines, buses[0])
    for _ in range(60_000):
        if min(delivered) >= total:
            break
        yield task.deferLater(reactor, 0.001, lambda: None)
    cpu = time.process_time() - started - loop
    user = os.times().user - user
    entries = buses[0].appended
    yield defer.gatherResults([bus.stop() for bus in buses])
    assert min(delivered) == total, delivered
    return cpu * 1e6 / total, cpu * 1e6 / entries, entries, user / (cpu + loop)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


@defer.inlineCallbacks
def paced(reactor: Any, url: str, rate: int, seconds: float, readers: int) -> Any:
    """
    Latency at ``rate`` lines/s: one line per turn from one node, ``readers`` more nodes reading; returns
    (p50 ms, p99 ms, entries written, CPU µs per line, lines). Latency: ``publish`` to each node's delivery.
    """
    buses = [RedisBus(url, reactor, f"paced{n}", stream=f"paced:{rate}:{readers}") for n in range(1 + readers)]
    latencies: list[float] = []
    delivered = [0] * len(buses)

    def got(n: int, event: RoomEvent) -> None:
        delivered[n] += 1
        latencies.append(time.monotonic() - event[2])

    for n, bus in enumerate(buses):
        bus.subscribe(lambda event, n=n: got(n, event))
    yield defer.gatherResults([bus.start() for bus in buses])
    total = int(rate * seconds)
    started = time.monotonic()
    cpu = time.process_time()
    for i in range(total):
        due = started + i / rate
        wait = due - time.monotonic()
        yield task.deferLater(reactor, max(0.0, wait), lambda: None)
        buses[0].publish(RoomEvent("lab", i + 1, time.monotonic(), "ann", EventKind.SAY, TEXT))
    for _ in range(60_000):
        if min(delivered) >= total:
            break
        yield task.deferLater(reactor, 0.001, lambda: None)
    cpu = time.process_time() - cpu
    entries = buses[0].appended
    yield defer.gatherResults([bus.stop() for bus in buses])
    assert min(delivered) == total, delivered
    return (_percentile(latencies, 0.5) * 1e3, _percentile(latencies, 0.99) * 1e3, entries, cpu * 1e6 / total,
            total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--lines", type=int, nargs="*", default=[1, 10, 100], help="lines per turn")
    parser.add_argument("--readers", type=int, nargs="*", default=[0, 1, 3], help="nodes reading besides")
    parser.add_argument("--rate", type=int, help="measure latency at this many lines/s instead (one per turn)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long --rate sends")
    args = parser.parse_args()
    from twisted.internet import reactor

    server = RedisServer().start()

    @defer.inlineCallbacks
    def run() -> Any:
        try:
            for readers in args.readers if args.rate else ():
                p50, p99, entries, per_line, total = yield paced(reactor, server.url, args.rate, args.seconds,
                                                                  readers)
                print(f"{args.rate} lines/s, {1 + readers} node(s): latency p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
                      f"{entries} entries for {total} lines ({total / max(1, entries):.1f} per entry); "
                      f"{per_line:.1f} µs CPU per line (all nodes)", flush=True)
            for lines in args.lines if not args.rate else ():
                for readers in args.readers:
                    turns = max(50, args.turns // max(1, lines // 10))
                    per_line, per_entry, entries, share = yield measure(reactor, server.url, turns, lines, readers)
                    print(f"{lines:4d} lines/turn, {1 + readers} node(s): {per_line:7.1f} µs CPU per line, "
                          f"{per_entry:8.1f} µs per entry ({entries} entries; {share:.0%} of it user, the rest "
                          f"the kernel's)", flush=True)
        finally:
            reactor.stop()

    reactor.callWhenRunning(run)
    try:
        reactor.run()
    finally:
        server.remove()


if __name__ == "__main__":
    main()
