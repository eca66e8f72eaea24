"""--max-outbound is exact: output that would take a connection's unsent bytes past it cuts the connection off."""

from __future__ import annotations

from twisted.internet import abstract
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactor

from chatd.settings import Settings
from tests.helpers import Client, make_factory

LIMIT = 1 << 20


class Pipe(abstract.FileDescriptor):
    """
    A connection whose peer's receive window is ``window`` bytes and which
    never reads: what does not fit stays in the transport's buffer, as on a
    real TCP connection (the buffer --max-outbound measures).
    """

    def __init__(self, window: int) -> None:
        super().__init__(MemoryReactor())
        self.window = window
        self.received = bytearray()
        self.connected = 1
        #: Bytes unsent when the server aborted the connection (None: not aborted).
        self.unsent_at_abort: int | None = None

    def unsent(self) -> int:
        return len(self.dataBuffer) - self.offset + self._tempDataLen

    def writeSomeData(self, data: bytes) -> int:
        taken = min(len(data), self.window - len(self.received))
        self.received += data[:taken]
        return taken

    def abortConnection(self) -> None:
        self.unsent_at_abort = self.unsent()
        self.connected = 0
        self.disconnecting = True

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "192.0.2.7", 40007)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8023)

    def value(self) -> bytes:
        return bytes(self.received)

    def clear(self) -> None:
        """Output is read only by the test, through ``received``."""


def _events(data_dir, factory, event):
    factory.store.flush_events()
    with open(data_dir / "log.csv", encoding="utf-8") as log:
        return [line.rstrip("\r\n").split(",") for line in log if f",{event}" in line]


def test_a_delivery_that_would_pass_the_limit_is_not_queued(tmp_path):
    """Up to --max-outbound unsent bytes are queued; one byte more cuts the connection off without queuing it."""
    factory, clock = make_factory(str(tmp_path), Settings(max_outbound=LIMIT))
    pipe = Pipe(window=0)
    client = Client(factory, clock, transport=pipe)
    client.protocol.deliver(b"x" * (LIMIT - pipe.unsent()))
    assert pipe.unsent() == LIMIT and pipe.unsent_at_abort is None
    client.protocol.deliver(b"y")
    assert pipe.unsent_at_abort == LIMIT


def test_a_room_batch_to_a_reader_that_stopped_never_takes_it_past_the_limit(tmp_path):
    """
    The attack: members with a 4 KiB receive window that never read, talkers saying 4000-byte lines in
    bursts (one room batch is far more than the limit) -> cut off with at most --max-outbound unsent
    (was: the whole batch queued first, 2004182 bytes unsent against 1048576); the row names the room.
    """
    factory, clock = make_factory(str(tmp_path), Settings(max_outbound=LIMIT, flood_rate=0))
    slow = Client(factory, clock, transport=Pipe(window=4096))
    slow.register("slow16")
    slow.send("join public")
    talker = Client(factory, clock)
    talker.register("talker")
    talker.send("join public")
    assert slow.transport.unsent_at_abort is None
    line = "z" * 4000
    for _ in range(3):
        talker.protocol.dataReceived(f"{line}\r\n".encode() * 150)
        clock.advance(0)
    assert slow.transport.unsent_at_abort is not None
    assert 0 < slow.transport.unsent_at_abort <= LIMIT
    slow.protocol.connectionLost(None)  # the abort's end
    rows = _events(tmp_path, factory, "")
    cut = [row[1] for row in rows].index("sendq_exceeded")
    assert [row[1:4] for row in rows[cut:cut + 2]] == [
        ["sendq_exceeded", "slow16", "public"], ["disconnect", "slow16", "public"]]
    assert rows[cut][4].startswith(f"queued={slow.transport.unsent_at_abort}&refused=")
    assert talker.output().count(line) == 450  # the room goes on
