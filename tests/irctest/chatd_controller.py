"""
An irctest controller for chatd's IRC front-end (github.com/progval/irctest, ``--controller chatd_controller``).

Each test gets a fresh server: ``twistd -n chatd`` in a temporary data directory, in its own process group
(irctest's ``execute``), with the telnet front-end on a UNIX socket in that directory (``--listen unix:``, used
only to create accounts), the IRC front-end (``--listen-irc``) on the loopback port irctest hands out, no
browser front-end (``--listen-web none``: its default port would be shared by the servers of parallel runs),
``--irc-guests`` so that clients with arbitrary nicks and no account may register, as on ngIRCd, and
``--irc-server-name My.Little.Server``, the name irctest's cases expect of every server. Nothing here is a
special case for the tests: every setting is a documented option (docs/OPERATIONS.md); the ones relaxed are the
flood limit (irctest sends its lines in bursts) and the cost of password hashes (every test creates accounts).

Accounts (``registerUser``) are created through the running server, as a user would: a telnet connection in
tagged mode sends ``register NAME`` and the password twice (docs/PROTOCOL.md, "Register"). The IRC operator
irctest expects (``operuser``/``operpassword``) is a chatd server admin: ``--admin operuser``, registered the
same way at start (an ``--admin`` name may only be registered from the server's own machine: loopback or the
UNIX socket).

Environment: ``CHATD_PYTHON`` (default: the repository's ``.venv/bin/python``, else this interpreter) runs
chatd from the repository holding this file (``PYTHONPATH`` is set to it), or from the tree ``CHATD_ROOT``
names (another branch's worktree); ``CHATD_EXTRA`` adds options (split on spaces).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Optional, Set, Type

from irctest.basecontrollers import BaseServerController, DirectoryBasedController, ProcessStopped
from irctest.cases import BaseServerTestCase
from irctest.runner import NotImplementedByController

#: The tree whose chatd runs: this file's repository (ROOT/tests/irctest/chatd_controller.py), or CHATD_ROOT.
ROOT = Path(os.environ.get("CHATD_ROOT") or Path(__file__).resolve().parents[2])

#: The name every irctest controller gives its server (tests compare numerics' source, PONG, 004, 312, 352 with it).
SERVER_NAME = "My.Little.Server"

#: irctest's operator (tests/oper.py and others send ``OPER operuser operpassword``).
OPER_NAME = "operuser"
OPER_PASSWORD = "operpassword"

#: Seconds to wait for the server to be ready, and for one account to be created.
START_TIMEOUT = 30.0
REGISTER_TIMEOUT = 15.0


def chatd_python() -> str:
    configured = os.environ.get("CHATD_PYTHON")
    if configured:
        return configured
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


#: ``twistd`` run by that interpreter, importing the repository's tree (as tests/daemon.py does).
TWISTD = ["-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]


class AccountRefused(Exception):
    """chatd refused to create an account (its text is the server's error line)."""


def register_account(path: str, name: str, password: str, timeout: float = REGISTER_TIMEOUT) -> None:
    """
    Create the chatd account ``name`` through the telnet front-end on the UNIX socket ``path``, in tagged mode:
    ``/client``, ``register NAME``, the password at each ``01`` prompt, until ``00 Registered`` (docs/PROTOCOL.md
    "Plain and tagged mode", "Register"). Raises AccountRefused with the server's ``02 Error: ...`` line, or
    TimeoutError. A password is sent as UTF-8 bytes as typed; UTF-8 never holds the telnet IAC byte 0xFF, and a
    connection that sent ``/client`` first is binary-clean anyway.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(b"/client irctest 1.0\r\n")
        buffer = b""
        sent_register = False
        passwords_sent = 0
        while time.monotonic() < deadline:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            data = conn.recv(4096)
            if not data:
                raise AccountRefused(f"connection closed while registering {name}: {buffer[-300:]!r}")
            buffer += data
            *lines, buffer = buffer.split(b"\r\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if line.startswith("11 ") and not sent_register:  # the menu prompt, tagged
                    conn.sendall(f"register {name}\r\n".encode())
                    sent_register = True
                elif line.startswith("01 ") and sent_register:  # a password prompt (twice)
                    conn.sendall(password.encode("utf-8") + b"\r\n")
                    passwords_sent += 1
                elif line.startswith("00 Registered"):
                    conn.sendall(b"quit\r\n")
                    return
                elif line.startswith("02 ") and sent_register:
                    raise AccountRefused(line[3:])
        raise TimeoutError(f"chatd did not register {name} within {timeout} s ({passwords_sent} passwords sent)")


class ChatdController(BaseServerController, DirectoryBasedController):
    software_name = "chatd"
    supported_sasl_mechanisms: Set[str] = {"PLAIN"}
    supports_sts = False
    _port_wait_interval = 0.05

    telnet_path: str

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: Optional[str],
        ssl: bool,
        run_services: bool,
        faketime: Optional[str],
        websocket_hostname: Optional[str] = None,
        websocket_port: Optional[int] = None,
    ) -> None:
        if websocket_hostname is not None or websocket_port is not None:
            raise NotImplementedByController("Websocket")  # chatd's WebSocket speaks JSON, not IRC
        if password is not None:
            # chatd's PASS is an account's password (docs/IRC.md); it has no server-wide connection password.
            raise NotImplementedByController("server password")
        assert self.proc is None
        self.create_config()
        assert self.directory is not None
        self.hostname = hostname
        self.port = port
        # The telnet listener is a UNIX socket: a second loopback port picked by bind(0)-and-close could be taken
        # by another program before chatd binds it (irctest's IRC port has that race; this one need not).
        self.telnet_path = str(self.directory / "telnet.sock")

        irc = f"tcp:{port}:interface={hostname}"
        if ssl:
            self.gen_ssl()
            irc = f"ssl:{port}:interface={hostname}:privateKey={self.key_path}:certKey={self.pem_path}"

        faketime_cmd = []
        if faketime and shutil.which("faketime"):
            faketime_cmd = ["faketime", "-f", faketime]
            self.faketime_enabled = True

        self.log_path = self.directory / "twistd.log"
        command = [
            *faketime_cmd, chatd_python(), *TWISTD, "-n",
            "--pidfile", str(self.directory / "twistd.pid"), "--logfile", str(self.log_path),
            "chatd", "--data-dir", str(self.directory / "data"),
            "--listen", f"unix:{self.telnet_path}",
            "--listen-irc", irc, "--irc-guests", "--irc-server-name", SERVER_NAME, "--listen-web", "none",
            "--admin", OPER_NAME,
            "--flood-rate", "0",
            "--hash-time-cost", "1", "--hash-memory-kib", "1024",
            *shlex.split(os.environ.get("CHATD_EXTRA", "")),
        ]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.output_path = self.directory / "output.txt"  # twistd's usage errors go to stderr, not the log
        with open(self.output_path, "wb") as output:
            self.proc = self.execute(command, proc_name="chatd", cwd=str(ROOT), env=env, stdout=output,
                                     stderr=output)
        self._wait_ready()
        register_account(self.telnet_path, OPER_NAME, OPER_PASSWORD)

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _output(self) -> str:
        """The end of what chatd wrote to its log and to stdout/stderr, for an error message."""
        return (self._log()[-2000:] + "\n" + self.output_path.read_text(errors="replace")[-2000:]).strip()

    def _wait_ready(self) -> None:
        """Until the log says ``chatd listening on`` (the data is loaded; tests/daemon.py waits the same way)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                self.check_is_alive()
            except ProcessStopped:
                raise ProcessStopped(f"chatd exited at start:\n{self._output()}") from None
            if "chatd listening on" in self._log():
                return
            time.sleep(0.05)
        raise TimeoutError(f"chatd did not listen within {START_TIMEOUT} s:\n{self._output()}")

    def wait_for_services(self) -> None:
        """Accounts are chatd's own: no services to wait for."""

    def registerUser(self, case: BaseServerTestCase, username: str, password: Optional[str] = None) -> None:
        assert password, "chatd accounts need a password"
        try:
            register_account(self.telnet_path, username, password)
        except AccountRefused as refused:
            # chatd's rules (docs/PROTOCOL.md "Register"): names of 1-24 ASCII letters, digits, _ and -;
            # passwords of 6-256 characters.
            raise NotImplementedByController(f"chatd refused the account {username!r}: {refused}") from None


def get_irctest_controller_class() -> Type[ChatdController]:
    return ChatdController
