"""The chunk loop: read -> denoise -> decode -> write -> dump, for a new and a resumed run alike.

A :class:`Run` is built by ``generate.start`` or ``generate.resume``; :func:`run_loop` runs its
remaining chunks and finishes it. Latent frame ``j`` of a chunk stands for the chunk's video frame
``temporal_factor * j`` and is read and written with that frame's camera (``plan.py``).

Memory labels: points lifted from the input image carry chunk label 0, points written by chunk
``k`` carry ``k + 1``.

Resume state: after each chunk its latents and the memory dump (whose metadata carries the run's
chunk records) are written atomically, the dump last. Chunk latents are rounded to float16 as
soon as they are made and only the rounded values are used afterwards, so a resumed run is
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..backends import Backend, ChunkRequest
from ..errors import MirageError
from ..geometry.cameras import Cameras, backproject, project
from ..geometry.depth import fill_depth, fit_scale_shift
from ..interrupts import raise_if_interrupted
from ..io import VideoWriter, to_uint8, write_video
from ..memory.latent import LatentMemory, reduce_depth
from ..models.codecs import Codec
from ..units import psnr_db
from .config import RunPlan
from .coverage import blind_frames_warning, known_per_frame
from .plan import Chunk, latent_frame_indices, written_latent_frames
from .prompts import chunk_prompt
from .records import STAGES, ChunkRecord, Outputs, RunRecord, Totals, now
from .covisibility import voxel_iou_references, voxel_size
from .rundir import (LATENT_STORE_DTYPE, RunDir, chunk_dump, chunk_latents, chunk_video, drop_chunk_latents,
                     drop_empty_cache, dump_extras, final_dump, kept_dumps,
                     last_dump, load_latents, load_reads, resumable, run_json, save_latents, video_file, write_run)


@dataclass
class RunState:
    """What the loop carries from chunk to chunk (and what --resume rebuilds)."""

    memory: LatentMemory
    history_latents: list[torch.Tensor]  # (C, h, w) per generated latent frame, the input image's first
    history_frames: list[int]  # trajectory frame of each
    video: VideoWriter | None = None  # video.mp4 streamed chunk by chunk (no frame buffer in RAM)
    records: list[ChunkRecord] = field(default_factory=list)
    depth_model: object | None = None  # DepthModel: depth of new content when one is available
    # history index -> (read latents (C, h, w) rounded, 0 where unknown; known (h, w) bool): the memory
    # read each generated latent frame was made from; the input frame has none (= nothing known).
    # Kept (and stored beside the chunk latents) for backends that take preceding frames (mirage).
    history_reads: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


@dataclass
class Run:
    """One run, ready for its next chunk: the fixed plan, the models, the state and the record."""

    plan: RunPlan
    codec: Codec
    backend: Backend
    first_latent: torch.Tensor  # (C, h, w) latent of the input image, pinned as frame 0 of chunk 0
    state: RunState
    record: RunRecord  # record.chunks is state.records
    t_start: float  # perf_counter() when the run (or this resumption) began
    dir: RunDir | None = None  # the locked run directory (and an --overwrite awaiting the first dump)
    image: torch.Tensor | None = None  # (3, H, W) the input at the output size, in [0, 1]


@dataclass
class ChunkRead:
    """The memory seen from one chunk's latent-frame cameras."""

    cams: Cameras  # (T) latent-frame cameras
    latents: torch.Tensor  # (T, C, h, w)
    known: torch.Tensor  # (T, h, w) bool
    depth: torch.Tensor  # (T, h, w) z-depth, 0 where unknown
    references: list[int]  # history indices of the chosen reference latents
    filled: torch.Tensor | None = None  # (T, h, w) depth extended into the holes (fill_depth), once per chunk


def round_latents(x: torch.Tensor) -> torch.Tensor:
    """Round to the stored dtype and back, so resumed and uninterrupted runs see the same values."""
    return x.to(LATENT_STORE_DTYPE).float()


