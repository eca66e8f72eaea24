"""contrib/chatd.service points at files that `pip install` creates, and listens with the recommended backlog."""

from __future__ import annotations

import os
import re
import shlex

from setuptools.config.setupcfg import read_configuration

from daemon import ROOT

UNIT = os.path.join(ROOT, "contrib", "chatd.service")


def _unit() -> dict[str, str]:
    """The unit's settings (continuation lines joined); the last of a repeated key wins."""
    text = open(UNIT, encoding="utf-8").read().replace("\\\n", " ")
    return dict(re.findall(r"^(\w+)=(.*)$", text, re.M))


def test_documentation_points_at_files_pip_installs_into_the_venv():
    """Each Documentation= file is one of setup.cfg's data_files, under the venv that ExecStart runs from."""
    unit = _unit()
    venv = os.path.dirname(os.path.dirname(shlex.split(unit["ExecStart"])[0]))
    assert venv == "/opt/chatd"
    installed = {
        os.path.join(venv, folder, os.path.basename(source)): source
        for folder, sources in read_configuration(os.path.join(ROOT, "setup.cfg"))["options"]["data_files"]
        for source in sources
    }
    documents = unit["Documentation"].split()
    assert documents
    for uri in documents:
        assert uri.startswith("file://"), uri
        path = uri[len("file://"):]
        assert path in installed, (path, sorted(installed))
        assert os.path.isfile(os.path.join(ROOT, installed[path]))


def test_every_listen_endpoint_has_a_backlog():
    """The unit follows docs/OPERATIONS.md ("Connection bursts"): every --listen endpoint sets backlog=."""
    argv = shlex.split(_unit()["ExecStart"])
    endpoints = [argv[i + 1] for i, word in enumerate(argv) if word == "--listen"]
    assert endpoints
    for endpoint in endpoints:
        assert re.search(r":backlog=\d+", endpoint), endpoint
