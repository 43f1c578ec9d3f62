"""Persistence: the run directory watches the chunk engine.

:class:`RunWriter` is the observer ``mirage generate`` attaches to a :class:`~.engine.ChunkEngine`:
after each chunk it writes the chunk's video and latents, the memory checkpoint (whose metadata
carries the run's chunk records, so it is the resume checkpoint) and ``run.json``; at the end the
video and the final dump. The engine itself writes nothing, so other callers (the explorer, a data
builder, tests) run it without a run directory.

Order after a chunk: chunk video, chunk latents, then the memory checkpoint (last: it makes the
chunk count as done for ``--resume``), then ``run.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from .. import __version__
from ..backends.specs import BackendSpec
from ..errors import MirageError
from ..io import VideoWriter, write_video
from ..memory.checkpoint import MemoryCheckpoint
from ..memory.latent import LatentMemory
from ..units import psnr_db
from .config import RunPlan
from .coverage import blind_frames_warning, known_per_frame
from .engine import ChunkEngine, ChunkResult
from .plan import latent_frame_indices
from .records import STAGES, ChunkRecord, Outputs, RunRecord, Totals, now
from .rundir import (
    RunDir,
    checkpoint_dir,
    chunk_dump,
    chunk_latents,
    chunk_video,
    drop_checkpoint,
    drop_chunk_latents,
    drop_empty_cache,
    dump_extras,
    final_dump,
    kept_dumps,
    resumable,
    run_json,
    save_latents,
    video_file,
    write_run,
)

Warn = Callable[[str], None]


class FrameSink(Protocol):
    """Where a run's new frames go: the streamed :class:`~mirage_cli.io.VideoWriter`, a :class:`FrameList`,
    or the explorer's ``SessionVideo``. ``frames``: how many it holds."""

    frames: int

    def append(self, frames: np.ndarray) -> None: ...
    def abort(self) -> None: ...
    def commit(self) -> None: ...


class FrameList:
    """Stands in for a run's VideoWriter when a finished run is rebuilt (``generate.reopen``): keeps
    the frames in ``kept`` (``(H, W, 3)`` uint8 each) instead of encoding them."""

    def __init__(self) -> None:
        self.kept: list = []
        self.frames = 0

    def append(self, frames) -> None:
        self.kept.extend(frames)
        self.frames += len(frames)

    def abort(self) -> None:
        pass

    def commit(self) -> None:
        pass


def open_video(plan: RunPlan, spec: BackendSpec) -> VideoWriter:
    """The streamed ``video.mp4`` of a run (a temporary until the run is done)."""
    return VideoWriter(video_file(plan.out), plan.fps, comment=video_comment(spec))


def video_comment(spec: BackendSpec) -> str:
    """The MP4 ``comment`` tag: which mirage and backend made it; a preview says so."""
    return f"mirage {__version__} backend={spec.name}" + (f" {spec.label}" if spec.label else "")


def chunk_record(result: ChunkResult, memory: LatentMemory, tf: int) -> ChunkRecord:
    """The run.json record of a finished chunk (its dump time still 0)."""
    chunk, n, known = result.chunk, result.written, result.read.known
    return ChunkRecord(
        index=chunk.index, frames=[chunk.start, chunk.stop - 1], latent_frames=len(result.read.cams),
        known_fraction=round(result.known_fraction, 6),
        known_frames=latent_frame_indices(chunk, tf)[:n], known_per_frame=known_per_frame(known[:n]),
        references=list(result.references), points_added=result.points_added,
        memory_points=len(memory),  # len/nbytes: cheap, unlike stats() (bounds, per-chunk counts)
        memory_bytes=memory.nbytes(), seconds={k: round(v, 4) for k, v in result.seconds.items()},
    )


