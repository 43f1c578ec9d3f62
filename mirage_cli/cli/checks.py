"""Checks of option values that every command shares, made before any slow work (no torch here:
an argument error must come back at once)."""

from __future__ import annotations

from pathlib import Path

from ..errors import MirageError


def check_output_parent(path: Path | str | None, option: str) -> None:
    """Refuse a user-named output file whose folder does not exist (``-o /nonexistent/dir/x.json``):
    a typo must not create directories anywhere. ``None`` and ``-`` (stdout) pass. Run and batch
    directories (``generate --out``, ``batch --out``) are made by their writers instead."""
    if path is None or str(path) == "-":
        return
    parent = Path(path).expanduser().parent
    if not parent.is_dir():
        raise MirageError(f"{option} {path}: folder {parent} does not exist (create it first)")
