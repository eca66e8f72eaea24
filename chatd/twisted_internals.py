"""
The one place where chatd reads attributes Twisted keeps private.

Twisted has no public API for three things chatd needs, so they are read
here and nowhere else, each in a small function that says what it reads
and why:

- how many bytes a TCP transport still holds unsent (``--max-outbound``,
  and the direct write of :meth:`chatd.protocol.ChatProtocol.deliver`):
  :func:`unsent_bytes`, :func:`nothing_unsent`;
- the bytes a ``LineReceiver`` holds that are no line yet (CR NUL split
  over two reads, a line typed ahead): :func:`line_buffer`;
- the files twistd's ``--logfile`` writes to (reopen on SIGHUP, no rotation
  by size): :func:`twistd_log_files`;
- the parsers of HAProxy's PROXY header (``haproxy:`` listeners, whose
  client address must be known before the session starts:
  :mod:`chatd.proxied`): :func:`proxy_header_parsers`.

Checked against Twisted 20.3.0 to 24.10 (the source of each release: the
attributes and their meaning are unchanged) and 26.10.0 (installed);
``setup.cfg`` asks for twisted>=24.3. :func:`check` tries each function on
the installed Twisted when the server starts (``chatd.service``), so an
upgrade that changes one stops chatd with one clear line instead of
miscounting at run time; ``tests/test_twisted_internals.py`` runs them on
real Twisted objects.

The functions are plain module-level functions over plain attribute reads:
:func:`nothing_unsent` and :func:`unsent_bytes` run for every write of
every connection.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.internet import abstract, tcp
from twisted.logger import FileLogObserver, globalLogPublisher
from twisted.protocols.basic import LineReceiver
from twisted.python.logfile import BaseLogFile


def unsent_bytes(transport: abstract.FileDescriptor) -> int:
    """
    Bytes written to ``transport`` (a ``tcp.Server``, or any
    ``FileDescriptor``: the TCP connection under TLS) that the kernel has not
    taken yet. ``FileDescriptor`` keeps them in ``dataBuffer`` from
    ``offset`` on, plus ``_tempDataLen`` bytes of writes not yet joined to
    it; ``ITransport`` offers only ``write`` and producers, which say
    "full" or "not full", never how much.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def nothing_unsent(transport: abstract.FileDescriptor) -> bool:
    """
    Whether ``transport`` holds no unsent bytes at all, so a write may go
    straight to its socket without overtaking queued output (the same
    attributes as :func:`unsent_bytes`, tested cheaper: a sent ``dataBuffer``
    is emptied, so ``offset`` need not be read).
    """
    return not transport.dataBuffer and not transport._tempDataLen


def line_buffer(receiver: LineReceiver) -> bytes:
    """
    The bytes ``receiver`` has received that do not end in its delimiter
    yet (the start of the next line, or whole lines not handled yet while
    it is paused). ``LineReceiver`` keeps them in ``_buffer`` and offers
    only ``clearLineBuffer``, which also empties it.
    """
    return receiver._buffer


def twistd_log_files() -> list[BaseLogFile]:
    """
    The log files twistd writes to (``--logfile``): the ``_outFile`` of each
    file log observer in ``globalLogPublisher``'s ``_observers``. twistd
    creates the file and its observer and keeps neither anywhere public;
    the publisher has ``addObserver`` / ``removeObserver`` but no way to
    list them.
    """
    outs = (getattr(observer, "_outFile", None) for observer in list(globalLogPublisher._observers))
    return [out for out in outs if isinstance(out, BaseLogFile)]


def proxy_header_parsers() -> tuple[Any, Any, type[Exception]]:
    """
    (V1Parser, V2Parser, InvalidProxyHeader) of ``twisted.protocols.haproxy``:
    a parser's ``feed(data)`` gives ``(ProxyInfo, rest)`` once the header is
    whole, else ``(None, None)``, and raises InvalidProxyHeader; V1Parser's
    ``PROXYSTR`` and V2Parser's ``PREFIX`` start their headers. Twisted's
    only public use of them, ``proxyEndpoint``, starts the wrapped protocol
    before the header has come (its ``getPeer`` is the proxy's then).
    """
    from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
    from twisted.protocols.haproxy._v1parser import V1Parser
    from twisted.protocols.haproxy._v2parser import V2Parser

    return V1Parser, V2Parser, InvalidProxyHeader


#: The reactor of :class:`_Descriptor`: it registers with none (any object but None keeps the global reactor away).
_NO_REACTOR: Any = object()


class _Descriptor(abstract.FileDescriptor):
    """A FileDescriptor without a socket whose "kernel" takes one byte a write (for :func:`check`)."""

    connected = 1

    def writeSomeData(self, data: bytes) -> int:
        return min(1, len(data))

    def startWriting(self) -> None:
        """Nothing to register: :func:`check` calls ``doWrite`` itself."""

    def stopWriting(self) -> None:
        pass


class _Lines(LineReceiver):
    """A LineReceiver that keeps its lines (for :func:`check`)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)


def check() -> None:
    """
    Try every function of this module on the installed Twisted. Raises
    ``RuntimeError`` with one line naming the Twisted version and what
    differs; ``chatd.service`` makes it a start-up failure.
    """
    import twisted

    try:
        problem = _problem()
    except Exception as error:  # an attribute gone, or of another kind
        problem = f"{type(error).__name__}: {error}"
    if problem:
        raise RuntimeError(f"Twisted {twisted.__version__} is not what chatd.twisted_internals expects: {problem}")


def _problem() -> str:
    """What does not work as expected on the installed Twisted ("" if all does)."""
    if not issubclass(tcp.Server, abstract.FileDescriptor):
        return "tcp.Server is no FileDescriptor"
    descriptor = _Descriptor(reactor=_NO_REACTOR)
    if not (nothing_unsent(descriptor) and unsent_bytes(descriptor) == 0):
        return "a new FileDescriptor has unsent bytes"
    descriptor.write(b"abc")
    if nothing_unsent(descriptor) or unsent_bytes(descriptor) != 3:
        return f"3 bytes written, unsent_bytes() is {unsent_bytes(descriptor)}"
    descriptor.doWrite()  # joins the writes into dataBuffer and sends one byte
    if nothing_unsent(descriptor) or unsent_bytes(descriptor) != 2:
        return f"1 of 3 bytes sent, unsent_bytes() is {unsent_bytes(descriptor)}"
    descriptor.doWrite()
    descriptor.doWrite()
    if not nothing_unsent(descriptor) or unsent_bytes(descriptor) != 0:
        return f"all bytes sent, unsent_bytes() is {unsent_bytes(descriptor)}"
    receiver = _Lines()
    receiver.dataReceived(b"whole\r\npart")
    if receiver.lines != [b"whole"] or line_buffer(receiver) != b"part":
        return f"LineReceiver line buffer is {line_buffer(receiver)!r} after b'whole\\r\\npart', not b'part'"
    if not isinstance(globalLogPublisher._observers, list):
        return "globalLogPublisher._observers is no list"
    out: Any = io.StringIO()
    if FileLogObserver(out, str)._outFile is not out:
        return "FileLogObserver keeps its file elsewhere than _outFile"
    v1, v2, _ = proxy_header_parsers()
    info, rest = v1().feed(b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 2323\r\nhi")
    if info is None or info.source.host != "192.0.2.7" or rest != b"hi" or not v2.PREFIX or v1.PROXYSTR != b"PROXY":
        return "the PROXY header parsers of twisted.protocols.haproxy differ"
    return ""
