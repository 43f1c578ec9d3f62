"""A finished run of ``mirage generate`` read from its directory without a model: its record, its
cameras, its frames and its final memory (``mirage export`` and ``mirage eval loop`` read runs so).

The cameras are the run's own (:func:`mirage_cli.pipeline.generate.run_cameras`): trajectory
frame 0 is the identity (the input image's camera), translations in scene units (a relative
trajectory times the run's reference depth), normalized intrinsics fitted to the video size. The
memory lives in the same world (it is lifted in frame 0's camera coordinates).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MirageError
from ..geometry.cameras import Cameras
from ..pipeline.config import with_backend_defaults
from ..pipeline.records import RunRecord
from ..pipeline.rundir import final_dump, read_dump_extras, run_json, video_file


def finished_record(out: Path, purpose: str = "nothing to read"):
    """The run record of a finished run in ``out``.

    Raises:
        MirageError: not a directory, no ``run.json``, a run not finished (the message ends with
            ``purpose``), or a reference depth that is not a finite number > 0.
    """
    if not out.is_dir():
        raise MirageError(f"{out}: not a directory (give a run directory of `mirage generate`)")
    path = run_json(out)
    if not path.is_file():
        raise MirageError(f"{path}: missing; {out} is not a mirage run directory")
    record = RunRecord.read(path)
    if record.status == "dry-run":  # a plan and coverage.mp4: never any frames
        raise MirageError(f"{path}: a --dry-run (no backend ran, no frames); run it without --dry-run first, {purpose}")
    if record.status != "done":
        raise MirageError(f"{path}: the run is not finished (status {record.status}); {purpose}")
    ref = record.depth.reference_depth
    if not isinstance(ref, (int, float)) or not math.isfinite(ref) or ref <= 0:
        raise MirageError(f"{path}: field depth.reference_depth must be a finite number > 0, got {ref!r}")
    return record


def final_memory_file(out: Path, chunks: int, purpose: str = "it is needed") -> Path:
    """``cache/final.safetensors``, else the dump after the last chunk (MirageError: neither; the
    message says ``purpose``)."""
    if final_dump(out).is_file():
        return final_dump(out)
    last = out / "cache" / f"chunk_{chunks - 1:03d}.safetensors"
    if last.is_file() and read_dump_extras(last).get("chunks_done") == chunks:
        return last
    raise MirageError(f"{final_dump(out)}: missing (the run kept no final memory: --cache-dump none); "
                      f"{purpose} (rerun with --cache-dump final)")


@dataclass(frozen=True)
class FinishedRun:
    """What a finished run directory holds, for reading.

    Attributes:
        out: the run directory. record: its :class:`~mirage_cli.pipeline.records.RunRecord`.
        cameras: the run's ``N`` cameras at the video size ``(W, H)`` (see the module docstring).
        fps: the video's frame rate. reference_depth: the scene's unit (median input depth).
    """

    out: Path
    record: RunRecord
    cameras: Cameras
    fps: float
    reference_depth: float

    @property
    def video(self) -> Path:
        return video_file(self.out)

    def memory_file(self, purpose: str = "it is needed") -> Path:
        """The final memory dump (see :func:`final_memory_file`)."""
        return final_memory_file(self.out, len(self.record.chunk_plan), purpose)

    def frames(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, (H, W, 3) uint8)`` of the video frames in ``indices`` (ascending), decoded one by one.

        Raises:
            MirageError: ``video.mp4`` missing, unreadable, or with fewer frames than cameras.
        """
        import imageio.v3 as iio

        video = self.video
        if not video.is_file():
            raise MirageError(f"{video}: missing; the run's frames are needed")
        wanted, seen = set(indices), 0
        try:
            for i, frame in enumerate(iio.imiter(video)):
                seen = i + 1
                if i in wanted:
                    yield i, np.ascontiguousarray(frame[..., :3])
        except (OSError, RuntimeError, ValueError) as e:
            raise MirageError(f"{video}: not a readable video ({e.__class__.__name__})") from e
        if seen != len(self.cameras):
            raise MirageError(f"{video}: {seen} frames but the run's trajectory has {len(self.cameras)}")


def open_run(run_dir: Path | str, purpose: str = "nothing to read") -> FinishedRun:
    """The finished run in ``run_dir``, read without a model (see :class:`FinishedRun`)."""
    from ..pipeline.generate import run_cameras

    out = Path(run_dir)
    record = finished_record(out, purpose)
    cfg = with_backend_defaults(record.config)
    size = (record.image.width, record.image.height)
    cams, _ = run_cameras(cfg, out, size, record.depth.reference_depth)
    return FinishedRun(out, record, cams, float(record.trajectory.fps), float(record.depth.reference_depth))
