"""NumPy files of the binary trajectory formats (``.npz`` archives and ``.npy`` arrays): content
detection, loading without pickle, shape checks and the pose / intrinsics conversions they share.

Every array is loaded with ``allow_pickle=False``: an object array is refused with one line naming
the file and the key. Errors follow :func:`.common.err`: ``<file>: frame <i>: <key>: <problem>``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import MirageError
from ...io import atomic_path
from .common import err, to_opencv_c2w

NPY_MAGIC = b"\x93NUMPY"


def is_zip(path: Path) -> bool:
    """A zip archive (``np.savez`` output) by its ``PK`` magic."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"PK"
    except OSError:
        return False


def is_npy(path: Path) -> bool:
    """A ``.npy`` array by its magic string (``\\x93NUMPY``)."""
    try:
        with open(path, "rb") as f:
            return f.read(6) == NPY_MAGIC
    except OSError:
        return False


def npz_keys(path: Path) -> set[str]:
    """The array names in an ``.npz`` archive (``"w2c"`` for ``w2c.npy``); empty when unreadable."""
    try:
        with zipfile.ZipFile(path) as z:
            return {n[:-4] for n in z.namelist() if n.endswith(".npy")}
    except (OSError, zipfile.BadZipFile):
        return set()


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, nothing pickled (MirageError naming the key otherwise)."""
    src = str(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise MirageError(f"{src}: unreadable NumPy archive ({e})") from e
    out: dict[str, np.ndarray] = {}
    with z:
        for key in z.files:
            try:
                out[key] = z[key]
            except ValueError as e:  # object arrays need pickle, which is never allowed
                raise MirageError(f"{src}: {key}: holds pickled objects, which mirage never loads "
                                  "(save plain numeric arrays)") from e
    return out


def load_npy(path: Path, what: str = "array") -> np.ndarray:
    """One ``.npy`` array, nothing pickled; ``what`` names it in errors (a missing file included)."""
    if not path.is_file():
        raise MirageError(f"{path}: missing ({what} expected here)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise MirageError(f"{path}: holds pickled objects or is not a NumPy array ({e}); mirage never loads pickle") from e
    except OSError as e:
        raise MirageError(f"{path}: unreadable ({e.strerror or e})") from e


def require(arrays: dict[str, np.ndarray], key: str, src: str, needs: str) -> np.ndarray:
    """``arrays[key]``, or a MirageError saying that the file lacks it and what the format needs."""
    if key not in arrays:
        raise MirageError(f"{src}: {key}: missing ({needs})")
    return arrays[key]


def check_shape(a: np.ndarray, shape: tuple, src: str, key: str) -> np.ndarray:
    """``a`` when its shape matches ``shape`` (``None`` = any length), numeric and finite per frame."""
    ok = a.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, a.shape))
    if not ok:
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise MirageError(f"{src}: {key}: expected shape {want}, got {tuple(a.shape)}")
    if not np.issubdtype(a.dtype, np.number):
        raise MirageError(f"{src}: {key}: expected numbers, got dtype {a.dtype}")
    if a.ndim >= 1 and len(a) == 0:
        raise MirageError(f"{src}: {key}: empty camera path (no frames)")
    if a.ndim >= 1:
        bad = np.argwhere(~np.isfinite(a.reshape(len(a), -1)).all(1))
        if len(bad):
            raise err(src, "contains NaN or inf", int(bad[0, 0]), key)
    return a


def poses_to_opencv_c2w(mats: np.ndarray, pose: str, src: str, key: str) -> torch.Tensor:
    """``(N, 4, 4)`` OpenCV matrices (``pose`` = ``"c2w"`` or ``"w2c"``) -> validated OpenCV c2w float64.

    Raises:
        MirageError: naming the frame of the first matrix that is not rigid (rotation not
            orthonormal or mirrored, last row not ``[0, 0, 0, 1]``).
    """
    M = torch.from_numpy(np.asarray(mats, dtype=np.float64))
    return torch.stack([to_opencv_c2w(M[i], "opencv", pose, src, i, key) for i in range(len(M))])


def normalized(fx, fy, cx, cy, width: float, height: float, src: str, key: str) -> torch.Tensor:
    """Pixel intrinsics (arrays ``(N,)``) at ``width x height`` -> normalized ``(N, 4)`` float64.

    Raises:
        MirageError: naming the first frame with a focal length <= 0.
    """
    K = torch.stack([torch.as_tensor(np.asarray(v, dtype=np.float64)) for v in (fx, fy, cx, cy)], -1)
    bad = torch.nonzero((K[:, 0] <= 0) | (K[:, 1] <= 0))
    if len(bad):
        i = int(bad[0, 0])
        raise err(src, f"focal length must be positive (got fx={float(K[i, 0]):g}, fy={float(K[i, 1]):g})", i, key)
    return K / torch.tensor([width, height, width, height], dtype=torch.float64)


def pixel_matrices(intrinsics: torch.Tensor, width: int, height: int) -> np.ndarray:
    """Normalized ``(N, 4)`` -> ``(N, 3, 3)`` pixel K at ``width x height`` (float64)."""
    fx, fy, cx, cy = (intrinsics * torch.tensor([width, height, width, height], dtype=torch.float64)).unbind(-1)
    K = np.zeros((len(intrinsics), 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = fx, fy, cx, cy, 1.0
    return K


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` atomically (uncompressed, like the peers' own files)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            # Any: numpy 2's stub lets a ** mapping fill savez's allow_pickle (bool), which numpy 1.26 lacks
            contents: dict[str, Any] = dict(arrays)
            np.savez(f, **contents)


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
