"""Evaluation clips: true frames along known cameras, from a file, a folder or the synthetic scenes.

A :class:`Clip` is what ``mirage eval recon`` generates from (frame 0, its depth, the cameras) and
compares with (every true frame). SOURCE spellings (:func:`read_sources`):

- ``geometry.npz``: the reference pipeline's file (``poses_c2w (N,4,4)`` OpenCV c2w, ``intrinsics
  (N,3,3)`` in pixels at the frames' size, ``depths (N,H,W)`` z-depth, ``frames (N,H,W,3) uint8``,
  else ``clip.mp4`` beside the file). Read with ``allow_pickle=False``.
- a folder of frames or an MP4, with ``--traj FILE`` (any supported trajectory format, e.g. a
  RealEstate10K/CameraCtrl ``.txt``) and optional ``--depth FILE`` for frame 0; or a folder holding
  ``frames/`` (or ``*.mp4``), one trajectory file (``*.txt``/``*.json``) and optionally
  ``depth.npy`` (frame 0's depth).
- ``synthetic[:SCENE[:TRAJ]]``: :mod:`mirage_cli.data.scenes` ray-cast exactly along presets (and
  ``out_and_back``, a path that leaves and returns), with exact depth for every frame.
  ``synthetic[:SCENE]:loops``: the closed paths of :data:`LOOP_SUITE` instead (last camera = frame
  0's), each also by name (``synthetic:room:orbit_360``, ``...:pan_and_back``, ``...:figure_eight``).

Frames are uint8 like any real clip (a synthetic render is rounded once, as a PNG would be), so a
generator that reproduces them exactly scores the PSNR cap.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..bench.scene import check_inside_room
from ..data.scenes import SCENE_NAMES, default_camera, make_scene
from ..errors import MirageError
from ..geometry.cameras import Cameras, validate_cameras
from ..io import read_video, to_uint8
from ..pipeline.plan import reference_depth, scale_cameras
from ..trajectories import PRESETS, load_trajectory, resample

SYNTHETIC_SUITE = ("orbit_left", "dolly_in", "out_and_back")
"""The trajectories of ``synthetic`` (and of ``synthetic:SCENE``); ``out_and_back`` revisits."""
LOOP_SUITE = ("orbit_360", "pan_and_back", "figure_eight")
"""The closed paths of ``synthetic:loops`` (and ``synthetic:SCENE:loops``): the last frame has frame
0's camera. ``orbit_360``: the preset (a full turn around the room's centre); ``pan_and_back``:
``pan_right`` there, then the same poses back; ``figure_eight``: a lemniscate translation."""
LOOPS = "loops"
"""The TRAJ (or SCENE, in ``synthetic:loops``) that names :data:`LOOP_SUITE`."""
SYNTHETIC_PATHS = ("out_and_back", "pan_and_back", "figure_eight")
"""Synthetic trajectories that are not presets (a preset name is a TRAJ too)."""
FIGURE_EIGHT = (0.3, 0.15, 0.08)
"""Half-widths of ``figure_eight`` along x (right), y (down) and z (forward), in reference depths:
``x = a sin 2pi s``, ``y = b sin 4pi s``, ``z = c sin^2 2pi s`` for ``s`` in [0, 1]."""
SYNTHETIC_SIZE = (208, 120)
"""``(width, height)`` of synthetic clips by default: small enough for the preview suite in well
under a minute on two cores, and 1:1 with the preview's pixel grid (``--downscale`` 1)."""
SYNTHETIC_FRAMES = 25
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
TRAJ_SUFFIXES = (".txt", ".json")


@dataclass
class Clip:
    """One evaluation clip.

    Attributes:
        name: a folder-safe name (``DIR/<name>/``).
        frames: ``(N, H, W, 3)`` uint8 true frames; frame 0 is the generator's input.
        cameras: ``(N)`` cameras at ``W x H`` (c2w OpenCV, absolute units of ``depth0``).
        depth0: ``(H, W)`` float32 z-depth of frame 0, or None (then the usual depth sources).
        depths: ``(N, H, W)`` float32 true z-depth of every frame, or None (only for the
            camera-following check).
        fps: frames per second. source: how the clip was named. synthetic: an exact render.
    """

    name: str
    frames: np.ndarray
    cameras: Cameras
    depth0: torch.Tensor | None
    depths: torch.Tensor | None
    fps: float
    source: str
    synthetic: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


