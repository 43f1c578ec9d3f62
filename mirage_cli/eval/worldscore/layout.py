"""The output tree WorldScore's evaluator reads, and the files of one instance.

``OUT/worldscore_output/`` is ``runs_root/output_dir`` of WorldScore's config (``output_dir:
worldscore_output`` in ``config/base_config.yaml``); one folder per instance (``Instance.rel_dir``)::

    static/<visual_style>/<scene_type>/<category>/<name>/     dynamic/<visual_style>/<motion_type>/<name>/
      input_image.png      the dataset image centre-cropped to the aspect and resized to the resolution
      image_data.json      the dataset object + num_scenes, total_frames (+ anchor_frame_idx, static)
      camera_data.json     static only: the cameras (cameras.py)
      frames/000.png ...   every frame, lossless, total_frames of them
      videos/output.mp4    the same frames, H.264 at the config's fps
      time.txt             "generate_time: <seconds>\\n"

What each file matches in WorldScore@344983c (paths in that repository):

- ``input_image.png``: ``center_crop``, ``worldscore/benchmark/utils/utils.py:440-469`` (here also
  converted to RGB);
- ``image_data.json``: ``Helper.store_data``, ``worldscore/benchmark/helpers/helper.py:29-37``
  (``json.dump(indent=4)``);
- ``camera_data.json``: ``CameraGen.save_cameras``,
  ``worldscore/benchmark/helpers/camera_generator.py:355-382``;
- ``frames/``: ``save_frames``, ``worldscore/benchmark/utils/utils.py:214-217`` (``{i:03d}.png``);
- ``videos/output.mp4``: ``merge_video``, ``worldscore/benchmark/utils/utils.py:316-324``;
- ``time.txt``: ``Helper.save``, ``worldscore/benchmark/helpers/helper.py:62-65``.

The readers, all in ``worldscore/benchmark/helpers/evaluator.py``: ``Evaluator.data_exists``
(697-734), ``process_batch`` (75-107 static, 173-195 dynamic) and ``calculate_metrics`` (676-683:
as many frames as cameras as ``total_frames``).

mirage's own files stay outside that tree (the evaluator would take any extra folder for an
instance): each instance's run in ``OUT/runs/<job id>/run/`` with its trajectory beside it.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np

from ...errors import MirageError
from ...io import atomic_path, write_video
from .dataset import Instance
from .layouts import anchor_frames, scene_count, total_frames

OUTPUT_DIR = "worldscore_output"
"""``output_dir`` of WorldScore's ``config/base_config.yaml``."""
RUNS_DIR = "runs"
FRAMES, VIDEO, TIME = "frames", "videos/output.mp4", "time.txt"
IMAGE, IMAGE_DATA, CAMERA_DATA = "input_image.png", "image_data.json", "camera_data.json"


def instance_dir(out: Path, inst: Instance) -> Path:
    return Path(out) / OUTPUT_DIR / inst.rel_dir


def run_dir(out: Path, inst: Instance) -> Path:
    """The instance's mirage run (outside ``worldscore_output``)."""
    return Path(out) / RUNS_DIR / inst.job_id / "run"


def trajectory_path(out: Path, inst: Instance) -> Path:
    return Path(out) / RUNS_DIR / inst.job_id / "trajectory.json"


def image_data(inst: Instance, frames: int) -> dict:
    """``image_data.json``: the dataset object with ``num_scenes``, ``total_frames`` and, static,
    ``anchor_frame_idx`` added (``worldscore/benchmark/helpers/helper.py:29-37``)."""
    data = dict(inst.record)
    data["num_scenes"] = scene_count(list(inst.camera_path))
    data["total_frames"] = total_frames(list(inst.camera_path), frames)
    if inst.movement == "static":
        data["anchor_frame_idx"] = anchor_frames(list(inst.camera_path), frames)
    return data


def write_json4(path: Path, data: dict) -> None:
    """JSON as WorldScore writes it (``indent=4``), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=4))


def center_crop(src: Path, size: tuple[int, int]):
    """WorldScore's ``center_crop`` (``worldscore/benchmark/utils/utils.py:440-469``): crop the centre to the aspect of
    ``size = (W, H)`` (integer division, as there), resize to ``size`` with Pillow's default filter;
    then RGB. Returns a PIL image.

    Raises:
        MirageError: the image does not decode.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(src) as image:
            width, height = image.size
            target = size[0] / size[1]
            if width / height > target:
                new_w, new_h = int(height * target), height
            else:
                new_w, new_h = width, int(width / target)
            left, top = (width - new_w) // 2, (height - new_h) // 2
            return image.crop((left, top, left + new_w, top + new_h)).resize(tuple(size)).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise MirageError(f"field 'image': {src} does not decode ({type(e).__name__}: {e})") from e


def write_png_if_changed(path: Path, image) -> None:
    """Save a PIL image as PNG, atomically, unless the file already holds exactly these bytes (a
    resumed run checks its input image's hash)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    if path.is_file() and path.read_bytes() == data:
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_inputs(out: Path, inst: Instance, frames: int, size: tuple[int, int], fps: float, cameras: dict) -> None:
    """What WorldScore writes before it generates: ``input_image.png``, ``image_data.json`` and,
    static, ``camera_data.json``; plus the run's trajectory (``cameras`` with the frame size and
    fps mirage's reader needs) outside the tree."""
    folder = instance_dir(out, inst)
    folder.mkdir(parents=True, exist_ok=True)
    write_png_if_changed(folder / IMAGE, center_crop(Path(inst.image), size))
    write_json4(folder / IMAGE_DATA, image_data(inst, frames))
    if inst.movement == "static":
        write_json4(folder / CAMERA_DATA, cameras)
    W, H = size
    write_json4(trajectory_path(out, inst), {**cameras, "width": W, "height": H, "fps": fps})


# ------------------------------------------------------------------------------------ the job's step
def write_instance(job, loaders) -> None:
    """The step of an instance's batch job (run by its worker, models loaded): the finished run's
    frames exactly as the loop made them (decoded again from its kept latents,
    ``pipeline.generate.reopen``) -> ``frames/``, ``videos/output.mp4``, then ``time.txt`` (last:
    it marks the instance done). ``job.then.args``: ``dir``, ``total_frames``, ``size``, ``fps``.

    Raises:
        MirageError: the run has another frame count or size than the config (a backend whose grid
            does not divide the resolution).
    """
    from ...pipeline.generate import reopen

    args = job.then.args
    folder = Path(args["dir"])
    run = reopen(Path(job.config.out), loaders)
    frames = np.stack(run.kept)
    n, (W, H) = int(args["total_frames"]), args["size"]
    if len(frames) != n or frames.shape[1:3] != (H, W):
        raise MirageError(f"{job.id}: the run made {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]}, the "
                          f"benchmark needs {n} of {W}x{H} (choose a resolution the backend's grid divides)")
    write_frames(folder / FRAMES, frames)
    write_video(folder / VIDEO, frames, float(args["fps"]))
    seconds = run.record.totals.wall_seconds if run.record.totals else 0.0
    with atomic_path(folder / TIME) as tmp:
        tmp.write_text(f"generate_time: {seconds}\n")


def write_frames(folder: Path, frames: np.ndarray) -> None:
    """``(N, H, W, 3)`` uint8 -> ``folder/000.png ...``, replacing the folder whole: the PNGs go to
    a sibling ``frames.partial`` first (no stray file ever sits in ``frames/``, where the evaluator
    counts every ``.png``)."""
    from PIL import Image

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(partial / f"{i:03d}.png", format="PNG")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
