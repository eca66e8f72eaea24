"""
The command table: every command a user can give, declared once.

``table.py`` has the declaration (:class:`~chatd.commands.table.Command`),
the rules checked in one place and :func:`~chatd.commands.table.run`;
``builtin.py`` declares the commands into :data:`TABLE`. Front-ends find a
command by name and place and run it through the table; the line
front-end's menu and ``/help`` are generated from it.
"""

from chatd.commands.builtin import SAY, TABLE
# (They declare their commands into TABLE.)
from chatd.commands import accounts, admin, history, moderation, presence  # noqa: F401

__all__ = ["SAY", "TABLE"]
