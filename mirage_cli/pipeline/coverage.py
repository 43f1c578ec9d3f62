"""How much of each frame the memory read covers, and the warning when it covers (almost) nothing
where the scene should be in view.

A frame whose read is (nearly) empty is generated from nothing: with the preview it is black or
inpainted noise, with a diffusion model an unrelated scene. When that frame also *looks into the
input image's view* (its optical axis within frame 0's field of view), the cameras are almost
certainly wrong: intrinsics in the wrong unit or fitted to another aspect, translations in the
wrong scale, or the wrong axis convention (OpenGL read as OpenCV, w2c read as c2w). A camera that
really turns away from what the input saw (a 180-degree pan) is not reported.
"""

from __future__ import annotations

import math

import torch

from ..geometry.cameras import Cameras, fov_from_focal

BLIND_FRACTION = 0.02
"""A frame whose read covers less than this fraction of its cells sees (almost) nothing."""


def known_per_frame(known: torch.Tensor) -> list[float]:
    """Fraction of covered cells of each frame of a read's known-mask ``(T, h, w)``, rounded to 1e-6."""
    return [round(float(v), 6) for v in known.flatten(1).float().mean(1).cpu()]


def looks_into_input_view(cams: Cameras, frames: list[int]) -> list[bool]:
    """Whether each of ``frames`` has its optical axis inside frame 0's field of view.

    ``cams`` are the run's cameras (poses relative to frame 0, OpenCV: the optical axis is the
    third column of the rotation). The test is on directions only, so a wrong scale or convention
    that throws the camera far away or behind the scene does not hide the problem.
    """
    fx, fy = float(cams.intrinsics[0, 0]), float(cams.intrinsics[0, 1])
    half = math.radians(max(fov_from_focal(fx), fov_from_focal(fy)) / 2)
    axes = cams.c2w[frames, :3, 2]
    cos = (axes @ cams.c2w[0, :3, 2]) / axes.norm(dim=-1)
    return [bool(c >= math.cos(half)) for c in cos]


def blind_frames_warning(frames: list[int], fractions: list[float], cams: Cameras) -> str | None:
    """One warning line for the frames that see (almost) nothing while facing the input's view, or None."""
    facing = looks_into_input_view(cams, frames)
    blind = [f for f, k, face in zip(frames, fractions, facing) if k < BLIND_FRACTION and face]
    if not blind:
        return None
    where = f"frame {blind[0]}" if len(blind) == 1 else f"frames {blind[0]}-{blind[-1]}"
    return (f"{where}: the memory covers under {BLIND_FRACTION:.0%} of the view although the camera faces what the "
            "input image showed; likely causes: intrinsics (pixels given as normalized, or --intrinsics), the "
            "trajectory's scale (absolute units vs the scene's depth), or its convention (OpenGL vs OpenCV, w2c vs c2w). "
            "run.json has the known fraction of every frame; `mirage traj show` the cameras")
