"""Issue 21, item 6: no private name (``_x``) of one package of ``mirage_cli`` is used by another.

A package is a folder with an ``__init__.py`` (``mirage_cli.memory``, ``mirage_cli.eval.worldscore``, the
top-level ``mirage_cli`` for ``io.py``, ``errors.py``): modules of one package may share private helpers;
across packages (a subpackage and its parent included), what is used is public API and is named so.
Checked with ``ast`` on every module: ``from ... import _x``, an import of a private module, and
``module._x`` on a module imported from another package.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mirage_cli"

PENDING: set[tuple[str, str, str]] = set()  # (module, target, name) allowed for now: none


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_package(dotted: str, root: Path) -> bool:
    return root.parent.joinpath(*dotted.split("."), "__init__.py").is_file()


def _is_module(dotted: str, root: Path) -> bool:
    base = root.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _package_of(dotted: str, root: Path) -> str:
    """The package a module belongs to (a package: itself)."""
    return dotted if _is_package(dotted, root) else dotted.rpartition(".")[0]


def _imported_private_names(path: Path, root: Path = PACKAGE) -> list[tuple[str, str, int]]:
    """``(target module, name, line)`` of every private name ``path`` (a module under ``root``, the
    ``mirage_cli`` folder) takes from a module of another package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    package = parts[:-1]  # what a relative import resolves against (for __init__.py: the package itself)
    here = ".".join(package)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    modules: dict[str, str] = {}  # local name -> mirage module of another package it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == root.name and _package_of(a.name, root) != here:
                    found += [(a.name.removeprefix("mirage_cli."), p, node.lineno) for p in a.name.split(".") if _private(p)]
                    if a.asname:
                        modules[a.asname] = a.name
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:  # relative: resolve against the importing module's package
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target.split(".")[0] != root.name:
            continue
        for a in node.names:
            sub = f"{target}.{a.name}"
            if _is_module(sub, root):  # a module imported by name: its package is the target
                if target != here and _private(a.name):
                    found.append((target.removeprefix("mirage_cli."), a.name, node.lineno))
                if _package_of(sub, root) != here:
                    modules[a.asname or a.name] = sub
            elif _package_of(target, root) != here:
                if _private(a.name):
                    found.append((target.removeprefix("mirage_cli."), a.name, node.lineno))
                found += [(target.removeprefix("mirage_cli."), p, node.lineno) for p in target.split(".") if _private(p)]
    for node in ast.walk(tree):  # module._private on a module of another package
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and _private(node.attr)):
            found.append((modules[node.value.id].removeprefix("mirage_cli."), node.attr, node.lineno))
    return found


def test_the_resolver_sees_relative_and_absolute_imports_and_module_attributes(tmp_path):
    pkg = tmp_path / "mirage_cli"
    for folder in ("", "eval", "eval/worldscore", "bench", "memory"):
        (pkg / folder).mkdir(parents=True, exist_ok=True)
        (pkg / folder / "__init__.py").write_text("")
    for module in ("eval/sources.py", "eval/worldscore/layout.py", "bench/scene.py", "memory/latent.py", "io.py"):
        (pkg / module).write_text("")
    (pkg / "eval" / "x.py").write_text("from ..bench.scene import _hidden, shown\n"
                                       "from mirage_cli.memory.latent import _a\n"
                                       "from .sources import _same_package\n"
                                       "from ..io import __all__\n"
                                       "from .worldscore.layout import _sub\n"
                                       "from ..memory import latent\n"
                                       "from . import sources\n"
                                       "import mirage_cli.bench.scene as scene\n"
                                       "latent._b, sources._c, scene._d, latent.e\n")
    assert _imported_private_names(pkg / "eval" / "x.py", pkg) == [
        ("bench.scene", "_hidden", 1), ("memory.latent", "_a", 2), ("eval.worldscore.layout", "_sub", 5),
        ("memory.latent", "_b", 9), ("bench.scene", "_d", 9)]


def test_no_private_name_is_used_across_packages():
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for target, name, line in _imported_private_names(path):
            if (rel, target, name) not in PENDING:
                offences.append(f"mirage_cli/{rel}:{line}: uses {name} of mirage_cli.{target}")
    assert not offences, "private names used across packages (make them public or move them):\n" + "\n".join(offences)
