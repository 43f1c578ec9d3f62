"""Fit a relative preset to the scene: where its look-at point goes, and cameras that leave it.

Presets are written in reference depths (the input's median depth = 1) with the look-at point one
reference depth in front of frame 0. In a room deeper than that, ``orbit_360`` then swings the
camera through the walls. For a preset given **by name** (a file drives exactly the path it holds)
and no ``--look-at-depth``, the look-at point is placed from the input depth instead:

- orbits (``orbit_*``) turn on a circle of radius ``d`` around ``(0, 0, d)``: ``d`` is the
  largest radius that fits the free space frame 0 sees -- half the robust central depth ahead,
  and the distance to the surfaces at the image's left and right edges sideways -- times
  :data:`MARGIN`;
- the other look-at presets (``dolly_zoom``, ``spiral``) look at the robust central depth.

All in frame 0's camera coordinates (OpenCV: x right, y down, z forward), z-depth in scene units.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import MirageError
from ..geometry.cameras import Cameras, backproject
from ..trajectories import PRESETS, load_trajectory, resample

MARGIN = 0.8  # keep the orbit this fraction of the free space (cameras have a near plane too)
CENTRAL_WINDOW = 0.2  # the central fifth of the image (each side) gives the "depth ahead"
EDGE_WINDOW = 0.05  # outer 5 % columns (middle third rows) give the distance to the sides
BEHIND_MARGIN = 0.05  # a camera within 5 % of the surface depth counts as behind it


def central_depth(depth: torch.Tensor) -> float:
    """Median valid depth of the central ``CENTRAL_WINDOW`` window of ``depth (H, W)``; the median
    of the whole image where that window has no valid pixel, 1.0 where none is valid at all."""
    H, W = depth.shape
    h0, h1 = int(H * (0.5 - CENTRAL_WINDOW / 2)), max(int(H * (0.5 + CENTRAL_WINDOW / 2)), int(H * 0.5) + 1)
    w0, w1 = int(W * (0.5 - CENTRAL_WINDOW / 2)), max(int(W * (0.5 + CENTRAL_WINDOW / 2)), int(W * 0.5) + 1)
    for region in (depth[h0:h1, w0:w1], depth):
        valid = region[region > 0]
        if valid.numel():
            return float(valid.median())
    return 1.0


def free_orbit_radius(depth: torch.Tensor, cam0: Cameras) -> float:
    """Largest orbit radius ``d`` (scene units) whose circle around ``(0, 0, d)`` stays in the free
    space frame 0 sees: ``MARGIN * min(central depth / 2, left free width, right free width)``.

    Args: depth ``(H, W)`` z-depth of frame 0; cam0: frame 0's camera (one camera, identity pose).
    """
    H, W = depth.shape
    pts = backproject(depth.double(), torch.eye(4, dtype=torch.float64), cam0.K(W, H)[0])  # (H, W, 3)
    rows = slice(H // 3, max(2 * H // 3, H // 3 + 1))
    edge = max(1, int(W * EDGE_WINDOW))
    limits = [central_depth(depth) / 2]
    for cols, sign in ((slice(0, edge), -1.0), (slice(W - edge, W), 1.0)):
        ok = depth[rows, cols] > 0
        side = sign * pts[rows, cols, 0][ok]
        side = side[side > 0]
        if side.numel():
            limits.append(float(side.median()))
    return MARGIN * min(limits)


def cameras_behind_surface(cams: Cameras, depth: torch.Tensor) -> list[int]:
    """Frames whose camera centre lies behind the surface frame 0 sees (it would look at the scene
    from outside): the centre projects into frame 0 at a depth beyond ``(1 - BEHIND_MARGIN)`` of
    the depth there. Centres frame 0 does not see cannot be judged and are not listed.

    Args: cams ``(N)`` in scene units, poses relative to frame 0; depth ``(H, W)`` of frame 0.
    """
    H, W = depth.shape
    c = cams.centers.double()  # (N, 3) in frame 0's camera coordinates
    K = cams.K(W, H)[0].double()
    z = c[:, 2]
    safe = z.clamp(min=1e-9)
    u = (K[0, 0] * c[:, 0] / safe + K[0, 2]).floor().long()
    v = (K[1, 1] * c[:, 1] / safe + K[1, 2]).floor().long()
    seen = (z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    out = []
    for i in seen.nonzero().flatten().tolist():
        d = float(depth[v[i], u[i]])
        if d > 0 and float(z[i]) >= (1 - BEHIND_MARGIN) * d:
            out.append(i)
    return out


def place_preset(traj, traj_arg: str, look_at_depth: float | None, frames: int | None, depth: torch.Tensor,
                 cam0: Cameras, ref_depth: float):
    """The trajectory to run: a preset given by name and having a look-at point is rebuilt with its
    look-at point from ``look_at_depth`` (reference depths) or, when None, from the input depth (see
    the module docstring); anything else is returned as it is. ``frames``: --frames resampling.
    Returns ``(trajectory, look-at depth used in reference depths or None)``."""
    name = traj_arg.removeprefix("preset:")
    if traj.format != "preset" or name not in PRESETS or "look_at_depth" not in PRESETS[name].params:
        if look_at_depth is not None:
            raise MirageError(f"--look-at-depth: only applies to a preset given by name that has a look-at point "
                              f"({', '.join(n for n, p in PRESETS.items() if 'look_at_depth' in p.params)}); not to {traj_arg}")
        return traj, None
    if look_at_depth is None:
        scene = free_orbit_radius(depth, cam0) if name.startswith("orbit") else central_depth(depth)
        look_at_depth = round(scene / ref_depth, 4)
    placed = load_trajectory(traj_arg, look_at_depth=look_at_depth)
    return (resample(placed, frames) if frames is not None else placed), look_at_depth


def placement_note(traj_arg: str, look_at_depth: float) -> str:
    """The line saying where a preset by name was placed from the input depth, and that its file
    (``mirage traj preset``, ``presets/NAME.json``) keeps the preset's own look-at depth."""
    name = traj_arg.removeprefix("preset:")
    own = PRESETS[name].defaults()["look_at_depth"]
    return (f"--traj {name}: look-at point placed at {look_at_depth:g} reference depths from the input depth "
            f"(a preset file, e.g. presets/{name}.json, keeps its own {own:g}; --look-at-depth sets it)")


def warn_behind(cams: Cameras, depth: torch.Tensor, warn: Callable[[str], None]) -> None:
    """One warning naming the frames whose camera ends up behind the first view's surface."""
    behind = cameras_behind_surface(cams, depth)
    if behind:
        shown = ", ".join(str(i) for i in behind[:5]) + (", ..." if len(behind) > 5 else "")
        warn(f"the camera of {len(behind)} frame(s) ({shown}) ends up behind the surface the input image shows "
             "(it would see the scene from outside); use a smaller motion or, for a preset, a smaller --look-at-depth")
