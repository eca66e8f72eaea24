"""
Soak: about 30 s of a couple of hundred clients doing random things against
the real daemon on 127.0.0.1. Twenty "stayers" sit in four rooms for the
whole run; 180 "churners" connect, log in (or vanish mid-login), join rooms,
talk, whisper, leave, and quit or drop dead, over and over.

Checked at the end: no unhandled error in the server log; every stayer got
every confirmed line of its room (a line whose sender saw it come back)
exactly once and nothing twice; the server's memory is back near where it
was after a warm-up.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter, defaultdict

from daemon import Daemon

ROOMS = ["r0", "r1", "r2", "r3"]
STAYERS = 20
CHURNERS = 180
WARMUP = 4.0
SOAK = 18.0
_SAID = re.compile(rb"\] (\w+): m (\w+) (\d+)\r\n")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Line:
    """A plain-mode client on asyncio streams with bounded waits."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.buffer = reader, writer, b""

    @classmethod
    async def connect(cls, port: int) -> Line:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        return cls(reader, writer)

    def send(self, *lines: str) -> None:
        self.writer.write(b"".join(line.encode() + b"\r\n" for line in lines))

    async def expect(self, needle: bytes, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {needle!r}: {self.buffer[-300:]!r}")
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except asyncio.TimeoutError:
                raise AssertionError(f"timed out waiting for {needle!r}: {self.buffer[-300:]!r}") from None
            if not data:
                raise ConnectionError("closed")
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(needle)
        return head + needle

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (OSError, asyncio.TimeoutError):
            pass


class Soak:
    def __init__(self, port: int) -> None:
        self.port = port
        self.rng = random.Random(20261124)
        self.confirmed: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self.heard: dict[str, Counter[tuple[str, int]]] = {}
        self.room_of: dict[str, str] = {}
        self.deadline = 0.0
        self.seq = 0
        self.errors: list[str] = []
        self.registered: set[str] = set()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def account(self, name: str) -> Line:
        c = await Line.connect(self.port)
        await c.expect(b"menu> ")
        c.send(f"register {name}", "secret1", "secret1")
        await c.expect(f"Registered and logged in as {name}.".encode())
        await c.expect(b"menu> ")
        return c

    async def say(self, c: Line, name: str, room: str) -> None:
        seq = self.next_seq()
        c.send(f"m {name} {seq}")
        await c.expect(f"{name}: m {name} {seq}\r\n".encode())
        self.confirmed[room].add((name, seq))

    async def stayer(self, index: int, ready: asyncio.Event, stop: asyncio.Event) -> None:
        name, room = f"stay{index}", ROOMS[index % len(ROOMS)]
        c = await self.account(name)
        c.send(f"join {room}")
        await c.expect(f"Entered room {room}".encode())
        self.room_of[name] = room
        heard = self.heard[name] = Counter()
        ready.set()

        async def listen() -> None:
            while True:
                data = await c.reader.read(1 << 20)
                if not data:
                    return
                c.buffer += data
                *lines, c.buffer = c.buffer.split(b"\r\n")
                for line in lines:
                    match = _SAID.search(line + b"\r\n")
                    if match and match.group(1) == match.group(2):
                        heard[(match.group(2).decode(), int(match.group(3)))] += 1

        listener = asyncio.ensure_future(listen())
        while not stop.is_set():
            seq = self.next_seq()
            c.send(f"m {name} {seq}")
            self.confirmed[room].add((name, seq))  # a stayer's own lines must all arrive
            await asyncio.sleep(self.rng.uniform(0.2, 0.6))
        await asyncio.sleep(1.5)  # let the last lines arrive
        listener.cancel()
        c.send("quit")
        await c.close()

    async def churner(self, index: int) -> None:
        name = f"ch{index}"
        rng = random.Random(index)
        first = name not in self.registered
        # Ramp up, so the connection burst stays within the server's listen backlog (50, Twisted's default).
        await asyncio.sleep(index * 0.015)
        while time.monotonic() < self.deadline:
            try:
                c = await Line.connect(self.port)
                await c.expect(b"menu> ")
                if first:
                    c.send(f"register {name}", "secret1", "secret1")
                    await c.expect(b"Registered and logged in")
                    self.registered.add(name)
                    first = False
                elif rng.random() < 0.1:
                    c.send(f"login {name}")  # vanish mid-login
                    if rng.random() < 0.5:
                        c.send("secret1")
                    c.abort()
                    continue
                else:
                    c.send(f"login {name}", "secret1")
                    await c.expect(f"Logged in as {name}.".encode())
                await c.expect(b"menu> ")
                for _ in range(rng.randint(1, 4)):
                    room = rng.choice(ROOMS)
                    c.send(f"join {room}")
                    await c.expect(b"Entered room")
                    for _ in range(rng.randint(0, 5)):
                        action = rng.random()
                        if action < 0.7:
                            await self.say(c, name, room)
                        elif action < 0.8:
                            c.send("/who")
                            await c.expect(f"In {room} (".encode())
                        elif action < 0.9:
                            target = f"stay{rng.randrange(STAYERS)}"
                            c.send(f"/msg {target} psst")
                            await c.expect(target.encode())  # sent, or "not logged in" before the stayers come
                        else:
                            c.send("/ping")
                            await c.expect(b"pong")
                        await asyncio.sleep(rng.uniform(0, 0.05))
                    if rng.random() < 0.2:
                        c.abort()  # drop dead in the room
                        break
                    c.send("/exit")
                    await c.expect(b"menu> ")
                else:
                    c.send("list", "quit")
                    await c.expect(b"Bye.")
                    await c.close()
            except (ConnectionError, OSError) as error:
                self.errors.append(f"{name}: {error!r}")
            except AssertionError as error:
                self.errors.append(f"{name}: {error}")
                return
            await asyncio.sleep(rng.uniform(0, 0.1))

    async def churn(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        await asyncio.wait_for(asyncio.gather(*(self.churner(i) for i in range(CHURNERS))), seconds + 60)


def test_soak(tmp_path):
    # Churners log in again many times a minute (each a new connection): more than a person
    # does, so the per-account allowance of password checks (10 a minute) is off here. They also
    # send faster than --flood-rate for the whole run, in rooms: the flood limit's escalation would
    # mute them (tests/test_moderation.py tests it), so it is off too; they are still slowed.
    d = Daemon(str(tmp_path / "data"), "--account-password-checks", "0", "--flood-mute", "0").start()
    try:
        soak = Soak(d.port)

        async def run() -> tuple[int, int]:
            owner = await soak.account("owner")
            for room in ROOMS:
                owner.send(f"create {room}")
                await owner.expect(f"Room {room} created.".encode())
            # Warm up: every churner account registered and a first round of traffic.
            await soak.churn(WARMUP)
            await asyncio.sleep(1.0)
            warm = _rss_kib(d.process.pid)
            stop = asyncio.Event()
            readies = [asyncio.Event() for _ in range(STAYERS)]
            stayers = [asyncio.ensure_future(soak.stayer(i, readies[i], stop)) for i in range(STAYERS)]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
            soak.confirmed.clear()  # count only what was said while every stayer was in
            await soak.churn(SOAK)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*stayers), 30)
            await asyncio.sleep(1.0)
            await owner.close()
            return warm, _rss_kib(d.process.pid)

        warm, end = asyncio.run(run())
    finally:
        d.stop()
    assert d.unhandled_errors() == [], "\n".join(d.unhandled_errors()[:20])
    assert not [e for e in soak.errors if "timed out" in e], [e for e in soak.errors if "timed out" in e][:5]
    total = 0
    for name, heard in soak.heard.items():
        room = soak.room_of[name]
        expected = soak.confirmed[room]
        missing = expected - set(heard)
        assert not missing, f"{name} in {room} missed {len(missing)} lines, e.g. {sorted(missing)[:5]}"
        doubled = [key for key, count in heard.items() if count > 1]
        assert not doubled, f"{name} got lines twice: {doubled[:5]}"
        total += len(expected)
    assert total > 2000  # the soak really carried traffic
    print(f"soak: {total} confirmed lines checked at {len(soak.heard)} stayers; RSS {warm} -> {end} KiB; "
          f"{len(soak.errors)} client-side disconnects")
    assert end - warm < 20 * 1024, f"RSS grew from {warm} KiB to {end} KiB"
