"""
In-process cost of one room line, without sockets: ``python -m bench.hotpath``.

A factory on a temporary data directory, members on in-memory transports whose
writes are dropped; one member says lines through the whole line front-end
(``ChatProtocol.lineReceived`` -> dialogue -> command table -> state -> bus ->
fan-out), the batch is flushed every BATCH lines. Prints microseconds per line
(best of several repeats). No network, no other process: for comparing two
trees of the hot path (run it from each tree's root), not for absolute figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import timeit

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "tests")]

from twisted.internet import defer  # noqa: E402

from chatd.settings import Settings  # noqa: E402
from helpers import Client, make_factory  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=50, help="members of the room (half tagged)")
    parser.add_argument("--batch", type=int, default=20, help="lines per reactor turn")
    parser.add_argument("--lines", type=int, default=20000, help="lines per repeat")
    args = parser.parse_args()
    factory, clock = make_factory(tempfile.mkdtemp(), Settings(flood_rate=0))
    clients = []
    for i in range(args.members):
        c = Client(factory, clock, tagged=bool(i % 2))
        c.register(f"u{i}")
        c.send("public")
        c.output()
        c.transport.write = lambda data: None
        clients.append(c)
    sender = clients[0].protocol
    line = b"hello world, this is a line of chat"
    history = getattr(factory, "history", None)
    if history is not None:  # room history (issue 13): committed every 0.25 s as in the server, the writes dropped
        factory.store.append_history = lambda batches: defer.succeed(None)
        history.start()

    def run() -> None:
        for i in range(args.lines):
            sender.lineReceived(line)
            if i % args.batch == args.batch - 1:
                clock.advance(0)
            if i % 1000 == 999:
                clock.advance(0.25)  # 1000 lines per 0.25 s: 4000 lines/s
        clock.advance(0)

    best = min(timeit.repeat(run, number=1, repeat=5))
    print(f"{best / args.lines * 1e6:.2f} us per line ({args.members} members, batches of {args.batch})")


if __name__ == "__main__":
    main()
