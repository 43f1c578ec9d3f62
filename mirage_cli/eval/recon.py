"""``mirage eval recon``: generate every clip from its frame 0 along its cameras, score every frame.

Every clip is one job of the batch machinery (:mod:`mirage_cli.batch`): its generation runs
through the same worker as ``mirage batch`` (``pipeline.generate.start`` / ``resume``, models
kept loaded, in-process, ``--workers N`` processes or ``--ray`` actors), with the same skip,
resume and retry semantics; then the same worker scores it (the job's step, :func:`score_job`)
and writes ``DIR/<clip>/score.json``. A clip whose run is done and scored is skipped on a rerun;
one whose run was interrupted is resumed, then scored. ``DIR/eval.json`` gathers the scores.

Per clip: inputs in ``DIR/<clip>/inputs/`` (frame 0 as PNG, the cameras as a native trajectory
with absolute units, frame 0's depth as .npy when the clip has it), the run in ``DIR/<clip>/run/``
(with its chunk latents and final memory kept: the score is computed from the run directory).

Scoring reads the finished run back (:func:`mirage_cli.pipeline.generate.reopen`): the frames are
the loop's uint8 frames (decoded again from the stored latents, exactly as the loop made them;
the MP4's lossy compression is not part of the score); the ``memory`` region is the known mask of
the memory holding only frame 0's lift, read along every camera; the final memory's read gives the
known fraction and, decoded, the read fidelity on known cells. The loop-closure score
(:mod:`.loop`: last frame against the first on a closed path, the final memory against the
input-only memory from the input camera) is added to the clip's means and kept whole in ``loop``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..batch.manifest import Job, RowError, Step, check_id, check_row_config, existing, read_rows, row_options, validate_rows
from ..batch.runner import BatchOptions, run_jobs
from ..errors import MirageError
from ..io import atomic_path, save_image, write_json
from ..pipeline.config import GenerateConfig
from ..pipeline.generate import input_memory, reopen
from ..pipeline.plan import reference_depth
from ..pipeline.records import RunRecord
from ..pipeline.rundir import run_json
from ..trajectories import Trajectory, save_trajectory
from .loop import LOOP_FIELDS, score_reopened
from .metrics import PSNR_CAP, aggregate, clip_means, follow_masks, load_lpips, lpips_missing, revisits, score_frames, to_float
from .report import write_outputs
from .sources import Clip, _clip_name, clip_specs, read_clip

STRIP_FRAMES = 4
"""Comparison strips per clip: evenly spaced frames, plus the first revisit."""
MANIFEST_SUFFIXES = (".jsonl", ".csv")
"""A SOURCE with one of these suffixes is a manifest of clips (one per row)."""
EVAL_OWNED = ("out", "overwrite", "image", "width", "height", "fov", "keep_latents", "cache_dump", "start_frame", "memory")
"""Generate options a manifest row may not set: eval decides them per clip (size = the clip's)."""
SCORE_FILE = "score.json"


def eval_recon(sources: list[str], base: GenerateConfig, out: Path, batch: BatchOptions | None = None,
               traj: str | None = None, depth: str | None = None, frames: int | None = None,
               size: tuple[int, int] | None = None, on_update: Callable | None = None) -> dict:
    """Run and score every clip; returns the ``eval.json`` document (also written, with eval.csv).

    Args:
        sources: SOURCE arguments (clips, ``synthetic[...]``, manifests; see :func:`clip_jobs`).
        base: generate options shared by every clip (image, traj, depth, out, size are set per
            clip; ``base.overwrite`` regenerates every clip).
        out: the evaluation directory. batch: workers / Ray / retries (``out`` is replaced by ``out``).
        traj, depth, frames, size: as :func:`~mirage_cli.eval.sources.clip_specs`.
        on_update: called with the batch record whenever a clip's job changes state.
    """
    pairs = clip_jobs(sources, base, out, traj, depth, frames, size)  # every clip checked before anything is written
    check_earlier_runs(pairs)
    for job, head in pairs:
        write_inputs(job, head)
    jobs = [job for job, _ in pairs]
    opts = replace(batch or BatchOptions(out=str(out)), out=str(out))
    record = run_jobs(jobs, opts, " ".join(sources), on_update or (lambda r: None))
    results, failed = [], []
    for job in jobs:
        rec = record.jobs[job.id]
        if rec.status in ("done", "skipped"):
            results.append(json.loads(Path(job.step.output).read_text()))
        else:
            failed.append({"name": job.id, "status": rec.status, "error": rec.error})
    why = lpips_missing()
    doc = {
        "format": "mirage.eval",
        "version": 1,
        "config": {k: v for k, v in asdict(base).items() if k not in ("image", "traj", "depth", "out", "overwrite")},
        "protocol": {"frames": "1..N-1 (frame 0 is the input)", "psnr_ssim": "torchmetrics",
                     "lpips": "lpips (alex)" if why is None else None, "psnr_cap_db": 100.0},
        "notes": ([why] if why else []) + capped_note(results),
        "jobs": {"workers": record.workers, **{k: v for k, v in record.counts().items() if v}},
        "clips": results,
        "failed": failed,
    }
    doc["aggregate"] = aggregate([r["means"] for r in results]) if results else {}
    write_outputs(doc, out)
    return doc


def capped_note(results: list[dict]) -> list[str]:
    """The notes that frames identical to the truth (PSNR at the cap) are not in the PSNR means, and
    which clips' loop PSNRs are at the cap (left out of the mean over clips)."""
    n = int(sum(r["means"].get("capped_frames") or 0 for r in results))
    notes = [] if not n else [f"{n} frame{'s' if n > 1 else ''} identical to the true frame (PSNR capped at "
                              f"{PSNR_CAP:.0f} dB) left out of the PSNR means; counted in capped_frames"]
    for k in LOOP_FIELDS:
        capped = [r["name"] for r in results if "psnr" in k and (r["means"].get(k) or 0) >= PSNR_CAP]
        if capped:
            notes.append(f"{k}: {', '.join(capped)} identical ({PSNR_CAP:.0f} dB cap), left out of its mean over clips")
    return notes


# ------------------------------------------------------------------------------------ jobs
def clip_jobs(sources: list[str], base: GenerateConfig, out: Path, traj: str | None = None, depth: str | None = None,
              frames: int | None = None, size: tuple[int, int] | None = None) -> list[tuple[Job, Clip]]:
    """One batch job per clip, with the clip's head (frame 0, cameras, depth: what
    :func:`write_inputs` writes; the full frames are not kept, a worker reads the clip again to
    score it). Every clip is read and checked first; nothing is written here.

    A SOURCE ending in ``.jsonl``/``.csv`` is a manifest (:func:`manifest_jobs`); the others are
    clips or ``synthetic[...]`` (:func:`~mirage_cli.eval.sources.clip_specs`; a bad one is one
    line). Job ids (= clip folder names) must be unique over all sources."""
    out = Path(out).resolve()
    manifests = [s for s in sources if Path(s).suffix in MANIFEST_SUFFIXES]
    others = [s for s in sources if s not in manifests]
    specs = clip_specs(others, traj, depth, frames, size) if others else []
    for spec in specs:  # the cheap part of check_earlier_runs first: no clip is read or rendered yet
        known = {"width": spec["size"][0], "height": spec["size"][1]} if spec["size"] else {}
        if not base.overwrite:
            shared = {k: v for k, v in asdict(base).items() if k not in PER_CLIP}
            _check_earlier_run(out / spec["name"] / "run", {**shared, **known}, spec["frames"] if spec["size"] else None)
    jobs = [clip_job(spec, read_clip(spec), base, out, i + 1) for i, spec in enumerate(specs)]
    if manifests and (traj or depth):
        raise MirageError("--traj/--depth: a manifest gives them per row (traj, depth)")
    for m in manifests:
        jobs += manifest_jobs(Path(m), base, out, frames)
    seen: dict[str, str] = {}
    for job, _ in jobs:
        if job.id in seen:
            raise MirageError(f"{job.id}: two clips of this name ({seen[job.id]} and {job.step.args['source']}); "
                              "give manifest rows an id")
        seen[job.id] = job.step.args["source"]
    return jobs


def manifest_jobs(path: Path, base: GenerateConfig, out: Path, frames: int | None = None) -> list[tuple[Job, Clip]]:
    """A manifest of clips: one clip per row, JSONL or CSV like ``mirage batch``'s (same reader and
    validation: every row checked, one line per bad row, one error). Row fields: ``clip`` (a
    geometry.npz, a frames folder or MP4, a clip folder; relative to the manifest), ``traj`` (the
    cameras of a frames folder / MP4), ``depth`` (frame 0's depth file, or prior/model), ``frames``
    (keep the first N), ``id`` (default: the clip's name), and any other generate option (over the
    command's)."""
    base_dir = path.resolve().parent
    heads: dict[str, Clip] = {}

    def build(raw: dict, n: int) -> Job:
        job_id, values = row_options(raw, owned=EVAL_OWNED, extra=("clip",))
        if not values.get("clip"):
            raise RowError("clip", "is required")
        clip_path = existing(base_dir, "clip", str(values.pop("clip")), folder=True)
        spec = {"source": clip_path, "traj": None, "depth": None, "frames": values.pop("frames", frames), "size": None}
        if values.get("traj"):
            spec["traj"] = existing(base_dir, "traj", values.pop("traj"))
        if values.get("depth") not in (None, "prior", "model"):
            spec["depth"] = existing(base_dir, "depth", values.pop("depth"))
        spec["name"] = check_id(job_id or _clip_name(Path(clip_path)))
        try:
            clip = read_clip(spec)
        except MirageError as e:
            raise RowError("clip", str(e)) from e
        job, heads[spec["name"]] = clip_job(spec, clip, replace(base, **values), out, n)
        return job

    return [(job, heads[job.id]) for job in validate_rows(path, read_rows(path, required=("clip",)), build)]


def clip_job(spec: dict, clip: Clip, base: GenerateConfig, out: Path, row: int) -> tuple[Job, Clip]:
    """The batch job of one clip (generate options with the clip's inputs and size, and the scoring
    step) and the clip's head. RowError when an option is bad."""
    clip_dir = out / spec["name"]
    inputs = clip_dir / "inputs"
    W, H = clip.size
    cfg = replace(base, image=str(inputs / "frame0.png"), traj=str(inputs / "trajectory.json"),
                  depth=str(inputs / "depth0.npy") if clip.depth0 is not None else base.depth,
                  out=str(clip_dir / "run"), width=W, height=H, frames=None, fov=None, keep_latents=True,
                  cache_dump=base.cache_dump if base.cache_dump != "none" else "final")
    check_row_config(replace(cfg, traj="static"))  # the trajectory is written later; the clip's cameras were checked
    head = Clip(clip.name, clip.frames[:1], clip.cameras, clip.depth0, None, clip.fps, clip.source, clip.synthetic)
    args = {**spec, "options": {k: v for k, v in asdict(base).items() if v != getattr(GenerateConfig(), k)}}
    job = Job(spec["name"], row, cfg, then=Step("mirage_cli.eval.recon:score_job", str(clip_dir / SCORE_FILE), args))
    return job, head


def write_inputs(job: Job, clip: Clip) -> None:
    """The clip's inputs: frame 0 as PNG, its cameras as a native trajectory (absolute units), frame
    0's depth as .npy (when the clip has it), all atomically (a resumed run checks the image hash)."""
    cfg = job.run_config
    assert cfg.image is not None and cfg.traj is not None  # clip_job sets both (files under the clip's folder)
    Path(cfg.image).parent.mkdir(parents=True, exist_ok=True)
    save_image(cfg.image, to_float(clip.frames[:1])[0].float())
    save_trajectory(Trajectory(clip.cameras, clip.fps, "native", scale="absolute", source=clip.source), cfg.traj)
    if clip.depth0 is not None:
        assert cfg.depth is not None  # clip_job sets it for a clip with a depth
        with atomic_path(cfg.depth) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, clip.depth0.numpy().astype(np.float32), allow_pickle=False)


