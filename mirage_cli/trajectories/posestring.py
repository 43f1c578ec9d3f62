"""Pose strings: a camera path written on the command line, ``--traj "w-8, left-2, d-4"``, in
HY-WorldPlay's grammar (Tencent-Hunyuan/HY-WorldPlay).

Grammar: comma-separated items ``ACTION-COUNT``; COUNT is a whole number of **latent frames**
(4 video frames each, as in WorldPlay), the items play one after the other.

==========  ==============================================  =================================
action      motion per latent frame                         camera axis (OpenCV, frame 0 = identity)
==========  ==============================================  =================================
``w``       forward :data:`STEP` reference depths           +z of the current camera
``s``       backward :data:`STEP` reference depths          -z
``a``       left :data:`STEP` reference depths              -x
``d``       right :data:`STEP` reference depths             +x
``left``    yaw :data:`TURN_DEG` degrees to the left        about the camera's y (down) axis
``right``   yaw :data:`TURN_DEG` degrees to the right
``up``      pitch :data:`TURN_DEG` degrees up               about the camera's x axis
``down``    pitch :data:`TURN_DEG` degrees down
==========  ==============================================  =================================

A path of ``K`` latent frames in total has ``1 + 4K`` video frames (WorldPlay: ``w-31`` generates
``1 + 31`` latents); each latent's camera is built exactly as WorldPlay builds it and the video
frames between two latents are interpolated (slerp / linear), so latent frame ``j`` is video frame
``4j``. Units: WorldPlay moves 0.08 "units" and turns 3 degrees per latent; mirage reads the
translation in **reference depths** (the input image's median depth, ``scale: relative``), so a
pose string adapts to the scene's size. The vertical field of view is WorldPlay's default camera's
(K = 969.70 px focal at 1920 x 1080: 58.2 degrees), as a field of view only (it fits any aspect);
24 fps like WorldPlay's videos.

Matched against HY-WorldPlay at commit da2d0c2: ``hyvideo/generate.py`` lines 59-143
(``parse_pose_string``: the actions, ``forward_speed = 0.08`` and 3 degrees per latent, lines
80-82), lines 146-170 (the default K, lines 160-164), ``hyvideo/generate_custom_trajectory.py``
lines 20-83 (``generate_camera_trajectory_local``: yaw then pitch right-multiplied onto the
rotation, translations along the rotated camera's z and x), ``README.md`` lines 286-300 (the
examples) and ``hyvideo/generate.py`` line 292 (``fps=24``). Unlike WorldPlay (which truncates
``right-0.5`` to 0 latents) a count must be a whole number >= 1.

This module is torch-free up to :func:`pose_string_trajectory` (``mirage generate``'s option
checks recognise a pose string before torch is imported).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import MirageError

STEP = 0.08
"""Translation per latent frame, in reference depths (WorldPlay's ``forward_speed``)."""
TURN_DEG = 3.0
"""Rotation per latent frame, degrees (WorldPlay's ``yaw_speed`` / ``pitch_speed``)."""
FRAMES_PER_LATENT = 4
"""Video frames per latent frame (Wan's and HunyuanVideo's temporal factor)."""
FPS = 24.0
"""WorldPlay's video frame rate."""
FOCAL_PX, SIZE = 969.6969696969696, (1920, 1080)
"""WorldPlay's default camera: focal length in pixels at (W, H) (``hyvideo/generate.py`` lines 160-164)."""

MOVES = {"w": (2, 1.0), "s": (2, -1.0), "a": (0, -1.0), "d": (0, 1.0)}
"""Translation actions: (camera axis, sign)."""
TURNS = {"left": ("yaw", -1.0), "right": ("yaw", 1.0), "up": ("pitch", 1.0), "down": ("pitch", -1.0)}
"""Rotation actions: (kind, sign); yaw about the camera's y axis, pitch about its x axis."""
ACTIONS = tuple(MOVES) + tuple(TURNS)

_ITEM = r"\s*[A-Za-z]+\s*-\s*[0-9.][^,\s]*\s*"
_PATTERN = re.compile(rf"{_ITEM}(,{_ITEM})*,?\s*")


@dataclass(frozen=True)
class PoseStep:
    """One item of a pose string: ``action`` (a key of :data:`MOVES` or :data:`TURNS`) for ``latents`` latent frames."""

    action: str
    latents: int


def is_pose_string(text: str) -> bool:
    """True when ``text`` has the shape of a pose string (``ACTION-COUNT`` items, no path separator);
    whether each action and count is valid is :func:`parse_pose_string`'s to say."""
    return "/" not in text and "\\" not in text and bool(_PATTERN.fullmatch(text))


def parse_pose_string(text: str) -> list[PoseStep]:
    """The steps of a pose string.

    Raises:
        MirageError: ``--traj 'TEXT': item K 'ITEM': <problem>`` for an unknown action, a count that
        is not a whole number >= 1, or an item without ``-``.
    """
    steps = []
    items = [it.strip() for it in text.split(",")]
    for k, item in enumerate(items, 1):
        if not item:
            if k == len(items):  # a trailing comma
                continue
            raise MirageError(f"--traj {text!r}: item {k}: empty (items are ACTION-COUNT separated by commas)")
        where = f"--traj {text!r}: item {k} {item!r}"
        action, sep, count = (s.strip() for s in item.partition("-"))
        if not sep:
            raise MirageError(f"{where}: expected ACTION-COUNT, e.g. w-8")
        if action.lower() not in ACTIONS:
            raise MirageError(f"{where}: unknown action {action!r} (w, s, a, d move forward, back, left, right; "
                              "left, right, up, down turn)")
        if not count.isdigit() or int(count) < 1:
            raise MirageError(f"{where}: the count must be a whole number of latent frames >= 1 (got {count!r})")
        steps.append(PoseStep(action.lower(), int(count)))
    if not steps:
        raise MirageError(f"--traj {text!r}: no items")
    return steps


def pose_string_trajectory(text: str):
    """The :class:`~mirage_cli.trajectories.trajectory.Trajectory` of a pose string: ``1 + 4K``
    frames for ``K`` latent frames, OpenCV c2w with frame 0 the identity, translations in reference
    depths (``scale = "relative"``), WorldPlay's field of view (``fov_only``), 24 fps."""
    import torch

    from ..geometry.cameras import Cameras
    from ..geometry.rotations import rotation_x, rotation_y
    from .trajectory import Trajectory, resample

    steps = parse_pose_string(text)
    turn = torch.tensor(math.radians(TURN_DEG), dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    latents = [T.clone()]
    for step in steps:
        for _ in range(step.latents):
            if step.action in TURNS:  # generate_camera_trajectory_local: R = R @ rot_y(yaw) / rot_x(pitch)
                kind, sign = TURNS[step.action]
                T[:3, :3] = T[:3, :3] @ (rotation_y if kind == "yaw" else rotation_x)(sign * turn)[0]
            else:  # world_t = R @ local_t
                axis, sign = MOVES[step.action]
                local = torch.zeros(3, dtype=torch.float64)
                local[axis] = sign * STEP
                T[:3, 3] += T[:3, :3] @ local
            latents.append(T.clone())
    c2w = torch.stack(latents)
    fov = math.degrees(2 * math.atan(SIZE[1] / 2 / FOCAL_PX))
    cams = Cameras.from_fov(c2w, fov, *SIZE)
    traj = Trajectory(cams, FPS, "pose-string", "relative", text, True, meta={"pose_string": text})
    return resample(traj, FRAMES_PER_LATENT * (len(latents) - 1) + 1)

