"""
The running server as a tree of Twisted services, built in one place
(:class:`ChatService`, the composition root) and started and stopped in
order::

    ChatService (MultiService)
      LogFilesService   SIGHUP reopens twistd's --logfile; no rotation by size
      StoreService      the CSV store and its writer thread (or PostgreSQL's pools: --store)
      BusService        the bus room events travel on (chatd.buses.local.LocalBus)
      StateService      the factory, file transfers, the hash and file pools
      Listeners         one StreamServerEndpointService per --listen
      Listeners (web)   one per --listen-web: the page and its WebSocket (chatd.frontends.web)
      Listeners (irc)   one per --listen-irc: IRC clients (chatd.frontends.irc)

Start-up, all before the reactor runs (under twistd): check the Twisted
internals chatd reads (:mod:`chatd.twisted_internals`), bind the listening
ports (``privilegedStartService``, still as root under ``twistd --uid``, so
a port below 1024 works), then, in the order above, load the data directory
and start the pools; connections that arrive meanwhile wait in the listen
backlog and are accepted once the reactor runs. A start that fails raises
:class:`StartError`: one line in the log and on stderr, exit status 1.

Shut-down (SIGTERM, SIGINT): the services stop in the reverse order, each
once the one listed after it has stopped: stop listening; tell every
connected user and wait until every connection has closed (no fixed wait: a
connection is aborted ``--close-grace`` seconds after it was closed, so this
ends); stop the pools; write the queued log events.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from twisted.application import service, strports
from twisted.internet import defer
from twisted.internet.address import UNIXAddress
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReadDescriptor, IStreamServerEndpoint
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from chatd import twisted_internals
from chatd.errors import failure_error
from chatd.buses.local import LocalBus
from chatd.core.ports import Bus
from chatd.nodes import Nodes
from chatd.datadir import DataDirInUse, load_token_key, lock_data_dir, unlock_data_dir
from chatd.factory import ChatFactory
from chatd.frontends.irc import IrcFactory, web_page_url
from chatd.frontends.web import web_site
from chatd.limits import raise_fd_limit
from chatd.passwords import Passwords
from chatd.persistence import CsvStore, FormatError
from chatd.protocol import ChatProtocol
from chatd.proxied import PREFIX as proxied_prefix, ProxiedEndpoint
from chatd.settings import Settings
from chatd.store import Loaded, StoreError
from chatd.transfer import SPOOL, Transfers, TransferSettings
from chatd.twisted_internals import twistd_log_files

if TYPE_CHECKING:  # psycopg is an extra: imported only when --store names PostgreSQL
    from chatd.buses.redis import RedisBus
    from chatd.buses.redis_limits import RedisLimits
    from chatd.stores.postgres import Pools, PostgresStore

log = Logger()

#: Seconds past ``--close-grace`` the shut-down waits for connections to close: an aborted
#: connection is closed at the next reactor turn, so this bound is only met if something is wrong.
CLOSE_MARGIN = 1.0


def reopen_log_files() -> int:
    """
    Reopen the log files twistd writes to (``--logfile``), for logrotate: it
    renames the file, then sends SIGHUP, and we start a new one under the
    old name. Returns how many files were reopened.
    """
    files = twistd_log_files()
    for out in files:
        out.reopen()
    return len(files)


def stop_size_rotation() -> list[str]:
    """
    Stop twistd's log files from rotating by size (``LogFile`` renames
    ``chatd.log`` to ``chatd.log.1``, ``.2``, ... at every megabyte and never
    deletes them), so logrotate owns rotation; SIGUSR1 still rotates on
    demand. Returns the paths of the files changed.
    """
    changed = []
    for out in twistd_log_files():
        if isinstance(out, LogFile) and out.rotateLength:
            out.rotateLength = None
            changed.append(out.path)
    return changed


#: Bytes of a :class:`StartError` summary. A daemonizing twistd's child reports a failed start to its
#: parent through a pipe as ``1 chatd.service.StartError: SUMMARY``, cut at 100 bytes (twistd's
#: ``_formatChildException``); the parent prints ``An error has occurred: b'...'`` with those bytes
#: but the first two. 100 - 2 - 26 = 72 bytes keep the summary whole.
SUMMARY_MAX = 72


def summarize(text: str, limit: int = SUMMARY_MAX) -> str:
    """
    ``text`` in at most ``limit`` ASCII bytes: non-ASCII characters as ``?``;
    if too long, cut at a space with ``...``, never inside a word.
    """
    text = text.encode("ascii", "replace").decode("ascii")
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" :,") + "..."


class StartError(Exception, SystemExit):
    """
    The server cannot start (a port in use, an unusable data directory).

    ``message`` is the whole line, for the log and the operator's terminal
    (``chatd could not start: REASON``); ``str()`` of the error is its
    ``summary`` (at most :data:`SUMMARY_MAX` ASCII bytes, see
    :func:`summarize`), which is all a daemonizing twistd can show. It is
    an ``Exception``, so twistd handles it like any failed start (removes
    the pid file, tells the parent of a daemonizing twistd, which prints
    the summary and exits 1), and a ``SystemExit`` with code 1, so Python
    ends the process with exit status 1 and no traceback (systemd's
    ``Restart=on-failure`` then sees a failure).
    """

    def __init__(self, message: str, summary: str = "") -> None:
        super().__init__(message)
        self.code = 1
        self.message = message
        self.summary = summarize(summary or message)

    def __str__(self) -> str:
        return self.summary


def _short_reason(error: BaseException) -> str:
    """
    The gist of an error for a :class:`StartError` summary: the socket
    error of a CannotListenError and an OSError's strerror with its file
    name, without Python's quotes and errno; anything else as :func:`_reason`.
    """
    if isinstance(error, CannotListenError):
        cause = error.socketError
        why = getattr(cause, "strerror", None) or str(cause)
        return f"{error.interface or 'any'}:{error.port}: {why}"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return _reason(error)


def _reason(error: BaseException) -> str:
    """One line for an error: an OSError's (CannotListenError's, FormatError's) own text names the errno and the path."""
    text = str(error).splitlines()[0] if str(error).strip() else ""
    if isinstance(error, (OSError, CannotListenError, FormatError, DataDirInUse, StoreError)) and text:
        return text
    return f"{type(error).__name__}: {text}".rstrip(": ")