def check_earlier_runs(jobs: list[tuple[Job, Clip]]) -> None:
    """A clip's earlier run (kept to be skipped or resumed) must have been made with the same
    options and clip size and length: else one line saying to use --overwrite or another --out."""
    for job, head in jobs:
        if not job.run_config.overwrite:
            _check_earlier_run(Path(job.out), asdict(job.run_config), len(head.cameras))


PER_CLIP = ("image", "traj", "depth", "out", "overwrite", "width", "height", "frames", "fov", "keep_latents", "cache_dump")
"""Options a clip's job sets itself: compared only once the clip is known (``cfg`` is the job's)."""


def _check_earlier_run(run_dir: Path, options: dict, frames: int | None) -> None:
    """One line when ``run_dir`` holds a run made with other ``options`` (GenerateConfig fields;
    None values and ``out``/``overwrite`` are not compared) or another number of ``frames`` (None:
    not known yet)."""
    path = run_json(run_dir)
    if not path.is_file():
        return
    rec = RunRecord.read(path)
    diff = [(k, getattr(rec.config, k), v) for k, v in options.items()
            if v is not None and k not in ("out", "overwrite") and getattr(rec.config, k) != v]
    if frames is not None and rec.trajectory.frames != frames:
        diff.append(("frames", rec.trajectory.frames, frames))
    if diff:
        k, was, now = diff[0]
        raise MirageError(f"{run_dir}: an earlier run made with other options ({k}: {was!r} there, {now!r} "
                          "now); use --overwrite, or another --out")


