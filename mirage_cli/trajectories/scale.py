"""Is a camera path in the scale of the scene it will fly through? A path authored for one scene's
units flies through the walls of another (Lyra 2's README, line 120, warns about it; VMem #8).

The scene is the input image lifted with its depth into frame 0's camera (OpenCV: x right, y down,
z forward): its **median depth** (the unit of relative trajectories, as in
:func:`mirage_cli.pipeline.plan.reference_depth`) and its **box**, the 2nd-98th percentile of the
lifted points per axis (a few far sky pixels do not inflate it); the box's *size* is its longest
side. The path is the trajectory's camera centres relative to frame 0, in scene units (a
relative trajectory times the median depth), times ``--traj-scale``.

Thresholds (:func:`check_scale`):

- **too large**: a camera centre lies outside the box by more than :data:`LARGE` times the box's
  size (the path leaves the scene by more than the scene is big);
- **too small**: the farthest camera centre is closer to the start than :data:`SMALL` times the
  median depth (0.1 %), while the path does move (a path whose centre never moves by more than
  :data:`STILL` median depths is a pure rotation: pans, tilts, zooms are not checked).

``mirage generate`` runs :func:`preflight` before any model loads (one warning line naming the flag
that rescales: ``--traj-scale``, or ``--depth-scale`` for a depth file in other units);
``mirage traj show PATH --image IMAGE`` prints the numbers and draws the path over the lifted
points (:func:`mirage_cli.trajectories.plot.plot_trajectory`). Without a depth file the scene is
the geometric prior (median depth 1, like a relative depth model's output): the check then judges
the path against a room-sized scene of unit median depth.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MirageError
from ..geometry.cameras import Cameras, backproject
from ..io import load_image
from .catalog import CATALOG, preset_name
from .formats.geometry_npz import geometry_frame, is_npz
from .load import load_trajectory

LARGE = 1.0
"""Too large: a camera leaves the scene's box by more than this times the box's size."""
SMALL = 1e-3
"""Too small: the farthest camera is within this fraction of the median depth of the start."""
STILL = 1e-6
"""A path whose cameras stay within this many median depths of the start only rotates (not checked)."""
BOX_PERCENTILES = (0.02, 0.98)
PLOT_POINTS = 20_000
"""Lifted points kept for a plot (a regular subsample of the pixels)."""


@dataclass(frozen=True)
class Scene:
    """The input image lifted with its depth, in frame 0's camera coordinates.

    Attributes:
        median_depth: median of the valid (> 0) depth, scene units.
        lo, hi: ``(3,)`` corners of the box (2nd/98th percentile of the points per axis).
        points: ``(M, 3)`` float32 subsample of the lifted points (for plots); colors ``(M, 3)`` in [0, 1] or None.
        source: where the depth came from (``file:PATH``, ``sidecar:PATH``, ``geometry:PATH``, ``prior``).
    """

    median_depth: float
    lo: torch.Tensor
    hi: torch.Tensor
    points: torch.Tensor
    colors: torch.Tensor | None
    source: str

    @property
    def size(self) -> float:
        """The box's longest side, scene units."""
        return float((self.hi - self.lo).max())


