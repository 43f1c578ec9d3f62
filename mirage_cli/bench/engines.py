"""The chunk engines of ``mirage bench``: the latent arm's (always) and, with ``--denoiser spatia``, the
point-cloud arm's. Each is a :class:`~mirage_cli.pipeline.engine.ChunkEngine`, the object ``mirage
generate`` runs, built from the bench's codec, memory and cameras.

What the engine's backend is:

- ``--denoiser none | tiny | wan2.1-1.3b | mirage | mirage-tiny``: a :class:`StandIn` -- the bench's
  stand-in for generation (see :mod:`mirage_cli.bench.loop`): it runs the denoiser on the engine's
  request (timed, charged as "denoise"), and returns the chunk content the bench uses: the denoiser's
  output when its weights are real, the synthetic scene's true render encoded (``ground-truth``,
  uncharged), or the preview backend's fill of the read (``preview-fill``, charged as "denoise").
- ``--denoiser spatia``: the loaded Spatia network itself, once per arm with its ``--conditioning``
  (rgb on the point-cloud arm, latent on the latent arm); both share the transformer, text encoder and
  VAE. The point-cloud arm's codec is a :class:`MeteredCodec`, so that the VAE encodes of its render
  and mask videos are counted and charged to its read.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch

from ..backends import ChunkRequest, ProgressFn
from ..backends.preview import PreviewBackend
from ..memory.latent import LatentMemory
from ..pipeline.covisibility import voxel_size
from ..pipeline.engine import ChunkEngine, EngineSettings, round_latents
from .measure import timed

if TYPE_CHECKING:
    from ..backends import Backend
    from ..models.codecs import Codec
    from .scene import BenchSetup


class StandIn:
    """The latent arm's backend with ``--denoiser none | tiny | wan2.1-1.3b | mirage | mirage-tiny``
    (see the module docstring). Implements the :class:`~mirage_cli.backends.Backend` protocol; its
    spec is the denoiser's (or the preview's), so the engine builds the request that backend takes.

    ``truth``: ``(L, 3, H, W)`` true renders of the next chunk, set by the loop for ``ground-truth``
    content. After each :meth:`denoise`: ``charged_s`` (denoiser + preview fill) and ``uncharged_s``
    (the encode of the true render)."""

    name = "bench"

    def __init__(self, denoiser: Backend | None, content: str, codec: Codec) -> None:
        self.denoiser, self.content, self.codec = denoiser, content, codec
        self.fill = PreviewBackend()
        self.spec = denoiser.spec if denoiser is not None else self.fill.spec
        self.preceding_frames = denoiser.preceding_frames if denoiser is not None else 0
        self.truth: torch.Tensor | None = None
        self.charged_s = 0.0
        self.uncharged_s = 0.0

    def build_inputs(self, req: ChunkRequest) -> ChunkRequest:
        return req

    def sample(self, inputs: ChunkRequest, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        return self.denoise(req, progress)

    def denoise(self, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        """The chunk content ``(T, C, h, w)`` float32 (the first of the three sources that applies)."""
        self.charged_s = self.uncharged_s = 0.0
        out: torch.Tensor | None = None
        if self.denoiser is not None:
            denoiser = self.denoiser
            made, self.charged_s = timed(lambda: denoiser.denoise(req, progress))
            if self.content == "denoiser":
                out = made
        if out is None and self.content == "ground-truth":  # stands in for generation: uncharged
            truth = self.truth
            assert truth is not None  # the loop rendered the chunk (BenchSetup chose ground-truth on the synthetic scene)
            out, self.uncharged_s = timed(lambda: self.codec.encode(truth))
        if out is None:  # the preview's fill of the latent read (no codec, milliseconds): charged as denoise
            filled, sec = timed(lambda: self.fill.denoise(req))
            self.charged_s += sec
            return filled.float()
        return out.float()

    def describe(self) -> dict:
        return self.denoiser.describe() if self.denoiser is not None else self.fill.describe()


@dataclass
class MeteredCodec:
    """A codec that records the encodes of whole-chunk videos (``num_frames`` frames: with Spatia's
    ``rgb`` conditioning, exactly the render and the mask video; the 9 overlap frames and the single
    reference images are shorter) as ``(frames, seconds)``, and the seconds of the constant-video
    latents (Spatia ``latent``: black, grey, white; made once per chunk length, then cached) as
    one-time setup; everything else is the wrapped codec's."""

    codec: Any
    num_frames: int = 0  # the frames of the chunk being made (set by the loop)
    encodes: list[tuple[int, float]] = field(default_factory=list)
    setup_s: float = 0.0  # seconds of constant-video latents made (not cached) since the last take_setup

    def constant_latent(self, value: float, num_frames: int, height: int, width: int) -> torch.Tensor:
        """The wrapped codec's (cached per shape); a first, uncached call is one-time setup, timed."""
        before = self.codec.encode_calls
        out, sec = timed(lambda: self.codec.constant_latent(value, num_frames, height, width))
        if self.codec.encode_calls != before:
            self.setup_s += sec
        return out

    def take_setup(self) -> float:
        """Seconds of :meth:`constant_latent` encodes since the last call."""
        sec, self.setup_s = self.setup_s, 0.0
        return sec

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        out, sec = timed(lambda: self.codec.encode(frames))
        if len(frames) == self.num_frames:
            self.encodes.append((len(frames), sec))
        return out

    def take(self) -> tuple[int, float]:
        """``(count, seconds)`` of the recorded encodes since the last call."""
        n, s = len(self.encodes), sum(e[1] for e in self.encodes)
        self.encodes.clear()
        return n, s

    def __getattr__(self, name: str):
        return getattr(self.codec, name)


