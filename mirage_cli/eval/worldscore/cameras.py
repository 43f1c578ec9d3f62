"""WorldScore's cameras: a camera path -> keyframe and interpolated cameras -> ``camera_data.json``.

A port of ``CameraGen`` (WorldScore@344983c: ``worldscore/benchmark/helpers/camera_generator.py``),
step for step and in its dtypes, so that ``camera_data.json`` holds the cameras WorldScore's own
loader would write for the instance (within float32 rounding: WorldScore inverts on its GPU):

1. Cameras are PyTorch3D-style extrinsics ``RT = [[R, T], [0, 1]]`` (float32), starting from the
   identity. For each layout, every camera is re-expressed relative to the current last one
   (``transform_all_cam_to_current_cam``, lines 298-307: ``RT <- RT @ inv(RT_last)``), then one
   keyframe is appended (``generate_keyframe_cameras``, 309-330): ``push_in`` / ``pull_out``:
   ``T_z -/+= speed``; ``move_left`` / ``move_right``: ``T_x -/+= speed / 2``; ``pan_left`` /
   ``pan_right``: ``R <- R @ Ry(+/-30 deg)`` (222-256); ``orbit_left`` / ``orbit_right``:
   ``RT <- [R, T_neg] @ Ry4(-/+30 deg) @ [R, T_pos]`` with ``T_neg_z = speed - T_z``,
   ``T_pos_z = T_z - speed`` (164-220). ``Ry(theta) = [[cos, 0, -sin], [0, 1, 0], [sin, 0, cos]]``.
2. All cameras are re-expressed relative to the first (line 346), so keyframe 0 is the identity.
3. Between consecutive keyframes, ``frames - 2`` cameras at ``t = i / (frames - 1)``: rotation by
   quaternion slerp, ``T`` linearly (``interp_cameras``, 108-130), then the second keyframe.
4. Each camera is saved as ``c2w = inv(diag(-1, 1, -1, 1) @ RT)`` in float32
   (``convert_extrinsics_blender``, 14-25): a camera-to-world pose in Blender axes (x right, y up,
   z backward, = OpenGL). ``save_cameras`` (355-382) writes ``{"focal_length", "scale" (= the
   camera speed), "cameras" (keyframes), "cameras_interp" (every frame)}``, 4x4 nested lists.

The evaluator reads ``cameras_interp`` and ``scale`` (``worldscore/benchmark/helpers/evaluator.py:677-683``: one camera per
frame, translations divided by ``scale``). mirage reads the same matrices as OpenGL c2w
(``trajectories/formats/worldscore.py``: ``c2w @ diag(1, -1, -1, 1)`` to OpenCV), with the focal
length in pixels at the frame size and a centred principal point (as the reference runner,
``microsoft/LatentSpatialMemory/eval/run_worldscore.py``, ``build_intrinsics`` /
``convert_worldscore_poses``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ...errors import MirageError
from ...geometry.rotations import quaternion_to_rotation, rotation_to_quaternion, slerp
from ...trajectories.formats.common import from_opencv_c2w
from ...trajectories.formats.worldscore import read
from .layouts import FIXED, LAYOUTS, MOVING

ROTATION_DEG = 30.0
"""``rotation_range_theta`` (worldscore/benchmark/helpers/camera_generator.py:93): the angle of one pan or orbit layout."""
BLENDER_FROM_PT3D = torch.diag(torch.tensor([-1.0, 1.0, -1.0, 1.0]))
"""``pt3d_to_blender`` (worldscore/benchmark/helpers/camera_generator.py:17-19)."""


def _rt(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``CameraExtrinsics.update_RT`` (lines 45-52): ``[[R, T], [0, 0, 0, 1]]`` in R's dtype (T
    promoted with it, as ``torch.cat`` does)."""
    RT = torch.cat((R, T), dim=1)
    return torch.cat((RT, torch.tensor([[0, 0, 0, 1]], dtype=R.dtype)), dim=0)


def _ry3(deg: float) -> torch.Tensor:
    theta = torch.deg2rad(torch.tensor(deg))
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.tensor([[c, 0, -s], [0, 1, 0], [s, 0, c]])


def _ry4(deg: float) -> torch.Tensor:
    theta = torch.deg2rad(torch.tensor(deg))
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.tensor([[c, 0, -s, 0], [0, 1, 0, 0], [s, 0, c, 0], [0, 0, 0, 1]])