def start_error(reason: str, summary: str) -> StartError:
    """
    Log ``chatd could not start: REASON`` and write it to the terminal;
    return the :class:`StartError` to raise, with ``summary`` (the reason in
    short) for a daemonizing twistd's parent.
    """
    message = f"chatd could not start: {reason}"
    log.error("{message}", message=message)
    if sys.__stderr__ is not None:  # the real stderr: twistd points sys.stderr at its log
        try:
            sys.__stderr__.write(message + "\n")
            sys.__stderr__.flush()
        except (OSError, ValueError):
            pass
    return StartError(message, summary)


class LogFilesService(service.Service):
    """
    twistd's ``--logfile`` under logrotate: SIGHUP reopens it (and goes back
    to the previous handler when the service stops), and it never rotates by
    size (see :func:`stop_size_rotation`).
    """

    _previous_sighup: Any = None

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        for path in stop_size_rotation():
            log.info("log file {path}: rotation by size turned off; rotate it with logrotate and SIGHUP (or SIGUSR1)",
                     path=path)

    def stopService(self) -> None:
        super().stopService()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None

    def _sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reopen_logs)

    def reopen_logs(self) -> None:
        """SIGHUP: reopen the log file (after logrotate moved it)."""
        count = reopen_log_files()
        log.info("SIGHUP: reopened {count} log file(s)", count=count)


#: Threads reading room history (replay fills, ``/history``) beside the history thread's appends.
HISTORY_READERS = 3