def first_latent(codec: Codec, image: torch.Tensor) -> torch.Tensor:
    """The input image's latent ``(C, h, w)``, rounded to the stored dtype as ``mirage generate`` does."""
    return round_latents(codec.encode(image[None])[0])


def latent_memory(s: BenchSetup, codec: Codec) -> LatentMemory:
    """An empty latent memory of the bench's codec and latent write policy (the backend spec's splat)."""
    return LatentMemory(codec.channels, codec.spatial_factor, codec=codec.name, device=s.device,
                        write_policy=s.latent_policy)


def settings(s: BenchSetup, backend: Backend, conditioning: str = "") -> EngineSettings:
    """The engine's per-run settings: the bench's seed and steps, no guidance (one network pass per
    step); references: none for the stand-in (as the bench always ran), the spec's for Spatia."""
    spatia = bool(backend.spec.conditionings)
    return EngineSettings(grid=s.grid, seed=s.cfg.seed, steps=s.cfg.steps, guidance=1.0,
                          references=backend.spec.defaults.references if spatia else 0,
                          # the bench's depth is a file's or the synthetic scene's exact one: metric
                          voxel=voxel_size("file", s.data.reference_depth)[0], conditioning=conditioning)


def make_engine(s: BenchSetup, backend: Backend, codec: Codec, memory: LatentMemory, latent0: torch.Tensor,
                conditioning: str = "") -> ChunkEngine:
    """A :class:`ChunkEngine` over the bench's cameras from the lifted ``memory`` (``latent0``: the
    input's latent); a spec with ``pixel_history`` gets the input image, its depth and the cameras."""
    pixels: dict[str, Any] = {}
    if backend.spec.pixel_history:
        pixels = dict(input_image=s.data.image.to(s.device), input_depth=s.data.depth.to(s.device), cameras=s.cams)
    return ChunkEngine(codec, backend, memory, latent0, s.cams[:1], settings(s, backend, conditioning), **pixels)


def spatia_pair(backend: Backend) -> tuple[Backend, Backend, MeteredCodec, MeteredCodec, tuple[str, str]]:
    """Two views of one loaded Spatia network: ``(rgb, latent, rgb's metered codec, latent's metered
    codec, (rgb conditioning, latent conditioning))``: the first with the spec's rendering
    conditioning, the second with the other one. The transformer, text encoder, LoRA and VAE are
    shared (not copied); each view encodes through its own :class:`MeteredCodec` of the one VAE."""
    spec = backend.spec
    render = spec.render_conditionings[0]
    other = next(c for c in spec.conditionings if c not in spec.render_conditionings)
    views, meters = [], []
    for conditioning in (render, other):
        view = cast(Any, copy.copy(backend))
        meter = MeteredCodec(view.codec)
        view.conditioning, view.codec = conditioning, meter
        views.append(view)
        meters.append(meter)
    return views[0], views[1], meters[0], meters[1], (render, other)
