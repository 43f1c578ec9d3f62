"""Spatia's ``w2c.txt`` (+ sibling ``intrinsics.txt``): ZhaoJingjing713/Spatia ``Spatia/inference.py``
``read_w2cs_from_txt`` / ``read_intrinsics_from_txt``.

- ``w2c.txt``: JSON Lines, one camera per line, a nested 3x4 or 4x4 **world-to-camera** matrix
  (OpenCV axes; only ``[:3, :4]`` is used). The file as a whole is not JSON. Translations are metric
  (``scale: absolute``). One pose per output frame at 24 fps (Spatia's ``--fps``).
- ``intrinsics.txt``: exactly 4 numbers ``[fx fy cx cy]`` **normalized** (fx, cx by the width, fy, cy
  by the height), found anywhere in the file, one set for every frame. Spatia falls back to
  MapAnything's estimate when it is missing; mirage then uses a 60 degree vertical field of view (``--fov``
  overrides it).

The file has no image size: it is read at a nominal size near 704 px high (Spatia's ``--height``) whose
aspect gives square pixels; the run's frames take the image's size as for every format.
Written as both files (a path ending in ``.txt`` is the ``w2c.txt``, anything else a directory).
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from ...errors import MirageError
from ...geometry.cameras import Cameras
from ..trajectory import DEFAULT_HEIGHT, DEFAULT_WIDTH, Trajectory
from .common import Format, atomic_write_text, check_focal, err, read_text, rnd, to_opencv_c2w

NAME = "spatia"
FPS = 24.0  # Spatia's --fps
HEIGHT = 704  # Spatia's --height
INTRINSICS_FILE = "intrinsics.txt"
DEFAULT_FOV = 60.0  # degrees, vertical, when there is no intrinsics.txt
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _matrix(value: Any) -> bool:
    return (isinstance(value, list) and len(value) in (3, 4)
            and all(isinstance(r, list) and len(r) == 4 and all(isinstance(x, (int, float)) for x in r) for r in value))


def detect(text: Any) -> bool:
    """The first non-empty line is a JSON 3x4 / 4x4 matrix (and the text is more than one JSON document)."""
    first = next((ln for ln in str(text).splitlines() if ln.strip()), "")
    try:
        return _matrix(json.loads(first))
    except ValueError:
        return False


def _intrinsics(path: Path, src: str) -> list[float] | None:
    """The 4 normalized numbers of the sibling ``intrinsics.txt`` (None when there is none)."""
    f = path.parent / INTRINSICS_FILE
    if not f.is_file():
        return None
    vals = [float(x) for x in _FLOAT.findall(read_text(f))]
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise MirageError(f"{f}: expected exactly 4 numbers [fx fy cx cy] (normalized), found {len(vals)}")
    check_focal(vals[0], vals[1], str(f), 0, "fx fy")
    return vals


def read(text: str, path: Path) -> Trajectory:
    """``w2c.txt`` (JSON Lines of w2c matrices, OpenCV) + the sibling ``intrinsics.txt``."""
    src = str(path)
    c2ws: list[torch.Tensor] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue  # Spatia's json.loads would fail on a blank line; a blank line carries nothing
        where = f" (line {lineno})"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise err(src, f"not a JSON matrix ({e.msg})", len(c2ws), extra=where) from None
        if not _matrix(value):
            raise err(src, "expected a 3x4 or 4x4 matrix [[r11, r12, r13, t1], ...]", len(c2ws), "w2c", where)
        M = torch.eye(4, dtype=torch.float64)
        M[:3, :4] = torch.tensor(value[:3], dtype=torch.float64)
        if not bool(torch.isfinite(M).all()):
            raise err(src, "contains NaN or inf", len(c2ws), extra=where)
        c2ws.append(to_opencv_c2w(M, "opencv", "w2c", src, len(c2ws), "w2c", where))
    if not c2ws:
        raise MirageError(f"{src}: empty camera path (no frames)")
    k = _intrinsics(path, src)
    if k is None:  # Spatia would use MapAnything's estimate; here a vertical field of view (--fov overrides it)
        cams = Cameras.from_fov(torch.stack(c2ws), DEFAULT_FOV, DEFAULT_WIDTH, DEFAULT_HEIGHT)
        return Trajectory(cams, FPS, NAME, "absolute", src, True)
    else:
        # square pixels (fx W = fy H) at a size near HEIGHT whose aspect is fy / fx to ~1e-6
        frac = Fraction(k[1] / k[0]).limit_denominator(2000)
        m = max(1, round(HEIGHT / frac.denominator))
        W, H = frac.numerator * m, frac.denominator * m
        intr = torch.tensor([k] * len(c2ws), dtype=torch.float64)
    return Trajectory(Cameras(torch.stack(c2ws), intr, W, H), FPS, NAME, "absolute", src, False)


def paths(path: str | Path) -> tuple[Path, Path]:
    """``(w2c.txt, intrinsics.txt)`` for an output path (a ``.txt`` path is the w2c file)."""
    path = Path(path)
    w2c = path if path.suffix == ".txt" else path / "w2c.txt"
    return w2c, w2c.parent / INTRINSICS_FILE


def write(traj: Trajectory, path: Path) -> list[Path]:
    """Write ``w2c.txt`` (4x4 per line) and ``intrinsics.txt`` (frame 0's; Spatia has one set) atomically."""
    k = traj.cameras.intrinsics
    if bool((k - k[:1]).abs().max() > 1e-9):
        raise MirageError(f"{path}: Spatia's intrinsics.txt holds one set for all frames; this trajectory's vary")
    w2c_path, k_path = paths(path)
    w2c = traj.cameras.w2c
    lines = [json.dumps([[rnd(x) for x in row] for row in w2c[i].tolist()]) for i in range(len(w2c))]
    atomic_write_text(k_path, "[" + " ".join(repr(rnd(v)) for v in k[0].tolist()) + "]\n")
    atomic_write_text(w2c_path, "\n".join(lines) + "\n")
    return [w2c_path, k_path]


FORMAT = Format(NAME, "text", detect, read, write=write)
