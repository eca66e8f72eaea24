"""
Password hashing with argon2id, off the reactor thread.

Hashing is deliberately slow, so it runs in a small bounded thread pool and
answers with Deferreds. Verifying an unknown name costs the same as a
wrong password: a dummy hash is checked, made with the argon2 parameters
that most stored hashes have (not those of ``--hash-time-cost`` and
``--hash-memory-kib``, which only new and rehashed passwords get), so timing
does not reveal which names exist. A password is what was typed, byte for
byte (:func:`decode_password`): it is never cleaned or cut.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

import argon2
from twisted.internet import defer

from chatd import errors
from chatd.text import PASSWORD_MAX, PASSWORD_MIN

Runner = Callable[..., "defer.Deferred[Any]"]

#: The parameter part of an argon2 hash in PHC string format (also found inside a
#: users.csv line, whose name field holds no ``$``): type, m (KiB), t, p.
_PARAMETERS: Final = re.compile(r"\$(argon2id|argon2i|argon2d)\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$")
_TYPES: Final = {"argon2id": argon2.Type.ID, "argon2i": argon2.Type.I, "argon2d": argon2.Type.D}
#: C0 controls, DEL and C1 controls: never part of a password (a terminal's
#: backspace or escape, not something a person means to type blind).
T = TypeVar("T")
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")


def decode_password(raw: bytes) -> str:
    """
    The password in ``raw``, exactly as received (one line without its line
    end), or :class:`~chatd.errors.BadPassword` with the sentence to show:
    it is not valid UTF-8, or :func:`password_problem` says why not.
    """
    try:
        password = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.BadPassword(
            "a password must be valid UTF-8 text, and this one is not (set your terminal or client to UTF-8)."
        ) from None
    problem = password_problem(password)
    if problem:
        raise errors.BadPassword(problem)
    return password


def password_problem(password: str) -> str | None:
    """
    Why ``password`` can be neither stored nor checked (the sentence to
    show), or None: it has fewer than PASSWORD_MIN or more than
    PASSWORD_MAX characters (code points), or control characters.
    """
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters."
    if _CONTROL.search(password):
        return "a password cannot contain control characters (tab, backspace, escape, ...)."
    return None


def _parameters(key: str) -> argon2.Parameters:
    """The argon2 parameters of a parameter part (see ``_PARAMETERS``)."""
    match = _PARAMETERS.fullmatch(key)
    assert match is not None
    kind, memory, time, lanes = match.groups()
    return argon2.Parameters(
        type=_TYPES[kind], version=19, salt_len=16, hash_len=32,
        time_cost=int(time), memory_cost=int(memory), parallelism=int(lanes),
    )


class Passwords:
    """
    Hash and verify passwords through ``run`` (a bounded thread pool).

    :param time_cost: argon2 iterations for new hashes.
    :param memory_kib: argon2 memory for new hashes, in KiB.
    :param parallelism: argon2 lanes for new hashes.
    """

    def __init__(self, run: Runner, time_cost: int = 2, memory_kib: int = 19456, parallelism: int = 1) -> None:
        self._run = run
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=argon2.Type.ID
        )
        self._current = f"$argon2id$v=19$m={memory_kib},t={time_cost},p={parallelism}$"
        #: How many stored hashes have each parameter part (``$argon2id$v=19$m=..,t=..,p=..$``).
        self._stored: Counter[str] = Counter()
        #: A dummy hash for each parameter part it was needed for (written in the pool).
        self._dummies: dict[str, str] = {}

    # -- which parameters the stored hashes have ----------------------------------

    def count_stored(self, hashes: Iterable[str]) -> None:
        """Note hashes now stored (PHC strings, or users.csv lines holding one)."""
        self._stored.update(match.group(0) for match in map(_PARAMETERS.search, hashes) if match)

    def uncount_stored(self, password_hash: str) -> None:
        """Note that ``password_hash`` (or the users.csv line holding it) is no longer stored."""
        match = _PARAMETERS.search(password_hash)
        if match and self._stored[match.group(0)] > 0:
            self._stored[match.group(0)] -= 1

    def _dummy_key(self) -> str:
        """The parameter part of most stored hashes (the current one on a tie, or with none stored)."""
        stored, current = self._stored, self._current
        return max(stored, key=lambda key: (stored[key], key == current), default=current)

    def dummy_parameters(self) -> argon2.Parameters:
        """The argon2 parameters of the dummy hash an unknown name is checked against now."""
        return _parameters(self._dummy_key())

    # -- hashing ---------------------------------------------------------------------

    def hash(self, password: str) -> defer.Deferred[str]:
        """
        The argon2id hash of ``password`` (with a fresh salt), with the
        current parameters; fails with ShuttingDown after :meth:`stop`.
        """
        return self._run(self._unless_stopped, self._hasher.hash, password)

    def verify(self, password_hash: str | None, password: str) -> defer.Deferred[bool]:
        """
        Whether ``password`` matches ``password_hash``. ``None`` (unknown
        user) checks against a dummy hash and always answers False. Fails
        with ShuttingDown after :meth:`stop`.
        """
        if password_hash is None:
            return self._run(self._unless_stopped, self._verify_unknown, self._dummy_key(), password)
        return self._run(self._unless_stopped, self._verify, password_hash, password)

    def stop(self) -> None:
        """
        The server is shutting down: hashes already queued in the pool are
        not computed (each fails with ShuttingDown as its turn comes, in
        microseconds), so stopping the pool waits at most for the ones
        running now.
        """
        self._stopped = True

    _stopped = False

    def _unless_stopped(self, function: Callable[..., T], *args: Any) -> T:
        """In the pool: ``function(*args)``, unless :meth:`stop` was called meanwhile."""
        if self._stopped:
            raise errors.ShuttingDown("the server is shutting down; nothing was done.")
        return function(*args)

    def needs_rehash(self, password_hash: str) -> bool:
        """
        Whether ``password_hash`` was made with other parameters than new
        hashes get (argon2 ``check_needs_rehash``): after a successful login,
        store a new hash of the password instead.
        """
        return self._hasher.check_needs_rehash(password_hash)

    def _verify_unknown(self, key: str, password: str) -> bool:
        dummy = self._dummies.get(key)
        if dummy is None:
            hasher = argon2.PasswordHasher.from_parameters(_parameters(key))
            dummy = self._dummies[key] = hasher.hash("not a password of anyone")
        self._verify(dummy, password)
        return False

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False
