"""Issue 21, item 6: imports inside a function only where they defer a heavy library or break an import cycle;
``mirage --help`` loads no heavy library.

The rule, checked with ``ast`` on every module of ``mirage_cli`` (run this file with python to list the
in-function imports and why each one is kept):

- A module's *load* is what importing it runs at its top level: its own top-level imports (not those under
  ``if TYPE_CHECKING:``), its parent packages' and, transitively, the mirage modules they import. A name a
  package re-exports lazily (``__getattr__ = lazy_exports(__name__, _EXPORTS)``, :mod:`mirage_cli.lazy`) loads
  the submodule it names.
- A *heavy* library is any third-party package but the three the CLI starts with (typer, click, rich):
  torch, numpy, diffusers, transformers, PIL, imageio, safetensors, viser, ...; and the few modules in
  :data:`HEAVY_PARTS` (``importlib.metadata``, ``torch.utils.cpp_extension``). numpy and safetensors are not
  heavy where torch is loaded (:data:`RIDES_ON`).
- An import inside a function of module ``M`` of target ``T`` is kept if

  1. it defers a heavy library: ``T`` loads one that ``M``'s load does not (``"defers torch"``), or
  2. it breaks an import cycle: ``T``'s load imports ``M`` (``"cycle"``; ``M``'s parent packages, loaded
     before ``M``, are not followed), or
  3. ``M`` is a CLI module (``mirage_cli.cli``) and ``T`` is a mirage module whose load adds modules to what
     ``mirage --help`` loads (``"a command's implementation"``): the CLI parses and delegates, and what a
     command runs loads when it runs, so that every start stays quick; or
  4. it is listed in :data:`ALLOWED` with its reason (a platform-only or optional module).

  Anything else belongs at the top of the module.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mirage_cli"
CLI = "mirage_cli.cli"
LIGHT = {"typer", "click", "rich"}
"""Third-party packages the CLI loads to start (``mirage --help``); every other third-party one is heavy."""
HEAVY_PARTS = {"importlib.metadata": "0.05-0.2 s to import", "torch.utils.cpp_extension": "loads setuptools"}
"""Modules heavy in themselves, though their package is not (or is already loaded)."""
RIDES_ON = {"numpy": "torch", "safetensors": "torch"}
"""Libraries that cost nothing more once the other is loaded: torch imports numpy itself, and safetensors'
torch binding takes about a millisecond after torch."""

ALLOWED: dict[tuple[str, str], str] = {
    ("mirage_cli.models.convert", "resource"): "Unix only (ImportError caught)",
    ("mirage_cli.pipeline.resources", "resource"): "Unix only (ImportError caught)",
}
"""``(module, target) -> reason``: in-function imports kept for a reason the rule does not see."""

PENDING: set[tuple[str, str]] = set()
"""``(module, target)`` whose move to the top is pending (a file another branch is rewriting): empty; it may
hold an entry only while such a branch is open, and only shrinks."""


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    line: int
    function: str  # the enclosing function ("" at the top level)
    target: str  # the imported module, dotted (``from a import b``: ``a.b`` when that is a module, else ``a``)
    typing_only: bool  # under ``if TYPE_CHECKING:``


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str, root: Path = PACKAGE) -> bool:
    base = root.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def lazy_exports_of(path: Path) -> dict[str, str]:
    """A package ``__init__``'s lazy re-exports (name -> submodule): its ``_EXPORTS`` dict literal when it
    sets ``__getattr__ = lazy_exports(...)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    assigned = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name)}
    call = assigned.get("__getattr__")
    if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "lazy_exports" and len(call.args) == 2):
        return {}
    table = call.args[1]
    table = assigned.get(table.id, table) if isinstance(table, ast.Name) else table
    return {k: v for k, v in ast.literal_eval(table).items()} if isinstance(table, ast.Dict) else {}


