"""Camera trajectories: the :class:`Trajectory` container, presets, file formats, resampling, plots.

Public API (import from here)::

    from mirage_cli.trajectories import load_trajectory, save_trajectory, resample, make_preset, PRESETS

``formats/`` holds one module per file format and the one registry that reading, writing,
``mirage traj convert`` and ``mirage traj show`` use; ``presets`` the named camera motions;
``plot`` the PNG of ``mirage traj show --plot`` (imported from there: it needs Pillow's fonts).
"""

from ..lazy import lazy_exports

# Lazy re-exports (PEP 562): the names below load their module (and torch) on first use, so that
# ``mirage traj list`` and the option checks can read the torch-free ``catalog`` alone.
_EXPORTS = {
    "FORMATS": "formats", "REGISTRY": "formats", "detect_format": "formats", "read_trajectory": "formats",
    "save_trajectory": "formats", "trajectory_text": "formats", "lost_in_writing": "formats",
    "convert": "load", "load_trajectory": "load",
    "PRESETS": "presets", "make_preset": "presets", "write_presets": "presets", "DEFAULT_FPS": "trajectory",
    "DEFAULT_HEIGHT": "trajectory", "DEFAULT_WIDTH": "trajectory", "Trajectory": "trajectory", "adjust": "trajectory",
    "resample": "trajectory", "summarize": "trajectory",
}

__all__ = [
    "DEFAULT_FPS", "DEFAULT_HEIGHT", "DEFAULT_WIDTH", "FORMATS", "PRESETS", "REGISTRY", "Trajectory", "adjust",
    "convert", "detect_format", "load_trajectory", "lost_in_writing",
    "make_preset", "read_trajectory", "resample", "save_trajectory",
    "summarize", "trajectory_text", "write_presets",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
