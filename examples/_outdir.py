"""The ``--out DIR`` option the example scripts share: keep their outputs there, else in a temporary folder."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path


def run_with_out_dir(main: Callable[[Path], None], description: str) -> None:
    """Parse ``--out DIR`` and call ``main(folder)``: DIR (kept), or a temporary folder removed afterwards."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, help="keep the outputs in this folder [default: a temporary one, removed]")
    args = parser.parse_args()
    if args.out is None:
        with tempfile.TemporaryDirectory(prefix="mirage-example-") as tmp:
            main(Path(tmp))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    main(args.out)
    print(f"outputs in {args.out}")