@dataclass(frozen=True)
class ScaleCheck:
    """How a path compares with a scene (every length in median depths of the scene).

    Attributes:
        verdict: ``"ok"``, ``"too large"``, ``"too small"`` or ``"rotation only"``.
        path_length: summed distance between consecutive camera centres.
        farthest: largest distance of a camera centre from the start.
        outside: largest distance of a camera centre from the box (0 inside), in box sizes.
        box_size: the box's longest side. median_depth: in scene units.
        suggest: a ``--traj-scale`` (a power of ten) that brings the farthest camera to about one
            median depth from the start; None when the verdict is ok.
    """

    verdict: str
    path_length: float
    farthest: float
    outside: float
    box_size: float
    median_depth: float
    suggest: float | None

    def to_json(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def lift_scene(depth: torch.Tensor, intrinsics: torch.Tensor, image: torch.Tensor | None = None,
               source: str = "depth") -> Scene:
    """The scene of a depth map ``(H, W)`` (z-depth, 0 = invalid) seen by a camera with normalized
    ``intrinsics (4,)`` at the identity; ``image (3, H, W)`` in [0, 1] colours the plot points.

    Raises:
        MirageError: no valid depth pixel.
    """
    H, W = depth.shape
    valid = (depth > 0) & torch.isfinite(depth)
    if not bool(valid.any()):
        raise MirageError(f"{source}: no valid depth (all <= 0 or not finite): cannot judge the path's scale")
    K = Cameras(torch.eye(4, dtype=torch.float64), intrinsics, W, H).K()[0]
    pts = backproject(depth.double(), torch.eye(4, dtype=torch.float64), K)[valid].float()
    q = torch.tensor(BOX_PERCENTILES, dtype=torch.float32)
    sample = pts[:: max(1, len(pts) // 50_000)]  # the box of a regular subsample (quantile is slow)
    lo, hi = torch.quantile(sample, q[0], dim=0), torch.quantile(sample, q[1], dim=0)
    stride = max(1, math.ceil(len(pts) / PLOT_POINTS))
    colors = image.permute(1, 2, 0)[valid][::stride].float() if image is not None else None
    return Scene(float(depth[valid].median()), lo.double(), hi.double(), pts[::stride], colors, source)


def check_scale(cameras: Cameras, scene: Scene) -> ScaleCheck:
    """Judge the camera centres of ``cameras`` (poses relative to frame 0, scene units) against
    ``scene`` with the thresholds of the module docstring."""
    C = cameras.relative_to_first().centers
    m = scene.median_depth
    steps = (C[1:] - C[:-1]).norm(dim=-1)
    length = float(steps.sum()) / m if len(steps) else 0.0
    farthest = float(C.norm(dim=-1).max()) / m
    gap = torch.maximum(scene.lo - C, C - scene.hi).clamp(min=0).norm(dim=-1)
    size = max(scene.size, 1e-12)
    outside = float(gap.max()) / size
    if farthest <= STILL:
        verdict = "rotation only"
    elif outside > LARGE:
        verdict = "too large"
    elif farthest < SMALL:
        verdict = "too small"
    else:
        verdict = "ok"
    suggest = 10.0 ** round(-math.log10(farthest)) if verdict in ("too large", "too small") else None
    return ScaleCheck(verdict, length, farthest, outside, size / m, m, suggest)


def scale_message(check: ScaleCheck, what: str, depth_is_file: bool) -> str | None:
    """The one-line warning for a path out of scale (None when it is in scale)."""
    if check.verdict not in ("too large", "too small"):
        return None
    if check.verdict == "too large":
        how = (f"leaves the scene by {check.outside:.3g} x its size (path length {check.path_length:.3g} median depths, "
               f"scene {check.box_size:.3g} median depths across)")
    else:
        how = (f"moves at most {check.farthest:.2g} median depths from the start (under {SMALL:.1%} of the scene's "
               "median depth): the camera barely moves")
    depth_hint = " (or --depth-scale, if the depth file's units are what is wrong)" if depth_is_file else ""
    return (f"{what}: out of scale with the scene: {how}; probably authored for another scene's units: rescale it "
            f"with --traj-scale {check.suggest:g}{depth_hint}")


def input_scene(image: Path, traj, depth: str | None = None, depth_scale: float | None = None,
                start_frame: int = 0, colors: bool = False) -> Scene:
    """The scene of an input image without any model: the depth of a geometry.npz, of ``depth``
    (a file) or of the image's sidecar, else the geometric prior (``depth`` ``"prior"`` / ``"model"``
    or none found: a depth model's output is not known before it loads; a relative one has median 1
    like the prior). ``traj``: the trajectory (from the input frame on), whose frame 0 intrinsics meet the
    image as in ``mirage generate`` (``--intrinsics crop``)."""
    from ..geometry.depth import check_depth_size, input_depth_source, prior_depth

    d: torch.Tensor | None  # None: no depth given (the prior, below)
    if is_npz(image):
        img, d, mask = geometry_frame(image, start_frame)
        if mask is not None:
            d = torch.where(mask, d, torch.zeros_like(d))
        source = f"geometry:{image}"
    else:
        img = load_image(image)
        kind, d = input_depth_source(depth, image, depth_scale)
        source = kind if d is not None else "prior"
        if d is not None:
            check_depth_size(d, img.shape[-2], img.shape[-1], kind.split(":", 1)[-1])
    H, W = img.shape[-2:]
    k0 = traj.cameras_for(W, H).intrinsics[0]
    if d is None:
        d = prior_depth(H, W, float(traj.cameras.fov_y_deg[0]))
    return lift_scene(d.float(), k0, img if colors else None, source)


def scene_cameras(cameras: Cameras, scale: str, scene: Scene, traj_scale: float | None = None) -> Cameras:
    """``cameras`` relative to frame 0 in scene units: a relative path times the median depth, times ``traj_scale``."""
    rel = cameras.relative_to_first()
    factor = (scene.median_depth if scale == "relative" else 1.0) * (traj_scale or 1.0)
    return rel.scaled(factor)


def preflight(traj_arg: str | None, image: str | Path | None, depth: str | None, depth_scale: float | None,
              traj_scale: float | None, start_frame: int, memory: str | None, warn: Callable[[str], None]) -> ScaleCheck | None:
    """``mirage generate``'s scale check, before any model loads: refuse a bad ``--traj-scale``
    (:func:`check_traj_scale`), then warn (one line) when the path is out of scale with the input's
    scene. The check is skipped (None) with ``--memory`` (the memory is the scene) or without a
    trajectory or image; any problem reading the inputs is left to the run itself, which reports it
    in its own words."""
    check_traj_scale(traj_arg, traj_scale)
    if not traj_arg or not image or memory:
        return None
    try:
        traj = load_trajectory(traj_arg)
        if 0 < start_frame < len(traj):
            traj = dataclasses.replace(traj, cameras=traj.cameras[start_frame:])
        scene = input_scene(Path(image), traj, depth, depth_scale, start_frame)
    except MirageError:
        return None
    check = check_scale(scene_cameras(traj.cameras, traj.scale, scene, traj_scale), scene)
    message = scale_message(check, f"--traj {traj_arg}", scene.source.startswith(("file:", "sidecar:")))
    if message:
        warn(message)
    return check


def check_traj_scale(traj_arg: str | None, traj_scale: float | None) -> None:
    """``--traj-scale`` must be a finite number > 0 and cannot apply to a preset by name that
    ``generate`` places from the input depth (it is rebuilt there: use ``--look-at-depth`` /
    ``--distance``, or write the preset to a file first)."""
    if traj_scale is None:
        return
    if not (math.isfinite(traj_scale) and traj_scale > 0):
        raise MirageError(f"--traj-scale: must be a number > 0 (got {traj_scale:g}); a negative scale mirrors the path")
    name = preset_name(traj_arg) if traj_arg else None
    if name in CATALOG and "look_at_depth" in CATALOG[name].params:
        raise MirageError(f"--traj-scale: preset {name} is placed from the input depth (its translations already "
                          "follow the scene); set --look-at-depth, or write it with `mirage traj preset` and scale the file")


def apply_traj_scale(traj, traj_scale: float | None):
    """``traj`` with its translations times ``traj_scale`` (None or 1: unchanged)."""
    if traj_scale is None or traj_scale == 1:
        return traj
    return dataclasses.replace(traj, cameras=traj.cameras.scaled(traj_scale))
