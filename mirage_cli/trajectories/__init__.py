"""Camera trajectories: the :class:`Trajectory` container, presets, file formats, resampling, plots.

Public API (import from here)::

    from mirage_cli.trajectories import load_trajectory, save_trajectory, resample, make_preset, PRESETS

``formats/`` holds one module per file format and the one registry that reading, writing,
``mirage traj convert`` and ``mirage traj show`` use; ``presets`` the named camera motions;
``plot`` the PNG of ``mirage traj show --plot`` (imported from there: it needs Pillow's fonts).
"""

from .formats import FORMATS, REGISTRY, detect_format, read_trajectory, save_trajectory, trajectory_text
from .load import convert, load_trajectory
from .presets import PRESETS, make_preset, write_presets
from .trajectory import DEFAULT_FPS, DEFAULT_HEIGHT, DEFAULT_WIDTH, Trajectory, adjust, resample, summarize

__all__ = [
    "DEFAULT_FPS", "DEFAULT_HEIGHT", "DEFAULT_WIDTH", "FORMATS", "PRESETS", "REGISTRY", "Trajectory", "adjust",
    "convert", "detect_format", "load_trajectory", "make_preset", "read_trajectory", "resample", "save_trajectory",
    "summarize", "trajectory_text", "write_presets",
]
