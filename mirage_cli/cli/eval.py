"""`mirage eval recon`, `mirage eval worldscore`, `mirage eval loop`, `mirage eval compare` and `mirage eval check`: parse, call :mod:`mirage_cli.eval`, print with rich."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import typer

from ..backends.specs import DEFAULT_BACKEND
from ..errors import MirageError
from ..threads import given_threads
from . import options
from .console import console, err_console

app = typer.Typer(help="Measured quality: `worldscore` generates the WorldScore benchmark in the layout its evaluator reads; `recon` generates clips along their true cameras and scores every frame against the true one (PSNR/SSIM overall, on what frame 0 saw, on revisits, loop closure); `loop` scores the loop closure of any finished run; `compare` lines up several recon runs; `check` is the quality gate (a run against a committed baseline).", no_args_is_help=True)


@app.command("recon", no_args_is_help=True)
def recon_cmd(
    sources: list[str] = typer.Argument(..., help="Clips: geometry.npz, a frames folder / MP4 (with --traj), a clip folder, synthetic[:SCENE[:TRAJ]] (orbit_left, dolly_in, out_and_back), synthetic[:SCENE]:loops (the closed paths orbit_360, pan_and_back, figure_eight; each also as TRAJ), or a manifest of clips (.jsonl/.csv, one per row)."),
    out: Path = typer.Option(..., "--out", "-o", help="Evaluation directory (DIR/<clip>/run, DIR/eval.json, DIR/eval.csv)."),
    traj: str | None = typer.Option(None, "--traj", "-t", help="Cameras of a single frames-folder / MP4 SOURCE (any trajectory format)."),
    depth: str | None = typer.Option(None, "--depth", help="Frame 0's depth for a single frames SOURCE (.npy/.npz/16-bit .png) or 'prior'/'model'."),
    frames: int | None = typer.Option(None, "--frames", "-n", help="Synthetic clips: frames per clip \\[default: 25]; file clips: keep the first N."),
    height: int = typer.Option(120, "--height", help="Synthetic clips: frame height."),
    width: int = typer.Option(208, "--width", help="Synthetic clips: frame width."),
    backend: str = options.BACKEND,
    model: str | None = options.MODEL,
    depth_model: str = typer.Option("depth-anything-v2-small", "--depth-model", help="Depth model when a clip has no depth."),
    seed: int = typer.Option(0, "--seed", help="Random seed of every clip's run (same seed = same scores on the same device)."),
    steps: int | None = options.STEPS,
    guidance: float | None = options.GUIDANCE,
    shift: float | None = options.SHIFT,
    prompt: str = typer.Option("", "--prompt", "-p", help="Text prompt (the network backends: wan-vace, mirage, spatia)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | fp32 | bf16 | fp16 (auto: bf16 on CUDA, fp32 on CPU; neural backends)."),
    chunk_frames: int | None = options.CHUNK_FRAMES,
    downscale: int | None = typer.Option(None, "--downscale", help="preview: memory grid = frame / N \\[default: auto, 1 at the synthetic 208x120]."),
    write_policy: str = typer.Option("new", "--write-policy", help="Memory write policy: new | replace | average | append (as `mirage generate`)."),
    references: int | None = options.REFERENCES,
    cpu_offload: bool = options.CPU_OFFLOAD,
    overwrite: bool = typer.Option(False, "--overwrite", help="Regenerate every clip (default: a finished clip is skipped, an interrupted one resumed)."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Clips at a time: worker processes that keep their models \\[default: 1 in-process; the cluster's capacity with --ray]."),
    ray: str | None = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run the clips on Ray: alone a local instance, 'auto' the running cluster, or an ADDRESS."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs each Ray actor asks for."),
    retries: int = typer.Option(1, "--retries", help="Retries of a clip whose generation or scoring failed."),
    plot: bool = typer.Option(False, "--plot", help="Also write DIR/eval.png (metric against frame)."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the aggregate as a Markdown table (the docs' tables)."),
    json_out: bool = typer.Option(False, "--json", help="Print eval.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines, table or warnings (failures are still listed)."),
) -> None:
    """Generate each clip from its frame 0 along its cameras and compare every frame with the truth."""
    from ..batch.runner import BatchOptions
    from ..eval.recon import eval_recon
    from ..eval.report import markdown_table, recon_table
    from ..pipeline.config import GenerateConfig, check_config, unused_options

    depth_kind = depth if depth in ("prior", "model") else None  # a depth source, not a file of the clip
    base = GenerateConfig(
        image="-", traj="-", depth=depth_kind, backend=backend, model=model, depth_model=depth_model, seed=seed, steps=steps,
        guidance=guidance, shift=shift, prompt=prompt, device=device, dtype=dtype, chunk_frames=chunk_frames,
        downscale=downscale, cache_dump="chunks", write_policy=write_policy, references=references,
        cpu_offload=cpu_offload, height=height, width=width, overwrite=overwrite,
    )
    check_config(base)  # every option error before any clip is read or rendered
    if not (quiet or json_out):  # once for the command: the clips' runs are quiet (batch workers)
        for opt in unused_options(base):
            err_console.print(f"[yellow]warning:[/] {opt} does nothing with --backend {backend}", highlight=False)
    if workers is not None and workers < 1:
        raise MirageError(f"--workers: must be >= 1 (got {workers})")
    if retries < 0:
        raise MirageError(f"--retries: must be >= 0 (got {retries})")
    batch = BatchOptions(out=str(out), workers=workers, ray=ray, gpus_per_worker=gpus_per_worker, retries=retries)
    show = not (quiet or json_out or markdown)
    doc = eval_recon(sources, base, out, batch, traj=traj, depth=None if depth_kind else depth, frames=frames,
                     size=(width, height), on_update=_progress() if show else None)
    if plot:
        from ..eval.plot import draw_plot

        draw_plot(doc, out / "eval.png")
    if json_out:
        console.print_json(json.dumps(doc))
    elif markdown:
        print(markdown_table(doc))
    elif not quiet:
        console.print(recon_table(doc))
        for note in doc["notes"]:
            console.print(f"[dim]note: {note}[/]")
        console.print(f"eval.json / eval.csv in {out}" + (", plot eval.png" if plot else ""))
    for f in doc["failed"]:
        err_console.print(f"[red]{f['status']}[/] {f['name']}: {f['error']}", highlight=False)
    if doc["failed"]:
        raise typer.Exit(1)


def _progress(noun: str = "clip", earlier: str = "done and scored earlier"):
    """A batch-record callback printing one line per job (a clip, an instance) as it is skipped, done or failed."""
    shown: dict[str, str] = {}

    def update(record) -> None:
        for name, job in record.jobs.items():
            if job.status in ("done", "skipped", "failed") and shown.get(name) != job.status:
                shown[name] = job.status
                what = f"skipped ({earlier})" if job.status == "skipped" else job.status
                err_console.print(f"[dim]{noun} {name}: {what}" + (f" in {job.seconds:.1f} s" if job.seconds and
                                                                    job.status == "done" else "") + "[/]", highlight=False)
    return update


@app.command("worldscore", no_args_is_help=True)
def worldscore_cmd(
    ctx: typer.Context,
    data: Path | None = typer.Argument(None, help="The WorldScore dataset as its WorldScore/download.py unpacks it: $DATA_PATH or its WorldScore-Dataset/ folder."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output: OUT/worldscore_output/ (what WorldScore evaluates), OUT/runs/, OUT/protocol.json, OUT/worldscore_config/NAME.yaml, OUT/batch.json."),
    check: Path | None = typer.Option(None, "--check", help="Only check OUT: every instance of its protocol.json present and every file well-formed (WorldScore's -cd and more); no DATA."),
    split: str = typer.Option("all", "--split", help="static | dynamic | all."),
    limit: int | None = typer.Option(None, "--limit", help="At most N instances per split (in dataset order)."),
    only: list[str] | None = typer.Option(None, "--only", help="Keep instances of these visual styles, scene types, categories or motion types (repeat, or comma-separated)."),
    name: str | None = typer.Option(None, "--name", help="The model's WorldScore name (config file, worldscore/benchmark/utils/modeltype.py) \\[default: mirage_<backend>]."),
    frames: int = typer.Option(49, "--frames", "-n", help="Frames per scene (WorldScore's `frames`; an instance has scenes x (N-1) + 1)."),
    fps: float = typer.Option(16.0, "--fps", help="Frames per second of the videos."),
    width: int = typer.Option(832, "--width", help="Resolution: width (images are centre-cropped and resized as WorldScore does)."),
    height: int = typer.Option(480, "--height", help="Resolution: height."),
    focal_length: float = typer.Option(500.0, "--focal-length", help="Focal length in pixels at the resolution (WorldScore's base_config: 500)."),
    camera_speed: float = typer.Option(1.0, "--camera-speed", help="WorldScore's camera_speed: the step of a move / push / orbit radius."),
    prompts: str = typer.Option("scene", "--prompts", help="scene: each scene its WorldScore image-to-video prompt; first: the input's description for every chunk (the reference runner)."),
    backend: str = typer.Option(DEFAULT_BACKEND, "--backend", "-b", help="preview | wan-vace | mirage | spatia (as `mirage generate`; preview: a dry check on CPU)."),
    model: str | None = options.MODEL,
    depth: str | None = typer.Option(None, "--depth", help="prior | model (default: the depth model when cached, else the prior)."),
    depth_model: str = typer.Option("depth-anything-v2-small", "--depth-model", help="Depth model for the input images."),
    seed: int = typer.Option(0, "--seed", help="Random seed of every instance's run."),
    steps: int | None = options.STEPS,
    guidance: float | None = options.GUIDANCE,
    shift: float | None = options.SHIFT,
    negative_prompt: str = typer.Option("", "--negative-prompt", help="Negative prompt (with guidance > 1)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | fp32 | bf16 | fp16 (neural backends)."),
    chunk_frames: int | None = options.CHUNK_FRAMES,
    downscale: int | None = typer.Option(None, "--downscale", help="preview: memory grid = frame / N \\[default: auto]."),
    references: int | None = options.REFERENCES,
    cpu_offload: bool = options.CPU_OFFLOAD,
    workers: int | None = typer.Option(None, "--workers", "-w", help="Instances at a time: worker processes that keep their models \\[default: 1 in-process; the cluster's capacity with --ray]."),
    ray: str | None = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run the instances on Ray: alone a local instance, 'auto' the running cluster, or an ADDRESS."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs each Ray actor asks for."),
    retries: int = typer.Option(1, "--retries", help="Retries of an instance whose generation failed."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT: finished instances are skipped, interrupted ones resumed (same settings only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Regenerate every instance of OUT (and remove the earlier run's instances outside this selection)."),
    json_out: bool = typer.Option(False, "--json", help="Print protocol.json (or, with --check, the check) on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines (failures and unreadable instances are still listed)."),
) -> None:
    """Generate the WorldScore benchmark in the exact layout its evaluator reads, sharded and resumable, with the protocol recorded; or --check an output."""
    from ..batch.runner import BatchOptions

    if check is not None:
        if data is not None or out is not None:
            raise MirageError("--check OUT: give only the output folder to check (no DATA, no --out)")
        _worldscore_check(check, json_out)
        return
    if data is None or out is None:
        raise MirageError("DATA and --out are required (or --check OUT)")
    from ..eval.worldscore.protocol import check_name
    from ..eval.worldscore.runner import WorldScoreOptions, eval_worldscore
    from ..pipeline.config import GenerateConfig, check_config, unused_options

    splits = {"static": ("static",), "dynamic": ("dynamic",), "all": ("static", "dynamic")}.get(split)
    if splits is None:
        raise MirageError(f"--split: must be static, dynamic or all (got '{split}')")
    if workers is not None and workers < 1:
        raise MirageError(f"--workers: must be >= 1 (got {workers})")
    if retries < 0:
        raise MirageError(f"--retries: must be >= 0 (got {retries})")
    if depth not in (None, "prior", "model"):
        raise MirageError(f"--depth: must be prior or model (got '{depth}'); the instances' images have no depth files")
    base = GenerateConfig(image="-", traj="-", backend=backend, model=model, depth=depth, depth_model=depth_model, seed=seed,
                          steps=steps, guidance=guidance, shift=shift, negative_prompt=negative_prompt, device=device,
                          dtype=dtype, chunk_frames=chunk_frames, downscale=downscale, references=references,
                          cpu_offload=cpu_offload, width=width, height=height, fps=fps)
    check_config(base)
    if not (quiet or json_out):
        for opt in unused_options(base):
            err_console.print(f"[yellow]warning:[/] {opt} does nothing with --backend {backend}", highlight=False)
    names = tuple(n.strip() for item in (only or []) for n in item.split(",") if n.strip()) or None
    opts = WorldScoreOptions(name=check_name(name or f"mirage_{backend}".replace("-", "_")), splits=splits, only=names,
                             limit=limit, frames=frames, fps=fps, size=(width, height), focal=focal_length,
                             speed=camera_speed, prompts=prompts, resume=resume, overwrite=overwrite)
    batch = BatchOptions(out=str(out), workers=workers, ray=ray, gpus_per_worker=gpus_per_worker, retries=retries,
                         threads=given_threads(ctx))
    show = not (quiet or json_out)
    try:
        doc = eval_worldscore(data, out, base, opts, batch, on_update=_progress("instance", "done earlier") if show else None,
                              note=lambda line: err_console.print(f"[yellow]unreadable:[/] {line}", highlight=False,
                                                                  soft_wrap=True))
    except KeyboardInterrupt:
        again = [a for a in sys.argv[1:] if a not in ("--resume", "--overwrite")] + ["--resume"]
        err_console.print(f"[yellow]interrupted[/]; finished instances are kept. Continue with: "
                          f"mirage {' '.join(shlex.quote(a) for a in again)}", highlight=False, soft_wrap=True)
        raise
    if json_out:
        console.print_json(json.dumps(doc))
    elif not quiet:
        t = doc["time_per_instance_s"]
        c = doc["batch"]["counts"]
        console.print(f"{doc['subset']['instances']} instances ({', '.join(f'{n} {s}' for s, n in c.items())}); "
                      + (f"generation {t['mean']:.2f} s per instance (median {t['median']:.2f}, {doc['device']})" if t else
                         "no instance finished"), highlight=False, soft_wrap=True)
        console.print(f"protocol: {Path(out) / 'protocol.json'}; WorldScore config: "
                      f"{Path(out) / 'worldscore_config' / (opts.name + '.yaml')}", highlight=False, soft_wrap=True)
        console.print("evaluate with WorldScore:\n  " + "\n  ".join(doc["evaluate"]), highlight=False, soft_wrap=True)
    for f in doc["failed"]:
        err_console.print(f"[red]{f['status']}[/] {f['id']}: {f['error']}", highlight=False, soft_wrap=True)
    if doc["failed"] or doc["subset"]["unreadable"]:
        raise typer.Exit(1)


def _worldscore_check(out: Path, json_out: bool) -> None:
    """``--check``: print the completeness lines and every problem; exit 1 when incomplete."""
    from ..eval.worldscore.check import check_output, summary_lines

    report = check_output(out)
    if json_out:
        console.print_json(json.dumps({**asdict(report), "ok": report.ok}))
    else:
        for line in report.problems:
            err_console.print(f"[red]incomplete[/] {line}", highlight=False, soft_wrap=True)
        for line in report.unexpected:
            err_console.print(f"[red]unexpected[/] {line}: not an instance of protocol.json (the evaluator would score it)",
                              highlight=False, soft_wrap=True)
        for line in summary_lines(report):
            console.print(line, highlight=False)
        console.print("complete: WorldScore can evaluate it" if report.ok else "incomplete", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command("loop", no_args_is_help=True)
def loop_cmd(
    runs: list[Path] = typer.Argument(..., help="Finished run directories of `mirage generate` (or DIR/<clip>/run of `eval recon`)."),
    json_out: bool = typer.Option(False, "--json", help="Print the scores as JSON (a list, one object per run)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table or notes (errors still exit 2)."),
) -> None:
    """Loop closure of finished runs: the last frame against the first (closed paths), and the final memory against the input-only memory, both from the input camera."""
    from ..eval.loop import score_loop
    from ..eval.report import loop_table

    scores = [score_loop(r) for r in runs]
    if json_out:
        console.print_json(json.dumps([s.to_json() for s in scores]))
    elif not quiet:
        console.print(loop_table(scores))
        for s in scores:
            if s.loop_memory_psnr is None:
                console.print(f"[dim]note: {s.run_dir}: no memory score ({s.input_memory})[/]", highlight=False)
        if any(s.frames_from == "video.mp4" for s in scores):
            console.print("[dim]note: frames from video.mp4 (H.264) for runs without kept latents: its compression "
                          "noise is in loop_psnr[/]", highlight=False)


@app.command("compare", no_args_is_help=True)
def compare_cmd(
    files: list[Path] = typer.Argument(..., help="eval.json files (or their directories); differences are from the first."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """One table of the aggregates of several eval runs, with differences and whether they exceed the spread."""
    from ..eval.report import compare, compare_table, read_eval

    paths = [f / "eval.json" if f.is_dir() else f for f in files]
    result = compare([read_eval(p) for p in paths], [str(f) for f in files])
    if json_out:
        console.print_json(json.dumps(result))
    else:
        console.print(compare_table(result))
        for note in result["notes"]:
            console.print(f"[dim]note: {note}[/]", highlight=False)


@app.command("check", no_args_is_help=True)
def check_cmd(
    eval_json: Path = typer.Argument(..., help="The eval.json of a `mirage eval recon` run (or its directory)."),
    baseline: Path = typer.Option(..., "--baseline", help="The committed baseline (the gate's: quality/baseline.json)."),
    update: bool = typer.Option(False, "--update", help="Write the baseline from EVAL_JSON instead of failing (needs --why)."),
    why: str | None = typer.Option(None, "--why", help="With --update: why the baseline changes (recorded in it)."),
    command: str | None = typer.Option(None, "--command", help="With --update: the command to record \\[default: the eval run's, from its batch.json]."),
    show_all: bool = typer.Option(False, "--all", help="Every clip's rows, not only those that are not ok."),
) -> None:
    """The quality gate: every metric of a run against a committed baseline, per clip and over clips.

    Exit 0: no regression (improvements are reported); 1: a metric worse beyond its tolerance, or missing; 2: bad input."""
    from ..eval.gate import check, check_table, read_baseline, summary, update_baseline
    from ..eval.report import read_eval

    if why is not None and not update:
        raise MirageError("--why goes with --update (the reason recorded in a new baseline)")
    if command is not None and not update:
        raise MirageError("--command goes with --update (the command recorded in a new baseline)")
    path = eval_json / "eval.json" if eval_json.is_dir() else eval_json
    doc = read_eval(path)
    if update:
        done = update_baseline(doc, path, baseline, why or "", command)
        if done["note"]:
            err_console.print(f"[yellow]note:[/] {done['note']}", highlight=False)
        if done["previous"]:
            console.print(check_table(done["previous"], show_all))
            console.print(f"against the old baseline: {summary(done['previous'])}", highlight=False, soft_wrap=True)
        console.print(f"baseline written: {baseline} (why: {done['baseline']['why']}); commit it with that reason",
                      highlight=False, soft_wrap=True)
        return
    result = check(doc, read_baseline(baseline), path)
    console.print(check_table(result, show_all))
    for note in result["notes"]:
        console.print(f"[dim]note: {note}[/]", highlight=False, soft_wrap=True)
    console.print(summary(result), highlight=False, soft_wrap=True)
    for line in result["regressions"]:
        err_console.print(line, highlight=False, soft_wrap=True)
    if result["regressions"]:
        raise typer.Exit(1)
