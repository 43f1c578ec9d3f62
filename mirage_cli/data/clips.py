"""Annotated clips: the per-clip layouts ``mirage data prepare`` reads, checked to one line per problem.

Two layouts (docs/training-data.md has a tree of each):

- **ViPE / reference raw layout** (what ViPE, the annotator the paper's reference uses, gives per
  clip; microsoft/LatentSpatialMemory at b2cd738, ``data_process/``): ``clip.mp4``; ``depth.zip`` (one OpenEXR per frame,
  member stem
  = frame index, channel ``Z``, metric z-depth); ``pose.npz`` (``inds (N,)``, ``data (N, 4, 4)``
  camera-to-world, OpenCV axes); ``intrinsics.npz`` (``inds (N,)``, ``data (N, 4)`` = fx, fy, cx, cy
  in pixels of the video); optional ``mask.zip`` (one PNG per frame in name order, nonzero = dynamic);
  a caption ``clip.txt`` (or ``train_target_rgb.txt``, or the folder's only ``*.txt``).
- **Processed layout** (the reference's ``data_process`` output, which ``mirage generate`` already
  reads): ``geometry.npz`` (read by :func:`~mirage_cli.trajectories.formats.geometry_npz.read_geometry`:
  ``depths``, ``poses_c2w``, ``intrinsics (N, 3, 3)``, optional ``frames``/``masks`` (True = valid
  depth)), frames from its ``frames`` key or ``clip.mp4`` beside it, optional ``dynamic_masks.npy``
  ``(N, H, W)`` bool, caption ``clip.txt``.

:func:`find_clips` lists clip folders; :func:`read_clip` reads one, picks the training window
(``frames`` frames at ``fps``, start drawn from a seeded RNG) and centre-crops it to the training
size without scaling (as the reference's ``ffmpeg crop``). Every problem raises
:class:`~mirage_cli.errors.MirageError` with one line ``FILE: FIELD: problem``; ``prepare`` records
it and skips the clip.

Depth conventions: ``0`` or ``+inf`` = no depth at that pixel (sky, holes); NaN or a negative value
is a bad clip (the reference turns NaN into "invalid" silently; a NaN from an annotator usually
means a broken file, so it is reported). Pose matrices must be rigid (``R^T R = I`` within 1e-3,
``det R = +1``, last row ``0 0 0 1``); intrinsics positive with the principal point inside the image.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MirageError

VIPE = "vipe"
PROCESSED = "processed"
VIPE_MEMBERS = ("clip.mp4", "depth.zip", "pose.npz", "intrinsics.npz")
"""The members a ViPE-layout clip folder must hold (``mask.zip`` and the caption are optional)."""
CAPTION_FILES = ("clip.txt", "train_target_rgb.txt")
RIGID_TOL = 1e-3
FPS_TOL = 0.1  # the reference's own check on its 16 fps clips


@dataclass(frozen=True)
class ClipRef:
    """A clip folder found by :func:`find_clips`: ``name`` (unique, folder-safe), ``folder``, ``layout``."""

    name: str
    folder: str
    layout: str


@dataclass(frozen=True)
class Window:
    """Which frames of a clip are used: ``indices`` into the source frames (``frames`` of them, at ``fps``)
    and the centre crop ``(x0, y0)`` to ``size = (W, H)``."""

    indices: tuple[int, ...]
    fps: float
    x0: int
    y0: int
    size: tuple[int, int]


@dataclass(frozen=True)
class AnnotatedClip:
    """One clip's training window, checked.

    Attributes:
        ref: where it came from. window: the source frames used and the crop.
        frames: ``(N, H, W, 3)`` uint8. depth: ``(N, H, W)`` float32 metric z-depth, 0 = none.
        c2w: ``(N, 4, 4)`` float64 camera-to-world, OpenCV axes (as annotated; not re-based).
        K: ``(N, 4)`` float64 ``fx, fy, cx, cy`` in pixels of the cropped frames.
        dynamic: ``(N, H, W)`` bool, True = a moving object (kept out of the memory and the IoU), or None.
        caption: the clip's caption (None: none found beside the clip).
        caption_source: the file it came from.
    """

    ref: ClipRef
    window: Window
    frames: np.ndarray
    depth: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    dynamic: np.ndarray | None
    caption: str | None
    caption_source: str | None


# ------------------------------------------------------------------------------------ finding
def clip_layout(folder: Path) -> str | None:
    """``"vipe"``, ``"processed"`` or None (not a clip folder)."""
    if (folder / "geometry.npz").is_file():
        return PROCESSED
    if any((folder / m).exists() for m in ("pose.npz", "depth.zip", "intrinsics.npz")):
        return VIPE
    return None


def find_clips(sources: Sequence[str | Path]) -> list[ClipRef]:
    """Every clip folder under the SOURCE folders (a clip folder itself, or any folder below holding
    one), sorted by path; names are the folder names, made unique with ``-<n>`` suffixes.

    Raises:
        MirageError: a SOURCE that does not exist, or that holds no clip at all.
    """
    found: list[Path] = []
    for s in sources:
        p = Path(s)
        if not p.exists():
            raise MirageError(f"{p}: no such clip folder")
        if p.is_file():
            p = p.parent if p.name in ("geometry.npz",) + VIPE_MEMBERS else p
        if not p.is_dir():
            raise MirageError(f"{p}: expected a clip folder (clip.mp4 + depth.zip + pose.npz + intrinsics.npz, "
                              "or geometry.npz) or a folder of them")
        here = [p] if clip_layout(p) else sorted(d for d in p.rglob("*") if d.is_dir() and clip_layout(d))
        if not here:
            raise MirageError(f"{p}: holds no clip (a folder with clip.mp4 + depth.zip + pose.npz + intrinsics.npz, "
                              "or with geometry.npz)")
        found += here
    found = sorted(dict.fromkeys(f.resolve() for f in found))
    names: dict[str, int] = {}
    refs = []
    for f in found:
        base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f.name) or "clip"
        n = names.get(base, 0)
        names[base] = n + 1
        layout = clip_layout(f)
        assert layout is not None  # found holds clip folders only
        refs.append(ClipRef(base if n == 0 else f"{base}-{n}", str(f), layout))
    return refs


# ------------------------------------------------------------------------------------ reading
def read_clip(ref: ClipRef, size: tuple[int, int], frames: int, fps: float, seed: int) -> AnnotatedClip:
    """Read, check and window one clip (see the module docstring).

    Args:
        size: training ``(W, H)``; the clip is centre-cropped to it (never scaled).
        frames / fps: the window, e.g. 81 frames at 16 fps (the reference's clip).
        seed: with the clip name, seeds the window's start (reproducible, unlike the reference's).

    Raises:
        MirageError: one line ``FILE: FIELD: problem`` for a bad clip.
    """
    folder = Path(ref.folder)
    if ref.layout == PROCESSED:
        return _read_processed(ref, folder, size, frames, fps, seed)
    return _read_vipe(ref, folder, size, frames, fps, seed)


def window_rng(seed: int, name: str, what: str = "window") -> np.random.Generator:
    """A numpy RNG seeded from ``(seed, clip name, what)`` (md5, as the reference seeds its start time,
    but with a seed the user chooses and no retry-dependent term)."""
    digest = hashlib.md5(f"{int(seed)}:{name}:{what}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def choose_window(name: str, src: str, n: int, src_fps: float, W: int, H: int, size: tuple[int, int], frames: int,
                  fps: float, seed: int) -> Window:
    """The frames (``frames`` at ``fps``, nearest source frame in time) and the centre crop of a clip of
    ``n`` frames at ``src_fps`` and ``W x H`` pixels."""
    Wt, Ht = size
    if W < Wt or H < Ht:
        raise MirageError(f"{src}: size: {W}x{H} is smaller than the training size {Wt}x{Ht} (clips are cropped, "
                          "never scaled up)")
    if not np.isfinite(src_fps) or src_fps < fps - FPS_TOL:
        raise MirageError(f"{src}: fps: {src_fps:g} is below the training rate {fps:g} fps")
    step = src_fps / fps
    span = int(np.floor((n - 1) / step)) + 1  # frames available at the training rate
    if span < frames:
        raise MirageError(f"{src}: frames: {n} frames at {src_fps:g} fps give {span} at {fps:g} fps; a clip needs "
                          f"{frames} ({frames / fps:g} s)")
    start = int(window_rng(seed, name).integers(0, span - frames + 1))
    idx = tuple(int(round((start + k) * step)) for k in range(frames))
    return Window(idx, float(fps), (W - Wt) // 2, (H - Ht) // 2, (Wt, Ht))


def _read_vipe(ref: ClipRef, folder: Path, size, frames: int, fps: float, seed: int) -> AnnotatedClip:
    for m in VIPE_MEMBERS:
        if not (folder / m).is_file():
            raise MirageError(f"{folder / m}: missing (a ViPE-layout clip needs {', '.join(VIPE_MEMBERS)})")
    poses = _read_indexed(folder / "pose.npz", (4, 4))
    intr = _read_indexed(folder / "intrinsics.npz", (4,))
    depth_members = _exr_members(folder / "depth.zip")
    video = folder / "clip.mp4"
    n_video, src_fps, (W, H) = _video_header(video)
    counts = {"clip.mp4": n_video, "depth.zip": len(depth_members), "pose.npz": len(poses),
              "intrinsics.npz": len(intr)}
    if len(set(counts.values())) != 1:
        raise MirageError(f"{folder}: frames: the members disagree on the frame count ("
                          + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")")
    masks = folder / "mask.zip"
    mask_members = _png_members(masks) if masks.exists() else None
    if mask_members is not None and len(mask_members) != n_video:
        raise MirageError(f"{masks}: frames: {len(mask_members)} masks for {n_video} video frames")
    check_poses(poses, folder / "pose.npz", "data")
    check_intrinsics(intr, W, H, folder / "intrinsics.npz", "data")
    win = choose_window(ref.name, str(video), n_video, src_fps, W, H, size, frames, fps, seed)
    rgb = _read_video_frames(video, win.indices, n_video)
    depth = _read_exr_frames(folder / "depth.zip", depth_members, win.indices, (H, W))
    dynamic = None if mask_members is None else _read_masks(masks, mask_members, win.indices, (H, W))
    caption, cap_src = _caption(folder)
    return _cropped(ref, win, rgb, depth, poses[list(win.indices)], intr[list(win.indices)], dynamic, caption, cap_src)


def _read_processed(ref: ClipRef, folder: Path, size, frames: int, fps: float, seed: int) -> AnnotatedClip:
    from ..trajectories.formats.geometry_npz import read_geometry

    path = folder / "geometry.npz"
    g = read_geometry(path)
    d = g["depths"]
    N, H, W = d.shape
    K3 = g["intrinsics"].astype(np.float64)
    intr = np.stack([K3[:, 0, 0], K3[:, 1, 1], K3[:, 0, 2], K3[:, 1, 2]], axis=1)
    poses = g["poses_c2w"].astype(np.float64)
    check_poses(poses, path, "poses_c2w")
    check_intrinsics(intr, W, H, path, "intrinsics")
    src_fps = float(np.asarray(g["fps"]).reshape(-1)[0]) if "fps" in g and np.asarray(g["fps"]).size else fps
    video = folder / "clip.mp4"
    if "frames" in g and len(g["frames"]) == N:
        n_video = N
    elif video.is_file():
        n_video, v_fps, (vw, vh) = _video_header(video)
        if (vw, vh) != (W, H):
            raise MirageError(f"{video}: size: {vw}x{vh} but {path.name} depths are {W}x{H}")
        src_fps = v_fps if "fps" not in g else src_fps
    else:
        raise MirageError(f"{path}: frames: missing, and no clip.mp4 beside it")
    if n_video != N:
        raise MirageError(f"{folder}: frames: the members disagree on the frame count (clip.mp4 {n_video}, "
                          f"geometry.npz {N})")
    win = choose_window(ref.name, str(path), N, src_fps, W, H, size, frames, fps, seed)
    idx = list(win.indices)
    rgb = g["frames"][idx] if "frames" in g and len(g["frames"]) == N else _read_video_frames(video, win.indices, N)
    depth = d[idx].astype(np.float32)
    _check_depth(depth, [f"{path}: depths[{i}]" for i in idx])
    if "masks" in g:
        depth = np.where(g["masks"][idx].astype(bool), depth, 0).astype(np.float32)
    dynamic = None
    dyn = folder / "dynamic_masks.npy"
    if dyn.is_file():
        try:
            m = np.load(dyn, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise MirageError(f"{dyn}: unreadable ({e})") from e
        if m.shape != (N, H, W):
            raise MirageError(f"{dyn}: shape: expected ({N}, {H}, {W}), got {m.shape}")
        dynamic = m[idx].astype(bool)
    caption, cap_src = _caption(folder)
    return _cropped(ref, win, rgb, depth, poses[idx], intr[idx], dynamic, caption, cap_src)


def _cropped(ref, win: Window, rgb, depth, c2w, K, dynamic, caption, cap_src) -> AnnotatedClip:
    Wt, Ht = win.size
    ys, xs = slice(win.y0, win.y0 + Ht), slice(win.x0, win.x0 + Wt)
    K = np.array(K, dtype=np.float64)
    K[:, 2] -= win.x0
    K[:, 3] -= win.y0
    return AnnotatedClip(ref, win, np.ascontiguousarray(rgb[:, ys, xs]), np.ascontiguousarray(depth[:, ys, xs]),
                         np.asarray(c2w, dtype=np.float64), K,
                         None if dynamic is None else np.ascontiguousarray(dynamic[:, ys, xs]), caption, cap_src)


# ------------------------------------------------------------------------------------ members
def _read_indexed(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """``data`` of a ViPE ``inds`` / ``data`` npz, sorted by ``inds``, which must be 0..N-1."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            arrays = {k: z[k] for k in keys & {"inds", "data"}}
    except ValueError as e:
        raise MirageError(f"{path}: holds pickled objects, which mirage never loads ({e})") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise MirageError(f"{path}: unreadable ({e})") from e
    for k in ("inds", "data"):
        if k not in keys:
            raise MirageError(f"{path}: {k}: missing (expected the keys inds, data)")
    extra = sorted(keys - {"inds", "data"})
    if extra:
        raise MirageError(f"{path}: {extra[0]}: unexpected key (expected only inds, data)")
    inds, data = arrays["inds"], arrays["data"]
    if inds.ndim != 1 or data.shape != (len(inds), *shape):
        raise MirageError(f"{path}: data: expected shape ({len(inds)}, {', '.join(map(str, shape))}) for "
                          f"{len(inds)} inds, got {data.shape}")
    if not np.issubdtype(inds.dtype, np.integer) or not np.issubdtype(data.dtype, np.number):
        raise MirageError(f"{path}: inds/data: expected integer inds and numeric data, got {inds.dtype} / {data.dtype}")
    order = np.argsort(inds, kind="stable")
    if not np.array_equal(inds[order], np.arange(len(inds))):
        raise MirageError(f"{path}: inds: must be the frame indices 0..{len(inds) - 1}, each once")
    data = data[order].astype(np.float64)
    bad = np.argwhere(~np.isfinite(data.reshape(len(data), -1)).all(1))
    if len(bad):
        raise MirageError(f"{path}: data[{int(bad[0, 0])}]: contains NaN or inf")
    return data


