"""The training loop of ``mirage train`` on accelerate.

One process or many (``accelerate launch`` / ``torchrun``: accelerate's ``Accelerator`` picks up the
process group, DDP by default): each rank reads its own samples from the shards (:class:`ShardStream`'s
rank split), rank 0 alone writes. Per stage (``vace`` then ``lora``, as the reference): the stage's
tensors are trainable (fp32), a fresh AdamW (betas 0.9 / 0.999, weight decay on every tensor as the
reference), a constant learning rate after an optional linear warm-up, global gradient-norm clipping,
``grad_accum`` micro-batches per optimizer step (no gradient sync before the last).

Determinism: every random draw of a micro-batch comes from generators seeded by
``(seed, stage, step, micro-batch, rank)``, and the data position is the count of samples consumed; a
run resumed from a checkpoint (``--resume``) therefore computes the same losses and weights as an
uninterrupted one (bit for bit on the CPU, in another process too, at the same torch thread count:
CPU reductions group their terms by thread, so a resume at another count warns).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..data.shards import ShardStream, TrainingSample, TrainingShards, load_extras
from ..errors import MirageError
from ..io import write_json
from ..models.convert import check_base
from . import checkpoint as ck
from . import report
from .budget import distribution_of, run_budget
from .config import TrainConfig, option_of
from .model import base_dir, build_model, set_stage_modes, trainable
from .objective import StoredConditioning, check_sample, flow_loss, make_batch, sample_sigmas, transformer_fn
from .sharding import check_supported, prepare_stage
from .validate import VALIDATION_DIR, ValidationRecord, Validator, check_validation, held_out, training_indices

LOG_FILE = "train.jsonl"
FINAL = "final"
#: What a run writes into ``--out``: an ``out`` holding any of them holds an earlier run.
RUN_OUTPUTS = (ck.CHECKPOINTS, FINAL, LOG_FILE, report.PLOT_FILE, VALIDATION_DIR, report.PROJECT)
RECORD = "train.json"


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step: ``step`` counts over all stages (1-based), ``stage_step`` within the stage."""

    stage: str
    step: int
    stage_step: int
    total_steps: int
    loss: float
    lr: float
    seconds: float
    samples: int
    keys: tuple[tuple[str, ...], ...] = ()  # the sample keys each rank trained on in this step

    def row(self) -> dict:
        return {"kind": "step", "stage": self.stage, "step": self.step, "stage_step": self.stage_step, "loss": self.loss,
                "lr": self.lr, "seconds": round(self.seconds, 6), "samples": self.samples,
                "keys": [list(k) for k in self.keys]}


@dataclass
class TrainResult:
    """What a run did: the exported files' folder, steps done, every logged loss, wall time."""

    out: Path
    final: Path | None
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    resumed_from: Path | None = None
    checkpoint: Path | None = None
    model: torch.nn.Module | None = field(default=None, repr=False)  # the trained model (rank 0's copy)
    memory: dict | None = None  # the pre-run memory estimate (budget.RunBudget.record())


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers (sha256 of their decimal forms)."""
    h = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


class SampleFeed:
    """This rank's samples in order, over as many epochs as needed, from ``consumed`` samples on."""

    def __init__(self, root: str, rank: int, world: int, seed: int, consumed: int = 0,
                 subset: tuple[int, ...] | None = None) -> None:
        self.root, self.rank, self.world, self.seed, self.subset = root, rank, world, seed, subset
        self.consumed = int(consumed)
        n = len(TrainingShards(root)) if subset is None else len(subset)
        self.epoch_len = n - n % world
        if self.epoch_len == 0:
            raise MirageError(f"{root}: {n} samples, fewer than the {world} processes")
        self._it: Iterator[TrainingSample] | None = None

    def take(self, k: int) -> list[TrainingSample]:
        out: list[TrainingSample] = []
        while len(out) < k:
            if self._it is None:
                pos = self.consumed * self.world
                self._it = iter(ShardStream(self.root, self.rank, self.world, start=pos % self.epoch_len,
                                            epoch=pos // self.epoch_len, shuffle_seed=self.seed,
                                            subset=self.subset))
            s = next(self._it, None)
            if s is None:
                self._it = None
                continue
            out.append(s)
            self.consumed += 1
        return out


