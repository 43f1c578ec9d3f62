"""What the format modules share: the :class:`Format` record, field parsing with one-line errors,
pose conversion to OpenCV c2w, and text output helpers.

Error messages name the file, the frame (counted from 0) and the field, e.g.
``orbit.json: frame 12: camera_to_world: rotation is not orthonormal (...)``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, SupportsFloat

import torch

from ...errors import MirageError
from ...geometry.cameras import OPENGL_TO_OPENCV, rigid_inverse
from ...geometry.intrinsics import implausible_intrinsics
from ...geometry.rotations import check_rotation, orthonormalize
from ...io import atomic_path
from ..trajectory import DEFAULT_FPS, Trajectory

ASSUMED_SQUARE = 512
"""Image size assumed for focal lengths in pixels without an image size (WorldScore, NeRF)."""

ROTATION_TOL = 1e-3
"""Tolerance on rotations: ``max |R^T R - I| <= 1e-3`` and ``|det R - 1| <= 1e-3``."""


@dataclass(frozen=True)
class Format:
    """One trajectory file format, as the registry (:mod:`mirage_cli.trajectories.formats`) sees it.

    Attributes:
        name: the format's name (``Trajectory.format`` of what ``read`` returns).
        content: ``"json"`` (``detect``/``read`` get the parsed document) or ``"text"`` (they get the text).
        detect: True when the content is in this format (may raise a MirageError for a near miss).
        read: ``(content, path) -> Trajectory`` in project conventions (OpenCV c2w, normalized intrinsics).
        text: single-file writer ``(traj, **options) -> file content``; None for multi-file formats.
        write: multi-file writer ``(traj, path) -> files written``; None for single-file formats.
        options: writer options this format accepts (native: ``convention``, ``pose``).
        keeps_scale: the file can say ``scale: relative`` (translations in reference depths), so a
            relative trajectory written to it drives the same path when read back.
    """

    name: str
    content: str
    detect: Callable[[Any], bool]
    read: Callable[[Any, Path], Trajectory]
    text: Callable[..., str] | None = None
    write: Callable[[Trajectory, Path], list[Path]] | None = None
    options: tuple[str, ...] = ()
    keeps_scale: bool = False

    def save(self, traj: Trajectory, path: Path, **options: str) -> list[Path]:
        """Write ``traj`` to ``path`` atomically; returns the files written."""
        if self.write is not None:
            return self.write(traj, path, **options)
        assert self.text is not None, f"format {self.name} has no writer"
        atomic_write_text(path, self.text(traj, **options))
        return [path]


# ===================================================================================== errors
def err(src: str, msg: str, frame: int | None = None, fld: str | None = None, extra: str = "") -> MirageError:
    """``MirageError('<src>: frame <i><extra>: <field>: <msg>')``, leaving out the parts not given."""
    parts = [src]
    if frame is not None:
        parts.append(f"frame {frame}{extra}")
    elif extra:
        parts[0] += extra
    if fld:
        parts.append(fld)
    return MirageError(": ".join(parts + [msg]))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def numbers(value: Any, count: int | tuple[int, ...], src: str, frame: int | None, fld: str) -> list[float]:
    """Flatten a list (or list of lists) of numbers and check its length and finiteness."""
    flat = value
    if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
        flat = [x for r in value for x in r]
    if not isinstance(flat, list) or not all(_is_number(x) for x in flat):
        raise err(src, "expected a list of numbers", frame, fld)
    counts = (count,) if isinstance(count, int) else count
    if len(flat) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise err(src, f"expected {want} numbers, got {len(flat)}", frame, fld)
    if not all(math.isfinite(x) for x in flat):
        raise err(src, "contains NaN or inf", frame, fld)
    return [float(x) for x in flat]


def number(value: Any, src: str, frame: int | None, fld: str, positive: bool = False) -> float:
    """One finite number (optionally > 0)."""
    if not _is_number(value):
        raise err(src, f"expected a number, got {json.dumps(value)}", frame, fld)
    x = float(value)
    if not math.isfinite(x):
        raise err(src, "is NaN or inf", frame, fld)
    if positive and x <= 0:
        raise err(src, f"must be positive (got {x:g})", frame, fld)
    return x


def floats(tokens: list[str]) -> list[float] | None:
    """The tokens as numbers, or None when one is not a number."""
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def check_focal(fx: float, fy: float, src: str, frame: int | None, fld: str, extra: str = "") -> None:
    if fx <= 0 or fy <= 0:
        raise err(src, f"focal length must be positive (got fx={fx:g}, fy={fy:g})", frame, fld, extra)


def check_plausible(k: list[float], src: str, frame: int | None, fld: str, extra: str = "") -> None:
    """Refuse normalized intrinsics ``[fx, fy, cx, cy]`` that can only be pixels (see
    :func:`mirage_cli.geometry.intrinsics.implausible_intrinsics`)."""
    problem = implausible_intrinsics(k)
    if problem:
        raise err(src, problem, frame, fld, extra)


def natural_key(name: str) -> list:
    """Sort key for natural order: ``img_2`` before ``img_10`` (digit runs compare as numbers)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def check_fov(fov: float, src: str, frame: int | None, fld: str = "fov") -> None:
    if not 0 < fov < 180:
        raise err(src, f"must be between 0 and 180 degrees, exclusive (got {fov:g}); a non-positive fov "
                  "means a non-positive focal length", frame, fld)