def check_poses(c2w: np.ndarray, path: Path, field: str) -> None:
    """Each ``(4, 4)`` camera-to-world must be rigid: rotation orthonormal with det +1, last row 0 0 0 1."""
    R = c2w[:, :3, :3]
    err = np.abs(np.einsum("nji,njk->nik", R, R) - np.eye(3)).reshape(len(c2w), -1).max(1)
    det = np.linalg.det(R)
    last = np.abs(c2w[:, 3] - np.array([0, 0, 0, 1.0])).max(1)
    bad = np.flatnonzero((err > RIGID_TOL) | (np.abs(det - 1) > RIGID_TOL) | (last > RIGID_TOL))
    if len(bad):
        i = int(bad[0])
        raise MirageError(f"{path}: {field}[{i}]: not a rigid camera-to-world matrix (|R^T R - I| = {err[i]:.3g}, "
                          f"det R = {det[i]:.4g}, last row {np.round(c2w[i, 3], 4).tolist()})")


def check_intrinsics(K: np.ndarray, W: int, H: int, path: Path, field: str) -> None:
    """``fx, fy > 0`` and the principal point inside the ``W x H`` image, per frame."""
    fx, fy, cx, cy = K.T
    bad = np.flatnonzero((fx <= 0) | (fy <= 0) | (cx <= 0) | (cx >= W) | (cy <= 0) | (cy >= H))
    if len(bad):
        i = int(bad[0])
        raise MirageError(f"{path}: {field}[{i}]: fx fy cx cy = {np.round(K[i], 3).tolist()} outside the {W}x{H} "
                          "image (focal lengths must be > 0, the principal point inside the image)")


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return [n for n in z.namelist() if not n.endswith("/")]
    except (OSError, zipfile.BadZipFile) as e:
        raise MirageError(f"{path}: unreadable zip ({e})") from e


