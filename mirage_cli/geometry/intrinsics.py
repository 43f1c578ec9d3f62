"""How a trajectory file's intrinsics meet the input image, and what normalized intrinsics can be.

A trajectory file describes cameras whose images were ``W0 x H0`` pixels; the video is rendered at
the input image's ``W x H``. When the two aspect ratios differ, normalized intrinsics
``[fx/W, fy/H, cx/W, cy/H]`` applied per axis would stretch the scene (a 16:9 file on a portrait
photo: fx = 228 px but fy = 702 px). :func:`fit_intrinsics` is the one place that decides how they
meet, with one of :data:`INTRINSICS_MODES`:

``crop`` (default; the CameraCtrl / CamI2V convention)
    The image is taken as the file's camera image **resized to cover** ``W x H`` (scale
    ``s = max(W / W0, H / H0)``) and **centre-cropped**. Pixel focal lengths scale by ``s`` (so
    square pixels in the file stay square) and the principal point moves with the crop:
    ``fx = s fx0``, ``fy = s fy0``, ``cx = s cx0 - (s W0 - W) / 2``, ``cy = s cy0 - (s H0 - H) / 2``.
    Worked example: a 640x360 file with fx0 = fy0 = 320 px on a 480x832 portrait image:
    ``s = max(480/640, 832/360) = 2.311``, so fx = fy = 739.6 px and the principal point stays
    at the image centre (240, 416).
``stretch``
    The normalized intrinsics are applied as they are (each axis scaled on its own): what mirage
    did before; pixels are anisotropic when the aspects differ.
``fov``
    The file's **vertical** field of view is kept, with square pixels and a centred principal point.

All functions work on normalized intrinsics, ``(N, 4)`` float64 tensors.
"""

from __future__ import annotations

import torch

from ..errors import MirageError
from .cameras import Cameras
from .modes import INTRINSICS_MODES  # torch-free, read by the option checks

ASPECT_TOLERANCE = 0.01
"""Aspect ratios that differ by more than 1 % get a warning (the intrinsics mode then matters)."""

MAX_NORMALIZED_FOCAL = 20.0
"""A normalized focal length above this (field of view under 2.9 degrees) is taken for pixels."""

PRINCIPAL_POINT_RANGE = (-1.0, 2.0)
"""A normalized principal point outside this range (far outside the image) is taken for pixels."""


def fit_intrinsics(intrinsics: torch.Tensor, src_size: tuple[int, int], dst_size: tuple[int, int],
                   mode: str = "crop") -> torch.Tensor:
    """Normalized intrinsics of a ``src_size`` camera re-derived for a ``dst_size`` image.

    Args:
        intrinsics: ``(N, 4)`` normalized ``[fx/W0, fy/H0, cx/W0, cy/H0]`` of the file's cameras.
        src_size: ``(W0, H0)`` pixels the file's intrinsics refer to.
        dst_size: ``(W, H)`` pixels of the image the video is rendered at.
        mode: one of :data:`INTRINSICS_MODES` (see the module docstring).
    Returns:
        ``(N, 4)`` normalized ``[fx/W, fy/H, cx/W, cy/H]`` for the ``dst_size`` image.
    """
    if mode not in INTRINSICS_MODES:
        raise MirageError(f"--intrinsics must be {', '.join(INTRINSICS_MODES)} (got {mode!r})")
    k = torch.as_tensor(intrinsics, dtype=torch.float64)
    (W0, H0), (W, H) = src_size, dst_size
    if mode == "stretch":
        return k.clone()
    if mode == "fov":
        fy = k[:, 1]
        half = torch.full_like(fy, 0.5)
        return torch.stack([fy * H / W, fy, half, half], dim=-1)  # fx_px = fy_px = fy * H
    s = max(W / W0, H / H0)  # resize to cover, then centre-crop
    px = k * torch.tensor([W0, H0, W0, H0], dtype=torch.float64) * s
    px[:, 2] -= (s * W0 - W) / 2
    px[:, 3] -= (s * H0 - H) / 2
    return px / torch.tensor([W, H, W, H], dtype=torch.float64)


def fit_cameras(cams: Cameras, width: int, height: int, mode: str = "crop") -> Cameras:
    """``cams`` (whose intrinsics refer to ``cams.width x cams.height``) rendering ``width x height``."""
    k = fit_intrinsics(cams.intrinsics, (cams.width, cams.height), (width, height), mode)
    return Cameras(cams.c2w, k, width, height)


def aspect_differs(src_size: tuple[int, int], dst_size: tuple[int, int]) -> bool:
    """True when the two ``(W, H)`` aspect ratios differ by more than :data:`ASPECT_TOLERANCE`."""
    a0, a = src_size[0] / src_size[1], dst_size[0] / dst_size[1]
    return abs(a / a0 - 1) > ASPECT_TOLERANCE


def implausible_intrinsics(k: list[float] | torch.Tensor) -> str | None:
    """Why ``[fx, fy, cx, cy]`` cannot be normalized intrinsics, or None when they can.

    Normalized intrinsics have a principal point near ``[0, 1]`` and focal lengths of at most a few
    image widths; values like ``500 500 320 240`` are pixels typed where fractions belong (which
    would give a 0.06 degree field of view and black frames).
    """
    fx, fy, cx, cy = (float(v) for v in k)
    lo, hi = PRINCIPAL_POINT_RANGE
    reasons = []
    if not (lo <= cx <= hi and lo <= cy <= hi):
        reasons.append("principal point far outside [0, 1]")
    if max(fx, fy) > MAX_NORMALIZED_FOCAL:
        reasons.append(f"focal length over {MAX_NORMALIZED_FOCAL:g} image widths")
    if not reasons:
        return None
    return (f"{fx:g} {fy:g} {cx:g} {cy:g} cannot be normalized intrinsics ({'; '.join(reasons)}); "
            "they look like pixels; divide fx, cx by the image width and fy, cy by the image height")
