"""File input/output shared by the commands: images, videos, JSON — all writes atomic.

An atomic write goes to a temporary file in the destination's directory and is renamed over the
destination only when complete, so a crash or Ctrl-C never leaves half a file behind and never
destroys the previous version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, cast

import numpy as np
import torch

from .errors import MirageError, write_failure_reason

if TYPE_CHECKING:
    from imageio.core.format import Format

TMP_MARK = ".mirage-tmp-"  # every temporary of an atomic write: ".<target name>.mirage-tmp-XXXX<suffix>"


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, else delete it.

    ``suffix`` (default: ``path``'s) is kept on the temporary name for writers that pick a format
    from the extension (ffmpeg). The temporary is named ``.<name>.mirage-tmp-XXXX<suffix>`` so that
    one a killed process left behind is recognised (:func:`stale_temporaries`). It is fsynced before the rename and the directory
    after it, so even a power cut leaves either the old or the complete new file (resume relies
    on its checkpoints being whole).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", suffix=suffix if suffix is not None else path.suffix,
                                   dir=path.parent)
    except OSError as e:
        raise MirageError(f"{path.parent}: cannot write here ({e.strerror or e})") from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        _fsync_file(tmp_path)  # the data must be on disk before the rename makes it the file
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)  # ... and the rename itself, so a power cut keeps the new version
    except Exception as e:  # disk full, permissions changed under us, ...: one line, the old file intact
        reason = None if isinstance(e, MirageError) else write_failure_reason(e)
        if reason is None:
            raise
        raise MirageError(f"{path}: cannot write ({reason})") from e
    finally:
        try:
            tmp_path.unlink(missing_ok=True)
        except OSError:
            pass  # left for stale_temporaries() to find; the original error matters more


def stale_temporaries(directory: Path | str) -> list[Path]:
    """Temporaries of atomic writes in ``directory`` (not recursive) that a killed process left."""
    directory = Path(directory)
    return sorted(p for p in directory.glob(f".*{TMP_MARK}*") if p.is_file()) if directory.is_dir() else []


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """fsync a directory entry where the platform allows it (not on Windows; some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path | str, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_image(path: Path | str) -> torch.Tensor:
    """Read an image file as ``(3, H, W)`` float32 RGB in [0, 1].

    The EXIF orientation is honoured (phone photos). Every Pillow mode is scaled by its own range
    (see :func:`image_to_rgb`): 8-bit / 255, 16-bit / 65535, float as is; transparent images
    are composited on white.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise MirageError(f"{path}: image not found")
    if path.is_dir():
        raise MirageError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as im:
            im.load()
            arr = image_to_rgb(ImageOps.exif_transpose(im))
    except MirageError as e:
        raise MirageError(f"{path}: {e}") from e
    except Image.DecompressionBombError as e:  # Pillow refuses to decode it at all: --max-pixels cannot help
        size = re.search(r"\((\d+) pixels\)", str(e))
        pixels = f"{int(size.group(1)):,} pixels" if size else "its size"
        limit = Image.MAX_IMAGE_PIXELS  # set: Pillow raises DecompressionBombError only against a limit
        opens = f"{2 * limit:,}, " if limit is not None else ""
        raise MirageError(f"{path}: {pixels} is above what the image decoder opens ({opens}"
                          "Pillow's decompression-bomb guard); shrink the file first (mirage resizes larger inputs to "
                          "--max-pixels, default 1 MP, after decoding)") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise MirageError(f"{path}: not a readable image ({e.__class__.__name__})") from e
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


INT32_FULL_SCALE = 2**31 - 1
"""Full scale of a 32-bit integer image (Pillow mode ``I``) whose values exceed 16 bits."""


def image_to_rgb(im) -> np.ndarray:
    """A Pillow image as ``(H, W, 3)`` float32 RGB in [0, 1], whatever its mode.

    ==========================  ==================================================================
    ``1``, ``L``, ``RGB``       8 bits: value / 255 (grey replicated to RGB)
    ``I;16`` (+ ``B``/``L``)    16-bit grey (PNG/TIFF): value / 65535
    ``I``                       32-bit integer grey: value / 65535 when every value fits 16 bits
                                (Pillow opens some 16-bit files as ``I``), else / (2**31 - 1);
                                negatives become 0
    ``F``                       32-bit float grey: taken as [0, 1]; an image whose maximum is above
                                1 (HDR, or 0-255 floats) is divided by its maximum; NaN becomes 0
    ``RGBA``, ``LA``, ``PA``,   composited on **white** with its alpha (transparent background
    ``P`` with transparency     becomes white, not the hidden colour under alpha 0)
    ``P``, ``CMYK``, ``YCbCr``  converted to RGB by Pillow (palette look-up; naive CMYK inversion)
    ==========================  ==================================================================

    Raises:
        MirageError: a mode Pillow cannot convert to RGB (e.g. ``LAB``).
    """
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode == "F":
            a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
            peak = a.max(initial=0.0)
            a = a / peak if peak > 1.0 else a
        elif mode == "I":
            a = a / (65535.0 if a.max(initial=0) <= 65535 else INT32_FULL_SCALE)
        else:
            a = a / 65535.0
        a = np.clip(a, 0.0, 1.0).astype(np.float32)
        return np.repeat(a[..., None], 3, axis=-1)
    if mode in ("RGBA", "LA", "La", "PA", "RGBa") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:]
        return rgba[..., :3] * alpha + (1.0 - alpha)  # over a white background
    try:
        rgb = im.convert("RGB")
    except ValueError as e:
        raise MirageError(f"image mode {mode} cannot be converted to RGB; save the image as an RGB PNG or JPEG") from e
    return np.asarray(rgb, dtype=np.float32) / 255.0


def save_image(path: str | os.PathLike[str], image: torch.Tensor) -> None:
    """Write ``(3, H, W)`` [0, 1] as PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image[None])[0]).save(tmp, format="PNG")


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` float [0, 1] -> ``(T, H, W, 3)`` uint8 (round to nearest)."""
    return (frames.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class VideoWriter:
    """An H.264 MP4 written frame by frame (no frame buffer in RAM), atomically: the frames stream
    into a temporary beside ``path`` that becomes ``path`` on :meth:`commit`; :meth:`abort` (or a
    failure) removes it. Write failures are one-line MirageErrors naming ``path``.

    Args:
        fps: frames per second. comment: stored in the container's ``comment`` tag.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, comment: str | None = None):
        self.path, self.fps, self.comment = Path(path), float(fps), comment
        self.frames = 0
        self.kept: list[np.ndarray] | None = None  # set to [] to also keep every frame (mirage eval scores them)
        self._writer: Format.Writer | None = None  # opened by the first append of frames
        self._stack = ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))

    def append(self, frames: np.ndarray | torch.Tensor) -> None:
        """Append ``(T, H, W, 3)`` uint8 or ``(T, 3, H, W)`` float [0, 1] frames (all of one size)."""
        if isinstance(frames, torch.Tensor):
            frames = to_uint8(frames)
        try:
            if len(frames) == 0:
                return
            if self._writer is None:
                self._writer = self._open(frames.shape[1], frames.shape[2])
            writer = self._writer
            for f in frames:
                with whole_writes():  # a Ctrl-C waits for the frame's end: ffmpeg never sees half a frame
                    writer.append_data(np.ascontiguousarray(f))
                    self.frames += 1
                if self.kept is not None:
                    self.kept.append(np.array(f))
        except Exception as e:
            self._fail(e)

    def commit(self) -> None:
        """Finish the file and rename it into place."""
        if self.frames == 0:
            self.abort()
            raise MirageError(f"{self.path}: no frames to write")
        assert self._writer is not None  # frames > 0: append opened it
        try:
            self._writer.close()
        except Exception as e:
            self._fail(e)
        self._stack.close()  # atomic_path: fsync + rename (its own errors are MirageErrors)

    def abort(self) -> None:
        """Drop the temporary (the destination, if any, is left as it was)."""
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:
            pass  # already failing: the temporary goes regardless
        self._writer = None
        self._stack.__exit__(_Abandoned, _Abandoned(), None)

    def _open(self, height: int, width: int) -> Format.Writer:
        import imageio.v2 as imageio

        params = ["-metadata", f"comment={self.comment}"] if self.comment else None
        return imageio.get_writer(
            self._tmp, fps=self.fps, codec="libx264", quality=8, macro_block_size=1, ffmpeg_log_level="error",
            pixelformat="yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p", output_params=params,
        )

    def _fail(self, e: Exception) -> NoReturn:
        self.abort()
        reason = None if isinstance(e, MirageError) else write_failure_reason(e)
        if reason is None:
            raise e
        raise MirageError(f"{self.path}: cannot write ({reason})") from e


@contextmanager
def whole_writes() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block ends, then deliver it to the handler that was set.

    Why: a frame is piped to ffmpeg in several ``write`` calls; a KeyboardInterrupt between them
    leaves ffmpeg a partial frame, and on the EOF that follows it prints "Invalid buffer size,
    packet size ... < expected frame_size ..." to the terminal. Writing each frame whole keeps an
    interrupted run quiet (the temporary is then dropped by :meth:`VideoWriter.abort`). A no-op
    outside the main thread, where Python delivers no signals anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(signal.SIGINT)  # the original handler decides (KeyboardInterrupt by default)


class _Abandoned(Exception):
    """Thrown into atomic_path to make it drop its temporary."""


def write_video(path: str | os.PathLike[str], frames: np.ndarray | torch.Tensor, fps: float, comment: str | None = None) -> None:
    """Write an H.264 MP4 with exactly ``len(frames)`` frames, atomically.

    Args:
        frames: ``(T, H, W, 3)`` uint8 or ``(T, 3, H, W)`` float in [0, 1].
        fps: frames per second. comment: stored in the container's ``comment`` tag.
    """
    if len(frames) == 0:
        raise MirageError(f"{path}: no frames to write")
    writer = VideoWriter(path, fps, comment)
    writer.append(frames)
    writer.commit()


def reader_frames(reader: Format.Reader) -> Iterable[np.ndarray]:
    """The frames an imageio reader yields (imageio's stub, core/format.pyi, types ``Reader.__iter__`` as
    returning one Array)."""
    return cast(Iterable[np.ndarray], reader)


def read_video(path: Path | str) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames of a video file."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(path)
    try:
        return np.stack([np.asarray(f) for f in reader_frames(reader)])
    finally:
        reader.close()
