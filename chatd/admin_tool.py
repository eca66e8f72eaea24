"""
``chatd-admin``: administration of a stopped server's data directory, for
the machine's operator (docs/OPERATIONS.md, "Administration").

    chatd-admin --data-dir DIR list-users
    chatd-admin --data-dir DIR lock NAME [REASON]
    chatd-admin --data-dir DIR unlock NAME
    chatd-admin --data-dir DIR reset-password NAME
    chatd-admin --data-dir DIR delete-user NAME
    chatd-admin --data-dir DIR make-admin NAME
    chatd-admin --data-dir DIR remove-admin NAME
    chatd-admin --data-dir DIR migrate-to-postgres DSN

It works through the CSV store itself (``CsvStore`` with a synchronous
runner: no reactor, no thread; ``load_now`` and the same write methods as
the server), so the file formats stay in one place, and it writes the same
values the in-chat admin commands write (chatd.admin) with a log.csv row
each (``user`` empty, ``via=chatd-admin`` and the operator's login name).

It never works beside a running server: it takes the data directory's lock
(chatd.datadir) first, without waiting, and if the server holds it refuses
with exit status 2 (``chatd is running on this data directory (pid N); stop
it first or use the in-chat admin commands``). Exit status 1: the command
could not be done (no such account, nothing to undo, a storage error).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from chatd.admin import ADMIN, LOCKED, MUST_CHANGE, one_time_password
from chatd.datadir import DataDirInUse, lock_data_dir, unlock_data_dir
from chatd.moderation import REASON_MAX
from chatd.passwords import Passwords
from chatd.persistence import CsvStore
from chatd.store import EventName, Loaded, LogEvent, StoreError, UserRecord
from chatd.stores.jobs import fired
from chatd.text import clean_text, name_key

#: The server's default --data-dir (chatd.tap).
DEFAULT_DATA_DIR = "chatd-data"
#: Exit statuses: done; could not be done; the data directory is in use (or a usage error, as argparse exits).
OK, FAILED, IN_USE = 0, 1, 2


class Refused(Exception):
    """The command cannot be done; ``str(error)`` says why (exit status 1)."""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Tool:
    """One run of chatd-admin on a locked data directory: the store, what it loaded, and the subcommands."""

    def __init__(self, data_dir: str, out: Any) -> None:
        self.store = CsvStore(data_dir, run=defer.maybeDeferred, clock=Clock(), now=_now)
        self.loaded: Loaded = self.store.load_now()
        self.out = out

    def account(self, name: str) -> UserRecord:
        record = self.loaded.users.get(name_key(name))
        if record is None:
            raise Refused(f"there is no user called {name}.")
        return record

    def value(self, record: UserRecord, key: str) -> str:
        return self.loaded.marks.get(name_key(record.name), {}).get(key, "")

    def log(self, event: EventName, record: UserRecord, **details: str) -> LogEvent:
        return LogEvent(event, "", details={"target": record.name, **details, "via": "chatd-admin",
                                            "os_user": _os_user()})

    def set_values(self, record: UserRecord, values: dict[str, str], event: LogEvent) -> None:
        """The account's values, durable; then ``event``'s row (written when the tool stops)."""
        fired(self.store.set_marks(record.name, values, durable=True))
        self.store.log_event(event.event, event.user, event.room, **event.details)

    # -- the subcommands ------------------------------------------------------------

    def list_users(self) -> None:
        """One line per account, by name: name, created, flags (tab-separated, after a header)."""
        print("name\tcreated\tflags", file=self.out)
        records = sorted(self.loaded.users.values(), key=lambda record: name_key(record.name))
        for record in records:
            flags = []
            if self.value(record, ADMIN) == "1":
                flags.append("admin")
            locked = self.value(record, LOCKED)
            if locked:
                flags.append("locked" if locked == "1" else f"locked ({locked})")
            if self.value(record, MUST_CHANGE):
                flags.append("must change password")
            print(f"{record.name}\t{record.created}\t{', '.join(flags)}", file=self.out)

    def lock(self, name: str, reason: str) -> None:
        record = self.account(name)
        self.set_values(record, {LOCKED: reason or "1"}, self.log("lock", record, reason=reason))
        print(f"Account {record.name} locked.", file=self.out)

    def unlock(self, name: str) -> None:
        record = self.account(name)
        if not self.value(record, LOCKED):
            raise Refused(f"{record.name} is not locked.")
        self.set_values(record, {LOCKED: ""}, self.log("unlock", record))
        print(f"Account {record.name} unlocked.", file=self.out)

    def reset_password(self, name: str) -> None:
        """As ``/resetpw``: the mark first, then the one-time password's hash (default argon2 parameters)."""
        record = self.account(name)
        password = one_time_password()
        before = self.value(record, MUST_CHANGE)
        fired(self.store.set_marks(record.name, {MUST_CHANGE: "1"}, durable=True))
        password_hash = fired(Passwords(run=defer.maybeDeferred).hash(password))
        updated = UserRecord(record.name, password_hash, record.created)
        try:
            fired(self.store.replace_password(updated, self.log("password_reset", record)))
        except Exception:  # the old password stays: so does the old mark
            self.store.set_marks(record.name, {MUST_CHANGE: before}, durable=True)
            raise
        print(f"One-time password for {record.name}: {password}", file=self.out)
        print("It works for one login; then they must choose a new password.", file=self.out)

    def delete_user(self, name: str) -> None:
        """As ``/deluser``: the rooms it owns, then the account (its marks and queued messages with it)."""
        record = self.account(name)
        key = name_key(record.name)
        for room in self.loaded.rooms:
            if room.owner and name_key(room.owner) == key:
                event = LogEvent("room_delete", "", room.name, {"via": "chatd-admin", "os_user": _os_user()})
                fired(self.store.delete_room(room.name, event))
                print(f"Room {room.name} deleted.", file=self.out)
        fired(self.store.delete_user(record.name, self.log("account_delete", record)))
        print(f"Account {record.name} deleted.", file=self.out)

    def make_admin(self, name: str) -> None:
        record = self.account(name)
        if self.value(record, ADMIN) == "1":
            raise Refused(f"{record.name} is an admin already.")
        self.set_values(record, {ADMIN: "1"}, self.log("make_admin", record))
        print(f"{record.name} is now an admin (from the server's next start).", file=self.out)

    def remove_admin(self, name: str) -> None:
        record = self.account(name)
        if self.value(record, ADMIN) != "1":
            raise Refused(f"{record.name} is not an admin by the stored flag (one named by the server's --admin "
                          "stays one until the option is removed).")
        self.set_values(record, {ADMIN: ""}, self.log("remove_admin", record))
        print(f"{record.name} is no longer an admin (from the server's next start).", file=self.out)


    def migrate_to_postgres(self, dsn: str) -> None:
        """Copy everything into the empty database ``dsn`` (chatd.stores.postgres_copy); the directory is left as it is."""
        try:
            from chatd.stores.postgres_copy import copy_data_dir
        except ImportError as error:
            raise Refused(f"PostgreSQL needs psycopg ({error}): pip install 'chatd[postgres]'") from None
        copied = copy_data_dir(self.store, self.loaded, dsn)
        for note in copied.notes:
            print(f"note: {note}", file=self.out)
        counts = copied.counts
        print(f"Copied {counts['users']} accounts, {counts['rooms']} rooms, {counts['offline']} offline messages, "
              f"{counts['marks']} marks, {counts['room_values']} room values, {counts['history']} history events "
              f"of {counts['history_tails']} rooms and {counts['log']} log events into {copied.where}.",
              file=self.out)
        print(f"Start chatd with --store (and keep {self.store.data_dir} for the file spool, or a copy as a backup).",
              file=self.out)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return str(os.getuid())


