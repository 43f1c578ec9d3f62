"""Safetensors cache files: atomic writes, validated reads, and the latent-memory cache format.

A cache file is a plain ``.safetensors`` file (never pickle). Its ``__metadata__`` holds strings
only; structured values (extras) are JSON-encoded. Writes go to a temporary file in the same
directory and are renamed into place with :func:`os.replace`, so a crash never leaves half a file.

The latent-memory format (``format = "mirage.latent-memory"``, version 1) holds the tensors
``points (N, 3) f32``, ``features (N, C) f16/bf16/f32``, ``footprint (N,) f32``, ``axes (N, 2, 3) f16``
and ``chunk (N,) i32``, and optionally the memory's observed views (:mod:`.freespace`):
``observed_c2w (V, 4, 4) f32``, ``observed_K (V, 3, 3) f32`` (grid intrinsics, cells) and
``observed_depth (V, h, w) f32`` (0 = not observed; grids of different sizes are zero-padded to the
largest, which changes nothing: a padded cell observed nothing). A file without them (written before
they existed) loads with no observation. :func:`latent_metadata` writes its metadata and
:func:`read_latent_cache` validates a file. This module knows the format, not the memory class: the memory builds itself
from what :func:`read_latent_cache` returns.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .. import __version__
from ..dtypes import dtype_name
from ..errors import MirageError
from ..io import atomic_path
from .freespace import Observation
from .policies import LATENT_POLICIES
from .splat import SPLAT_MODES

FORMAT = "mirage.latent-memory"
VERSION = 1
FEATURE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
LATENT_TENSORS = ("points", "features", "footprint", "axes", "chunk")
OBSERVATION_TENSORS = ("observed_c2w", "observed_K", "observed_depth")
CREATED_BY = f"mirage-cli {__version__}"
INPUT_CHUNK = 0  # the ``chunk`` label of the input image's points; generated chunk i writes i + 1


def points_per_chunk(chunk: torch.Tensor) -> dict[str, int]:
    """``{"<chunk label>": points}`` of a ``chunk (N,)`` tensor, labels ascending (JSON-ready keys)."""
    if chunk.numel() == 0:
        return {}
    labels, counts = torch.unique(chunk, return_counts=True)
    return {str(int(c)): int(k) for c, k in zip(labels.tolist(), counts.tolist())}


# ------------------------------------------------------------------------------ safetensors I/O
def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``tensors`` (moved to CPU, made contiguous) with string ``metadata``, atomically."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {str(k): str(v) for k, v in metadata.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=meta)


def _unreadable(p: Path, e: Exception) -> MirageError:
    reason = " ".join(str(e).split()) or type(e).__name__
    size = p.stat().st_size
    return MirageError(f"{p}: not a readable safetensors file ({size} bytes; {reason}) - truncated or corrupt?")


def _check_exists(p: Path) -> None:
    if not p.exists():
        raise MirageError(f"{p}: cache file not found")
    if not p.is_file():
        raise MirageError(f"{p}: not a file")


def read_safetensors(path: str | os.PathLike,
                     device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the metadata of a safetensors file.

    Raises:
        MirageError: one line naming the file when it is missing, not a file, truncated or
            otherwise not a readable safetensors file.
    """
    p = Path(path)
    _check_exists(p)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types (SafetensorError, OSError, ...)
        raise _unreadable(p, e) from e
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, without reading its tensors (same errors as
    :func:`read_safetensors`)."""
    p = Path(path)
    _check_exists(p)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise _unreadable(p, e) from e


def check_tensor(path, name: str, tensors: dict, shape: tuple, dtypes: tuple[torch.dtype, ...]) -> torch.Tensor:
    """Return ``tensors[name]`` after checking its shape (``None`` = any size) and dtype."""
    if name not in tensors:
        raise MirageError(f"{path}: missing tensor {name!r} (has: {', '.join(sorted(tensors)) or 'none'})")
    t = tensors[name]
    ok = t.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise MirageError(f"{path}: tensor {name!r} has shape {tuple(t.shape)}, expected {want}")
    if t.dtype not in dtypes:
        names = "/".join(dtype_name(d, "torch") for d in dtypes)
        raise MirageError(f"{path}: tensor {name!r} has dtype {dtype_name(t.dtype, 'torch')}, expected {names}")
    return t


def parse_int(path, meta: dict, key: str, minimum: int = 0) -> int:
    """An integer metadata field, validated."""
    if key not in meta:
        raise MirageError(f"{path}: metadata field {key!r} is missing")
    try:
        value = int(meta[key])
    except ValueError:
        raise MirageError(f"{path}: metadata field {key!r} = {meta[key]!r} is not an integer") from None
    if value < minimum:
        raise MirageError(f"{path}: metadata field {key!r} = {value} must be >= {minimum}")
    return value


def parse_json(path, meta: dict, key: str) -> dict:
    """A JSON-object metadata field (missing -> ``{}``)."""
    raw = meta.get(key, "{}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise MirageError(f"{path}: metadata field {key!r} is not valid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise MirageError(f"{path}: metadata field {key!r} must be a JSON object")
    return value


# ------------------------------------------------------------------------------ latent-memory format
def observation_tensors(observations: list[Observation]) -> dict[str, torch.Tensor]:
    """The cache tensors of a memory's observations (none: an empty dict); grids zero-padded to the largest."""
    if not observations:
        return {}
    h = max(o.depth.shape[0] for o in observations)
    w = max(o.depth.shape[1] for o in observations)
    depth = torch.zeros(len(observations), h, w, dtype=torch.float32)
    for k, o in enumerate(observations):
        depth[k, : o.depth.shape[0], : o.depth.shape[1]] = o.depth.cpu()
    return {"observed_c2w": torch.stack([o.c2w.cpu().float() for o in observations]).contiguous(),
            "observed_K": torch.stack([o.K.cpu().float() for o in observations]).contiguous(),
            "observed_depth": depth}


