"""Camera-motion presets: named trajectories with documented parameters.

Every preset starts at the identity (frame 0 is the input image's camera, OpenCV axes: x right,
y down, z forward) and moves linearly in its parameter over ``t = k / (frames - 1)``. Presets are
``"scale": "relative"``: distances are in units of the scene's reference depth (the input image's
median depth = 1). Orbits and the spiral turn around a look-at point at ``look_at_depth`` on the
optical axis of frame 0, ``P = (0, 0, look_at_depth)``, which stays at the image centre.
Intrinsics are a vertical field of view only (``fov_only``), so they fit any aspect ratio.

The files in ``presets/`` are generated from this module; regenerate them with::

    python -m mirage_cli.trajectories.presets            # writes presets/*.json next to the package
    mirage traj preset --all presets/       # the same through the CLI
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import MirageError, allocation_failure
from ...geometry.cameras import Cameras, focal_from_fov, fov_from_focal, look_at
from ...geometry.rotations import rotation_x, rotation_y
from ..catalog import CATALOG, COMMON_DEFAULTS, PARAM_HELP  # noqa: F401  (re-exported)
from ..formats import save_trajectory
from ..trajectory import DEFAULT_HEIGHT, DEFAULT_WIDTH, Trajectory

Builder = Callable[[torch.Tensor, dict], tuple[torch.Tensor, torch.Tensor]]
"""``(t (N,) in [0, 1], params) -> (c2w (N, 4, 4) OpenCV, focal multiplier (N,))``."""


@dataclass(frozen=True)
class Preset:
    """A named camera motion.

    Attributes:
        description: one line for ``mirage traj list``.
        params: motion parameters and their defaults (``frames``/``fps``/``fov`` come on top).
        build: the :data:`Builder` that makes the poses.
        frames: default number of frames.
    """

    description: str
    params: dict[str, float]
    build: Builder
    frames: int = 49

    def defaults(self) -> dict[str, float]:
        """All parameters with their defaults: ``frames``, ``fps``, ``fov`` and the motion ones."""
        return {**COMMON_DEFAULTS, "frames": self.frames, **self.params}


# ===================================================================================== geometry
def _eye(n: int) -> torch.Tensor:
    return torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)


def _rotations(R: torch.Tensor) -> torch.Tensor:
    c2w = _eye(R.shape[0])
    c2w[:, :3, :3] = R
    return c2w


def _translations(direction: tuple[float, float, float], amount: torch.Tensor) -> torch.Tensor:
    c2w = _eye(amount.shape[0])
    c2w[:, :3, 3] = amount[:, None] * torch.tensor(direction, dtype=torch.float64)
    return c2w


def _orbit(theta: torch.Tensor, depth: float) -> torch.Tensor:
    """Rotation by ``theta`` about the vertical axis through ``P = (0, 0, depth)``: ``T(P) R_y T(-P)``."""
    c2w = _rotations(rotation_y(theta))
    P = torch.tensor([0.0, 0.0, depth], dtype=torch.float64)
    c2w[:, :3, 3] = P - c2w[:, :3, :3] @ P
    return c2w


def _ones(t: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(t)


# ===================================================================================== builders
def _static(t: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return _eye(t.shape[0]), _ones(t)


def _orbit_builder(sign: float) -> Builder:
    def build(t: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return _orbit(sign * math.radians(p["angle"]) * t, p["look_at_depth"]), _ones(t)
    return build


def _pan_builder(sign: float) -> Builder:
    def build(t: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return _rotations(rotation_y(sign * math.radians(p["angle"]) * t)), _ones(t)
    return build


def _tilt_builder(sign: float) -> Builder:
    def build(t: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return _rotations(rotation_x(sign * math.radians(p["angle"]) * t)), _ones(t)
    return build


def _move_builder(direction: tuple[float, float, float]) -> Builder:
    def build(t: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return _translations(direction, p["distance"] * t), _ones(t)
    return build


def _zoom_builder(sign: float) -> Builder:
    def build(t: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return _eye(t.shape[0]), p["zoom"] ** (sign * t)
    return build


def _dolly_zoom(t: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Back by ``distance`` while the focal grows as ``(d + distance t) / d``: the look-at plane keeps its size."""
    d, back = p["look_at_depth"], p["distance"] * t
    return _translations((0.0, 0.0, -1.0), back), (d + back) / d


