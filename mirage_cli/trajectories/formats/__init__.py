"""The one registry of trajectory file formats: detection by content, reading and writing.

=================  ==========================================================================
``native``         mirage JSON: nerfstudio ``camera_path.json`` plus ``convention``, ``pose``,
                   ``scale`` and per-camera normalized ``intrinsics``.
``nerfstudio``     nerfstudio ``camera_path.json``: OpenGL c2w, vertical ``fov`` in degrees.
``realestate10k``  RealEstate10K / CameraCtrl ``.txt``: 19 numbers per frame, w2c OpenCV.
``nerf``           NeRF / instant-ngp ``transforms.json``: OpenGL c2w ``transform_matrix``.
``colmap``         COLMAP text model ``images.txt`` (+ sibling ``cameras.txt``): w2c, quaternions.
``worldscore``     WorldScore ``camera_data.json``: ``cameras_interp`` c2w in Blender axes.
``spatia``         Spatia's ``w2c.txt`` (JSON Lines of w2c matrices, OpenCV) + sibling ``intrinsics.txt``.
``geometry-npz``   the paper's reference pipeline's ``geometry.npz``: ``poses_c2w`` OpenCV,
                   ``intrinsics`` 3x3 pixels, ``depths``; read only (binary, ``allow_pickle=False``).
``lyra2``          Lyra 2's ``trajectory.npz``: ``w2c`` OpenCV, ``intrinsics`` 3x3 pixels,
                   ``image_height``, ``image_width``.
``lingbot``        LingBot-World's action folder: ``poses.npy`` c2w OpenCV + ``intrinsics.npy``
                   ``[fx, fy, cx, cy]`` pixels of 832 x 480.
``vipe``           ViPE's ``pose/NAME.npz`` (c2w OpenCV) + ``intrinsics/NAME.npz``; read only.
``worldplay``      HY-WorldPlay's pose JSON: ``{"i": {"extrinsic": c2w, "K": 3x3}}``, one per latent frame.
``gen3c``          GEN3C GUI's exported cameras: ``cameras[].start`` c2w OpenCV; read only.
=================  ==========================================================================

HY-WorldPlay's pose *strings* (``w-3, right-1``) are not files: :mod:`..posestring` reads them.

Files are recognised by their *content*, never by their name: a zip archive (``PK``) goes to the
``.npz`` formats' detectors (``poses_c2w``/``depths``: geometry.npz, ``w2c``: Lyra 2,
``data``/``inds``: ViPE), a NumPy array (``\\x93NUMPY``) to the ``.npy`` ones (LingBot-World's
``poses.npy``); a file starting with ``{`` or ``[`` is JSON and goes to the JSON formats'
detectors, anything else to the text formats'. A folder is a LingBot-World action folder (holding
``poses.npy`` and ``intrinsics.npy``) or a COLMAP model. Each format
lives in its own module (``detect``, ``read`` and a writer) and is listed here once, in
:data:`REGISTRY`; ``load_trajectory``, ``save_trajectory``, ``mirage traj convert`` and
``mirage traj show`` all go through it. Every problem is a one-line MirageError naming the file,
the frame and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import MirageError
from ...geometry.cameras import validate_cameras
from ..trajectory import Trajectory
from . import (
    colmap,
    gen3c,
    geometry_npz,
    lingbot,
    lyra2,
    native,
    nerf,
    nerfstudio,
    realestate10k,
    spatia,
    vipe,
    worldplay,
    worldscore,
)
from .arrays import is_npy, is_zip, npz_keys
from .common import Format, check_plausible, floats, read_text

REGISTRY: dict[str, Format] = {m.FORMAT.name: m.FORMAT for m in (native, nerfstudio, realestate10k, nerf, colmap, worldscore,
                                                                spatia, geometry_npz, lyra2, lingbot, vipe, worldplay, gen3c)}
"""Every format by name; each format's detector accepts only its own files, so order does not matter."""

