"""twistd's --logfile never rotates by size: logrotate (or journald) owns rotation."""

from __future__ import annotations

import os

import pytest
from twisted.logger import globalLogPublisher, textFileLogObserver
from twisted.python.logfile import LogFile

from chatd.service import stop_size_rotation
from daemon import Daemon


@pytest.fixture
def twistd_log_file(tmp_path):
    """A LogFile inside a log observer, the way twistd --logfile sets it up (default rotateLength 1 MB)."""
    log_file = LogFile.fromFullPath(str(tmp_path / "chatd.log"))
    observer = textFileLogObserver(log_file)
    globalLogPublisher.addObserver(observer)
    try:
        yield log_file
    finally:
        globalLogPublisher.removeObserver(observer)
        log_file.close()


def test_size_rotation_is_turned_off(twistd_log_file, tmp_path):
    assert twistd_log_file.rotateLength == 1_000_000
    assert stop_size_rotation() == [twistd_log_file.path]
    assert twistd_log_file.rotateLength is None
    twistd_log_file.write("x" * 1_500_000 + "\n")
    twistd_log_file.write("more\n")
    assert os.listdir(tmp_path) == ["chatd.log"]  # no chatd.log.1: only logrotate renames it
    assert stop_size_rotation() == []  # already off: nothing to change (or log) again
    twistd_log_file.rotate()  # SIGUSR1 still rotates on demand
    assert sorted(os.listdir(tmp_path)) == ["chatd.log", "chatd.log.1"]


def test_daemon_turns_off_size_rotation(tmp_path):
    d = Daemon(str(tmp_path / "data")).start()
    try:
        assert "rotation by size turned off" in d.log()
    finally:
        d.stop()