# ------------------------------------------------------------------------------------ dispatch
def clip_specs(sources: list[str], traj: str | None = None, depth: str | None = None, frames: int | None = None,
               size: tuple[int, int] | None = None) -> list[dict]:
    """Every SOURCE as clip specs: plain data naming one clip each (``name``, ``source``, ``traj``,
    ``depth``, ``frames``, ``size``), so a batch worker can read the clip again (:func:`read_clip`).
    ``synthetic`` gives several; ``frames`` keeps the first N frames of a file clip and sets the
    length of synthetic ones; ``size`` = ``(W, H)`` of synthetic clips. ``traj``/``depth`` belong
    to a single frames-folder or MP4 source. Two clips of one name get ``-<index>`` suffixes."""
    if (traj or depth) and len(sources) != 1:
        raise MirageError("--traj/--depth: give them with exactly one frames-folder or MP4 SOURCE")
    specs: list[dict] = []
    for s in sources:
        if s == "synthetic" or s.startswith("synthetic:"):
            specs += [{"name": f"{scene}-{t}", "source": f"synthetic:{scene}:{t}", "traj": None, "depth": None,
                       "frames": frames or SYNTHETIC_FRAMES, "size": list(size or SYNTHETIC_SIZE)}
                      for scene, t in synthetic_names(s, frames or SYNTHETIC_FRAMES)]
            continue
        path = Path(s)
        if not path.exists():
            raise MirageError(f"{s}: no such clip (a geometry.npz, a frames folder or MP4, a manifest, or "
                              "synthetic[:SCENE[:TRAJ]])")
        if path.suffix != ".npz" and not (path.is_dir() and traj is None) and traj is None:
            raise MirageError(f"{s}: a frames folder or MP4 needs its cameras: --traj FILE")
        specs.append({"name": _clip_name(path), "source": s, "traj": traj, "depth": depth, "frames": frames, "size": None})
    names = [c["name"] for c in specs]
    for i, c in enumerate(specs):  # two clips called geometry.npz in different folders: keep both
        if names.count(c["name"]) > 1:
            c["name"] = f"{c['name']}-{i}"
    return specs


def read_clip(spec: dict) -> Clip:
    """The clip a spec of :func:`clip_specs` (or a manifest row) names."""
    frames = spec.get("frames")
    if spec["source"].startswith("synthetic:"):
        _, scene, t = spec["source"].split(":")
        assert frames is not None  # clip_specs sets it for a synthetic clip (a manifest row's clip is a path)
        clip = synthetic_clip(scene, t, frames, tuple(spec["size"]))
    else:
        path = Path(spec["source"])
        if path.suffix == ".npz":
            clip = read_npz_clip(path)
        elif path.is_dir() and spec.get("traj") is None:
            clip = read_folder_clip(path)
        else:
            if spec.get("traj") is None:
                raise MirageError(f"{path}: a frames folder or MP4 needs its cameras (traj)")
            clip = read_frames_clip(path, Path(spec["traj"]), Path(spec["depth"]) if spec.get("depth") else None)
        clip = _first(clip, frames) if frames else clip
    clip.name = spec["name"]
    return clip


def read_sources(sources: list[str], traj: str | None = None, depth: str | None = None, frames: int | None = None,
                 size: tuple[int, int] | None = None) -> list[Clip]:
    """Every SOURCE read as clips (see :func:`clip_specs`)."""
    return [read_clip(s) for s in clip_specs(sources, traj, depth, frames, size)]


def _first(clip: Clip, n: int) -> Clip:
    """The first ``n`` frames of a clip (``--frames``)."""
    if n < 2:
        raise MirageError(f"--frames: must be >= 2 (got {n})")
    cams = clip.cameras[:n]
    return Clip(clip.name, clip.frames[:n], cams, clip.depth0, None if clip.depths is None else clip.depths[:n],
                clip.fps, clip.source, clip.synthetic)