def _exr_members(path: Path) -> dict[int, str]:
    """Frame index -> member name; every member must be ``<index>.exr`` and the indices 0..N-1."""
    out: dict[int, str] = {}
    for name in _zip_names(path):
        stem, _, ext = Path(name).name.rpartition(".")
        if ext.lower() != "exr" or not stem.isdigit():
            raise MirageError(f"{path}: {name}: unexpected member (expected one <frame index>.exr per frame)")
        out[int(stem)] = name
    if sorted(out) != list(range(len(out))):
        missing = sorted(set(range(max(out, default=-1) + 1)) - set(out))
        raise MirageError(f"{path}: {missing[0] if missing else 0}.exr: missing (frame indices must be 0..N-1)")
    return out


def _png_members(path: Path) -> list[str]:
    names = sorted(_zip_names(path))
    for n in names:
        if not n.lower().endswith(".png"):
            raise MirageError(f"{path}: {n}: unexpected member (expected one PNG per frame)")
    return names


def _video_header(path: Path) -> tuple[int, float, tuple[int, int]]:
    """``(frame count, fps, (W, H))`` of a video; the frames are counted by decoding them."""
    import imageio.v2 as imageio

    from ..io import reader_frames

    try:
        reader = imageio.get_reader(path)
        try:
            meta = reader.get_meta_data()
            n = sum(1 for _ in reader_frames(reader))
        finally:
            reader.close()
    except Exception as e:  # truncated / not a video: imageio/ffmpeg raise many types
        raise MirageError(f"{path}: unreadable video ({_first_line(e)})") from e
    W, H = meta.get("size", (0, 0))
    if n == 0:
        raise MirageError(f"{path}: frames: the video has no frames")
    return n, float(meta.get("fps") or 0.0), (int(W), int(H))


