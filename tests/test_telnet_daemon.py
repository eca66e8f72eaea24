"""
Telnet negotiation answers against the real daemon: a peer with a 4 KiB receive
window that never reads and floods option requests is cut off at --max-outbound
and logged, like any other reader that does not keep up.
"""

from __future__ import annotations

import os
import socket
import time

from daemon import Daemon
from helpers import data_rows

DO_TTYPE, DONT_TTYPE = b"\xff\xfd\x18", b"\xff\xfe\x18"


def test_negotiation_flood_to_a_non_reader_is_cut_off_and_logged(tmp_path):
    """
    ``DO TTYPE, DONT TTYPE`` over and over (each DO is a change, so each gets a
    WONT), never reading: the answers count against --max-outbound, so the
    server cuts the peer off and logs it. (The flood limit is relaxed here as
    in the benchmark; with the defaults the peer would be slowed long before.)
    """
    d = Daemon(str(tmp_path / "data"), "--max-outbound", "1048576",
               "--flood-rate", "1e9", "--flood-burst", "1000000000").start()
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", d.port))
        sock.settimeout(5)
        chunk = (DO_TTYPE + DONT_TTYPE) * 10_000  # 60 KB in, 30 KB of answers out
        sent, cut = 0, False
        deadline = time.monotonic() + 60
        while sent < 40_000_000 and time.monotonic() < deadline:
            try:
                sock.sendall(chunk)
            except OSError:  # reset: cut off
                cut = True
                break
            except socket.timeout:
                break  # the server stopped reading: see below
            sent += len(chunk)
            if sent % (20 * len(chunk)) == 0 and "send queue exceeded" in d.log():
                cut = True
                break
        deadline = time.monotonic() + 10
        while "send queue exceeded" not in d.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        sock.close()
        assert "send queue exceeded" in d.log(), (sent, cut)
        # Far less than the 34 MB of the issue went in before the cut.
        assert sent < 20_000_000
    finally:
        d.stop()
    rows = list(data_rows(os.path.join(d.data_dir, "log.csv")))
    assert any(row[1] == "sendq_exceeded" for row in rows)
    assert d.unhandled_errors() == [], d.log()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_do_flood_with_the_defaults_is_answered_once_and_slowed(tmp_path):
    """
    The issue's input with the default limits: ``FF FD 18`` and ``FF FD 05`` over and over
    from a peer that never reads. Each option is answered once, the commands are charged
    to the flood allowance so the server soon stops reading, and its memory stays flat.
    """
    d = Daemon(str(tmp_path / "data")).start()
    try:
        assert d.process is not None
        before = _rss_kib(d.process.pid)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", d.port))
        sock.settimeout(0.5)
        chunk = (DO_TTYPE + b"\xff\xfd\x05") * 5000
        sent = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                sent += sock.send(chunk)
            except socket.timeout:
                pass  # the server no longer reads: TCP pushes back
        grown = _rss_kib(d.process.pid) - before
        sock.settimeout(0.5)
        answers = b""
        try:
            while len(answers) < 100_000:
                data = sock.recv(65536)
                if not data:
                    break
                answers += data
        except socket.timeout:
            pass  # all there is
        sock.close()
    finally:
        d.stop()
    assert answers.count(b"\xff\xfc\x18") == 1 and answers.count(b"\xff\xfc\x05") == 1, answers
    assert b"you are sending too fast" in answers
    assert sent < 8_000_000  # kernel buffers at most; a reading server would have taken far more in 4 s
    assert grown < 20_000, grown  # KiB
    assert d.unhandled_errors() == [], d.log()