# ===================================================================================== poses
def matrix(flat: list[float]) -> torch.Tensor:
    """``(4, 4)`` from 16 (row-major 4x4) or 12 (row-major 3x4) numbers."""
    M = torch.eye(4, dtype=torch.float64)
    M[: len(flat) // 4] = torch.tensor(flat, dtype=torch.float64).reshape(-1, 4)
    return M


def to_opencv_c2w(M: torch.Tensor, convention: str, pose: str, src: str, frame: int, fld: str,
                  extra: str = "") -> torch.Tensor:
    """Validate a ``(4, 4)`` pose from a file and return it as an OpenCV c2w.

    Args:
        M: the matrix as stored; ``pose`` says whether it is ``"c2w"`` or ``"w2c"`` and
            ``convention`` whether its camera axes are ``"opencv"`` or ``"opengl"`` (= Blender).
    Raises:
        MirageError: NaN/inf, bad last row, rotation not orthonormal or with det != +1.
    """
    if not torch.isfinite(M).all():
        raise err(src, "contains NaN or inf", frame, fld, extra)
    if (M[3] - torch.tensor([0, 0, 0, 1.0], dtype=M.dtype)).abs().max() > 1e-6:
        raise err(src, f"last row must be [0, 0, 0, 1] (got {[round(x, 6) for x in M[3].tolist()]})", frame, fld, extra)
    problem = check_rotation(M[:3, :3], ROTATION_TOL)
    if problem:
        raise err(src, problem, frame, fld, extra)
    M = M.clone()
    M[:3, :3] = orthonormalize(M[:3, :3])  # files keep ~6 decimals: snap to the exact rotation
    c2w = rigid_inverse(M) if pose == "w2c" else M
    return c2w @ OPENGL_TO_OPENCV if convention == "opengl" else c2w


def from_opencv_c2w(c2w: torch.Tensor, convention: str, pose: str) -> torch.Tensor:
    """Inverse of :func:`to_opencv_c2w`: ``(N, 4, 4)`` OpenCV c2w to the file's convention."""
    M = c2w @ OPENGL_TO_OPENCV if convention == "opengl" else c2w
    return rigid_inverse(M) if pose == "w2c" else M


# ===================================================================================== JSON fields
def fps_from(data: dict, n: int, src: str, lenient: bool = False) -> tuple[float, str | None]:
    """``(fps, note)``: ``fps`` if given, else frames / ``seconds``, else :data:`DEFAULT_FPS`.

    When ``fps x seconds`` disagrees with the number of cameras ``n`` (by more than one frame),
    a strict reader refuses; a ``lenient`` one (nerfstudio ``camera_path.json``, whose renderer
    plays the cameras over ``seconds`` and ignores ``fps``) uses ``n / seconds`` and returns a
    one-line note saying so (otherwise the note is None).
    """
    fps = number(data["fps"], src, None, "fps", positive=True) if "fps" in data else None
    secs = number(data["seconds"], src, None, "seconds", positive=True) if "seconds" in data else None
    if fps is not None and secs is not None and abs(fps * secs - n) > 1 + 1e-6:
        if not lenient:
            raise MirageError(f"{src}: inconsistent counts: fps x seconds = {fps * secs:g} frames but "
                              f"camera_path has {n}")
        return n / secs, (f"{src}: fps x seconds = {fps:g} x {secs:g} = {fps * secs:g} frames but the file has {n} "
                          f"cameras; using fps = cameras / seconds = {n / secs:g}, as nerfstudio's renderer does")
    if fps is not None:
        return fps, None
    return (n / secs if secs is not None else DEFAULT_FPS), None


def size_from(data: dict, src: str, wkey: str, hkey: str) -> tuple[int, int] | None:
    """``(W, H)`` in pixels from two fields, or None when both are absent."""
    if wkey not in data and hkey not in data:
        return None
    w = number(data.get(wkey), src, None, wkey, positive=True)
    h = number(data.get(hkey), src, None, hkey, positive=True)
    return round(w), round(h)


def list_field(data: dict, key: str, src: str) -> list:
    """A non-empty list of cameras under ``key``."""
    value = data.get(key)
    if not isinstance(value, list):
        raise MirageError(f"{src}: {key}: expected a list of cameras, got {type(value).__name__}")
    if not value:
        raise MirageError(f"{src}: {key}: empty camera path (no frames)")
    return value


# ===================================================================================== reading/writing
def read_text(path: Path) -> str:
    """The UTF-8 text of a trajectory file (a BOM is dropped); empty or binary files are errors."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MirageError(f"{path}: cannot read ({e.strerror or e})") from e
    if not raw.strip():
        raise MirageError(f"{path}: file is empty")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MirageError(f"{path}: unreadable: not a UTF-8 text file (byte {e.start}); "
                          "expected a JSON or text trajectory") from e


def rnd(x: SupportsFloat) -> float:
    """Round for files (stable text; no ``-0.0``)."""
    return round(float(x), 10) + 0.0


def flat(M: torch.Tensor) -> list[float]:
    """A matrix as a flat row-major list of rounded numbers."""
    return [rnd(v) for v in M.reshape(-1).tolist()]


def json_text(doc: dict, list_key: str) -> str:
    """JSON with one line per entry of ``doc[list_key]`` (readable, diff-friendly)."""
    head = {k: v for k, v in doc.items() if k != list_key}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    items = ",\n".join(f"    {json.dumps(e)}" for e in doc[list_key])
    return "{\n" + "\n".join(lines) + f"\n  {json.dumps(list_key)}: [\n{items}\n  ]\n}}\n"


def require_centred(traj: Trajectory, fmt: str) -> None:
    """Formats that only hold a vertical fov cannot hold an off-centre principal point."""
    k = traj.cameras.intrinsics
    if (k[:, 2:] - 0.5).abs().max() > 1e-6:
        raise MirageError(f"{traj.source}: cannot write {fmt}: it assumes a centred principal point "
                          "(write native, nerf, colmap or realestate10k instead)")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
