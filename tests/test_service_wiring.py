"""The service tree of chatd.service: what binds when, start failures, and a shut-down that waits for connections, not a clock."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock

from chatd.service import (
    BusService, CLOSE_MARGIN, ChatService, Listeners, LogFilesService, StartError, StateService, StoreService,
)
from chatd.settings import Settings
from helpers import CHEAP_HASH, Client, data_rows


def test_privileged_start_binds_one_endpoint_service_per_listen_before_anything_loads(tmp_path):
    """privilegedStartService (still root under twistd --uid) binds every --listen; the data dir is not touched yet."""
    reactor = MemoryReactorClock()
    chat = ChatService(reactor, ["tcp:8023", "tcp:24:interface=127.0.0.1"], str(tmp_path / "data"), Settings())
    assert [type(child) for child in chat] == [LogFilesService, StoreService, BusService, StateService, Listeners]
    chat.privilegedStartService()
    try:
        listeners = list(chat.listeners)
        assert [type(listener) for listener in listeners] == [StreamServerEndpointService] * 2
        assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [(8023, ""), (24, "127.0.0.1")]
        assert [listener.factory for listener in listeners] == [chat.factory] * 2
        assert len(chat.listeners.ports) == 2
        assert not (tmp_path / "data").exists()
    finally:
        chat.listeners.unbind()


@pytest_twisted.inlineCallbacks
def test_a_port_in_use_unbinds_the_others_and_is_one_start_error(tmp_path, monkeypatch):
    """The second --listen fails: StartError naming its description, and the first port is closed again."""
    from twisted.internet import reactor

    bound: list[Any] = []
    listening = Listeners.listening
    monkeypatch.setattr(Listeners, "listening", lambda self, port: bound.append(port) or listening(self, port))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        chat = ChatService(reactor, ["tcp:0:interface=127.0.0.1", f"tcp:{busy}:interface=127.0.0.1"],
                           str(tmp_path / "data"), Settings())
        with pytest.raises(StartError) as raised:
            chat.privilegedStartService()
    assert raised.value.message == (
        f"chatd could not start: cannot listen on tcp:{busy}:interface=127.0.0.1: "
        f"Couldn't listen on 127.0.0.1:{busy}: [Errno 98] Address already in use.")
    assert str(raised.value) == f"cannot listen on 127.0.0.1:{busy}: Address already in use"
    assert len(bound) == 1 and list(chat.listeners) == [] and chat.listeners.ports == []
    yield deferLater(reactor, 0, lambda: None)  # a port closes its socket on the next turn
    assert not bound[0].connected


def test_a_description_that_does_not_parse_is_a_start_error(tmp_path):
    with pytest.raises(StartError, match="^cannot listen on "):
        ChatService(MemoryReactorClock(), ["tcp:port"], str(tmp_path / "data"), Settings()).privilegedStartService()


def _state(tmp_path: Any, grace: float = 5.0) -> tuple[ChatService, Clock, Client]:
    """The service on a Clock (not started: no threads), its state loaded, and one connection at the menu."""
    clock = Clock()
    chat = ChatService(clock, [], str(tmp_path / "data"), Settings(close_grace=grace))
    chat.factory.restore(chat.store.load_now())
    return chat, clock, Client(chat.factory, clock)


def test_stopping_the_state_waits_until_every_connection_has_closed(tmp_path):
    """Users are told at once; the stop completes when the last connection closes, not after a fixed wait."""
    chat, clock, client = _state(tmp_path)
    stopped = chat.state.stopService()
    assert "The server is shutting down. Bye." in client.output()
    assert client.transport.disconnecting and not stopped.called
    clock.advance(4.9)
    assert not stopped.called  # the goodbye line may still be on its way
    client.protocol.connectionLost(None)
    assert stopped.called and chat.factory.open_transports == 0


def test_a_connection_that_never_closes_delays_the_stop_by_close_grace_and_a_margin_at_most(tmp_path):
    chat, clock, client = _state(tmp_path, grace=2.0)
    stopped = chat.state.stopService()
    clock.advance(2.0)
    assert client.transport.disconnected  # ChatProtocol.close aborted it after --close-grace (StringTransport: "disconnected")
    clock.advance(CLOSE_MARGIN - 0.01)
    assert not stopped.called
    clock.advance(0.01)
    assert stopped.called  # the transport never reported connectionLost: stop anyway (and say so in the log)


def test_all_closed_counts_transports_not_sessions(tmp_path):
    """A kicked connection has left the online list but its socket is open: all_closed waits for connectionLost."""
    chat, clock, client = _state(tmp_path)
    factory = chat.factory
    assert factory.open_transports == 1
    client.protocol.kick("bye")
    assert factory.connections == set()
    closed = factory.all_closed()
    assert not closed.called
    client.protocol.connectionLost(None)
    assert closed.called and factory.all_closed().called


class _Recorder(service.Service):
    """A child whose stop completes when the test says."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls
        self.done: defer.Deferred[None] = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        self.calls.append(f"start {self.name}")

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self.calls.append(f"stop {self.name}")
        return self.done