def _read_video_frames(path: Path, indices: tuple[int, ...], expected: int) -> np.ndarray:
    import imageio.v2 as imageio

    from ..io import reader_frames

    want = set(indices)
    got: dict[int, np.ndarray] = {}
    try:
        reader = imageio.get_reader(path)
        try:
            for i, f in enumerate(reader_frames(reader)):
                if i in want:
                    got[i] = np.asarray(f)[..., :3]
        finally:
            reader.close()
    except Exception as e:
        raise MirageError(f"{path}: unreadable video ({_first_line(e)})") from e
    missing = [i for i in indices if i not in got]
    if missing:
        raise MirageError(f"{path}: frame {missing[0]}: could not be decoded ({expected} expected; truncated?)")
    return np.stack([got[i] for i in indices]).astype(np.uint8)


def _read_exr_frames(path: Path, members: dict[int, str], indices, shape: tuple[int, int]) -> np.ndarray:
    import OpenEXR

    from ..geometry.depth import EXR_DEPTH_CHANNELS

    out = []
    with zipfile.ZipFile(path) as z:
        for i in indices:
            name = members[i]
            try:
                with OpenEXR.File(io.BytesIO(z.read(name)), separate_channels=True) as f:
                    channels = {k: ch.pixels for k, ch in f.channels().items()}
            except Exception as e:  # OpenEXR raises RuntimeError (and others) for damaged files
                raise MirageError(f"{path}: {name}: unreadable EXR ({_first_line(e)})") from e
            arr = next((np.asarray(channels[k]) for k in EXR_DEPTH_CHANNELS if k in channels), None)
            if arr is None and len(channels) == 1:
                arr = np.asarray(next(iter(channels.values())))
            if arr is None:
                raise MirageError(f"{path}: {name}: no depth channel (has {', '.join(sorted(channels))}; "
                                  f"looked for {', '.join(EXR_DEPTH_CHANNELS)})")
            if arr.shape != shape:
                raise MirageError(f"{path}: {name}: depth is {arr.shape[1]}x{arr.shape[0]} but the video is "
                                  f"{shape[1]}x{shape[0]}")
            out.append(arr.astype(np.float32))
    depth = np.stack(out)
    _check_depth(depth, [f"{path}: {members[i]}" for i in indices])
    return np.where(np.isinf(depth), 0, depth).astype(np.float32)


