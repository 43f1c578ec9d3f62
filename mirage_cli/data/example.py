"""The shipped example: ``examples/room.png`` and its exact depth sidecar ``examples/room.depth.npy``.

Regenerate with ``python -m mirage_cli.data.example examples/`` (a test checks the committed files
equal what this writes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..io import atomic_path, save_image
from .scenes import default_camera, make_scene

EXAMPLE_SIZE = (832, 480)  # width, height: Wan2.1's 480p landscape size
EXAMPLE_FOV = 55.0


def write_example(directory: Path | str, width: int = EXAMPLE_SIZE[0], height: int = EXAMPLE_SIZE[1]) -> tuple[Path, Path]:
    """Render the synthetic room from the default camera; write ``room.png`` and ``room.depth.npy``."""
    directory = Path(directory)
    rgb, depth = make_scene("room").render(default_camera(width, height, EXAMPLE_FOV))
    image, side = directory / "room.png", directory / "room.depth.npy"
    save_image(image, rgb[0])
    with atomic_path(side) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, depth[0].numpy().astype(np.float32))
    return image, side


if __name__ == "__main__":
    for p in write_example(sys.argv[1] if len(sys.argv) > 1 else "examples"):
        print(p)