class StoreService(service.Service):
    """
    The store (``store``, a :class:`~chatd.persistence.CsvStore`) and its
    threads: the writer (accounts, rooms, the event log, marks), the
    history thread (room history appends, so a history fsync never waits
    behind a rewrite of users.csv, nor the other way round) and up to
    :data:`HISTORY_READERS` history readers (replay fills, ``/history``:
    a deep page never delays a commit). Starting
    loads the data directory in the calling thread (before the reactor
    runs) and raises :class:`StartError` if it cannot; the state takes what
    was loaded with :meth:`take_loaded`. Stopping writes the queued log
    events and waits for the history thread's queued work, then stops the
    history thread, then the writer. From the load until then it holds the
    data directory's lock (chatd.datadir): a second server, or chatd-admin,
    on the same directory is refused.

    With ``store_dsn`` (``--store postgresql://...``) the store is a
    :class:`~chatd.stores.postgres.PostgresStore` on its connection pools
    (the same three roles: chatd.stores.postgres.Pools) instead; the data
    directory is still locked, for the file spool it keeps.
    """

    def __init__(self, reactor: Any, data_dir: str, now: Callable[[], str], store_dsn: str | None = None) -> None:
        self.data_dir = data_dir
        self.store_dsn = store_dsn
        self._pool = ThreadPool(1, 1, name="chatd-store")
        self._history_pool = ThreadPool(1, 1, name="chatd-history")
        self._history_readers = ThreadPool(0, HISTORY_READERS, name="chatd-history-read")
        self._pg_pools: Pools | None = None
        self.store: CsvStore | PostgresStore
        #: Where the store keeps its data, for the log (a DSN without its password).
        self.where = f"data directory {data_dir}"
        if store_dsn:
            from chatd.stores.postgres import Pools, PostgresStore, masked_dsn

            self.where = f"PostgreSQL at {masked_dsn(store_dsn)}"
            self._pg_pools = Pools(store_dsn, reactor)
            self.store = PostgresStore(store_dsn, reactor, now, run=self._pg_pools.write,
                                       history_run=self._pg_pools.history, history_read_run=self._pg_pools.read,
                                       file_run=self._pg_pools.files)
        else:
            self.store = CsvStore(data_dir, run=lambda f, *a: deferToThreadPool(reactor, self._pool, f, *a),
                                  clock=reactor, now=now,
                                  history_run=lambda f, *a: deferToThreadPool(reactor, self._history_pool, f, *a),
                                  history_read_run=lambda f, *a: deferToThreadPool(reactor, self._history_readers,
                                                                                   f, *a))
        self._loaded: Loaded | None = None
        #: The data directory's lock (chatd.datadir), held from the load until stopped.
        self._lock: IO[str] | None = None
        #: The key of resume tokens (chatd.tokens), read (or made) at the start: the data directory's, or with
        #: PostgreSQL the database's, which every node shares (a token of one node is taken by every node).
        self.token_key = b""

    def startService(self) -> None:
        at_store = False
        try:
            self._lock = lock_data_dir(self.data_dir, "chatd")
            if self._pg_pools is None:  # (PostgreSQL keeps one key for every node: Loaded.token_key)
                self.token_key = load_token_key(self.data_dir)
            at_store = True
            self._loaded = self.store.load_now()
            self.token_key = self._loaded.token_key or self.token_key
        except Exception as error:
            where, what = f"data directory {self.data_dir}", "data directory"
            if self._lock is not None:
                unlock_data_dir(self._lock)
                self._lock = None
                if at_store:
                    where, what = self.where, "store"
            raise start_error(f"{where}: {_reason(error)}", f"{what}: {_short_reason(error)}") from error
        super().startService()
        if self._pg_pools is None:
            self._pool.start()
            self._history_pool.start()
            self._history_readers.start()
        else:
            log.info("store: {where}", where=self.where)
        self.store.start()

    def take_loaded(self) -> Loaded:
        """What the start loaded (once: the store forgets it)."""
        loaded, self._loaded = self._loaded, None
        assert loaded is not None, "the store service has not started"
        return loaded

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        try:
            yield self.store.stop()
        finally:
            if self._pg_pools is not None:
                self._pg_pools.close()
            else:
                self._history_readers.stop()
                self._history_pool.stop()
                self._pool.stop()
            if self._lock is not None:
                unlock_data_dir(self._lock)
                self._lock = None


def _redis_bus(url: str, reactor: Any, node: str | None) -> RedisBus:
    from chatd.buses.redis import RedisBus  # the 'cluster' extra: imported when --bus names Redis

    return RedisBus(url, reactor, node)