def _check_depth(depth: np.ndarray, names: list[str]) -> None:
    """NaN or negative depth is a bad clip (``+inf`` and 0 mean "no depth")."""
    for k in range(len(depth)):
        d = depth[k]
        nan, neg = int(np.isnan(d).sum()), int((d < 0).sum())
        if nan or neg:
            raise MirageError(f"{names[k]}: depth: {nan} NaN and {neg} negative values (z-depth must be >= 0; "
                              "use 0 or inf for no depth)")


def _read_masks(path: Path, members: list[str], indices, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    out = []
    with zipfile.ZipFile(path) as z:
        for i in indices:
            name = members[i]
            try:
                with Image.open(io.BytesIO(z.read(name))) as im:
                    a = np.asarray(im)
            except Exception as e:  # PIL raises several types for damaged images
                raise MirageError(f"{path}: {name}: unreadable PNG ({_first_line(e)})") from e
            if a.shape[:2] != shape:
                raise MirageError(f"{path}: {name}: mask is {a.shape[1]}x{a.shape[0]} but the video is "
                                  f"{shape[1]}x{shape[0]}")
            out.append((a.reshape(*shape, -1) != 0).any(-1))
    return np.stack(out)


def _caption(folder: Path) -> tuple[str | None, str | None]:
    """The caption beside a clip: ``clip.txt``, ``train_target_rgb.txt``, or the folder's only ``*.txt``."""
    for name in CAPTION_FILES:
        if (folder / name).is_file():
            return read_caption_file(folder / name), str(folder / name)
    txts = sorted(folder.glob("*.txt"))
    if len(txts) == 1:
        return read_caption_file(txts[0]), str(txts[0])
    return None, None


def read_caption_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MirageError(f"{path}: caption: unreadable ({e})") from e
    return " ".join(text.split())


def read_caption_map(path: Path) -> dict[str, str]:
    """Captions from a CSV (header with ``clip`` and ``caption`` columns) or JSONL (``{"clip": ...,
    "caption": ...}`` per line), keyed by clip name (the folder name) or folder path.

    Raises:
        MirageError: unreadable file, a row without those fields (one line naming the row).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise MirageError(f"{path}: cannot read the captions ({e})") from e
    rows: list[dict] = []
    if text.lstrip().startswith("{"):
        for n, line in enumerate((row for row in text.splitlines() if row.strip()), 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MirageError(f"{path}: row {n}: not a JSON object ({e.msg})") from e
            rows.append(row if isinstance(row, dict) else {})
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    out = {}
    for n, row in enumerate(rows, 1):
        clip, cap = row.get("clip"), row.get("caption")
        if not isinstance(clip, str) or not clip.strip():
            raise MirageError(f"{path}: row {n}: clip: missing (each row names a clip folder and its caption)")
        if not isinstance(cap, str) or not cap.strip():
            raise MirageError(f"{path}: row {n}: caption: missing or empty")
        out[clip.strip()] = " ".join(cap.split())
    return out


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else type(e).__name__