class _StopFlag:
    """SIGINT sets it (checked between optimizer steps, so a checkpoint is whole); a second one raises."""

    def __init__(self) -> None:
        self.set = False
        self._old: Any = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def check_inputs(cfg: TrainConfig) -> int:
    """Cheap checks before anything loads: the shards (index, samples, ``dataset.safetensors``) and the
    base model's folder and configs. Returns the number of samples.

    Raises:
        MirageError: missing, foreign or empty shards; a base that is not Wan2.2-TI2V-shaped.
    """
    n = len(TrainingShards(cfg.data))
    if n == 0:
        raise MirageError(f"{cfg.data}: no samples (index.json lists none)")
    load_extras(cfg.data)
    base = check_base(base_dir(cfg.model))
    check_sample(TrainingShards(cfg.data)[0], int(base["in_channels"]), int(base.get("text_dim", 4096)), cfg.data)
    for f in (cfg.init_vace_file, cfg.init_lora_file):
        if f is not None and not Path(f).is_file():
            raise MirageError(f"{f}: no such file")
    check_validation(cfg)
    report.check_tracker(cfg.report_to)
    return n


@dataclass
class RunState:
    """Where a run stands (saved in each checkpoint's ``state.json``): stage index, optimizer steps done in
    that stage and over all stages, samples this rank consumed, every step's loss."""

    stage_index: int = 0
    stage_step: int = 0
    step: int = 0
    consumed: int = 0
    losses: list[float] = field(default_factory=list)

    def record(self) -> dict:
        return {"stage_index": self.stage_index, "stage_step": self.stage_step, "step": self.step,
                "consumed": self.consumed, "losses": list(self.losses)}