def _reason(text: str) -> str:
    """A lock reason from the command line: clean text of at most REASON_MAX characters."""
    reason = " ".join(text.split())
    if len(reason) > REASON_MAX or clean_text(reason) != reason:
        raise Refused(f"a reason is clean text of at most {REASON_MAX} characters.")
    return reason


def parser() -> argparse.ArgumentParser:
    """The command line (``chatd-admin --help``)."""
    top = argparse.ArgumentParser(
        prog="chatd-admin",
        description="Administer the accounts of a stopped chatd server's data directory. It refuses (exit status 2) "
                    "while a server runs on it: use the in-chat admin commands then.")
    top.add_argument("--data-dir", "-d", default=DEFAULT_DATA_DIR,
                     help=f"the server's --data-dir (default: {DEFAULT_DATA_DIR})")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list-users", help="list the accounts: name, created, flags (admin, locked, must change "
                                           "password)")
    lock = commands.add_parser("lock", help="lock an account: it cannot log in")
    lock.add_argument("name", metavar="NAME")
    lock.add_argument("reason", metavar="REASON", nargs="*", help="shown to them when they try to log in")
    for name, text in (("unlock", "unlock an account"),
                       ("reset-password", "give an account a one-time password (printed), to be changed at its "
                                          "next login"),
                       ("delete-user", "delete an account and the rooms it owns"),
                       ("make-admin", "make an account a server admin (stored; the server's --admin names more)"),
                       ("remove-admin", "take away the stored admin flag")):
        commands.add_parser(name, help=text).add_argument("name", metavar="NAME")
    migrate = commands.add_parser("migrate-to-postgres", help="copy the data directory (accounts, rooms, log, offline "
                                  "messages, marks, room values, history) into an empty PostgreSQL database")
    migrate.add_argument("--data-dir", "-d", default=argparse.SUPPRESS, help="as before the command")
    migrate.add_argument("dsn", metavar="DSN", help="a postgresql:// URL (the password may come from PGPASSWORD or "
                                                    "~/.pgpass instead: a command line is visible to other users)")
    return top