def keyframe(RT: torch.Tensor, layout: str, speed: float = 1.0) -> torch.Tensor:
    """The keyframe one ``layout`` makes from the current last camera ``RT (4, 4)`` (float32)."""
    R, T = RT[:3, :3].clone(), RT[:3, 3:].clone()
    if layout in ("push_in", "pull_out"):
        T[2] += speed if layout == "pull_out" else -speed
    elif layout in ("move_left", "move_right"):
        T[0] += speed * 0.5 if layout == "move_right" else -speed * 0.5
    elif layout in ("pan_left", "pan_right"):
        R = R @ _ry3(ROTATION_DEG if layout == "pan_left" else -ROTATION_DEG)
    elif layout in ("orbit_left", "orbit_right"):
        t_neg, t_pos, z = T.clone(), T.clone(), T[2].clone()
        t_neg[2], t_pos[2] = speed - z, z - speed
        return _rt(R, t_neg) @ _ry4(-ROTATION_DEG if layout == "orbit_left" else ROTATION_DEG) @ _rt(R, t_pos)
    else:
        raise MirageError(f"camera_path: layout '{layout}' is not one WorldScore's camera generator makes "
                          f"({', '.join(MOVING)})")
    return _rt(R, T)


def keyframes(camera_path: list[str], speed: float = 1.0) -> list[torch.Tensor]:
    """The keyframe extrinsics ``RT (4, 4)`` of a camera path, the first the identity (steps 1-2).
    A ``fixed`` path (dynamic instances; WorldScore makes no cameras for them) is the identity."""
    cams = [torch.eye(4)]
    if list(camera_path) == [FIXED]:
        return cams
    for layout in camera_path:
        inv = torch.inverse(cams[-1])
        cams = [c @ inv for c in cams]
        cams.append(keyframe(cams[-1], layout, speed))
    inv = torch.inverse(cams[0])
    return [c @ inv for c in cams]


def interpolate(kf: list[torch.Tensor], frames: int) -> list[torch.Tensor]:
    """Every frame's extrinsics (step 3): the first keyframe, then per pair ``frames - 2`` slerped
    cameras and the second keyframe; ``len = (len(kf) - 1) * (frames - 1) + 1``. A single keyframe
    (a fixed camera) repeats for ``frames`` frames."""
    if len(kf) == 1:
        return [kf[0].clone() for _ in range(frames)]
    out = [kf[0]]
    n = frames - 1
    for a, b in zip(kf[:-1], kf[1:]):
        q = rotation_to_quaternion(torch.stack([a[:3, :3], b[:3, :3]]).double())
        t = torch.tensor([i / n for i in range(1, n)], dtype=torch.float64)
        rots = quaternion_to_rotation(slerp(q[:1].expand(len(t), 4), q[1:].expand(len(t), 4), t))
        for i in range(1, n):
            T = a[:3, 3:] + (i / n) * (b[:3, 3:] - a[:3, 3:])  # float32, as numpy keeps it
            out.append(_rt(rots[i - 1], T))
        out.append(b)
    return out


def blender_c2w(RT: torch.Tensor) -> torch.Tensor:
    """``convert_extrinsics_blender`` (step 4): ``inv(diag(-1, 1, -1, 1) @ RT)`` in float32, ``(4, 4)``."""
    return torch.inverse(BLENDER_FROM_PT3D @ RT.to(torch.float32))


def camera_data(camera_path: list[str], frames: int, focal_length: float, speed: float = 1.0) -> dict:
    """``camera_data.json`` as ``CameraGen.save_cameras`` writes it (lines 355-382): ``focal_length``
    (pixels), ``scale`` (the camera speed), ``cameras`` (keyframes) and ``cameras_interp`` (one per
    frame), each a 4x4 nested list of a Blender c2w.

    Raises:
        MirageError: a layout WorldScore's camera generator does not make.
    """
    unknown = [name for name in camera_path if name not in LAYOUTS]
    if unknown:
        raise MirageError(f"camera_path: unknown layout '{unknown[0]}' (WorldScore's are {', '.join(LAYOUTS)})")
    kf = keyframes(camera_path, speed)
    return {
        "focal_length": focal_length,
        "scale": speed,
        "cameras": [blender_c2w(c).tolist() for c in kf],
        "cameras_interp": [blender_c2w(c).tolist() for c in interpolate(kf, frames)],
    }


def to_trajectory(data: dict, size: tuple[int, int], fps: float, source: Path | str):
    """``camera_data.json`` content as a mirage :class:`~mirage_cli.trajectories.Trajectory`
    (OpenCV c2w, normalised intrinsics ``f / W, f / H, 0.5, 0.5``, absolute units) through mirage's
    WorldScore reader, given the frame ``size = (W, H)`` and ``fps`` it does not hold."""
    W, H = size
    return read({**data, "width": W, "height": H, "fps": fps}, Path(source))


def from_trajectory(cameras) -> list[list[list[float]]]:
    """The inverse of :func:`to_trajectory` for the poses: OpenCV c2w ``(N, 4, 4)`` -> Blender c2w
    nested lists (what ``camera_data.json`` holds)."""
    return from_opencv_c2w(cameras.c2w, "opengl", "c2w").tolist()


def max_difference(a: list, b: list) -> float:
    """Largest absolute difference between two lists of 4x4 matrices (inf when their shapes differ)."""
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float((ta - tb).abs().max()) if ta.shape == tb.shape else math.inf
