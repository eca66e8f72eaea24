"""
Telnet negotiation answers against the real daemon: a peer with a 4 KiB receive
window that never reads and floods option requests is cut off at --max-outbound
and logged, like any other reader that does not keep up.
"""

from __future__ import annotations

import csv
import os
import socket
import time

from daemon import Daemon

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
    rows = list(csv.reader(open(os.path.join(d.data_dir, "log.csv"), encoding="utf-8")))
    assert any(row[1] == "sendq_exceeded" for row in rows)
    assert d.unhandled_errors() == [], d.log()
