"""
Server administration commands (issue 14; docs/PROTOCOL.md, "Server
administration"): ``/disconnect``, ``/lock``, ``/unlock``, ``/resetpw``,
``/deluser``, ``/banip``, ``/unbanip``, ``/ipbans``, ``/wall``, usable
anywhere (at the menu as keywords); and ``newpassword``, which a user who
logged in with a one-time password must give before anything else.

Only admins may use them: declared (``admin=True``), so the table refuses
everyone else with ``only server admins may use lock.`` for every front-end
before the handler runs. Deleting any room is the ``delete`` command
(``ChatFactory.delete_room`` lets an admin delete any room). The state and
its changes are ``chatd.admin`` (``ChatFactory.admin``).
"""

from __future__ import annotations

from twisted.internet import defer

from chatd.commands.builtin import ANYWHERE, MENU, command, valid_password
from chatd.commands.moderation import DURATION_REASON, REASON
from chatd.commands.table import Arg, Caller, Login
from chatd.moderation import duration_and_reason, duration_text
from chatd.text import PASSWORD_MIN


def _admin(caller: Caller) -> str:
    name = caller.session.name
    assert name is not None  # Login.REQUIRED
    return name


@command("disconnect", "end the session of NAME (admins)", ANYWHERE, login=Login.REQUIRED, admin=True,
         args=(Arg("NAME", "Name of the user to disconnect:"), REASON))
def disconnect(caller: Caller, name: str, reason: str) -> None:
    target = caller.factory.admin.disconnect(_admin(caller), name, reason)
    caller.reply(f"Disconnected {target}.")


@command("lock", "lock the account NAME: it cannot log in and its session ends (admins)", ANYWHERE,
         login=Login.REQUIRED, admin=True,
         args=(Arg("NAME", "Name of the account to lock:"), REASON))
def lock(caller: Caller, name: str, reason: str) -> defer.Deferred[None]:
    d = caller.factory.admin.lock(_admin(caller), name, reason)
    return d.addCallback(lambda target: caller.reply(f"Account {target} locked."))


@command("unlock", "unlock the account NAME (admins)", ANYWHERE, login=Login.REQUIRED, admin=True,
         args=(Arg("NAME", "Name of the account to unlock:"),))
def unlock(caller: Caller, name: str) -> defer.Deferred[None]:
    d = caller.factory.admin.unlock(_admin(caller), name)
    return d.addCallback(lambda target: caller.reply(f"Account {target} unlocked."))


@command("resetpw", "give NAME a one-time password, to be changed at the next login (admins)", ANYWHERE,
         login=Login.REQUIRED, admin=True, args=(Arg("NAME", "Name of the account:"),))
def resetpw(caller: Caller, name: str) -> defer.Deferred[None]:
    def show(reset: tuple[str, str]) -> None:
        target, password = reset
        caller.reply(f"One-time password for {target}: {password} (shown only to you; it works for one login, "
                     "then they must choose a new password).")

    return caller.factory.admin.reset_password(_admin(caller), name).addCallback(show)


@command("deluser", "delete the account NAME and the rooms it owns (admins)", ANYWHERE, login=Login.REQUIRED,
         admin=True, args=(Arg("NAME", "Name of the account to delete:"),))
def deluser(caller: Caller, name: str) -> defer.Deferred[None]:
    d = caller.factory.admin.delete_user(_admin(caller), name)
    return d.addCallback(lambda target: caller.reply(f"Account {target} deleted."))


@command("banip", "refuse connections from an address or network for DURATION (30s, 10m, 2h, 7d; none: until "
         "/unbanip) and end those open (admins)", ANYWHERE, login=Login.REQUIRED, admin=True,
         args=(Arg("ADDRESS", "Address or network to ban (192.0.2.7, 192.0.2.0/24):"), DURATION_REASON))
def banip(caller: Caller, address: str, text: str) -> defer.Deferred[None]:
    seconds, reason = duration_and_reason(text)
    own = caller.session.origin.get("address")
    d = caller.factory.admin.ban_address(_admin(caller), address, seconds, reason, own)
    return d.addCallback(lambda shown: caller.reply(
        f"Banned {shown} " + (f"for {duration_text(seconds)}." if seconds else "until lifted.")))


@command("unbanip", "lift the ban of an address or network (admins)", ANYWHERE, login=Login.REQUIRED, admin=True,
         args=(Arg("ADDRESS", "Address or network:"),))
def unbanip(caller: Caller, address: str) -> defer.Deferred[None]:
    d = caller.factory.admin.unban_address(_admin(caller), address)
    return d.addCallback(lambda shown: caller.reply(f"Lifted the ban of {shown}."))


@command("ipbans", "list the bans of addresses and networks (admins)", ANYWHERE, login=Login.REQUIRED, admin=True)
def ipbans(caller: Caller) -> None:
    bans = caller.factory.admin.address_bans()
    caller.reply(f"Address bans ({len(bans)}):" if bans else "No address is banned.")
    for ban in bans:
        caller.reply(f"  {ban.describe()}")


@command("wall", "send TEXT to everyone connected (admins)", ANYWHERE, login=Login.REQUIRED, admin=True,
         args=(Arg("TEXT", "Text of the notice:"),))
def wall(caller: Caller, text: str) -> None:
    count = caller.factory.admin.wall(_admin(caller), text)
    others = caller.factory.bus.other_nodes()
    here = " on this node" if others else ""
    nodes = f" and to {others} other node{'s' if others != 1 else ''}" if others else ""
    caller.reply(f"Notice sent to {count} connection{'s' if count != 1 else ''}{here}{nodes}.")


#: What the line front-end asks at once after a login with a one-time password (chatd.menu).
NEW_PASSWORD = "newpassword"


@command(NEW_PASSWORD, "choose a new password after logging in with a one-time password", MENU,
         login=Login.REQUIRED, while_reset=True, args=(
             Arg("NEW", f"Your password was reset by an admin. Choose a new password (at least {PASSWORD_MIN} "
                 "characters):", secret=True, confirm="Repeat the new password:",
                 mismatch="the passwords do not match; nothing was changed.", check=valid_password),
         ))
def newpassword(caller: Caller, new: str) -> defer.Deferred[None]:
    d = caller.factory.admin.choose_password(caller.session, new)
    return d.addCallback(lambda _: caller.reply("New password saved."))
