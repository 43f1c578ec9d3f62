"""``mirage eval worldscore DATA --out OUT``: every instance one ``mirage batch`` job, then the protocol.

1. Read and check the dataset (:mod:`.dataset`); a bad instance is one line and the rest run
   (nothing readable: one MirageError, exit 2). Select ``--split`` / ``--only`` / ``--limit``.
2. Per instance, write what WorldScore writes before generating (:func:`.layout.write_inputs`:
   ``input_image.png``, ``image_data.json``, ``camera_data.json``) and build its job: the
   ``mirage generate`` options (image = ``input_image.png``, trajectory = the instance's cameras
   at the resolution, fps, per-scene prompts, latents kept for the step) with a step
   (:func:`.layout.write_instance`) that writes ``frames/``, ``videos/output.mp4``, ``time.txt``.
3. Run the jobs through :func:`mirage_cli.batch.runner.run_jobs`: models loaded once per worker
   (in-process, ``--workers N`` processes, ``--ray`` actors), a failed attempt retried, a finished
   instance skipped, an interrupted one resumed. An instance whose run is done but whose files
   fail :func:`.check.instance_problems` (a frame deleted) gets its step run again.
4. Write ``protocol.json`` and ``worldscore_config/<name>.yaml``.

Prompts (``prompts``): ``scene`` (default) gives each WorldScore scene the prompt WorldScore gives
an image-to-video model for it (``generate_prompt_from_list``), from that scene's first frame on
(a chunk takes the prompt of its middle frame: ``pipeline/prompts.py``); ``first`` gives every
chunk the input image's own description (``prompt_list[0]`` / ``prompt`` with the style), as the
reference runner (``microsoft/LatentSpatialMemory/eval/run_worldscore.py``: ``inpainting_prompt_list[0]``).
"""

from __future__ import annotations

import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ... import __version__
from ...batch.manifest import Job, Step
from ...batch.runner import BatchOptions, run_jobs
from ...batch.workers import finished
from ...errors import MirageError
from ...io import atomic_path
from ...pipeline.config import GenerateConfig
from ...pipeline.prompts import check_prompt_spans
from ...pipeline.records import RunRecord, now, versions
from ...pipeline.rundir import run_json
from . import layout
from .cameras import camera_data
from .check import instance_problems, tree_instances
from .dataset import SPLITS, Instance, read_dataset, select
from .layouts import anchor_frames, total_frames
from .protocol import (
    CONFIG_DIR,
    FORMAT,
    VERSION,
    dataset_hash,
    device_name,
    evaluate_commands,
    model_config,
    model_identity,
    modeltype_line,
    read_earlier,
    worldscore_reference,
    write_protocol,
)

PROMPT_MODES = ("scene", "first")
STEP = "mirage_cli.eval.worldscore.layout:write_instance"


@dataclass(frozen=True)
class WorldScoreOptions:
    """The benchmark's options (the generate options are a ``GenerateConfig``).

    Attributes:
        name: the model's WorldScore name. splits: ``("static",)``, ``("dynamic",)`` or both.
        only: styles / scene types / categories / motion types to keep (None: all). limit: at most
            this many instances per split (None: all). frames: frames per scene (WorldScore's
            ``frames``). fps: of the videos. size: ``(W, H)`` resolution. focal: focal length in
            pixels at ``size``. speed: WorldScore's ``camera_speed``. prompts: ``scene`` | ``first``.
        resume: continue an earlier run in OUT. overwrite: regenerate every instance.
    """

    name: str
    splits: tuple[str, ...] = SPLITS
    only: tuple[str, ...] | None = None
    limit: int | None = None
    frames: int = 49
    fps: float = 16.0
    size: tuple[int, int] = (832, 480)
    focal: float = 500.0
    speed: float = 1.0
    prompts: str = "scene"
    resume: bool = False
    overwrite: bool = False

    def settings(self, base: GenerateConfig) -> dict:
        """What makes two runs comparable (protocol.json's ``settings``; a ``--resume`` must match them)."""
        gen = {k: v for k, v in asdict(base).items()
               if k not in ("image", "traj", "out", "overwrite", "prompt", "prompts", "prompt_starts", "frames", "fps",
                            "width", "height", "keep_latents", "cache_dump")}
        return {"model_name": self.name, "resolution": list(self.size), "frames_per_scene": self.frames, "fps": self.fps,
                "focal_length_px": self.focal, "camera_speed": self.speed, "prompts": self.prompts, "generate": gen}


