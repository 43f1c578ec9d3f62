"""RealEstate10K / CameraCtrl ``.txt``: an optional URL line, then per frame 19 numbers
``timestamp fx fy cx cy k1 k2`` (timestamp in microseconds, intrinsics normalized) followed by
the 3x4 **w2c** pose, row-major, OpenCV axes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ...errors import MirageError
from ...geometry.cameras import Cameras
from ..trajectory import DEFAULT_FPS, Trajectory
from . import colmap
from .common import Format, check_focal, check_plausible, err, flat, floats, matrix, rnd, to_opencv_c2w

NAME = "realestate10k"
NUMBERS_PER_LINE = 19
HEIGHT = 360
"""RealEstate10K has no image size: files are read as 360 px high with square pixels."""


def detect(text: Any) -> bool:
    """The first line of numbers has 19 of them (and the file is not a COLMAP images.txt)."""
    if colmap.detect(text):
        return False
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    numeric = [ln.split() for ln in lines if floats(ln.split()) is not None]
    return bool(numeric) and len(numeric[0]) == NUMBERS_PER_LINE


def _rows(text: str, src: str) -> list[tuple[int, list[float]]]:
    """``(line number, 19 numbers)`` per frame; the optional URL line is skipped."""
    first = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.strip())
    rows: list[tuple[int, list[float]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        values = floats(tokens)
        if values is None:
            if not rows and lineno == first:
                continue  # the optional URL line
            raise err(src, f"not a number in {line.strip()[:40]!r}", len(rows), extra=f" (line {lineno})")
        if len(values) != NUMBERS_PER_LINE:
            raise err(src, f"inconsistent counts: expected 19 numbers (timestamp fx fy cx cy k1 k2 + 3x4 w2c), "
                      f"got {len(values)}", len(rows), extra=f" (line {lineno})")
        rows.append((lineno, values))
    if not rows:
        raise MirageError(f"{src}: empty camera path (no frames)")
    return rows


def read(text: str, path: Path) -> Trajectory:
    """RealEstate10K / CameraCtrl: ``timestamp fx fy cx cy k1 k2`` + 3x4 w2c (OpenCV) per line."""
    src = str(path)
    rows = _rows(text, src)
    c2ws, intr = [], []
    for i, (lineno, v) in enumerate(rows):
        where = f" (line {lineno})"
        if not all(math.isfinite(x) for x in v):
            raise err(src, "contains NaN or inf", i, extra=where)
        check_focal(v[1], v[2], src, i, "fx fy", where)
        check_plausible(v[1:5], src, i, "fx fy cx cy", where)  # hand-written pixels would give black frames
        c2ws.append(to_opencv_c2w(matrix(v[7:19]), "opencv", "w2c", src, i, "w2c", where))
        intr.append(v[1:5])
    k = torch.tensor(intr, dtype=torch.float64)
    W = max(1, round(HEIGHT * float(k[0, 1] / k[0, 0])))  # the width that makes pixels square
    fps = _fps_from_timestamps([v[0] for _, v in rows])
    return Trajectory(Cameras(torch.stack(c2ws), k, W, HEIGHT), fps, NAME, "absolute", src, False)


def _fps_from_timestamps(ts: list[float]) -> float:
    """Frame rate from RealEstate10K timestamps (microseconds); :data:`DEFAULT_FPS` if unusable."""
    steps = sorted(b - a for a, b in zip(ts, ts[1:]))
    if not steps or steps[0] <= 0:
        return DEFAULT_FPS
    fps = 1e6 / steps[len(steps) // 2]
    return round(fps, 3) if 0.1 <= fps <= 1000 else DEFAULT_FPS


def text(traj: Trajectory) -> str:
    """RealEstate10K: a first line naming the source, then 19 numbers per frame."""
    w2c = traj.cameras.w2c
    lines = [f"mirage:{Path(traj.source).name or 'trajectory'}"]
    for i in range(len(traj)):
        ts = round(i * 1e6 / traj.fps)
        k = [rnd(v) for v in traj.cameras.intrinsics[i].tolist()]
        vals = [ts, *k, 0, 0, *flat(w2c[i][:3])]
        lines.append(" ".join(repr(v) if isinstance(v, float) else str(v) for v in vals))
    return "\n".join(lines) + "\n"


FORMAT = Format(NAME, "text", detect, read, text=text)
