"""
Text keeps its meaning (issue 11, kind 8) and names are looked up by the rule
they were registered with (kind 7): chatd.text.clean_line and name_key, alone
and through the server.
"""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.text import clean_line, name_key

from helpers import Client, make_factory

FAMILY = "\U0001F468\u200D\U0001F469\u200D\U0001F467"  # man ZWJ woman ZWJ girl: one emoji
SCOTLAND = "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"  # black flag + tags "gbsct" + cancel
PERSIAN = "\u0645\u06CC\u200C\u062E\u0648\u0627\u0647\u0645"  # "mi-khaham": the ZWNJ keeps two letter forms apart

#: The examples of the issue and what each must become, exactly.
KEPT_MEANING = [
    ("10\u00A0000 EUR", "10 000 EUR"),  # no-break space
    ("\u3053\u3093\u306B\u3061\u306F\u3000\u4E16\u754C", "\u3053\u3093\u306B\u3061\u306F \u4E16\u754C"),  # ideographic space
    (FAMILY, FAMILY),
    (PERSIAN, PERSIAN),
    (SCOTLAND, SCOTLAND),
    ("Bonjour\u202F!", "Bonjour !"),  # narrow no-break space
    # More of the same kind: variation selectors, combining marks, a skin tone, soft hyphen,
    # private use, a character newer than this Python's Unicode tables (U+1FAE8, Unicode 15).
    ("\u2764\uFE0F e\u0301 \U0001F44D\U0001F3FD co\u00ADop \uF8FF \U0001FAE8", None),
    ("a\u2009b\u205Fc\u1680d\u2007e", "a b c d e"),  # thin, math, ogham, figure spaces
]


@pytest.mark.parametrize(("text", "expected"), KEPT_MEANING)
def test_text_keeps_its_meaning(text, expected):
    """Spaces become a space; joiners, tags, selectors and marks stay (the old code dropped all of them)."""
    assert clean_line(text.encode()) == (text if expected is None else expected)


#: Each character that can reorder text, break a line or act as a control, in the middle of a word.
REMOVED = [
    *map(chr, range(0x202A, 0x202F)),  # LRE RLE PDF LRO RLO
    *map(chr, range(0x2066, 0x206A)),  # LRI RLI FSI PDI
    "\u200E", "\u200F", "\u061C",  # LRM RLM ALM
    "\u2028", "\u2029", "\x85", "\r", "\n", "\x0b", "\x0c",  # line breaks
    "\x00", "\x07", "\x08", "\x7f", "\x90", "\x9f",  # C0, DEL, C1
]


@pytest.mark.parametrize("char", REMOVED, ids=lambda char: f"U+{ord(char):04X}")
def test_what_reorders_or_breaks_a_line_is_removed(char):
    assert clean_line(f"ab{char}cd".encode()) == "abcd"


def test_escape_sequences_and_tabs():
    assert clean_line(b"\x1b[2J\x1b[1;1Hhi\x1b]0;title\x07 \x1b[31mred\x1b[0m") == "hi red"
    assert clean_line("a\u009b2Jb".encode()) == "ab"
    assert clean_line(b"\ta\tb\t") == "a b"


def _forbidden(char: str) -> bool:
    """What clean_line never outputs, from Python's own Unicode tables (independently of chatd.text)."""
    return (
        unicodedata.category(char) in ("Cc", "Zl", "Zp")
        or (unicodedata.category(char) == "Zs" and char != " ")
        or unicodedata.bidirectional(char) in ("LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI")
        or char in "\u200E\u200F\u061C"
    )


def test_every_forbidden_character_is_handled():
    """The tables in chatd.text cover every character of those categories (none is passed through)."""
    everything = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, sys.maxunicode + 1)))
    out = clean_line(everything.encode())
    assert not [f"U+{ord(c):04X}" for c in set(out) if _forbidden(c)]


def _check(raw: bytes) -> None:
    out = clean_line(raw)
    assert not any(map(_forbidden, out))
    assert out == out.strip(" ")
    assert clean_line(out.encode()) == out  # idempotent


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_property_bytes(raw):
    _check(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=100)
       | st.lists(st.sampled_from(["\x1b", "[", "]", "\x9b", "\x9d", "\x07", "\\", "1", ";", "m", " ", "\u00A0",
                                   "\u202E", "\u200D", "\U000E0067", "\t", "\u2028", "P", "x"]), max_size=40).map("".join))
def test_property_text(text):
    _check(text.encode())


# -- names: one rule for registering and looking up (kind 7) --------------------------------

KELVIN = "\u212A"  # KELVIN SIGN: str.lower() makes it "k"


def test_name_key_folds_ascii_only():
    assert name_key("KaTe") == "kate"
    assert name_key(KELVIN + "ate") != "kate"
    assert name_key("\u0130") != "i\u0307" and name_key("\u0130") != "i"


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    return factory, clock


def test_kelvin_sign_does_not_log_in_as_kate(world):
    factory, clock = world
    Client(factory, clock).register("kate")
    c = Client(factory, clock)
    c.output()
    out = c.login(KELVIN + "ate")
    assert "Login failed: unknown name or wrong password." in out
    assert "Logged in" not in out


def test_kelvin_sign_finds_no_user_or_room(world):
    """/msg, join, info and delete look names up by the same ASCII-only rule."""
    factory, clock = world
    kate = Client(factory, clock)
    kate.register("kate")
    kate.send("create kitchen", "join public")
    kate.output()
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("join public")
    bob.output()
    bob.send(f"/msg {KELVIN}ate hello")
    # Not an ASCII name, so no user's: the answer gives the naming rule (docs/PROTOCOL.md) and no lookup matches.
    assert "Error: A user name uses only letters, digits" in bob.output()
    assert "hello" not in kate.output()
    bob.send("/exit")
    bob.output()
    for choice in ("join", "info"):
        bob.send(f"{choice} {KELVIN}itchen")
        assert "Error: A room name uses only letters, digits" in bob.output()
    kate.send("/exit")
    kate.output()
    kate.send(f"delete {KELVIN}itchen")
    assert "Error: A room name uses only letters, digits" in kate.output()
    assert "kitchen" in factory.rooms


def test_text_reaches_the_room_unchanged(world):
    """Through the server: the ZWJ family, Persian and the Scottish flag arrive as sent; spaces as spaces."""
    factory, clock = world
    alice, bob = Client(factory, clock), Client(factory, clock)
    for client, name in ((alice, "alice"), (bob, "bob")):
        client.register(name)
        client.send("join public")
        client.output()
    alice.send(f"{FAMILY} {PERSIAN} {SCOTLAND} 10\u00A0000 EUR")
    assert f"alice: {FAMILY} {PERSIAN} {SCOTLAND} 10 000 EUR\r\n" in bob.output()