def frame0_psnr(frame_u8: np.ndarray, image: torch.Tensor) -> float:
    """PSNR in dB of the video's frame 0 ``(H, W, 3)`` uint8 against the input ``(3, H, W)`` in [0, 1]
    (capped at 99 dB for an exact match)."""
    a = torch.from_numpy(frame_u8).float().permute(2, 0, 1) / 255.0
    mse = float(((a - image.float().cpu().clamp(0, 1)) ** 2).mean())
    return round(min(99.0, psnr_db(mse)), 2)


class RunWriter:
    """The run directory of one run, kept up to date after every chunk (see the module docstring).

    Args:
        plan: the run plan. record: run.json's record (``record.chunks`` grows here).
        video: the streamed video (or a :class:`FrameList`). spec: the backend's spec.
        rundir: the locked directory (an ``--overwrite`` is committed after the first chunk).
        warn: for the once-per-run blind-frame warning.
    """

    def __init__(self, plan: RunPlan, record: RunRecord, video: FrameSink, spec: BackendSpec,
                 rundir: RunDir | None = None, warn: Warn = print) -> None:
        self.plan, self.record, self.video, self.spec, self.dir, self.warn = plan, record, video, spec, rundir, warn
        self.blind_warned = False
        self._checkpoint: MemoryCheckpoint | None = None  # the MemoryCheckpoint of the run directory, opened at the first chunk
        self.image: torch.Tensor | None = None  # (3, H, W) the input, for frame 0's PSNR (set by the builder)

    @property
    def records(self) -> list[ChunkRecord]:
        return self.record.chunks

    # -- the observer
    def on_chunk(self, result: ChunkResult, engine: ChunkEngine) -> None:
        """Everything a finished chunk leaves on disk; run.json last."""
        plan, chunk, frames_u8 = self.plan, result.chunk, result.frames_u8
        if frames_u8 is None:
            raise ValueError("a run directory records decoded chunks (step with decode=True)")
        tf = engine.codec.temporal_factor
        if chunk.index == 0 and self.image is not None:
            self.record.frame0_psnr_db = frame0_psnr(frames_u8[0], self.image)
        self.video.append(frames_u8[chunk.new_from:])
        rec = chunk_record(result, engine.memory, tf)
        t = time.perf_counter()
        write_video(chunk_video(plan.out, chunk.index), frames_u8, plan.fps)
        save_latents(chunk_latents(plan.out, chunk.index), result.latents, chunk, reads=result.stored_reads)
        rec.seconds["dump"] = 0.0
        self.checkpoint(engine.memory, self.records + [rec])
        rec.seconds["dump"] = round(time.perf_counter() - t, 4)
        self.records.append(rec)
        if self.dir is not None:
            self.dir.committed()  # the new run has a checkpoint: the run it replaces may go now
        write_run(plan.out, self.record)
        blind = None if self.blind_warned else blind_frames_warning(rec.known_frames, rec.known_per_frame, plan.cams)
        if blind:
            self.warn(blind)
            self.blind_warned = True

    def checkpoint(self, memory: LatentMemory, records: list[ChunkRecord]) -> None:
        """The resume point after a chunk (written last: it makes the chunk count as done). With
        ``--cache-dump chunks`` the full dump of each chunk the user asked for; otherwise an entry of
        the incremental checkpoint directory holding only what the chunk changed (O(points added))."""
        plan = self.plan
        extras = dump_extras(records, plan.image_hash, plan.reference_depth, plan.size)
        if plan.config.cache_dump == "chunks":
            memory.save(chunk_dump(plan.out, records[-1].index, plan.config.cache_dump), extras=extras)
            return
        if self._checkpoint is None:
            self._checkpoint = MemoryCheckpoint(checkpoint_dir(plan.out))
        self._checkpoint.append(memory, extras)

    def truncate(self, k: int, memory: LatentMemory) -> None:
        """Forget every chunk from ``k`` on (an explorer's undo): the run directory becomes what it was
        after chunk ``k - 1``. ``memory``: the engine's memory after chunk ``k - 1`` (restored by the
        caller), written as the resume checkpoint when the run keeps a rolling one.

        Crash-safe order: first the checkpoints (the later chunks' dumps go, newest first, then the
        rolling one is rewritten), so a kill in between resumes after at most the chunk ``k - 1``;
        then run.json; then the later chunks' video and latents (orphans until then, unused)."""
        if not 0 <= k <= len(self.records):
            raise ValueError(f"truncate to {k} chunks: the run has {len(self.records)}")
        out, dump = self.plan.out, self.plan.config.cache_dump
        gone = self.records[k:]
        for rec in reversed(gone):
            (out / "cache" / f"chunk_{rec.index:03d}.safetensors").unlink(missing_ok=True)
        del self.records[k:]
        if dump != "chunks" and gone:
            if k:
                self.checkpoint(memory, self.records)
            else:
                drop_checkpoint(out)
                self._checkpoint = None  # a later chunk starts a new checkpoint directory
        if not self.records:
            self.record.frame0_psnr_db = None
        write_run(out, self.record)
        for rec in gone:
            chunk_video(out, rec.index).unlink(missing_ok=True)
            chunk_latents(out, rec.index).unlink(missing_ok=True)

    # -- the end
    def finish(self, engine: ChunkEngine, t_start: float) -> RunRecord:
        """Write the video and the final dump, record the run as done, drop the resume state."""
        plan, record = self.plan, self.record
        t = time.perf_counter()
        self.video.commit()
        extras = dump_extras(self.records, plan.image_hash, plan.reference_depth, plan.size)
        if plan.config.cache_dump in ("final", "chunks"):
            engine.memory.save(final_dump(plan.out), extras=extras)
        stats = engine.memory.stats()
        record.error = None
        record.status = "done"
        record.finished_at = now()
        record.backend = engine.backend.describe()  # after the run: steps/guidance actually used
        earlier = record.totals.wall_seconds if record.totals else 0.0
        record.totals = Totals(
            frames=self.video.frames,
            seconds={k: round(sum(r.seconds[k] for r in self.records), 4) for k in STAGES},
            wall_seconds=round(time.perf_counter() - t_start, 3) + earlier,
            finalize_seconds=round(time.perf_counter() - t, 3),
            memory_points=stats["points"], memory_bytes=stats["bytes"],
        )
        out = plan.out.resolve()  # run.json stores absolute paths (inputs and outputs alike)
        record.outputs = Outputs(video=str(video_file(out)), chunks=[str(chunk_video(out, c.index)) for c in plan.chunks],
                                 cache=kept_dumps(out), run=str(run_json(out)))
        write_run(plan.out, record)
        drop_checkpoint(plan.out)  # the resume checkpoint goes only once the run is recorded done
        drop_empty_cache(plan.out)
        if not plan.config.keep_latents:  # they exist for --resume, which a done run no longer allows
            drop_chunk_latents(plan.out)
        return record

    def stopped(self, e: BaseException) -> None:
        """Record why the run stopped (or undo an --overwrite that never reached a checkpoint)."""
        plan, record, warn = self.plan, self.record, self.warn
        self.video.abort()
        if self.dir is not None and self.dir.replacing:
            self.dir.abort()
            warn(f"run stopped before its first chunk was saved; the earlier run in {plan.out} was put back unchanged")
            return
        record.status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        record.error = f"{type(e).__name__}: {e}"
        try:
            write_run(plan.out, record)
        except MirageError as err:  # e.g. the disk is full: run.json keeps the last chunk it recorded
            warn(f"could not record the failure in run.json ({err})")
        if not resumable(plan.out):  # stopped before its first checkpoint: --resume would only refuse
            warn(f"run {record.status} before its first chunk was saved; nothing to resume. Start it over: the same "
                 f"command with --overwrite")
            return
        warn(f"run {record.status} after {len(self.records)} of {len(plan.chunks)} chunks; finished chunks are kept. "
             f"Continue with: mirage generate --resume {plan.out}")

