"""The chunk plan: the ONE place that says which frames a chunk has and which latent frames it writes.

Wan's VAE is causal with temporal factor ``tf`` (4): a chunk of ``L = 1 + tf * k`` frames has
``1 + k`` latent frames, latent frame ``j`` standing for the chunk's frame ``tf * j``. Consecutive
chunks share one frame (the last frame of chunk ``i`` is the first of chunk ``i + 1``), so the
video is continuous. A last chunk with fewer real frames is padded by repeating its last camera
up to the next valid length; only its real latent frames are written to the memory.

Shared by ``mirage generate`` (``pipeline/``) and ``mirage bench`` (``bench/``), together with the
two scene rules both need: the reference depth (unit of relative trajectories) and the scaling of
relative cameras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..geometry.cameras import Cameras


@dataclass(frozen=True)
class Chunk:
    """One chunk of the plan: trajectory frames ``[start, stop)``, padded to ``length`` frames."""

    index: int
    start: int
    stop: int
    length: int

    @property
    def frames(self) -> list[int]:
        """Trajectory frame of every (padded) chunk frame: the last camera repeats as padding."""
        return [min(self.start + i, self.stop - 1) for i in range(self.length)]

    @property
    def real(self) -> int:
        """Number of real (not padding) frames."""
        return self.stop - self.start


def valid_chunk_length(n: int, temporal_factor: int) -> int:
    """Round ``n`` down to ``1 + temporal_factor * k`` with ``k >= 1``."""
    k = max(1, (n - 1) // temporal_factor)
    return 1 + temporal_factor * k


def plan_chunks(num_frames: int, chunk_frames: int, temporal_factor: int) -> list[Chunk]:
    """Split ``num_frames`` trajectory frames into chunks of ``valid_chunk_length(chunk_frames)``
    frames that overlap by one frame; the last chunk is padded (see the module docstring)."""
    L = valid_chunk_length(chunk_frames, temporal_factor)
    if num_frames <= 1:
        return [Chunk(0, 0, 1, 1 + temporal_factor)]
    chunks: list[Chunk] = []
    start = 0
    while True:
        stop = min(start + L, num_frames)
        real = stop - start
        length = L if real == L else 1 + temporal_factor * math.ceil((real - 1) / temporal_factor)
        chunks.append(Chunk(len(chunks), start, stop, max(length, 1 + temporal_factor)))
        if stop >= num_frames:
            return chunks
        start = stop - 1


def latent_frame_indices(chunk: Chunk, temporal_factor: int) -> list[int]:
    """Trajectory frame index of each latent frame of ``chunk`` (padding included)."""
    frames = chunk.frames
    return [frames[temporal_factor * j] for j in range(1 + (chunk.length - 1) // temporal_factor)]


def written_latent_frames(chunk: Chunk, temporal_factor: int) -> int:
    """How many of the chunk's latent frames carry real content and are written to the memory.

    Latent frame ``j`` summarises frames ``tf*(j-1)+1 .. tf*j``; it holds real content as soon as
    one of those is real, so a padded last chunk writes ``1 + ceil((real - 1) / tf)`` latent frames
    (the last of which uses the last real camera). ``1 + (real - 1) // tf`` would drop it.
    """
    return 1 + math.ceil((chunk.real - 1) / temporal_factor)


def reference_depth(depth: torch.Tensor) -> float:
    """The scene's unit for relative trajectories: the median of the valid (``> 0``) input depth,
    1.0 when no pixel is valid. ``depth``: ``(H, W)`` z-depth."""
    valid = depth > 0
    return float(depth[valid].median()) if bool(valid.any()) else 1.0


def scale_cameras(cams: Cameras, scale: str, reference: float) -> Cameras:
    """Cameras in scene units: a ``"relative"`` trajectory's translations are in reference depths,
    so they are multiplied by ``reference``; ``"absolute"`` ones are returned as they are."""
    return cams.scaled(reference) if scale == "relative" else cams
