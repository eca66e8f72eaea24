"""
Password hashing with argon2id, off the reactor thread.

Hashing is deliberately slow, so it runs in a small bounded thread pool and
answers with Deferreds. Verifying an unknown name costs the same as a
wrong password (a dummy hash is checked), so timing does not reveal which
names exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import argon2
from twisted.internet import defer

Runner = Callable[..., "defer.Deferred[Any]"]


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
        self._dummy: str | None = None

    def hash(self, password: str) -> defer.Deferred[str]:
        """The argon2id hash of ``password`` (with a fresh salt)."""
        return self._run(self._hasher.hash, password)

    def verify(self, password_hash: str | None, password: str) -> defer.Deferred[bool]:
        """
        Whether ``password`` matches ``password_hash``. ``None`` (unknown
        user) checks against a dummy hash and always answers False.
        """
        return self._run(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:
            if self._dummy is None:
                self._dummy = self._hasher.hash("not a password of anyone")
            password_hash = self._dummy
            password = password + "\0"
            known = False
        else:
            known = True
        try:
            return self._hasher.verify(password_hash, password) and known
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False
