"""Backends: denoise one chunk of latents from a memory read.

A backend never touches the memory: it receives what the memory read returned (latents, known
mask, depth for every latent frame of the chunk), the context latents, and returns the chunk's
latents. The loop in ``pipeline/loop.py`` does everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import torch


@dataclass
class ChunkRequest:
    """Everything a backend gets for one chunk (``T`` latent frames of ``C x h x w``).

    Attributes:
        read_latents: ``(T, C, h, w)`` float32, the memory warped into each latent frame's camera
            (zeros where unknown).
        known: ``(T, h, w)`` bool, cells the read covered.
        read_depth: ``(T, h, w)`` float32 z-depth of the read (0 where unknown).
        first_latent: ``(C, h, w)`` latent of the input image (pinned as frame 0 of chunk 0).
        preceding: ``(P, C, h, w)`` latents of the previous chunk's last latent frames, or None.
            ``preceding[-1]`` is the frame this chunk overlaps (this chunk's frame 0).
        reference: ``(R, C, h, w)`` latents of earlier frames most co-visible with this chunk, or None.
        preceding_read / preceding_known: ``(len(preceding), C, h, w)`` float32 / ``(len(preceding), h, w)``
            bool, the memory reads stored when the ``preceding`` frames were generated (not a re-read),
            aligned with ``preceding``; or None (backends then treat them as unknown). Used by ``mirage``.
        chunk_index: index of the chunk in the plan.
        num_frames: number of video frames of the chunk (``1 + temporal_factor * (T - 1)``).
        seed: the run's seed; a backend derives its per-chunk noise from ``(seed, chunk_index)``.
    """

    read_latents: torch.Tensor
    known: torch.Tensor
    read_depth: torch.Tensor
    first_latent: torch.Tensor
    preceding: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    preceding_read: torch.Tensor | None = None
    preceding_known: torch.Tensor | None = None
    chunk_index: int = 0
    num_frames: int = 1
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 30
    guidance: float = 5.0
    extras: dict = field(default_factory=dict)


ProgressFn = Callable[[int, int], None]  # (step done, total steps)


@runtime_checkable
class Backend(Protocol):
    name: str

    def denoise(self, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        """Return the chunk's latents ``(T, C, h, w)`` float32."""
        ...

    def describe(self) -> dict:
        """What ran (name, model, device, dtype, whether weights are real), for run.json."""
        ...
