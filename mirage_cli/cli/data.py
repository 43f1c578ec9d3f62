"""`mirage data synth`, `mirage data prepare`, `mirage data inspect`: parse, call :mod:`mirage_cli.data`, print."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import typer

from ..errors import MirageError
from ..threads import given_threads
from .checks import check_output_parent
from .console import Progress, console, err_console, plural

app = typer.Typer(help="Training data for the paper's model: `synth` writes synthetic annotated clips, `prepare` turns "
                       "annotated clips into training samples in tar shards, `inspect` shows what shards hold.",
                  no_args_is_help=True)


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """``"1280x704"`` -> ``(1280, 704)``; one line for anything else."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise MirageError(f"{option} {text}: expected WIDTHxHEIGHT in pixels, e.g. 1280x704")
    return int(w), int(h)


@app.command("synth", no_args_is_help=True)
def synth_cmd(
    out: Path = typer.Argument(..., help="Folder to write the clips into (OUT/synth-0000/, ...; existing clips are kept)."),
    clips: int = typer.Option(8, "--clips", "-n", help="Number of clips."),
    frames: int = typer.Option(81, "--frames", help="Frames per clip (81 = the reference's clip at 16 fps)."),
    size: str = typer.Option("256x160", "--size", help="Frame size WIDTHxHEIGHT in pixels."),
    fps: float = typer.Option(16.0, "--fps", help="Frame rate of the videos."),
    seed: int = typer.Option(0, "--seed", help="Texture seed of clip 0 (clip i uses seed + i)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Write synthetic clips with exact depth in the ViPE / reference raw layout, each with a caption."""
    from ..data.synth import synth

    wh = parse_size(size)
    with Progress(console=err_console, disable=quiet) as progress:
        task = progress.add_task("clips", total=clips)
        done = synth(out, clips, frames, wh, fps, seed, on_clip=lambda c: progress.advance(task))
    if not quiet:
        written = sum(c.written for c in done)
        console.print(f"{written} clips written, {len(done) - written} already there, in {out}", highlight=False)


@app.command("prepare", no_args_is_help=True)
def prepare_cmd(
    ctx: typer.Context,
    sources: list[Path] = typer.Argument(..., help="Clip folders, or folders holding them (searched recursively): the ViPE raw layout (clip.mp4, depth.zip, pose.npz, intrinsics.npz, optional mask.zip, a .txt caption) or the processed layout (geometry.npz + clip.mp4 + clip.txt)."),
    out: Path = typer.Option(..., "--out", "-o", help="Shard folder (index.json, dataset.safetensors, shard-NNNNNN.tar, prepare.json); a rerun into it skips finished clips."),
    model: str = typer.Option(..., "--model", "-m", help="A Wan2.2 folder whose VAE and text encoder are used: wan2.2-ti2v-5b, a repo id, a directory, or a `mirage models convert` output."),
    size: str = typer.Option("1280x704", "--size", help="Training size WIDTHxHEIGHT (clips are centre-cropped to it, never scaled)."),
    frames: int = typer.Option(81, "--frames", help="Frames of a clip window."),
    fps: float = typer.Option(16.0, "--fps", help="Frame rate of a clip window (faster sources are subsampled)."),
    samples_per_clip: int = typer.Option(1, "--samples-per-clip", help="Samples per clip (each its own target start)."),
    max_references: int = typer.Option(8, "--max-references", help="Reference frames per sample, at most."),
    seed: int = typer.Option(0, "--seed", help="Seed of the window and sample choices (same seed = same samples)."),
    text: bool = typer.Option(True, "--text/--no-text", help="Store the caption's UMT5 embedding in each sample."),
    captions: Path | None = typer.Option(None, "--captions", help="Captions from a CSV (clip,caption) or JSONL ({\"clip\", \"caption\"}) file; they win over a clip's own .txt."),
    caption_model: str | None = typer.Option(None, "--caption-model", help="A local Qwen-VL-family model (transformers) that captions clips without a caption."),
    shard_samples: int = typer.Option(100, "--shard-samples", help="Samples per shard."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="Text encoder dtype: auto | fp32 | bf16 (auto: bf16 on CUDA). The VAE runs in fp32."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Clips at a time: worker processes that keep their models \\[default: 1 in-process; the cluster's capacity with --ray]."),
    ray: str | None = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run the clips on Ray: alone a local instance, 'auto' the running cluster, or an ADDRESS."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs each Ray actor asks for."),
    retries: int = typer.Option(1, "--retries", help="Retries of a clip whose job failed (a crash, not a bad clip)."),
    json_out: bool = typer.Option(False, "--json", help="Print prepare.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary (warnings still shown)."),
) -> None:
    """Turn annotated clips into training samples (latents, memory reads, references, captions) in tar shards."""
    from ..batch.runner import BatchOptions
    from ..data.prepare import PrepareOptions, prepare
    from ..data.samples import SampleSpec

    if workers is not None and workers < 1:
        raise MirageError(f"--workers: must be >= 1 (got {workers})")
    if retries < 0:
        raise MirageError(f"--retries: must be >= 0 (got {retries})")
    opts = PrepareOptions(model=model, size=parse_size(size), frames=frames, fps=fps, samples_per_clip=samples_per_clip,
                          seed=seed, text=text, captions=str(captions) if captions else None, caption_model=caption_model,
                          device=device, dtype=dtype, shard_samples=shard_samples,
                          spec=replace(SampleSpec(), max_references=max_references))
    batch = BatchOptions(out=str(out), workers=workers, ray=ray, gpus_per_worker=gpus_per_worker, retries=retries,
                         threads=given_threads(ctx))
    show = not (quiet or json_out)
    warnings: list[str] = []
    with Progress(console=err_console, disable=not show) as progress:
        tasks: list = []  # the bar appears with the first job (an option error comes back alone, as one line)

        def update(record):
            if not tasks:
                tasks.append(progress.add_task("clips", total=len(record.jobs)))
            done = sum(j.status in ("done", "skipped", "failed") for j in record.jobs.values())
            progress.update(tasks[0], total=len(record.jobs), completed=done)

        result = prepare([str(s) for s in sources], out, opts, batch, on_update=update, warn=warnings.append)
    for w in warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    if json_out:
        print(json.dumps(result.record, indent=2))
        return
    if not quiet:
        skipped = ", ".join(f"{n} {k}" for k, n in result.skipped.items()) or "none"
        rate = f"{result.clips_per_minute:g} clips/min" if result.clips_per_minute else "no new clip"
        console.print(f"clips {result.ok} ok of {result.clips} (skipped: {skipped}; failed: {result.failed}); "
                      f"{plural(result.samples, 'sample')} in {plural(result.shards, 'shard')}, "
                      f"{result.bytes / 1e6:.1f} MB; {rate} ({result.seconds:.1f} s)",
                      highlight=False, soft_wrap=True)
        console.print(f"record {out / 'prepare.json'}", highlight=False, soft_wrap=True)


@app.command("inspect", no_args_is_help=True)
def inspect_cmd(
    shards: Path = typer.Argument(..., help="A shard folder written by `mirage data prepare`."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON (for scripts)."),
    sample: int | None = typer.Option(None, "--sample", help="Draw this sample (index) into --png \\[default with --png: 0]."),
    png: Path | None = typer.Option(None, "--png", help="PNG file for --sample: target frames, memory read, known mask, references."),
    model: str | None = typer.Option(None, "--model", "-m", help="Wan folder whose VAE decodes for --png \\[default: the dataset's]."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (for --png)."),
) -> None:
    """Counts, shapes and dtypes per key, caption lengths, references and IoUs, skipped clips; one sample as a PNG."""
    from ..data.inspect import draw_sample, inspect_shards

    if sample is not None and png is None:
        raise MirageError("--sample: draws into --png FILE; give one")
    if png is not None and sample is None:
        sample = 0  # the first sample
    check_output_parent(png, "--png")
    doc = inspect_shards(shards)
    if sample is not None and png is not None:  # (given together: checked above)
        draw_sample(shards, sample, png, model, device)
    if json_out:
        print(json.dumps(doc, indent=2))
        return
    console.print(f"{plural(doc['samples'], 'sample')} from {plural(doc['clips'], 'clip')} in "
                  f"{plural(doc['shards'], 'shard')}, "
                  f"{doc['bytes'] / 1e6:.1f} MB ({doc['root']})", highlight=False)
    for k, v in doc["keys"].items():
        shapes = ", ".join(f"{s} x{n}" for s, n in v["shapes"].items())
        console.print(f"  {k:16s} {v['dtype']!s:8s} {shapes}", highlight=False)
    r = doc["references"]
    console.print(f"caption words {doc['caption_words']}; text tokens {doc['text_tokens']}", highlight=False)
    console.print(f"references per sample {r['per_sample']}; IoU {r['iou']}", highlight=False)
    console.print(f"IoU histogram {r['iou_histogram']}", highlight=False)
    console.print(f"target read known fraction {doc['target_read_known_fraction']}", highlight=False)
    for n, why in doc["skipped_clips"].items():
        console.print(f"skipped {n}: {why}", highlight=False, soft_wrap=True)
    if png is not None:
        console.print(f"sample {sample} drawn in {png}", highlight=False)
