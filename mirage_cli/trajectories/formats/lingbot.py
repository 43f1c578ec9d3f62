"""LingBot-World's camera control (Robbyant/lingbot-world): a folder (its ``--action_path``) with
``poses.npy`` and ``intrinsics.npy``.

=================  ===================  =====================================================
file               shape                meaning
=================  ===================  =====================================================
``poses.npy``      ``(N, 4, 4)`` float  camera-to-world, OpenCV axes
``intrinsics.npy`` ``(N, 4)`` float     ``[fx, fy, cx, cy]`` in pixels of an 832 x 480 image
=================  ===================  =====================================================

Matched against LingBot-World's own code at commit 6ca87d4: ``README.md`` lines 86-87 (the two
files and their shapes; poses "in OpenCV coordinates"), ``wan/image2video.py`` line 264 (``c2ws =
np.load(... "poses.npy") # opencv coordinate``) and lines 330-335 (the intrinsics are "for original
image size (480p)": rescaled from ``height_org=480, width_org=832`` to the render size). No fps is
stored: LingBot renders at ``sample_fps = 16`` (``wan/configs/shared_config.py`` line 17).

Detected by content: a ``.npy`` array of shape ``(N, 4, 4)`` (the ``poses.npy``; its sibling
``intrinsics.npy`` is required), or a folder holding both files. Given the ``intrinsics.npy`` by
mistake, the error says to pass the poses or the folder. Written by :func:`write` (a folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import MirageError
from ...geometry.cameras import Cameras
from ..trajectory import Trajectory
from .arrays import check_shape, is_npy, load_npy, normalized, poses_to_opencv_c2w, save_npy
from .common import Format

NAME = "lingbot"
LINGBOT_SIZE = (832, 480)
"""(W, H) the intrinsics refer to (``wan/image2video.py`` lines 334-335: ``height_org=480, width_org=832``)."""
LINGBOT_FPS = 16.0
POSES, INTRINSICS = "poses.npy", "intrinsics.npy"


def folder_file(path: Path) -> Path | None:
    """The ``poses.npy`` of a LingBot-World action folder, or None when ``path`` is not one."""
    return path / POSES if (path / POSES).is_file() and (path / INTRINSICS).is_file() else None


def _shape(path: Path) -> tuple[int, ...] | None:
    """The shape in a ``.npy`` header (without loading the data), None when unreadable."""
    try:
        return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
    except Exception:  # not a plain .npy (pickled, truncated): read() names the problem
        return None


def detect(path: Path) -> bool:
    """A ``.npy`` array ``(N, 4, 4)``; an ``(N, 4)`` one next to a ``poses.npy`` is named as the intrinsics."""
    if not is_npy(path):
        return False
    shape = _shape(path)
    if shape is not None and len(shape) == 2 and shape[1] == 4 and (path.parent / POSES).is_file():
        raise MirageError(f"{path}: this is LingBot-World's intrinsics.npy; pass the poses.npy next to it "
                          "or the folder holding both")
    return shape is not None and len(shape) == 3 and shape[1:] == (4, 4)


def read(path: Path, _unused: Path | None = None) -> Trajectory:
    """``poses.npy`` (OpenCV c2w) with its sibling ``intrinsics.npy`` (pixels of 832 x 480)."""
    src = str(path)
    poses = check_shape(load_npy(path, "LingBot-World poses.npy"), (None, 4, 4), src, "poses")
    ipath = path.parent / INTRINSICS
    if not ipath.is_file():
        raise MirageError(f"{src}: LingBot-World intrinsics.npy not found next to it (looked for {ipath})")
    K = check_shape(load_npy(ipath, "LingBot-World intrinsics.npy"), (len(poses), 4), str(ipath), "intrinsics")
    c2w = poses_to_opencv_c2w(poses, "c2w", src, "poses")
    W, H = LINGBOT_SIZE
    intr = normalized(K[:, 0], K[:, 1], K[:, 2], K[:, 3], W, H, str(ipath), "intrinsics")
    return Trajectory(Cameras(c2w, intr, W, H), LINGBOT_FPS, NAME, "absolute", src, False)


def write(traj: Trajectory, path: Path) -> list[Path]:
    """A LingBot-World action folder: ``poses.npy`` (float64 OpenCV c2w; LingBot casts) and ``intrinsics.npy``
    (``[fx, fy, cx, cy]`` in pixels of 832 x 480: the normalized intrinsics kept, so a
    trajectory of another aspect keeps its per-axis field of view). ``path``: the folder, or a
    ``poses.npy`` inside it."""
    folder = path.parent if path.name == POSES else path
    W, H = LINGBOT_SIZE
    cams = traj.cameras
    K = (cams.intrinsics * torch.tensor([W, H, W, H], dtype=torch.float64)).numpy()
    save_npy(folder / INTRINSICS, K)
    save_npy(folder / POSES, cams.c2w.numpy())
    return [folder / POSES, folder / INTRINSICS]


FORMAT = Format(NAME, "npy", detect, read, write=write)
