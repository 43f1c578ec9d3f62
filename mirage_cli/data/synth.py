"""``mirage data synth``: synthetic annotated clips with exact depth, in the ViPE / reference raw layout.

Each clip is the procedural room of :mod:`.scenes` (texture seed ``seed + i``) ray-cast along one
camera path (:func:`~mirage_cli.eval.sources.synthetic_clip`: a preset, ``out_and_back`` or
``pan_and_back``, cycling through :data:`SYNTH_PATHS`), written exactly as a real annotated clip
(:mod:`.clips`)::

    OUT/synth-0000/
      clip.mp4         H.264, 16 fps by default
      depth.zip        00000.exr ... (channel Z, half float, metric z-depth of the render)
      pose.npz         inds (N,), data (N, 4, 4) camera-to-world, OpenCV axes, float32
      intrinsics.npz   inds (N,), data (N, 4) fx fy cx cy in pixels, float32
      mask.zip         00000.png ... (255 = "dynamic": the room's first sphere, marked as a movable object)
      clip.txt         a caption naming the scene and the camera motion

The mask marks a static object as dynamic on purpose, so every dataset exercises the masked path
(kept out of the memory and of the reference IoU). Depth is exact up to EXR half precision
(relative error <= 2^-11). Clips are written into a temporary folder renamed into place when
complete, so an interrupted ``synth`` leaves whole clips; a rerun skips the clips that exist.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MirageError

SYNTH_PATHS = ("orbit_left", "dolly_in", "pan_and_back", "truck_right", "orbit_right", "out_and_back", "pan_left",
               "dolly_out", "tilt_up", "spiral", "truck_left", "pan_right")
"""Camera paths, one per clip in this order (cycled)."""
MOTION_WORDS = {
    "orbit_left": "orbits to the left around the centre of the room",
    "orbit_right": "orbits to the right around the centre of the room",
    "dolly_in": "moves forward into the room",
    "dolly_out": "moves backward away from the far wall",
    "pan_left": "pans to the left",
    "pan_right": "pans to the right",
    "pan_and_back": "pans to the right and back again",
    "out_and_back": "orbits to the left and returns to where it started",
    "truck_left": "tracks sideways to the left",
    "truck_right": "tracks sideways to the right",
    "tilt_up": "tilts up towards the ceiling",
    "spiral": "moves forward along a gentle spiral",
}
DEFAULT_SIZE = (256, 160)
DEFAULT_FRAMES = 81
DEFAULT_FPS = 16.0


@dataclass(frozen=True)
class SynthClip:
    """One written clip: its folder, camera path and whether this call wrote it (False: it existed)."""

    folder: str
    path: str
    written: bool


def synth(out: Path | str, clips: int, frames: int = DEFAULT_FRAMES, size: tuple[int, int] = DEFAULT_SIZE,
          fps: float = DEFAULT_FPS, seed: int = 0, on_clip: Callable[[SynthClip], None] | None = None) -> list[SynthClip]:
    """Write ``clips`` synthetic clips into ``out`` (see the module docstring).

    Args:
        frames: frames per clip (81 = the reference's clip at 16 fps). size: ``(W, H)`` pixels.
        fps: frame rate written into the MP4. seed: texture seed of clip 0 (clip i uses ``seed + i``).
        on_clip: called after each clip (a progress bar).

    Raises:
        MirageError: a count or size out of range.
    """
    if clips < 1:
        raise MirageError(f"--clips: must be >= 1 (got {clips})")
    if frames < 3:
        raise MirageError(f"--frames: must be >= 3 (got {frames})")
    W, H = size
    if W < 16 or H < 16 or W % 2 or H % 2:
        raise MirageError(f"--size: {W}x{H}: sides must be even and >= 16 pixels (H.264)")
    if not fps > 0:
        raise MirageError(f"--fps: must be > 0 (got {fps})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for i in range(clips):
        path = SYNTH_PATHS[(seed + i) % len(SYNTH_PATHS)]
        folder = out / f"synth-{i:04d}"
        if not folder.is_dir():
            write_synth_clip(folder, path, frames, size, fps, seed + i)
            rec = SynthClip(str(folder), path, True)
        else:
            rec = SynthClip(str(folder), path, False)
        done.append(rec)
        if on_clip is not None:
            on_clip(rec)
    return done


def write_synth_clip(folder: Path, path: str, frames: int, size: tuple[int, int], fps: float, seed: int) -> None:
    """Render one clip along ``path`` and write its folder (atomically: a temporary folder renamed)."""
    import torch

    from ..eval.sources import synthetic_clip
    from ..geometry.cameras import backproject
    from ..io import write_video
    from .scenes import make_scene

    clip = synthetic_clip("room", path, frames, size, seed=seed)
    depths = clip.depths
    assert depths is not None  # an exact render has every frame's depth
    cams = clip.cameras
    W, H = size
    K = cams.K()  # (N, 3, 3) pixels
    sphere = make_scene("room", seed).spheres[0]
    centre = torch.tensor(sphere.center, dtype=torch.float64)
    dynamic = []
    for n in range(len(cams)):
        pts = backproject(depths[n].double(), cams.c2w[n], K[n]).reshape(H, W, 3)
        dynamic.append(((pts - centre).norm(dim=-1) < sphere.radius * 1.02) & (depths[n] > 0))
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_video(tmp / "clip.mp4", clip.frames, fps)
        _write_zip(tmp / "depth.zip", {f"{n:05d}.exr": exr_bytes(depths[n].numpy()) for n in range(len(cams))})
        _write_zip(tmp / "mask.zip", {f"{n:05d}.png": _png_bytes(dynamic[n].numpy()) for n in range(len(cams))})
        inds = np.arange(len(cams), dtype=np.int64)
        with open(tmp / "pose.npz", "wb") as f:
            np.savez(f, inds=inds, data=cams.c2w.numpy().astype(np.float32))
        fxfycxcy = torch.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], dim=1)
        with open(tmp / "intrinsics.npz", "wb") as f:
            np.savez(f, inds=inds, data=fxfycxcy.numpy().astype(np.float32))
        (tmp / "clip.txt").write_text(synth_caption(path, seed) + "\n", encoding="utf-8")
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def synth_caption(path: str, seed: int) -> str:
    """The caption of a synthetic clip: the scene, then the camera motion (as the reference's prompt asks)."""
    return (f"A closed indoor room with a wooden plank floor, tiled side walls, a checkered ceiling, coloured "
            f"crates and striped spheres, variant {seed}. The camera {MOTION_WORDS.get(path, 'moves')}.")


def exr_bytes(depth: np.ndarray) -> bytes:
    """One ``(H, W)`` depth map as an OpenEXR file (channel ``Z``, half float, ZIP compression), as ViPE writes."""
    import OpenEXR

    buf = io.BytesIO()
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Z": np.ascontiguousarray(depth.astype(np.float16))}) as f:
        f.write(buf)
    return buf.getvalue()


def _png_bytes(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
