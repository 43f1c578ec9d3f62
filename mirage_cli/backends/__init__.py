"""Backends: denoise one chunk of latents from a memory read.

A backend never touches the memory: it receives what the memory read returned (latents, known
mask, depth for every latent frame of the chunk), the context latents, and returns the chunk's
latents. The chunk engine (``pipeline/engine.py``) does everything else. What a backend is (its
defaults, codec geometry, chunk length, context) is stated once in its spec (``specs.py``).

A backend splits its work in two, so that a trainer can call the very same conditioning code as
inference: ``build_inputs(request)`` (the conditioning: context tensors, pinned frames, text
embeddings; differentiable apart from the frozen text encoder) and ``sample(inputs, request)``
(the sampler, under ``no_grad``); ``denoise`` is the two in a row.

No torch at import (the option checks and ``specs.py`` import this package before torch loads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import torch

    from .specs import BackendSpec

E = TypeVar("E")
InputsT = TypeVar("InputsT")  # a backend's conditioning record (build_inputs -> sample)


@dataclass(frozen=True)
class PrecedingReads:
    """A backend with ``spec.preceding_reads`` (mirage): the memory reads stored when the
    ``request.preceding`` frames were generated (not a re-read), aligned with ``preceding``.

    latents: ``(P, C, h, w)`` float32, 0 where unknown. known: ``(P, h, w)`` bool."""

    latents: torch.Tensor
    known: torch.Tensor


@dataclass(frozen=True)
class FilledDepth:
    """The read depth extended into the holes (:func:`~mirage_cli.geometry.depth.fill_depth`),
    ``(T, h, w)``: computed once per chunk by the engine (its write uses it too); the preview fills with it."""

    depth: torch.Tensor


@dataclass(frozen=True)
class PointRender:
    """A spec with ``render_conditionings`` (spatia ``rgb``): the explicit RGB point cloud
    (``pipeline/pixelcontext.py``) rendered into every video frame of the chunk (padding included).

    rgb: ``(L, 3, H, W)`` float32 in [0, 1], 0 (black) where no point lands. known: ``(L, H, W)`` bool."""

    rgb: torch.Tensor
    known: torch.Tensor


@dataclass(frozen=True)
class PixelHistory:
    """A spec with ``pixel_history`` (spatia): decoded frames the chunk takes as context (uint8 pixels as
    Spatia keeps them, given as float [0, 1]).

    overlap: ``(O, 3, H, W)`` the frames this chunk overlaps (chunk > 0; None for chunk 0), re-encoded
    into its pinned latents. references: ``(R, 3, H, W)`` decoded frames chosen as references (None: none),
    each encoded alone. reference_frames: their trajectory frame numbers."""

    overlap: torch.Tensor | None
    references: torch.Tensor | None
    reference_frames: tuple[int, ...] = ()


@dataclass(frozen=True)
class ChunkRequest:
    """What every backend gets for one chunk (``T`` latent frames of ``C x h x w``).

    Attributes:
        read_latents: ``(T, C, h, w)`` float32, the memory warped into each latent frame's camera
            (zeros where unknown).
        known: ``(T, h, w)`` bool, cells the read covered.
        read_depth: ``(T, h, w)`` float32 z-depth of the read (0 where unknown).
        first_latent: ``(C, h, w)`` latent of the input image (pinned as frame 0 of chunk 0).
        preceding: ``(P, C, h, w)`` latents of the previous chunk's last latent frames, or None.
            ``preceding[-1]`` is the frame this chunk overlaps (this chunk's frame 0).
        reference: ``(R, C, h, w)`` latents of earlier frames chosen as references, or None.
        chunk_index: index of the chunk in the run.
        num_frames: number of video frames of the chunk (``1 + temporal_factor * (T - 1)``).
        prompt, negative_prompt: text (network backends).
        seed: the run's seed; a backend derives its per-chunk noise from ``(seed, chunk_index)``.
        steps, guidance: sampling steps and guidance scale (network backends).
        extras: typed per-backend inputs (:class:`PrecedingReads`, :class:`FilledDepth`, :class:`PixelHistory`,
            :class:`PointRender`), read with
            :meth:`extra`; the engine builds those the backend's spec asks for.
    """

    read_latents: torch.Tensor
    known: torch.Tensor
    read_depth: torch.Tensor
    first_latent: torch.Tensor
    preceding: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    chunk_index: int = 0
    num_frames: int = 1
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 30
    guidance: float = 5.0
    extras: tuple[Any, ...] = ()

    def extra(self, kind: type[E]) -> E | None:
        """The extra of type ``kind``, or None when the request has none."""
        return next((e for e in self.extras if isinstance(e, kind)), None)


ProgressFn = Callable[[int, int], None]  # (step done, total steps)


@runtime_checkable
class Backend(Protocol[InputsT]):
    """A loaded backend. ``spec``: its :class:`~.specs.BackendSpec`. ``preceding_frames``: latents
    before the overlap frame it takes as context (0: none; the overlap frame itself is always pinned).
    Generic over the record its ``build_inputs`` returns and its ``sample`` takes (``Backend[MirageInputs]``);
    a bare ``Backend`` takes any."""

    name: str
    spec: BackendSpec
    preceding_frames: int

    def build_inputs(self, req: ChunkRequest) -> InputsT:
        """The conditioning of one chunk (backend-specific typed record of tensors)."""
        ...

    def sample(self, inputs: InputsT, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        """Sample the chunk's latents ``(T, C, h, w)`` float32 from :meth:`build_inputs`' record."""
        ...

    def denoise(self, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        """``sample(build_inputs(req), req)``: the chunk's latents ``(T, C, h, w)`` float32."""
        ...

    def describe(self) -> dict:
        """What ran (name, model, device, dtype, whether weights are real), for run.json."""
        ...