def imports_of(path: Path, root: Path = PACKAGE, lazy: dict[str, dict[str, str]] | None = None) -> list[Import]:
    """Every import statement of ``path``: where it is and what module it loads (``lazy``: package ->
    its lazy re-exports)."""
    lazy = lazy or {}
    here = module_name(path, root)
    package = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
    found: list[Import] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if node.level:
            base = ".".join(package[: len(package) - (node.level - 1)] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        subs = [f"{base}.{a.name}" for a in node.names if is_module(f"{base}.{a.name}", root)]
        subs += [f"{base}.{lazy[base][a.name]}" for a in node.names if a.name in lazy.get(base, {})]
        return sorted(set(subs)) + ([base] if len(subs) < len(node.names) else [])

    def visit(node: ast.AST, function: str, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend(Import(here, child.lineno, function, t, typing_only) for t in targets(child))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, function or getattr(child, "name", "<lambda>"), typing_only)
            else:
                visit(child, function, typing_only or _type_checking(child))

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), "", False)
    return found


class Graph:
    """The top-level import graph of the package under ``root``."""

    def __init__(self, root: Path = PACKAGE) -> None:
        self.root = root
        lazy = {module_name(p, root): lazy_exports_of(p) for p in sorted(root.rglob("__init__.py"))}
        self.imports = {module_name(p, root): imports_of(p, root, lazy) for p in sorted(root.rglob("*.py"))}

    @staticmethod
    def _parents(dotted: str) -> list[str]:
        parts = dotted.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]

    def load(self, module: str, given: frozenset[str] = frozenset()) -> tuple[frozenset[str], frozenset[str]]:
        """``(mirage modules, external modules)`` that importing ``module`` runs (external: as imported);
        ``given``: modules loaded (or being loaded) already, not followed."""
        return self._load(module, given)

    @cache  # noqa: B019 -- one graph per test run
    def _load(self, module: str, given: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
        seen: set[str] = set()
        external: set[str] = set()
        todo = self._parents(module)
        while todo:
            m = todo.pop()
            if m in seen or m in given:
                continue
            seen.add(m)
            for imp in self.imports.get(m, []):
                if imp.function or imp.typing_only:
                    continue
                if imp.target.split(".")[0] == self.root.name:
                    todo.extend(self._parents(imp.target))
                else:
                    external.add(imp.target)
        return frozenset(seen), frozenset(external)

    def heavy(self, target: str) -> frozenset[str]:
        """The heavy libraries importing ``target`` loads."""
        if target.split(".")[0] != self.root.name:
            return frozenset({library(target)}) if heavy_library(library(target)) else frozenset()
        loaded = {library(x) for x in self.load(target)[1] if heavy_library(library(x))}
        return frozenset(loaded | {lib for lib, base in RIDES_ON.items() if base in loaded})

    def reason(self, imp: Import) -> str | None:
        """Why an in-function import stays (None: it should move to the top)."""
        if (imp.module, imp.target) in ALLOWED:
            return ALLOWED[(imp.module, imp.target)]
        deferred = self.heavy(imp.target) - self.heavy(imp.module)
        if deferred:  # named without what rides on another deferred one
            return "defers " + ", ".join(sorted(d for d in deferred if RIDES_ON.get(d) not in deferred))
        if (imp.module + ".").startswith(CLI + ".") and imp.target.split(".")[0] == self.root.name and (
                self.load(imp.target)[0] - self.load(CLI)[0]):
            return "a command's implementation"
        ancestors = frozenset(self._parents(imp.module)[:-1])  # initialised (or initialising) before the module
        if imp.target.split(".")[0] == self.root.name and imp.module in self.load(imp.target, ancestors)[0]:
            return "cycle"
        return None

    def in_function(self) -> list[Import]:
        return [i for imps in self.imports.values() for i in imps if i.function and not i.typing_only]


def library(target: str) -> str:
    """What an import of ``target`` is weighed as: its :data:`HEAVY_PARTS` entry, else its top-level package."""
    return next((h for h in HEAVY_PARTS if target == h or target.startswith(h + ".")), target.split(".")[0])


def heavy_library(name: str) -> bool:
    return name in HEAVY_PARTS or (name not in sys.stdlib_module_names and name not in LIGHT and name != "__future__")


# ------------------------------------------------------------------------------ tests
def test_the_graph_sees_loads_cycles_and_deferrals(tmp_path):
    pkg = tmp_path / "mirage_cli"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import numpy\n"
                                           "_EXPORTS = {'x': 'heavy'}\n__getattr__ = lazy_exports(__name__, _EXPORTS)\n")
    (pkg / "a" / "heavy.py").write_text("import torch\nfrom . import light\n")
    (pkg / "a" / "light.py").write_text(
        "import json\n\ndef f():\n    from .heavy import x\n    from . import other\n    import json\n    import torch\n")
    (pkg / "a" / "other.py").write_text("def g():\n    from .light import f\n    from . import x\n")
    g = Graph(pkg)
    assert g.load("mirage_cli.a.heavy") == (frozenset({"mirage_cli", "mirage_cli.a", "mirage_cli.a.heavy",
                                                       "mirage_cli.a.light"}), frozenset({"torch", "json", "typing"}))
    assert g.heavy("mirage_cli.a.heavy") == {"torch", "numpy", "safetensors"} and g.heavy("mirage_cli.a.light") == frozenset()
    assert g.heavy("importlib.metadata") == {"importlib.metadata"} and g.heavy("torch.utils.cpp_extension.x") == {
        "torch.utils.cpp_extension"}
    reasons = {(i.function, i.target): g.reason(i) for i in g.in_function()}
    assert reasons == {("f", "mirage_cli.a.heavy"): "defers torch", ("f", "mirage_cli.a.other"): None,
                       ("f", "json"): None, ("f", "torch"): "defers torch", ("g", "mirage_cli.a.light"): None,
                       ("g", "mirage_cli.a.heavy"): "defers torch"}


