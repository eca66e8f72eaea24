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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--lines", type=int, nargs="*", default=[1, 10, 100], help="lines per turn")
    parser.add_argument("--readers", type=int, nargs="*", default=[0, 1, 3], help="nodes reading besides")
    args = parser.parse_args()
    from twisted.internet import reactor

    server = RedisServer().start()

    @defer.inlineCallbacks
    def run() -> Any:
        try:
            for lines in args.lines:
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
