"""
irctest (third_party/irctest) against the real daemon's IRC front-end, a small selection that must pass:
registration, PING, JOIN, PART, PRIVMSG to a channel and to a nick, QUIT, NAMES, TOPIC, WHOIS, AWAY (the
tests listed in tests/irctest/smoke.txt, about 30 s).
The whole suite is tests/irctest/run.sh (results in docs/IRC.md); this keeps its core from regressing. Each
irctest case starts its own ``twistd chatd`` through tests/irctest/chatd_controller.py, as the suite does.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from daemon import ROOT

HERE = os.path.join(ROOT, "tests", "irctest")
sys.path.insert(0, HERE)
import table  # noqa: E402  (tests/irctest/table.py)

IRCTEST = os.path.join(ROOT, "third_party", "irctest")
with open(os.path.join(HERE, "smoke.txt"), encoding="utf-8") as f:
    SMOKE = [line.strip() for line in f if line.strip()]


def short(node_id: str) -> tuple[str, str]:
    """``irctest/server_tests/join.py::JoinTestCase::testJoinTwice`` -> ``("join", "testJoinTwice")``."""
    path, _, name = node_id.split("::")
    return path.removeprefix("irctest/server_tests/").removesuffix(".py").replace("/", "."), name


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str]:
    """{(module, test): outcome and, for a failure, its message and wire exchange}."""
    tmp = tmp_path_factory.mktemp("irctest")
    xml = tmp / "smoke.xml"
    # TMPDIR: irctest's port booking file, the servers' data directories (tests/irctest/run.sh says why).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, IRCTEST]), CHATD_PYTHON=sys.executable,
               CHATD_ROOT=ROOT, TMPDIR=str(tmp))
    command = [
        sys.executable, "-m", "pytest", "-p", "irctest_loopback", "-p", "no:cacheprovider", "-q",
        "--controller", "chatd_controller", "--junit-xml", str(xml), *SMOKE,
    ]
    run = subprocess.run(command, cwd=IRCTEST, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=300)
    # 0: all passed, 1: some failed (test_passes says which); anything else (a node id that names no test, a
    # controller that cannot start) is an error of the run itself.
    assert run.returncode in (0, 1) and xml.exists(), run.stdout.decode(errors="replace")[-5000:]
    return {
        (table.module_of(classname), name): kind if kind == "pass" else f"{kind}: {message}"
        for (classname, name), (kind, message) in table.read([str(xml)], wire_lines=12).items()
    }


@pytest.mark.parametrize("node_id", SMOKE, ids=[":".join(short(n)) for n in SMOKE])
def test_passes(results: dict[tuple[str, str], str], node_id: str) -> None:
    assert results.get(short(node_id), "did not run") == "pass"