def check_observations(path, tensors: dict, grid: tuple[int, int] | None = None) -> list[Observation]:
    """The observation tensors, validated (``grid`` = the expected ``(h, w)`` when the metadata says)."""
    present = [k for k in OBSERVATION_TENSORS if k in tensors]
    if not present:
        return []
    if len(present) != len(OBSERVATION_TENSORS):
        missing = sorted(set(OBSERVATION_TENSORS) - set(present))
        raise MirageError(f"{path}: observation tensors incomplete (missing {', '.join(missing)})")
    c2w = check_tensor(path, "observed_c2w", tensors, (None, 4, 4), (torch.float32,))
    v = c2w.shape[0]
    K = check_tensor(path, "observed_K", tensors, (v, 3, 3), (torch.float32,))
    depth = check_tensor(path, "observed_depth", tensors, (v, None, None), (torch.float32,))
    for name, t in (("observed_c2w", c2w), ("observed_K", K), ("observed_depth", depth)):
        if not torch.isfinite(t).all():
            raise MirageError(f"{path}: tensor {name!r} contains NaN or inf")
    if bool((depth < 0).any()):
        raise MirageError(f"{path}: tensor 'observed_depth' has negative depth")
    if v and not bool(((K[:, 0, 0] > 0) & (K[:, 1, 1] > 0)).all()):
        raise MirageError(f"{path}: tensor 'observed_K' has a non-positive focal length")
    if v:
        R = c2w[:, :3, :3].double()
        eye = torch.eye(3, dtype=torch.float64)
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float32)
        if float((R.transpose(1, 2) @ R - eye).abs().max()) > 1e-3 or not bool((c2w[:, 3] == bottom).all()):
            raise MirageError(f"{path}: tensor 'observed_c2w' is not a rigid camera-to-world pose "
                              "(rotation not orthonormal or last row not 0 0 0 1)")
        if grid is not None and tuple(depth.shape[1:]) != grid:
            raise MirageError(f"{path}: tensor 'observed_depth' has grid {tuple(depth.shape[1:])}, expected {grid} "
                              "(the metadata's height and width over the spatial factor)")
    return [Observation(c2w[k].clone(), K[k].clone(), depth[k].clone()) for k in range(v)]


def latent_metadata(memory, extras: dict | None = None) -> dict[str, str]:
    """The cache file's ``__metadata__`` for a latent memory (strings only; extras JSON-encoded).

    ``extras`` are merged over ``memory.extras``; raises ``TypeError``/``ValueError`` when they are
    not JSON-serialisable.
    """
    ex = dict(memory.extras)
    ex.update(extras or {})
    return {
        "format": FORMAT,
        "version": str(VERSION),
        "codec": memory.codec,
        "channels": str(memory.channels),
        "spatial_factor": str(memory.spatial_factor),
        "convention": "opencv",
        "created_by": CREATED_BY,
        "image_hash": memory.image_hash,
        "feature_dtype": dtype_name(memory.feature_dtype, "torch"),  # cache files store torch's spelling
        "write_policy": memory.write_policy,
        "splat": memory.splat,
        "points": str(len(memory)),
        "extras": json.dumps(ex, sort_keys=True),
    }


