"""The reference pipeline's ``geometry.npz`` (its inference input), read-only.

=================  =================================  ==========================================
key                shape, dtype                       meaning
=================  =================================  ==========================================
``depths``         ``(N, H, W)`` float, required      metric z-depth of every frame
``poses_c2w``      ``(N, 4, 4)`` float, required      camera-to-world, OpenCV axes
``intrinsics``     ``(N, 3, 3)`` float, required      pixels, at the ``H x W`` of ``depths``
``frames``         ``(N or 1, H, W, 3)`` uint8        optional RGB; else ``clip.mp4`` /
                                                      ``first_frame.png`` beside the file
``masks``          ``(N, H, W)`` bool                 optional, True = valid depth
``fps``            scalar                             optional
=================  =================================  ==========================================

As a trajectory it gives ``poses_c2w`` and ``intrinsics`` (normalized by ``W``/``H``), scale
``absolute``. Detected by content: a zip archive (``PK`` magic) holding ``poses_c2w.npy`` and
``intrinsics.npy``. Loaded with ``allow_pickle=False``: an object array (pickle) is refused with
one line, as are a missing key, a wrong shape or a length mismatch. ``mirage generate`` also takes
frame 0 and ``depths[0]`` from it (:func:`read_geometry`, :func:`geometry_frame`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import MirageError
from ...geometry.cameras import Cameras
from ...io import load_image
from ..trajectory import DEFAULT_FPS, Trajectory
from .arrays import is_zip, load_npz, npz_keys
from .common import Format

NAME = "geometry-npz"
REQUIRED = ("depths", "poses_c2w", "intrinsics")


def is_npz(path: Path) -> bool:
    """A zip archive (``np.savez`` output) holding ``depths`` or ``poses_c2w``. One that lacks the
    other keys is still taken as a geometry.npz, so that :func:`read_geometry` names the missing key
    instead of the file falling through to the text formats ("not a UTF-8 text file"). Lyra 2's
    ``trajectory.npz`` (``w2c``, ``intrinsics``) and ViPE's ``data``/``inds`` archives are theirs."""
    if not is_zip(path):
        return False
    keys = npz_keys(path)
    return bool(keys & {"depths", "poses_c2w"}) and "w2c" not in keys


def read_geometry(path: str | Path) -> dict[str, np.ndarray]:
    """The validated arrays of a geometry.npz (every key present, nothing pickled).

    Raises:
        MirageError: one line naming the file and the key: missing, pickled, wrong shape/dtype,
        non-finite, or frame counts that disagree.
    """
    src = str(path)
    out = load_npz(Path(path))
    for key in REQUIRED:
        if key not in out:
            raise MirageError(f"{src}: {key}: missing (a geometry.npz needs {', '.join(REQUIRED)})")
    d, P, K = out["depths"], out["poses_c2w"], out["intrinsics"]
    if d.ndim != 3:
        raise MirageError(f"{src}: depths: expected (N, H, W), got shape {d.shape}")
    N, H, W = d.shape
    for key, a, shape in (("poses_c2w", P, (N, 4, 4)), ("intrinsics", K, (N, 3, 3))):
        if a.shape != shape:
            raise MirageError(f"{src}: {key}: expected shape {shape} for {N} depth frames, got {a.shape}")
    if "frames" in out:
        f = out["frames"]
        if f.ndim != 4 or f.shape[0] not in (1, N) or f.shape[1:] != (H, W, 3):
            raise MirageError(f"{src}: frames: expected (N or 1, {H}, {W}, 3), got {f.shape}")
        if f.dtype != np.uint8:
            raise MirageError(f"{src}: frames: expected uint8, got {f.dtype}")
    if "masks" in out and out["masks"].shape != (N, H, W):
        raise MirageError(f"{src}: masks: expected ({N}, {H}, {W}), got {out['masks'].shape}")
    for key in ("depths", "poses_c2w", "intrinsics"):
        if not np.issubdtype(out[key].dtype, np.number):
            raise MirageError(f"{src}: {key}: expected numbers, got dtype {out[key].dtype}")
    for key in ("poses_c2w", "intrinsics"):
        bad = np.argwhere(~np.isfinite(out[key]).reshape(N, -1).all(1))
        if len(bad):
            raise MirageError(f"{src}: frame {int(bad[0, 0])}: {key}: contains NaN or inf")
    return out


def read(path: Path, _unused: Path | None = None) -> Trajectory:
    """The trajectory of a geometry.npz: OpenCV c2w poses, pixel intrinsics normalized by the depth size."""
    src = str(path)
    g = read_geometry(path)
    N, H, W = g["depths"].shape
    K = torch.from_numpy(g["intrinsics"].astype(np.float64))
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    bad = torch.nonzero((fx <= 0) | (fy <= 0))
    if len(bad):
        raise MirageError(f"{src}: frame {int(bad[0, 0])}: intrinsics: focal length must be > 0")
    intr = torch.stack([fx / W, fy / H, cx / W, cy / H], dim=1)
    fps = float(np.asarray(g["fps"]).reshape(-1)[0]) if "fps" in g and np.asarray(g["fps"]).size else DEFAULT_FPS
    if not (np.isfinite(fps) and fps > 0):
        raise MirageError(f"{src}: fps: must be a positive number (got {fps})")
    c2w = torch.from_numpy(g["poses_c2w"].astype(np.float64))
    return Trajectory(Cameras(c2w, intr, W, H), fps, NAME, "absolute", src, False)


def geometry_frame(path: str | Path, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Frame ``index`` of a geometry.npz for the first lift: ``(image (3, H, W) in [0, 1], depth (H, W)
    float32, valid mask (H, W) bool or None)``. The image is ``frames[index]`` (``frames[0]`` when it
    holds one frame and ``index`` is 0), else ``first_frame.png`` (index 0) or frame ``index`` of
    ``clip.mp4`` beside the file."""
    path = Path(path)
    g = read_geometry(path)
    N, H, W = g["depths"].shape
    if not 0 <= index < N:
        raise MirageError(f"{path}: --start-frame {index}: the file has {N} frames")
    image = None
    if "frames" in g and (len(g["frames"]) == N or index == 0):
        image = torch.from_numpy(np.ascontiguousarray(g["frames"][index])).permute(2, 0, 1).float() / 255.0
    else:
        image = _sibling_frame(path, index)
    if tuple(image.shape[-2:]) != (H, W):
        raise MirageError(f"{path}: frame {index}: image is {image.shape[-1]}x{image.shape[-2]} but depths are {W}x{H}")
    depth = torch.from_numpy(g["depths"][index].astype(np.float32))
    mask = torch.from_numpy(g["masks"][index].astype(bool)) if "masks" in g else None
    return image, depth, mask


def _sibling_frame(path: Path, index: int) -> torch.Tensor:
    """``first_frame.png`` (index 0) or frame ``index`` of ``clip.mp4`` next to the npz, ``(3, H, W)``."""
    png, mp4 = path.parent / "first_frame.png", path.parent / "clip.mp4"
    if index == 0 and png.exists():
        return load_image(png)
    if mp4.exists():
        import imageio.v3 as iio

        try:
            frame = iio.imread(mp4, index=index)
        except Exception as e:  # any decoder failure is a bad input file
            raise MirageError(f"{mp4}: cannot read frame {index} ({e})") from e
        return torch.from_numpy(np.ascontiguousarray(frame[..., :3])).permute(2, 0, 1).float() / 255.0
    raise MirageError(f"{path}: frames: missing, and no first_frame.png or clip.mp4 beside it (or pass IMAGE)")


FORMAT = Format(NAME, "npz", lambda p: is_npz(p), read)
