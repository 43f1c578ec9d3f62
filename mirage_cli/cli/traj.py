"""`mirage traj ...` commands (to be filled in)."""

import typer

app = typer.Typer(help="traj commands", no_args_is_help=True)