def test_in_function_imports_defer_a_heavy_library_or_break_a_cycle():
    g = Graph()
    offences = [f"{i.module} ({i.function}, line {i.line}): {i.target}" for i in g.in_function()
                if g.reason(i) is None and (i.module, i.target) not in PENDING]
    assert not offences, ("imports inside functions that defer nothing heavy and break no cycle; move them to the "
                          "top of the module:\n" + "\n".join(offences))


def test_pending_and_allowed_entries_are_still_needed():
    """An entry whose import moved (or went) is removed from the list, so that the lists only shrink."""
    g = Graph()
    kept = {(i.module, i.target) for i in g.in_function()}
    assert set(ALLOWED) <= kept, f"ALLOWED entries no longer needed: remove {sorted(set(ALLOWED) - kept)}"
    needed = {(i.module, i.target) for i in g.in_function() if g.reason(i) is None}
    assert PENDING <= needed, f"PENDING entries no longer needed: remove {sorted(PENDING - needed)}"


def test_the_cli_loads_no_heavy_library():
    """``import mirage_cli.cli`` (every command registered) and ``mirage --help`` load no heavy library,
    statically (the graph) and in a fresh interpreter."""
    assert Graph().heavy("mirage_cli.cli") == frozenset()
    code = ("import sys, runpy\nsys.argv = ['mirage', '--help']\n"
            "try:\n    runpy.run_module('mirage_cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules}), file=sys.stderr)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "generate" in proc.stdout, proc.stderr
    loaded = set(ast.literal_eval(proc.stderr.strip().splitlines()[-1]))
    used = {i.target.split(".")[0] for imps in Graph().imports.values() for i in imps}  # what mirage_cli imports
    assert sorted(m for m in used & loaded if heavy_library(m) and m != "mirage_cli") == []

if __name__ == "__main__":  # list the in-function imports and why each stays
    graph = Graph()
    rows = graph.in_function()
    for imp in rows:
        print(f"{imp.module}\t{imp.line}\t{imp.function}\t{imp.target}\t{graph.reason(imp) or 'MOVE'}")
    print(f"{len(rows)} in-function imports, {sum(graph.reason(i) is None for i in rows)} to move", file=sys.stderr)
