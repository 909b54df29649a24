"""The architecture, enforced: each layer of handshake_cli imports only the layers below it.

docs/ARCHITECTURE.md describes the layers; this test walks every import of every module
(those inside functions too, which keep start-up fast) and fails on one that reaches up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import handshake_cli

PACKAGE = Path(handshake_cli.__file__).parent

# Lowest first. A module may import its own layer and any layer before it.
LAYERS = [
    (
        "kernel",
        [
            "handshake_cli",
            "handshake_cli.errors",
            "handshake_cli.paths",
            "handshake_cli.faults",
            "handshake_cli.documents",
            "handshake_cli.vocabulary",
        ],
    ),
    ("storage", ["handshake_cli.storage"]),
    ("session", ["handshake_cli.session"]),
    ("engine", ["handshake_cli.engine"]),
    ("recovery", ["handshake_cli.recovery"]),
    ("readers", ["handshake_cli.readers"]),
    ("maintenance", ["handshake_cli.maintenance"]),
    # Front ends: the command line, and LangGraph's checkpointer and tool gate beside it.
    # Neither imports the other.
    ("cli", ["handshake_cli.cli", "handshake_cli.__main__", "handshake_cli.langgraph"]),
]
FRONT_END_ONLY = ("typer", "rich", "click")
COMMAND_LINE = ("handshake_cli.cli", "handshake_cli.__main__")
LANGGRAPH_FRONT_END = "handshake_cli.langgraph"
# Third-party packages only the LangGraph front end may import (the `langgraph` extra).
LANGGRAPH_ONLY = ("langgraph", "langchain_core")


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    if rank < 0:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/ARCHITECTURE.md")
    return rank


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file; `from a import b` yields `a.b` when `b`
    is a module, else `a`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
                ).exists()
                found.append((node.lineno, candidate if is_module else module))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_its_own_layer_and_those_below(path: Path) -> None:
    importer = module_name(path)
    own = layer_of(importer)
    upward = [
        f"line {line}: {module} ({LAYERS[layer_of(module)][0]})"
        for line, module in imports(path)
        if module.startswith("handshake_cli") and layer_of(module) > own
    ]
    assert not upward, f"{importer} ({LAYERS[own][0]}) reaches up: " + "; ".join(upward)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_command_line_imports_the_front_end_libraries(path: Path) -> None:
    if module_name(path).startswith(COMMAND_LINE):
        return
    front = [f"line {line}: {m}" for line, m in imports(path) if m.split(".")[0] in FRONT_END_ONLY]
    assert not front, f"{module_name(path)} imports " + "; ".join(front)


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli" / "commands").glob("*.py")), ids=lambda p: p.name)
def test_a_command_never_imports_another_command(path: Path) -> None:
    own = module_name(path)
    others = [
        f"line {line}: {m}"
        for line, m in imports(path)
        if m.startswith("handshake_cli.cli.commands.") and m != own
    ]
    assert not others, f"{own} imports " + "; ".join(others)


def test_every_layer_has_a_map() -> None:
    """docs/ARCHITECTURE.md names every layer's package, so the map and the tree agree."""
    text = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            if prefix.count(".") == 1 and (PACKAGE.parent / prefix.replace(".", "/")).is_dir():
                assert prefix.split(".")[1] + "/" in text, prefix


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_two_front_ends_never_import_each_other(path: Path) -> None:
    """The command line never loads LangGraph (it reads LangGraph sessions from their
    records alone, and the extra may not be installed); the LangGraph front end never loads
    the command line."""
    own = module_name(path)
    if own.startswith(LANGGRAPH_FRONT_END + ".") or own == LANGGRAPH_FRONT_END:
        wrong = [(line, m) for line, m in imports(path) if m.startswith(COMMAND_LINE)]
    else:
        wrong = [
            (line, m)
            for line, m in imports(path)
            if m.startswith(LANGGRAPH_FRONT_END) or m.split(".")[0] in LANGGRAPH_ONLY
        ]
    assert not wrong, f"{own} imports " + "; ".join(f"line {line}: {m}" for line, m in wrong)


POSTGRES_STORE = "handshake_cli.storage.postgres"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_postgres_store_imports_its_driver(path: Path) -> None:
    """psycopg (the `postgres` extra) is loaded by the PostgreSQL store alone, which only
    `storage/open.py` imports, by name, for a URL root: a directory root never loads it."""
    own = module_name(path)
    if own == POSTGRES_STORE or own.startswith(POSTGRES_STORE + "."):
        return
    wrong = [
        f"line {line}: {m}"
        for line, m in imports(path)
        if m.split(".")[0] == "psycopg" or m == POSTGRES_STORE or m.startswith(POSTGRES_STORE + ".")
    ]
    assert not wrong, f"{own} imports " + "; ".join(wrong)
