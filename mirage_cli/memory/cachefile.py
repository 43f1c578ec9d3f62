"""Safetensors cache files: atomic writes and validated reads shared by every memory.

A cache file is a plain ``.safetensors`` file (never pickle). Its ``__metadata__`` holds strings
only; structured values (extras) are JSON-encoded. Writes go to a temporary file in the same
directory and are renamed into place with :func:`os.replace`, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

import torch

from ..errors import MirageError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``dest`` (same suffix); on success rename it onto ``dest``.

    On any exception the temporary file is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    if dest.parent and not dest.parent.exists():
        raise MirageError(f"{dest}: directory {dest.parent} does not exist")
    tmp = dest.with_name(f".{dest.stem}.tmp-{os.getpid()}{dest.suffix}")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()


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