def train(cfg: TrainConfig, resume: str | Path | None = None,
          on_step: Callable[[StepRecord], None] | None = None, say: Callable[[str], None] | None = None,
          on_validation: Callable[[ValidationRecord], None] | None = None) -> TrainResult:
    """Train ``cfg.stages`` in order and export the weights to ``OUT/final/``.

    Args:
        cfg: the run's options. resume: a checkpoint folder or an output folder (its newest checkpoint).
        on_step: called on rank 0 after every optimizer step. say: one-line messages (rank 0).
        on_validation: called on rank 0 after every validation (``--validate-every``).

    Raises:
        MirageError: bad data or model, a checkpoint from another configuration.
    """
    from accelerate import Accelerator

    t_start = time.perf_counter()
    say = say or (lambda m: None)
    check_inputs(cfg)
    earlier = check_out(cfg, resume)
    extras = load_extras(cfg.data)
    ckpt = ck.load_checkpoint(Path(resume)) if resume is not None else None
    if ckpt is not None:
        diff = cfg.mismatches(ckpt.state.get("config", {}))
        if diff:
            k = diff[0]
            raise MirageError(f"{ckpt.path / ck.STATE}: {option_of(k)} was {ckpt.state['config'][k]!r}, now "
                              f"{cfg.record()[k]!r}: resume with the same options (or a new --out)")
    acc = Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision,
                      **report.accelerator_kwargs(cfg.report_to, cfg.out))
    if cfg.device == "cuda" and acc.device.type != "cuda":
        raise MirageError("--device cuda: no CUDA device available")
    check_supported(acc)
    distribution = distribution_of(acc)
    if distribution[0] == "fsdp" and cfg.validate_every:
        # rank 0 validates alone while the others wait; an FSDP-sharded forward needs every rank's shards
        raise MirageError("--validate-every is not supported under FSDP (validation runs on rank 0 alone, a sharded "
                          "model needs every rank): leave it out and score the saved checkpoints with mirage generate "
                          "/ mirage eval, or validate under DDP")
    budget = run_budget(cfg, *distribution, acc.device, check=cfg.memory_check)
    if acc.is_main_process:
        say(budget.line())
    out = Path(cfg.out)
    base_dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float32
    model = build_model(cfg.model, init_vace=cfg.init_vace, base_dtype=base_dtype, seed=cfg.seed,
                        lora_rank=cfg.lora_rank if "lora" in cfg.stages else None, lora_alpha=cfg.lora_alpha,
                        lora_dropout=cfg.lora_dropout)
    if cfg.init_vace_file or cfg.init_lora_file:
        ck.load_exported(model, Path(cfg.init_vace_file) if cfg.init_vace_file else None,
                         Path(cfg.init_lora_file) if cfg.init_lora_file and "lora" in cfg.stages else None)
    if "vace" not in cfg.stages and not cfg.init_vace_file:
        say("warning: --stage lora without --init-vace FILE trains the LoRA next to an untrained VACE branch "
            "(its hints are 0); pass the vace.safetensors of a VACE run")
    st = RunState()
    if ckpt is not None:
        ck.load_trainable(model, ckpt.weights, ckpt.path / ck.WEIGHTS)
        st = RunState(**{k: ckpt.state[k] for k in RunState().record()})
        say(f"resuming from {ckpt.path} (step {st.step})")
        saved = ckpt.state.get("threads")
        if acc.device.type == "cpu" and isinstance(saved, int) and saved != torch.get_num_threads():
            # CPU reductions (matmul, sums) group their terms by thread: another count changes the last bits
            say(f"warning: the checkpoint was written with {saved} CPU threads and this run uses "
                f"{torch.get_num_threads()}; the losses may differ from an uninterrupted run's in the last bits "
                f"(give --threads {saved} for a bit-identical continuation)")
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.to(acc.device)
    held = held_out(cfg)
    cond = StoredConditioning(extras, model.config.patch_size, cfg.data)
    run = _Run(cfg, acc, model, cond, SampleFeed(cfg.data, acc.process_index, acc.num_processes, cfg.seed, st.consumed,
                                                 training_indices(cfg, held)), st, on_step)
    if acc.is_main_process:
        _remove(earlier)  # --overwrite: the earlier run's outputs, now that this one starts
        out.mkdir(parents=True, exist_ok=True)
        _trim_log(out / LOG_FILE, st.step)
        if held is not None:
            run.validator = Validator(cfg, held, cond, acc.device, acc.autocast, say)
            run.on_validation = on_validation
    report.start_trackers(acc, cfg.report_to, cfg.record())
    result = TrainResult(out, None, st.step, st.losses, resumed_from=ckpt.path if ckpt else None,
                         memory=budget.record())
    with _StopFlag() as stop:
        first_stage = st.stage_index
        for si in range(first_stage, len(cfg.stages)):
            first = st.stage_step if si == first_stage else 0
            if first < cfg.max_steps:
                run.stage(si, first, ckpt if si == first_stage and first > 0 else None, stop, result)
            if result.interrupted:
                say(f"interrupted: checkpoint at step {st.step} ({result.checkpoint}); continue with --resume {out}")
                break
    result.seconds = time.perf_counter() - t_start
    result.model = model
    weights = ck.collect(model, None, [], acc.is_main_process)[0] if not result.interrupted else {}
    if acc.is_main_process and not result.interrupted:
        final = out / FINAL
        ck.export_weights(weights, final, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dtype=cfg.export_dtype,
                          meta={"steps": result.steps, "stages": ",".join(cfg.stages)})
        write_json(final / RECORD, _record(cfg, result, acc))
        result.final = final
    if acc.is_main_process:
        report.write_loss_plot(out)
    report.end_trackers(acc, cfg.report_to)
    acc.wait_for_everyone()
    return result