def main(argv: Sequence[str] | None = None, out: Any = None, err: Any = None) -> int:
    """Run chatd-admin with ``argv`` (default: the command line); returns the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    args = parser().parse_args(argv)
    data_dir = args.data_dir
    if not os.path.isdir(data_dir):
        print(f"chatd-admin: no data directory at {data_dir} (--data-dir)", file=err)
        return FAILED
    try:
        lock = lock_data_dir(data_dir, "chatd-admin")
    except DataDirInUse as error:
        print(f"chatd-admin: {error}; stop it first or use the in-chat admin commands", file=err)
        return IN_USE
    except OSError as error:
        print(f"chatd-admin: cannot lock {data_dir}: {error}", file=err)
        return FAILED
    try:
        tool = Tool(data_dir, out)
        try:
            _run(tool, args)
        finally:
            fired(tool.store.stop())  # the log rows
    except (Refused, StoreError, OSError) as error:  # its message says it all (a StoreError's: the reason)
        print(f"chatd-admin: {error}", file=err)
        return FAILED
    except Exception as error:  # a fault of another kind: its class too, no traceback
        print(f"chatd-admin: {type(error).__name__}: {error}", file=err)
        return FAILED
    finally:
        unlock_data_dir(lock)
    return OK


def _run(tool: Tool, args: argparse.Namespace) -> None:
    command = args.command
    if command == "list-users":
        tool.list_users()
    elif command == "lock":
        tool.lock(args.name, _reason(" ".join(args.reason)))
    elif command == "migrate-to-postgres":
        tool.migrate_to_postgres(args.dsn)
    else:
        {"unlock": tool.unlock, "reset-password": tool.reset_password, "delete-user": tool.delete_user,
         "make-admin": tool.make_admin, "remove-admin": tool.remove_admin}[command](args.name)


if __name__ == "__main__":
    sys.exit(main())
