"""nerfstudio's dataset layout: ``transforms.json`` + ``sparse_pc.ply`` (what ``ns-process-data``
writes and ``ns-train splatfacto --data OUT`` reads).

``transforms.json`` holds ``camera_model: "OPENCV"`` with zero distortion (mirage's cameras are
pinhole), ``w``/``h``, ``fl_x``/``fl_y``/``cx``/``cy`` in pixels (per frame when they vary),
``frames[].file_path`` / ``transform_matrix`` (camera-to-world in nerfstudio's OpenGL convention: x
right, y up, z backward; the same world as mirage's) and, with depth, ``depth_file_path`` (16-bit
PNG in millimetres of scene units: nerfstudio's default ``depth_unit_scale_factor`` 1e-3), plus
``ply_file_path: "sparse_pc.ply"`` (the memory's points, world coordinates, float xyz + uchar rgb),
which splatfacto uses to initialise its Gaussians. Matched against nerfstudio's
``nerfstudio/data/dataparsers/nerfstudio_dataparser.py`` (keys ``camera_model``, ``fl_x``, ``k1``...,
``file_path``, ``transform_matrix``, ``depth_file_path``, ``ply_file_path``) and
``nerfstudio/process_data/colmap_utils.py`` (``colmap_to_json``: the same keys from a COLMAP model).
The document is built by :func:`mirage_cli.trajectories.formats.nerf.transforms_doc` (mirage's own
``nerf`` reader reads it back).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..geometry.cameras import Cameras
from ..memory.export import write_ply
from ..trajectories.formats.common import atomic_write_text, json_text
from ..trajectories.formats.nerf import transforms_doc

PLY_NAME = "sparse_pc.ply"
DISTORTION = {"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}


def write_transforms(out: Path, cams: Cameras, fps: float, images: list[str], depths: list[str] | None,
                     xyz: np.ndarray, rgb: np.ndarray) -> list[Path]:
    """``OUT/transforms.json`` and ``OUT/sparse_pc.ply``, atomically; returns both paths.

    Args:
        cams: the exported cameras (OpenCV c2w, normalized intrinsics at the frames' size).
        images, depths: per camera, the frame's (and depth's) path relative to ``out``.
        xyz: ``(P, 3)`` world points; rgb: ``(P, 3)`` uint8.
    """
    doc = transforms_doc(cams, fps, images)
    head = {"camera_model": "OPENCV", **{k: v for k, v in doc.items() if k != "frames"}}
    if "fl_x" in head:
        head |= DISTORTION
    frames = doc["frames"]
    for i, fr in enumerate(frames):
        if "fl_x" in fr:
            fr |= DISTORTION
        if depths is not None:
            fr["depth_file_path"] = depths[i]
    ply = out / PLY_NAME
    write_ply(ply, xyz, rgb, "mirage memory points (world = the run's frame 0 camera, OpenCV axes)")
    doc = {**head, "ply_file_path": PLY_NAME, "frames": frames}
    path = out / "transforms.json"
    atomic_write_text(path, json_text(doc, "frames"))
    return [path, ply]