def test_children_start_in_order_and_stop_in_reverse_each_after_the_next_has_stopped(tmp_path):
    """Twisted's MultiService stops all children at once; chatd's root waits for each (the store stops last)."""
    chat = ChatService(Clock(), [], str(tmp_path / "data"), Settings())
    for child in list(chat):
        chat.removeService(child)
    calls: list[str] = []
    children = [_Recorder(name, calls) for name in ("store", "state", "listeners")]
    for child in children:
        child.setServiceParent(chat)
    chat.startService()
    assert calls == ["start store", "start state", "start listeners"]
    stopped = chat.stopService()
    assert calls[3:] == ["stop listeners"]
    children[2].done.callback(None)
    assert calls[3:] == ["stop listeners", "stop state"]
    children[1].done.callback(None)
    assert calls[3:] == ["stop listeners", "stop state", "stop store"] and not stopped.called
    children[0].done.callback(None)
    assert stopped.called


async def _read(peer: socket.socket, until: bytes | None) -> bytes:
    """What ``peer`` (non-blocking) receives until ``until`` is in it, or (None) until EOF; at most 5 s of turns."""
    from twisted.internet import reactor

    received = b""
    for _ in range(500):
        try:
            chunk = peer.recv(65536)
        except BlockingIOError:
            await deferLater(reactor, 0.01, lambda: None)
            continue
        if not chunk and until is None:
            return received
        received += chunk
        if until is not None and until in received:
            return received
    raise AssertionError(f"waited for {until!r}; got {received!r}")


@pytest_twisted.ensureDeferred
async def test_a_real_shutdown_closes_every_connection_before_the_store_stops(tmp_path):
    """In-process on the real reactor: the user gets the goodbye and EOF; then the store writes the disconnect row."""
    from twisted.internet import reactor

    chat = ChatService(reactor, ["tcp:0:interface=127.0.0.1"], str(tmp_path / "data"), Settings(),
                       hash_params=CHEAP_HASH)
    chat.privilegedStartService()
    chat.startService()
    peer = socket.create_connection(("127.0.0.1", chat.listeners.ports[0].getHost().port), timeout=5)
    peer.setblocking(False)
    try:
        peer.sendall(b"register ann\r\nsecret1\r\nsecret1\r\njoin public\r\n")
        await _read(peer, b"Entered room public")
        open_when_stopped: list[int] = []
        stopping = chat.stopService()
        assert b"The server is shutting down. Bye." in await _read(peer, None)
        stopping.addCallback(lambda _: open_when_stopped.append(chat.factory.open_transports))
        await stopping
    finally:
        peer.close()
    assert open_when_stopped == [0] and not chat.running
    rows = [(row[1], row[2]) for row in data_rows(tmp_path / "data" / "log.csv")]
    assert rows[-1] == ("disconnect", "ann"), rows


