"""Safetensors cache files: atomic writes and validated reads shared by every memory.

A cache file is a plain ``.safetensors`` file (never pickle). Its ``__metadata__`` holds strings
only; structured values (extras) are JSON-encoded. Writes go to a temporary file in the same
directory and are renamed into place with :func:`os.replace`, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import MirageError
from ..io import atomic_path


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``tensors`` (moved to CPU, made contiguous) with string ``metadata``, atomically."""
    from safetensors.torch import save_file

    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {str(k): str(v) for k, v in metadata.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=meta)


def read_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the metadata of a safetensors file.

    Raises:
        MirageError: one line naming the file when it is missing, not a file, truncated or
            otherwise not a readable safetensors file.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.exists():
        raise MirageError(f"{p}: cache file not found")
    if not p.is_file():
        raise MirageError(f"{p}: not a file")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types (SafetensorError, OSError, ...)
        reason = " ".join(str(e).split()) or type(e).__name__
        size = p.stat().st_size
        raise MirageError(f"{p}: not a readable safetensors file ({size} bytes; {reason}) - truncated or corrupt?") from e
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


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
        names = "/".join(str(d).replace("torch.", "") for d in dtypes)
        raise MirageError(f"{path}: tensor {name!r} has dtype {str(t.dtype).replace('torch.', '')}, expected {names}")
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


# ------------------------------------------------------------------------------ tools (mirage cache ...)
def cache_summary(path: str | os.PathLike) -> dict:
    """Everything ``mirage cache inspect`` shows: the memory's stats plus the file's metadata.

    Keys: ``file``, ``file_bytes``, ``format``, ``version``, ``created_by``, ``codec``, ``channels``,
    ``spatial_factor``, ``dtype``, ``points``, ``bytes``, ``bytes_per_point``, ``write_policy``,
    ``image_hash``, ``bounds``, ``footprint``, ``chunks`` (chunk -> points), ``extras``.
    """
    from .latent import FORMAT, VERSION, LatentMemory

    mem = LatentMemory.load(path)
    st = mem.stats()
    _, meta = _metadata_only(path)
    return {
        "file": str(path),
        "file_bytes": Path(path).stat().st_size,
        "format": FORMAT,
        "version": VERSION,
        "created_by": meta.get("created_by", ""),
        "codec": st["codec"],
        "channels": st["channels"],
        "spatial_factor": st["spatial_factor"],
        "dtype": st["dtype"],
        "points": st["points"],
        "bytes": st["bytes"],
        "bytes_per_point": st["bytes_per_point"],
        "write_policy": st["write_policy"],
        "image_hash": st["image_hash"],
        "bounds": st["bounds"],
        "footprint": st["footprint"],
        "chunks": st["points_per_chunk"],
        "extras": mem.extras,
    }


def _metadata_only(path) -> tuple[list[str], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys()), dict(f.metadata() or {})
    except Exception as e:
        raise MirageError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())})") from e


def point_colors(memory, codec: str | None = None) -> torch.Tensor:
    """``(N, 3)`` float colours in [0, 1] of the memory's points.

    Exact for the pixel codec (the features are the colours); for other codecs the lead's
    :func:`mirage_cli.models.codecs.features_to_rgb` map (a pseudo-colour without the decoder).
    """
    from ..models.codecs import features_to_rgb

    name = codec or memory.codec
    if name.startswith("pixel"):
        return memory.features.float()[:, :3].clamp(0, 1).cpu()
    return features_to_rgb(memory.features.float().cpu(), name).float().clamp(0, 1)


def export_ply(memory, path: str | os.PathLike, convention: str = "opencv") -> int:
    """Write the memory's points as a binary little-endian PLY (float xyz + uchar rgb), atomically.

    ``convention="opencv"`` keeps the memory's world axes (x right, y down, z forward);
    ``"opengl"`` flips y and z (y up), which most viewers expect. Returns the number of points.
    """
    import numpy as np

    if convention not in ("opencv", "opengl"):
        raise MirageError(f"unknown convention {convention!r} (choose opencv or opengl)")
    n = len(memory)
    xyz = memory.points.detach().float().cpu().numpy().astype("<f4")
    if convention == "opengl":
        xyz = xyz * np.array([1, -1, -1], dtype="<f4")
    rgb = (point_colors(memory).numpy() * 255 + 0.5).astype(np.uint8)
    rec = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    rec["red"], rec["green"], rec["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"comment mirage latent memory: codec {memory.codec}, {memory.channels} channels, "
        f"spatial factor {memory.spatial_factor}, axes {convention}\n"
        f"element vertex {n}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    ).encode("ascii")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(rec.tobytes())
    return n


def parse_color(text: str) -> tuple[float, float, float]:
    """``"#rrggbb"``, ``"rrggbb"`` or a few names (black, white, magenta, grey) -> RGB in [0, 1]."""
    names = {"black": "000000", "white": "ffffff", "magenta": "ff00ff", "grey": "808080", "gray": "808080"}
    h = names.get(text.lower(), text.lstrip("#"))
    if len(h) != 6 or any(c not in "0123456789abcdefABCDEF" for c in h):
        raise MirageError(f"--holes: {text!r} is not a colour (use #rrggbb or black/white/magenta/grey)")
    return tuple(int(h[i : i + 2], 16) / 255 for i in (0, 2, 4))


def reference_depth_of(memory) -> tuple[float, str]:
    """The scene's reference depth for ``"relative"`` trajectories, and where it came from.

    ``extras["reference_depth"]`` when the cache has it, else the median z of the input image's
    points (chunk 0), which live in frame 0's camera coordinates, else of all points.
    """
    ref = memory.extras.get("reference_depth")
    if isinstance(ref, (int, float)) and ref > 0:
        return float(ref), "cache metadata"
    if len(memory) == 0:
        raise MirageError("the cache is empty and has no reference_depth; pass --scale")
    z = memory.points[:, 2]
    first = memory.chunk == 0
    zz = z[first & (z > 0)] if bool((first & (z > 0)).any()) else z[z > 0]
    if zz.numel() == 0:
        raise MirageError("the cache has no reference_depth and no point in front of frame 0; pass --scale")
    return float(zz.median()), "median depth of the input image's points"


@torch.no_grad()
def render_memory(memory, cameras, holes=(1.0, 0.0, 1.0), batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory-only views: each latent cell shows its z-buffer winner's colour (nearest upsampled).

    Returns frames ``(T, 3, h*f, w*f)`` float in [0, 1] (holes in the ``holes`` colour) and the
    known-mask ``(T, h, w)``.
    """
    colors = point_colors(memory).to(memory.device)
    f = memory.spatial_factor
    frames, knowns = [], []
    hole = torch.tensor(holes, dtype=torch.float32, device=memory.device)
    for s in range(0, len(cameras), batch):
        idx, _ = memory.read_index(cameras[s : s + batch])
        known = idx >= 0
        if len(memory):
            img = colors[idx.clamp(min=0)]  # (b, h, w, 3)
        else:
            img = torch.zeros(*idx.shape, 3, device=memory.device)
        img = torch.where(known[..., None], img, hole).permute(0, 3, 1, 2)
        if f > 1:
            img = img.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
        frames.append(img.cpu())
        knowns.append(known.cpu())
    return torch.cat(frames), torch.cat(knowns)
