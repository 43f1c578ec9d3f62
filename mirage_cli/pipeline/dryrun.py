"""``mirage generate --dry-run``: check a camera path before an expensive run, without a backend.

The run is prepared exactly as a real one (options, image, depth, trajectory placement, chunk
plan, the first memory lifted from the input), then every trajectory camera reads the memory as it
stands after that first lift -- what the input image alone can show from there -- and
``OUT/coverage.mp4`` shows it with the holes (content a backend would have to invent) in magenta.
``run.json`` gets ``status: "dry-run"`` and the known fraction of each frame under ``coverage``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..backends.specs import BackendSpec, CodecGeometry
from ..errors import MirageError
from ..io import to_uint8, write_video
from ..models.codecs import PixelCodec
from ..models.registry import VACE_SUBFOLDERS, lookup, resolve_model
from .config import GenerateConfig
from .loop import Run
from .records import Outputs, RunRecord, now
from .rundir import coverage_video, run_json, write_run

HOLE_RGB = (1.0, 0.0, 1.0)  # magenta
BATCH = 16  # cameras per memory read


class DryRunBackend:
    """Stands in for the backend of a dry run: it carries the real backend's spec (so the plan
    follows it) and only names itself (nothing is denoised)."""

    name = "dry-run"
    preceding_frames = 0

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec

    def build_inputs(self, req):  # pragma: no cover - a dry run never denoises
        raise RuntimeError("a dry run has no backend")

    def sample(self, inputs, req, progress=None):  # pragma: no cover
        raise RuntimeError("a dry run has no backend")

    def denoise(self, req, progress=None):  # pragma: no cover
        raise RuntimeError("a dry run has no backend")

    def describe(self) -> dict:
        return {"name": self.name, "model": None, "weights": "none",
                "note": f"DRY RUN for --backend {self.spec.name}: no backend ran; coverage.mp4 shows the memory alone"}


class StandInCodec(PixelCodec):
    """Pixels averaged on the real codec's grid, with its temporal factor: the chunk plan, the frame
    size and the latent grid of the real run, without loading a VAE (decode upsamples cell means)."""

    def __init__(self, geometry: CodecGeometry, spatial_factor: int) -> None:
        super().__init__(spatial_factor)
        self.temporal_factor = geometry.temporal_factor


def dry_run_parts(cfg: GenerateConfig, spec: BackendSpec, warn) -> tuple[StandInCodec, DryRunBackend]:
    """The stand-in codec and backend of a dry run for ``--backend`` (``cfg.downscale`` chosen):
    the geometry of the backend's codec -- its spec's, or the model folder's ``vae/config.json``
    where the model resolves to a folder -- with no weights loaded."""
    geometry = planned_geometry(cfg, spec, warn)
    return StandInCodec(geometry, geometry.spatial_factor or cfg.downscale or 1), DryRunBackend(spec)


def planned_geometry(cfg: GenerateConfig, spec: BackendSpec, warn) -> CodecGeometry:
    """The codec geometry the real run would have. ``--model`` is resolved as the real run resolves
    it (no download): a path that does not exist or a name that is unknown is refused with the real
    run's message; a known name or repo id that is only not downloaded yet is planned with the spec's
    geometry and a warning (checking a path before a large download is what a dry run is for)."""
    if not spec.samples:
        return spec.codec
    ref = str(cfg.model or spec.default_model)
    spec.check_model_ref(ref)  # a registry name of another kind: refused as the real run refuses it
    try:
        root = resolve_model(ref, list(VACE_SUBFOLDERS))  # the parts the network backends' loader resolves
    except MirageError as e:
        if Path(str(ref)).expanduser().exists() or str(ref).startswith((".", "/", "~")):
            raise  # a local path that is missing or incomplete
        lookup(str(ref))  # an unknown name: refused as the real run refuses it
        warn(f"dry run: {e}; planned with the {spec.name} backend's default codec geometry")
        return spec.codec
    spec.check_model(root)  # the transformer class and the layout, as the loader checks them
    config = root / "vae" / "config.json"
    return vae_geometry(config, spec.codec) if config.is_file() else spec.codec


def vae_geometry(config: Path, default: CodecGeometry) -> CodecGeometry:
    """Channels and factors from a diffusers ``AutoencoderKLWan`` config (``z_dim``,
    ``scale_factor_spatial`` or ``2 ** len(temperal_downsample)``, ``scale_factor_temporal`` or
    ``2 ** sum(temperal_downsample)``, as :class:`~mirage_cli.models.wan_vae.WanVAECodec` reads them)."""
    try:
        c = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise MirageError(f"{config}: cannot read the VAE config ({e})") from None
    down = c.get("temperal_downsample")
    spatial = c.get("scale_factor_spatial") or (2 ** len(down) if isinstance(down, list) else default.spatial_factor)
    temporal = c.get("scale_factor_temporal") or (2 ** sum(bool(d) for d in down) if isinstance(down, list)
                                                  else default.temporal_factor)
    return CodecGeometry(default.name, int(c.get("z_dim", default.channels)), int(spatial), int(temporal))


def run_dry(run: Run) -> RunRecord:
    """Read the first memory from every camera, write coverage.mp4 and the record."""
    plan, memory, record = run.plan, run.engine.memory, run.record
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
