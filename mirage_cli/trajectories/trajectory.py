"""Camera trajectories: reading, writing, resampling and validating camera paths.

A :class:`Trajectory` is N cameras plus a frame rate. Internally everything follows the project
conventions (see ``camera.py`` and DESIGN.md): **OpenCV** camera axes (x right, y down, z forward),
poses stored **camera-to-world**, intrinsics **normalized** ``[fx/W, fy/H, cx/W, cy/H]``.

Supported files, recognised by their *content* (never by their name):

=================  ==========================================================================
``native``         mirage JSON: nerfstudio ``camera_path.json`` plus ``convention``, ``pose``,
                   ``scale`` and per-camera normalized ``intrinsics``.
``nerfstudio``     nerfstudio ``camera_path.json``: OpenGL c2w, vertical ``fov`` in degrees.
``realestate10k``  RealEstate10K / CameraCtrl ``.txt``: 19 numbers per frame, w2c OpenCV.
``nerf``           NeRF / instant-ngp ``transforms.json``: OpenGL c2w ``transform_matrix``.
``colmap``         COLMAP text model ``images.txt`` (+ sibling ``cameras.txt``): w2c, quaternions.
``worldscore``     WorldScore ``camera_data.json``: ``cameras_interp`` c2w in Blender axes.
=================  ==========================================================================

Every problem is raised as a one-line :class:`~mirage_cli.errors.MirageError` naming the file,
the frame (counted from 0) and the field, e.g.
``orbit.json: frame 12: camera_to_world: rotation is not orthonormal (...)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..geometry.cameras import Cameras, check_rotation, rigid_inverse, validate_cameras
from ..errors import MirageError
from ..io import atomic_path

FORMATS = ("native", "nerfstudio", "realestate10k", "nerf", "colmap", "worldscore")
"""File formats this module reads (and writes, see :func:`write_trajectory`)."""

DEFAULT_FPS = 16.0
"""Frame rate given to files that do not state one."""

DEFAULT_WIDTH, DEFAULT_HEIGHT = 832, 480
"""Render size written for files that do not state one (Wan 480p)."""

ASSUMED_SQUARE = 512
"""Image size assumed for focal lengths in pixels without an image size (WorldScore, NeRF)."""

ROTATION_TOL = 1e-3
"""Tolerance on rotations: ``max |R^T R - I| <= 1e-3`` and ``|det R - 1| <= 1e-3``."""

FOV_AGREEMENT_DEG = 0.01
"""A camera's ``fov`` and ``intrinsics`` (fy/H) must give the same vertical fov within this."""

QUATERNION_TOL = 1e-3
"""Tolerance on COLMAP quaternions: ``| |q| - 1 | <= 1e-3``."""

OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
"""Right-multiply an OpenGL/Blender c2w by this to get an OpenCV c2w (and vice versa)."""

NATIVE_VERSION = 1


# ===================================================================================== container
@dataclass
class Trajectory:
    """N cameras along a path, as read from a file or made by a preset.

    Attributes:
        cameras: OpenCV camera-to-world poses ``c2w (N, 4, 4)`` exactly as read (**not** yet
            re-expressed relative to frame 0) and normalized intrinsics ``(N, 4)``.
        fps: frames per second.
        format: one of :data:`FORMATS` or ``"preset"``.
        scale: ``"absolute"`` (file units) or ``"relative"`` (translations in units of the
            scene's reference depth, i.e. the input image's median depth).
        source: the path read, or the preset name.
        fov_only: True when the intrinsics came only from a vertical field of view, so that they
            adapt to any aspect ratio (square pixels, centred principal point).
        meta: free-form extras (e.g. ``{"preset": {"name": ..., "params": {...}}}``).
    """

    cameras: Cameras
    fps: float
    format: str
    scale: str = "absolute"
    source: str = ""
    fov_only: bool = False
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cameras)

    def cameras_for(self, width: int, height: int) -> Cameras:
        """The cameras a ``width x height`` video is rendered with.

        Poses are re-expressed relative to frame 0 (frame 0 becomes the identity, the input
        image's camera). With ``fov_only`` the vertical field of view is kept (square pixels,
        centred principal point); otherwise the normalized intrinsics are kept as they are.

        Returns:
            ``Cameras`` with ``c2w (N, 4, 4)`` and ``intrinsics (N, 4)`` for that image size.
        """
        rel = self.cameras.relative_to_first()
        if self.fov_only:
            return Cameras.from_fov(rel.c2w, self.cameras.fov_y_deg, width, height)
        return Cameras(rel.c2w, rel.intrinsics, width, height)