# ------------------------------------------------------------------------------------ the loop
def run_loop(run: Run, progress=None, warn: Callable[[str], None] = print) -> RunRecord:
    """Run every chunk the run has not finished, then write the video and final dump.

    run.json is rewritten after every chunk; on any exception (Ctrl-C included) it is marked
    ``interrupted``/``failed`` with the error, the finished chunks stay, and the exception propagates
    -- unless the run replaces an earlier one (``--overwrite``) and has no dump yet: then the earlier
    run is put back. The run directory's lock is released on the way out, whatever happens.
    """
    plan, state, record = run.plan, run.state, run.record
    blind_warned = False  # frames that see nothing: one warning per run (run.json has every frame's fraction)
    try:
        write_run(plan.out, record)
        task = progress.add_task("chunks", total=len(plan.chunks), completed=len(state.records)) if progress else None
        for chunk in plan.chunks[len(state.records):]:
            raise_if_interrupted()  # a Ctrl-C that something swallowed (startup included) still stops the run
            rec = run_chunk(chunk, run, progress)
            state.records.append(rec)
            if run.dir is not None:
                run.dir.committed()  # the new run has a dump: the run it replaces may go now
            write_run(plan.out, record)
            blind = None if blind_warned else blind_frames_warning(rec.known_frames, rec.known_per_frame, plan.cams)
            if blind:
                warn(blind)
                blind_warned = True
            if progress:
                progress.advance(task)
        raise_if_interrupted()
        return finish(run)
    except BaseException as e:
        _stopped(run, e, warn)
        raise
    finally:
        if run.dir is not None:
            run.dir.close()


def _stopped(run: Run, e: BaseException, warn: Callable[[str], None]) -> None:
    """Record why the run stopped (or undo an --overwrite that never reached a dump)."""
    plan, state, record = run.plan, run.state, run.record
    if state.video is not None:
        state.video.abort()
    if run.dir is not None and run.dir.replacing:
        run.dir.abort()
        warn(f"run stopped before its first chunk was saved; the earlier run in {plan.out} was put back unchanged")
        return
    record.status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
    record.error = f"{type(e).__name__}: {e}"
    try:
        write_run(plan.out, record)
    except MirageError as err:  # e.g. the disk is full: run.json keeps the last chunk it recorded
        warn(f"could not record the failure in run.json ({err})")
    if not resumable(plan.out):  # stopped before its first dump: --resume would only refuse
        warn(f"run {record.status} before its first chunk was saved; nothing to resume. Start it over: the same "
             f"command with --overwrite")
        return
    warn(f"run {record.status} after {len(state.records)} of {len(plan.chunks)} chunks; finished chunks are kept. "
         f"Continue with: mirage generate --resume {plan.out}")


def run_chunk(chunk: Chunk, run: Run, progress=None) -> ChunkRecord:
    """Read -> denoise -> decode -> write -> dump for one chunk. Returns its record."""
    state, codec, tf = run.state, run.codec, run.codec.temporal_factor
    sec = {}
    t = time.perf_counter()
    read = read_memory(chunk, run)
    sec["read"] = time.perf_counter() - t

    t = time.perf_counter()
    latents = denoise(chunk, run, read, progress)  # (T, C, h, w), already rounded to the stored dtype
    sec["denoise"] = time.perf_counter() - t

    t = time.perf_counter()
    frames = decode_chunk(chunk, codec, latents, exact_first_frame(run))  # (L, 3, H, W), padding included
    frames_u8 = to_uint8(frames[:chunk.real])
    sec["decode"] = time.perf_counter() - t
    if chunk.index == 0 and run.image is not None:
        run.record.frame0_psnr_db = frame0_psnr(frames_u8[0], run.image)

    # WRITE: lift what the read did not cover. Only latent frames that are real trajectory frames
    # are written (padding repeats the last camera).
    t = time.perf_counter()
    n = written_latent_frames(chunk, tf)
    wdepth = write_depth(read.depth, read.known, frames, tf, codec.spatial_factor, state.depth_model, read.filled)
    added = state.memory.write(latents[:n], wdepth[:n], read.cams[:n], read.known[:n], chunk=chunk.index + 1)
    sec["write"] = time.perf_counter() - t

    extend_history(state, chunk, latents, frames_u8, tf, reads=chunk_reads(read, run.backend))
    rec = ChunkRecord(
        index=chunk.index, frames=[chunk.start, chunk.stop - 1], latent_frames=len(read.cams),
        known_fraction=round(float(read.known[:n].float().mean()), 6),
        known_frames=latent_frame_indices(chunk, tf)[:n], known_per_frame=known_per_frame(read.known[:n]),
        references=[state.history_frames[i] for i in read.references], points_added=int(added),
        memory_points=len(state.memory),  # len/nbytes: cheap, unlike stats() (bounds, per-chunk counts)
        memory_bytes=state.memory.nbytes(), seconds={k: round(v, 4) for k, v in sec.items()},
    )
    dump_chunk(chunk, run, latents, frames_u8, rec, chunk_reads(read, run.backend))
    return rec


