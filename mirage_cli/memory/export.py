"""What a saved memory can be turned into without a model: a coloured PLY point cloud and
memory-only renders (a flythrough video where each latent cell shows its z-buffer winner's colour).

Colours are exact for the pixel codec (the features are the colours) and a pseudo-colour of the
features otherwise (:func:`mirage_cli.models.codecs.features_to_rgb`, no decoder needed).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import MirageError
from ..geometry.cameras import Cameras, validate_cameras
from ..io import atomic_path, write_video
from ..models.codecs import features_to_rgb
from .latent import LatentMemory
from .storage import INPUT_CHUNK

DEFAULT_SIZE = (832, 480)  # (width, height) of a render when neither the caller nor the cache says


def point_colors(memory: LatentMemory, codec: str | None = None) -> torch.Tensor:
    """``(N, 3)`` float colours in [0, 1] (on the CPU) of the memory's points.

    Exact for the pixel codec (the features are the colours); for other codecs the
    :func:`mirage_cli.models.codecs.features_to_rgb` map (a pseudo-colour without the decoder).
    """
    name = codec or memory.codec
    if name.startswith("pixel"):
        return memory.features.float()[:, :3].clamp(0, 1).cpu()
    return features_to_rgb(memory.features.float().cpu(), name).float().clamp(0, 1)


def export_ply(memory: LatentMemory, path: str | os.PathLike, convention: str = "opencv") -> int:
    """Write the memory's points as a binary little-endian PLY (float xyz + uchar rgb), atomically.

    ``convention="opencv"`` keeps the memory's world axes (x right, y down, z forward);
    ``"opengl"`` flips y and z (y up), which most viewers expect. Returns the number of points.
    """
    if convention not in ("opencv", "opengl"):
        raise MirageError(f"unknown convention {convention!r} (choose opencv or opengl)")
    xyz = memory.points.detach().float().cpu().numpy().astype("<f4")
    if convention == "opengl":
        xyz = xyz * np.array([1, -1, -1], dtype="<f4")
    rgb = (point_colors(memory).numpy() * 255 + 0.5).astype(np.uint8)
    write_ply(path, xyz, rgb, f"mirage latent memory: codec {memory.codec}, {memory.channels} channels, "
                              f"spatial factor {memory.spatial_factor}, axes {convention}")
    return len(memory)


def write_ply(path: str | os.PathLike, xyz, rgb, comment: str = "") -> None:
    """A binary little-endian PLY of points ``xyz (P, 3)`` (written as float32) with ``rgb (P, 3)``
    uint8 colours, atomically (the layout Open3D, nerfstudio and most viewers read)."""
    n = len(xyz)
    rec = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    xyz = np.asarray(xyz, dtype="<f4")
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    rec["red"], rec["green"], rec["blue"] = (np.asarray(rgb, dtype=np.uint8)[:, k] for k in range(3))
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        + (f"comment {comment}\n" if comment else "")
        + f"element vertex {n}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    ).encode("ascii")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(rec.tobytes())


def reference_depth_of(memory: LatentMemory) -> tuple[float, str]:
    """The scene's reference depth for ``"relative"`` trajectories, and where it came from.

    ``extras["reference_depth"]`` when the cache has it, else the median z of the input image's
    points (chunk 0), which live in frame 0's camera coordinates, else of all points.
    """
    ref = memory.extras.get("reference_depth")
    if isinstance(ref, (int, float)) and ref > 0:
        return float(ref), "cache metadata"
    if len(memory) == 0:
        raise MirageError("the cache is empty and has no reference_depth; pass --scale")
    z = memory.points[:, 2]
    first = memory.chunk == INPUT_CHUNK
    zz = z[first & (z > 0)] if bool((first & (z > 0)).any()) else z[z > 0]
    if zz.numel() == 0:
        raise MirageError("the cache has no reference_depth and no point in front of frame 0; pass --scale")
    return float(zz.median()), "median depth of the input image's points"


@torch.no_grad()
def render_memory(memory: LatentMemory, cameras: Cameras, holes=(1.0, 0.0, 1.0),
                  batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory-only views: each latent cell shows its z-buffer winner's colour (nearest upsampled).

    Returns frames ``(T, 3, h*f, w*f)`` float in [0, 1] (holes in the ``holes`` RGB colour, in
    [0, 1]) and the known-mask ``(T, h, w)``, both on the CPU.
    """
    colors = point_colors(memory).to(memory.device)
    f = memory.spatial_factor
    frames, knowns = [], []
    hole = torch.tensor(holes, dtype=torch.float32, device=memory.device)
    for s in range(0, len(cameras), batch):
        idx, _ = memory.read_index(cameras[s : s + batch])
        known = idx >= 0
        if len(memory):
            img = colors[idx.clamp(min=0)]  # (b, h, w, 3)
        else:
            img = torch.zeros(*idx.shape, 3, device=memory.device)
        img = torch.where(known[..., None], img, hole).permute(0, 3, 1, 2)
        if f > 1:
            img = img.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
        frames.append(img.cpu())
        knowns.append(known.cpu())
    return torch.cat(frames), torch.cat(knowns)