# ===================================================================================== rotations
def quaternion_to_rotation(q: torch.Tensor) -> torch.Tensor:
    """Hamilton quaternions ``(..., 4)`` as ``[w, x, y, z]`` (normalized here) to ``(..., 3, 3)``."""
    q = torch.as_tensor(q, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def _rotation_to_quaternion_one(m: list[list[float]]) -> list[float]:
    """Shepperd's method for one rotation; returns ``[w, x, y, z]`` with ``w >= 0``."""
    d = [1 + m[0][0] + m[1][1] + m[2][2], 1 + m[0][0] - m[1][1] - m[2][2],
         1 - m[0][0] + m[1][1] - m[2][2], 1 - m[0][0] - m[1][1] + m[2][2]]
    k = max(range(4), key=lambda i: d[i])
    s = 2 * math.sqrt(max(d[k], 1e-300))
    if k == 0:
        q = [s / 4, (m[2][1] - m[1][2]) / s, (m[0][2] - m[2][0]) / s, (m[1][0] - m[0][1]) / s]
    elif k == 1:
        q = [(m[2][1] - m[1][2]) / s, s / 4, (m[0][1] + m[1][0]) / s, (m[0][2] + m[2][0]) / s]
    elif k == 2:
        q = [(m[0][2] - m[2][0]) / s, (m[0][1] + m[1][0]) / s, s / 4, (m[1][2] + m[2][1]) / s]
    else:
        q = [(m[1][0] - m[0][1]) / s, (m[0][2] + m[2][0]) / s, (m[1][2] + m[2][1]) / s, s / 4]
    return [-v for v in q] if q[0] < 0 else q


def rotation_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotations ``(N, 3, 3)`` (or ``(3, 3)``) to Hamilton quaternions ``[w, x, y, z]``, ``w >= 0``."""
    R = torch.as_tensor(R, dtype=torch.float64)
    flat = R.reshape(-1, 3, 3).tolist()
    q = torch.tensor([_rotation_to_quaternion_one(m) for m in flat], dtype=torch.float64)
    return q.reshape(*R.shape[:-2], 4)


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of unit quaternions ``(N, 4)`` at fractions ``t (N,)`` (shortest arc)."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    t = t[:, None]
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    near = sin < 1e-9
    safe = torch.where(near, torch.ones_like(sin), sin)
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / safe)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def rotation_angle_deg(R: torch.Tensor) -> torch.Tensor:
    """Angle in degrees of rotations ``(..., 3, 3)`` (numerically stable for small angles)."""
    cos = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    v = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    return torch.rad2deg(torch.atan2(v.norm(dim=-1) / 2, cos))


def orthonormalize(R: torch.Tensor) -> torch.Tensor:
    """Nearest proper rotation to ``R (3, 3)`` (polar decomposition through the SVD)."""
    U, _, Vh = torch.linalg.svd(R)
    D = torch.eye(3, dtype=R.dtype)
    D[2, 2] = torch.sign(torch.linalg.det(U @ Vh))
    return U @ D @ Vh


# ===================================================================================== errors
def _err(src: str, msg: str, frame: int | None = None, fld: str | None = None, extra: str = "") -> MirageError:
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


def _numbers(value: Any, count: int | tuple[int, ...], src: str, frame: int | None, fld: str) -> list[float]:
    """Flatten a list (or list of lists) of numbers and check its length and finiteness."""
    flat = value
    if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
        flat = [x for r in value for x in r]
    if not isinstance(flat, list) or not all(_is_number(x) for x in flat):
        raise _err(src, "expected a list of numbers", frame, fld)
    counts = (count,) if isinstance(count, int) else count
    if len(flat) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise _err(src, f"expected {want} numbers, got {len(flat)}", frame, fld)
    if not all(math.isfinite(x) for x in flat):
        raise _err(src, "contains NaN or inf", frame, fld)
    return [float(x) for x in flat]


def _number(value: Any, src: str, frame: int | None, fld: str, positive: bool = False) -> float:
    """One finite number (optionally > 0)."""
    if not _is_number(value):
        raise _err(src, f"expected a number, got {json.dumps(value)}", frame, fld)
    x = float(value)
    if not math.isfinite(x):
        raise _err(src, "is NaN or inf", frame, fld)
    if positive and x <= 0:
        raise _err(src, f"must be positive (got {x:g})", frame, fld)
    return x


def _matrix(flat: list[float]) -> torch.Tensor:
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
        raise _err(src, "contains NaN or inf", frame, fld, extra)
    if (M[3] - torch.tensor([0, 0, 0, 1.0], dtype=M.dtype)).abs().max() > 1e-6:
        raise _err(src, f"last row must be [0, 0, 0, 1] (got {[round(x, 6) for x in M[3].tolist()]})", frame, fld, extra)
    problem = check_rotation(M[:3, :3], ROTATION_TOL)
    if problem:
        raise _err(src, problem, frame, fld, extra)
    M = M.clone()
    M[:3, :3] = orthonormalize(M[:3, :3])
    c2w = rigid_inverse(M) if pose == "w2c" else M
    return c2w @ OPENGL_TO_OPENCV if convention == "opengl" else c2w


def from_opencv_c2w(c2w: torch.Tensor, convention: str, pose: str) -> torch.Tensor:
    """Inverse of :func:`to_opencv_c2w`: ``(N, 4, 4)`` OpenCV c2w to the file's convention."""
    M = c2w @ OPENGL_TO_OPENCV if convention == "opengl" else c2w
    return rigid_inverse(M) if pose == "w2c" else M


def _check_focal(fx: float, fy: float, src: str, frame: int | None, fld: str, extra: str = "") -> None:
    if fx <= 0 or fy <= 0:
        raise _err(src, f"focal length must be positive (got fx={fx:g}, fy={fy:g})", frame, fld, extra)


def _check_fov(fov: float, src: str, frame: int | None, fld: str = "fov") -> None:
    if not 0 < fov < 180:
        raise _err(src, f"must be between 0 and 180 degrees, exclusive (got {fov:g}); a non-positive fov "
                   "means a non-positive focal length", frame, fld)


def _fov_to_fy(fov_deg: float) -> float:
    """Normalized vertical focal ``fy/H`` of a vertical field of view in degrees."""
    return 0.5 / math.tan(math.radians(fov_deg) / 2)


def _fy_to_fov(fy_norm: float) -> float:
    return math.degrees(2 * math.atan(0.5 / fy_norm))


# ===================================================================================== reading
def load_trajectory(path_or_preset: str | Path, **preset_overrides: Any) -> Trajectory:
    """Read a trajectory file (format detected by content) or make a preset by name.

    Args:
        path_or_preset: an existing file (or a COLMAP model directory holding ``images.txt``), or
            a preset name such as ``"orbit_left"`` (optionally written ``"preset:orbit_left"``).
        **preset_overrides: preset parameters (``frames``, ``fps``, ``fov``, ``angle``, ...);
            only allowed with a preset name.
    Returns:
        The trajectory, validated (finite poses, proper rotations, positive focal lengths).
    Raises:
        MirageError: one line naming the file, the frame and the field of the first problem.
    """
    from .presets import PRESETS, make_preset

    text = str(path_or_preset)
    name = text[len("preset:"):] if text.startswith("preset:") else text
    path = Path(text)
    if text.startswith("preset:") or (not path.exists() and name in PRESETS):
        return make_preset(name, **preset_overrides)
    if not path.exists():
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" (did you mean preset '{close[0]}'?)" if close else " (`mirage traj list` shows the presets)"
        raise MirageError(f"{text}: no such file, and not a preset name{hint}")
    if preset_overrides:
        raise MirageError(f"{text}: preset parameters ({', '.join(preset_overrides)}) only apply to preset names")
    path = _model_file(path)
    fmt, data = _detect(path)
    traj = _READERS[fmt](data, path)
    validate_cameras(traj.cameras, str(path))
    return traj


def detect_format(path: str | Path) -> str:
    """Name of the format of a trajectory file (one of :data:`FORMATS`), judged by its content."""
    return _detect(_model_file(Path(path)))[0]


def _model_file(path: Path) -> Path:
    """A file as is; for a folder, the COLMAP ``images.txt`` in it (or in ``sparse/0``)."""
    if not path.is_dir():
        return path
    for cand in (path / "images.txt", path / "sparse" / "0" / "images.txt"):
        if cand.is_file():
            return cand
    binary = "; found images.bin: convert it with `colmap model_converter --output_type TXT`" \
        if (path / "images.bin").exists() else ""
    raise MirageError(f"{path}: is a directory without a COLMAP images.txt{binary}")


def _read_text(path: Path) -> str:
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


def _detect(path: Path) -> tuple[str, Any]:
    """``(format, parsed content)`` of a trajectory file."""
    text = _read_text(path)
    if text.lstrip()[:1] in "{[":
        return _detect_json(path, text)
    return _detect_text(path, text)


def _detect_json(path: Path, text: str) -> tuple[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MirageError(f"{path}: unreadable: invalid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    if isinstance(data, dict):
        if "camera_path" in data:
            native = "convention" in data or "pose" in data or data.get("format") == "mirage.trajectory"
            return ("native" if native else "nerfstudio"), data
        if "cameras_interp" in data:
            return "worldscore", data
        if "frames" in data:
            return "nerf", data
    raise MirageError(f"{path}: unknown trajectory format: JSON without 'camera_path' (native/nerfstudio), "
                      "'frames' (NeRF transforms.json) or 'cameras_interp' (WorldScore)")


_COLMAP_MODELS = {  # model -> (number of parameters, how to get fx, fy, cx, cy)
    "SIMPLE_PINHOLE": (3, lambda p: (p[0], p[0], p[1], p[2])),
    "PINHOLE": (4, lambda p: (p[0], p[1], p[2], p[3])),
    "SIMPLE_RADIAL": (4, lambda p: (p[0], p[0], p[1], p[2])),
    "RADIAL": (5, lambda p: (p[0], p[0], p[1], p[2])),
    "OPENCV": (8, lambda p: (p[0], p[1], p[2], p[3])),
    "FULL_OPENCV": (12, lambda p: (p[0], p[1], p[2], p[3])),
}


def _floats(tokens: list[str]) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def _is_colmap_image_line(tokens: list[str]) -> bool:
    """``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` (NAME not a number, to tell it from points)."""
    return (len(tokens) >= 10 and tokens[0].isdigit() and tokens[8].isdigit()
            and _floats(tokens[1:8]) is not None and _floats(tokens[9:10]) is None)


def _detect_text(path: Path, text: str) -> tuple[str, Any]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    first = lines[0].split() if lines else []
    if _is_colmap_image_line(first):
        return "colmap", text
    if len(first) >= 4 and first[0].isdigit() and re.fullmatch(r"[A-Z_]+", first[1]) and _floats(first[2:]):
        raise MirageError(f"{path}: this is a COLMAP cameras.txt; pass the images.txt next to it")
    numeric = [ln.split() for ln in lines if _floats(ln.split()) is not None]
    if numeric and len(numeric[0]) == 19:
        return "realestate10k", text
    what = f"text lines of {len(numeric[0])} numbers" if numeric else "text"
    raise MirageError(f"{path}: unknown trajectory format ({what}; RealEstate10K needs 19 numbers per line, "
                      "COLMAP images.txt 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME')")


def _fps_from(data: dict, n: int, src: str) -> float:
    """``fps`` if given, else frames / ``seconds``, else :data:`DEFAULT_FPS`; checks they agree."""
    fps = _number(data["fps"], src, None, "fps", positive=True) if "fps" in data else None
    secs = _number(data["seconds"], src, None, "seconds", positive=True) if "seconds" in data else None
    if fps is not None and secs is not None and abs(fps * secs - n) > 1 + 1e-6:
        raise MirageError(f"{src}: inconsistent counts: fps x seconds = {fps * secs:g} frames but "
                          f"camera_path has {n}")
    if fps is not None:
        return fps
    return n / secs if secs is not None else DEFAULT_FPS


def _scale_from(data: dict, src: str, strict: bool) -> str:
    """``"absolute"``/``"relative"`` from a ``scale`` field (absent or numeric = absolute)."""
    scale = data.get("scale", "absolute")
    if scale in ("absolute", "relative"):
        return scale
    if strict:
        raise MirageError(f"{src}: scale: expected 'absolute' or 'relative', got {json.dumps(scale)}")
    return "absolute"  # e.g. instant-ngp's or WorldScore's numeric "scale", which means something else


def _size_from(data: dict, src: str, wkey: str, hkey: str) -> tuple[int, int] | None:
    if wkey not in data and hkey not in data:
        return None
    w = _number(data.get(wkey), src, None, wkey, positive=True)
    h = _number(data.get(hkey), src, None, hkey, positive=True)
    return round(w), round(h)


def _choice(data: dict, key: str, options: tuple[str, ...], default: str, src: str) -> str:
    value = data.get(key, default)
    if value not in options:
        raise MirageError(f"{src}: {key}: expected {' or '.join(repr(o) for o in options)}, got {json.dumps(value)}")
    return value


def _list_field(data: dict, key: str, src: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise MirageError(f"{src}: {key}: expected a list of cameras, got {type(value).__name__}")
    if not value:
        raise MirageError(f"{src}: {key}: empty camera path (no frames)")
    return value


def _read_camera_path(data: dict, path: Path) -> Trajectory:
    """native mirage JSON and nerfstudio ``camera_path.json`` (a native file without the extras)."""
    src, native = str(path), ("convention" in data or "pose" in data or data.get("format") == "mirage.trajectory")
    convention = _choice(data, "convention", ("opencv", "opengl"), "opengl", src)
    pose = _choice(data, "pose", ("c2w", "w2c"), "c2w", src)
    if data.get("camera_type", "perspective") != "perspective":
        raise MirageError(f"{src}: camera_type: only 'perspective' cameras are supported, got {json.dumps(data['camera_type'])}")
    cams = _list_field(data, "camera_path", src)
    size = _size_from(data, src, "render_width", "render_height") or (DEFAULT_WIDTH, DEFAULT_HEIGHT)
    c2ws, intr, fov_only = [], [], True
    for i, cam in enumerate(cams):
        if not isinstance(cam, dict) or "camera_to_world" not in cam:
            raise _err(src, "missing camera_to_world", i, "camera_path")
        M = _matrix(_numbers(cam["camera_to_world"], (16, 12), src, i, "camera_to_world"))
        c2ws.append(to_opencv_c2w(M, convention, pose, src, i, "camera_to_world"))
        k, from_fov = _camera_path_intrinsics(cam, size, src, i)
        intr.append(k)
        fov_only = fov_only and from_fov
    fmt = "native" if native else "nerfstudio"
    meta = {"preset": data["preset"]} if isinstance(data.get("preset"), dict) else {}
    return Trajectory(Cameras(torch.stack(c2ws), torch.tensor(intr, dtype=torch.float64), *size),
                      _fps_from(data, len(cams), src), fmt, _scale_from(data, src, native), src, fov_only, meta)


def _camera_path_intrinsics(cam: dict, size: tuple[int, int], src: str, i: int) -> tuple[list[float], bool]:
    """Normalized intrinsics of one ``camera_path`` entry and whether they came from ``fov`` only."""
    fov = None
    if "fov" in cam:
        fov = _number(cam["fov"], src, i, "fov")
        _check_fov(fov, src, i)
    if "intrinsics" in cam:
        k = _numbers(cam["intrinsics"], 4, src, i, "intrinsics")
        _check_focal(k[0], k[1], src, i, "intrinsics")
        if fov is not None and abs(_fy_to_fov(k[1]) - fov) > FOV_AGREEMENT_DEG:
            raise _err(src, f"fov {fov:g} disagrees with intrinsics (fy/H = {k[1]:g} means "
                       f"{_fy_to_fov(k[1]):.4f} degrees); give one or make them agree", i, "fov")
        return k, False
    if fov is None:
        raise _err(src, "needs 'fov' (vertical degrees) or 'intrinsics' (normalized fx/W, fy/H, cx/W, cy/H)", i, "camera_path")
    fy = _fov_to_fy(fov)
    return [fy * size[1] / size[0], fy, 0.5, 0.5], True


def _read_nerf(data: dict, path: Path) -> Trajectory:
    """NeRF / instant-ngp ``transforms.json``: OpenGL c2w ``frames[].transform_matrix``."""
    src = str(path)
    frames = _list_field(data, "frames", src)
    c2ws, intr, sizes, fov_only = [], [], [], True
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict) or "transform_matrix" not in fr:
            raise _err(src, "missing transform_matrix", i, "frames")
        M = _matrix(_numbers(fr["transform_matrix"], 16, src, i, "transform_matrix"))
        c2ws.append(to_opencv_c2w(M, "opengl", "c2w", src, i, "transform_matrix"))
        k, size, from_fov = _nerf_intrinsics({**data, **fr}, src, i)
        intr.append(k)
        sizes.append(size)
        fov_only = fov_only and from_fov
    size = sizes[0]
    return Trajectory(Cameras(torch.stack(c2ws), torch.tensor(intr, dtype=torch.float64), *size),
                      _fps_from(data, len(frames), src), "nerf", "absolute", src, fov_only)


def _nerf_intrinsics(d: dict, src: str, i: int) -> tuple[list[float], tuple[int, int], bool]:
    """Intrinsics of one transforms.json frame (frame keys override the top-level ones)."""
    size = _size_from(d, src, "w", "h")
    if "fl_x" in d or "fl_y" in d:
        if size is None:
            raise _err(src, "fl_x/fl_y are in pixels and need the image size 'w' and 'h'", i, "fl_x")
        fx = _number(d.get("fl_x", d.get("fl_y")), src, i, "fl_x")
        fy = _number(d.get("fl_y", d.get("fl_x")), src, i, "fl_y")
        _check_focal(fx, fy, src, i, "fl_x/fl_y")
        cx = _number(d.get("cx", size[0] / 2), src, i, "cx")
        cy = _number(d.get("cy", size[1] / 2), src, i, "cy")
        return [fx / size[0], fy / size[1], cx / size[0], cy / size[1]], size, False
    for key, horizontal in (("camera_angle_x", True), ("camera_angle_y", False)):
        if key in d:
            ang = math.degrees(_number(d[key], src, i, key))
            _check_fov(ang, src, i, key)
            f = _fov_to_fy(ang)  # focal / extent along that axis
            if size is not None:
                fpx = f * (size[0] if horizontal else size[1])
                return [fpx / size[0], fpx / size[1], 0.5, 0.5], size, not horizontal
            # No image size: assume square images, so this is also the vertical fov.
            return [f, f, 0.5, 0.5], (ASSUMED_SQUARE, ASSUMED_SQUARE), True
    raise _err(src, "no intrinsics: need fl_x/fl_y with w and h, or camera_angle_x", i, "frames")


def _read_worldscore(data: dict, path: Path) -> Trajectory:
    """WorldScore ``camera_data.json``: ``cameras_interp`` c2w (Blender axes), ``focal_length`` in pixels."""
    src = str(path)
    cams = _list_field(data, "cameras_interp", src)
    if "focal_length" not in data:
        raise MirageError(f"{src}: focal_length: missing (WorldScore focal length in pixels)")
    focal = data["focal_length"]
    if isinstance(focal, list) and len(focal) != len(cams):
        raise MirageError(f"{src}: focal_length: inconsistent counts: {len(focal)} focal lengths for "
                          f"{len(cams)} cameras_interp")
    size = _size_from(data, src, "width", "height")
    W, H = size or (ASSUMED_SQUARE, ASSUMED_SQUARE)
    c2ws, intr = [], []
    for i, m in enumerate(cams):
        M = _matrix(_numbers(m, (16, 12), src, i, "cameras_interp"))
        c2ws.append(to_opencv_c2w(M, "opengl", "c2w", src, i, "cameras_interp"))
        f = _number(focal[i] if isinstance(focal, list) else focal, src, i, "focal_length")
        _check_focal(f, f, src, i, "focal_length")
        intr.append([f / W, f / H, 0.5, 0.5])
    return Trajectory(Cameras(torch.stack(c2ws), torch.tensor(intr, dtype=torch.float64), W, H),
                      _fps_from(data, len(cams), src), "worldscore", "absolute", src, size is None)


def _read_re10k(text: str, path: Path) -> Trajectory:
    """RealEstate10K / CameraCtrl: ``timestamp fx fy cx cy k1 k2`` + 3x4 w2c (OpenCV) per line."""
    src = str(path)
    rows: list[tuple[int, list[float]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        values = _floats(tokens)
        if values is None:
            if not rows and lineno == _first_content_line(text):
                continue  # the optional URL line
            raise _err(src, f"not a number in {line.strip()[:40]!r}", len(rows), extra=f" (line {lineno})")
        if len(values) != 19:
            raise _err(src, f"inconsistent counts: expected 19 numbers (timestamp fx fy cx cy k1 k2 + 3x4 w2c), "
                       f"got {len(values)}", len(rows), extra=f" (line {lineno})")
        rows.append((lineno, values))
    if not rows:
        raise MirageError(f"{src}: empty camera path (no frames)")
    c2ws, intr = [], []
    for i, (lineno, v) in enumerate(rows):
        where = f" (line {lineno})"
        if not all(math.isfinite(x) for x in v):
            raise _err(src, "contains NaN or inf", i, extra=where)
        _check_focal(v[1], v[2], src, i, "fx fy", where)
        c2ws.append(to_opencv_c2w(_matrix(v[7:19]), "opencv", "w2c", src, i, "w2c", where))
        intr.append(v[1:5])
    k = torch.tensor(intr, dtype=torch.float64)
    H = 360  # RealEstate10K has no image size: pick the one with square pixels
    W = max(1, round(H * float(k[0, 1] / k[0, 0])))
    fps = _fps_from_timestamps([v[0] for _, v in rows])
    return Trajectory(Cameras(torch.stack(c2ws), k, W, H), fps, "realestate10k", "absolute", src, False)


def _first_content_line(text: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if ln.strip())


def _fps_from_timestamps(ts: list[float]) -> float:
    """Frame rate from RealEstate10K timestamps (microseconds); :data:`DEFAULT_FPS` if unusable."""
    steps = sorted(b - a for a, b in zip(ts, ts[1:]))
    if not steps or steps[0] <= 0:
        return DEFAULT_FPS
    fps = 1e6 / steps[len(steps) // 2]
    return round(fps, 3) if 0.1 <= fps <= 1000 else DEFAULT_FPS


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _read_colmap(text: str, path: Path) -> Trajectory:
    """COLMAP ``images.txt`` (w2c, Hamilton ``QW QX QY QZ``) + sibling ``cameras.txt``; sorted by NAME."""
    src = str(path)
    records = _colmap_images(text, src)
    cameras = _colmap_cameras(path.parent / "cameras.txt", src)
    records.sort(key=lambda r: _natural_key(r[3]))
    c2ws, intr, sizes = [], [], []
    for i, (lineno, q, t, name, cam_id) in enumerate(records):
        where = f" (image '{name}', line {lineno})"
        norm = math.sqrt(sum(x * x for x in q))
        if abs(norm - 1) > QUATERNION_TOL:
            raise _err(src, f"quaternion is not unit length (|q| = {norm:.4g}, tolerance {QUATERNION_TOL:g})",
                       i, "QW QX QY QZ", where)
        M = torch.eye(4, dtype=torch.float64)
        M[:3, :3] = quaternion_to_rotation(torch.tensor(q))
        M[:3, 3] = torch.tensor(t, dtype=torch.float64)
        c2ws.append(to_opencv_c2w(M, "opencv", "w2c", src, i, "QW QX QY QZ TX TY TZ", where))
        if cam_id not in cameras:
            raise _err(src, f"{cam_id} is not in cameras.txt", i, "CAMERA_ID", where)
        (W, H), k = cameras[cam_id]
        intr.append(k)
        sizes.append((W, H))
    _check_aspects(sizes, src)
    return Trajectory(Cameras(torch.stack(c2ws), torch.tensor(intr, dtype=torch.float64), *sizes[0]),
                      DEFAULT_FPS, "colmap", "absolute", src, False)


def _colmap_images(text: str, src: str) -> list[tuple[int, list[float], list[float], str, int]]:
    """``(line, q, t, name, camera_id)`` per image line; 2D-point lines (all numbers) are skipped."""
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if _is_colmap_image_line(tokens):
            v = [float(x) for x in tokens[1:8]]
            if not all(math.isfinite(x) for x in v):
                raise _err(src, "contains NaN or inf", extra=f": line {lineno}")
            records.append((lineno, v[:4], v[4:], " ".join(tokens[9:]), int(tokens[8])))
        elif _floats(tokens) is None:
            raise MirageError(f"{src}: line {lineno}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME' "
                              "or a line of 2D points")
    if not records:
        raise MirageError(f"{src}: empty camera path (no images)")
    return records


def _colmap_cameras(path: Path, src: str) -> dict[int, tuple[tuple[int, int], list[float]]]:
    """``CAMERA_ID -> ((W, H), normalized intrinsics)`` from ``cameras.txt`` (distortion is ignored)."""
    if not path.is_file():
        raise MirageError(f"{src}: COLMAP cameras.txt not found next to it (looked for {path})")
    cams, csrc = {}, str(path)
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        model = tokens[1] if len(tokens) > 1 else ""
        if model not in _COLMAP_MODELS:
            raise MirageError(f"{csrc}: line {lineno}: camera model {model!r} is not supported "
                              f"(supported: {', '.join(_COLMAP_MODELS)})")
        nparams, pick = _COLMAP_MODELS[model]
        nums = _floats(tokens[2:])
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
            raise _err(src, f"image size {W}x{H} has another aspect ratio than frame 0's "
                       f"{sizes[0][0]}x{sizes[0][1]}", i, "CAMERA_ID")


_READERS: dict[str, Callable[[Any, Path], Trajectory]] = {
    "native": _read_camera_path,
    "nerfstudio": _read_camera_path,
    "realestate10k": _read_re10k,
    "nerf": _read_nerf,
    "colmap": _read_colmap,
    "worldscore": _read_worldscore,
}


# ===================================================================================== writing
def _r(x: float) -> float:
    """Round for files (stable text; no ``-0.0``)."""
    return round(float(x), 10) + 0.0


def _flat(M: torch.Tensor) -> list[float]:
    return [_r(v) for v in M.reshape(-1).tolist()]


def native_dict(traj: Trajectory, convention: str = "opencv", pose: str = "c2w") -> dict:
    """The native JSON document of a trajectory (a superset of nerfstudio's ``camera_path.json``).

    Per camera: ``camera_to_world`` (16 numbers, row-major, in ``convention``/``pose``), ``fov``
    (vertical degrees) and, unless ``fov_only``, normalized ``intrinsics``.
    """
    if convention not in ("opencv", "opengl") or pose not in ("c2w", "w2c"):
        raise MirageError(f"native writer: convention must be opencv|opengl and pose c2w|w2c (got {convention}, {pose})")
    cams = traj.cameras
    mats = from_opencv_c2w(cams.c2w, convention, pose)
    path = []
    for i in range(len(cams)):
        entry: dict[str, Any] = {"camera_to_world": _flat(mats[i]), "fov": _r(cams.fov_y_deg[i])}
        if not traj.fov_only:
            entry["intrinsics"] = [_r(v) for v in cams.intrinsics[i].tolist()]
        path.append(entry)
    doc: dict[str, Any] = {
        "format": "mirage.trajectory", "version": NATIVE_VERSION, "convention": convention, "pose": pose,
        "scale": traj.scale, "fps": _r(traj.fps), "seconds": _r(len(cams) / traj.fps),
        "render_width": cams.width, "render_height": cams.height, "camera_type": "perspective",
    }
    if "preset" in traj.meta:
        doc["preset"] = traj.meta["preset"]
    doc["camera_path"] = path
    return doc


def _json_text(doc: dict, list_key: str) -> str:
    """JSON with one line per entry of ``doc[list_key]`` (readable, diff-friendly)."""
    head = {k: v for k, v in doc.items() if k != list_key}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    items = ",\n".join(f"    {json.dumps(e)}" for e in doc[list_key])
    return "{\n" + "\n".join(lines) + f"\n  {json.dumps(list_key)}: [\n{items}\n  ]\n}}\n"


def native_text(traj: Trajectory, convention: str = "opencv", pose: str = "c2w") -> str:
    """The native JSON file content (see :func:`native_dict`)."""
    return _json_text(native_dict(traj, convention, pose), "camera_path")


def save_trajectory(traj: Trajectory, path: str | Path, convention: str = "opencv", pose: str = "c2w") -> None:
    """Write ``traj`` as native JSON, atomically (temporary file, then ``os.replace``)."""
    atomic_write_text(Path(path), native_text(traj, convention, pose))


def _fov_checks(traj: Trajectory, fmt: str) -> None:
    """Formats that only hold a vertical fov cannot hold an off-centre principal point."""
    k = traj.cameras.intrinsics
    if (k[:, 2:] - 0.5).abs().max() > 1e-6:
        raise MirageError(f"{traj.source}: cannot write {fmt}: it assumes a centred principal point "
                          "(write native, nerf, colmap or realestate10k instead)")


def _nerfstudio_text(traj: Trajectory) -> str:
    """nerfstudio ``camera_path.json``: OpenGL c2w, vertical fov (square pixels assumed)."""
    _fov_checks(traj, "nerfstudio")
    cams, mats = traj.cameras, from_opencv_c2w(traj.cameras.c2w, "opengl", "c2w")
    doc: dict[str, Any] = {
        "camera_type": "perspective", "render_width": cams.width, "render_height": cams.height,
        "fps": _r(traj.fps), "seconds": _r(len(cams) / traj.fps), "scale": traj.scale,
        "camera_path": [{"camera_to_world": _flat(mats[i]), "fov": _r(cams.fov_y_deg[i]),
                         "aspect": _r(cams.width / cams.height)} for i in range(len(cams))],
    }
    return _json_text(doc, "camera_path")


def _re10k_text(traj: Trajectory) -> str:
    """RealEstate10K: a first line naming the source, then 19 numbers per frame."""
    w2c = traj.cameras.w2c
    lines = [f"mirage:{Path(traj.source).name or 'trajectory'}"]
    for i in range(len(traj)):
        ts = round(i * 1e6 / traj.fps)
        k = [_r(v) for v in traj.cameras.intrinsics[i].tolist()]
        vals = [ts, *k, 0, 0, *_flat(w2c[i][:3])]
        lines.append(" ".join(repr(v) if isinstance(v, float) else str(v) for v in vals))
    return "\n".join(lines) + "\n"


def _nerf_text(traj: Trajectory) -> str:
    """NeRF ``transforms.json``: OpenGL c2w, pixel intrinsics (per frame when they vary)."""
    cams = traj.cameras
    W, H = cams.width, cams.height
    K = cams.intrinsics * torch.tensor([W, H, W, H], dtype=torch.float64)
    mats = from_opencv_c2w(cams.c2w, "opengl", "c2w")

    def intr(k: torch.Tensor) -> dict:
        return {"fl_x": _r(k[0]), "fl_y": _r(k[1]), "cx": _r(k[2]), "cy": _r(k[3])}

    same = bool((K - K[:1]).abs().max() < 1e-9)
    doc: dict[str, Any] = {"w": W, "h": H, "fps": _r(traj.fps)}
    if same:
        doc |= intr(K[0]) | {"camera_angle_x": _r(2 * math.atan(0.5 / float(cams.intrinsics[0, 0])))}
    doc["frames"] = [{"file_path": f"./frame_{i:05d}", "transform_matrix": [_flat(r) for r in mats[i]],
                      **({} if same else intr(K[i]))} for i in range(len(cams))]
    return _json_text(doc, "frames")


def _worldscore_text(traj: Trajectory) -> str:
    """WorldScore ``camera_data.json``: Blender c2w, one focal length in pixels, plus width/height."""
    _fov_checks(traj, "worldscore")
    cams = traj.cameras
    fy = cams.intrinsics[:, 1] * cams.height
    if (fy - fy[0]).abs().max() > 1e-6:
        raise MirageError(f"{traj.source}: cannot write worldscore: it holds one focal_length and this trajectory zooms")
    mats = from_opencv_c2w(cams.c2w, "opengl", "c2w")
    interp = [[_flat(r) for r in m] for m in mats]
    doc = {"focal_length": _r(fy[0]), "width": cams.width, "height": cams.height, "fps": _r(traj.fps),
           "cameras": [interp[0], interp[-1]], "cameras_interp": interp}
    return _json_text(doc, "cameras_interp")


def _colmap_texts(traj: Trajectory) -> tuple[str, str]:
    """``(images.txt, cameras.txt)``: one PINHOLE camera per distinct intrinsics, images frame_%05d.png."""
    cams = traj.cameras
    W, H = cams.width, cams.height
    K = (cams.intrinsics * torch.tensor([W, H, W, H], dtype=torch.float64)).tolist()
    cam_ids: dict[tuple, int] = {}
    cam_lines = ["# Camera list with one line of data per camera:",
                 "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    img_lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
                 "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    w2c = cams.w2c
    q = rotation_to_quaternion(w2c[:, :3, :3])
    for i in range(len(cams)):
        key = tuple(_r(v) for v in K[i])
        if key not in cam_ids:
            cam_ids[key] = len(cam_ids) + 1
            cam_lines.append(f"{cam_ids[key]} PINHOLE {W} {H} " + " ".join(repr(v) for v in key))
        vals = [_r(v) for v in q[i].tolist() + w2c[i, :3, 3].tolist()]
        img_lines.append(f"{i + 1} " + " ".join(repr(v) for v in vals) + f" {cam_ids[key]} frame_{i:05d}.png")
        img_lines.append("")
    return "\n".join(img_lines) + "\n", "\n".join(cam_lines) + "\n"


def colmap_paths(path: str | Path) -> tuple[Path, Path]:
    """Where the COLMAP writer puts ``(images.txt, cameras.txt)`` for an output path.

    A path ending in ``.txt`` is the ``images.txt`` itself (``cameras.txt`` goes next to it);
    anything else is a directory that receives both files.
    """
    path = Path(path)
    images = path if path.suffix == ".txt" else path / "images.txt"
    return images, images.parent / "cameras.txt"


def write_trajectory(traj: Trajectory, path: str | Path, fmt: str = "native", *,
                     convention: str = "opencv", pose: str = "c2w") -> list[Path]:
    """Write ``traj`` in any of :data:`FORMATS`, atomically; returns the files written.

    ``convention``/``pose`` apply to the native format only. Foreign formats hold less than the
    native one: nerfstudio and WorldScore keep a vertical fov (square pixels, centred principal
    point; WorldScore also a single focal length); only native keeps ``scale``; COLMAP keeps no fps.
    """
    if fmt != "native" and (convention, pose) != ("opencv", "c2w"):
        raise MirageError(f"--convention/--pose only apply to the native format, not {fmt}")
    if fmt == "native":
        save_trajectory(traj, path, convention, pose)
        return [Path(path)]
    if fmt == "colmap":
        images, cameras = colmap_paths(path)
        img_text, cam_text = _colmap_texts(traj)
        atomic_write_text(cameras, cam_text)
        atomic_write_text(images, img_text)
        return [images, cameras]
    writers = {"nerfstudio": _nerfstudio_text, "realestate10k": _re10k_text, "nerf": _nerf_text,
               "worldscore": _worldscore_text}
    if fmt not in writers:
        raise MirageError(f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})")
    atomic_write_text(Path(path), writers[fmt](traj))
    return [Path(path)]


def trajectory_text(traj: Trajectory, fmt: str = "native", *, convention: str = "opencv", pose: str = "c2w") -> str:
    """File content of ``traj`` in a single-file format (every format but COLMAP)."""
    texts = {"native": lambda t: native_text(t, convention, pose), "nerfstudio": _nerfstudio_text,
             "realestate10k": _re10k_text, "nerf": _nerf_text, "worldscore": _worldscore_text}
    if fmt not in texts:
        raise MirageError(f"format {fmt!r} cannot be written as one text (COLMAP writes two files)")
    return texts[fmt](traj)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)


# ===================================================================================== resampling
def resample(traj: Trajectory, n: int, fps: float | None = None) -> Trajectory:
    """The same path with ``n`` frames, evenly spaced in the original frame index.

    Rotations are slerped (shortest arc) between neighbouring frames; translations and
    intrinsics are interpolated linearly. The first and last cameras are kept.

    Args:
        n: number of frames wanted (>= 1).
        fps: frame rate of the result [default: unchanged, so the duration changes with ``n``].
    """
    if n < 1:
        raise MirageError(f"{traj.source}: cannot resample to {n} frames (need at least 1)")
    if fps is not None and not fps > 0:
        raise MirageError(f"{traj.source}: fps must be positive (got {fps})")
    cams, N = traj.cameras, len(traj.cameras)
    if N == 1:
        idx = torch.zeros(n, dtype=torch.long)
        new = Cameras(cams.c2w[idx], cams.intrinsics[idx], cams.width, cams.height)
    else:
        s = torch.linspace(0, N - 1, n, dtype=torch.float64)
        i0 = s.floor().long().clamp(max=N - 2)
        f = s - i0
        q = rotation_to_quaternion(cams.c2w[:, :3, :3])
        c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
        c2w[:, :3, :3] = quaternion_to_rotation(slerp(q[i0], q[i0 + 1], f))
        t = cams.c2w[:, :3, 3]
        c2w[:, :3, 3] = t[i0] + f[:, None] * (t[i0 + 1] - t[i0])
        k = cams.intrinsics
        new = Cameras(c2w, k[i0] + f[:, None] * (k[i0 + 1] - k[i0]), cams.width, cams.height)
    return dataclasses.replace(traj, cameras=new, fps=traj.fps if fps is None else float(fps))


def convert(source: str | Path, frames: int | None = None, fps: float | None = None,
            scale: str | None = None, relative: bool = False) -> Trajectory:
    """Load ``source`` and apply the ``mirage traj convert`` options.

    Args:
        frames: resample to this many frames (see :func:`resample`).
        fps: new frame rate.
        scale: declare the translations ``"absolute"`` or ``"relative"``.
        relative: re-express the poses relative to frame 0.
    """
    traj = load_trajectory(source)
    if frames is not None:
        traj = resample(traj, frames)
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise MirageError(f"--fps must be positive (got {fps:g})")
        traj = dataclasses.replace(traj, fps=float(fps))
    if scale is not None:
        if scale not in ("absolute", "relative"):
            raise MirageError(f"--scale must be 'absolute' or 'relative' (got {scale!r})")
        traj = dataclasses.replace(traj, scale=scale)
    if relative:
        traj = dataclasses.replace(traj, cameras=traj.cameras.relative_to_first())
    return traj


# ===================================================================================== summary
def summarize(traj: Trajectory) -> dict[str, Any]:
    """Numbers ``mirage traj show`` prints: counts, fov range, path length, largest rotations."""
    rel = traj.cameras.relative_to_first()
    centers = rel.centers
    steps = (centers[1:] - centers[:-1]).norm(dim=-1)
    R = rel.c2w[:, :3, :3]
    from_first = rotation_angle_deg(R)
    step_rot = rotation_angle_deg(R[:-1].transpose(-1, -2) @ R[1:]) if len(traj) > 1 else torch.zeros(1)
    fov = traj.cameras.fov_y_deg
    k = int(from_first.argmax())
    return {
        "source": traj.source, "format": traj.format, "frames": len(traj), "fps": traj.fps,
        "seconds": len(traj) / traj.fps, "scale": traj.scale, "fov_only": traj.fov_only,
        "render_size": [traj.cameras.width, traj.cameras.height],
        "fov_y_deg": [float(fov.min()), float(fov.max())],
        "path_length": float(steps.sum()) if len(steps) else 0.0,
        "max_distance_from_start": float(centers.norm(dim=-1).max()),
        "largest_rotation_deg": float(from_first[k]), "largest_rotation_frame": k,
        "largest_step_rotation_deg": float(step_rot.max()),
        **({"preset": traj.meta["preset"]} if "preset" in traj.meta else {}),
    }


def __getattr__(name: str) -> Any:
    """``PRESETS`` and ``make_preset`` live in :mod:`mirage_cli.trajectories.presets`; re-exported lazily here."""
    if name in ("PRESETS", "make_preset"):
        from .. import presets

        return getattr(presets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