def check_options(opts: WorldScoreOptions) -> None:
    """One line per bad option, before anything is read."""
    if opts.frames < 2:
        raise MirageError(f"--frames: must be >= 2 frames per scene (got {opts.frames})")
    if opts.limit is not None and opts.limit < 1:
        raise MirageError(f"--limit: must be >= 1 (got {opts.limit})")
    if not (opts.focal > 0):
        raise MirageError(f"--focal-length: must be > 0 pixels (got {opts.focal})")
    if not (opts.speed > 0):
        raise MirageError(f"--camera-speed: must be > 0 (got {opts.speed})")
    if opts.prompts not in PROMPT_MODES:
        raise MirageError(f"--prompts: must be {' or '.join(PROMPT_MODES)} (got '{opts.prompts}')")
    if opts.resume and opts.overwrite:
        raise MirageError("--resume and --overwrite: choose one")


def instance_job(inst: Instance, base: GenerateConfig, opts: WorldScoreOptions, out: Path, row: int) -> Job:
    """The batch job of one instance (its inputs must be written: :func:`.layout.write_inputs`)."""
    path = list(inst.camera_path)
    if opts.prompts == "scene":
        prompts, starts = list(inst.prompts), anchor_frames(path, opts.frames)[:len(inst.prompts)]
    else:
        prompts, starts = [inst.first_prompt], [0]
    check_prompt_spans(prompts, starts)
    W, H = opts.size
    cfg = replace(base, image=str(layout.instance_dir(out, inst) / layout.IMAGE), traj=str(layout.trajectory_path(out, inst)),
                  out=str(layout.run_dir(out, inst)), width=W, height=H, fps=opts.fps, frames=None, prompt=prompts[0],
                  prompts=prompts, prompt_starts=starts, keep_latents=True,
                  cache_dump=base.cache_dump if base.cache_dump != "none" else "final",
                  overwrite=opts.overwrite)
    args = {"dir": str(layout.instance_dir(out, inst)), "total_frames": total_frames(path, opts.frames),
            "size": [W, H], "fps": opts.fps}
    return Job(inst.job_id, row, cfg, then=Step(STEP, str(layout.instance_dir(out, inst) / layout.TIME), args))


