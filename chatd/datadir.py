"""
The data directory's lock (docs/OPERATIONS.md, "Administration"): one
program at a time works on a data directory.

The server holds an exclusive ``fcntl.flock`` on ``DATA_DIR/chatd.lock``
from the load at start-up until it has stopped (``chatd.service``
``StoreService``); ``chatd-admin`` takes the same lock before it reads
anything. Neither waits: a second server, or the tool while a server runs,
is refused with who holds the lock. The holder writes ``PID PROGRAM`` into
the file, for that message only: the lock is the ``flock``, which the kernel
drops when the holder's process ends (a ``kill -9`` leaves no stale lock).

It also keeps the server's key for resume tokens (chatd.tokens) in
``DATA_DIR/token.key`` (:func:`load_token_key`).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from typing import IO

from twisted.logger import Logger

from chatd.stores.csv_files import replace_data

log = Logger()

LOCK_FILE = "chatd.lock"
#: The server's key for resume tokens: 64 hex digits and a newline, mode 0600.
TOKEN_KEY_FILE = "token.key"
TOKEN_KEY_BYTES = 32


class DataDirInUse(Exception):
    """Another process holds the data directory's lock; ``str(error)`` says which (for the operator)."""

    def __init__(self, data_dir: str, holder: str) -> None:
        pid, _, program = holder.partition(" ")
        program = program.strip() or "chatd"
        who = f"{program} is running on this data directory" + (f" (pid {pid})" if pid.isdigit() else "")
        super().__init__(who)
        self.pid = int(pid) if pid.isdigit() else None
        self.program = program


def lock_data_dir(data_dir: str, program: str) -> IO[str]:
    """
    Take the lock of ``data_dir`` (created 0700 if missing) for this process
    as ``program`` (``chatd``, ``chatd-admin``), without waiting; returns
    the open lock file, which holds the lock until :func:`unlock_data_dir`
    (or the process ends). Raises DataDirInUse, or OSError.
    """
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = os.path.join(data_dir, LOCK_FILE)
    handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read(200)
        handle.close()
        raise DataDirInUse(data_dir, holder) from None
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {program}\n")
    handle.flush()
    return handle


def unlock_data_dir(handle: IO[str]) -> None:
    """Let go of the lock taken by :func:`lock_data_dir` (the file stays, empty of meaning)."""
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


def load_token_key(data_dir: str) -> bytes:
    """
    The server's key for resume tokens (chatd.tokens), from
    ``DATA_DIR/token.key``; made at first start (random, written aside,
    fsynced and renamed, mode 0600). A file that holds no key (damaged,
    emptied) is replaced by a new key, and one readable by others is made
    0600, each with a warning. Call it in the start-up, under the data
    directory's lock (blocking file I/O). Raises OSError.
    """
    path = os.path.join(data_dir, TOKEN_KEY_FILE)
    try:
        with open(path, "rb") as handle:
            text = handle.read(200)
            mode = os.fstat(handle.fileno()).st_mode
    except FileNotFoundError:
        return _new_key(path)
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
    except ValueError:
        key = b""
    if len(key) < TOKEN_KEY_BYTES:
        log.warn("{path} holds no key; a new one is made (resume tokens issued before are void)", path=path)
        return _new_key(path)
    if stat.S_IMODE(mode) & 0o077:
        log.warn("{path} was readable by others; it is now mode 0600", path=path)
        os.chmod(path, 0o600)
    return key


def _new_key(path: str) -> bytes:
    key = secrets.token_bytes(TOKEN_KEY_BYTES)
    replace_data(path, key.hex().encode("ascii") + b"\n")
    return key
