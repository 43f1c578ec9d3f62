"""Which prompt a chunk is denoised with: one for the whole run, or one per span of frames.

``GenerateConfig.prompts`` alone gives one prompt per chunk (``--prompt-file``, as Spatia's
``--prompt_path``; the last repeats). With ``prompt_starts`` it gives a prompt per span of trajectory frames
(``prompts[i]`` from frame ``prompt_starts[i]`` on; ``mirage eval worldscore`` gives each WorldScore
scene its own). A chunk takes the prompt of the span holding its middle frame, so a chunk that
straddles a boundary is denoised with the prompt of most of its frames. Without ``prompts`` every
chunk gets ``prompt``.
"""

from __future__ import annotations

from ..errors import MirageError
from .plan import Chunk


def chunk_prompt(cfg, chunk: Chunk) -> str:
    """The prompt of ``chunk`` under ``cfg`` (a ``GenerateConfig``; see the module docstring)."""
    if not cfg.prompts:
        return cfg.prompt
    if cfg.prompt_starts is None:  # one per chunk (--prompt-file), the last repeating
        return cfg.prompts[min(chunk.index, len(cfg.prompts) - 1)]
    middle = (chunk.start + chunk.stop - 1) / 2
    starts = cfg.prompt_starts or [0]
    span = max((i for i, s in enumerate(starts) if s <= middle), default=0)
    return cfg.prompts[min(span, len(cfg.prompts) - 1)]


def check_prompt_spans(prompts: list[str] | None, starts: list[int] | None) -> None:
    """MirageError unless ``prompts`` and ``starts`` pair up: as many, starts from 0 and increasing."""
    if starts is None:  # none, or one prompt per chunk
        return
    if not prompts or starts is None or len(prompts) != len(starts):
        raise MirageError(f"prompts: {len(prompts or [])} prompts need as many starting frames (got {len(starts or [])})")
    if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise MirageError(f"prompt_starts: must start at frame 0 and increase (got {starts})")
