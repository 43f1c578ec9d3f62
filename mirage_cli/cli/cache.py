"""`mirage cache ...` commands (to be filled in)."""

import typer

app = typer.Typer(help="cache commands", no_args_is_help=True)
