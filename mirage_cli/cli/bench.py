"""`mirage bench` (to be filled in)."""

import typer


def register(app: typer.Typer) -> None:
    """Add the `bench` command to the root app."""