class _LateEndpoint:
    """An endpoint that answers when the test says (Twisted's own answer at once; a plugin's may not)."""

    def __init__(self) -> None:
        self.answer: defer.Deferred[Any] = defer.Deferred()

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        return self.answer


def _late_listeners(tmp_path: Any, monkeypatch: Any) -> tuple[Listeners, _LateEndpoint, MemoryReactorClock]:
    from twisted.application import strports

    endpoint = _LateEndpoint()
    monkeypatch.setattr(strports.endpoints, "serverFromString", lambda reactor, description: endpoint)
    reactor = MemoryReactorClock()
    chat = ChatService(reactor, ["late:1"], str(tmp_path / "data"), Settings())
    chat.listeners.privilegedStartService()  # nothing raised: the answer is not there yet
    chat.listeners.startService()
    return chat.listeners, endpoint, reactor


def test_an_endpoint_that_listens_late_is_logged_when_it_does(tmp_path, monkeypatch):
    from twisted.internet.testing import EventLoggingObserver
    from twisted.logger import globalLogPublisher

    events = EventLoggingObserver()
    globalLogPublisher.addObserver(events)
    try:
        listeners, endpoint, _ = _late_listeners(tmp_path, monkeypatch)
        assert listeners.ports == []
        port = MemoryReactorClock().listenTCP(8023, protocol.Factory())
        endpoint.answer.callback(port)
    finally:
        globalLogPublisher.removeObserver(events)
    assert listeners.ports == [port]
    assert [e["log_format"] for e in events if "address" in e] == ["chatd listening on {address}"]


def test_an_endpoint_that_fails_late_stops_the_reactor_with_one_line(tmp_path, monkeypatch):
    from twisted.internet.error import CannotListenError
    from twisted.internet.testing import EventLoggingObserver
    from twisted.logger import globalLogPublisher

    events = EventLoggingObserver()
    globalLogPublisher.addObserver(events)
    try:
        listeners, endpoint, reactor = _late_listeners(tmp_path, monkeypatch)
        reactor.running = True
        endpoint.answer.errback(CannotListenError("127.0.0.1", 1, OSError(98, "Address already in use")))
    finally:
        globalLogPublisher.removeObserver(events)
    assert reactor.hasStopped and listeners.ports == []
    (error,) = [e for e in events if e["log_level"].name == "error"]
    assert error["description"] == "late:1" and "Address already in use" in error["reason"]
    stopped = list(listeners)[0].stopService()  # the failure was handled: stopping the listener still works
    assert stopped.called


def test_the_daemon_freezes_the_start_up_heap_and_collects_young_objects_less_often(tmp_path, monkeypatch):
    """Issue 12: per-line containers (events) made full collections walk the heap; the daemon tunes gc once started."""
    import gc

    from chatd import service as service_module
    from chatd.tap import Options, makeService

    calls: list[Any] = []
    monkeypatch.setattr(service_module.gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(service_module.gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(service_module.gc, "set_threshold", lambda *t: calls.append(t))
    service_module.tune_gc()
    assert calls[:2] == ["collect", "freeze"]
    assert calls[2][0] == service_module.GC_YOUNG_THRESHOLD and calls[2][1:] == gc.get_threshold()[1:]
    options = Options()
    options.parseOptions(["--data-dir", str(tmp_path / "data")])
    assert makeService(options).gc_tuning  # the daemon tunes it
    tuned: list[bool] = []
    monkeypatch.setattr(service_module, "tune_gc", lambda: tuned.append(True))
    monkeypatch.setattr(service.MultiService, "startService", lambda self: None)  # the children: not here
    monkeypatch.setattr(ChatService, "_check_twisted", lambda self: None)
    for gc_tuning in (False, True):
        chat = ChatService(MemoryReactorClock(), [], str(tmp_path / "data"), Settings(), gc_tuning=gc_tuning)
        chat.startService()
        assert tuned == ([True] if gc_tuning else [])
