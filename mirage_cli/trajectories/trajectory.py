"""The :class:`Trajectory` container, resampling, the ``traj convert`` adjustments and the summary
``mirage traj show`` prints.

Everything follows the project conventions (stated in :mod:`mirage_cli.geometry.cameras`): **OpenCV**
camera axes (x right, y down, z forward), poses stored **camera-to-world**, intrinsics
**normalized** ``[fx/W, fy/H, cx/W, cy/H]``. Files are read and written by
:mod:`mirage_cli.trajectories.formats`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import MirageError, allocation_failure
from ..geometry.cameras import Cameras
from ..geometry.intrinsics import aspect_differs, fit_cameras
from ..geometry.rotations import quaternion_to_rotation, rotation_angle_deg, rotation_to_quaternion, slerp

DEFAULT_FPS = 16.0
"""Frame rate given to files that do not state one."""

DEFAULT_WIDTH, DEFAULT_HEIGHT = 832, 480
"""Render size written for files that do not state one (Wan 480p)."""


@dataclass
class Trajectory:
    """N cameras along a path, as read from a file or made by a preset.

    Attributes:
        cameras: OpenCV camera-to-world poses ``c2w (N, 4, 4)`` exactly as read (**not** yet
            re-expressed relative to frame 0) and normalized intrinsics ``(N, 4)``.
        fps: frames per second.
        format: the name of the file format it was read from (a key of the format registry,
            :data:`mirage_cli.trajectories.formats.FORMATS`) or ``"preset"``.
        scale: ``"absolute"`` (file units) or ``"relative"`` (translations in units of the
            scene's reference depth, i.e. the input image's median depth).
        source: the path read, or the preset name.
        fov_only: True when the intrinsics came only from a vertical field of view, so that they
            adapt to any aspect ratio (square pixels, centred principal point).
        meta: free-form extras (e.g. ``{"preset": {"name": ..., "params": {...}}}``).
        notes: one-line remarks from reading the file that the user should see (frames
            reordered, fps derived differently from the file's own ``fps``, ...).
    """

    cameras: Cameras
    fps: float
    format: str
    scale: str = "absolute"
    source: str = ""
    fov_only: bool = False
    meta: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.cameras)

    def cameras_for(self, width: int, height: int, intrinsics: str = "crop") -> Cameras:
        """The cameras a ``width x height`` video is rendered with.

        Poses are re-expressed relative to frame 0 (frame 0 becomes the identity, the input
        image's camera). With ``fov_only`` the vertical field of view is kept (square pixels,
        centred principal point) whatever ``intrinsics`` says; otherwise the file's intrinsics are
        fitted to the image with :func:`mirage_cli.geometry.intrinsics.fit_intrinsics` in mode
        ``intrinsics`` (``crop``: resize to cover + centre-crop; ``stretch``: per axis; ``fov``).

        Returns:
            ``Cameras`` with ``c2w (N, 4, 4)`` and ``intrinsics (N, 4)`` for that image size.
        """
        rel = self.cameras.relative_to_first()
        if self.fov_only:
            return Cameras.from_fov(rel.c2w, self.cameras.fov_y_deg, width, height)
        return fit_cameras(rel, width, height, intrinsics)

    def aspect_warning(self, width: int, height: int, intrinsics: str = "crop") -> str | None:
        """A one-line warning when the file's image aspect differs from ``width x height`` by over 1 %.

        None for ``fov_only`` trajectories (a vertical fov fits any aspect by definition).
        """
        size = (self.cameras.width, self.cameras.height)
        if self.fov_only or not aspect_differs(size, (width, height)):
            return None
        how = {"crop": "resized to cover and centre-cropped (square pixels kept)",
               "stretch": "stretched per axis (pixels are no longer square)",
               "fov": "given the file's vertical field of view, square pixels and a centred principal point"}[intrinsics]
        return (f"{self.source}: the trajectory's cameras are {size[0]}x{size[1]} ({size[0] / size[1]:.3f}:1) but the "
                f"image is {width}x{height} ({width / height:.3f}:1); intrinsics {how} (--intrinsics {intrinsics})")


def resample(traj: Trajectory, n: int, fps: float | None = None) -> Trajectory:
    """The same path with ``n`` frames, evenly spaced in the original frame index.

    Rotations are slerped (shortest arc) between neighbouring frames; translations and
    intrinsics are interpolated linearly. The first and last cameras are kept.

    Args:
        n: number of frames wanted (>= 1).
        fps: frame rate of the result [default: unchanged, so the duration changes with ``n``].
    """
    if n < 1:
        raise MirageError(f"{traj.source}: cannot resample to {n} frames (need at least 1)")
    if fps is not None and not fps > 0:
        raise MirageError(f"{traj.source}: fps must be positive (got {fps})")
    try:
        return _resample(traj, n, fps)
    except (MemoryError, RuntimeError) as e:  # a --frames far beyond the RAM: name it, not the frame size
        if not allocation_failure(e):
            raise
    # raised here, not in the handler: the failed allocation's frames (and their tensors) are gone by now
    raise MirageError(f"--frames {n:,}: out of memory while resampling {traj.source} to that many frames; lower --frames")


def _resample(traj: Trajectory, n: int, fps: float | None) -> Trajectory:
    cams, N = traj.cameras, len(traj.cameras)
    if N == 1:
        idx = torch.zeros(n, dtype=torch.long)
        new = Cameras(cams.c2w[idx], cams.intrinsics[idx], cams.width, cams.height)
    else:
        s = torch.linspace(0, N - 1, n, dtype=torch.float64)
        i0 = s.floor().long().clamp(max=N - 2)
        f = s - i0
        q = rotation_to_quaternion(cams.c2w[:, :3, :3])
        c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
        c2w[:, :3, :3] = quaternion_to_rotation(slerp(q[i0], q[i0 + 1], f))
        t = cams.c2w[:, :3, 3]
        c2w[:, :3, 3] = t[i0] + f[:, None] * (t[i0 + 1] - t[i0])
        k = cams.intrinsics
        new = Cameras(c2w, k[i0] + f[:, None] * (k[i0 + 1] - k[i0]), cams.width, cams.height)
    return dataclasses.replace(traj, cameras=new, fps=traj.fps if fps is None else float(fps))


def adjust(traj: Trajectory, frames: int | None = None, fps: float | None = None,
           scale: str | None = None, relative: bool = False, depth_scale: float | None = None) -> Trajectory:
    """``traj`` with the ``mirage traj convert`` options applied (each None/False = unchanged).

    Args:
        frames: resample to this many frames (see :func:`resample`).
        fps: new frame rate.
        scale: declare the translations ``"absolute"`` or ``"relative"``.
        relative: re-express the poses relative to frame 0.
        depth_scale: resolve a relative trajectory into scene units: translations times this
            reference depth, then ``scale = "absolute"``.
    """
    if depth_scale is not None:
        if not (math.isfinite(depth_scale) and depth_scale > 0):
            raise MirageError(f"--depth-scale must be positive (got {depth_scale:g})")
        if traj.scale != "relative":
            raise MirageError(f"--depth-scale: {traj.source or 'the trajectory'} is already in absolute units "
                              "(it only resolves a relative one)")
        traj = dataclasses.replace(traj, cameras=traj.cameras.scaled(depth_scale), scale="absolute")
    if frames is not None:
        traj = resample(traj, frames)
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise MirageError(f"--fps must be positive (got {fps:g})")
        traj = dataclasses.replace(traj, fps=float(fps))
    if scale is not None:
        if scale not in ("absolute", "relative"):
            raise MirageError(f"--scale must be 'absolute' or 'relative' (got {scale!r})")
        traj = dataclasses.replace(traj, scale=scale)
    if relative:
        traj = dataclasses.replace(traj, cameras=traj.cameras.relative_to_first())
    return traj


def summarize(traj: Trajectory, width: int | None = None, height: int | None = None,
              intrinsics: str = "crop") -> dict[str, Any]:
    """Numbers ``mirage traj show`` prints: counts, fov range, path length, largest rotations.

    With ``width`` and ``height`` it also gives the effective pixel intrinsics of frame 0 (and their
    range over the frames) for an image of that size, fitted in mode ``intrinsics``, and the
    aspect-ratio warning that ``mirage generate`` would print.
    """
    rel = traj.cameras.relative_to_first()
    centers = rel.centers
    steps = (centers[1:] - centers[:-1]).norm(dim=-1)
    R = rel.c2w[:, :3, :3]
    from_first = rotation_angle_deg(R)
    step_rot = rotation_angle_deg(R[:-1].transpose(-1, -2) @ R[1:]) if len(traj) > 1 else torch.zeros(1)
    fov = traj.cameras.fov_y_deg
    k = int(from_first.argmax())
    out = {
        "source": traj.source, "format": traj.format, "frames": len(traj), "fps": traj.fps,
        "seconds": len(traj) / traj.fps, "scale": traj.scale, "fov_only": traj.fov_only,
        "render_size": [traj.cameras.width, traj.cameras.height],
        "fov_y_deg": [float(fov.min()), float(fov.max())],
        "path_length": float(steps.sum()) if len(steps) else 0.0,
        "max_distance_from_start": float(centers.norm(dim=-1).max()),
        "largest_rotation_deg": float(from_first[k]), "largest_rotation_frame": k,
        "largest_step_rotation_deg": float(step_rot.max()),
        "notes": list(traj.notes),
        **({"preset": traj.meta["preset"]} if "preset" in traj.meta else {}),
    }
    if width is not None or height is not None:
        out["effective"] = effective_intrinsics(traj, width, height, intrinsics)
    return out


def effective_intrinsics(traj: Trajectory, width: int | None, height: int | None, intrinsics: str = "crop") -> dict:
    """Pixel intrinsics the cameras get on a ``width x height`` image (frame 0, and min/max over frames)."""
    if not (width and height and width > 0 and height > 0):
        raise MirageError(f"--width and --height must both be positive (got {width} x {height})")
    cams = traj.cameras_for(width, height, intrinsics)
    K = cams.K()
    px = torch.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], dim=-1)  # (N, 4) pixels
    return {
        "size": [width, height], "mode": intrinsics,
        "fx_px": float(px[0, 0]), "fy_px": float(px[0, 1]), "cx_px": float(px[0, 2]), "cy_px": float(px[0, 3]),
        "min_px": [float(v) for v in px.min(0).values], "max_px": [float(v) for v in px.max(0).values],
        "warning": traj.aspect_warning(width, height, intrinsics),
    }
