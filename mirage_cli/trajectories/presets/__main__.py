"""``python -m mirage_cli.trajectories.presets [DIR]``: regenerate the shipped preset files.

A package ``__main__`` (not a ``__main__`` block in the module) so that running it does not import the
presets module twice (once through ``mirage_cli.trajectories``, once as ``__main__``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import default_presets_dir, write_presets


def main(argv: list[str] | None = None) -> int:
    """``python -m mirage_cli.trajectories.presets [DIR]``: regenerate the shipped preset files."""
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else default_presets_dir()
    for path in write_presets(directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
