"""HY-WorldPlay's pose JSON (Tencent-Hunyuan/HY-WorldPlay): one camera per **latent frame**,
``{"0": {"extrinsic": c2w 4x4, "K": 3x3 pixels}, "1": {...}, ...}``.

Matched against HY-WorldPlay's own code at commit da2d0c2: ``hyvideo/generate.py`` lines 203-221
(``pose_to_input``: entries in the file's key order, ``c2w = np.array(pose_json[t_key]["extrinsic"])``,
the intrinsics normalized as ``fx / (2 cx)``, ``fy / (2 cy)`` with the principal point set to the
centre, so the image is ``2cx x 2cy``), lines 146-170 and ``hyvideo/generate_custom_trajectory.py``
lines 20-83 (OpenCV axes: ``forward`` is the camera's +z, ``right`` its +x), and
``assets/pose/test_forward_32_latents.json`` (the shipped example: 32 entries, identity first,
+0.08 along z per entry, K = 969.70 px at 1920 x 1080). WorldPlay renders 24 fps
(``hyvideo/generate.py`` line 292).

Entry ``j`` is latent frame ``j``, i.e. video frame ``4j`` (``1 + 4(N - 1)`` video frames for ``N``
entries, WorldPlay's ``latent_num * 4 - 3``, line 206): the reader interpolates the video frames
between entries (slerp / linear, :func:`~mirage_cli.trajectories.trajectory.resample`), the writer
keeps every 4th frame and so needs ``4k + 1`` frames. Like WorldPlay's loader it keeps the file's
focal lengths and centres the principal point. Translations are read as file units (``absolute``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from ...errors import MirageError
from ...geometry.cameras import Cameras
from ..trajectory import Trajectory, resample
from .common import Format, check_focal, err, flat, matrix, numbers, require_centred, rnd, to_opencv_c2w

NAME = "worldplay"
FRAMES_PER_LATENT = 4
FPS = 24.0


def detect(data: Any) -> bool:
    """A JSON object whose keys are frame numbers and whose first entry has an ``extrinsic``."""
    if not isinstance(data, dict) or not data or not all(isinstance(k, str) and k.strip().isdigit() for k in data):
        return False
    first = next(iter(data.values()))
    return isinstance(first, dict) and "extrinsic" in first


def read(data: dict, path: Path) -> Trajectory:
    """WorldPlay pose JSON -> ``1 + 4(N - 1)`` OpenCV c2w cameras (entries = latent frames)."""
    src = str(path)
    c2ws, intr, sizes = [], [], []
    for i, (key, entry) in enumerate(data.items()):
        where = f" (key {key!r})"
        if not isinstance(entry, dict) or "extrinsic" not in entry or "K" not in entry:
            raise err(src, "expected an object with 'extrinsic' (c2w 4x4) and 'K' (3x3 pixels)", i, None, where)
        M = matrix(numbers(entry["extrinsic"], 16, src, i, "extrinsic"))
        c2ws.append(to_opencv_c2w(M, "opencv", "c2w", src, i, "extrinsic", where))
        K = numbers(entry["K"], 9, src, i, "K")
        fx, fy, cx, cy = K[0], K[4], K[2], K[5]
        check_focal(fx, fy, src, i, "K", where)
        if cx <= 0 or cy <= 0:
            raise err(src, f"principal point must be positive (it is half the image size; got cx={cx:g}, cy={cy:g})",
                      i, "K", where)
        intr.append([fx / (2 * cx), fy / (2 * cy), 0.5, 0.5])  # pose_to_input, generate.py lines 218-221
        sizes.append((round(2 * cx), round(2 * cy)))
    cams = Cameras(torch.stack(c2ws), torch.tensor(intr, dtype=torch.float64), *sizes[0])
    traj = Trajectory(cams, FPS, NAME, "absolute", src, False, meta={"latents": len(c2ws)})
    return resample(traj, FRAMES_PER_LATENT * (len(c2ws) - 1) + 1)


def text(traj: Trajectory) -> str:
    """WorldPlay pose JSON: every 4th frame (latent frames), c2w OpenCV, K in pixels at the trajectory's size."""
    require_centred(traj, NAME)
    n = len(traj)
    if (n - 1) % FRAMES_PER_LATENT:
        raise MirageError(f"{traj.source}: cannot write {NAME}: it holds one camera per latent frame (every "
                          f"{FRAMES_PER_LATENT}th video frame), so the trajectory needs 4k+1 frames, not {n} "
                          f"(resample with --frames {FRAMES_PER_LATENT * math.ceil((n - 1) / FRAMES_PER_LATENT) + 1})")
    cams = traj.cameras[0::FRAMES_PER_LATENT]
    W, H = cams.width, cams.height
    doc = {}
    for j in range(len(cams)):
        fx, fy = float(cams.intrinsics[j, 0]) * W, float(cams.intrinsics[j, 1]) * H
        M = flat(cams.c2w[j])
        doc[str(j)] = {"extrinsic": [M[r * 4:(r + 1) * 4] for r in range(4)],
                       "K": [[rnd(fx), 0.0, rnd(W / 2)], [0.0, rnd(fy), rnd(H / 2)], [0.0, 0.0, 1.0]]}
    return json.dumps(doc, indent=1) + "\n"


FORMAT = Format(NAME, "json", detect, read, text=text)