def eval_worldscore(data: Path, out: Path, base: GenerateConfig, opts: WorldScoreOptions,
                    batch: BatchOptions | None = None, on_update: Callable | None = None,
                    note: Callable[[str], None] = lambda s: None) -> dict:
    """Generate the benchmark into ``out`` (see the module docstring); returns protocol.json's content.

    Args:
        data: the dataset (``$DATA_PATH`` or its ``WorldScore-Dataset``). base: generate options
            shared by every instance. batch: workers / Ray / retries (its ``out`` becomes ``out``).
        on_update: called with the batch record whenever an instance's job changes state.
        note: called with one line per unreadable instance and other remarks.
    Raises:
        MirageError: bad options, not the dataset, no instance readable, or ``out`` holding a run
            made with other settings (or any run, without ``--resume`` / ``--overwrite``).
    """
    check_options(opts)
    out = Path(out).resolve()
    settings = opts.settings(base)
    previous = read_earlier(out)
    earlier = previous["settings"] if previous else None
    if earlier is not None and not opts.overwrite:
        if not opts.resume:
            raise MirageError(f"{out}: holds an earlier WorldScore run (protocol.json); continue it with --resume, "
                              "regenerate it with --overwrite, or choose another --out")
        diff = next(((k, earlier.get(k), v) for k, v in settings.items() if earlier.get(k) != v), None)
        if diff:
            raise MirageError(f"{out}: the earlier run was made with other settings ({diff[0]}: {diff[1]!r} there, "
                              f"{diff[2]!r} now); use --overwrite, or another --out")
    root, found, problems = read_dataset(Path(data), opts.splits)
    for line in problems:
        note(line)
    chosen = select(found, list(opts.only) if opts.only else None, opts.limit)
    jobs: list[tuple[Instance, Job]] = []
    unreadable = list(problems)
    for inst in chosen:
        try:
            cams = camera_data(list(inst.camera_path), opts.frames, opts.focal, opts.speed)
            layout.write_inputs(out, inst, opts.frames, opts.size, opts.fps, cams)
        except MirageError as e:
            line = f"{inst.job_id}: {e}"
            note(line)
            unreadable.append(line)
            continue
        jobs.append((inst, instance_job(inst, base, opts, out, len(jobs) + 1)))
    if not jobs:
        raise MirageError("no WorldScore instance could run:\n" + "\n".join(unreadable or ["the selection is empty"]))
    _outside_selection(out, jobs, opts.overwrite, note)
    for inst, job in jobs:  # a done instance whose files were damaged since: its step writes them again
        if finished(job) and instance_problems(layout.instance_dir(out, inst), inst.movement, opts.size):
            Path(job.step.output).unlink(missing_ok=True)
    started = _now()
    # written first too: an interrupted run is then known to --check and needs --resume to go on
    write_protocol(out, protocol_doc(root, out, base, opts, settings, jobs, None, unreadable, len(found), started, previous))
    opts_b = replace(batch or BatchOptions(out=str(out)), out=str(out))
    record = run_jobs([j for _, j in jobs], opts_b, str(root), on_update or (lambda r: None))
    doc = protocol_doc(root, out, base, opts, settings, jobs, record, unreadable, len(found), started, previous)
    write_protocol(out, doc)
    (out / CONFIG_DIR).mkdir(exist_ok=True)
    with atomic_path(out / CONFIG_DIR / f"{opts.name}.yaml") as tmp:
        tmp.write_text(model_config(opts.name, out, opts.size, opts.frames, opts.fps, opts.focal))
    return doc


def _outside_selection(out: Path, chosen: list[tuple[Instance, Job]], overwrite: bool,
                       note: Callable[[str], None]) -> None:
    """Instance folders already in ``out`` that this selection leaves out.

    WorldScore's evaluator scores every instance folder under ``worldscore_output/``, so a stale one
    would be scored with the new run. With ``--overwrite`` (the run is replaced) they are removed, with
    their mirage runs; otherwise (``--resume``: same settings, still valid) they are kept and named.
    """
    wanted = {inst.rel_dir for inst, _ in chosen}
    stale = [rel for rel in tree_instances(out) if rel not in wanted]
    if not stale:
        return
    if not overwrite:
        note(f"{len(stale)} instance folder(s) of an earlier run are outside this selection and stay in "
             f"{out / layout.OUTPUT_DIR} (WorldScore's evaluator scores them too): " + ", ".join(stale[:3])
             + (" ..." if len(stale) > 3 else ""))
        return
    for rel in stale:
        shutil.rmtree(out / layout.OUTPUT_DIR / rel)
    runs, kept = out / layout.RUNS_DIR, {job.id for _, job in chosen}
    for run in (sorted(runs.iterdir()) if runs.is_dir() else []):
        if run.is_dir() and run.name not in kept:
            shutil.rmtree(run)
    note(f"--overwrite: removed {len(stale)} instance folder(s) of the earlier run outside this selection")


def _now() -> str:
    return now()


