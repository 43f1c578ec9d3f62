"""COLMAP text model: ``images.txt`` (w2c, Hamilton quaternion ``QW QX QY QZ``, ``TX TY TZ``,
OpenCV axes) with its sibling ``cameras.txt`` (pixel intrinsics; distortion is ignored).

Images are ordered by NAME (natural order: ``img_2`` before ``img_10``). A model folder (holding
``images.txt`` or ``sparse/0/images.txt``) can be given instead of the file. Written as one
PINHOLE camera per distinct intrinsics and images named ``frame_%05d.png``; COLMAP keeps no fps.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import MirageError
from ...geometry.cameras import Cameras
from ...geometry.rotations import quaternion_to_rotation, rotation_to_quaternion
from ..trajectory import DEFAULT_FPS, Trajectory
from .common import Format, atomic_write_text, err, floats, natural_key, read_text, rnd, to_opencv_c2w

NAME = "colmap"

QUATERNION_TOL = 1e-3
"""Tolerance on COLMAP quaternions: ``| |q| - 1 | <= 1e-3``."""

_MODELS = {  # model -> (number of parameters, how to get fx, fy, cx, cy)
    "SIMPLE_PINHOLE": (3, lambda p: (p[0], p[0], p[1], p[2])),
    "PINHOLE": (4, lambda p: (p[0], p[1], p[2], p[3])),
    "SIMPLE_RADIAL": (4, lambda p: (p[0], p[0], p[1], p[2])),
    "RADIAL": (5, lambda p: (p[0], p[0], p[1], p[2])),
    "OPENCV": (8, lambda p: (p[0], p[1], p[2], p[3])),
    "FULL_OPENCV": (12, lambda p: (p[0], p[1], p[2], p[3])),
}


# ===================================================================================== detection
def model_file(path: Path) -> Path:
    """The ``images.txt`` of a COLMAP model folder (in it or in ``sparse/0``)."""
    for cand in (path / "images.txt", path / "sparse" / "0" / "images.txt"):
        if cand.is_file():
            return cand
    binary = "; found images.bin: convert it with `colmap model_converter --output_type TXT`" \
        if (path / "images.bin").exists() else ""
    raise MirageError(f"{path}: is a directory without a COLMAP images.txt{binary}")


def is_image_line(tokens: list[str]) -> bool:
    """``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` (NAME not a number, to tell it from points)."""
    return (len(tokens) >= 10 and tokens[0].isdigit() and tokens[8].isdigit()
            and floats(tokens[1:8]) is not None and floats(tokens[9:10]) is None)


def _first_tokens(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return lines[0].split() if lines else []


def detect(text: str) -> bool:
    """The first content line is an image line ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME``."""
    return is_image_line(_first_tokens(text))


def is_cameras_file(text: str) -> bool:
    """True for a ``cameras.txt`` (``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...``), given by mistake."""
    first = _first_tokens(text)
    return len(first) >= 4 and first[0].isdigit() and bool(re.fullmatch(r"[A-Z_]+", first[1])) \
        and bool(floats(first[2:]))


# ===================================================================================== reading
def read(text: str, path: Path) -> Trajectory:
    """COLMAP ``images.txt`` (w2c, Hamilton ``QW QX QY QZ``) + sibling ``cameras.txt``; sorted by NAME."""
    src = str(path)
    records = _images(text, src)
    cameras = _cameras(path.parent / "cameras.txt", src)
    records.sort(key=lambda r: natural_key(r[3]))
    c2ws, intr, sizes = [], [], []
    for i, (lineno, q, t, name, cam_id) in enumerate(records):
        where = f" (image '{name}', line {lineno})"
        norm = math.sqrt(sum(x * x for x in q))
        if abs(norm - 1) > QUATERNION_TOL:
            raise err(src, f"quaternion is not unit length (|q| = {norm:.4g}, tolerance {QUATERNION_TOL:g})",
                      i, "QW QX QY QZ", where)
        M = torch.eye(4, dtype=torch.float64)
        M[:3, :3] = quaternion_to_rotation(torch.tensor(q))
        M[:3, 3] = torch.tensor(t, dtype=torch.float64)
        c2ws.append(to_opencv_c2w(M, "opencv", "w2c", src, i, "QW QX QY QZ TX TY TZ", where))
        if cam_id not in cameras:
            raise err(src, f"{cam_id} is not in cameras.txt", i, "CAMERA_ID", where)
        (W, H), k = cameras[cam_id]
        intr.append(k)
        sizes.append((W, H))
    _check_aspects(sizes, src)
    return Trajectory(Cameras(torch.stack(c2ws), torch.tensor(intr, dtype=torch.float64), *sizes[0]),
                      DEFAULT_FPS, NAME, "absolute", src, False)


def _images(text: str, src: str) -> list[tuple[int, list[float], list[float], str, int]]:
    """``(line, q, t, name, camera_id)`` per image line; 2D-point lines (all numbers) are skipped."""
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if is_image_line(tokens):
            v = [float(x) for x in tokens[1:8]]
            if not all(math.isfinite(x) for x in v):
                raise err(src, "contains NaN or inf", extra=f": line {lineno}")
            records.append((lineno, v[:4], v[4:], " ".join(tokens[9:]), int(tokens[8])))
        elif floats(tokens) is None:
            raise MirageError(f"{src}: line {lineno}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME' "
                              "or a line of 2D points")
    if not records:
        raise MirageError(f"{src}: empty camera path (no images)")
    return records


def _cameras(path: Path, src: str) -> dict[int, tuple[tuple[int, int], list[float]]]:
    """``CAMERA_ID -> ((W, H), normalized intrinsics)`` from ``cameras.txt`` (distortion is ignored)."""
    if not path.is_file():
        raise MirageError(f"{src}: COLMAP cameras.txt not found next to it (looked for {path})")
    cams, csrc = {}, str(path)
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        model = tokens[1] if len(tokens) > 1 else ""
        if model not in _MODELS:
            raise MirageError(f"{csrc}: line {lineno}: camera model {model!r} is not supported "
                              f"(supported: {', '.join(_MODELS)})")
        nparams, pick = _MODELS[model]
        nums = floats(tokens[2:])
        if not tokens[0].isdigit() or nums is None or len(nums) != 2 + nparams:
            raise MirageError(f"{csrc}: line {lineno}: inconsistent counts: {model} needs "
                              f"'CAMERA_ID {model} WIDTH HEIGHT' + {nparams} parameters")
        if not all(math.isfinite(x) for x in nums):
            raise MirageError(f"{csrc}: line {lineno}: contains NaN or inf")
        W, H = int(nums[0]), int(nums[1])
        fx, fy, cx, cy = pick(nums[2:])
        if W <= 0 or H <= 0:
            raise MirageError(f"{csrc}: line {lineno}: WIDTH HEIGHT must be positive")
        if fx <= 0 or fy <= 0:
            raise MirageError(f"{csrc}: line {lineno}: focal length must be positive (got fx={fx:g}, fy={fy:g})")
        cams[int(tokens[0])] = ((W, H), [fx / W, fy / H, cx / W, cy / H])
    return cams


def _check_aspects(sizes: list[tuple[int, int]], src: str) -> None:
    a0 = sizes[0][0] / sizes[0][1]
    for i, (W, H) in enumerate(sizes):
        if abs(W / H - a0) > 0.01 * a0:
            raise err(src, f"image size {W}x{H} has another aspect ratio than frame 0's "
                      f"{sizes[0][0]}x{sizes[0][1]}", i, "CAMERA_ID")


# ===================================================================================== writing
def paths(path: str | Path) -> tuple[Path, Path]:
    """Where the writer puts ``(images.txt, cameras.txt)`` for an output path.

    A path ending in ``.txt`` is the ``images.txt`` itself (``cameras.txt`` goes next to it);
    anything else is a directory that receives both files.
    """
    path = Path(path)
    images = path if path.suffix == ".txt" else path / "images.txt"
    return images, images.parent / "cameras.txt"


@dataclass(frozen=True)
class ModelCamera:
    """One COLMAP PINHOLE camera: ``params = (fx, fy, cx, cy)`` in pixels of ``width x height``."""

    camera_id: int
    width: int
    height: int
    params: tuple[float, float, float, float]


@dataclass(frozen=True)
class ModelImage:
    """One COLMAP image: w2c as a Hamilton quaternion ``qvec = (QW, QX, QY, QZ)`` and ``tvec``."""

    image_id: int
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]
    camera_id: int
    name: str


def model_records(cams: Cameras, names: list[str] | None = None) -> tuple[list[ModelCamera], list[ModelImage]]:
    """The cameras and images of a COLMAP model of ``cams``: one PINHOLE camera per distinct
    intrinsics (rounded to 10 places), image ``i`` (id ``i + 1``) named ``names[i]`` (default
    ``frame_%05d.png``), its pose the OpenCV w2c (COLMAP's convention)."""
    W, H = cams.width, cams.height
    K = (cams.intrinsics * torch.tensor([W, H, W, H], dtype=torch.float64)).tolist()
    cam_ids: dict[tuple[float, float, float, float], int] = {}
    cameras, images = [], []
    w2c = cams.w2c
    q = rotation_to_quaternion(w2c[:, :3, :3])
    for i in range(len(cams)):
        fx, fy, cx, cy = (rnd(v) for v in K[i])
        key = (fx, fy, cx, cy)
        if key not in cam_ids:
            cam_ids[key] = len(cam_ids) + 1
            cameras.append(ModelCamera(cam_ids[key], W, H, key))
        qw, qx, qy, qz, tx, ty, tz = (rnd(v) for v in q[i].tolist() + w2c[i, :3, 3].tolist())
        name = names[i] if names is not None else f"frame_{i:05d}.png"
        images.append(ModelImage(i + 1, (qw, qx, qy, qz), (tx, ty, tz), cam_ids[key], name))
    return cameras, images


def model_texts(cameras: list[ModelCamera], images: list[ModelImage]) -> tuple[str, str]:
    """``(images.txt, cameras.txt)`` of COLMAP's text model (each image's 2D-point line empty)."""
    cam_lines = ["# Camera list with one line of data per camera:",
                 "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    cam_lines += [f"{c.camera_id} PINHOLE {c.width} {c.height} " + " ".join(repr(v) for v in c.params) for c in cameras]
    img_lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
                 "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for im in images:
        img_lines.append(f"{im.image_id} " + " ".join(repr(v) for v in im.qvec + im.tvec) + f" {im.camera_id} {im.name}")
        img_lines.append("")
    return "\n".join(img_lines) + "\n", "\n".join(cam_lines) + "\n"


def texts(traj: Trajectory) -> tuple[str, str]:
    """``(images.txt, cameras.txt)``: one PINHOLE camera per distinct intrinsics, images frame_%05d.png."""
    return model_texts(*model_records(traj.cameras))


def write(traj: Trajectory, path: Path) -> list[Path]:
    """Write ``images.txt`` and ``cameras.txt`` (see :func:`paths`) atomically; returns both paths."""
    images, cameras = paths(path)
    img_text, cam_text = texts(traj)
    atomic_write_text(cameras, cam_text)
    atomic_write_text(images, img_text)
    return [images, cameras]


FORMAT = Format(NAME, "text", detect, read, write=write)