@dataclass
class Flythrough:
    """What :func:`render_flythrough` wrote: frame count, size, rate, translation scale and its source,
    and the fraction of latent cells the memory covered."""

    frames: int
    width: int
    height: int
    fps: float
    scale: float
    scale_from: str
    known: float


MIN_RENDER_SIZE = 16  # px: below this a flythrough shows nothing (and players refuse such videos)


def flythrough_size(memory: LatentMemory, width: int | None, height: int | None) -> tuple[int, int]:
    """``(W, H)`` of a flythrough: ``--width/--height``, one alone with the other following the
    aspect ratio of the cache's ``width``/``height`` extras (else 832x480), as ``mirage generate``
    does. Each side must be at least 16 px and one latent cell."""
    W0 = int(memory.extras.get("width") or DEFAULT_SIZE[0])
    H0 = int(memory.extras.get("height") or DEFAULT_SIZE[1])
    if width and not height:
        height = max(1, round(H0 * width / W0))
    elif height and not width:
        width = max(1, round(W0 * height / H0))
    W, H = width or W0, height or H0
    least = max(MIN_RENDER_SIZE, memory.spatial_factor)
    if W < least or H < least:
        raise MirageError(f"--width/--height {W}x{H}: each side must be at least {least} px")
    return W, H


def _flythrough_cameras(memory: LatentMemory, trajectory, source: str, width: int | None, height: int | None,
                        scale: float | None) -> tuple[Cameras, float, str]:
    """The trajectory's cameras at the render size, translations scaled (``--scale``, else the reference
    depth for ``"relative"`` trajectories, else 1)."""
    W, H = flythrough_size(memory, width, height)
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise MirageError(f"--scale: must be a positive number (got {scale:g}); a negative scale mirrors the path")
    cams = trajectory.cameras_for(W, H)
    validate_cameras(cams, source)
    if scale is not None:
        factor, why = scale, "--scale"
    elif trajectory.scale == "relative":
        factor, why = reference_depth_of(memory)
    else:
        factor, why = 1.0, "absolute trajectory"
    return cams.scaled(factor), factor, why


def render_flythrough(memory: LatentMemory, trajectory, output: str | os.PathLike, *, source: str = "trajectory",
                      width: int | None = None, height: int | None = None, fps: float | None = None,
                      scale: float | None = None, holes=(1.0, 0.0, 1.0), comment: str | None = None) -> Flythrough:
    """Fly through the memory alone (no model) along ``trajectory`` and write the video ``output``.

    Args:
        trajectory: a :class:`~mirage_cli.trajectories.trajectory.Trajectory` (frame 0 = the input
            image's camera); ``source`` names it in error messages.
        width, height: video size [default: the cache's ``width``/``height`` extras, else 832x480].
        fps: frame rate [default: the trajectory's]. scale: translation scale [default: the
            reference depth for ``"relative"`` trajectories, 1 otherwise].
        holes: RGB in [0, 1] of cells the memory does not cover. comment: the video's comment tag.
    """
    cams, factor, why = _flythrough_cameras(memory, trajectory, source, width, height, scale)
    frames, known = render_memory(memory, cams, holes)
    rate = fps or trajectory.fps
    write_video(output, frames, rate, comment=comment)
    return Flythrough(len(cams), frames.shape[-1], frames.shape[-2], rate, factor, why, float(known.float().mean()))
