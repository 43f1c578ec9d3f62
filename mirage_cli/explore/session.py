"""An exploration session: a run that grows one chunk per step, with undo.

``mirage generate`` knows its whole trajectory before the first chunk; an explorer learns the next
chunk's cameras only when the user moves. :class:`ExploreSession` wraps a normal
:class:`~mirage_cli.pipeline.loop.Run` -- built by ``pipeline.generate.start`` from a one-frame
trajectory (the input camera), or by ``pipeline.generate.resume`` -- and after each move:

1. appends the chunk's ``L - 1`` new poses (``moves.py``) to the run's own ``trajectory.json``
   (native format, ``"relative"`` scale, fov only) and re-plans from that file with the same
   functions ``generate`` uses (``run_cameras``, ``plan_chunks``), so the cameras the explorer
   generated with are bit for bit the ones ``mirage generate IMAGE --traj DIR/trajectory.json``
   replays (the walked path always has ``1 + k (L - 1)`` frames: exactly ``k`` full chunks);
2. runs the chunk through the run's :class:`~mirage_cli.pipeline.engine.ChunkEngine`, whose
   :class:`~mirage_cli.pipeline.persist.RunWriter` writes the chunk files, checkpoint and run.json.

Undo restores the engine's state before the last chunk -- from an in-memory snapshot
(:meth:`ChunkEngine.snapshot`, kept within ``undo_budget`` bytes of memory, newest first) or, for
older ones, from the on-disk checkpoint of the chunk before (``cache/chunk_NNN.safetensors``: the
session keeps every chunk's dump, ``--cache-dump chunks``) with the history replayed from the
stored chunk latents -- and rolls the run directory back (:meth:`RunWriter.truncate`) and the
trajectory with it. A failed or cancelled step is undone the same way, so the directory always
holds only finished chunks. ``video.mp4`` is written when the session finishes, decoded from the
stored chunk latents (the frames the chunks were made with); chunk videos are written as they come.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..errors import MirageError
from ..geometry.cameras import Cameras
from ..io import VideoWriter, to_uint8
from ..memory.latent import LatentMemory
from ..pipeline.config import GenerateConfig
from ..pipeline.engine import CancelToken, ChunkResult, EngineSnapshot, decode_chunk
from ..pipeline.generate import input_memory, resume, run_cameras, start
from ..pipeline.loop import Run
from ..pipeline.placement import central_depth
from ..pipeline.plan import plan_chunks, valid_chunk_length
from ..pipeline.records import PlannedChunk, RunRecord
from ..pipeline.rundir import (
    chunk_latents,
    chunk_video,
    depth_file,
    load_latents,
    load_reads,
    run_json,
    trajectory_file,
    video_file,
    write_run,
)
from ..trajectories import load_trajectory, save_trajectory
from ..trajectories.catalog import COMMON_DEFAULTS
from ..trajectories.trajectory import DEFAULT_HEIGHT, DEFAULT_WIDTH, Trajectory
from .moves import Step, step_poses

Warn = Callable[[str], None]
UNDO_BUDGET = 1 << 30
"""Bytes of memory snapshots kept for undo (older undos read the on-disk checkpoints)."""
STEP_FRACTION = 0.1
"""Default step length: this fraction of the depth straight ahead of the input camera (the robust
central depth that places the presets, ``pipeline/placement.py``), in reference depths."""
DEFAULT_ANGLE = 10.0
"""Default turn per Q/E step, degrees."""


class SessionVideo:
    """The run's ``video.mp4`` for a session that can undo: counts frames while exploring and writes
    the file on :meth:`commit` (the run's end) from ``frames()`` (``(H, W, 3)`` uint8 each)."""

    def __init__(self, path: Path, fps: float, comment: str, frames: Callable[[], Iterator[np.ndarray]],
                 count: int = 0) -> None:
        self.path, self.fps, self.comment, self._frames, self.frames = path, fps, comment, frames, count

    def append(self, frames) -> None:
        self.frames += len(frames)

    def truncate(self, count: int) -> None:
        self.frames = count

    def abort(self) -> None:
        pass

    def commit(self) -> None:
        video = VideoWriter(self.path, self.fps, comment=self.comment)
        try:
            for part in self._frames():
                video.append(part)
        except BaseException:
            video.abort()
            raise
        video.commit()


def first_trajectory(fov: float | None, fps: float | None):
    """The one-frame trajectory a session starts from: the input camera (identity), ``"relative"``
    scale, a vertical fov only (``fov`` degrees, default the presets' 55)."""
    cams = Cameras.from_fov(torch.eye(4, dtype=torch.float64), fov or COMMON_DEFAULTS["fov"], DEFAULT_WIDTH, DEFAULT_HEIGHT)
    return Trajectory(cams, float(fps or COMMON_DEFAULTS["fps"]), "native", "relative", "mirage explore", True)


class ExploreSession:
    """One exploration (see the module docstring). Build with :meth:`create` or :meth:`resume`;
    :meth:`step` and :meth:`undo` one at a time (a second caller gets a MirageError), :meth:`finish`
    at the end (writes ``video.mp4`` and releases the run directory's lock).

    Args:
        run: the run (its writer watching the engine, its directory locked).
        warn: for warnings. undo_budget: bytes of in-memory snapshots.
    """

    def __init__(self, run: Run, warn: Warn = print, undo_budget: int = UNDO_BUDGET) -> None:
        self.run, self.warn, self.undo_budget = run, warn, undo_budget
        self.busy = threading.Lock()  # one generation (or undo) at a time
        plan, engine = run.plan, run.engine
        assert plan.config.chunk_frames is not None  # a plan's config has it filled in (generate: option or spec)
        self.chunk_length = valid_chunk_length(plan.config.chunk_frames, engine.codec.temporal_factor)
        done = len(run.record.chunks)
        if any(c.stop - c.start != self.chunk_length for c in plan.chunks[:done]):
            raise MirageError(f"{plan.out}: not an explorer session (its chunks are not all {self.chunk_length} frames); "
                              "continue it with mirage generate --resume")
        spoken = run.video
        self.video = SessionVideo(video_file(plan.out), plan.fps, getattr(spoken, "comment", None) or "", self._frames,
                                  spoken.frames)
        spoken.abort()  # the streamed video cannot be undone: the session writes video.mp4 at its end
        run.video = self.video
        if run.writer is not None:
            run.writer.video = self.video
        self.traj = load_trajectory(trajectory_file(plan.out))
        self._set_trajectory(self._walked(done))  # a step killed mid-chunk left its poses: they go
        write_run(plan.out, run.record)
        self.snapshots: dict[int, EngineSnapshot] = {done: engine.snapshot()}
        if done:  # the base (input only) state: the input lifted again with the saved depth
            self.snapshots[0] = EngineSnapshot(input_memory(run), (engine.history[0],), 0, 1)
        self.last: ChunkResult | None = None

    # ---------------------------------------------------------------------------- construction
    @classmethod
    def create(cls, cfg: GenerateConfig, warn: Warn = print, note: Warn | None = None, quiet: bool = True,
               undo_budget: int = UNDO_BUDGET, cancel: CancelToken | None = None) -> ExploreSession:
        """A new session from ``cfg`` (the options of ``mirage generate`` but ``--traj``/``--frames``):
        every input checked as ``generate`` checks it, then the run directory created."""
        if cfg.traj or cfg.frames is not None or cfg.start_frame:
            raise MirageError("explore: the path is walked, not given (no --traj, --frames or --start-frame)")
        cfg = replace(cfg, cache_dump="chunks", keep_latents=True)  # every chunk's dump (undo) and latents (resume)
        if not cfg.out and cfg.image:
            cfg = replace(cfg, out=str(Path("outputs") / f"{Path(cfg.image).stem}-explore"))
        with tempfile.TemporaryDirectory(prefix="mirage-explore-") as tmp:
            first = Path(tmp) / "start.json"
            save_trajectory(first_trajectory(cfg.fov, cfg.fps), first)
            run = start(replace(cfg, traj=str(first)), warn=warn, quiet=quiet, note=note, cancel=cancel)
        try:
            saved = str(trajectory_file(run.plan.out).resolve())
            run.plan = replace(run.plan, config=replace(run.plan.config, traj=saved))
            run.record.config = replace(run.record.config, traj=saved)
            run.record.trajectory.source = saved
            run.record.command = "mirage explore"
            return cls(run, warn, undo_budget)
        except BaseException:
            run.video.abort()
            if run.dir is not None:  # start() locked it (checked: an AttributeError here would hide the error)
                run.dir.abort()
            raise

    @classmethod
    def resume(cls, out: Path, warn: Warn = print, quiet: bool = True, undo_budget: int = UNDO_BUDGET) -> ExploreSession:
        """Continue the session in ``out`` (finished or stopped), after its last saved chunk."""
        out = Path(out)
        if run_json(out).is_file():
            record = RunRecord.read(run_json(out))
            if record.status == "done":  # a finished session continues: it is running again until it ends
                record.status = "interrupted"
                write_run(out, record)
        run = resume(out, warn=warn, quiet=quiet)
        try:
            return cls(run, warn, undo_budget)
        except BaseException:
            run.video.abort()
            if run.dir is not None:  # resume() locked it (checked: an AttributeError here would hide the error)
                run.dir.close()
            raise

    # ---------------------------------------------------------------------------- state
    @property
    def engine(self):
        return self.run.engine

    @property
    def plan(self):
        return self.run.plan

    @property
    def chunks_done(self) -> int:
        return len(self.run.record.chunks)

    @property
    def out(self) -> Path:
        return self.run.plan.out

    def current_pose(self) -> torch.Tensor:
        """``(4, 4)`` the current camera, relative to the input camera, translations in reference depths."""
        return self.traj.cameras.c2w[-1].clone()

    def default_distance(self) -> float:
        """The default step length in reference depths (:data:`STEP_FRACTION` of the depth ahead)."""
        depth = torch.from_numpy(np.load(depth_file(self.out), allow_pickle=False))
        return round(STEP_FRACTION * central_depth(depth) / self.plan.reference_depth, 4)

    def _frames_for(self, chunks: int) -> int:
        """Trajectory frames of a session with ``chunks`` chunks (the first frame counts alone)."""
        return 1 + chunks * (self.chunk_length - 1)

    def _walked(self, chunks: int):
        """The trajectory of the first ``chunks`` chunks."""
        return replace(self.traj, cameras=self.traj.cameras[: self._frames_for(chunks)])

    def _set_trajectory(self, traj) -> None:
        """Save ``traj`` as the run's trajectory.json and re-plan the run from the saved file, as
        ``generate`` plans it (same cameras bit for bit)."""
        run, plan = self.run, self.run.plan
        save_trajectory(traj, trajectory_file(plan.out))
        cams, saved = run_cameras(plan.config, plan.out, plan.size, plan.reference_depth)
        assert plan.config.chunk_frames is not None  # a plan's config has it filled in (generate: option or spec)
        chunks = tuple(plan_chunks(len(cams), plan.config.chunk_frames, self.run.engine.codec.temporal_factor))
        if len(cams) == 1:  # no chunk yet (plan_chunks plans one padded chunk for a single frame)
            chunks = ()
        run.plan = replace(plan, cams=cams, chunks=chunks)
        if run.writer is not None:
            run.writer.plan = run.plan
        run.record.chunk_plan = [PlannedChunk(c.index, [c.start, c.stop - 1], c.length) for c in chunks]
        run.record.trajectory.frames = len(cams)
        self.traj = load_trajectory(trajectory_file(plan.out))

    def _frames(self) -> Iterator[np.ndarray]:
        """Every frame of the session, decoded from the stored chunk latents (video.mp4's content)."""
        engine, plan = self.engine, self.plan
        for chunk in plan.chunks[:self.chunks_done]:
            latents = load_latents(chunk_latents(plan.out, chunk.index)).to(plan.device)
            frames = to_uint8(decode_chunk(chunk, engine.codec, latents, engine.first_frame)[:chunk.real])
            yield frames[1:] if chunk.index > 0 else frames

    # ---------------------------------------------------------------------------- steps
    @contextmanager
    def _hold(self, what: str):
        """Hold the session for one step, undo or finish; a second caller is refused, not queued."""
        if not self.busy.acquire(blocking=False):
            raise MirageError(f"{what}: a chunk is being generated; one generation at a time")
        try:
            yield
        finally:
            self.busy.release()

    def step(self, step: Step, cancel: CancelToken | None = None,
             progress: Callable[[int, int], None] | None = None) -> ChunkResult:
        """Generate the next chunk along ``step``. A failure or cancellation leaves the session and its
        directory as before the step (and re-raises)."""
        with self._hold(step.describe()):
            k, engine = self.chunks_done, self.engine
            poses = step_poses(self.current_pose(), step, self.chunk_length - 1)
            before, old = engine.snapshot(), self.traj
            new = Cameras.cat([old.cameras, Cameras.from_fov(poses, old.cameras.fov_y_deg[-1], old.cameras.width,
                                                            old.cameras.height)])
            self._set_trajectory(Trajectory(new, old.fps, old.format, old.scale, old.source, True))
            if step.prompt is not None:
                engine.with_settings(prompt=step.prompt)
            chunk = self.plan.chunks[k]
            try:
                result = engine.step(chunk, self.plan.cams[chunk.frames], cancel=cancel, progress=progress)
            except BaseException:
                self._roll_back(k, before, old)
                raise
            self._remember(k, before)
            self.last = result
            return result

    def _roll_back(self, k: int, state: EngineSnapshot, traj) -> None:
        """The session as it was with ``k`` chunks: engine state, run directory, trajectory."""
        self.engine.restore(state)
        writer = self.run.writer
        if writer is not None:
            writer.truncate(k, self.engine.memory)
            for path in (chunk_video(self.out, k), chunk_latents(self.out, k)):  # a chunk stopped half-saved
                path.unlink(missing_ok=True)
        self.video.truncate(self._frames_for(k) if k else 0)
        self._set_trajectory(traj)
        write_run(self.out, self.run.record)

    def _remember(self, k: int, state: EngineSnapshot) -> None:
        """Keep ``state`` (the engine after ``k`` chunks) for undo, within the budget (the input-only
        state, 0, always stays; the oldest others go first: the disk has them)."""
        self.snapshots[k] = state
        self.snapshots.pop(k + 1, None)
        while len(self.snapshots) > 1:
            total = sum(s.memory.nbytes() for s in self.snapshots.values())
            older = [i for i in sorted(self.snapshots) if i != 0]
            if total <= self.undo_budget or not older:
                break
            del self.snapshots[older[0]]

    def undo(self) -> int:
        """Forget the last chunk: memory, history, run directory and trajectory exactly as before it.
        Returns the chunks left. MirageError when there is nothing to undo or a chunk is generating."""
        with self._hold("undo"):
            k = self.chunks_done
            if k == 0:
                raise MirageError("undo: nothing to undo (no chunk generated yet)")
            state = self.snapshots.pop(k - 1, None) or self._state_from_disk(k - 1)
            for i in [i for i in self.snapshots if i >= k - 1]:
                del self.snapshots[i]
            self._roll_back(k - 1, state, self._walked(k - 1))
            self.snapshots[k - 1] = self.engine.snapshot()
            self.last = None
            return k - 1

    def _state_from_disk(self, j: int) -> EngineSnapshot:
        """The engine's state after chunk ``j`` (``j >= 1``) from its checkpoint and stored latents."""
        engine, plan = self.engine, self.plan
        dump = self.out / "cache" / f"chunk_{j - 1:03d}.safetensors"
        if not dump.is_file():
            raise MirageError(f"undo: {dump} is missing; cannot go back to {j} chunk(s)")
        now = engine.snapshot()
        try:
            engine.restore(self.snapshots[0])
            for chunk in plan.chunks[:j]:
                path = chunk_latents(plan.out, chunk.index)
                engine.replay(chunk, plan.cams[chunk.frames], load_latents(path).to(plan.device),
                              load_reads(path, plan.device), decode=False)
            engine.memory = LatentMemory.load(dump, device=plan.device)
            return engine.snapshot()
        finally:
            engine.restore(now)

    # ---------------------------------------------------------------------------- the end
    def finish(self) -> RunRecord:
        """End the session: ``video.mp4`` and the final dump written, run.json ``done`` (a session
        without a chunk is recorded ``interrupted``: nothing to show), the directory unlocked."""
        with self._hold("finish"):
            try:
                if self.chunks_done and self.run.writer is not None:
                    return self.run.writer.finish(self.engine, self.run.t_start)
                self.run.record.status = "interrupted"
                write_run(self.out, self.run.record)
                return self.run.record
            finally:
                if self.run.dir is not None:
                    self.run.dir.close()
