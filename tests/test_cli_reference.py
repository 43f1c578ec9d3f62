"""docs/cli.md, the CLI reference generated from the Typer app, matches the app (as CI checks it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "cli_reference.sh"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("diff") is None, reason="needs bash and diff")
def test_committed_cli_reference_is_current():
    r = subprocess.run([str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_cli_reference_lists_every_command():
    import typer

    from mirage_cli.cli import app

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")

    def paths(command, prefix):
        yield prefix
        for name, sub in getattr(command, "commands", {}).items():
            yield from paths(sub, f"{prefix} {name}")

    for path in paths(typer.main.get_command(app), "mirage"):
        if path != "mirage":
            assert f"`{path}`" in text, f"{path} is missing from docs/cli.md"
