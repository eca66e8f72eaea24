"""
Account commands of a logged-in user: change the password, log out, delete
the account (docs/PROTOCOL.md, "Your account"). Register and login are in
chatd.commands.builtin. The passwords are secret arguments: the line
front-end asks them hidden, at the menu.
"""

from __future__ import annotations

from twisted.internet import defer

from chatd.commands.builtin import ANYWHERE, MENU, command, valid_password
from chatd.commands.table import Arg, Caller, Login
from chatd.text import PASSWORD_MIN


@command("password", "change your password", MENU, number="13", login=Login.REQUIRED, args=(
    Arg("PASSWORD", "Current password:", secret=True, check=valid_password),
    Arg("NEW", f"New password (at least {PASSWORD_MIN} characters):", secret=True,
        confirm="Repeat the new password:", mismatch="the passwords do not match; nothing was changed.",
        check=valid_password),
))
def password(caller: Caller, old: str, new: str) -> defer.Deferred[None]:
    d = caller.factory.change_password(caller.session, old, new)
    return d.addCallback(lambda _: caller.reply("Password changed."))


@command("logout", "log out and stay connected", ANYWHERE, number="14", login=Login.REQUIRED, while_reset=True)
def logout(caller: Caller) -> None:
    caller.logged_out("Logged out.")


@command("deleteme", "delete your account and the rooms you own", MENU, number="15", login=Login.REQUIRED, args=(
    Arg("PASSWORD", "Your password, to delete your account and every room you own:", secret=True, check=valid_password),
))
def deleteme(caller: Caller, password: str) -> defer.Deferred[None]:
    d = caller.factory.delete_account(caller.session, password)
    return d.addCallback(lambda name: caller.logged_out(f"Account {name} deleted."))
