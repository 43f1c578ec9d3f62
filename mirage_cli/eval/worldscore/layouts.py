"""WorldScore's camera layouts and the prompts it builds from them (torch-free).

A static instance's ``camera_path`` lists one layout per *scene* (``["pan_left", "move_left"]``:
two scenes); a dynamic instance's is ``["fixed"]``. Each scene adds ``frames - 1`` frames to the
first, so an instance has ``total_frames = scenes * (frames - 1) + 1`` frames and its anchor
(keyframe) frames are ``0, frames - 1, 2 (frames - 1), ...`` (WorldScore@344983c:
``worldscore/benchmark/helpers/dataloader.py:47-59``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """One entry of WorldScore's ``layout_info`` (``worldscore/benchmark/utils/utils.py:9-65``):
    how many scenes it adds, the words its prompt uses, and its type (``intra``: the camera stays
    in the scene, ``inter``: it moves to a new one, ``camera fix``)."""

    scenes: int
    words: str
    kind: str


LAYOUTS: dict[str, Layout] = {
    "push_in": Layout(1, "push in", "intra"),
    "pull_out": Layout(1, "pull out", "inter"),
    "move_left": Layout(1, "move left", "inter"),
    "move_right": Layout(1, "move right", "inter"),
    "orbit_left": Layout(1, "orbit left", "intra"),
    "orbit_right": Layout(1, "orbit right", "intra"),
    "pan_left": Layout(1, "pan left", "inter"),
    "pan_right": Layout(1, "pan right", "inter"),
    "pull_left": Layout(1, "move left, pull out, then pan left", "inter"),
    "pull_right": Layout(1, "move right, pull out, then pan right", "inter"),
    "fixed": Layout(1, "fixed", "camera fix"),
}

MOVING = ("push_in", "pull_out", "move_left", "move_right", "orbit_left", "orbit_right", "pan_left", "pan_right")
"""The layouts WorldScore's camera generator can make (``worldscore/benchmark/helpers/camera_generator.py:310-321``; its
``pull_left`` / ``pull_right`` are commented out there and raise "Invalid layout")."""

FIXED = "fixed"
"""The layout of a still camera (dynamic instances): no camera generator step, every camera the first."""


def scene_count(camera_path: list[str]) -> int:
    """``get_scene_num`` (``worldscore/benchmark/utils/utils.py:434-438``): the scenes of a camera path."""
    return sum(LAYOUTS[name].scenes for name in camera_path)


def total_frames(camera_path: list[str], frames: int) -> int:
    """Frames of an instance's video: ``scenes * (frames - 1) + 1`` (``worldscore/benchmark/helpers/dataloader.py:56-58``)."""
    return scene_count(camera_path) * (frames - 1) + 1


def anchor_frames(camera_path: list[str], frames: int) -> list[int]:
    """``anchor_frame_idx`` (``worldscore/benchmark/helpers/dataloader.py:47-55``): ``[0, frames-1, 2 (frames-1), ...]``, one
    more than there are scenes; the evaluator scores scene ``i`` on frames around anchor ``i``."""
    return [i * (frames - 1) for i in range(scene_count(camera_path) + 1)]


def with_style(prompts: list[str], style: str) -> list[str]:
    """``generate_prompt_list`` (``worldscore/benchmark/helpers/dataloader.py:7-15``): each prompt followed
    by the style sentence."""
    return [p + " " + style if p.endswith(".") else p + ". " + style for p in prompts]


def scene_prompts(styled: list[str], camera_path: list[str], static: bool) -> list[str]:
    """``generate_prompt_from_list`` (``worldscore/benchmark/utils/utils.py:411-432``): what WorldScore gives an image-to-video
    model, one prompt per scene. Static: ``"Camera <words>. <styled[i+1]>. Everything in the scene
    remains completely motionless."`` (``styled[0]`` describes the input image, ``styled[i+1]`` the
    scene the camera reaches); dynamic: ``"Camera <words>. <styled[0]>"`` for its one scene."""
    if static:
        return [f"Camera {LAYOUTS[name].words}. {styled[i + 1]}. Everything in the scene remains completely motionless."
                for i, name in enumerate(camera_path)]
    return [f"Camera {LAYOUTS[camera_path[0]].words}. {styled[0]}"]
