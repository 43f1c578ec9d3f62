"""The explorer's camera steps: where one key press, "Go here" or a preset takes the camera in one chunk.

Every step makes the ``n`` new poses of the next chunk (its frames 1..n; frame 0 is the current
camera, shared with the previous chunk) along a smooth path from the current camera ``c0``:
rotations slerped, translations interpolated, both with the smoothstep easing ``3t^2 - 2t^3`` so
the camera starts and stops gently within the chunk. Poses are OpenCV camera-to-world ``(4, 4)``
float64 (x right, y down, z forward) relative to the input image's camera, translations in
reference depths (the input's median depth = 1), the units of a ``"relative"`` trajectory and of
the presets (``trajectories/presets``).

Keys (moves in the *current* camera's axes): W/S forward/back (+z/-z), A/D left/right (-x/+x),
R/F up/down (-y/+y), Q/E turn left/right about the camera's vertical axis
(:func:`~mirage_cli.geometry.rotations.rotation_y`: a positive angle turns the view right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ..errors import MirageError
from ..geometry.rotations import quaternion_to_rotation, rotation_to_quaternion, rotation_y, slerp
from ..trajectories.presets import make_preset

TRANSLATIONS: dict[str, tuple[float, float, float]] = {
    "W": (0.0, 0.0, 1.0), "S": (0.0, 0.0, -1.0), "A": (-1.0, 0.0, 0.0), "D": (1.0, 0.0, 0.0),
    "R": (0.0, -1.0, 0.0), "F": (0.0, 1.0, 0.0)}
"""Direction of each translation key in the current camera's OpenCV axes."""
TURNS: dict[str, float] = {"Q": -1.0, "E": 1.0}
"""Sign of each turn key's angle (positive turns right)."""
MoveKey = Literal["W", "S", "A", "D", "Q", "E", "R", "F"]
"""A movement key (a literal type: viser's hotkeys are literals too)."""
KEYS: tuple[MoveKey, ...] = get_args(MoveKey)
"""The movement keys (U, undo, is not a move)."""
KEY_HELP: dict[str, str] = {"W": "forward", "S": "back", "A": "left", "D": "right", "Q": "turn left",
                            "E": "turn right", "R": "up", "F": "down"}


@dataclass(frozen=True)
class Step:
    """One requested chunk: ``kind`` is ``"key"`` (``key`` one of :data:`KEYS`), ``"goto"`` (``target``:
    a ``(4, 4)`` pose in reference depths, as nested lists) or ``"preset"`` (``preset``: its name).
    ``distance`` (reference depths) and ``angle`` (degrees) are the key's step sizes; ``prompt``: the
    text prompt for this chunk (None: keep the current one)."""

    kind: str
    key: str = ""
    target: tuple | None = None
    preset: str = ""
    distance: float = 0.1
    angle: float = 10.0
    prompt: str | None = None

    def describe(self) -> str:
        if self.kind == "key":
            return f"{self.key} ({KEY_HELP[self.key]})"
        return "go here" if self.kind == "goto" else f"preset {self.preset}"


def ease(n: int) -> torch.Tensor:
    """``(n,)`` fractions of the way at the chunk's frames 1..n: smoothstep of ``k / n`` (the last is 1)."""
    t = torch.arange(1, n + 1, dtype=torch.float64) / n
    return t * t * (3 - 2 * t)


def interpolate(c0: torch.Tensor, c1: torch.Tensor, n: int) -> torch.Tensor:
    """``(n, 4, 4)`` poses from ``c0`` (excluded, it is frame 0) to ``c1`` (the last), eased."""
    c0, c1 = torch.as_tensor(c0, dtype=torch.float64), torch.as_tensor(c1, dtype=torch.float64)
    f = ease(n)
    q = rotation_to_quaternion(torch.stack([c0[:3, :3], c1[:3, :3]]))
    out = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    out[:, :3, :3] = quaternion_to_rotation(slerp(q[:1].expand(n, 4), q[1:].expand(n, 4), f))
    out[:, :3, 3] = c0[:3, 3] + f[:, None] * (c1[:3, 3] - c0[:3, 3])
    out[-1] = c1  # exactly the target (no slerp round-off at t = 1)
    return out


def key_target(c0: torch.Tensor, key: str, distance: float, angle: float) -> torch.Tensor:
    """The pose one key press reaches from ``c0``: ``distance`` reference depths along the key's axis,
    or a turn of ``angle`` degrees."""
    c0 = torch.as_tensor(c0, dtype=torch.float64)
    delta = torch.eye(4, dtype=torch.float64)
    if key in TRANSLATIONS:
        delta[:3, 3] = distance * torch.tensor(TRANSLATIONS[key], dtype=torch.float64)
    elif key in TURNS:
        delta[:3, :3] = rotation_y(torch.tensor([TURNS[key] * math.radians(angle)], dtype=torch.float64))[0]
    else:
        raise MirageError(f"key {key!r}: not a move (keys: {', '.join(KEYS)})")
    return c0 @ delta


def preset_poses(c0: torch.Tensor, name: str, n: int) -> torch.Tensor:
    """``(n, 4, 4)``: preset ``name`` (its default parameters) made with ``n + 1`` frames and carried out
    from ``c0`` (its frame 0 is ``c0``), its frames 1..n."""
    rel = make_preset(name, frames=n + 1).cameras.relative_to_first().c2w
    return torch.as_tensor(c0, dtype=torch.float64) @ rel[1:]


def step_poses(c0: torch.Tensor, step: Step, n: int) -> torch.Tensor:
    """The ``(n, 4, 4)`` new poses of ``step`` from the current pose ``c0``."""
    if step.kind == "key":
        return interpolate(c0, key_target(c0, step.key, step.distance, step.angle), n)
    if step.kind == "goto":
        target = torch.tensor(step.target, dtype=torch.float64)
        if target.shape != (4, 4) or not bool(torch.isfinite(target).all()):
            raise MirageError("go here: the view's pose is not a finite 4x4 matrix")
        return interpolate(c0, target, n)
    if step.kind == "preset":
        return preset_poses(c0, step.preset, n)
    raise MirageError(f"unknown step kind {step.kind!r}")
