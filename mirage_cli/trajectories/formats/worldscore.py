"""WorldScore ``camera_data.json``: ``cameras_interp`` c2w in Blender (= OpenGL) axes,
``focal_length`` in pixels (one, or one per camera), optional ``width``/``height``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import MirageError
from ...geometry.cameras import Cameras
from ..trajectory import Trajectory
from .common import (
    ASSUMED_SQUARE,
    Format,
    check_focal,
    flat,
    fps_from,
    from_opencv_c2w,
    json_text,
    list_field,
    matrix,
    number,
    numbers,
    require_centred,
    rnd,
    size_from,
    to_opencv_c2w,
)

NAME = "worldscore"


def detect(data: Any) -> bool:
    """A ``cameras_interp`` list (and no nerfstudio ``camera_path``)."""
    return isinstance(data, dict) and "cameras_interp" in data and "camera_path" not in data


def read(data: dict, path: Path) -> Trajectory:
    """WorldScore ``camera_data.json``: ``cameras_interp`` c2w (Blender axes), ``focal_length`` in pixels."""
    src = str(path)
    cams = list_field(data, "cameras_interp", src)
    if "focal_length" not in data:
        raise MirageError(f"{src}: focal_length: missing (WorldScore focal length in pixels)")
    focal = data["focal_length"]
    if isinstance(focal, list) and len(focal) != len(cams):
        raise MirageError(f"{src}: focal_length: inconsistent counts: {len(focal)} focal lengths for "
                          f"{len(cams)} cameras_interp")
    size = size_from(data, src, "width", "height")
    W, H = size or (ASSUMED_SQUARE, ASSUMED_SQUARE)
    c2ws, intr = [], []
    for i, m in enumerate(cams):
        M = matrix(numbers(m, (16, 12), src, i, "cameras_interp"))
        c2ws.append(to_opencv_c2w(M, "opengl", "c2w", src, i, "cameras_interp"))
        f = number(focal[i] if isinstance(focal, list) else focal, src, i, "focal_length")
        check_focal(f, f, src, i, "focal_length")
        intr.append([f / W, f / H, 0.5, 0.5])
    return Trajectory(Cameras(torch.stack(c2ws), torch.tensor(intr, dtype=torch.float64), W, H),
                      fps_from(data, len(cams), src)[0], NAME, "absolute", src, size is None)


def text(traj: Trajectory) -> str:
    """WorldScore ``camera_data.json``: Blender c2w, one focal length in pixels, plus width/height."""
    require_centred(traj, NAME)
    cams = traj.cameras
    fy = cams.intrinsics[:, 1] * cams.height
    if (fy - fy[0]).abs().max() > 1e-6:
        raise MirageError(f"{traj.source}: cannot write worldscore: it holds one focal_length and this trajectory zooms")
    mats = from_opencv_c2w(cams.c2w, "opengl", "c2w")
    interp = [[flat(r) for r in m] for m in mats]
    doc = {"focal_length": rnd(fy[0]), "width": cams.width, "height": cams.height, "fps": rnd(traj.fps),
           "cameras": [interp[0], interp[-1]], "cameras_interp": interp}
    return json_text(doc, "cameras_interp")


FORMAT = Format(NAME, "json", detect, read, text=text)
