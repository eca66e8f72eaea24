"""
The import rules of docs/ARCHITECTURE.md ("Imports"), checked on the source
(imports under ``if TYPE_CHECKING:`` count too): the core imports no
front-end, no wire format and no concrete store or bus; the core's values
and interfaces import nothing else; the client imports no server state.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The core: state, commands, delivery, values and interfaces, rules.
CORE = ("chatd.core", "chatd.factory", "chatd.broadcast", "chatd.commands", "chatd.store", "chatd.limits", "chatd.admin",
        "chatd.passwords", "chatd.presence", "chatd.moderation", "chatd.text", "chatd.settings", "chatd.errors")
#: The core may not use sockets either (chatd.sockets is the line front-end's).
#: What the core must never import: front-ends, wire formats, concrete stores and buses, the composition root.
NOT_FOR_CORE = ("chatd.protocol", "chatd.menu", "chatd.render", "chatd.telnet", "chatd.transfer", "chatd.frontends",
                "chatd.wire", "chatd.persistence", "chatd.stores", "chatd.buses", "chatd.service", "chatd.tap", "clients",
                "chatd.sockets", "twisted.internet.tcp", "twisted.protocols", "socket")


def _modules(package: str) -> dict[str, str]:
    """Module name -> path, for every .py file under ``package``."""
    found = {}
    base = os.path.join(ROOT, *package.split("."))
    for directory, _, files in os.walk(base):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


def _imports(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def test_the_core_imports_no_front_end_no_wire_format_and_no_concrete_store_or_bus():
    broken = {module: sorted(name for name in _imports(path) if _within(name, NOT_FOR_CORE))
              for module, path in _modules("chatd").items() if _within(module, CORE)}
    assert {module: names for module, names in broken.items() if names} == {}


def test_the_cores_values_and_interfaces_import_nothing_else_from_chatd():
    for module, path in _modules("chatd.core").items():
        assert [name for name in _imports(path) if _within(name, ("chatd",)) and not
                _within(name, ("chatd.core",))] == [], module


@pytest.mark.parametrize("package", ["chatd.stores", "chatd.buses"])
def test_stores_and_buses_import_no_front_end(package):
    for module, path in _modules(package).items():
        assert [name for name in _imports(path) if _within(name, NOT_FOR_CORE[:7])] == [], module


def test_the_client_imports_no_server_state():
    """clients/ uses only the shared wire format and text rules."""
    for module, path in _modules("clients").items():
        assert {name.split(".")[1] for name in _imports(path) if _within(name, ("chatd",)) and "." in name} <= {
            "wire", "text"}, module


#: Modules that a module imports and that must not import it back (no circle): each says what it needs of
#: the importer as a ``typing.Protocol`` of its own, or shares a module below both (docs/ARCHITECTURE.md, "Imports").
NOT_BACK = {
    "chatd.frontends.web_files": "chatd.frontends.web",
    "chatd.frontends.web_resume": "chatd.frontends.web",
    "chatd.frontends.irc_commands": "chatd.frontends.irc",
    "chatd.tokens": "chatd.factory",
    "bench.webproto": "bench.peerbench",
    "bench.adapters": "bench.peerbench",
}


@pytest.mark.parametrize("module", sorted(NOT_BACK))
def test_a_module_does_not_import_its_importer_back(module):
    importer = NOT_BACK[module]
    paths = _modules(module.split(".")[0])
    assert module in _imports(paths[importer]), f"{importer} no longer imports {module}"
    assert [name for name in _imports(paths[module]) if _within(name, (importer,))] == [], module


def test_the_rules_can_fail(tmp_path):
    """The checker sees an import under TYPE_CHECKING (a rule that cannot fail would prove nothing)."""
    path = tmp_path / "sample.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from chatd.protocol import X\n")
    assert "chatd.protocol" in _imports(str(path))