def check_clip(name: str, frames: np.ndarray, cameras: Cameras, depth0: torch.Tensor | None) -> None:
    """One line for every malformed clip: frame count vs camera count, frame layout, depth size."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MirageError(f"{name}: frames must be (N, H, W, 3) uint8 (got {tuple(frames.shape)} {frames.dtype})")
    if len(frames) < 2:
        raise MirageError(f"{name}: needs at least 2 frames (frame 0 is the input), got {len(frames)}")
    if len(frames) != len(cameras):
        raise MirageError(f"{name}: {len(frames)} frames but {len(cameras)} cameras; they must match one to one")
    validate_cameras(cameras, name)
    if depth0 is not None and tuple(depth0.shape) != tuple(frames.shape[1:3]):
        raise MirageError(f"{name}: frame 0's depth is {tuple(depth0.shape)} but the frames are {tuple(frames.shape[1:3])}")


# ------------------------------------------------------------------------------------ geometry.npz
def read_npz_clip(path: Path) -> Clip:
    """A reference-pipeline ``geometry.npz`` (keys in the module docstring); pixel intrinsics are
    normalised by the frames' width and height."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise MirageError(f"{path}: not a readable .npz ({e.__class__.__name__}: {e})") from e
    for key in ("poses_c2w", "intrinsics", "depths"):
        if key not in data:
            raise MirageError(f"{path}: missing '{key}' (a geometry.npz has poses_c2w, intrinsics, depths, frames)")
    if "frames" in data:
        frames = data["frames"]
    elif (path.parent / "clip.mp4").exists():
        frames = read_video(path.parent / "clip.mp4")
    else:
        raise MirageError(f"{path}: no true frames to compare with (no 'frames' key and no clip.mp4 beside it)")
    poses, K, depths = data["poses_c2w"], data["intrinsics"], data["depths"]
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or K.ndim != 3 or K.shape[1:] != (3, 3) or len(K) != len(poses):
        raise MirageError(f"{path}: poses_c2w {poses.shape} / intrinsics {K.shape} must be (N,4,4) / (N,3,3)")
    if depths.ndim != 3 or len(depths) != len(poses):
        raise MirageError(f"{path}: depths {depths.shape} must be (N, H, W) with N = {len(poses)} poses")
    frames = np.asarray(frames)
    if frames.ndim == 4 and tuple(frames.shape[1:3]) != tuple(depths.shape[1:]):
        raise MirageError(f"{path}: frames are {frames.shape[1:3]} but depths {depths.shape[1:]}: intrinsics refer to one size")
    H, W = depths.shape[1:]
    Kt = torch.as_tensor(K, dtype=torch.float64)
    intr = torch.stack([Kt[:, 0, 0] / W, Kt[:, 1, 1] / H, Kt[:, 0, 2] / W, Kt[:, 1, 2] / H], dim=1)
    cams = Cameras(torch.as_tensor(poses, dtype=torch.float64), intr, W, H)
    dep = torch.as_tensor(np.asarray(depths, dtype=np.float32))
    check_clip(str(path), frames, cams, dep[0])
    fps = float(data["fps"]) if "fps" in data and np.asarray(data["fps"]).size == 1 else 16.0
    return Clip(_clip_name(path), frames, cams, dep[0], dep, fps, str(path))


# ------------------------------------------------------------------------------------ frames + trajectory
def read_frames_clip(frames_path: Path, traj_path: Path, depth_path: Path | None = None) -> Clip:
    """A folder of frames (sorted by name) or an MP4, with the cameras of a trajectory file."""
    frames = _read_frames(frames_path)
    if not traj_path.exists():
        raise MirageError(f"{traj_path}: trajectory file not found")
    traj = load_trajectory(traj_path)
    H, W = frames.shape[1:3]
    cams = Cameras(traj.cameras.c2w, traj.cameras.intrinsics, W, H)
    if traj.fov_only:
        cams = Cameras.from_fov(traj.cameras.c2w, traj.cameras.fov_y_deg, W, H)
    depth0 = None
    if depth_path is not None:
        from ..geometry.depth import load_depth_file

        depth0 = load_depth_file(depth_path)
    check_clip(str(frames_path), frames, cams, depth0)
    return Clip(_clip_name(frames_path), frames, cams, depth0, None, float(traj.fps), str(frames_path))


