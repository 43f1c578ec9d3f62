"""Native mirage JSON: nerfstudio's ``camera_path.json`` plus ``convention``, ``pose``, ``scale``
and per-camera normalized ``intrinsics``.

A ``camera_path`` document is native when it has ``convention`` or ``pose`` or
``"format": "mirage.trajectory"``; otherwise it is plain nerfstudio (:mod:`.nerfstudio`), read by
the same :func:`read` with nerfstudio's defaults (OpenGL c2w).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ...errors import MirageError
from ...geometry.cameras import Cameras, focal_from_fov, fov_from_focal
from ..trajectory import DEFAULT_HEIGHT, DEFAULT_WIDTH, Trajectory
from .common import (
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
    number,
    numbers,
    rnd,
    size_from,
    to_opencv_c2w,
)

NAME = "native"
NATIVE_VERSION = 1

FOV_AGREEMENT_DEG = 0.01
"""A camera's ``fov`` and ``intrinsics`` (fy/H) must give the same vertical fov within this."""


def is_native(data: dict) -> bool:
    """True for a ``camera_path`` document with mirage's extras."""
    return "convention" in data or "pose" in data or data.get("format") == "mirage.trajectory"


def detect(data: Any) -> bool:
    return isinstance(data, dict) and "camera_path" in data and is_native(data)


# ===================================================================================== reading
def _scale_from(data: dict, src: str, strict: bool) -> str:
    """``"absolute"``/``"relative"`` from a ``scale`` field (absent or numeric = absolute)."""
    scale = data.get("scale", "absolute")
    if scale in ("absolute", "relative"):
        return scale
    if strict:
        raise MirageError(f"{src}: scale: expected 'absolute' or 'relative', got {json.dumps(scale)}")
    return "absolute"  # e.g. a numeric "scale" of another tool, which means something else


def _choice(data: dict, key: str, options: tuple[str, ...], default: str, src: str) -> str:
    value = data.get(key, default)
    if value not in options:
        raise MirageError(f"{src}: {key}: expected {' or '.join(repr(o) for o in options)}, got {json.dumps(value)}")
    return value


def read(data: dict, path: Path) -> Trajectory:
    """native mirage JSON and nerfstudio ``camera_path.json`` (a native file without the extras)."""
    src, native = str(path), is_native(data)
    convention = _choice(data, "convention", ("opencv", "opengl"), "opengl", src)
    pose = _choice(data, "pose", ("c2w", "w2c"), "c2w", src)
    if data.get("camera_type", "perspective") != "perspective":
        raise MirageError(f"{src}: camera_type: only 'perspective' cameras are supported, got {json.dumps(data['camera_type'])}")
    cams = list_field(data, "camera_path", src)
    size = size_from(data, src, "render_width", "render_height") or (DEFAULT_WIDTH, DEFAULT_HEIGHT)
    c2ws, intr, fov_only = [], [], True
    for i, cam in enumerate(cams):
        if not isinstance(cam, dict) or "camera_to_world" not in cam:
            raise err(src, "missing camera_to_world", i, "camera_path")
        M = matrix(numbers(cam["camera_to_world"], (16, 12), src, i, "camera_to_world"))
        c2ws.append(to_opencv_c2w(M, convention, pose, src, i, "camera_to_world"))
        k, from_fov = _camera_path_intrinsics(cam, size, src, i)
        intr.append(k)
        fov_only = fov_only and from_fov
    fmt = NAME if native else "nerfstudio"
    meta = {"preset": data["preset"]} if isinstance(data.get("preset"), dict) else {}
    # nerfstudio's renderer plays the cameras over `seconds` whatever `fps` says; native files stay strict
    fps, note = fps_from(data, len(cams), src, lenient=not native)
    return Trajectory(Cameras(torch.stack(c2ws), torch.tensor(intr, dtype=torch.float64), *size),
                      fps, fmt, _scale_from(data, src, native), src, fov_only, meta, notes=(note,) if note else ())


def _camera_path_intrinsics(cam: dict, size: tuple[int, int], src: str, i: int) -> tuple[list[float], bool]:
    """Normalized intrinsics of one ``camera_path`` entry and whether they came from ``fov`` only."""
    fov = None
    if "fov" in cam:
        fov = number(cam["fov"], src, i, "fov")
        check_fov(fov, src, i)
    if "intrinsics" in cam:
        k = numbers(cam["intrinsics"], 4, src, i, "intrinsics")
        check_focal(k[0], k[1], src, i, "intrinsics")
        if fov is not None and abs(fov_from_focal(k[1]) - fov) > FOV_AGREEMENT_DEG:
            raise err(src, f"fov {fov:g} disagrees with intrinsics (fy/H = {k[1]:g} means "
                      f"{fov_from_focal(k[1]):.4f} degrees); give one or make them agree", i, "fov")
        return k, False
    if fov is None:
        raise err(src, "needs 'fov' (vertical degrees) or 'intrinsics' (normalized fx/W, fy/H, cx/W, cy/H)", i, "camera_path")
    fy = focal_from_fov(fov)
    return [fy * size[1] / size[0], fy, 0.5, 0.5], True


# ===================================================================================== writing
def native_dict(traj: Trajectory, convention: str = "opencv", pose: str = "c2w") -> dict:
    """The native JSON document of a trajectory (a superset of nerfstudio's ``camera_path.json``).

    Per camera: ``camera_to_world`` (16 numbers, row-major, in ``convention``/``pose``), ``fov``
    (vertical degrees) and, unless ``fov_only``, normalized ``intrinsics``.
    """
    if convention not in ("opencv", "opengl") or pose not in ("c2w", "w2c"):
        raise MirageError(f"native writer: convention must be opencv|opengl and pose c2w|w2c (got {convention}, {pose})")
    cams = traj.cameras
    mats = from_opencv_c2w(cams.c2w, convention, pose)
    path = []
    for i in range(len(cams)):
        entry: dict[str, Any] = {"camera_to_world": flat(mats[i]), "fov": rnd(cams.fov_y_deg[i])}
        if not traj.fov_only:
            entry["intrinsics"] = [rnd(v) for v in cams.intrinsics[i].tolist()]
        path.append(entry)
    doc: dict[str, Any] = {
        "format": "mirage.trajectory", "version": NATIVE_VERSION, "convention": convention, "pose": pose,
        "scale": traj.scale, "fps": rnd(traj.fps), "seconds": rnd(len(cams) / traj.fps),
        "render_width": cams.width, "render_height": cams.height, "camera_type": "perspective",
    }
    if "preset" in traj.meta:
        doc["preset"] = traj.meta["preset"]
    doc["camera_path"] = path
    return doc


def text(traj: Trajectory, convention: str = "opencv", pose: str = "c2w") -> str:
    """The native JSON file content (see :func:`native_dict`)."""
    return json_text(native_dict(traj, convention, pose), "camera_path")


FORMAT = Format(NAME, "json", detect, read, text=text, options=("convention", "pose"), keeps_scale=True)
