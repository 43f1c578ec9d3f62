"""Entry points that take a user's trajectory argument: a file in any format or a preset name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MirageError
from .catalog import preset_name
from .formats import read_trajectory
from .posestring import is_pose_string, pose_string_trajectory
from .presets import make_preset
from .trajectory import Trajectory, adjust


def load_trajectory(path_or_preset: str | Path, **preset_overrides: Any) -> Trajectory:
    """Read a trajectory file (format detected by content) or make a preset by name.

    Args:
        path_or_preset: an existing file (or a folder: a COLMAP model holding ``images.txt``, a
            LingBot-World action folder), a preset name such as ``"orbit_left"`` (optionally
            written ``"preset:orbit_left"``) or a pose string such as ``"w-8, left-2, d-4"``
            (:mod:`mirage_cli.trajectories.posestring`).
        **preset_overrides: preset parameters (``frames``, ``fps``, ``fov``, ``angle``, ...);
            only allowed with a preset name.
    Returns:
        The trajectory, validated (finite poses, proper rotations, positive focal lengths).
    Raises:
        MirageError: one line naming the file, the frame and the field of the first problem.
    """
    text = str(path_or_preset)
    name = preset_name(text)  # the file / preset rule (and its error) lives in the torch-free catalog
    if name is not None:
        return make_preset(name, **preset_overrides)
    path = Path(text)
    if preset_overrides:
        raise MirageError(f"{text}: preset parameters ({', '.join(preset_overrides)}) only apply to preset names")
    if not path.exists() and is_pose_string(text):
        return pose_string_trajectory(text)
    return read_trajectory(path)


def convert(source: str | Path, frames: int | None = None, fps: float | None = None,
            scale: str | None = None, relative: bool = False, depth_scale: float | None = None) -> Trajectory:
    """Load ``source`` (file or preset name) and apply the ``mirage traj convert`` options (see :func:`adjust`)."""
    return adjust(load_trajectory(source), frames=frames, fps=fps, scale=scale, relative=relative, depth_scale=depth_scale)
