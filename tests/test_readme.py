"""README.md: the commands a new user copies work as written."""

from __future__ import annotations

import os
import re

from daemon import ROOT

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_readme_starts_with_the_server_and_the_test_suite_commands():
    """CI (.ci/run) runs the second ```sh block; the first starts the server on port 8023 with its CSV data dir."""
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert "twistd -n chatd" in blocks[0] and "chatd-data" in README.split("```sh", 1)[0]
    assert blocks[1].strip().endswith(".venv/bin/python -m pytest -q")


def test_programs_are_called_from_the_venv():
    """`twistd` and `chat` are not on PATH unless the venv is active: every command calls .venv/bin/..."""
    spans = re.findall(r"`([^`\n]+)`", README) + re.findall(r"```sh\n(.*?)```", README, re.S)
    commands = [span for span in spans if " --" in span or "|" in span]  # not the names in prose
    assert len(commands) >= 4
    bare = [command for command in commands if re.search(r"(^|[|;&]\s*)(twistd|chat)\b", command)]
    assert bare == [], bare


def test_readme_explains_the_pid_file_and_ctrl_c():
    assert "./twistd.pid" in README and "--pidfile" in README
    assert "Ctrl-C stops it" in README
    for status in ("| 0 |", "| 1 |", "| 3 |", "| 130 |"):
        assert status in README


def test_wrong_client_options_print_what_the_readme_says(capsys):
    """README: wrong options get the usage, then `chat: error: WHAT`, status 2 (argparse's way), not one line."""
    import pytest

    from clients.cli import parse_args

    with pytest.raises(SystemExit) as exited:
        parse_args(["-x"])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("usage: chat [-h] [--host HOST]") and lines[-1] == "chat: error: unrecognized arguments: -x"
    assert "`usage: chat [-h] [--host HOST] ...`" in README and "`chat: error: unrecognized arguments: -x`" in README
    assert "with status 2" in README