def read_memory(chunk: Chunk, run: Run) -> ChunkRead:
    """READ: warp the memory into every latent frame's camera (no pixels, no encode), and choose
    the reference latents by co-visibility."""
    cams, state = run.plan.cams, run.state
    idx = latent_frame_indices(chunk, run.codec.temporal_factor)
    lcams = Cameras(cams.c2w[idx], cams.intrinsics[idx], cams.width, cams.height)
    latents, known, depth = state.memory.read(lcams)  # (T,C,h,w), (T,h,w), (T,h,w)
    n = len(state.history_frames)
    # the overlap frame (and the preceding frames a backend takes) are in the sequence already
    exclude = set(range(n - 1 - preceding_frames(run.backend), n))
    if run.backend.name == "mirage":  # the reference's selection, the one this model was trained with
        refs = voxel_iou_references(
            state.memory.points, state.memory.chunk, lcams, cams[state.history_frames],
            [history_label(f, run.plan.chunks) for f in state.history_frames],
            [i for i in range(n) if i not in exclude], run.plan.config.references, run.plan.grid,
            voxel_size(run.plan.depth_source, run.plan.reference_depth)[0])
    else:
        refs = select_references(depth, known, lcams, state.history_frames, cams, exclude,
                                 run.plan.config.references, run.plan.grid)
    # The depth extended into the holes, once per chunk: the preview's fill and the write both use it.
    return ChunkRead(lcams, latents, known, depth, refs, fill_depth(depth, known))


def preceding_frames(backend: Backend) -> int:
    """How many latents before the overlap frame the backend takes (``mirage``: ``--preceding-frames``)."""
    return int(getattr(backend, "preceding_frames", 0))


def history_label(frame: int, chunks: tuple[Chunk, ...]) -> int:
    """Memory label of the chunk that generated trajectory frame ``frame`` (0 = the input image)."""
    return next((c.index + 1 for c in chunks if c.start < frame < c.stop), 0)


