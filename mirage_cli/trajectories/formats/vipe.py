"""ViPE's camera artifacts (nv-tlabs/vipe): ``pose/NAME.npz`` with ``intrinsics/NAME.npz`` (and
``rgb/NAME.mp4``, whose size the pixel intrinsics refer to). LingBot-World's README points to ViPE
for making its camera files, and Lyra 2 runs ViPE on its generated videos.

=========================  ==================  =================================================
file: key                  shape               meaning
=========================  ==================  =================================================
``pose/NAME.npz: data``    ``(N, 4, 4)``       camera-to-world, OpenCV axes
``pose/NAME.npz: inds``    ``(N,)`` int        video frame index of each pose
``intrinsics/NAME.npz``    ``data (N, 4)``     ``[fx, fy, cx, cy]`` pixels, ``inds (N,)``
``intrinsics/NAME_camera.txt``                 ``frame: TYPE`` lines; only ``PINHOLE`` is read
=========================  ==================  =================================================

Matched against ViPE's own code at commit 157494a: ``vipe/utils/io.py`` lines 44-62 (the layout:
``pose/``, ``intrinsics/``, ``rgb/`` beside each other, one ``NAME`` per video), lines 146-164
("Save OpenCV cam2world matrices as 4x4 matrix in npz file": ``np.savez(path, data=pose_data,
inds=pose_inds)``), lines 184-205 ("Save intrinsics as [fx, fy, cx, cy] in npz file") and line 225
(pinhole intrinsics have 4 numbers); ViPE's COLMAP converter (``vipe_to_colmap`` in its ``scripts``
folder) writes the same numbers as a COLMAP PINHOLE camera at the video's size. A flat folder holding ``pose.npz`` and
``intrinsics.npz`` (the layout other tools copy) is read too.

The image size is the size of ``rgb/NAME.mp4`` when it is there; otherwise twice the principal
point (ViPE's principal point is the image centre for a pinhole video), with a note. Frames missing
from ``inds`` (ViPE drops frames without a pose) are noted: the trajectory holds the posed frames.
Read only: a writer could not record the image size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import MirageError
from ...geometry.cameras import Cameras
from ..trajectory import DEFAULT_FPS, Trajectory
from .arrays import check_shape, is_zip, load_npz, normalized, npz_keys, poses_to_opencv_c2w, require
from .common import Format

NAME = "vipe"
NEEDS = "a ViPE artifact holds data and inds"


def _is_artifact(path: Path) -> bool:
    return is_zip(path) and {"data", "inds"} <= npz_keys(path)


def detect(path: Path) -> bool:
    """An ``.npz`` with ``data`` and ``inds``; given ViPE's intrinsics file, the error names the pose file."""
    if not _is_artifact(path):
        return False
    if path.parent.name == "intrinsics" or path.name == "intrinsics.npz":
        raise MirageError(f"{path}: this is ViPE's intrinsics file; pass the pose file "
                          f"({_pose_for(path)}) instead")
    return True


def _pose_for(intrinsics: Path) -> Path:
    if intrinsics.parent.name == "intrinsics":
        return intrinsics.parent.parent / "pose" / intrinsics.name
    return intrinsics.parent / "pose.npz"


def siblings(path: Path) -> tuple[Path, Path, Path]:
    """``(intrinsics npz, camera-type txt, rgb mp4)`` of a pose file: ViPE's ``pose/NAME.npz`` layout,
    else the flat ``pose.npz`` + ``intrinsics.npz`` one."""
    if path.parent.name == "pose":
        root, name = path.parent.parent, path.stem
        return root / "intrinsics" / f"{name}.npz", root / "intrinsics" / f"{name}_camera.txt", root / "rgb" / f"{name}.mp4"
    return path.parent / "intrinsics.npz", path.parent / "intrinsics_camera.txt", path.parent / "rgb.mp4"


def _check_pinhole(camera_txt: Path) -> None:
    if not camera_txt.is_file():
        return
    for lineno, line in enumerate(camera_txt.read_text(errors="replace").splitlines(), 1):
        kind = line.split(":", 1)[-1].strip()
        if line.strip() and kind != "PINHOLE":
            raise MirageError(f"{camera_txt}: line {lineno}: camera type {kind!r} is not supported (only PINHOLE)")


def _video_size(mp4: Path) -> tuple[int, int] | None:
    if not mp4.is_file():
        return None
    import imageio.v2 as iio

    try:
        r = iio.get_reader(str(mp4), "ffmpeg")  # (imageio's stub types `with ... as r` as the base class)
        with r:
            W, H = r.get_meta_data()["size"]
        return int(W), int(H)
    except Exception as e:  # any decoder failure is a bad input file
        raise MirageError(f"{mp4}: cannot read the video's size ({e.__class__.__name__}: {e})") from e


def read(path: Path, _unused: Path | None = None) -> Trajectory:
    """ViPE ``pose/NAME.npz`` (OpenCV c2w) with ``intrinsics/NAME.npz`` (pixels of the video)."""
    src = str(path)
    pose = load_npz(path)
    mats = check_shape(require(pose, "data", src, NEEDS), (None, 4, 4), src, "data")
    inds = check_shape(require(pose, "inds", src, NEEDS), (len(mats),), src, "inds")
    ipath, camera_txt, mp4 = siblings(path)
    if not ipath.is_file():
        raise MirageError(f"{src}: ViPE intrinsics not found (looked for {ipath})")
    intr = load_npz(ipath)
    K = check_shape(require(intr, "data", str(ipath), NEEDS), (None, 4), str(ipath), "data")
    kinds = check_shape(require(intr, "inds", str(ipath), NEEDS), (len(K),), str(ipath), "inds")
    _check_pinhole(camera_txt)
    where = {int(i): k for k, i in enumerate(kinds.tolist())}
    missing = [int(i) for i in inds.tolist() if int(i) not in where]
    if missing:
        raise MirageError(f"{ipath}: inds: frame {missing[0]} has a pose but no intrinsics")
    K = K[[where[int(i)] for i in inds.tolist()]]
    notes: list[str] = []
    size = _video_size(mp4)
    if size is None:
        size = (round(2 * float(K[0, 2])), round(2 * float(K[0, 3])))
        notes.append(f"{src}: no {mp4.name} beside the artifacts: image size taken as twice the principal point, "
                     f"{size[0]}x{size[1]}")
    gaps = int(inds[-1]) - int(inds[0]) + 1 - len(inds)
    if gaps > 0 or np.any(np.diff(inds) <= 0):
        notes.append(f"{src}: inds: {len(inds)} posed frames between video frames {int(inds[0])} and {int(inds[-1])} "
                     "(ViPE keeps only frames with a pose); the trajectory holds the posed frames")
    c2w = poses_to_opencv_c2w(mats, "c2w", src, "data")
    cams = Cameras(c2w, normalized(K[:, 0], K[:, 1], K[:, 2], K[:, 3], *size, str(ipath), "data"), *size)
    return Trajectory(cams, DEFAULT_FPS, NAME, "absolute", src, False, notes=tuple(notes))


FORMAT = Format(NAME, "npz", detect, read)
