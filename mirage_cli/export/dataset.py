"""``mirage export RUN --to colmap|nerfstudio OUT``: a finished run as a dataset that COLMAP,
nerfstudio and gsplat read, to train a Gaussian splat or a NeRF of the generated world.

Layout of ``OUT/``::

    images/frame_NNNNN.png        the run's frames (every ``--every``-th; NNNNN = the run's frame index)
    depth/frame_NNNNN.png         with --depth: the memory's z-depth seen from that frame's camera,
                                  16-bit PNG in millimetres of scene units (0 = the memory has nothing there)
    sparse/0/cameras.txt|bin      colmap: PINHOLE cameras at the video size
    sparse/0/images.txt|bin       colmap: one image per exported frame, w2c (COLMAP's convention)
    sparse/0/points3D.txt|bin     colmap: the memory's points with their colours (no tracks)
    transforms.json               nerfstudio: OpenGL c2w, fl_x/fl_y/cx/cy, ply_file_path, depth_file_path
    sparse_pc.ply                 nerfstudio: the memory's points (world coordinates, float xyz + uchar rgb)

Cameras are the run's exactly (:func:`mirage_cli.export.run.open_run`: frame 0 = identity, scene
units), so a reconstruction trained on the export lives in the memory's world. Points are every
point of the run's final memory with finite coordinates; colours are exact for the preview's pixel
codec and the features' pseudo-colour otherwise (:func:`mirage_cli.memory.export.point_colors`).
Every file is written atomically; an existing non-empty ``OUT`` is refused unless ``overwrite``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MirageError
from ..io import atomic_path
from ..memory.export import point_colors
from ..memory.latent import LatentMemory
from ..trajectories.formats.colmap import model_records
from .colmap import write_model
from .nerfstudio import write_transforms
from .run import FinishedRun, open_run

TARGETS = ("colmap", "nerfstudio")
DEPTH_UNIT = 1e-3
"""Depth PNGs hold z-depth / DEPTH_UNIT (millimetres when scene units are metres), nerfstudio's default."""


@dataclass(frozen=True)
class Export:
    """What :func:`export_run` wrote: ``frames`` exported (run frame indices), ``points`` in the
    point cloud, the model / transforms ``files``, and ``depth_clipped``: depth pixels beyond
    65.535 scene units (clipped in the 16-bit PNGs)."""

    out: Path
    target: str
    frames: list[int]
    points: int
    files: list[Path]
    depth_clipped: int = 0


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MirageError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MirageError(f"{out}: exists and is not empty; pass --overwrite to write into it, or choose another OUT")


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def memory_points(run: FinishedRun) -> tuple[np.ndarray, np.ndarray, object]:
    """``(xyz (P, 3) float64, rgb (P, 3) uint8, memory)``: the final memory's points with finite coordinates."""
    memory = LatentMemory.load(run.memory_file("the export's point cloud needs it"))
    pts = memory.points.detach().double().cpu()
    valid = torch.isfinite(pts).all(1)
    rgb = (point_colors(memory)[valid].numpy() * 255 + 0.5).astype(np.uint8)
    return pts[valid].numpy(), rgb, memory


def memory_depth(memory, cams) -> torch.Tensor:
    """``(T, H, W)`` z-depth of the memory seen from ``cams`` (the read's latent grid, nearest upsampled)."""
    _, _, depth = memory.read(cams)
    f = memory.spatial_factor
    return depth.cpu().repeat_interleave(f, -2).repeat_interleave(f, -1)[..., :cams.height, :cams.width]


def export_run(run_dir: Path | str, target: str, out: Path | str, every: int = 1, depth: bool = False,
               binary: bool = False, overwrite: bool = False, tick: Callable[[int], None] | None = None) -> Export:
    """Export the finished run in ``run_dir`` to ``out`` as ``target`` (``colmap`` or ``nerfstudio``).

    Args:
        every: keep every N-th frame (frame 0, N, 2N, ...). depth: also write the memory's depth per frame.
        binary: COLMAP binary model (``.bin``) instead of text. tick: called with the number of
            frames done (a progress bar).
    Raises:
        MirageError: not a finished run, no video or memory, a bad option, an existing non-empty OUT.
    """
    if target not in TARGETS:
        raise MirageError(f"--to: must be {' or '.join(TARGETS)} (got {target!r})")
    if every < 1:
        raise MirageError(f"--every: must be >= 1 (got {every})")
    if binary and target != "colmap":
        raise MirageError("--binary: only for --to colmap (nerfstudio's transforms.json is text)")
    out = Path(out)
    run = open_run(run_dir, "nothing to export")
    _check_out(out, overwrite)
    xyz, rgb, memory = memory_points(run)
    indices = list(range(0, len(run.cameras), every))
    cams = run.cameras[indices]
    names = [f"frame_{i:05d}.png" for i in indices]
    for k, (_, frame) in enumerate(run.frames(indices)):
        _save_png(out / "images" / names[k], frame)
        if tick:
            tick(k + 1)
    clipped, depth_names = 0, None
    if depth:
        depth_names = [f"depth/{n}" for n in names]
        for s in range(0, len(cams), 8):
            d = memory_depth(memory, cams[s:s + 8]).double() / DEPTH_UNIT
            clipped += int((d > 65535).sum())
            for j, dj in enumerate(d.round().clamp(0, 65535).to(torch.int32).numpy().astype(np.uint16)):
                _save_png(out / depth_names[s + j], dj)
    if target == "colmap":
        files = write_model(out / "sparse" / "0", *model_records(cams, names), xyz, rgb, binary=binary)
    else:
        files = write_transforms(out, cams, run.fps, [f"images/{n}" for n in names], depth_names, xyz, rgb)
    return Export(out, target, indices, len(xyz), files, clipped)
