"""`mirage train`: parse, build a :class:`~mirage_cli.train.config.TrainConfig`, call :func:`~mirage_cli.train.loop.train`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import MirageError
from .console import Progress, err_console


def register(app: typer.Typer) -> None:
    """Add the `train` command to the root app."""
    app.command("train", no_args_is_help=True)(train_cmd)


def train_cmd(
    data: Path = typer.Option(..., "--data", help="Shard folder written by `mirage data prepare`."),
    model: str = typer.Option(..., "--model", "-m", help="The Wan2.2-TI2V-5B base in diffusers layout (DIR, repo id or wan2.2-ti2v-5b; `mirage models tiny DIR --kind mirage` writes a tiny one in DIR/base)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: checkpoints/, train.jsonl, final/ (vace.safetensors, lora.safetensors, train.json)."),
    stage: str = typer.Option("vace,lora", "--stage", help="vace | lora | vace,lora: stages in order, each --max-steps optimizer steps with its own AdamW."),
    max_steps: int = typer.Option(1000, "--max-steps", help="Optimizer steps per stage."),
    batch_size: int = typer.Option(1, "--batch-size", help="Samples per micro-batch per process."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    lr_vace: float = typer.Option(1e-5, "--lr-vace", help="AdamW learning rate of the VACE stage."),
    lr_lora: float = typer.Option(1e-5, "--lr-lora", help="AdamW learning rate of the LoRA stage."),
    warmup: int = typer.Option(0, "--warmup", help="Linear warm-up steps per stage (0: constant, as the reference)."),
    lora_rank: int = typer.Option(32, "--lora-rank", help="LoRA rank."),
    lora_alpha: float = typer.Option(32.0, "--lora-alpha", help="LoRA alpha (scale alpha / rank; stored in the exported file, honoured by `models convert`)."),
    text_dropout: float = typer.Option(0.1, "--text-dropout", help="Probability a sample's caption is replaced by the empty prompt."),
    memory_dropout: float = typer.Option(0.0, "--memory-dropout", help="Probability a sample's memory reads are replaced by 'nothing known' (an empty memory), so the model learns to generate without memory (mirage's option; the reference drops none)."),
    references: int = typer.Option(4, "--references", help="Reference latent frames per sample, at most (--backend mirage uses 4)."),
    preceding: int = typer.Option(2, "--preceding", help="Preceding latent frames per sample, at most (--backend mirage uses 2)."),
    random_counts: bool = typer.Option(False, "--random-counts", help="Draw the reference / preceding counts uniformly in 0..max each step."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation, data order, noise, sigmas and dropout."),
    mixed_precision: str = typer.Option("no", "--mixed-precision", help="no | bf16 (autocast; trainable weights stay fp32, the frozen base is stored in bf16)."),
    init_vace: str = typer.Option("scratch", "--init-vace", help="scratch (fresh blocks, zeroed output projections: the reference) | copy (DiT block weights copied) | FILE (an exported vace.safetensors)."),
    init_lora: Path | None = typer.Option(None, "--init-lora", help="Start the LoRA from an exported lora.safetensors (same rank)."),
    export_dtype: str = typer.Option("fp32", "--export-dtype", help="fp32 | bf16: dtype of the exported files."),
    save_every: int = typer.Option(0, "--save-every", help="Checkpoint every N optimizer steps (0: at the end of each stage only)."),
    keep_last: int = typer.Option(2, "--keep-last", help="Checkpoints kept on disk."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in an --out that holds an earlier run (its checkpoints, final/, logs are removed first). Without it such an --out is refused unless --resume is given."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Recompute the blocks in backward (less memory, more time)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue from a checkpoint folder, or from the newest checkpoint of an output folder."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    no_memory_check: bool = typer.Option(False, "--no-memory-check", help="Start even when the memory estimate (printed before the run) exceeds the device's free memory."),
    validate_every: int = typer.Option(0, "--validate-every", help="Validate every N optimizer steps and at the end (0: never): a loss at fixed noise and sigmas on held-out samples, and a generation of a held-out clip with the current weights, scored by PSNR / SSIM (eval's metrics)."),
    validate_data: Path | None = typer.Option(None, "--validate-data", help="Held-out shard folder (another `mirage data prepare` output). Default: the last --validate-clips clips of --data, not trained on."),
    validate_clips: int = typer.Option(1, "--validate-clips", help="Clips of --data held out for validation (all their samples) when --validate-data is not given."),
    validate_steps: int | None = typer.Option(None, "--validate-steps", help="Sampling steps of the validation generation (default: --backend mirage's)."),
    report_to: str = typer.Option("none", "--report-to", help="none | tensorboard | wandb: log losses, learning rate and validations through accelerate's trackers (the package must be installed)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Train the paper's VACE branch and LoRA on `mirage data` shards (flow matching, as the reference's trainer)."""
    from ..train.config import INIT_VACE, TrainConfig, parse_stages
    from ..train.loop import check_inputs, train

    vace_file = None
    if init_vace not in INIT_VACE:
        if not Path(init_vace).is_file():
            raise MirageError(f"--init-vace {init_vace}: expected scratch, copy or an existing file")
        vace_file, init_vace = init_vace, "scratch"
    if init_lora is not None and not init_lora.is_file():
        raise MirageError(f"--init-lora {init_lora}: no such file")
    cfg = TrainConfig(data=str(data), model=model, out=str(out), stages=parse_stages(stage), max_steps=max_steps,
                      batch_size=batch_size, grad_accum=grad_accum, lr_vace=lr_vace, lr_lora=lr_lora, warmup=warmup,
                      lora_rank=lora_rank, lora_alpha=lora_alpha, text_dropout=text_dropout, memory_dropout=memory_dropout,
                      references=references,
                      preceding=preceding, random_counts=random_counts, seed=seed, mixed_precision=mixed_precision,
                      init_vace=init_vace, init_vace_file=vace_file,
                      init_lora_file=str(init_lora) if init_lora else None, export_dtype=export_dtype,
                      save_every=save_every, keep_last=keep_last, overwrite=overwrite, gradient_checkpointing=gradient_checkpointing,
                      device=device, validate_every=validate_every,
                      validate_data=str(validate_data) if validate_data else None, validate_clips=validate_clips,
                      validate_steps=validate_steps, report_to=report_to, memory_check=not no_memory_check)
    check_inputs(cfg)
    compact = err_console.width < 120  # an 80-column terminal: a short bar and no samples/s, so nothing is cut
    columns = [TextColumn("{task.description}"), BarColumn(bar_width=10 if compact else 40), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), *([] if compact else [TimeElapsedColumn()]), TimeRemainingColumn()]
    progress = Progress(*columns, console=err_console, disable=quiet)
    with progress:
        # shown from the first message (the memory estimate) on: a refused run prints its one line alone
        task = progress.add_task("train", total=cfg.max_steps * len(cfg.stages), info="", visible=False)
        last_val = [""]  # the newest validation, shown after the step's figures

        def say(message: str) -> None:
            progress.console.print(message, highlight=False, soft_wrap=True)
            progress.update(task, visible=True)

        def tick(rec) -> None:
            rate = "" if compact else f" {cfg.batch_size * cfg.grad_accum / max(rec.seconds, 1e-9):.1f} samples/s"
            # the description counts the stage's steps, the bar and M/N all stages' steps
            progress.update(task, completed=rec.step, description=f"{rec.stage} {rec.stage_step}/{cfg.max_steps}",
                            info=f"loss {rec.loss:.4f} lr {rec.lr:.1e} {rec.seconds:.2f} s/step{rate}" + last_val[0])

        def validated(rec) -> None:
            psnr = "n/a" if rec.psnr is None else f"{rec.psnr:.2f} dB"
            last_val[0] = f" | val {psnr}"
            if quiet:
                return
            progress.console.print(f"validation at step {rec.step}: loss {rec.loss:.4f}, PSNR {psnr}, SSIM "
                                   + ("n/a" if rec.ssim is None else f"{rec.ssim:.3f}") + f" ({rec.seconds:.1f} s)",
                                   highlight=False, soft_wrap=True)

        result = train(cfg, resume=resume, on_step=tick, on_validation=validated,
                       say=say)
    if result.interrupted:
        raise typer.Exit(130)  # Ctrl-C: a resumable checkpoint was written (the message said where)
    if quiet or result.final is None:
        return
    lora = result.final / "lora.safetensors"
    err_console.print(f"trained {result.steps} steps in {result.seconds:.1f} s; weights in {result.final}",
                      highlight=False)
    err_console.print("convert them for --backend mirage:\n  mirage models convert --base "
                      f"{model} --vace {result.final / 'vace.safetensors'}"
                      + (f" --lora {lora}" if lora.is_file() else "") + " -o MODEL", highlight=False, soft_wrap=True)
