"""Options shared by commands that run generations (``generate``, ``eval recon``): declared once,
with defaults and help text taken from the backend specs (``backends/specs.py``), so a changed
default is said everywhere at once. Torch-free (``--help`` stays fast)."""

from __future__ import annotations

import typer

from ..backends.specs import BACKENDS, DEFAULT_BACKEND, backend_help


def per_backend(field: str) -> str:
    """``"30 wan-vace, 20 mirage"``: a sampling default of every network backend."""
    return ", ".join(f"{getattr(s.defaults, field):g} {s.name}" for s in BACKENDS.values() if s.samples)


def _models() -> str:
    return "; ".join(f"{s.name}: required, a `mirage models convert` OUT" if s.model_required
                     else f"{s.name} default: {s.default_model}" for s in BACKENDS.values() if s.samples)


def _chunks() -> str:
    return ", ".join(f"{s.chunk_frames} {s.name}" for s in BACKENDS.values())


def _references() -> str:
    return " or ".join(f"{s.references} ({s.name}, default {s.defaults.references})"
                       for s in BACKENDS.values() if s.samples)


def _network() -> str:
    return " / ".join(s.name for s in BACKENDS.values() if s.samples)


BACKEND: str = typer.Option(DEFAULT_BACKEND, "--backend", "-b", help=backend_help())
MODEL: str | None = typer.Option(None, "--model", "-m", help=f"Model: registry name, Hub repo id or local directory \\[{_models()}].")
STEPS: int | None = typer.Option(None, "--steps", help=f"Denoising steps \\[default: {per_backend('steps')}].")
GUIDANCE: float | None = typer.Option(None, "--guidance", help=f"Classifier-free guidance scale; 1 disables \\[default: {per_backend('guidance')}].")
SHIFT: float | None = typer.Option(None, "--shift", help=f"Flow-matching timestep shift \\[default: {per_backend('shift')}].")
CHUNK_FRAMES: int | None = typer.Option(None, "--chunk-frames", help=f"Frames per chunk, rounded down to 1+4k for Wan \\[default: {_chunks()}].")
REFERENCES: int | None = typer.Option(None, "--references", help=f"Reference latent frames per chunk, 0 allowed: {_references()}.")
CPU_OFFLOAD: bool = typer.Option(False, "--cpu-offload", help=f"{_network()}: keep modules on the CPU until used (small GPUs).")
