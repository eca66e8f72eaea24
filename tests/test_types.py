"""
Types: mypy checks the tree under test with setup.cfg's ``[mypy]``
configuration (mypy-zope for Twisted's interfaces), in this process.
docs/ARCHITECTURE.md, "Types", says how to run it by hand and the rule on
``# type: ignore``.
"""

from __future__ import annotations

import os
import re
from typing import get_args

import pytest
from mypy import api
from twisted.internet import protocol, ssl, tcp
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from chatd.sockets import ILineTransport
from chatd.store import EventName
from chatd.wire import CODES, Code
from clients.cli import IClientTransport
from daemon import ROOT

#: What mypy checks: every module of the server and of the client.
CHECKED = ["chatd", "clients"]

#: An ignore names its error code and says, after it, why (a fact of a third-party API).
_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<rest>.*)")
_EXPLAINED = re.compile(r"\[[a-z-]+(?:,\s*[a-z-]+)*\]\s+#\s*\S")


def run_mypy(*arguments: str) -> tuple[str, int]:
    """mypy's report (stdout and stderr) and exit status, with the tree's setup.cfg and no cache written."""
    stdout, stderr, status = api.run(
        ["--config-file", os.path.join(ROOT, "setup.cfg"), "--cache-dir", os.devnull, *arguments])
    return stdout + stderr, status


def test_mypy_passes(monkeypatch):
    """mypy finds no error in the checked modules (setup.cfg: check_untyped_defs, disallow_untyped_defs, ...)."""
    monkeypatch.chdir(ROOT)
    report, status = run_mypy(*CHECKED)
    assert status == 0, f"mypy failed (exit status {status}):\n{report}"


def test_the_configuration_refuses_a_bare_or_needless_ignore(tmp_path, monkeypatch):
    """The configuration is in force: an ignore without an error code, or one that ignores nothing, is an error."""
    monkeypatch.chdir(ROOT)
    sample = tmp_path / "sample.py"
    sample.write_text('number: int = "one"  # type: ignore\nword: str = "two"  # type: ignore[assignment]\n')
    report, status = run_mypy(str(sample))
    assert status == 1, report
    assert "[ignore-without-code]" in report and "[unused-ignore]" in report, report


def test_every_ignore_names_its_code_and_says_why():
    """``# type: ignore[CODE]  # WHY``: never a bare ignore, never one without its reason."""
    bare = []
    for path in checked_files():
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                found = _IGNORE.search(line)
                if found and not _EXPLAINED.match(found.group("rest")):
                    bare.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert len(checked_files()) >= 30
    assert bare == [], "\n".join(bare)


def checked_files() -> list[str]:
    """The .py files of :data:`CHECKED`, as paths."""
    paths = []
    for entry in CHECKED:
        path = os.path.join(ROOT, entry)
        if entry.endswith(".py"):
            paths.append(path)
            continue
        for folder, _, files in os.walk(path):
            paths.extend(os.path.join(folder, name) for name in sorted(files) if name.endswith(".py"))
    return paths


def tls_over_memory() -> protocol.Protocol:
    """A client-side TLSMemoryBIOProtocol connected to a StringTransport (the TCP connection under TLS)."""
    factory = TLSMemoryBIOFactory(ssl.CertificateOptions(), True, protocol.Factory.forProtocol(protocol.Protocol))
    tls = factory.buildProtocol(None)
    assert tls is not None
    tls.makeConnection(StringTransport())
    return tls


@pytest.mark.parametrize("interface", [ILineTransport, IClientTransport])
def test_the_transports_have_what_the_protocols_declare_of_them(interface):
    """
    ChatProtocol and ChatClient declare their transport as an interface that
    Twisted's transports have without declaring it (TLS delegates to the TCP
    connection): every name of it is there on TCP, TLS and StringTransport.
    """
    names = sorted(interface.names(all=True))
    assert {"write", "loseConnection", "pauseProducing", "resumeProducing", "disconnecting"} <= set(names)
    for candidate in (tcp.Server, tcp.Client, tls_over_memory(), StringTransport()):
        missing = [name for name in names if not hasattr(candidate, name)]
        assert missing == [], f"{candidate!r} lacks {missing}"


def test_the_code_type_is_the_set_of_codes():
    """chatd.wire.Code (what show/ask take) names exactly the codes the server sends (CODES)."""
    assert set(get_args(Code)) == CODES


def test_the_event_name_type_is_the_documented_event_log():
    """chatd.store.EventName names exactly the events docs/OPERATIONS.md's event log table lists."""
    with open(os.path.join(ROOT, "docs", "OPERATIONS.md"), encoding="utf-8") as handle:
        section = handle.read().split("## The event log", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert documented == set(get_args(EventName))
