"""`mirage batch`: parse the options, hand them to :func:`mirage_cli.batch.runner.run_batch`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.live import Live

from ..errors import MirageError
from ..threads import given_threads
from .checks import check_output_parent
from .console import console, err_console

if TYPE_CHECKING:
    from ..batch.records import BatchRecord


def register(app: typer.Typer) -> None:
    """Add the `batch` command to the root app."""
    app.command("batch", no_args_is_help=True)(batch_cmd)


def ray_flag_args(args: list[str]) -> list[str]:
    """Let ``--ray`` take an optional value (Typer options cannot): a bare ``--ray`` (last, or
    followed by another option) becomes ``--ray local``, a local Ray instance."""
    if "batch" not in args and "eval" not in args and "data" not in args:  # `eval recon`, `data prepare` too
        return args
    out = []
    for i, a in enumerate(args):
        out.append(a)
        if a == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("local")
    return out


def counts_text(counts: dict) -> str:
    """``{"done": 3, "failed": 1, "pending": 0}`` -> ``"3 done, 1 failed"`` (zero counts left out)."""
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no jobs"


def print_job_warnings(record) -> None:
    """Each job's warnings (those `mirage generate` prints; batch.json keeps them too), once per
    job, prefixed by the job id; on stderr, like generate's, even with --quiet."""
    for k, j in (record.jobs.items() if record else ()):
        for w in j.warnings:
            err_console.print(f"[yellow]warning:[/] {k}: {w}", highlight=False, soft_wrap=True)  # one line each in a log


def batch_cmd(
    ctx: typer.Context,
    manifest: Path = typer.Argument(..., help="JSONL or CSV manifest: one run per row (image, traj, optional id and any generate option)."),
    out: Path = typer.Option(..., "--out", "-o", help="Batch directory: each job's run goes to DIR/<id>/, the record to DIR/batch.json."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Worker count \\[default: 1 in-process locally; the cluster's capacity with --ray]."),
    ray: str | None = typer.Option(None, "--ray", metavar="[ADDRESS]",
                                      help="Run on Ray: alone a local Ray instance, 'auto' the running cluster, or an ADDRESS."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs each Ray actor asks for (0 on CPU clusters)."),
    retries: int = typer.Option(1, "--retries", help="Retries of a failed job (an error or a dead worker)."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop dispatching after the first job that fails for good."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the batch summary (batch.json's content) to this file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live table or summary."),
) -> None:
    """Run many `mirage generate` jobs from MANIFEST, with workers that keep their models loaded."""
    from ..batch.display import batch_table
    from ..batch.runner import BatchOptions, run_batch
    from ..io import write_json

    if workers is not None and workers < 1:
        raise MirageError(f"--workers: must be >= 1 (got {workers})")
    if retries < 0:
        raise MirageError(f"--retries: must be >= 0 (got {retries})")
    if gpus_per_worker < 0:
        raise MirageError(f"--gpus-per-worker: must be >= 0 (got {gpus_per_worker})")
    check_output_parent(json_out, "--json")
    opts = BatchOptions(out=str(out), workers=workers, ray=ray, gpus_per_worker=gpus_per_worker, retries=retries,
                        fail_fast=fail_fast, threads=given_threads(ctx))
    live = None
    if not quiet:
        live = Live(console=err_console, transient=False, auto_refresh=False)
    latest: list[BatchRecord] = []  # the last record seen, for the warnings of a batch cut short by Ctrl-C

    def update(rec):
        latest[:] = [rec]
        if live:
            live.update(batch_table(rec), refresh=True)

    def end_live():
        if live and live.is_started:
            live.stop()
            if not err_console.is_terminal:  # rich leaves a piped table without its last newline
                err_console.line()

    try:
        if live:
            live.start()
        record = run_batch(manifest, opts, on_update=update)
    except KeyboardInterrupt:
        end_live()
        print_job_warnings(latest[0] if latest else None)
        err_console.print(f"[yellow]batch interrupted[/]; finished runs are kept. Continue with: "
                          f"mirage {' '.join(shlex.quote(a) for a in sys.argv[1:])}")
        raise
    finally:
        end_live()
    data = record.to_json()
    if json_out:
        write_json(json_out, data)
    print_job_warnings(record)
    failed = {k: j for k, j in record.jobs.items() if j.status == "failed"}
    if not quiet:
        for k, j in failed.items():
            err_console.print(f"[red]failed[/] {k} (row {j.row}, {j.attempts} attempts): {j.error}", highlight=False)
        console.print(f"batch {record.status}: {counts_text(data['counts'])}; record {Path(out) / 'batch.json'}",
                      highlight=False)
    if failed or record.status != "done":
        raise typer.Exit(1)