@dataclass
class LatentCache:
    """A validated latent-memory cache file: the memory's settings and its CPU tensors."""

    channels: int
    spatial_factor: int
    codec: str
    write_policy: str
    image_hash: str
    extras: dict
    tensors: dict[str, torch.Tensor] = field(repr=False)
    splat: str = "patch"
    observations: list[Observation] = field(default_factory=list, repr=False)


def check_header(path, meta: dict, expected: str = FORMAT) -> None:
    """The metadata's ``format`` is ``expected``, its version and convention ones this mirage reads."""
    fmt = meta.get("format")
    if fmt != expected:
        what = "no 'format' metadata" if fmt is None else f"format {fmt!r}"
        raise MirageError(f"{path}: not a mirage latent-memory cache ({what}, expected {expected!r})")
    version = meta.get("version")
    if version != str(VERSION):
        raise MirageError(f"{path}: cache format version {version!r} is not supported (this mirage reads version {VERSION})")
    if meta.get("convention", "opencv") != "opencv":
        raise MirageError(f"{path}: convention {meta.get('convention')!r} is not supported (expected 'opencv')")


def check_rows(path, tensors: dict, meta: dict, channels: int) -> dict[str, torch.Tensor]:
    """The per-point tensors (points, features, footprint, axes, chunk), validated (shapes, dtypes,
    values; ``meta['points']``, if present, is their row count); other tensors than these and the
    observations are refused."""
    points = check_tensor(path, "points", tensors, (None, 3), (torch.float32,))
    n = points.shape[0]
    out = {
        "points": points,
        "features": check_tensor(path, "features", tensors, (n, channels), tuple(FEATURE_DTYPES.values())),
        "footprint": check_tensor(path, "footprint", tensors, (n,), (torch.float32,)),
        "axes": check_tensor(path, "axes", tensors, (n, 2, 3), (torch.float16,)),
        "chunk": check_tensor(path, "chunk", tensors, (n,), (torch.int32,)),
    }
    extra_tensors = sorted(set(tensors) - set(LATENT_TENSORS) - set(OBSERVATION_TENSORS))
    if extra_tensors:
        raise MirageError(f"{path}: unexpected tensors {', '.join(extra_tensors)} for format version {VERSION}")
    if "points" in meta and meta["points"] != str(n):
        raise MirageError(f"{path}: metadata says {meta['points']} points but the tensors hold {n}")
    if n:
        if not torch.isfinite(points).all():
            raise MirageError(f"{path}: tensor 'points' contains NaN or inf")
        if not (torch.isfinite(out["footprint"]).all() and (out["footprint"] > 0).all()):
            raise MirageError(f"{path}: tensor 'footprint' must be finite and positive")
        if not torch.isfinite(out["axes"]).all():
            raise MirageError(f"{path}: tensor 'axes' contains NaN or inf")
        if not torch.isfinite(out["features"].float()).all():
            raise MirageError(f"{path}: tensor 'features' contains NaN or inf")
    return out


def read_latent_cache(path: str | os.PathLike) -> LatentCache:
    """Read and validate a latent-memory cache file (format, version, metadata, shapes, dtypes, values).

    Raises:
        MirageError: one line naming the file and the problem.
    """
    return latent_cache(path, *read_safetensors(path))


def latent_cache(path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> LatentCache:
    """Validate the tensors and metadata of a latent-memory cache (as :func:`read_latent_cache` reads
    them from ``path``; errors name ``path``)."""
    check_header(path, meta)
    channels = parse_int(path, meta, "channels", 1)
    factor = parse_int(path, meta, "spatial_factor", 1)
    codec = meta.get("codec") or ""
    if not codec:
        raise MirageError(f"{path}: metadata field 'codec' is missing")
    policy = meta.get("write_policy", "new")
    if policy not in LATENT_POLICIES:
        raise MirageError(f"{path}: metadata field 'write_policy' = {policy!r} is not one of {', '.join(LATENT_POLICIES)}")
    splat = meta.get("splat", "patch")  # caches written before the point mode existed used patches
    if splat not in SPLAT_MODES:
        raise MirageError(f"{path}: metadata field 'splat' = {splat!r} is not one of {', '.join(SPLAT_MODES)}")
    extras = parse_json(path, meta, "extras")
    checked = check_rows(path, tensors, meta, channels)
    grid = None  # the run's latent grid, where the extras name the frame size
    if isinstance(extras.get("width"), int) and isinstance(extras.get("height"), int):
        grid = (extras["height"] // factor, extras["width"] // factor)
    return LatentCache(channels, factor, codec, policy, meta.get("image_hash", ""), extras, checked, splat,
                       check_observations(path, tensors, grid))
