"""nerfstudio ``camera_path.json``: OpenGL c2w ``camera_path[].camera_to_world`` (16 numbers,
row-major), vertical ``fov`` in degrees, ``seconds`` (frames / seconds = fps).

Read by the native reader (the native format is a superset); written with a vertical fov only,
so square pixels and a centred principal point.
"""

from __future__ import annotations

from typing import Any

from ..trajectory import Trajectory
from . import native
from .common import Format, flat, from_opencv_c2w, json_text, require_centred, rnd

NAME = "nerfstudio"


def detect(data: Any) -> bool:
    return isinstance(data, dict) and "camera_path" in data and not native.is_native(data)


read = native.read  # one camera_path reader; it tells native from nerfstudio by the document itself


def text(traj: Trajectory) -> str:
    """nerfstudio ``camera_path.json``: OpenGL c2w, vertical fov (square pixels assumed)."""
    require_centred(traj, NAME)
    cams, mats = traj.cameras, from_opencv_c2w(traj.cameras.c2w, "opengl", "c2w")
    doc: dict[str, Any] = {
        "camera_type": "perspective", "render_width": cams.width, "render_height": cams.height,
        "fps": rnd(traj.fps), "seconds": rnd(len(cams) / traj.fps), "scale": traj.scale,
        "camera_path": [{"camera_to_world": flat(mats[i]), "fov": rnd(cams.fov_y_deg[i]),
                         "aspect": rnd(cams.width / cams.height)} for i in range(len(cams))],
    }
    return json_text(doc, "camera_path")


FORMAT = Format(NAME, "json", detect, read, text=text, keeps_scale=True)