def chunk_reads(read: ChunkRead, backend: Backend) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The read a chunk was made from, ``(T, C, h, w)`` rounded (0 where unknown) and ``(T, h, w)``
    known, when the backend will take it back as preceding context; else None (nothing stored)."""
    if preceding_frames(backend) <= 0:
        return None
    return round_latents(read.latents * read.known[:, None].to(read.latents.dtype)), read.known.bool()


def denoise(chunk: Chunk, run: Run, read: ChunkRead, progress=None) -> torch.Tensor:
    """DENOISE: the backend makes the chunk's latents ``(T, C, h, w)`` from the read; rounded to the
    stored dtype at once (see the module docstring)."""
    cfg, history = run.plan.config, run.state.history_latents
    lo = max(0, len(history) - 1 - preceding_frames(run.backend))  # P preceding + the overlap frame
    prec_read = prec_known = None
    if chunk.index > 0 and preceding_frames(run.backend) > 0:
        C, (h, w) = run.first_latent.shape[0], run.plan.grid
        stored = [run.state.history_reads.get(i) for i in range(lo, len(history))]
        prec_read = torch.stack([r[0] if r else run.first_latent.new_zeros(C, h, w) for r in stored])
        prec_known = torch.stack([r[1] if r else torch.zeros(h, w, dtype=torch.bool, device=run.first_latent.device)
                                  for r in stored])
    req = ChunkRequest(
        read_latents=read.latents, known=read.known, read_depth=read.depth, first_latent=run.first_latent,
        preceding=torch.stack(history[lo:]) if chunk.index > 0 else None,
        preceding_read=prec_read, preceding_known=prec_known,
        reference=torch.stack([history[i] for i in read.references]) if read.references else None,
        chunk_index=chunk.index, num_frames=chunk.length, prompt=chunk_prompt(cfg, chunk), negative_prompt=cfg.negative_prompt,
        seed=cfg.seed, steps=cfg.steps, guidance=cfg.guidance, filled_depth=read.filled,
    )
    steps = cfg.steps if run.backend.name != "preview" else 1
    step_task = progress.add_task(f"chunk {chunk.index} denoise", total=steps) if progress else None
    cb = (lambda i, n: progress.update(step_task, completed=i, total=n)) if progress else None
    latents = round_latents(run.backend.denoise(req, progress=cb).float())
    if progress:
        progress.remove_task(step_task)
    return latents


def dump_chunk(chunk: Chunk, run: Run, latents: torch.Tensor, frames_u8: np.ndarray, rec: ChunkRecord,
               reads: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """DUMP: chunk video, latents, memory. The memory dump is the resume checkpoint, so it is
    written last and carries the records including this one (its dump time still 0)."""
    plan, state = run.plan, run.state
    t = time.perf_counter()
    write_video(chunk_video(plan.out, chunk.index), frames_u8, plan.fps)
    save_latents(chunk_latents(plan.out, chunk.index), latents, chunk, reads=reads)
    rec.seconds["dump"] = 0.0
    extras = dump_extras(state.records + [rec], plan.image_hash, plan.reference_depth, plan.size)
    state.memory.save(chunk_dump(plan.out, chunk.index, plan.config.cache_dump), extras=extras)
    rec.seconds["dump"] = round(time.perf_counter() - t, 4)


def finish(run: Run) -> RunRecord:
    """Write the video and the final dump, record the run as done, drop the rolling checkpoint."""
    plan, state, record = run.plan, run.state, run.record
    t = time.perf_counter()
    state.video.commit()
    if plan.config.cache_dump in ("final", "chunks"):
        state.memory.save(final_dump(plan.out), extras=dump_extras(state.records, plan.image_hash, plan.reference_depth, plan.size))
    stats = state.memory.stats()
    record.error = None
    record.status = "done"
    record.finished_at = now()
    record.backend = run.backend.describe()  # after the run: steps/guidance actually used
    earlier = record.totals.wall_seconds if record.totals else 0.0
    record.totals = Totals(
        frames=state.video.frames,
        seconds={k: round(sum(r.seconds[k] for r in state.records), 4) for k in STAGES},
        wall_seconds=round(time.perf_counter() - run.t_start, 3) + earlier,
        finalize_seconds=round(time.perf_counter() - t, 3),
        memory_points=stats["points"], memory_bytes=stats["bytes"],
    )
    out = plan.out.resolve()  # run.json stores absolute paths (inputs and outputs alike)
    record.outputs = Outputs(video=str(video_file(out)), chunks=[str(chunk_video(out, c.index)) for c in plan.chunks],
                             cache=kept_dumps(out), run=str(run_json(out)))
    write_run(plan.out, record)
    if last_dump(plan.out).exists():  # the rolling checkpoint goes only once the run is recorded done
        last_dump(plan.out).unlink()
    drop_empty_cache(plan.out)
    if not plan.config.keep_latents:  # they exist for --resume, which a done run no longer allows
        drop_chunk_latents(plan.out)
    return record


def open_video(plan: RunPlan, backend: Backend) -> VideoWriter:
    """The streamed ``video.mp4`` of a run (a temporary until the run is done)."""
    return VideoWriter(video_file(plan.out), plan.fps, comment=video_comment(backend))


def video_comment(backend: Backend) -> str:
    """The MP4 ``comment`` tag: which mirage and backend made it; a preview says so."""
    d = backend.describe()
    return f"mirage {__version__} backend={d.get('name')}" + (" PREVIEW (no neural network)" if d.get("name") == "preview" else "")


# ------------------------------------------------------------------------------------ history
def extend_history(state: RunState, chunk: Chunk, latents: torch.Tensor, frames_u8: np.ndarray, tf: int,
                   reads: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Append a finished chunk's written latent frames and its video frames. Its frame 0 is already
    there (the input image for chunk 0, the previous chunk's last frame otherwise), so it is skipped.
    ``reads``: the chunk's stored read (see :func:`chunk_reads`), kept per history frame."""
    lat_frames = latent_frame_indices(chunk, tf)
    for j in range(1, written_latent_frames(chunk, tf)):
        if reads is not None:
            state.history_reads[len(state.history_latents)] = (reads[0][j], reads[1][j])
        state.history_latents.append(latents[j])
        state.history_frames.append(lat_frames[j])
    if state.video is not None:
        state.video.append(frames_u8[1:] if chunk.index > 0 else frames_u8)


def replay_chunks(state: RunState, plan: RunPlan, codec: Codec, first_frame: torch.Tensor | None = None) -> None:
    """--resume: rebuild the history and video of the chunks ``state.records`` holds from their
    stored (already rounded) latents, exactly as the uninterrupted run had them (``first_frame``:
    see :func:`exact_first_frame`)."""
    for chunk in plan.chunks[: len(state.records)]:
        latents = load_latents(chunk_latents(plan.out, chunk.index)).to(plan.device)
        reads = load_reads(chunk_latents(plan.out, chunk.index), plan.device)
        frames_u8 = to_uint8(decode_chunk(chunk, codec, latents, first_frame)[:chunk.real])
        extend_history(state, chunk, latents, frames_u8, codec.temporal_factor, reads=reads)


