"""NeRF / instant-ngp ``transforms.json``: ``frames[].transform_matrix`` c2w in OpenGL axes;
intrinsics from ``fl_x/fl_y/cx/cy`` with ``w/h`` (pixels), or ``camera_angle_x`` (horizontal,
radians) / ``camera_angle_y``. Frame keys override the top-level ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ...geometry.cameras import Cameras, focal_from_fov, fov_from_focal
from ..trajectory import Trajectory
from .common import (
    ASSUMED_SQUARE,
    Format,
    check_focal,
    check_fov,
    err,
    flat,
    fps_from,
    from_opencv_c2w,
    json_text,
    list_field,
    matrix,
    natural_key,
    number,
    numbers,
    rnd,
    size_from,
    to_opencv_c2w,
)

NAME = "nerf"


def detect(data: Any) -> bool:
    """A ``frames`` list (and neither nerfstudio's ``camera_path`` nor WorldScore's ``cameras_interp``)."""
    return isinstance(data, dict) and "frames" in data and "camera_path" not in data and "cameras_interp" not in data


def read(data: dict, path: Path) -> Trajectory:
    """NeRF / instant-ngp ``transforms.json``: OpenGL c2w ``frames[].transform_matrix``.

    Frames are put in natural ``file_path`` order (see :func:`frame_order`); problems name the
    frame as listed in the file.
    """
    src = str(path)
    frames = list_field(data, "frames", src)
    c2ws, intr, sizes, fov_only = [], [], [], True
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict) or "transform_matrix" not in fr:
            raise err(src, "missing transform_matrix", i, "frames")
        M = matrix(numbers(fr["transform_matrix"], 16, src, i, "transform_matrix"))
        c2ws.append(to_opencv_c2w(M, "opengl", "c2w", src, i, "transform_matrix"))
        k, size, from_fov = _intrinsics({**data, **fr}, src, i)
        intr.append(k)
        sizes.append(size)
        fov_only = fov_only and from_fov
    order = frame_order(frames)
    notes: tuple[str, ...] = ()
    if order != list(range(len(frames))):
        moved = sum(1 for i, j in enumerate(order) if i != j)
        notes = (f"{src}: frames reordered by file_path (natural order, as nerfstudio loads them): "
                 f"{moved} of {len(frames)} were listed out of order",)
    fps, _ = fps_from(data, len(frames), src)
    return Trajectory(Cameras(torch.stack([c2ws[j] for j in order]),
                              torch.tensor([intr[j] for j in order], dtype=torch.float64), *sizes[order[0]]),
                      fps, NAME, "absolute", src, fov_only, notes=notes)


def frame_order(frames: list) -> list[int]:
    """Indices of ``frames`` sorted by ``file_path`` in natural order (``img_2`` before ``img_10``).

    Frames converted from COLMAP are often listed in another order than their images; sorting by
    file name (as nerfstudio's loader does) restores the capture order. When a frame has no
    ``file_path`` the listed order is kept (nothing to sort by). The sort is stable.
    """
    names = [fr.get("file_path") for fr in frames]
    if not all(isinstance(n, str) for n in names):
        return list(range(len(frames)))
    return sorted(range(len(frames)), key=lambda i: natural_key(names[i]))


def _intrinsics(d: dict, src: str, i: int) -> tuple[list[float], tuple[int, int], bool]:
    """Intrinsics of one transforms.json frame (frame keys override the top-level ones)."""
    size = size_from(d, src, "w", "h")
    if "fl_x" in d or "fl_y" in d:
        if size is None:
            raise err(src, "fl_x/fl_y are in pixels and need the image size 'w' and 'h'", i, "fl_x")
        fx = number(d.get("fl_x", d.get("fl_y")), src, i, "fl_x")
        fy = number(d.get("fl_y", d.get("fl_x")), src, i, "fl_y")
        check_focal(fx, fy, src, i, "fl_x/fl_y")
        cx = number(d.get("cx", size[0] / 2), src, i, "cx")
        cy = number(d.get("cy", size[1] / 2), src, i, "cy")
        return [fx / size[0], fy / size[1], cx / size[0], cy / size[1]], size, False
    for key, horizontal in (("camera_angle_x", True), ("camera_angle_y", False)):
        if key in d:
            ang = math.degrees(number(d[key], src, i, key))
            check_fov(ang, src, i, key)
            f = focal_from_fov(ang)  # focal / extent along that axis
            if size is not None:
                fpx = f * (size[0] if horizontal else size[1])
                return [fpx / size[0], fpx / size[1], 0.5, 0.5], size, not horizontal
            # No image size: assume square images, so this is also the vertical fov.
            return [f, f, 0.5, 0.5], (ASSUMED_SQUARE, ASSUMED_SQUARE), True
    raise err(src, "no intrinsics: need fl_x/fl_y with w and h, or camera_angle_x", i, "frames")


def transforms_doc(cams: Cameras, fps: float, file_paths: list[str] | None = None) -> dict[str, Any]:
    """A ``transforms.json`` document: OpenGL c2w ``transform_matrix``, pixel intrinsics (top level
    when every frame shares them, else per frame); ``file_paths`` default ``./frame_%05d``."""
    W, H = cams.width, cams.height
    K = cams.intrinsics * torch.tensor([W, H, W, H], dtype=torch.float64)
    mats = from_opencv_c2w(cams.c2w, "opengl", "c2w")

    def intr(k: torch.Tensor) -> dict:
        return {"fl_x": rnd(k[0]), "fl_y": rnd(k[1]), "cx": rnd(k[2]), "cy": rnd(k[3])}

    same = bool((K - K[:1]).abs().max() < 1e-9)
    doc: dict[str, Any] = {"w": W, "h": H, "fps": rnd(fps)}
    if same:
        angle_x = math.radians(fov_from_focal(float(cams.intrinsics[0, 0])))
        doc |= intr(K[0]) | {"camera_angle_x": rnd(angle_x)}
    names = file_paths if file_paths is not None else [f"./frame_{i:05d}" for i in range(len(cams))]
    doc["frames"] = [{"file_path": names[i], "transform_matrix": [flat(r) for r in mats[i]],
                      **({} if same else intr(K[i]))} for i in range(len(cams))]
    return doc


def text(traj: Trajectory) -> str:
    """NeRF ``transforms.json``: OpenGL c2w, pixel intrinsics (per frame when they vary)."""
    return json_text(transforms_doc(traj.cameras, traj.fps), "frames")


FORMAT = Format(NAME, "json", detect, read, text=text)
