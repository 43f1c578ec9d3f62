"""Lyra 2's ``trajectory.npz`` (nv-tlabs/lyra, ``Lyra-2/``): the custom-trajectory input of
``lyra_2._src.inference.lyra2_custom_traj_inference``.

==================  ====================  ==================================================
key                 shape                 meaning
==================  ====================  ==================================================
``w2c``             ``(N, 4, 4)`` float   world-to-camera, OpenCV axes (x right, y down, z forward)
``intrinsics``      ``(N, 3, 3)`` float   pinhole K in pixels at ``image_width x image_height``
``image_height``    scalar int            height the intrinsics refer to
``image_width``     scalar int            width the intrinsics refer to
==================  ====================  ==================================================

Matched against Lyra 2's own code at commit 9fffc9a: line 100 of the README in ``Lyra-2/`` (the keys) and
``Lyra-2/lyra_2/_src/inference/lyra2_custom_traj_inference.py`` lines 60-95 (``load_trajectory``:
``w2c``/``intrinsics`` read as they are, the intrinsics rescaled from ``image_height x
image_width`` to the render size per axis; without the size keys they are used at the render
size, ``--resolution`` default ``480,832`` on line 140). Lyra's poses are OpenCV like the GEN3C
cache it builds on (``Lyra-1/cosmos_predict1/diffusion/inference/cache_3d.py`` unprojects with
them). Lyra multiplies translations by ``--pose_scale`` (default 1.1, line 138) and its README
(line 120) warns that the path is relative to the monocular depth of the first frame: mirage reads
the numbers as they are (``scale: absolute``); ``mirage generate --traj-scale 1.1`` reproduces
Lyra's default. No fps is stored: Lyra renders at 16 fps (``--fps`` default, line 135).

Detected by content: an ``.npz`` archive holding ``w2c``. Written by :func:`write` (float64; Lyra's loader casts to
float32), so ``traj convert`` round-trips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import MirageError
from ...geometry.cameras import Cameras
from ..trajectory import Trajectory
from .arrays import check_shape, is_zip, load_npz, normalized, npz_keys, pixel_matrices, poses_to_opencv_c2w, require, save_npz
from .common import Format

NAME = "lyra2"
LYRA_FPS = 16.0
"""Lyra 2's default ``--fps`` (``lyra_2/_src/inference/lyra2_custom_traj_inference.py`` line 135)."""
LYRA_RENDER_SIZE = (832, 480)
"""Lyra 2's default ``--resolution 480,832`` (H, W; line 140): the size intrinsics refer to when the
file gives no ``image_width``/``image_height``."""
NEEDS = "a Lyra 2 trajectory.npz needs w2c (N,4,4), intrinsics (N,3,3), image_height, image_width"


def detect(path: Path) -> bool:
    """A zip archive with a ``w2c`` array."""
    return is_zip(path) and "w2c" in npz_keys(path)


def _size(arrays: dict, src: str) -> tuple[tuple[int, int], tuple[str, ...]]:
    """``((W, H), notes)`` from ``image_width``/``image_height``, else Lyra's render size with a note."""
    if "image_width" not in arrays and "image_height" not in arrays:
        W, H = LYRA_RENDER_SIZE
        return (W, H), (f"{src}: no image_width/image_height: intrinsics taken as pixels of Lyra 2's default "
                        f"{W}x{H} render size (as its loader does)",)
    size = []
    for key in ("image_width", "image_height"):
        a = np.asarray(require(arrays, key, src, NEEDS))
        if a.size != 1 or not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all() or float(a.reshape(-1)[0]) <= 0:
            raise MirageError(f"{src}: {key}: expected one positive number, got {a.reshape(-1)[:4].tolist()}")
        size.append(int(round(float(a.reshape(-1)[0]))))
    return (size[0], size[1]), ()


def read(path: Path, _unused: Path | None = None) -> Trajectory:
    """The cameras of a Lyra 2 ``trajectory.npz``: ``w2c`` inverted to c2w, ``intrinsics`` normalized."""
    src = str(path)
    arrays = load_npz(path)
    w2c = check_shape(require(arrays, "w2c", src, NEEDS), (None, 4, 4), src, "w2c")
    K = check_shape(require(arrays, "intrinsics", src, NEEDS), (len(w2c), 3, 3), src, "intrinsics")
    (W, H), notes = _size(arrays, src)
    c2w = poses_to_opencv_c2w(w2c, "w2c", src, "w2c")
    intr = normalized(K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], W, H, src, "intrinsics")
    return Trajectory(Cameras(c2w, intr, W, H), LYRA_FPS, NAME, "absolute", src, False, notes=notes)


def write(traj: Trajectory, path: Path) -> list[Path]:
    """``trajectory.npz`` with ``w2c``, pixel ``intrinsics`` at the trajectory's size, ``image_height``,
    ``image_width`` (Lyra keeps no fps), to ``path`` as given."""
    cams = traj.cameras
    save_npz(path, w2c=cams.w2c.numpy(), intrinsics=pixel_matrices(cams.intrinsics, cams.width, cams.height),
             image_height=np.int64(cams.height), image_width=np.int64(cams.width))
    return [path]


FORMAT = Format(NAME, "npz", detect, read, write=write)
