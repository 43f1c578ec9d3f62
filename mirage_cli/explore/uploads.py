"""Checks of what the page uploads (an input image, an input depth) before anything reads it as a file.

The browser sends bytes and a name; the name is only shown in messages, never used as a path: an
accepted upload is saved under the session's uploads folder with a name made here from its content
hash. Every refusal is a :class:`~mirage_cli.errors.MirageError` whose one line the page shows.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from ..errors import MirageError
from ..io import atomic_path
from ..units import fmt_bytes

MAX_UPLOAD_BYTES = 64 << 20
"""Largest upload accepted (bytes)."""
MAX_UPLOAD_PIXELS = 64_000_000
"""Largest image (width x height) an upload may decode to; smaller ones above ``--max-pixels`` are
resized to fit it, as ``mirage generate`` does."""
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
"""Accepted image types (Pillow's format name -> file extension)."""


def _check_size(name: str, content: bytes) -> None:
    if not content:
        raise MirageError(f"{name}: the upload is empty")
    if len(content) > MAX_UPLOAD_BYTES:
        raise MirageError(f"{name}: {fmt_bytes(len(content))} is above the {fmt_bytes(MAX_UPLOAD_BYTES)} upload limit")


def _save(folder: Path, content: bytes, ext: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"upload-{hashlib.sha256(content).hexdigest()[:16]}.{ext}"
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(content)
    return path


def accept_image(name: str, content: bytes, folder: Path) -> Path:
    """Check an uploaded image (type PNG / JPEG / WebP by content, at most :data:`MAX_UPLOAD_BYTES` and
    :data:`MAX_UPLOAD_PIXELS`; the header is read, the pixels are not decoded) and save it in ``folder``.
    Returns the saved file. Raises MirageError naming ``name`` and the problem."""
    from PIL import Image, UnidentifiedImageError

    _check_size(name, content)
    try:
        with Image.open(io.BytesIO(content)) as im:
            fmt, (w, h) = im.format, im.size
    except Image.DecompressionBombError as e:
        raise MirageError(f"{name}: too many pixels to decode safely ({e}); uploads are limited to "
                          f"{MAX_UPLOAD_PIXELS:,} pixels") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise MirageError(f"{name}: not an image (PNG, JPEG or WebP expected)") from e
    if fmt not in IMAGE_FORMATS:
        raise MirageError(f"{name}: a {fmt} image; PNG, JPEG or WebP expected")
    if w * h > MAX_UPLOAD_PIXELS:
        raise MirageError(f"{name}: {w}x{h} ({w * h / 1e6:.0f} MP) is above the {MAX_UPLOAD_PIXELS / 1e6:.0f} MP upload "
                          "limit; resize it first")
    return _save(folder, content, IMAGE_FORMATS[fmt])


def accept_depth(name: str, content: bytes, folder: Path) -> Path:
    """Check an uploaded depth: a ``.npy`` of one 2-D float array (no pickle), finite, some pixel > 0;
    its size is checked against the image when the session starts with it. Returns the saved file."""
    _check_size(name, content)
    try:
        depth = np.load(io.BytesIO(content), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise MirageError(f"{name}: not a .npy array file (a float z-depth (H, W) saved with numpy.save)") from e
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.dtype.kind not in "fiu":
        raise MirageError(f"{name}: expected one 2-D numeric array (H, W), got "
                          f"{getattr(depth, 'shape', '?')} {getattr(depth, 'dtype', type(depth).__name__)}")
    if not np.isfinite(depth).all() or not (depth > 0).any():
        raise MirageError(f"{name}: the depth must be finite with some pixel > 0")
    return _save(folder, content, "npy")