# ------------------------------------------------------------------------------------ scoring
@lru_cache(maxsize=1)
def _lpips():
    """The LPIPS model of this worker process, loaded once (or None)."""
    return load_lpips()[0]


def score_job(job: Job, loaders) -> None:
    """The step of a clip's job (run by the worker, its models loaded): read the clip again, score
    the finished run, write ``score.json`` (atomically, last: its presence marks the clip done)."""
    spec = job.step.args
    entry = score_run(read_clip(spec), Path(job.out), loaders, _lpips())
    entry["options"] = spec.get("options", {})
    write_json(Path(job.step.output), entry)


def score_run(clip: Clip, run_dir: Path, loaders=None, lpips_model=None) -> dict:
    """Score the finished run in ``run_dir`` against ``clip``. Returns its ``eval.json`` entry."""
    t0 = time.perf_counter()
    run = reopen(run_dir, loaders)
    W, H = run.plan.size
    if (W, H) != clip.size:
        raise MirageError(f"{clip.name}: {clip.size[0]}x{clip.size[1]} frames are not a multiple of the backend's grid "
                          f"(the run is {W}x{H}); crop the clip or choose --downscale")
    cams = run.plan.cams  # frame 0 = identity: the trajectory as the run uses it
    f = run.codec.spatial_factor
    inputs = input_memory(run)  # only frame 0's lift
    _, known0, _ = inputs.read(cams)
    generated = np.stack(run.kept)
    _, known, read_lat = _final_read(run, cams)
    memory_mask = _to_pixels(known0, f)
    known_px = _to_pixels(known, f)
    follow = None
    if clip.depths is not None:
        follow = follow_masks(cams, clip.depths, to_float(clip.frames[:1])[0])
    unit = run.plan.reference_depth if clip.depth0 is None else reference_depth(clip.depth0)
    per_frame = score_frames(generated, clip.frames, memory_mask, known_px, read_lat, revisits(cams, unit), follow,
                             lpips_model)
    write_strips(run_dir.parent / "strips", generated, clip.frames, per_frame["revisit_of"])
    loop = score_reopened(run, inputs)
    means = {**clip_means(per_frame), **{k: loop.to_json()[k] for k in LOOP_FIELDS}}
    score_s = time.perf_counter() - t0
    gen_s = run.record.totals.wall_seconds if run.record.totals else 0.0
    return {
        "name": clip.name, "source": clip.source, "synthetic": clip.synthetic, "frames": len(clip.frames),
        "size": [W, H], "run_dir": str(run.plan.out), "depth_source": run.plan.depth_source,
        "seconds": round(gen_s + score_s, 3), "generate_seconds": gen_s, "score_seconds": round(score_s, 3),
        "per_frame": per_frame, "means": means,
        "loop": loop.to_json(),
    }