def _redis_limits(url: str, reactor: Any) -> RedisLimits:
    from chatd.buses.redis_limits import RedisLimits  # the 'cluster' extra, as _redis_bus

    return RedisLimits(url, reactor)


class BusService(service.Service):
    """
    The bus room events travel on (:class:`chatd.core.ports.Bus`), started
    before the state and stopped after it. The local bus has nothing to
    connect; a networked one (issue 17) connects here.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        #: The rate limits the nodes share (chatd.buses.redis_limits), connected and closed with the bus; or None.
        self.limits: RedisLimits | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        position = getattr(self.bus, "position_now", None)
        if position is not None:  # before the store loads (StoreService.startService): chatd.buses.redis
            try:
                position()
            except (OSError, ValueError) as error:
                where = getattr(self.bus, "where", "the bus")
                raise start_error(f"{where}: {_reason(error)}", f"bus: {_short_reason(error)}") from error

    def startService(self) -> None:
        super().startService()
        start = getattr(self.bus, "start", None)
        if start is not None:  # a networked bus connects (chatd.buses.redis); publishing meanwhile waits for it
            start().addErrback(lambda failure: log.failure("the bus could not start", failure))
        if self.limits is not None:
            self.limits.start()

    def stopService(self) -> Any:
        super().stopService()
        stop = getattr(self.bus, "stop", None)
        stopped = [stop() if stop is not None else None, self.limits.stop() if self.limits is not None else None]
        return defer.gatherResults([d for d in stopped if d is not None], consumeErrors=True)


class StateService(service.Service):
    """
    The shared state: the :class:`~chatd.factory.ChatFactory` (built here
    and nowhere else), its file transfers and the hash and file thread
    pools. Starting takes over what the store loaded; stopping tells every
    connected user, waits until every connection has closed (no fixed
    wait: :meth:`~chatd.factory.ChatFactory.all_closed`), then stops the
    pools.
    """

    def __init__(
        self,
        reactor: Any,
        stores: StoreService,
        bus: Bus,
        settings: Settings,
        hash_threads: int = 1,
        hash_params: dict[str, int] | None = None,
        transfer_settings: TransferSettings | None = None,
    ) -> None:
        self.reactor = reactor
        self.stores = stores
        self._hash_pool = ThreadPool(0, hash_threads, name="chatd-hash")
        self._files_pool = ThreadPool(0, 4, name="chatd-files")
        self.passwords = Passwords(
            run=lambda f, *a: deferToThreadPool(reactor, self._hash_pool, f, *a), **(hash_params or {}))
        self.factory = ChatFactory(stores.store, self.passwords, settings, reactor, ChatProtocol, bus=bus)
        self.transfers = self.factory.transfers = Transfers(
            self.factory,
            os.path.join(stores.data_dir, SPOOL),
            run=lambda f, *a: deferToThreadPool(reactor, self._files_pool, f, *a),
            settings=transfer_settings or TransferSettings(),
        )

    def startService(self) -> None:
        super().startService()
        self._hash_pool.start()
        self._files_pool.start()
        self.factory.restore(self.stores.take_loaded())
        self.factory.tokens.key = self.stores.token_key
        self.factory.history.start()
        self.transfers.start().addErrback(lambda failure: log.failure("could not prepare the file spool", failure))

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        self.transfers.stop()
        # Hashes still queued are for connections about to be told goodbye: none is computed any more
        # (a register or login waiting for one fails), so the stop is not held up by the hash queue.
        self.passwords.stop()
        try:
            if self.factory.connections:
                self.factory.shut_down("The server is shutting down. Bye.")
            yield self._connections_closed()
            # Every room event has happened (the last leaves): commit what the rings hold before the store stops.
            yield self.factory.history.stop()
        finally:
            self._hash_pool.stop()
            self._files_pool.stop()

    def _connections_closed(self) -> defer.Deferred[None]:
        """Fires once every connection has closed, or (logged) ``--close-grace`` + CLOSE_MARGIN seconds from now."""
        limit = self.factory.settings.close_grace + CLOSE_MARGIN
        closed = self.factory.all_closed()

        def late(failure: Failure) -> None:
            failure.trap(defer.TimeoutError)
            log.warn("{count} connection(s) still open {limit:g} seconds after the shut-down began; stopping anyway",
                     count=self.factory.open_transports, limit=limit)

        return closed.addTimeout(limit, self.reactor).addErrback(late)


@implementer(IStreamServerEndpoint)
class _Reported:
    """An endpoint that tells its :class:`Listeners` the port it listens on, and a failure that comes late."""

    def __init__(self, endpoint: IStreamServerEndpoint, description: str, listeners: Listeners) -> None:
        self.endpoint = endpoint
        self.description = description
        self.listeners = listeners

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        listening = self.endpoint.listen(factory)
        listening.addCallback(self.listeners.listening)
        if not listening.called:  # after the start: a failure is logged here (and stops chatd), not raised
            listening.addErrback(self.listeners.failed_late, self.description)
        return listening


class Listeners(service.MultiService):
    """
    One ``StreamServerEndpointService`` per ``--listen`` description (made
    by ``strports.service``, whose service raises a failure to listen from
    ``privilegedStartService`` instead of only logging it), all bound or
    none. ``ports`` are the ports listened on.
    """

    def __init__(self, reactor: Any, descriptions: list[str], factory: ChatFactory,
                 serving: IProtocolFactory | None = None) -> None:
        """``serving``: what the ports listen with (default: ``factory``, the line front-end)."""
        super().__init__()
        self.reactor = reactor
        self.descriptions = descriptions
        self.factory = factory
        self.serving = serving if serving is not None else factory
        self.ports: list[IListeningPort] = []
        self._bound = False
        #: Whether accepting waits (:meth:`hold_until`); a port bound meanwhile waits too.
        self._held = False

    def privilegedStartService(self) -> None:
        """
        Bind every endpoint now (as root under ``twistd --uid``, so ports
        below 1024 work). Twisted's tcp, ssl and unix endpoints listen at
        once; one that has not answered by then is waited for, and a later
        failure only logged. Raises :class:`StartError` (after closing the
        ports already bound).
        """
        service.Service.privilegedStartService(self)
        self._bound = True
        raise_fd_limit(self.factory.settings.max_connections)
        for description in self.descriptions:
            try:
                proxied = description.startswith(proxied_prefix)  # behind a load balancer: chatd.proxied
                listener = strports.service(description[len(proxied_prefix):] if proxied else description,
                                            self.serving, self.reactor)
                endpoint = ProxiedEndpoint(listener.endpoint, self.reactor) if proxied else listener.endpoint
                listener.endpoint = _Reported(endpoint, description, self)
                listener.privilegedStartService()
            except Exception as error:
                self.unbind()
                raise start_error(f"cannot listen on {description}: {_reason(error)}",
                                  f"cannot listen on {_short_reason(error)}") from error
            listener.setServiceParent(self)

    def startService(self) -> None:
        """Bind (if :meth:`privilegedStartService` has not), then say where chatd listens."""
        if not self._bound:
            self.privilegedStartService()
        super().startService()
        for port in self.ports:
            log.info("chatd listening on {address}", address=port.getHost())

    def unbind(self) -> None:
        """
        Stop listening on what is bound (a start that failed). A UNIX
        socket's file is removed at once when the reactor is not running
        (twistd exits on a failed start before it runs, so the port's own
        removal, on the reactor's next turn, would never come): a server
        refused for a data directory in use leaves no socket file behind.
        """
        files = [host.name for host in (port.getHost() for port in self.ports)
                 if isinstance(host, UNIXAddress) and isinstance(host.name, (str, bytes))]
        for listener in list(self):
            listener.stopService()
            self.removeService(listener)
        self.ports = []
        if not self.reactor.running:
            for name in files:
                if name[:1] not in ("\0", b"\0"):  # (not Linux's abstract namespace: no file)
                    with contextlib.suppress(OSError):
                        os.unlink(name)

    def hold_until(self, ready: defer.Deferred[None]) -> None:
        """
        Accept no connection until ``ready`` fires: the ports stay bound and
        connections wait in the listen backlog, as during the load (a node
        catching up with the bus: ``ChatService``). Only ports that are the
        reactor's readers (Twisted's tcp, ssl and unix ports) are held.
        """
        self._held = True
        for port in self.ports:
            self._pause(port)
        ready.addCallback(self._accept)

    def _pause(self, port: IListeningPort) -> None:
        if IReadDescriptor.providedBy(port):
            self.reactor.removeReader(port)

    def _accept(self, _: object) -> None:
        if self._held and self.running:  # (not once stopping: the ports are closed or closing)
            for port in self.ports:
                if IReadDescriptor.providedBy(port):
                    self.reactor.addReader(port)
        self._held = False

    def listening(self, port: IListeningPort) -> IListeningPort:
        self.ports.append(port)
        if self._held:
            self._pause(port)
        if self.running:  # a late endpoint: the start has logged the others
            log.info("chatd listening on {address}", address=port.getHost())
        return port

    def failed_late(self, failure: Failure, description: str) -> None:
        log.error("chatd could not start: cannot listen on {description}: {reason}",
                  description=description, reason=_reason(failure_error(failure)))
        if self.reactor.running:
            self.reactor.stop()


#: Seconds a node with a networked bus waits at most, after loading, to catch up with it before accepting users.
CATCH_UP_WAIT = 10.0

#: Allocations of container objects between two collections of the youngest generation (CPython: 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """
    Once the server has started (its data loaded, its modules imported):
    collect, then move every object alive now into CPython's permanent
    generation (``gc.freeze``), so later collections never walk the start-up
    heap again, and collect the youngest generation every
    GC_YOUNG_THRESHOLD container allocations instead of 700. Every room line
    allocates a few containers (its event, the arguments of its command), so
    with the defaults a full collection walked the whole heap every few
    thousand lines: the fan-out benchmark lost 20-25% to it
    (docs/PERFORMANCE.md, "Issue 12"). Reference cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


