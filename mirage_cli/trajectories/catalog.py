"""The presets' names, descriptions and default parameters, without torch.

``mirage traj list`` and the option checks of ``mirage generate`` read this table, so that they
answer before torch is imported (about 2 s of CPU); ``presets/`` pairs each entry with the builder
that makes its poses (:data:`mirage_cli.trajectories.presets.PRESETS`, same names, same order).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import MirageError
from .posestring import is_pose_string

COMMON_DEFAULTS: dict[str, float] = {"frames": 49, "fps": 16.0, "fov": 55.0}
"""Defaults every preset shares: 49 frames (Wan's 4k+1), 16 fps, 55 degrees vertical fov."""

PARAM_HELP: dict[str, str] = {
    "frames": "number of frames",
    "fps": "frames per second",
    "fov": "vertical field of view of frame 0, degrees",
    "angle": "total rotation, degrees",
    "distance": "total camera travel, in units of the reference depth",
    "look_at_depth": "depth of the look-at point on frame 0's optical axis, reference-depth units",
    "zoom": "focal-length factor between the first and the last frame (>= 1)",
}


@dataclass(frozen=True)
class PresetInfo:
    """What ``mirage traj list`` shows of a preset: one line, its parameters and default frames."""

    description: str
    params: dict[str, float]
    frames: int = 49

    def defaults(self) -> dict[str, float]:
        """All parameters with their defaults: ``frames``, ``fps``, ``fov`` and the motion ones."""
        return {**COMMON_DEFAULTS, "frames": self.frames, **self.params}


_ORBIT = {"angle": 30.0, "look_at_depth": 1.0}
CATALOG: dict[str, PresetInfo] = {
    "static": PresetInfo("camera does not move", {}),
    "orbit_left": PresetInfo("travels left on a circle around the look-at point, keeping it centred", dict(_ORBIT)),
    "orbit_right": PresetInfo("travels right on a circle around the look-at point, keeping it centred", dict(_ORBIT)),
    "orbit_360": PresetInfo("a full turn to the left around the look-at point (last frame = first)",
                            {"angle": 360.0, "look_at_depth": 1.0}, frames=81),
    "pan_left": PresetInfo("turns left in place (camera centre fixed)", {"angle": 30.0}),
    "pan_right": PresetInfo("turns right in place (camera centre fixed)", {"angle": 30.0}),
    "tilt_up": PresetInfo("turns up in place", {"angle": 20.0}),
    "tilt_down": PresetInfo("turns down in place", {"angle": 20.0}),
    "truck_left": PresetInfo("slides left, looking straight ahead", {"distance": 0.3}),
    "truck_right": PresetInfo("slides right, looking straight ahead", {"distance": 0.3}),
    "pedestal_up": PresetInfo("rises, looking straight ahead", {"distance": 0.2}),
    "pedestal_down": PresetInfo("descends, looking straight ahead", {"distance": 0.2}),
    "dolly_in": PresetInfo("moves forward along the optical axis", {"distance": 0.4}),
    "dolly_out": PresetInfo("moves back along the optical axis", {"distance": 0.4}),
    "zoom_in": PresetInfo("focal length grows by 'zoom' (geometric), camera fixed", {"zoom": 1.5}),
    "zoom_out": PresetInfo("focal length shrinks by 'zoom' (geometric), camera fixed", {"zoom": 1.5}),
    "dolly_zoom": PresetInfo("moves back by 'distance' (negative: forward) while zooming so the look-at plane keeps its size",
                             {"distance": 0.5, "look_at_depth": 1.0}),
    "spiral": PresetInfo("spirals out to radius 'distance' around the optical axis, looking at the look-at point",
                         {"angle": 720.0, "distance": 0.15, "look_at_depth": 1.0}),
}
"""Every preset by name, in ``mirage traj list`` order."""


def preset_name(text: str) -> str | None:
    """The preset a trajectory argument names (``"orbit_left"`` or ``"preset:orbit_left"``), or None
    when it is a file or a pose string (``"w-8, left-2"``, :mod:`.posestring`). Raises MirageError
    when it is none of them."""
    name = text[len("preset:"):] if text.startswith("preset:") else text
    path = Path(text)
    if text.startswith("preset:") or (not path.exists() and name in CATALOG):
        return name
    if not path.exists() and is_pose_string(text):
        return None
    if not path.exists():
        close = difflib.get_close_matches(name, list(CATALOG), n=1)
        hint = f" (did you mean preset '{close[0]}'?)" if close else " (`mirage traj list` shows the presets)"
        if not close and re.search(r"[A-Za-z]+\s*-\s*[0-9]", text) and " " in text.strip():
            hint = " (a pose string separates its items with commas: 'w-8, left-2, d-4')"
        raise MirageError(f"{text}: no such file, and not a preset name{hint}")
    return None
