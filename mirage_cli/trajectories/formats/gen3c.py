"""GEN3C GUI's exported cameras (nv-tlabs/GEN3C, ``gui/``: the "Export cameras" button):
``{"cameras": [{"start": 3x4, "end": 3x4}, ...], "resolution": [W, H], "fps": F,
"duration_seconds": S, ...}``.

Matched against GEN3C's own code at commit db2ffe1: ``gui/src/testbed.cu`` lines 411-450 (the
export: one ``{"start", "end"}`` pair per rendered frame, ``resolution``, ``fps``,
``duration_seconds``, ``spp``, ``quality``, ``shutter_fraction``; no field of view), the matrix
layout of ``gui/include/tiny-cuda-nn/vec_json.h`` lines 33-41 (a ``mat4x3`` is written as 3 rows of 4
numbers: ``[R | t]``), and the camera convention of ``gui/api/client.py`` lines 454-486 and
``gui/api/api_types.py`` lines 66-75: the GUI's camera matrices are sent to the GEN3C server as
``cameras_to_world`` and inverted into the OpenCV world-to-camera matrices the model uses, so they
are OpenCV c2w. ``start`` is the camera at the frame's start (``end`` only matters for motion
blur, ``shutter_fraction``); the GUI's "W2C" checkbox (line 415) exports inverses instead, which the
file does not record: export with it unticked.

The file holds no field of view: the cameras get a vertical fov of :data:`ASSUMED_FOV_DEG` (GEN3C
assumes 50.625 degrees for its own seeding data, ``gui/api/v2v_utils.py`` line 185) with a note;
``mirage generate --fov`` sets another. Read only (the GUI authors these paths; mirage's own paths
go to the other formats).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...geometry.cameras import Cameras
from ..trajectory import DEFAULT_FPS, Trajectory
from .common import Format, err, list_field, matrix, number, numbers, to_opencv_c2w

NAME = "gen3c"
ASSUMED_FOV_DEG = 50.625
"""Vertical field of view given to GEN3C's exported cameras (they hold none)."""


def detect(data: Any) -> bool:
    """A ``cameras`` list whose first entry has ``start``."""
    cams = data.get("cameras") if isinstance(data, dict) else None
    return isinstance(cams, list) and bool(cams) and isinstance(cams[0], dict) and "start" in cams[0]


def read(data: dict, path: Path) -> Trajectory:
    """GEN3C exported cameras -> OpenCV c2w cameras with the assumed vertical fov (``fov_only``)."""
    src = str(path)
    cams = list_field(data, "cameras", src)
    c2ws = []
    for i, cam in enumerate(cams):
        if not isinstance(cam, dict) or "start" not in cam:
            raise err(src, "expected an object with 'start' (a 3x4 camera-to-world matrix)", i, "cameras")
        M = matrix(numbers(cam["start"], (12, 16), src, i, "start"))
        c2ws.append(to_opencv_c2w(M, "opencv", "c2w", src, i, "start"))
    W, H = (round(v) for v in numbers(data.get("resolution"), 2, src, None, "resolution"))
    if W <= 0 or H <= 0:
        raise err(src, f"must be positive (got {W}x{H})", None, "resolution")
    fps = number(data["fps"], src, None, "fps", positive=True) if "fps" in data else DEFAULT_FPS
    note = (f"{src}: GEN3C's exported cameras hold no field of view: {ASSUMED_FOV_DEG:g} degrees vertical assumed "
            "(GEN3C's own default); set another with --fov",)
    return Trajectory(Cameras.from_fov(torch.stack(c2ws), ASSUMED_FOV_DEG, W, H), fps, NAME, "absolute", src, True,
                      notes=note)


FORMAT = Format(NAME, "json", detect, read)
