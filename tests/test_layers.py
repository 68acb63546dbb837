"""The import graph follows the stack: no layer imports from a layer above it.

codec, storage < identity < wire < discovery < klp < trust < agents, vectors, federation, migration
< node < api, cli, sim, bridges. Read from the source with ``ast``, so lazy imports inside
functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "kosmesh"
LAYERS = {
    "codec": 0, "storage": 0, "identity": 1, "wire": 2, "discovery": 3, "klp": 4, "trust": 5,
    "agents": 6, "vectors": 6, "federation": 6, "migration": 6, "node": 7,
    "api": 8, "cli": 8, "sim": 8, "bridges": 8,
}  # fmt: skip


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level kosmesh package) of every kosmesh import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names if node.module == "kosmesh"]
        for name in names:
            parts = name.split(".")
            if parts[0] == "kosmesh" and len(parts) > 1 and parts[1] in LAYERS:
                found.append((node.lineno, parts[1]))
    return found


def violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        package = path.relative_to(SRC).parts[0]
        if package not in LAYERS:
            continue  # kosmesh/__init__.py and __main__.py sit above everything
        for line, imported in imported_packages(path):
            if LAYERS[imported] > LAYERS[package]:
                bad.append(f"{path.relative_to(SRC)}:{line}: {package} imports {imported}")
    return bad


def test_no_layer_imports_from_a_layer_above_it() -> None:
    assert violations() == []


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), packages - set(LAYERS)


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text("from kosmesh.node.node import Node\nimport kosmesh.cli.main\nfrom kosmesh import codec\n")
    assert imported_packages(module) == [(1, "node"), (2, "cli"), (3, "codec")]