def _spiral(t: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Radius grows 0 -> ``distance`` while turning ``angle`` around the axis, looking at P."""
    theta, r = math.radians(p["angle"]) * t, p["distance"] * t
    target = torch.tensor([0.0, 0.0, p["look_at_depth"]], dtype=torch.float64)
    eyes = torch.stack([r * torch.cos(theta), r * torch.sin(theta), torch.zeros_like(t)], -1)
    return torch.stack([look_at(e, target) for e in eyes]), _ones(t)


_BUILDERS: dict[str, Builder] = {
    "static": _static,
    "orbit_left": _orbit_builder(1.0),
    "orbit_right": _orbit_builder(-1.0),
    "orbit_360": _orbit_builder(1.0),
    "pan_left": _pan_builder(-1.0),
    "pan_right": _pan_builder(1.0),
    "tilt_up": _tilt_builder(1.0),
    "tilt_down": _tilt_builder(-1.0),
    "truck_left": _move_builder((-1.0, 0.0, 0.0)),
    "truck_right": _move_builder((1.0, 0.0, 0.0)),
    "pedestal_up": _move_builder((0.0, -1.0, 0.0)),
    "pedestal_down": _move_builder((0.0, 1.0, 0.0)),
    "dolly_in": _move_builder((0.0, 0.0, 1.0)),
    "dolly_out": _move_builder((0.0, 0.0, -1.0)),
    "zoom_in": _zoom_builder(1.0),
    "zoom_out": _zoom_builder(-1.0),
    "dolly_zoom": _dolly_zoom,
    "spiral": _spiral,
}
# descriptions and defaults live in the torch-free catalog (``mirage traj list`` reads it without torch)
PRESETS: dict[str, Preset] = {name: Preset(info.description, dict(info.params), _BUILDERS[name], info.frames)
                              for name, info in CATALOG.items()}
"""All presets by name (see ``mirage traj list``)."""


# ===================================================================================== API
def _check_params(name: str, p: dict[str, Any]) -> None:
    """Raise MirageError for a parameter outside its range."""
    def bad(key: str, rule: str) -> MirageError:
        return MirageError(f"preset {name}: {key}: {rule} (got {p[key]:g})")

    if int(p["frames"]) != p["frames"] or p["frames"] < 1:
        raise bad("frames", "must be a whole number >= 1")
    if not (math.isfinite(p["fps"]) and p["fps"] > 0):
        raise bad("fps", "must be positive")
    if not 0 < p["fov"] < 180:
        raise bad("fov", "must be between 0 and 180 degrees")
    for key in ("angle", "distance", "look_at_depth", "zoom"):
        if key in p and not math.isfinite(p[key]):
            raise bad(key, "must be finite")
    if p.get("angle", 0) < 0:
        raise bad("angle", "must be >= 0 (use the mirrored preset for the other direction)")
    if p.get("look_at_depth", 1) <= 0:
        raise bad("look_at_depth", "must be positive")
    if p.get("zoom", 1) < 1:
        raise bad("zoom", "must be >= 1 (use zoom_out / zoom_in for the other direction)")
    if name == "dolly_zoom":
        if p["distance"] <= -p["look_at_depth"]:
            raise bad("distance", "must be > -look_at_depth (the camera would pass the look-at plane)")
    elif p.get("distance", 0) < 0:
        raise bad("distance", "must be >= 0 (use the mirrored preset for the other direction)")


def resolve_params(name: str, **overrides: Any) -> dict[str, float]:
    """The preset's parameters with ``overrides`` applied (``None`` values are ignored)."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise MirageError(f"unknown preset {name!r} ({hint}known: {', '.join(PRESETS)})")
    params = PRESETS[name].defaults()
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = [k for k in given if k not in params]
    if unknown:
        raise MirageError(f"preset {name}: no parameter {', '.join(unknown)} (parameters: {', '.join(params)})")
    params.update({k: float(v) for k, v in given.items()})
    _check_params(name, params)
    params["frames"] = int(params["frames"])
    return params


def make_preset(name: str, frames: int | None = None, fps: float | None = None, fov: float | None = None,
                angle: float | None = None, distance: float | None = None, look_at_depth: float | None = None,
                zoom: float | None = None, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT) -> Trajectory:
    """Make a preset trajectory.

    Args:
        name: a key of :data:`PRESETS`.
        frames, fps, fov, angle, distance, look_at_depth, zoom: overrides of the preset's
            defaults (``None`` = default); a parameter the preset does not have is an error.
        width, height: render size written to files (the intrinsics are fov-only and adapt).
    Returns:
        ``Trajectory`` with ``format="preset"``, ``scale="relative"``, ``fov_only=True``,
        OpenCV c2w ``(frames, 4, 4)`` with frame 0 the identity.
    """
    params = resolve_params(name, frames=frames, fps=fps, fov=fov, angle=angle, distance=distance,
                            look_at_depth=look_at_depth, zoom=zoom)
    if width < 1 or height < 1:
        raise MirageError(f"preset {name}: width and height must be positive (got {width}x{height})")
    n = int(params["frames"])  # an int already (resolve_params); the dict is typed float
    try:
        t = torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
        c2w, focal = PRESETS[name].build(t, params)
        fov_y = fov_from_focal(focal_from_fov(params["fov"]) * focal)  # the focal multiplier zooms frame 0's fov
        cams = Cameras.from_fov(c2w, fov_y, width, height)
    except (MemoryError, RuntimeError) as e:  # frames far beyond the RAM: name them
        if not allocation_failure(e):
            raise
        cams = None  # said below, once the failed allocation's tensors are gone
    if cams is None:
        raise MirageError(f"--frames {n:,}: out of memory while making preset {name} that long; lower --frames")
    meta = {"preset": {"name": name, "params": params}}
    return Trajectory(cams, params["fps"], "preset", "relative", name, True, meta)


def write_presets(directory: str | Path) -> list[Path]:
    """Write every preset with its defaults to ``directory/<name>.json`` (native format)."""
    out = []
    for name in PRESETS:
        path = Path(directory) / f"{name}.json"
        save_trajectory(make_preset(name), path)
        out.append(path)
    return out


def default_presets_dir() -> Path:
    """The repository's ``presets/`` folder (next to the ``mirage_cli`` package)."""
    return Path(__file__).resolve().parents[3] / "presets"
