"""`mirage generate` (to be filled in)."""

import typer


def register(app: typer.Typer) -> None:
    """Add the `generate` command to the root app."""
