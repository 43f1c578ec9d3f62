"""Watching ``mirage train``: the loss plot ``OUT/loss.png`` and accelerate's experiment trackers.

- :func:`write_loss_plot`: a PNG (matplotlib, written atomically) of ``OUT/train.jsonl``: left, the training
  loss of every optimizer step (faint) and its smoothed curve (TensorBoard's debiased exponential moving
  average, weight :data:`SMOOTHING`), one colour per stage, with the validation losses as points; right,
  the validation generations' PSNR (dB) as points. Written with every checkpoint and at the end.
- ``--report-to tensorboard | wandb``: accelerate's trackers (``Accelerator(log_with=..., project_dir=OUT)``,
  :func:`start_trackers` = ``init_trackers``, ``acc.log`` per step and per validation, ``end_training``);
  TensorBoard event files go to ``OUT/mirage-train/``. A tracker whose package is not installed is refused
  before anything loads (:func:`check_tracker`, one line, exit 2); nothing is installed for the user.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import MirageError

PLOT_FILE = "loss.png"
PROJECT = "mirage-train"
SMOOTHING = 0.9
LOG_SCALE_RANGE = 20.0  # the loss axis is logarithmic when its values span more than this factor
SIZE_PX = (1200, 480)
DPI = 100
STAGE_COLORS = {"vace": "#1f77b4", "lora": "#2ca02c"}  # matplotlib's tab:blue / tab:green
VALIDATION_COLOR = "#d62728"  # tab:red
#: ``--report-to`` name -> (accelerate's availability check in ``accelerate.utils``, the package to install).
TRACKER_PACKAGES = {"tensorboard": ("is_tensorboard_available", "tensorboard"), "wandb": ("is_wandb_available", "wandb")}


# ------------------------------------------------------------------------------------ trackers
def check_tracker(name: str) -> None:
    """``--report-to NAME`` must name an installed tracker (accelerate's own availability checks).

    Raises:
        MirageError: the tracker's package is not installed (one line saying what to install).
    """
    if name == "none":
        return
    import accelerate.utils

    check, package = TRACKER_PACKAGES[name]
    if not getattr(accelerate.utils, check)():
        raise MirageError(f"--report-to {name}: the {package} package is not installed (pip install {package}), "
                          "or use --report-to none")


def accelerator_kwargs(report_to: str, out: str | os.PathLike) -> dict:
    """``Accelerator`` keyword arguments for ``--report-to`` (none: no tracker)."""
    return {} if report_to == "none" else {"log_with": report_to, "project_dir": str(out)}


def start_trackers(acc, report_to: str, config: dict) -> None:
    """``acc.init_trackers`` with the run's options (values a tracker's hyper-parameter table takes:
    numbers, strings and booleans; anything else as its string)."""
    if report_to == "none":
        return
    plain = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}
    acc.init_trackers(PROJECT, config=plain)


def log_row(acc, report_to: str, row: dict) -> None:
    """One ``train.jsonl`` row to the trackers: a step as ``train/loss`` and ``train/lr``, a validation as
    ``validation/loss``, ``/psnr`` and ``/ssim`` (the ones it has), at its optimizer step."""
    if report_to == "none":
        return
    if row.get("kind") == "validation":
        values = {f"validation/{k}": row[k] for k in ("loss", "psnr", "ssim") if row.get(k) is not None}
    else:
        values = {"train/loss": row["loss"], "train/lr": row["lr"]}
    acc.log(values, step=int(row["step"]))


def end_trackers(acc, report_to: str) -> None:
    if report_to != "none":
        acc.end_training()


# ------------------------------------------------------------------------------------ the log
def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """``(step rows, validation rows)`` of a ``train.jsonl`` (missing: both empty)."""
    if not path.is_file():
        return [], []
    rows = [json.loads(r) for r in path.read_text().splitlines() if r.strip()]
    return [r for r in rows if r.get("kind", "step") == "step"], [r for r in rows if r.get("kind") == "validation"]


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """TensorBoard's scalar smoothing: an exponential moving average, debiased for its zero start
    (tensorflow/tensorboard at 34877f1, ``tensorboard/components/vz_line_chart2/line-chart.ts`` line 699:
    ``last = last * w + (1 - w) v``, divided by ``1 - w ** n``). Non-finite values are carried over, not averaged in."""
    out, last, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last, n = last * weight + (1 - weight) * v, n + 1
        out.append(last / (1 - weight ** n))
    return out


# ------------------------------------------------------------------------------------ the plot
def make_figure(steps: list[dict], validations: list[dict]):
    """The matplotlib ``Figure`` of a run's log (two panels, ``SIZE_PX`` pixels at ``DPI``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(SIZE_PX[0] / DPI, SIZE_PX[1] / DPI), dpi=DPI, layout="constrained")
    loss_ax, psnr_ax = fig.subplots(1, 2)
    stages = list(dict.fromkeys(r["stage"] for r in steps))
    for stage in stages:
        rows = [r for r in steps if r["stage"] == stage]
        x, y = [r["step"] for r in rows], [r["loss"] for r in rows]
        color = STAGE_COLORS.get(stage, "0.3")
        loss_ax.plot(x, y, "-", color=color, lw=0.8, alpha=0.3)
        loss_ax.plot(x, smoothed(y), "-", color=color, lw=2, label=f"{stage} (training, smoothed)")
    for stage in stages[1:]:
        loss_ax.axvline(min(r["step"] for r in steps if r["stage"] == stage) - 0.5, color="0.6", ls="--", lw=1)
    if validations:
        loss_ax.plot([r["step"] for r in validations], [r["loss"] for r in validations], "o", color=VALIDATION_COLOR,
                     label="validation (fixed noise)")
    losses = [r["loss"] for r in steps + validations if math.isfinite(r["loss"])]
    if losses and min(losses) > 0 and max(losses) / min(losses) > LOG_SCALE_RANGE:
        loss_ax.set_yscale("log")
    loss_ax.set_title("loss", fontsize=10)
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("flow-matching MSE")
    scored = [r for r in validations if r.get("psnr") is not None]
    psnr_ax.plot([r["step"] for r in scored], [r["psnr"] for r in scored], "o-", color=VALIDATION_COLOR,
                 label="PSNR (frames 1..)")
    psnr_ax.set_title("validation generation vs the held-out clip", fontsize=10)
    psnr_ax.set_xlabel("optimizer step")
    psnr_ax.set_ylabel("PSNR (dB)")
    if not scored:
        psnr_ax.text(0.5, 0.5, "no validation yet" if not validations else "no generation scored",
                     ha="center", va="center", transform=psnr_ax.transAxes, color="0.5")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, psnr_ax):
        ax.grid(True, color="0.9")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_yscale() == "linear":
            ax.ticklabel_format(axis="y", useOffset=False)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=9)
    last = steps[-1] if steps else None
    fig.suptitle(f"mirage train: {len(steps)} steps" + (f", last loss {last['loss']:.4g}" if last else "")
                 + (f", last validation PSNR {scored[-1]['psnr']:.2f} dB" if scored else ""), fontsize=10)
    return fig


def write_loss_plot(out: str | os.PathLike) -> Path:
    """Draw ``OUT/train.jsonl`` to ``OUT/loss.png`` (atomically). Returns the PNG's path."""
    from ..io import atomic_path
    from .loop import LOG_FILE

    out = Path(out)
    path = out / PLOT_FILE
    try:
        fig = make_figure(*read_log(out / LOG_FILE))
    except (ValueError, KeyError) as e:
        raise MirageError(f"{out / LOG_FILE}: unreadable ({e})") from e
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path
