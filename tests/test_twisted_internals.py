"""chatd.twisted_internals on the installed Twisted: each function against real Twisted objects, and the start-up check."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
import twisted
from twisted.internet import abstract, protocol, tcp
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher, textFileLogObserver
from twisted.protocols.basic import LineReceiver
from twisted.python.logfile import LogFile

from chatd import twisted_internals
from chatd.twisted_internals import check, line_buffer, nothing_unsent, twistd_log_files, unsent_bytes

#: Bytes written to a peer that does not read: far more than the kernel's socket buffers take.
BIG = 16 << 20


class _Server(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.append(self)


class _ServerFactory(protocol.Factory):
    protocol = _Server

    def __init__(self) -> None:
        self.connected: list[_Server] = []


async def _turns(until: Any, what: str, limit: int = 500) -> None:
    """Let the reactor run (at most ``limit`` turns of 10 ms) until ``until()`` is true."""
    from twisted.internet import reactor

    for _ in range(limit):
        if until():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


@pytest_twisted.ensureDeferred
async def test_unsent_bytes_of_a_real_tcp_connection():
    """Written bytes count as unsent until the kernel takes them; a peer that does not read leaves them queued."""
    from twisted.internet import reactor

    factory = _ServerFactory()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    peer = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    try:
        await _turns(lambda: factory.connected, "the connection")
        transport = factory.connected[0].transport
        assert isinstance(transport, tcp.Server)
        assert nothing_unsent(transport) and unsent_bytes(transport) == 0
        transport.write(b"x" * BIG)
        assert not nothing_unsent(transport) and unsent_bytes(transport) == BIG  # nothing sent before the next turn
        await _turns(lambda: unsent_bytes(transport) < BIG, "the kernel to take some")
        queued = unsent_bytes(transport)
        kernel = (transport.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
                  + peer.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        assert BIG - kernel <= queued < BIG and not nothing_unsent(transport)  # what the socket buffers hold is sent
        received = 0
        peer.setblocking(False)

        def read() -> bool:
            nonlocal received
            try:
                while chunk := peer.recv(1 << 20):
                    received += len(chunk)
            except BlockingIOError:
                pass
            return received == BIG

        await _turns(read, "the peer to read everything", limit=3000)
        assert nothing_unsent(transport) and unsent_bytes(transport) == 0
    finally:
        peer.close()
        await port.stopListening()


class _Lines(LineReceiver):
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)


def test_line_buffer_is_what_follows_the_last_delimiter():
    """What arrived after the last line end waits in the line buffer; a paused receiver keeps whole lines there too."""
    from twisted.internet.testing import StringTransport

    receiver = _Lines()
    receiver.makeConnection(StringTransport())
    assert line_buffer(receiver) == b""
    receiver.dataReceived(b"one\r\ntw")
    assert receiver.lines == [b"one"] and line_buffer(receiver) == b"tw"
    receiver.dataReceived(b"o\r\n")
    assert receiver.lines == [b"one", b"two"] and line_buffer(receiver) == b""
    receiver.pauseProducing()
    receiver.dataReceived(b"three\r\nfo")
    assert receiver.lines == [b"one", b"two"] and b"three\r\n" in line_buffer(receiver)


def test_twistd_log_files_are_the_files_of_the_log_observers(tmp_path):
    """A LogFile behind a text file observer (how twistd --logfile logs) is found; once removed, it is not."""
    log_file = LogFile.fromFullPath(str(tmp_path / "chatd.log"))
    observer = textFileLogObserver(log_file)
    globalLogPublisher.addObserver(observer)
    try:
        assert log_file in twistd_log_files()
    finally:
        globalLogPublisher.removeObserver(observer)
        log_file.close()
    assert log_file not in twistd_log_files()


def test_check_passes_on_the_installed_twisted():
    check()


def test_check_names_the_twisted_version_when_a_buffer_moved(monkeypatch):
    """A Twisted that keeps written bytes elsewhere is refused with one line naming its version."""

    def write(self: abstract.FileDescriptor, data: bytes) -> None:
        self.elsewhere = data  # type: ignore[attr-defined]

    monkeypatch.setattr(abstract.FileDescriptor, "write", write)
    with pytest.raises(RuntimeError) as raised:
        check()
    message = str(raised.value)
    assert message == (f"Twisted {twisted.__version__} is not what chatd.twisted_internals expects: "
                       "3 bytes written, unsent_bytes() is 0")
    assert "\n" not in message


def test_check_names_a_missing_attribute(monkeypatch):
    """A LineReceiver without ``_buffer`` is refused, the error in one line."""
    monkeypatch.delattr(LineReceiver, "_buffer")
    with pytest.raises(RuntimeError, match=rf"^Twisted {twisted.__version__} .*AttributeError: .*_buffer"):
        check()


def test_a_failed_check_stops_the_start(tmp_path, monkeypatch):
    """The service runs the check first: a mismatch is a StartError, and nothing is bound or loaded."""
    from twisted.internet.testing import MemoryReactorClock

    from chatd.service import ChatService, StartError
    from chatd.settings import Settings

    def mismatch() -> None:
        raise RuntimeError(f"Twisted {twisted.__version__} is not what chatd.twisted_internals expects: test")

    monkeypatch.setattr(twisted_internals, "check", mismatch)
    reactor = MemoryReactorClock()
    service = ChatService(reactor, ["tcp:8023"], str(tmp_path / "data"), Settings())
    with pytest.raises(StartError) as raised:
        service.privilegedStartService()
    assert raised.value.message == (
        f"chatd could not start: Twisted {twisted.__version__} is not what chatd.twisted_internals expects: test")
    assert reactor.tcpServers == [] and not (tmp_path / "data").exists()
