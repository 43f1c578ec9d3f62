"""Docstrings and comments point only to files that exist in the repository.

Design notes outside the repository are not shipped with it, so a docstring that says "see X.md" for a fact
must cite a file a reader has (or state the fact itself). Scanned: ``mirage_cli/``, ``scripts/``,
``examples/`` and ``.ci/``. A mention is checked when it names a repository file:

- a bare ``NAME.md`` / ``NAME.py`` / ``NAME.cpp`` (a ``.py`` or ``.cpp`` may sit in any folder of the repo);
- any path to a ``.md`` file (``shared/NOTES.md`` is outside the repository: not allowed);
- a path whose first folder is a top-level entry of the repository or a subpackage of ``mirage_cli/``
  (``docs/ARCHITECTURE.md``, ``quality/baseline.json``, ``memory/splat.py``), resolved against the
  repository root, ``mirage_cli/`` and the mentioning file's folders.

Not checked: bare ``.json`` names (files the program writes: ``run.json``, ``eval.json``), paths in
other trees (``diffusers/pipelines/...``, ``vae/config.json`` of a model folder), absolute paths, and
paths with a placeholder (``presets/NAME.json``, ``DIR/run.json``, ``examples/*_api.py``,
``<name>.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mirage_cli"
SCANNED = ["mirage_cli", "scripts", "examples", ".ci"]
SUFFIXES = {".py", ".sh", ".cpp", ".md", ".txt", ""}  # "" = .ci/run and other scripts without a suffix

MENTION = re.compile(r"(?<![\w/.~*$<{-])([\w.-]+(?:/[\w.-]+)*\.(?:md|py|json|cpp))\b")


def _repo_files() -> list[Path]:
    skip = {".git", "__pycache__", ".pytest_cache", "build", "outputs"}
    return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def _scanned(files: list[Path]) -> list[Path]:
    return [p for p in files if p.relative_to(ROOT).parts[0] in SCANNED and p.suffix in SUFFIXES]


def _roots() -> set[str]:
    return {p.name for p in ROOT.iterdir()} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}


def missing_mentions(text: str, where: Path, basenames: set[str], roots: set[str]) -> list[str]:
    """The mentions in ``text`` (from file ``where``) that name a repository file which does not exist."""
    missing = []
    folders = [d for d in where.parents if d == ROOT or ROOT in d.parents]  # inside the repository only
    for m in MENTION.finditer(text):
        mention = m.group(1)
        parts = mention.split("/")
        if any(re.fullmatch(r"[A-Z][A-Z_]*", part) for part in parts[:-1]) \
                or re.fullmatch(r"[A-Z][A-Z_]*\.(json|py)", parts[-1]):
            continue  # a placeholder: presets/NAME.json, DIR/run.json
        if len(parts) == 1:
            if mention.endswith(".json"):
                continue  # an output file's name
            found = mention in basenames if mention.endswith((".py", ".cpp")) else any(
                (base / mention).is_file() for base in [ROOT, PACKAGE, ROOT / "docs", *folders])
        else:
            if parts[0] not in roots and not mention.endswith(".md"):
                continue  # another tree's path (diffusers/..., a model folder's vae/config.json)
            found = any((base / mention).exists() for base in [ROOT, PACKAGE, *folders])
        if not found:
            missing.append(mention)
    return missing


def test_mentioned_files_exist():
    files = _repo_files()
    basenames = {p.name for p in files}
    roots = _roots()
    problems = []
    for path in _scanned(files):
        text = path.read_text(encoding="utf-8", errors="replace")
        for mention in missing_mentions(text, path, basenames, roots):
            problems.append(f"{path.relative_to(ROOT)}: {mention}")
    assert not problems, "files mentioned but not in the repository:\n" + "\n".join(sorted(set(problems)))


def test_the_check_catches_a_missing_file():
    basenames, roots = {"plan.py"}, _roots()
    where = PACKAGE / "pipeline" / "loop.py"
    assert missing_mentions("see DESIGN.md and shared/MIRAGE_MODEL.md", where, basenames, roots) == [
        "DESIGN.md", "shared/MIRAGE_MODEL.md"]
    assert missing_mentions("see docs/NOPE.md, memory/nope.py, gone.py", where, basenames, roots) == [
        "docs/NOPE.md", "memory/nope.py", "gone.py"]
    unchecked = "plan.py, run.json, DIR/run.json, presets/NAME.json, diffusers/x/y.py, /abs/z.md, examples/*_api.py"
    assert missing_mentions(unchecked, where, basenames, roots) == []