class ChatService(service.MultiService):
    """
    The whole chat server, the composition root: create it, hand it to
    twistd (``chatd.tap.makeService``) or start it yourself. Its children
    start in order and stop in the reverse order, each after the one after
    it has stopped.
    """

    def __init__(
        self,
        reactor: Any,
        listen: list[str],
        data_dir: str,
        settings: Settings,
        hash_threads: int = 1,
        hash_params: dict[str, int] | None = None,
        transfer_settings: TransferSettings | None = None,
        gc_tuning: bool = False,
        listen_web: list[str] | None = None,
        web_origins: list[str] | None = None,
        web_hosts: list[str] | None = None,
        store_dsn: str | None = None,
        listen_irc: list[str] | None = None,
        irc_guests: bool = False,
        irc_server_name: str = "chatd",
        bus_url: str | None = None,
        node_name: str | None = None,
    ) -> None:
        """
        ``gc_tuning``: call :func:`tune_gc` once started (the daemon does: ``chatd.tap``; tests need not).
        ``listen_web``: where the browser front-end listens (``--listen-web``); ``web_origins``: the Origins
        its WebSocket accepts (``--web-origin``; none: the page's own); ``web_hosts``: the names it answers to
        beside IP addresses and this machine's (``--web-host``). ``store_dsn``: keep the state in
        PostgreSQL (``--store``) instead of CSV files in ``data_dir``.
        ``listen_irc``: where the IRC front-end listens (``--listen-irc``); ``irc_guests``: ``--irc-guests``;
        ``irc_server_name``: ``--irc-server-name``. ``bus_url``: share rooms with other nodes through Redis
        (``--bus``; chatd.buses.redis), this node called ``node_name`` (``--node-name``).
        """
        super().__init__()
        self.reactor = reactor
        self.gc_tuning = gc_tuning
        LogFilesService(reactor).setServiceParent(self)
        self.stores = StoreService(reactor, data_dir, now=lambda: self.factory.now(), store_dsn=store_dsn)
        self.stores.setServiceParent(self)
        redis = None if bus_url is None else _redis_bus(bus_url, reactor, node_name)
        self.buses = BusService(LocalBus() if redis is None else redis)
        self.buses.setServiceParent(self)
        self.state = StateService(reactor, self.stores, self.buses.bus, settings, hash_threads, hash_params,
                                  transfer_settings)
        self.state.setServiceParent(self)
        if redis is not None:  # other nodes' room changes applied here; history recorded by the publishing node
            redis.listener = Nodes(self.state.factory)
            self.state.factory.limits.shared = self.buses.limits = _redis_limits(bus_url or "", reactor)
            self.state.factory.history.mine = redis.mine
            self.state.factory.history.position = redis.recorded
            self.state.transfers.across_nodes()  # files reach the other nodes through the store
        self.listeners = Listeners(reactor, listen, self.state.factory)
        self.listeners.setServiceParent(self)
        self.web_listeners: Listeners | None = None
        if listen_web:
            self.web_listeners = Listeners(reactor, listen_web, self.state.factory,
                                           web_site(self.state.factory, web_origins or (), web_hosts or ()))
            self.web_listeners.setServiceParent(self)
        self.irc_listeners: Listeners | None = None
        if listen_irc:
            self.irc_listeners = Listeners(reactor, listen_irc, self.state.factory,
                                           IrcFactory(self.state.factory, irc_guests, irc_server_name,
                                                      web_page_url(listen_web or [], web_origins or [],
                                                                   web_hosts or [])))
            self.irc_listeners.setServiceParent(self)
        self._checked = False

    @property
    def factory(self) -> ChatFactory:
        return self.state.factory

    @property
    def passwords(self) -> Passwords:
        return self.state.passwords

    @property
    def store(self) -> CsvStore | PostgresStore:
        return self.stores.store

    def _check_twisted(self) -> None:
        """The Twisted internals chatd reads are there (:func:`chatd.twisted_internals.check`), else StartError."""
        if not self._checked:
            try:
                twisted_internals.check()
            except RuntimeError as error:
                raise start_error(str(error), str(error)) from error
            self._checked = True

    def privilegedStartService(self) -> None:
        self._check_twisted()
        super().privilegedStartService()

    def startService(self) -> None:
        """Start every service in order; raises :class:`StartError` (after stopping what had started)."""
        self._check_twisted()
        try:
            super().startService()
        except BaseException:
            self.running = 0
            for child in reversed(list(self)):
                if child.running:
                    child.stopService()
            self.listeners.unbind()
            for listeners in (self.web_listeners, self.irc_listeners):
                if listeners is not None:
                    listeners.unbind()
            raise
        self._accept_after_catch_up()
        if self.gc_tuning:
            tune_gc()

    def _accept_after_catch_up(self) -> None:
        """
        With a networked bus, users are accepted once this node has delivered
        what the bus held when it connected (``caught_up``: rooms and accounts
        made on other nodes while this one loaded the store), or after
        :data:`CATCH_UP_WAIT` seconds (logged); meanwhile they wait in the
        listen backlog.
        """
        caught_up = getattr(self.buses.bus, "caught_up", None)
        if caught_up is None:
            return

        def late(failure: Failure) -> None:
            failure.trap(defer.TimeoutError)
            log.warn("bus: not caught up within {wait:g} s; accepting users anyway", wait=CATCH_UP_WAIT)

        ready = caught_up().addTimeout(CATCH_UP_WAIT, self.reactor).addCallbacks(
            lambda _: log.info("accepting users"), late)
        for listeners in (self.listeners, self.web_listeners, self.irc_listeners):
            if listeners is not None:
                listeners.hold_until(ready)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """
        Stop the services in reverse order, each once the one started after
        it has stopped. Meanwhile a second SIGTERM or SIGINT (Ctrl-C twice)
        is logged and ignored: the stop is already bounded (--close-grace),
        and the reactor's own handler would only fail to stop it again.
        """
        service.Service.stopService(self)
        previous = self._ignore_stop_signals()
        try:
            for child in reversed(list(self)):
                if child.running:
                    yield defer.maybeDeferred(child.stopService)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        log.info("chatd stopped cleanly")

    def _ignore_stop_signals(self) -> dict[int, Any]:
        """Handle SIGTERM and SIGINT by a log line until the stop is over; returns the handlers replaced."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def again(number: int, frame: Any) -> None:
            self.reactor.callFromThread(
                log.info, "{signal} received: already shutting down (users are told, connections close within "
                "--close-grace seconds)", signal=signal.Signals(number).name)

        return {number: signal.signal(number, again) for number in (signal.SIGTERM, signal.SIGINT)}
