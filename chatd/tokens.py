"""
Resume tokens (issue 15): what lets a browser page whose connection dropped
log in again without its password (docs/PROTOCOL.md, "Resuming a session").

A token is ``BODY.MAC``, both base64url without padding: BODY is the JSON
list ``[name key, issued, epoch, nonce]`` (issued: whole seconds since the
epoch; epoch: the account's token epoch when issued, :data:`EPOCH`; nonce:
16 random bytes as hex), MAC is HMAC-SHA256 under the server's key over
BODY and the account's current password hash. So a token

- is random (the nonce) and cannot be made without the key (the key file in
  the data directory, ``chatd.datadir.load_token_key``: it survives a
  restart, and deleting it voids every token);
- is short-lived: valid :data:`LIFETIME` seconds after it was issued (a
  connected page is sent a fresh one every few minutes);
- dies with the password hash it was made under: a password change, an
  admin's reset, a rehash, the account deleted (and its name registered
  again) all void it without anything stored;
- dies at logout and at an admin's lock: :meth:`Tokens.void` counts the
  account's epoch up (a durable per-account value, ``Store.set_marks``),
  and only a token of the current epoch is taken.

Several nodes (issue 17): with PostgreSQL the key is the database's
(``Loaded.token_key``), one for every node, and :meth:`Tokens.void` shares
the new epoch on the bus (``["account_values", NAME, {EPOCH: N}]``, applied
elsewhere by ``chatd.nodes.Nodes.account_values``, the greater epoch
winning), so a token is taken on every node and a logout on one voids it on
all of them within the bus's round trip.

Tokens are never logged and never stored by the server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import TYPE_CHECKING, Any, Literal, Protocol

from twisted.logger import Logger

from chatd.text import name_key

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from chatd.core.ports import Bus
    from chatd.store import Accounts, Store

#: Seconds a token is valid after it was issued.
LIFETIME = 600.0
#: Seconds a token's issue time may lie ahead of the server's clock (a clock stepped back; a restart).
SKEW = 60.0
#: The per-account value (``Store.set_marks``) holding the account's token epoch (ASCII digits; unset: 0).
EPOCH = "token_epoch"
#: Characters a token may have (the longest name key, a time, an epoch and a nonce fit many times over).
TOKEN_MAX = 512
#: What the MAC covers before the body: the token's kind and version.
_CONTEXT = b"chatd resume token 1\0"

#: Why a token was not taken: "bad" (not one the server made: malformed, wrong MAC, unknown account,
#: issued in the future), "expired" (past LIFETIME), "void" (logged out or locked since: an older epoch).
Problem = Literal["", "bad", "expired", "void"]


def epoch_count(text: str) -> int:
    """A token epoch (:data:`EPOCH`'s value, ASCII digits) as a number; 0 if unset or not one."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 18 else 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """base64url without padding; raises ValueError."""
    if not text.isascii():
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as error:
        raise ValueError("not base64url") from error


class AccountState(Protocol):
    """
    What :class:`Tokens` needs of the server's state (chatd.factory.ChatFactory, which imports this module:
    described here so that nothing imports factory.py back).
    """

    @property
    def accounts(self) -> Accounts:
        """Account records by name key."""

    @property
    def marks(self) -> dict[str, dict[str, str]]:
        """Per-account values (``Store.set_marks``) by name key, in memory; changed in place."""

    @property
    def store(self) -> Store:
        """Where a changed epoch is written (``set_marks``)."""

    @property
    def bus(self) -> Bus:
        """Where a changed epoch is shared with other nodes (``share``)."""

    @property
    def reactor(self) -> IReactorTime:
        """The clock of issue times (``seconds()``)."""

    def account_value(self, name: str | None, key: str) -> str:
        """A per-account value of the account ``name``; "" if unset."""


class Tokens:
    """Issues and checks the resume tokens of ``factory``'s accounts (one per :class:`~chatd.factory.ChatFactory`)."""

    log = Logger()

    def __init__(self, factory: AccountState, key: bytes | None = None, lifetime: float = LIFETIME) -> None:
        """``key``: the server's key (at least 32 bytes); None: a random one for this process only (tests)."""
        self.factory = factory
        self.key = key if key is not None else secrets.token_bytes(32)
        self.lifetime = lifetime

    def _epoch(self, name: str) -> str:
        return self.factory.account_value(name, EPOCH) or "0"

    def _mac(self, body: str, password_hash: str) -> bytes:
        return hmac.new(self.key, _CONTEXT + body.encode("ascii") + b"\0" + password_hash.encode("utf-8"),
                        hashlib.sha256).digest()

    def issue(self, name: str) -> tuple[str, float]:
        """
        A new token for the account ``name`` and when it expires (seconds
        since the epoch). Raises KeyError if there is no such account.
        """
        key = name_key(name)
        record = self.factory.accounts[key]
        issued = int(self.factory.reactor.seconds())
        body = _b64(json.dumps([key, issued, self._epoch(name), secrets.token_hex(16)],
                               separators=(",", ":")).encode("ascii"))
        return f"{body}.{_b64(self._mac(body, record.password_hash))}", issued + self.lifetime

    def check(self, token: Any) -> tuple[str, Problem]:
        """
        (the account's name as registered, "") if ``token`` is a token of
        this server that is valid now; else (that name, or "" if the token
        is "bad", why not: :data:`Problem`).
        Constant-time MAC comparison (``hmac.compare_digest``). A locked
        account's token passes here: the caller checks the lock.
        """
        if not isinstance(token, str) or len(token) > TOKEN_MAX or token.count(".") != 1:
            return "", "bad"
        body, _, mac = token.partition(".")
        try:
            fields = json.loads(_unb64(body))
            given = _unb64(mac)
        except ValueError:  # (json's errors are ValueErrors too)
            return "", "bad"
        if (not isinstance(fields, list) or len(fields) != 4 or not isinstance(fields[0], str)
                or type(fields[1]) is not int or not all(isinstance(field, str) for field in fields[2:])):
            return "", "bad"
        key, issued, epoch, _ = fields
        record = self.factory.accounts.get(key)
        if record is None or not hmac.compare_digest(self._mac(body, record.password_hash), given):
            return "", "bad"
        now = self.factory.reactor.seconds()
        if issued > now + SKEW:
            return "", "bad"
        if epoch != self._epoch(record.name):
            return record.name, "void"
        if now >= issued + self.lifetime:
            return record.name, "expired"
        return record.name, ""

    def void(self, name: str) -> None:
        """
        Void every token of the account ``name`` issued until now (logout, a
        lock): its epoch counts up, at once in memory, on the other nodes
        (the bus) and durably in the store (a failure to store it is logged:
        the tokens stay void until a restart, and expire within
        :data:`LIFETIME` anyway).
        """
        key = name_key(name)
        factory = self.factory
        if key not in factory.accounts:
            return  # (deleted: its tokens died with its password hash)
        current = factory.account_value(name, EPOCH)
        epoch = str(epoch_count(current) + 1)
        factory.marks.setdefault(key, {})[EPOCH] = epoch
        factory.bus.share(["account_values", name, {EPOCH: epoch}])  # (other nodes: chatd.nodes)
        factory.store.set_marks(name, {EPOCH: epoch}, durable=True).addErrback(
            lambda failure: self.log.error("could not store that the tokens of {user} are void: {why}",
                                           user=name, why=failure.getErrorMessage()))