def read_folder_clip(folder: Path) -> Clip:
    """A clip folder: ``frames/`` (or one ``*.mp4``), exactly one trajectory file, optional ``depth.npy``."""
    frames = folder / "frames"
    if not frames.is_dir():
        videos = sorted(folder.glob("*.mp4"))
        if len(videos) != 1:
            raise MirageError(f"{folder}: a clip folder holds frames/ or exactly one .mp4 (with --traj, a folder of frames)")
        frames = videos[0]
    trajs = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in TRAJ_SUFFIXES)
    if len(trajs) != 1:
        raise MirageError(f"{folder}: a clip folder holds exactly one trajectory file (.txt/.json), found {len(trajs)}")
    depth = folder / "depth.npy"
    clip = read_frames_clip(frames, trajs[0], depth if depth.exists() else None)
    clip.name, clip.source = _clip_name(folder), str(folder)
    return clip


def _read_frames(path: Path) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 from a folder of images or a video file."""
    if not path.exists():
        raise MirageError(f"{path}: frames not found")
    if path.is_dir():
        from PIL import Image, UnidentifiedImageError

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise MirageError(f"{path}: no frames ({', '.join(FRAME_SUFFIXES)}) in the folder")
        arrs = []
        for f in files:
            try:
                with Image.open(f) as im:
                    arrs.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as e:
                raise MirageError(f"{f}: not a readable image ({e.__class__.__name__})") from e
        if len({a.shape for a in arrs}) != 1:
            raise MirageError(f"{path}: the frames differ in size")
        return np.stack(arrs)
    try:
        return np.asarray(read_video(path))
    except (OSError, RuntimeError, ValueError) as e:
        raise MirageError(f"{path}: not a readable video ({e.__class__.__name__})") from e


def _clip_name(path: Path) -> str:
    """``data/scene1/geometry.npz`` -> ``scene1``; ``clips/a.mp4`` -> ``a``."""
    stem = path.stem if path.is_file() else path.name
    if stem in ("geometry", "frames", "clip") and path.parent.name:
        stem = path.parent.name
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem) or "clip"


# ------------------------------------------------------------------------------------ synthetic
def synthetic_names(spec: str, frames: int) -> list[tuple[str, str]]:
    """``synthetic[:SCENE[:TRAJ]]`` -> its ``(scene, trajectory)`` pairs (``SYNTHETIC_SUITE`` when
    TRAJ is absent); names checked here, before anything is rendered."""
    parts = spec.split(":")
    if len(parts) > 3:
        raise MirageError(f"{spec}: expected synthetic[:SCENE[:TRAJ]] or synthetic[:SCENE]:loops")
    if len(parts) == 2 and parts[1] == LOOPS:  # synthetic:loops = every scene's closed paths
        parts = ["synthetic", "", LOOPS]
    scenes = [parts[1]] if len(parts) > 1 and parts[1] else list(SCENE_NAMES)
    trajs = [parts[2]] if len(parts) > 2 and parts[2] else list(SYNTHETIC_SUITE)
    if trajs == [LOOPS]:
        trajs = list(LOOP_SUITE)
    if frames < 3:
        raise MirageError(f"--frames: synthetic clips need >= 3 frames (got {frames})")
    for s in scenes:
        if s not in SCENE_NAMES:
            raise MirageError(f"{spec}: unknown scene '{s}' (choose from {', '.join(SCENE_NAMES)})")
    for t in trajs:
        if t not in SYNTHETIC_PATHS and t not in PRESETS:
            raise MirageError(f"synthetic:{scenes[0]}:{t}: unknown trajectory (a preset name, "
                              f"{', '.join(SYNTHETIC_PATHS)} or {LOOPS})")
    return [(s, t) for s in scenes for t in trajs]


def synthetic_clips(spec: str, frames: int, size: tuple[int, int]) -> list[Clip]:
    """``synthetic[:SCENE[:TRAJ]]`` -> one clip per trajectory (``SYNTHETIC_SUITE`` when TRAJ is absent)."""
    return [synthetic_clip(s, t, frames, size) for s, t in synthetic_names(spec, frames)]


def synthetic_clip(scene_name: str, traj_name: str, frames: int, size: tuple[int, int], seed: int = 0) -> Clip:
    """Render ``scene_name`` exactly along preset ``traj_name`` (or one of :data:`SYNTHETIC_PATHS`) at ``size``.

    As in ``mirage bench``: the room's default camera is frame 0, a relative preset is scaled by
    frame 0's median depth, an orbit turns around the room's centre, every camera stays inside.
    ``out_and_back``: ``orbit_left`` for the first half, then the same poses in reverse, so the
    second half revisits the first (the last frame is frame 0's camera for an odd ``frames``).
    ``pan_and_back``: the same with ``pan_right``, closed for any ``frames`` (an even count shows
    the turning pose twice). ``figure_eight``: see :data:`FIGURE_EIGHT`. The paths of
    :data:`LOOP_SUITE` end exactly (to rounding) on frame 0's camera. ``seed``: the scene's texture
    seed (:func:`~mirage_cli.data.scenes.make_scene`; the geometry does not depend on it).
    """
    W, H = size
    scene = make_scene(scene_name, seed)
    cam0 = default_camera(W, H)
    _, d0 = scene.render(cam0)
    ref = reference_depth(d0[0])
    base = {"out_and_back": "orbit_left", "pan_and_back": "pan_right", "figure_eight": "static"}.get(traj_name, traj_name)
    if base not in PRESETS:
        raise MirageError(f"synthetic:{scene_name}:{traj_name}: unknown trajectory (a preset name or "
                          f"{', '.join(SYNTHETIC_PATHS)})")
    overrides = {}
    if "look_at_depth" in PRESETS[base].params:
        overrides["look_at_depth"] = float(scene.center[2]) / ref
    n_out, idx = _there_and_back(traj_name, frames)
    traj = resample(load_trajectory(base, **overrides), n_out)
    if traj_name == "figure_eight":
        traj = _figure_eight(traj)
    cams = scale_cameras(traj.cameras_for(W, H), traj.scale, ref)
    if idx is not None:
        cams = Cameras(cams.c2w[idx], cams.intrinsics[idx], W, H)
    cams = Cameras(cam0.c2w[0] @ cams.c2w, cams.intrinsics, W, H)  # frame 0 = the room's default camera
    check_inside_room(f"synthetic:{scene_name}:{traj_name}", cams, scene)
    rgb, depth = scene.render(cams)
    return Clip(f"{scene_name}-{traj_name}", to_uint8(rgb), cams, depth[0], depth, float(traj.fps),
                f"synthetic:{scene_name}:{traj_name}", synthetic=True)


def _there_and_back(traj_name: str, frames: int) -> tuple[int, list[int] | None]:
    """``(frames of the outward path, the frame order)`` of a there-and-back path (None: the path
    as it is). ``out_and_back`` keeps its historical order (closed for odd ``frames`` only);
    ``pan_and_back`` returns to frame 0 for any ``frames``."""
    if traj_name == "out_and_back":
        n_out = frames // 2 + 1
        return n_out, list(range(n_out)) + list(range(n_out - 2, n_out - 2 - (frames - n_out), -1))
    if traj_name == "pan_and_back":
        n_out = (frames + 1) // 2
        return n_out, list(range(n_out)) + list(range(frames - n_out - 1, -1, -1))
    return frames, None


def _figure_eight(static):
    """``static`` (a resampled ``static`` preset: identity poses, its fov) moved along the
    :data:`FIGURE_EIGHT` lemniscate, in reference depths (the trajectory stays ``relative``)."""
    a, b, c = FIGURE_EIGHT
    cams = static.cameras
    s = torch.linspace(0, 1, len(cams), dtype=torch.float64)
    c2w = cams.c2w.clone()
    c2w[:, 0, 3] = a * torch.sin(2 * math.pi * s)
    c2w[:, 1, 3] = b * torch.sin(4 * math.pi * s)
    c2w[:, 2, 3] = c * torch.sin(2 * math.pi * s) ** 2
    return dataclasses.replace(static, cameras=Cameras(c2w, cams.intrinsics, cams.width, cams.height),
                               source="figure_eight")