@dataclass
class _Run:
    """One run's moving parts; :meth:`stage` trains one stage."""

    cfg: TrainConfig
    acc: Any
    model: torch.nn.Module
    cond: StoredConditioning
    feed: SampleFeed
    st: RunState
    on_step: Callable[[StepRecord], None] | None
    validator: Validator | None = None  # rank 0, with --validate-every
    on_validation: Callable[[ValidationRecord], None] | None = None

    def stage(self, si: int, first: int, ckpt: ck.Checkpoint | None, stop: _StopFlag, result: TrainResult) -> None:
        """Stage ``si`` from its step ``first`` (optimizer and scheduler from ``ckpt`` when resuming in it)."""
        cfg, acc, st = self.cfg, self.acc, self.st
        stage = cfg.stages[si]
        named = trainable(self.model, stage)
        names, params = [n for n, _ in named], [p for _, p in named]
        lr = cfg.lr_vace if stage == "vace" else cfg.lr_lora
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        set_stage_modes(self.model, stage)
        wrapped, opt, params = prepare_stage(acc, self.model, opt)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(_warmup, warmup=cfg.warmup))
        if ckpt is not None:
            ck.load_optimizer(opt, names, ckpt.optimizer, ckpt.path)
            sched.load_state_dict(ckpt.state["scheduler"])
        fn = transformer_fn(wrapped)
        total = cfg.max_steps * len(cfg.stages)
        for stage_step in range(first + 1, cfg.max_steps + 1):
            t0 = time.perf_counter()
            loss_sum, keys = 0.0, []
            for micro in range(cfg.grad_accum):
                g = torch.Generator().manual_seed(step_seed(cfg.seed, si, stage_step, micro, acc.process_index))
                torch.manual_seed(step_seed(cfg.seed, si, stage_step, micro, acc.process_index, 1))  # LoRA dropout
                batch = _draw_batch(cfg, self.cond, self.feed.take(cfg.batch_size), g)
                sigmas = sample_sigmas(batch.x0.shape[2], cfg.shift, g)
                noise = torch.randn(batch.x0.shape, generator=g)
                keys.extend(batch.keys)
                batch = _to(batch, acc.device)
                sync = micro == cfg.grad_accum - 1
                with (contextlib.nullcontext() if sync else acc.no_sync(wrapped)), acc.autocast():
                    loss = flow_loss(fn, batch, sigmas.to(acc.device), noise.to(acc.device))
                    acc.backward(loss / cfg.grad_accum)
                loss_sum += float(acc.reduce(loss.detach(), "mean")) / cfg.grad_accum
            if not math.isfinite(loss_sum):
                raise MirageError(f"step {st.step + 1}: the loss is {loss_sum} (lower --lr-{stage}, or check the data)")
            if cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            cur_lr = float(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            st.stage_index, st.stage_step, st.step, st.consumed = si, stage_step, st.step + 1, self.feed.consumed
            st.losses.append(loss_sum)
            rec = StepRecord(stage, st.step, stage_step, total, loss_sum, cur_lr, time.perf_counter() - t0,
                             self.feed.consumed * acc.num_processes, _gather_keys(acc, keys))
            if acc.is_main_process:
                self.log(rec.row())
                if self.on_step is not None:
                    self.on_step(rec)
            if cfg.validate_every and (st.step % cfg.validate_every == 0 or (si == len(cfg.stages) - 1
                                                                           and stage_step == cfg.max_steps)):
                self.validate(stage)
            result.steps = st.step
            if (cfg.save_every and st.step % cfg.save_every == 0) or stage_step == cfg.max_steps or stop.set:
                acc.wait_for_everyone()
                weights, moments = ck.collect(self.model, opt, names, acc.is_main_process)  # every rank calls
                if acc.is_main_process:
                    result.checkpoint = ck.save_checkpoint(
                        Path(cfg.out), st.step, weights, moments,
                        {**st.record(), "scheduler": sched.state_dict(), "stage": stage, "config": cfg.record(),
                         "world_size": acc.num_processes, "threads": torch.get_num_threads()}, cfg.keep_last)
                    report.write_loss_plot(cfg.out)
            if stop.set:
                result.interrupted = True
                return

    def log(self, row: dict) -> None:
        """One row to ``train.jsonl`` and the trackers (rank 0)."""
        with open(Path(self.cfg.out) / LOG_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
        report.log_row(self.acc, self.cfg.report_to, row)

    def validate(self, stage: str) -> None:
        """A validation on rank 0 (:mod:`.validate`) while the other ranks wait."""
        if self.validator is not None:
            rec = self.validator.run(self.model, stage, self.st.step)
            self.log(rec.row())
            if self.on_validation is not None:
                self.on_validation(rec)
        self.acc.wait_for_everyone()


def _gather_keys(acc, keys: list[str]) -> tuple[tuple[str, ...], ...]:
    """Every rank's sample keys of a step, in rank order (one ``gather_object`` when distributed)."""
    if acc.num_processes == 1:
        return (tuple(keys),)
    from accelerate.utils import gather_object

    return tuple(tuple(k) for k in gather_object([keys]))


def _warmup(step: int, warmup: int) -> float:
    """LambdaLR factor: linear warm-up over ``warmup`` steps, then 1 (0 steps: constant, the reference)."""
    return min(1.0, (step + 1) / warmup) if warmup else 1.0


def _draw_batch(cfg: TrainConfig, cond: StoredConditioning, samples: list[TrainingSample], g: torch.Generator):
    """Reference / preceding counts (at most the options, at most what every sample holds; uniform in
    ``0..max`` with ``random_counts``), per-sample text dropout and (only when ``memory_dropout > 0``, so
    runs without it draw exactly as before) memory dropout, then the batch's conditioning."""
    n_ref = min([cfg.references] + [len(s.tensors["reference"]) for s in samples])
    n_prec = min([cfg.preceding] + [len(s.tensors["preceding"]) for s in samples])
    if cfg.random_counts:
        n_ref = int(torch.randint(0, n_ref + 1, (1,), generator=g))
        n_prec = int(torch.randint(0, n_prec + 1, (1,), generator=g))
    drop = (torch.rand(len(samples), generator=g) < cfg.text_dropout).tolist()
    forget = (torch.rand(len(samples), generator=g) < cfg.memory_dropout).tolist() if cfg.memory_dropout else None
    return make_batch(samples, cond, n_ref, n_prec, drop, forget)


def _to(batch, device):
    return replace(batch, **{k: getattr(batch, k).to(device) for k in ("x0", "reference", "preceding", "context",
                                                                        "text")})


def check_out(cfg: TrainConfig, resume: str | Path | None) -> list[Path]:
    """The earlier run's outputs in ``cfg.out`` that ``--overwrite`` removes (empty when there are none or
    the run resumes).

    Raises:
        MirageError: ``out`` holds an earlier run's outputs, the run does not resume and ``overwrite`` is off
            (mixing two runs' checkpoints would make ``--keep-last`` delete the new ones and ``--resume``
            pick the old ones); ``out`` is a file.
    """
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise MirageError(f"--out {out}: is a file, not a folder")
    if resume is not None:
        return []
    found = [out / name for name in RUN_OUTPUTS if (out / name).exists()]
    if found and not cfg.overwrite:
        raise MirageError(f"--out {out}: holds an earlier training run ({', '.join(p.name for p in found)}); "
                          f"continue it with --resume {out}, start over with --overwrite (removes them), or "
                          "choose another --out")
    return found


def _remove(paths: list[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _trim_log(path: Path, step: int) -> None:
    """Keep the log's rows up to ``step`` (a resumed run rewrites what followed its checkpoint)."""
    if not path.is_file():
        return
    rows = [r for r in path.read_text().splitlines() if r.strip() and json.loads(r)["step"] <= step]
    path.write_text("".join(r + "\n" for r in rows))


def _record(cfg: TrainConfig, result: TrainResult, acc) -> dict:
    import accelerate
    import diffusers
    import peft

    n = len(result.losses)
    head = result.losses[:max(1, n // 20)]
    tail = result.losses[-max(1, n // 10):]
    return {"config": cfg.record(), "steps": result.steps, "wall_seconds": round(result.seconds, 3),
            "device": str(acc.device), "processes": acc.num_processes,
            "loss_first_5pct": sum(head) / len(head) if n else None,
            "loss_last_10pct": sum(tail) / len(tail) if n else None,
            "resumed_from": str(result.resumed_from) if result.resumed_from else None,
            "memory_estimate": result.memory,
            "validation": report.read_log(Path(cfg.out) / LOG_FILE)[1],
            "versions": {"mirage": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
                         "peft": peft.__version__, "accelerate": accelerate.__version__}}
