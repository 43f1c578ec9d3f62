"""The chunk plan: the ONE place that says which frames a chunk has and which latent frames it writes.

Wan's VAE is causal with temporal factor ``tf`` (4): a chunk of ``L = 1 + tf * k`` frames has
``1 + k`` latent frames, latent frame ``j`` standing for the chunk's frame ``tf * j``. Consecutive
chunks share one frame (the last frame of chunk ``i`` is the first of chunk ``i + 1``), so the
video is continuous. A last chunk with fewer real frames is padded by repeating its last camera
up to the next valid length; only its real latent frames are written to the memory.

A backend's spec may ask for another plan (Spatia's, ZhaoJingjing713/Spatia Spatia/inference.py: a first chunk
of 121 frames, then chunks of 81 overlapping the previous one by ``overlap = 9`` frames, i.e. 3 latent
frames re-encoded from the decoded pixels; a short last chunk padded to the full length). ``overlap`` must
be ``1 + tf * k`` so the overlapping frames are whole latent frames; the default plan (overlap 1, no
first length, codec padding) is the one above, unchanged.

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
    overlap: int = 1  # frames shared with the previous chunk (chunk 0: its pinned input frame)

    @property
    def new_from(self) -> int:
        """First chunk frame that is new video (0 for chunk 0: its frame 0 is the input image)."""
        return 0 if self.index == 0 else self.overlap

    def pinned_latents(self, temporal_factor: int) -> int:
        """Leading latent frames that are clean context, not generated (the input's or the overlap's)."""
        return 1 if self.index == 0 else 1 + (self.overlap - 1) // temporal_factor

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


def plan_chunks(num_frames: int, chunk_frames: int, temporal_factor: int, overlap: int = 1,
                first_frames: int | None = None, pad_full: bool = False) -> list[Chunk]:
    """Split ``num_frames`` trajectory frames into chunks of ``valid_chunk_length(chunk_frames)``
    frames (the first: ``valid_chunk_length(first_frames)`` when given) that overlap by ``overlap``
    frames; the last chunk is padded to the next valid length, or to the full length with ``pad_full``
    (see the module docstring).

    Spatia's plan (121 / 81 / overlap 9, pad_full): chunk ``r >= 1`` covers ``[s, s + 81)`` with
    ``s = 121 + 72 (r - 1) - 9``, i.e. 112, 184, ...; ``N`` frames make ``1 + ceil((N - 121) / 72)`` chunks.

    Raises:
        ValueError: ``overlap`` is not ``1 + tf * k``, or leaves no new frame in a chunk.
    """
    tf = temporal_factor
    L = valid_chunk_length(chunk_frames, tf)
    L0 = valid_chunk_length(first_frames, tf) if first_frames else L
    if overlap < 1 or (overlap - 1) % tf or overlap + tf > L:
        raise ValueError(f"chunk overlap {overlap}: must be 1 + {tf}k frames and leave new frames in a "
                         f"{L}-frame chunk")
    if num_frames <= 1:
        return [Chunk(0, 0, 1, L0 if pad_full else 1 + tf, overlap)]
    chunks: list[Chunk] = []
    start = 0
    while True:
        full = L0 if not chunks else L
        stop = min(start + full, num_frames)
        real = stop - start
        length = full if real == full or pad_full else 1 + tf * math.ceil((real - 1) / tf)
        chunks.append(Chunk(len(chunks), start, stop, max(length, 1 + tf, overlap + tf if chunks else 0), overlap))
        if stop >= num_frames:
            return chunks
        start = stop - overlap


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
