"""A start that fails (port in use, unusable data directory) is one line on stderr and in the log, and exit status 1."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from daemon import ROOT, Daemon


def _failed_start(daemon: Daemon) -> tuple[int, str]:
    """Run the daemon to its end; return (exit status, stderr)."""
    done = subprocess.run(daemon.command(), cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60)
    return done.returncode, done.stderr


def _assert_one_line_failure(daemon: Daemon, status: int, stderr: str, reason: str) -> None:
    assert status == 1, (status, stderr, daemon.log())
    assert stderr.splitlines() == [f"chatd could not start: {reason}"], stderr
    log = daemon.log()
    assert f"chatd could not start: {reason}" in log
    assert "Traceback" not in log and "stopped cleanly" not in log, log
    if daemon.pidfile:
        assert not os.path.exists(daemon.pidfile)


def test_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        d = Daemon(str(tmp_path / "data"), port=port, pidfile=str(tmp_path / "chatd.pid"))
        status, stderr = _failed_start(d)
    _assert_one_line_failure(
        d, status, stderr,
        f"cannot listen on tcp:{port}:interface=127.0.0.1: "
        f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use.")
    assert not os.path.exists(tmp_path / "data")  # the data directory is untouched: binding comes first


@pytest.mark.parametrize("case", ["missing parent", "data file is a directory", "data file of a newer format"])
def test_unusable_data_dir(tmp_path, case):
    if case == "missing parent":
        data_dir, reason = "/proc/nope", "[Errno 2] No such file or directory: '/proc/nope'"
    elif case == "data file of a newer format":
        data_dir = str(tmp_path / "data")
        os.makedirs(data_dir)
        newer = b"#chatd-rooms,3.0,name,owner,created\nlab,ann,2030-01-01T00:00:00Z\n"
        with open(os.path.join(data_dir, "rooms.csv"), "wb") as handle:
            handle.write(newer)
        reason = "rooms.csv is format 3.0, newer than this chatd reads (2.x); run a newer chatd or restore a backup"
    else:
        data_dir = str(tmp_path / "data")
        os.makedirs(os.path.join(data_dir, "users.csv"))
        reason = f"[Errno 21] Is a directory: '{data_dir}/users.csv'"
    d = Daemon(data_dir, pidfile=str(tmp_path / "chatd.pid"))
    d.log_path = str(tmp_path / "twistd.log")
    status, stderr = _failed_start(d)
    _assert_one_line_failure(d, status, stderr, f"data directory {data_dir}: {reason}")
    with socket.socket() as probe:  # the port it had bound is free again
        probe.bind(("127.0.0.1", d.port))
    if case == "data file of a newer format":  # refused, not truncated or rewritten
        assert open(os.path.join(data_dir, "rooms.csv"), "rb").read() == newer


class _LimitedDaemon(Daemon):
    """The daemon under the usual desktop open-file limits (soft 1024, hard 4096)."""

    def command(self) -> list[str]:
        command = super().command()
        assert command[1] == "-c"
        command[2] = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096)); " + command[2]
        return command


def test_default_start_does_not_warn_about_the_open_file_limit(tmp_path):
    """With the defaults chatd raises its soft limit to what --max-connections needs, within the hard limit."""
    d = _LimitedDaemon(str(tmp_path / "data")).start()
    try:
        pid = d.process.pid
        with open(f"/proc/{pid}/limits") as limits:
            row = next(line for line in limits if line.startswith("Max open files"))
        assert row.split()[3:5] == ["4096", "4096"], row  # soft raised to the hard limit: 3840 connections + 256
    finally:
        d.stop()
    assert "chatd listening on" in d.log()
    assert "open file limit" not in d.log(), d.log()


def _daemonizing_start(daemon: Daemon) -> tuple[int, str]:
    """Start like `twistd --pidfile p --logfile l chatd ...` (no -n): the parent waits for the child's verdict."""
    command = [part for part in daemon.command() if part != "-n"]
    done = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60)
    return done.returncode, done.stderr


def test_daemonizing_start_shows_the_whole_reason(tmp_path):
    """A daemonizing twistd prints twistd's line with the reason whole (not cut at 100 bytes), as OPERATIONS.md shows."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        d = Daemon(str(tmp_path / "data"), port=port, pidfile=str(tmp_path / "chatd.pid"))
        d.log_path = str(tmp_path / "chatd.log")
        status, stderr = _daemonizing_start(d)
    assert status == 1, stderr
    assert stderr.splitlines() == [
        f"An error has occurred: b'chatd.service.StartError: cannot listen on 127.0.0.1:{port}: Address already in use'",
        "Please look at log file for more information.",
    ], stderr
    assert (f"chatd could not start: cannot listen on tcp:{port}:interface=127.0.0.1: "
            f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use.") in d.log()
    # The daemon (twistd's child) removes its pid file as it exits, which may be just after the parent has
    # reported the failure and returned: wait for it, bounded (it failed under load when asserted at once).
    deadline = time.monotonic() + 10
    while os.path.exists(d.pidfile) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(d.pidfile)
    docs = open(os.path.join(ROOT, "docs", "OPERATIONS.md"), encoding="utf-8").read()
    assert ("An error has occurred: b'chatd.service.StartError: cannot listen on 127.0.0.1:8023: "
            "Address already in use'\nPlease look at log file for more information.") in docs


def test_daemonizing_start_with_an_unusable_data_dir(tmp_path):
    d = Daemon("/proc/nope", pidfile=str(tmp_path / "chatd.pid"))
    d.log_path = str(tmp_path / "chatd.log")
    status, stderr = _daemonizing_start(d)
    assert status == 1, stderr
    assert stderr.splitlines()[0] == (
        "An error has occurred: b'chatd.service.StartError: data directory: No such file or directory: /proc/nope'")


def test_start_error_summaries_fit_twistds_status_pipe():
    """Whatever the reason, the summary is whole ASCII within 72 bytes (twistd passes 100 bytes, 28 are its own)."""
    from chatd.service import SUMMARY_MAX, StartError, summarize

    assert SUMMARY_MAX == 100 - len("1 ") - len("chatd.service.StartError: ")
    long = "data directory: Permission denied: /srv/" + "x" * 80 + "/users.csv"
    assert summarize(long) == "data directory: Permission denied..."
    error = StartError("chatd could not start: " + long, "cannot listen on " + "é" * 100)
    assert len(str(error)) <= SUMMARY_MAX and str(error).isascii() and error.message.endswith("users.csv")