FORMATS: tuple[str, ...] = tuple(name for name, f in REGISTRY.items() if f.text or f.write)
"""Names of the formats read and written (every format but the read-only geometry-npz, vipe and gen3c)."""


def get_format(name: str) -> Format:
    """The registered format ``name``."""
    f = REGISTRY.get(name)
    if f is None or not (f.text or f.write):  # geometry-npz, vipe and gen3c are read only
        raise MirageError(f"unknown output format {name!r} (choose from {', '.join(FORMATS)})")
    return f


# ===================================================================================== reading
def _file(path: Path) -> Path:
    """A file as is; for a folder, Spatia's ``w2c.txt``, LingBot-World's ``poses.npy`` or the COLMAP
    ``images.txt`` in it (the folder formats)."""
    if not path.is_dir():
        return path
    if spatia.paths(path)[0].is_file():
        return spatia.paths(path)[0]
    return lingbot.folder_file(path) or colmap.model_file(path)


def _parse(path: Path) -> tuple[str, Any]:
    """``("npz", path)``, ``("npy", path)``, ``("json", document)`` or ``("text", text)`` of a trajectory file."""
    if is_zip(path):
        return "npz", path
    if is_npy(path):
        return "npy", path
    text = read_text(path)
    if text.lstrip()[:1] not in "{[":
        return "text", text
    try:
        return "json", json.loads(text)
    except json.JSONDecodeError as e:
        if spatia.detect(text):  # JSON Lines (Spatia's w2c.txt): one matrix per line, not one document
            return "text", text
        raise MirageError(f"{path}: unreadable: invalid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e


def _unknown(path: Path, kind: str, content: Any) -> MirageError:
    """The error for content no registered format accepts, saying what each format needs."""
    if kind == "npz":
        keys = ", ".join(sorted(npz_keys(path))) or "none readable"
        return MirageError(f"{path}: unknown trajectory format: a NumPy archive with arrays {keys}; expected w2c + "
                           "intrinsics (Lyra 2), data + inds (ViPE) or poses_c2w + intrinsics + depths (geometry.npz)")
    if kind == "npy":
        return MirageError(f"{path}: unknown trajectory format: a NumPy array that is not (N, 4, 4) camera-to-world "
                           "poses (LingBot-World's poses.npy)")
    if kind == "json":
        return MirageError(f"{path}: unknown trajectory format: JSON without 'camera_path' (native/nerfstudio), "
                           "'frames' (NeRF transforms.json), 'cameras_interp' (WorldScore), 'cameras' (GEN3C) "
                           "or numbered entries with 'extrinsic' (HY-WorldPlay)")
    if colmap.is_cameras_file(content):
        return MirageError(f"{path}: this is a COLMAP cameras.txt; pass the images.txt next to it")
    lines = [ln for ln in content.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    numeric = [ln.split() for ln in lines if floats(ln.split()) is not None]
    what = f"text lines of {len(numeric[0])} numbers" if numeric else "text"
    return MirageError(f"{path}: unknown trajectory format ({what}; RealEstate10K needs 19 numbers per line, "
                       "COLMAP images.txt 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME')")


def _detect(path: Path) -> tuple[Format, Any]:
    """The format of a trajectory file and its parsed content."""
    kind, content = _parse(path)
    for fmt in REGISTRY.values():
        if fmt.content == kind and fmt.detect(content):
            return fmt, content
    raise _unknown(path, kind, content)


def detect_format(path: str | Path) -> str:
    """Name of the format of a trajectory file (a key of :data:`REGISTRY`), judged by its content."""
    return _detect(_file(Path(path)))[0].name


def read_trajectory(path: str | Path) -> Trajectory:
    """Read a trajectory file in any registered format (or a COLMAP model folder).

    Returns:
        The trajectory in project conventions (OpenCV c2w, normalized intrinsics), validated:
        finite poses, proper rotations, positive focal lengths, intrinsics that can be normalized
        (not pixels).
    Raises:
        MirageError: one line naming the file, the frame and the field of the first problem.
    """
    path = _file(Path(path))
    fmt, content = _detect(path)
    traj = fmt.read(content, path)
    validate_cameras(traj.cameras, str(path))
    for i, k in enumerate(traj.cameras.intrinsics.tolist()):  # every format, after its unit conversion
        check_plausible(k, str(path), i, "normalized fx fy cx cy")
    return traj


# ===================================================================================== writing
def _options(fmt: Format, convention: str, pose: str) -> dict[str, str]:
    """The writer options ``fmt`` takes; the others must keep their defaults."""
    if not fmt.options and (convention, pose) != ("opencv", "c2w"):
        raise MirageError(f"--convention/--pose only apply to the native format, not {fmt.name}")
    return {"convention": convention, "pose": pose} if fmt.options else {}


def check_scale_kept(traj: Trajectory, fmt: Format) -> None:
    """A relative trajectory (translations in reference depths) written to a format that cannot say
    so would be read back as absolute units, i.e. drive another camera path: refused."""
    if traj.scale == "relative" and not fmt.keeps_scale:
        raise MirageError(f"{fmt.name}: cannot record 'scale: relative' (translations in units of the scene's reference "
                          "depth), so the file would drive a different camera path; resolve it into units with "
                          "--depth-scale D (D = the scene's reference depth) or keep the numbers as units with --absolute")


def save_trajectory(traj: Trajectory, path: str | Path, fmt: str = "native", *,
                    convention: str = "opencv", pose: str = "c2w") -> list[Path]:
    """Write ``traj`` in format ``fmt``, atomically (temporary file, then rename); returns the files written.

    ``convention``/``pose`` apply to the native format only. Foreign formats hold less than the
    native one: nerfstudio and WorldScore keep a vertical fov (square pixels, centred principal
    point; WorldScore also a single focal length); only native and nerfstudio keep ``scale``, so a
    relative trajectory is refused by the others (:func:`check_scale_kept`); COLMAP keeps no fps
    and writes two files (``images.txt`` and ``cameras.txt``; ``path`` is a folder or the images.txt).
    """
    f = get_format(fmt)
    check_scale_kept(traj, f)
    return f.save(traj, Path(path), **_options(f, convention, pose))


def lost_in_writing(traj: Trajectory, written: Path) -> list[str]:
    """One line per property of ``traj`` the file ``written`` did not keep, found by reading it back.

    Foreign formats hold less than the native one (a fixed frame rate, no image size, one set of
    intrinsics); a conversion that changes them must say so rather than pass silently.
    """
    back = read_trajectory(written)
    lost = []
    if len(back) != len(traj):
        lost.append(f"frames: {len(traj)} written, {len(back)} read back")
    if abs(back.fps - traj.fps) > 1e-6:
        lost.append(f"fps: {traj.fps:g} is not kept by format {back.format!r} (read back at {back.fps:g})")
    size, size_back = (traj.cameras.width, traj.cameras.height), (back.cameras.width, back.cameras.height)
    if size != size_back and not traj.fov_only:
        lost.append(f"image size: {size[0]}x{size[1]} is not kept by format {back.format!r} "
                    f"(read back as {size_back[0]}x{size_back[1]}; the intrinsics are normalized, so the cameras hold)")
    return lost


def trajectory_text(traj: Trajectory, fmt: str = "native", *, convention: str = "opencv", pose: str = "c2w") -> str:
    """File content of ``traj`` in a single-file format (every format but COLMAP)."""
    f = get_format(fmt)
    check_scale_kept(traj, f)
    if f.text is None:
        raise MirageError(f"format {fmt!r} cannot be written as one text (COLMAP writes two files)")
    return f.text(traj, **_options(f, convention, pose))


__all__ = ["FORMATS", "REGISTRY", "Format", "detect_format", "get_format", "lost_in_writing", "read_trajectory",
           "save_trajectory", "trajectory_text"]
