"""
Per-module irctest results from pytest's JUnit XML files, as a Markdown table (the shape of
../shared/irctest/BASELINES.md: pass / fail / error / skip per module, self-tests apart).

    python tests/irctest/table.py OUT/chatd-common.xml OUT/chatd-accounts.xml
    python tests/irctest/table.py --baselines BASELINES.md OUT/*.xml     # beside ngIRCd and InspIRCd
    python tests/irctest/table.py --failures OUT/*.xml                     # each failure or error, first lines
    python tests/irctest/table.py --failures --wire 12 OUT/*.xml           # ... and its last 12 lines on the wire

A test found in several files (a module run again) counts once: its result in the newest file.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

KINDS = ("pass", "fail", "error", "skip")


def module_of(classname: str) -> str:
    """``irctest.server_tests.chmodes.ban.BanModeTestCase`` -> ``chmodes.ban``; self-tests keep their folder."""
    parts = classname.split(".")[:-1]  # the class's name goes
    if parts[:1] == ["irctest"]:
        parts = parts[1:]
    if parts[:1] == ["server_tests"]:
        parts = parts[1:]
    if parts[:1] == ["self_tests"]:
        return "self_tests"  # irctest's tests of its own matching, apart from the server tests (BASELINES.md)
    return ".".join(parts)


def wire(case: ET.Element, lines: int) -> str:
    """The last ``lines`` lines of what the test sent and received (irctest prints it: ``1 -> S: NICK foo``)."""
    out = "".join(child.text or "" for child in case if child.tag == "system-out")
    talk = [line for line in out.splitlines() if " -> " in line or "connects to server" in line]
    return "\n".join(line if len(line) <= 300 else line[:300] + f"... ({len(line)} characters)" for line in talk[-lines:])


def outcome(case: ET.Element) -> tuple[str, str]:
    """(kind, message) of one <testcase>."""
    for child in case:
        if child.tag == "failure":
            return "fail", child.get("message", "") or (child.text or "")
        if child.tag == "error":
            return "error", child.get("message", "") or (child.text or "")
        if child.tag == "skipped":
            return "skip", child.get("message", "")
    return "pass", ""


def read(paths: list[str], wire_lines: int = 0) -> dict[tuple[str, str], tuple[str, str]]:
    """
    {(classname, name): (kind, message)}; the most recently written file wins. With ``wire_lines``, a failure's
    or error's message is followed by the last that many lines of its wire exchange.
    """
    results: dict[tuple[str, str], tuple[str, str]] = {}
    for path in sorted(paths, key=os.path.getmtime):
        for case in ET.parse(path).getroot().iter("testcase"):
            kind, message = outcome(case)
            if wire_lines and kind in ("fail", "error"):
                message = message.strip().splitlines()[0][:400] + "\n" + wire(case, wire_lines)
            results[(case.get("classname", ""), case.get("name", ""))] = (kind, message)
    return results


def per_module(results: dict[tuple[str, str], tuple[str, str]]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KINDS, 0))
    for (classname, _), (kind, _) in results.items():
        table[module_of(classname)][kind] += 1
    return table


def read_baselines(path: str) -> tuple[list[str], dict[str, list[str]]]:
    """The peers' columns of BASELINES.md: (names, {module: [cell, ...]})."""
    names: list[str] = []
    rows: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not line.startswith("|") or len(cells) < 2 or set(cells[1]) <= set("-"):
                continue
            if cells[0] == "module":
                names = cells[1:]
                continue
            module = cells[0].strip("*")
            match = re.match(r"\(self-tests: (\S+)\)", module)
            rows["self_tests" if match else module] = [c.strip("*") for c in cells[1:]]
    return names, rows


def cell(counts: dict[str, int] | None) -> str:
    return " / ".join(str(counts[k]) for k in KINDS) if counts else "–"


def markdown(table: dict[str, dict[str, int]], label: str, baselines: str | None) -> str:
    names, peers = read_baselines(baselines) if baselines else ([], {})
    modules = sorted(set(table) | {m for m in peers if not m.startswith("server tests")})
    lines = [
        "| module | " + " | ".join([label, *names]) + " |",
        "|---|" + "---|" * (1 + len(names)),
    ]
    total = dict.fromkeys(KINDS, 0)
    for module in modules:
        counts = table.get(module)
        if counts and module != "self_tests":
            for kind in KINDS:
                total[kind] += counts[kind]
        shown = f"(self-tests: {module})" if module == "self_tests" else module
        lines.append(f"| {shown} | " + " | ".join([cell(counts), *peers.get(module, ["–"] * len(names))]) + " |")
    peer_totals = next((v for k, v in peers.items() if k.startswith("server tests")), ["–"] * len(names))
    lines.append("| **server tests, total** | " + " | ".join(f"**{c}**" for c in [cell(total), *peer_totals]) + " |")
    return "\n".join(lines)


def failures(results: dict[tuple[str, str], tuple[str, str]], wire: bool = False) -> str:
    """One line per failure or error (its message's first lines), or with ``wire`` the message read() kept."""
    out = []
    for (classname, name), (kind, message) in sorted(results.items()):
        if kind in ("fail", "error"):
            text = message.rstrip() if wire else " ".join(message.strip().splitlines()[:3])[:400]
            out.append(f"- {kind} {module_of(classname)}::{classname.rsplit('.', 1)[-1]}::{name}: {text}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("xml", nargs="+", help="pytest --junit-xml files")
    parser.add_argument("--label", default="chatd", help="the column's name (default chatd)")
    parser.add_argument("--baselines", help="BASELINES.md: add its peers' columns")
    parser.add_argument("--failures", action="store_true", help="list failures and errors instead")
    parser.add_argument("--wire", type=int, default=0, metavar="N",
                        help="with --failures: each one's last N lines sent and received")
    args = parser.parse_args(argv)
    results = read(args.xml, args.wire if args.failures else 0)
    print(failures(results, bool(args.wire)) if args.failures
          else markdown(per_module(results), args.label, args.baselines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
