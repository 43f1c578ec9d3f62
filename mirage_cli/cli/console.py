"""Shared rich consoles (stdout for results, stderr for messages and progress)."""

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