# ------------------------------------------------------------------------------------ frame 0
def exact_first_frame(run: Run) -> torch.Tensor | None:
    """The frame that replaces the decode of the run's first frame: the input image itself for the
    preview (whose decode of a downscaled grid is only an upsampling of cell means), None for neural
    backends (their frame 0 stays the decode of the pinned input latent: pasting the photo in would
    break the temporal continuity with frame 1; run.json reports its PSNR against the input instead)."""
    return run.image if run.backend.name == "preview" else None


def decode_chunk(chunk: Chunk, codec: Codec, latents: torch.Tensor, first_frame: torch.Tensor | None) -> torch.Tensor:
    """``(T, C, h, w)`` latents -> ``(L, 3, H, W)`` frames; chunk 0's frame 0 is ``first_frame`` when given."""
    frames = codec.decode(latents)
    if chunk.index == 0 and first_frame is not None:
        frames[0] = first_frame.to(frames)
    return frames


def frame0_psnr(frame_u8: np.ndarray, image: torch.Tensor) -> float:
    """PSNR in dB of the video's frame 0 ``(H, W, 3)`` uint8 against the input ``(3, H, W)`` in [0, 1]
    (capped at 99 dB for an exact match)."""
    a = torch.from_numpy(frame_u8).float().permute(2, 0, 1) / 255.0
    mse = float(((a - image.float().cpu().clamp(0, 1)) ** 2).mean())
    return round(min(99.0, psnr_db(mse)), 2)


# ------------------------------------------------------------------------------------ helpers
def select_references(read_depth: torch.Tensor, known: torch.Tensor, cams: Cameras, hist_frames: list[int], all_cams: Cameras,
                      exclude: set[int], count: int, grid: tuple[int, int]) -> list[int]:
    """Pick up to ``count`` earlier latent frames most co-visible with this chunk.

    Co-visibility of an earlier camera = fraction of this chunk's known surface points (read
    depth ``(T, h, w)`` back-projected, subsampled to <= 1024 points) that project inside that
    camera's image and in front of it. All candidates are scored in one batched projection.
    Returns history indices, most co-visible first (ties: most recent).
    """
    cand = [i for i in range(len(hist_frames)) if i not in exclude]
    if count <= 0 or not cand or not bool(known.any()):
        return []
    h, w = grid
    pts = []
    for t in range(len(cams)):
        if bool(known[t].any()):
            p = backproject(read_depth[t].double().cpu(), cams.c2w[t], cams.K(w, h)[t])
            pts.append(p[known[t].cpu()])
    P = torch.cat(pts)
    P = P[torch.linspace(0, len(P) - 1, min(len(P), 1024)).long()]
    sel = torch.tensor([hist_frames[i] for i in cand])
    uv, z = project(P, all_cams.w2c[sel], all_cams.K(w, h)[sel])
    inside = (z > 1e-6) & (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
    score = inside.double().mean(-1)
    order = sorted(range(len(cand)), key=lambda i: (-float(score[i]), -cand[i]))
    return [cand[i] for i in order[:count] if score[i] > 0]


def write_depth(read_depth: torch.Tensor, known: torch.Tensor, frames: torch.Tensor, tf: int, factor: int,
                depth_model=None, filled: torch.Tensor | None = None) -> torch.Tensor:
    """Depth for writing a chunk's latent frames ``(T, h, w)``: the read depth where the memory
    covered the cell; elsewhere the depth model's prediction for the decoded frame, aligned to the
    read depth by a robust scale + shift fit on the covered cells, or (no model, or too few covered
    cells to fit) the read depth extended into the holes from the background side."""
    filled = fill_depth(read_depth, known) if filled is None else filled  # the loop passes the chunk's one fill
    if depth_model is None:
        return filled
    out = filled.clone()
    for j in range(read_depth.shape[0]):
        ok = known[j] & (read_depth[j] > 0)
        if int(ok.sum()) < 32 or bool(ok.all()):
            continue
        pred, _ = depth_model.predict(frames[tf * j].clamp(0, 1))
        pred = reduce_depth(pred.to(read_depth.device), factor)
        scale, shift = fit_scale_shift(pred, read_depth[j], ok & (pred > 0))
        aligned = scale * pred + shift
        out[j] = torch.where(known[j] | (aligned <= 0), filled[j], aligned)
    return out
