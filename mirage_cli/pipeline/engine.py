"""The chunk engine: read -> condition -> denoise -> decode -> write for one chunk at a time, in memory.

:class:`ChunkEngine` holds what generation carries from chunk to chunk -- codec, backend, memory and
history (the latents made so far, their cameras and the reads they were made from) -- and takes
the cameras of the *next* chunk, not a whole trajectory. It writes nothing to disk: ``mirage
generate`` (``loop.py``) drives it over a planned trajectory and lets a persistence observer
(``persist.py``) write the run directory after each chunk; a browser explorer, a data builder or
a trainer can drive it one chunk at a time, snapshot and restore it (undo), and cancel it with a
:class:`CancelToken` instead of process-global Ctrl-C state.

Conventions: latent frame ``j`` of a chunk stands for the chunk's video frame ``temporal_factor * j``
and is read and written with that frame's camera (``plan.py``). Memory labels: points lifted from
the input image carry chunk label 0, points written by chunk ``k`` carry ``k + 1``. Chunk latents are
rounded to the stored dtype (float16) as soon as they are made and only the rounded values are used
afterwards, so a run rebuilt from stored latents (``--resume``) is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch

from ..backends import Backend, ChunkRequest, FilledDepth, PixelHistory, PrecedingReads
from ..dtypes import LATENT_STORE_DTYPE
from ..geometry.cameras import Cameras, backproject, project
from ..geometry.depth import fill_depth, fit_scale_shift
from ..io import to_uint8
from ..memory.latent import LatentMemory, reduce_depth
from ..models.codecs import Codec
from . import pixelcontext as px
from .covisibility import voxel_iou_references
from .plan import Chunk, latent_frame_indices, written_latent_frames


# ------------------------------------------------------------------------------------ cancellation
class Cancelled(KeyboardInterrupt):
    """Raised by :meth:`CancelToken.check` once the token was cancelled (a KeyboardInterrupt, so a
    run stopped this way is recorded ``interrupted`` and resumable, as after Ctrl-C)."""


class CancelToken:
    """Stops an engine between stages: :meth:`cancel` from any thread (a server's cancel button),
    :meth:`check` raises :class:`Cancelled` at the engine's next checkpoint. ``also``: a further check
    run at every checkpoint (the CLI passes its Ctrl-C record, :func:`mirage_cli.interrupts.raise_if_interrupted`)."""

    def __init__(self, also: Callable[[], None] | None = None) -> None:
        self._event = threading.Event()
        self._also = also

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._also is not None:
            self._also()
        if self._event.is_set():
            raise Cancelled("cancelled")


# ------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class EngineSettings:
    """The per-run sampling settings the engine gives every chunk (resolved: no None).

    grid: ``(h, w)`` latent cells. references: reference latent frames per chunk (0: none).
    voxel: voxel edge in scene units for ``voxel-iou`` reference selection (the spec's choice).
    conditioning: the backend's ``--conditioning`` (its spec's ``render_conditionings`` make the engine
    render the explicit RGB point cloud)."""

    grid: tuple[int, int]
    seed: int = 0
    steps: int = 1
    guidance: float = 1.0
    prompt: str = ""
    negative_prompt: str = ""
    references: int = 0
    voxel: float = 0.1
    conditioning: str = ""


@dataclass(frozen=True)
class HistoryFrame:
    """One generated latent frame kept for later chunks (the input image is the first).

    latent: ``(C, h, w)`` rounded. c2w: ``(4, 4)``. intrinsics: ``(4,)`` normalized. frame: its
    video frame number. label: memory label of the chunk that made it (0: the input). read: the
    memory read it was made from (``(C, h, w)`` rounded, 0 where unknown; ``(h, w)`` bool), kept only
    for backends that take preceding reads, else None."""

    latent: torch.Tensor
    c2w: torch.Tensor
    intrinsics: torch.Tensor
    frame: int
    label: int
    read: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class ChunkRead:
    """The memory seen from one chunk's latent-frame cameras."""

    cams: Cameras  # (T) latent-frame cameras
    latents: torch.Tensor  # (T, C, h, w)
    known: torch.Tensor  # (T, h, w) bool
    depth: torch.Tensor  # (T, h, w) z-depth, 0 where unknown
    references: list[int]  # history indices of the chosen reference latents
    filled: torch.Tensor  # (T, h, w) depth extended into the holes (fill_depth), once per chunk
    pixels: tuple = ()  # spec.pixel_history: PixelHistory (+ PointRender when the conditioning renders)


@dataclass
class ChunkResult:
    """What one :meth:`ChunkEngine.step` made.

    chunk: the chunk. latents: ``(T, C, h, w)`` rounded. frames: ``(L, 3, H, W)`` decoded frames in
    [0, 1] (padding included; None with ``decode=False``). frames_u8: ``(real, H, W, 3)`` uint8 of
    the real frames (None without decode). read: the :class:`ChunkRead`. written: latent frames
    written back. points_added: memory points the write added. references: video frames of the
    chosen references. stored_reads: the read kept for preceding context (None unless the backend
    takes it). seconds: read / denoise / decode / write."""

    chunk: Chunk
    latents: torch.Tensor
    frames: torch.Tensor | None
    frames_u8: np.ndarray | None
    read: ChunkRead
    written: int
    points_added: int
    references: list[int]
    stored_reads: tuple[torch.Tensor, torch.Tensor] | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def known_fraction(self) -> float:
        """Mean known fraction over the written latent frames."""
        return float(self.read.known[:self.written].float().mean())


@dataclass(frozen=True)
class EngineSnapshot:
    """An engine's state, copied (:meth:`ChunkEngine.snapshot`); restore with :meth:`ChunkEngine.restore`."""

    memory: LatentMemory
    history: tuple[HistoryFrame, ...]
    chunks_done: int
    frames_done: int
    pixels: tuple = ()  # decoded uint8 frames kept for a spec with pixel_history


def round_latents(x: torch.Tensor) -> torch.Tensor:
    """Round to the stored dtype and back, so resumed and uninterrupted runs see the same values."""
    return x.to(LATENT_STORE_DTYPE).float()


class ChunkObserver(Protocol):
    """Told after each chunk the engine finished (``mirage generate``'s run directory is one)."""

    def on_chunk(self, result: ChunkResult, engine: ChunkEngine) -> None: ...


# ------------------------------------------------------------------------------------ the engine
class ChunkEngine:
    """Generates chunk after chunk into one memory (see the module docstring).

    Args:
        codec, backend: loaded (``backend.spec`` says how it takes its context).
        memory: the memory after the input's lift (chunk label 0).
        first_latent: ``(C, h, w)`` the input image's latent, rounded; pinned as frame 0 of chunk 0.
        first_camera: the input's camera (``Cameras`` of one).
        settings: :class:`EngineSettings`.
        depth_model: gives depth to new content (aligned to the read), or None (the read depth
            extended into the holes).
        first_frame: ``(3, H, W)`` replaces the decode of the run's frame 0 (the spec's
            ``exact_first_frame``: the input image itself), or None.
        input_image, input_depth: ``(3, H, W)`` in [0, 1] and ``(H, W)`` z-depth of the input, for a spec
            with ``pixel_history`` (frame 0 of the kept pixels and of the explicit cloud); else unused.
        cameras: the whole trajectory's cameras (scene units), for a spec with ``pixel_history`` (the
            explicit cloud lifts earlier frames with their cameras).
    """

    def __init__(self, codec: Codec, backend: Backend, memory: LatentMemory, first_latent: torch.Tensor,
                 first_camera: Cameras, settings: EngineSettings, depth_model=None,
                 first_frame: torch.Tensor | None = None, input_image: torch.Tensor | None = None,
                 input_depth: torch.Tensor | None = None, cameras: Cameras | None = None) -> None:
        self.codec, self.backend, self.settings = codec, backend, settings
        self.observers: list[ChunkObserver] = []  # told after every chunk (persistence, progress, warnings)
        self.memory = memory
        self.first_latent = first_latent
        self.depth_model = depth_model
        self.first_frame = first_frame
        self.history: list[HistoryFrame] = [
            HistoryFrame(first_latent, first_camera.c2w[0], first_camera.intrinsics[0], 0, 0)]
        self.chunks_done = 0
        self.frames_done = 1  # video frames made so far (the input image is frame 0)
        self.size = (first_camera.width, first_camera.height)
        self.pixels: list[np.ndarray] = []  # spec.pixel_history: (H, W, 3) uint8 per trajectory frame made so far
        self.input_depth, self.cameras = input_depth, cameras
        if backend.spec.pixel_history:
            if input_image is None or input_depth is None or cameras is None:
                raise ValueError(f"--backend {backend.spec.name} keeps pixels: give input_image, input_depth, cameras")
            self.pixels = [to_uint8(input_image[None])[0]]  # Spatia keeps the input image itself as frame 0

    # -------------------------------------------------------------------------------- state
    def snapshot(self) -> EngineSnapshot:
        """A copy of the state (memory copied; history frames are immutable and shared)."""
        m = self.memory
        return EngineSnapshot(m.select(torch.arange(len(m), device=m.device)), tuple(self.history), self.chunks_done,
                              self.frames_done, tuple(self.pixels))

    def restore(self, snap: EngineSnapshot) -> None:
        """Go back to ``snap`` (it stays valid: restoring copies its memory again)."""
        m = snap.memory
        self.memory = m.select(torch.arange(len(m), device=m.device))
        self.history = list(snap.history)
        self.chunks_done, self.frames_done = snap.chunks_done, snap.frames_done
        self.pixels = list(snap.pixels)

    # -------------------------------------------------------------------------------- one chunk
    def step(self, chunk: Chunk, cams: Cameras, *, decode: bool = True, cancel: CancelToken | None = None,
             progress: Callable[[int, int], None] | None = None, depth: torch.Tensor | None = None) -> ChunkResult:
        """Read -> denoise -> decode -> write one chunk, extend the history, tell the observers.

        Args:
            chunk: the chunk (``chunk.index == chunks_done``; frames ``[start, stop)`` padded to ``length``).
            cams: ``(chunk.length)`` cameras of the chunk's video frames (padding included), in scene units.
            decode: decode the frames (a depth model needs them for the write, so it decodes anyway).
            cancel: checked between stages (raises :class:`Cancelled`).
            progress: ``(step, total)`` of the denoise.
            depth: ``(L, H, W)`` z-depth of the chunk's frames when the caller knows it (a synthetic scene's:
                ``mirage bench --write-depth exact``), given to :meth:`write`; None: the depth model or the filled read.
        Raises:
            ValueError: a chunk out of order or cameras of the wrong length.
        """
        if chunk.index != self.chunks_done or len(cams) != chunk.length:
            raise ValueError(f"chunk {chunk.index} with {len(cams)} cameras; expected chunk {self.chunks_done} "
                             f"with {chunk.length}")
        check = cancel.check if cancel is not None else (lambda: None)
        sec: dict[str, float] = {}
        check()
        t = time.perf_counter()
        read = self.read(chunk, cams)
        sec["read"] = time.perf_counter() - t
        check()

        t = time.perf_counter()
        latents = round_latents(self.backend.denoise(self.request(chunk, read), progress=progress).float())
        sec["denoise"] = time.perf_counter() - t
        check()

        frames = frames_u8 = None
        t = time.perf_counter()
        if decode or self.depth_model is not None or self.backend.spec.pixel_history:
            frames = decode_chunk(chunk, self.codec, latents, self.first_frame)  # (L, 3, H, W), padding included
            frames_u8 = to_uint8(frames[:chunk.real])
            self.keep_pixels(chunk, frames_u8)
        sec["decode"] = time.perf_counter() - t

        t = time.perf_counter()
        n, added = self.write(chunk, read, latents, frames, depth)
        sec["write"] = time.perf_counter() - t

        stored = self.stored_reads(read)
        refs = [self.history[i].frame for i in read.references]
        refs += [f for p in read.pixels if isinstance(p, PixelHistory) for f in p.reference_frames]  # pixel references
        self.extend_history(chunk, latents, read.cams, stored)
        result = ChunkResult(chunk, latents, frames, frames_u8, read, n, added, refs, stored, sec)
        for observer in self.observers:
            observer.on_chunk(result, self)
        return result

    def write(self, chunk: Chunk, read: ChunkRead, latents: torch.Tensor, frames: torch.Tensor | None,
              depth: torch.Tensor | None = None) -> tuple[int, int]:
        """WRITE: lift what the read did not cover into the memory. Only latent frames that are real
        trajectory frames are written (padding repeats the last camera). ``depth``: see :meth:`step`.
        Returns ``(latent frames written, points added)``."""
        tf = self.codec.temporal_factor
        n = written_latent_frames(chunk, tf)
        wdepth = (write_depth(read.depth, read.known, frames, tf, self.codec.spatial_factor, self.depth_model, read.filled)
                  if depth is None else depth[::tf].to(read.depth.device))
        added = self.memory.write(latents[:n], wdepth[:n], read.cams[:n], read.known[:n], chunk=chunk.index + 1)
        return n, int(added)

    def keep_pixels(self, chunk: Chunk, frames_u8: np.ndarray) -> None:
        """Keep a chunk's new decoded frames (spec ``pixel_history``; chunk 0's frame 0 stays the input image)."""
        if not self.backend.spec.pixel_history:
            return
        first = max(1, chunk.new_from)
        if len(self.pixels) != chunk.start + first:
            raise ValueError(f"chunk {chunk.index}: {len(self.pixels)} frames kept, expected {chunk.start + first}")
        self.pixels.extend(frames_u8[first:])

    def pixel_context(self, chunk: Chunk, cams: Cameras) -> tuple:
        """The spec ``pixel_history`` context of ``chunk``: its overlap frames and pixel references
        (:class:`~.pixelcontext.PixelHistory`) and, for a rendering conditioning, the explicit RGB cloud
        rebuilt from the frames so far and rendered into every video frame (:class:`~.pixelcontext.PointRender`)."""
        spec, s, dev = self.backend.spec, self.settings, self.first_latent.device
        overlap = (px.frames_tensor(self.pixels, list(range(chunk.start, chunk.start + chunk.overlap)), dev)
                   if chunk.index > 0 else None)
        if s.conditioning not in spec.render_conditionings:
            return (px.PixelHistory(overlap, None),)
        # __init__ refuses a pixel_history spec without them, and only such a spec gets here
        assert self.input_depth is not None and self.cameras is not None
        upto = chunk.start + (chunk.overlap if chunk.index > 0 else 1)  # every frame made so far
        voxel = s.voxel / 10 * (1 + px.VOXEL_GROWTH * chunk.index)  # the reference's 0.1 -> Spatia's 0.01 (+ growth)
        cloud = px.rebuild_cloud(self.pixels, self.cameras, self.memory, self.input_depth.to(dev), upto, voxel)
        rgb, known, _ = cloud.render(cams)
        refs: list[int] = []
        if chunk.index > 0 and spec.references == "matching" and s.references > 0:
            cand = list(range(0, chunk.start, px.REF_CANDIDATE_STRIDE))
            targets = cams[list(range(0, chunk.length, px.REF_TARGET_STRIDE))]
            refs = px.matching_references(cloud, targets, self.cameras[cand], cand, min(s.references, px.MAX_REFERENCES))
        ref_px = px.frames_tensor(self.pixels, refs, dev) if refs else None
        return px.PixelHistory(overlap, ref_px, tuple(refs)), px.PointRender(rgb, known)

    def read(self, chunk: Chunk, cams: Cameras) -> ChunkRead:
        """READ: warp the memory into every latent frame's camera (no pixels, no encode), and choose
        the reference latents as the backend's spec says (a spec with ``pixel_history`` also gets its
        pixel context, :meth:`pixel_context`)."""
        idx = list(range(0, chunk.length, self.codec.temporal_factor))
        lcams = Cameras(cams.c2w[idx], cams.intrinsics[idx], cams.width, cams.height)
        latents, known, depth = self.memory.read(lcams)  # (T,C,h,w), (T,h,w), (T,h,w)
        pixels = self.pixel_context(chunk, cams) if self.backend.spec.pixel_history else ()
        if self.settings.conditioning in self.backend.spec.render_conditionings:  # references are pixels (or none)
            return ChunkRead(lcams, latents, known, depth, [], fill_depth(depth, known), pixels)
        n = len(self.history)
        # the overlap frame (and the preceding frames the backend takes) are in the sequence already
        exclude = set(range(n - 1 - self.backend.preceding_frames, n))
        exclude |= {i for i in range(n) if self.history[i].frame >= chunk.start}  # the overlap (re-encoded, pinned)
        candidates = [i for i in range(n) if i not in exclude]
        s = self.settings
        if self.backend.spec.references == "voxel-iou":  # the reference's selection, the one its model was trained with
            refs = voxel_iou_references(self.memory.points, self.memory.chunk, lcams, self.history_cameras(),
                                        [h.label for h in self.history], candidates, s.references, s.grid, s.voxel)
        else:
            refs = select_references(depth, known, lcams, self.history_cameras(), candidates, s.references, s.grid)
        # The depth extended into the holes, once per chunk: the preview's fill and the write both use it.
        return ChunkRead(lcams, latents, known, depth, refs, fill_depth(depth, known), pixels)

    def request(self, chunk: Chunk, read: ChunkRead) -> ChunkRequest:
        """The backend's request for ``chunk`` from its read (the extras its spec asks for)."""
        s, history = self.settings, self.history
        P = self.backend.preceding_frames
        lo = max(0, len(history) - 1 - P)  # P preceding + the overlap frame
        extras: list = [FilledDepth(read.filled), *read.pixels]
        if chunk.index > 0 and P > 0 and self.backend.spec.preceding_reads:
            C, (h, w) = self.first_latent.shape[0], s.grid
            dev = self.first_latent.device
            stored = [history[i].read for i in range(lo, len(history))]
            extras.append(PrecedingReads(
                torch.stack([r[0] if r else self.first_latent.new_zeros(C, h, w) for r in stored]),
                torch.stack([r[1] if r else torch.zeros(h, w, dtype=torch.bool, device=dev) for r in stored])))
        return ChunkRequest(
            read_latents=read.latents, known=read.known, read_depth=read.depth, first_latent=self.first_latent,
            preceding=torch.stack([f.latent for f in history[lo:]]) if chunk.index > 0 else None,
            reference=torch.stack([history[i].latent for i in read.references]) if read.references else None,
            chunk_index=chunk.index, num_frames=chunk.length, prompt=s.prompt,
            negative_prompt=s.negative_prompt,
            seed=s.seed, steps=s.steps, guidance=s.guidance, extras=tuple(extras))

    def stored_reads(self, read: ChunkRead) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The read a chunk was made from, ``(T, C, h, w)`` rounded (0 where unknown) and ``(T, h, w)``
        known, when the backend takes it back as preceding context; else None (nothing stored)."""
        if self.backend.preceding_frames <= 0 or not self.backend.spec.preceding_reads:
            return None
        return round_latents(read.latents * read.known[:, None].to(read.latents.dtype)), read.known.bool()

    def extend_history(self, chunk: Chunk, latents: torch.Tensor, lcams: Cameras,
                       reads: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Append a finished chunk's written latent frames (its frame 0 is already there: the input
        image for chunk 0, the previous chunk's last frame otherwise). ``lcams``: its latent-frame cameras."""
        tf = self.codec.temporal_factor
        frames = latent_frame_indices(chunk, tf)
        for j in range(chunk.pinned_latents(tf), written_latent_frames(chunk, tf)):
            read = (reads[0][j], reads[1][j]) if reads is not None else None
            self.history.append(HistoryFrame(latents[j], lcams.c2w[j], lcams.intrinsics[j], frames[j], chunk.index + 1,
                                             read))
        self.chunks_done = chunk.index + 1
        self.frames_done = chunk.stop

    def replay(self, chunk: Chunk, cams: Cameras, latents: torch.Tensor,
               reads: tuple[torch.Tensor, torch.Tensor] | None, decode: bool = True) -> np.ndarray | None:
        """Rebuild a chunk made earlier from its stored (already rounded) latents, exactly as the
        uninterrupted run had it: the history is extended, the memory is not touched (it comes from
        the checkpoint). Returns the real frames ``(real, H, W, 3)`` uint8 (None without decode)."""
        idx = list(range(0, chunk.length, self.codec.temporal_factor))
        lcams = Cameras(cams.c2w[idx], cams.intrinsics[idx], cams.width, cams.height)
        frames_u8 = None
        if decode or self.backend.spec.pixel_history:
            frames_u8 = to_uint8(decode_chunk(chunk, self.codec, latents, self.first_frame)[:chunk.real])
            self.keep_pixels(chunk, frames_u8)
        self.extend_history(chunk, latents, lcams, reads)
        return frames_u8

    def history_cameras(self) -> Cameras:
        """``(len(history))`` cameras of the history frames."""
        W, H = self.size
        return Cameras(torch.stack([h.c2w for h in self.history]), torch.stack([h.intrinsics for h in self.history]), W, H)

    def with_settings(self, **changes) -> None:
        """Change sampling settings between chunks (the explorer's prompt per step)."""
        self.settings = replace(self.settings, **changes)


# ------------------------------------------------------------------------------------ pieces
def decode_chunk(chunk: Chunk, codec: Codec, latents: torch.Tensor, first_frame: torch.Tensor | None) -> torch.Tensor:
    """``(T, C, h, w)`` latents -> ``(L, 3, H, W)`` frames; chunk 0's frame 0 is ``first_frame`` when given."""
    frames = codec.decode(latents)
    if chunk.index == 0 and first_frame is not None:
        frames[0] = first_frame.to(frames)
    return frames


def select_references(read_depth: torch.Tensor, known: torch.Tensor, cams: Cameras, history: Cameras,
                      candidates: list[int], count: int, grid: tuple[int, int]) -> list[int]:
    """Pick up to ``count`` of ``candidates`` (indices into ``history``) most co-visible with this chunk.

    Co-visibility of an earlier camera = fraction of this chunk's known surface points (read
    depth ``(T, h, w)`` back-projected, subsampled to <= 1024 points) that project inside that
    camera's image and in front of it. All candidates are scored in one batched projection.
    Returns history indices, most co-visible first (ties: most recent).
    """
    if count <= 0 or not candidates or not bool(known.any()):
        return []
    h, w = grid
    pts = []
    for t in range(len(cams)):
        if bool(known[t].any()):
            p = backproject(read_depth[t].double().cpu(), cams.c2w[t], cams.K(w, h)[t])
            pts.append(p[known[t].cpu()])
    P = torch.cat(pts)
    P = P[torch.linspace(0, len(P) - 1, min(len(P), 1024)).long()]
    sel = torch.tensor(candidates)
    uv, z = project(P, history.w2c[sel], history.K(w, h)[sel])
    inside = (z > 1e-6) & (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
    score = inside.double().mean(-1)
    order = sorted(range(len(candidates)), key=lambda i: (-float(score[i]), -candidates[i]))
    return [candidates[i] for i in order[:count] if score[i] > 0]


def write_depth(read_depth: torch.Tensor, known: torch.Tensor, frames: torch.Tensor | None, tf: int, factor: int,
                depth_model=None, filled: torch.Tensor | None = None) -> torch.Tensor:
    """Depth for writing a chunk's latent frames ``(T, h, w)``: the read depth where the memory
    covered the cell; elsewhere the depth model's prediction for the decoded frame, aligned to the
    read depth by a robust scale + shift fit on the covered cells, or (no model, or too few covered
    cells to fit) the read depth extended into the holes from the background side."""
    filled = fill_depth(read_depth, known) if filled is None else filled  # the engine passes the chunk's one fill
    if depth_model is None or frames is None:
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