def protocol_doc(root: Path, out: Path, base: GenerateConfig, opts: WorldScoreOptions, settings: dict,
                 jobs: list[tuple[Instance, Job]], record, unreadable: list[str], found: int, started: str,
                 previous: dict | None = None) -> dict:
    """protocol.json's content (module docstring of :mod:`.protocol`)."""
    entries, seconds, first_run = [], [], None
    for inst, job in jobs:
        rec = record.jobs[job.id] if record else None
        entry = {"id": job.id, "movement": inst.movement, "dir": inst.rel_dir, "index": inst.index,
                 "camera_path": list(inst.camera_path), "total_frames": job.step.args["total_frames"],
                 "status": rec.status if rec else "pending", "attempts": rec.attempts if rec else 0,
                 "error": rec.error if rec else None, "generate_seconds": None}
        run_file = run_json(Path(job.out))
        if rec and rec.status in ("done", "skipped") and run_file.is_file():
            run = RunRecord.read(run_file)
            first_run = first_run or run
            entry["generate_seconds"] = run.totals.wall_seconds if run.totals else None
            entry["depth_source"] = run.depth.source
            if entry["generate_seconds"] is not None:
                seconds.append(entry["generate_seconds"])
        entries.append(entry)
    counts = {m: sum(e["movement"] == m for e in entries) for m in opts.splits}
    failed = [e for e in entries if e["status"] not in ("done", "skipped", "pending")]
    return {
        "format": FORMAT, "version": VERSION,
        "worldscore": {**worldscore_reference(), "dataset": str(root), "dataset_sha256": dataset_hash(root, opts.splits)},
        "subset": {"splits": list(opts.splits), "only": list(opts.only) if opts.only else None, "limit": opts.limit,
                   "instances": len(entries), "per_split": counts, "readable_in_dataset": found,
                   "unreadable": unreadable},
        "settings": settings,
        "cameras": ("WorldScore's camera generator (worldscore/benchmark/helpers/camera_generator.py) ported: "
                    "camera_path -> keyframes, "
                    f"{opts.frames - 2} slerped cameras between keyframes, camera_speed {opts.speed:g}; the Blender c2w "
                    f"matrices of camera_data.json read as OpenGL c2w (to OpenCV: c2w @ diag(1,-1,-1,1)); focal "
                    f"length {opts.focal:g} px at {opts.size[0]}x{opts.size[1]}, principal point centred; translations in "
                    "WorldScore's units taken as absolute scene units (the depth's), as the reference runner does"),
        "prompt_use": ("per scene: WorldScore's image-to-video prompt of each scene (generate_prompt_from_list), from the "
                       "scene's first frame; a chunk takes the prompt of its middle frame" if opts.prompts == "scene" else
                       "the input image's description with the style (prompt_list[0] / prompt) for every chunk, as the "
                       "reference runner"),
        "backend": base.backend, "model": base.model, "steps": first_run.config.steps if first_run else base.steps,
        "guidance": first_run.config.guidance if first_run else base.guidance, "seed": base.seed,
        "weights": (model_identity(first_run.model, first_run.backend, (previous or {}).get("weights")) if first_run else
                    {"model": base.model, "backend": None, "note": "no instance has finished yet"}),
        "mirage_version": __version__, "versions": versions(),
        "device": device_name(first_run.device if first_run else None),
        "time_per_instance_s": ({"mean": round(statistics.fmean(seconds), 3), "median": round(statistics.median(seconds), 3),
                                 "total": round(sum(seconds), 3), "instances": len(seconds)} if seconds else None),
        "status": "running" if record is None else record.status,
        "batch": ({"workers": record.workers, "counts": {k: v for k, v in record.counts().items() if v}} if record else None),
        "command": " ".join(["mirage"] + sys.argv[1:]), "started_at": started, "finished_at": now(),
        "evaluate": evaluate_commands(opts.name, out, root, opts.splits), "modeltype_line": modeltype_line(opts.name),
        "failed": [{"id": e["id"], "status": e["status"], "error": e["error"]} for e in failed],
        "instances": entries,
    }
