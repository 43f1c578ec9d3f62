"""``mirage generate``'s loop: drive the chunk engine over the run's planned chunks, with the run
directory watching.

A :class:`Run` is built by ``generate.start``, ``generate.resume`` or ``generate.reopen`` (one
builder); :func:`run_loop` runs its remaining chunks through :class:`~.engine.ChunkEngine` and its
:class:`~.persist.RunWriter` (chunk files, checkpoint, run.json after every chunk), then finishes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..models.codecs import Codec
from .config import RunPlan
from .engine import CancelToken, ChunkEngine, ChunkResult
from .persist import FrameList, FrameSink, RunWriter
from .plan import Chunk
from .prompts import chunk_prompt
from .records import RunRecord
from .rundir import RunDir, write_run


@dataclass
class Run:
    """One run, ready for its next chunk: the fixed plan, the engine, the record and its writer.

    ``writer`` is None for a run rebuilt for reading (``generate.reopen``): then ``video`` is a
    :class:`~.persist.FrameList` holding every frame."""

    plan: RunPlan
    engine: ChunkEngine
    record: RunRecord  # record.chunks: the finished chunks' records
    video: FrameSink  # VideoWriter (streamed video.mp4) or FrameList
    t_start: float  # perf_counter() when the run (or this resumption) began
    writer: RunWriter | None = None
    dir: RunDir | None = None  # the locked run directory (and an --overwrite awaiting the first checkpoint)

    @property
    def codec(self) -> Codec:
        return self.engine.codec

    @property
    def backend(self):
        return self.engine.backend

    @property
    def memory(self):
        return self.engine.memory

    @property
    def kept(self) -> list:
        """Every frame of a reopened run (``(H, W, 3)`` uint8 each)."""
        assert isinstance(self.video, FrameList)
        return self.video.kept


def run_loop(run: Run, progress=None, warn: Callable[[str], None] = print, cancel: CancelToken | None = None) -> RunRecord:
    """Run every chunk the run has not finished, then write the video and final dump.

    run.json is rewritten after every chunk; on any exception (Ctrl-C and a cancelled ``cancel``
    included) it is marked ``interrupted``/``failed`` with the error, the finished chunks stay, and the
    exception propagates -- unless the run replaces an earlier one (``--overwrite``) and has no
    checkpoint yet: then the earlier run is put back. The run directory's lock is released on the
    way out, whatever happens.
    """
    plan, writer = run.plan, run.writer
    assert writer is not None, "a reopened run is for reading"
    cancel = cancel or CancelToken()
    try:
        write_run(plan.out, run.record)
        done = len(run.record.chunks)
        task = progress.add_task("chunks", total=len(plan.chunks), completed=done) if progress else None
        for chunk in plan.chunks[done:]:
            cancel.check()  # a Ctrl-C that something swallowed (startup included) still stops the run
            run_chunk(chunk, run, progress, cancel)
            if progress:
                progress.advance(task)
        cancel.check()
        return writer.finish(run.engine, run.t_start)
    except BaseException as e:
        writer.stopped(e)
        raise
    finally:
        if run.dir is not None:
            run.dir.close()


def run_chunk(chunk: Chunk, run: Run, progress=None, cancel: CancelToken | None = None) -> ChunkResult:
    """One planned chunk through the engine (its observer, the run's writer, records it). Returns the result."""
    engine, plan = run.engine, run.plan
    step_task = None
    if progress:
        step_task = progress.add_task(f"chunk {chunk.index} denoise",
                                      total=engine.backend.spec.progress_steps(engine.settings.steps))
    cb = (lambda i, n: progress.update(step_task, completed=i, total=n)) if progress else None
    engine.with_settings(prompt=chunk_prompt(plan.config, chunk))  # one prompt, or the span's (prompts.py)
    try:
        return engine.step(chunk, plan.cams[chunk.frames], cancel=cancel, progress=cb)  # the writer watches
    finally:
        if progress:
            progress.remove_task(step_task)