def _final_read(run, cams):
    """The final memory read along every camera: ``(latents, known (N,h,w), decoded (N,3,H,W))``."""
    lat, known, _ = run.memory.read(cams)
    codec = run.codec
    with torch.no_grad():
        if codec.temporal_factor == 1:
            rgb = codec.decode(lat)
        else:  # a causal video VAE decodes a single latent frame to one frame
            rgb = torch.cat([codec.decode(lat[i:i + 1]) for i in range(len(lat))])
    return lat, known.cpu(), rgb.float().cpu().clamp(0, 1)


def _to_pixels(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Latent-cell mask ``(N, h, w)`` -> pixel mask ``(N, h*f, w*f)``."""
    return mask.cpu().repeat_interleave(factor, 1).repeat_interleave(factor, 2)


def strip_frames(n: int, revisit_of: list[int]) -> list[int]:
    """Which frames get a comparison strip: evenly spaced over 1..n-1, plus the first revisit."""
    picks = sorted({round(1 + i * (n - 2) / max(STRIP_FRAMES - 1, 1)) for i in range(STRIP_FRAMES)} if n > 2 else {n - 1})
    first_rev = next((t for t, r in enumerate(revisit_of) if r >= 0), None)
    return sorted(set(picks) | ({first_rev} if first_rev is not None else set()))


def write_strips(folder: Path, generated: np.ndarray, truth: np.ndarray, revisit_of: list[int]) -> list[Path]:
    """``generated | truth | |difference|`` PNGs for a few frames (difference amplified 4x, clipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in strip_frames(len(generated), revisit_of):
        diff = np.clip(np.abs(generated[t].astype(np.int16) - truth[t].astype(np.int16)) * 4, 0, 255).astype(np.uint8)
        strip = np.concatenate([generated[t], truth[t], diff], axis=1)
        p = folder / f"frame_{t:03d}.png"
        Image.fromarray(strip).save(p, format="PNG")
        paths.append(p)
    return paths
