"""``mirage generate --dry-run``: check a camera path before an expensive run, without a backend.

The run is prepared exactly as a real one (options, image, depth, trajectory placement, chunk
plan, the first memory lifted from the input), then every trajectory camera reads the memory as it
stands after that first lift -- what the input image alone can show from there -- and
``OUT/coverage.mp4`` shows it with the holes (content a backend would have to invent) in magenta.
``run.json`` gets ``status: "dry-run"`` and the known fraction of each frame under ``coverage``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..models.codecs import Codec, PixelCodec
from .config import GenerateConfig
from .loop import Run
from .records import Outputs, RunRecord, now
from .rundir import coverage_video, run_json, write_run

HOLE_RGB = (1.0, 0.0, 1.0)  # magenta
WAN_SPATIAL_FACTOR = 8  # Wan2.1's VAE: the grid a wan-vace run's memory would have
BATCH = 16  # cameras per memory read


class DryRunBackend:
    """Stands in for the backend of a dry run: it only names itself (nothing is denoised)."""

    name = "dry-run"

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def denoise(self, req, progress=None):  # pragma: no cover - a dry run never denoises
        raise RuntimeError("a dry run has no backend")

    def describe(self) -> dict:
        return {"name": self.name, "model": None, "weights": "none",
                "note": f"DRY RUN for --backend {self.backend}: no backend ran; coverage.mp4 shows the memory alone"}


def dry_run_codec(cfg: GenerateConfig) -> Codec:
    """A pixel codec on the grid the real run's memory would have (no model is loaded)."""
    return PixelCodec(cfg.downscale or 1) if cfg.backend == "preview" else PixelCodec(WAN_SPATIAL_FACTOR)


def run_dry(run: Run) -> RunRecord:
    """Read the first memory from every camera, write coverage.mp4 and the record."""
    from ..io import to_uint8, write_video

    plan, memory, record = run.plan, run.state.memory, run.record
    W, H = plan.size
    hole = torch.tensor(HOLE_RGB).view(1, 3, 1, 1)
    frames, coverage = [], []
    for s in range(0, len(plan.cams), BATCH):
        latents, known, _ = memory.read(plan.cams[s:s + BATCH])  # (T, C, h, w), (T, h, w)
        rgb = run.codec.decode(latents).cpu()
        seen = F.interpolate(known[:, None].float().cpu(), size=(H, W), mode="nearest") > 0.5
        frames.append(to_uint8(torch.where(seen, rgb, hole)))
        coverage += [round(float(v), 4) for v in known.float().mean((1, 2)).cpu()]
    write_video(coverage_video(plan.out), np.concatenate(frames), plan.fps,
                comment="mirage dry run: memory coverage, holes magenta")
    if (plan.out / "chunks").is_dir() and not any((plan.out / "chunks").iterdir()):
        (plan.out / "chunks").rmdir()
    record.status = "dry-run"
    record.coverage = coverage
    record.finished_at = now()
    out = plan.out.resolve()  # absolute, as every path in run.json
    record.outputs = Outputs(video=str(coverage_video(out)), chunks=[], cache=[], run=str(run_json(out)))
    record.totals = None
    write_run(plan.out, record)
    return record
