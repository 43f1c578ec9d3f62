"""Memory a ``mirage train`` run needs per process, computed before any weight loads.

Parameter counts come from the base's ``transformer/config.json`` (no weights read): a copy of the
:class:`~mirage_cli.models.mirage_transformer.MirageTransformer3DModel` with two DiT layers and two VACE
blocks is built on the meta device (no memory), with the run's peft LoRA, and its shared parts, one DiT
block, the first VACE block (with its input projection) and a later one are counted; the full model is
the arithmetic sum. For the paper's config this gives the base DiT 5.000 B, the VACE branch 2.607 B and
a rank-32 LoRA 0.0806 B parameters (as a whole model built on the meta device gives).

Bytes per process, for one stage (the run's peak is its largest stage):

- **frozen**: the base DiT in the precision's storage dtype (fp32, or bf16 with ``--mixed-precision
  bf16``) plus the other stage's tensors in fp32 (the LoRA during ``vace`` when the run has a LoRA stage;
  the VACE branch during ``lora``).
- **trained**: the stage's tensors x 16 bytes: fp32 weight, fp32 gradient, AdamW's ``exp_avg`` and
  ``exp_avg_sq`` (fp32).
- **distribution**: ``ddp`` (several processes) adds DDP's gradient buckets (one more fp32 copy of the
  trained tensors' gradients); ``fsdp`` (FULL_SHARD: parameters, gradients and optimizer state sharded,
  the shipped ``configs/accelerate/fsdp_5b.yaml``) divides frozen + trained by the world size and adds
  two gathered DiT blocks (the one computing and the one prefetched) in the compute dtype, plus the whole
  VACE branch gathered in the compute dtype and, during ``vace``, its whole fp32 gradient before the
  reduce-scatter: the VACE blocks are not FSDP units of their own (``MirageTransformer3DModel`` runs
  them through ``WanTransformerBlock.forward``, bypassing the module hooks FSDP2 gathers on), so they
  belong to the root unit, gathered for the whole forward and backward.
- **activations** (an estimate): elements per token, times 4 bytes (fp32) or 2 (bf16 autocast), times
  the batch. A block keeping its tensors for backward stores about ``27 D + 4/3 F`` per token (``D`` the
  width, ``F`` the FFN width), outside the blocks ``11 D`` per token; with gradient checkpointing a block
  keeps only its input (``D`` per token) and one block is recomputed at a time. Blocks that store: the
  DiT blocks over the ``(R + T + P) h' w'`` tokens of a sample, and during ``vace`` also the VACE blocks
  over the ``(T + P) h' w'`` context tokens (the VACE branch is frozen during ``lora`` and its input
  needs no gradient, so it keeps nothing). The constants were fitted to the bytes autograd saves for
  the real block classes on the CPU (fp32, forward of a model 512 wide; ``scripts/train_memory.py
  --activations`` prints the fit against the count): on 6 DiT layers they overestimate what was counted
  by 5 % (lora) to 27 % (vace), more on 2 layers. bf16 is taken as half of fp32 (not counted: layer norms
  keep fp32 inputs).

Not counted: the CUDA context and allocator slack (about 1 GB), the data in flight, libraries. A run is
refused (:func:`check_fits`) only when the estimate exceeds the device's free memory, that is when it
clearly cannot fit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import MirageError

GB = 1e9
#: Activation elements per token of a block that keeps its tensors for backward: ``27 D + 4/3 F``.
BLOCK_D, BLOCK_F = 27.0, 4.0 / 3.0
#: Activation elements per token outside the blocks (timestep embedding per token, patch embedding, head).
OUTSIDE_D = 11.0
#: Activation elements per token a checkpointed block keeps (its input).
CHECKPOINTED_D = 1.0
DISTRIBUTIONS = ("single", "ddp", "fsdp")


def size(n: float) -> str:
    """``58.9 GB`` from 1 GB up, else ``12.3 MB``."""
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / 1e6:.1f} MB"


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of the trained model (module docstring): ``base`` the frozen Wan2.2 DiT,
    ``vace`` the VACE branch, ``lora`` the LoRA factors (0 without a LoRA), ``block`` a DiT block with
    its LoRA (an FSDP unit); ``dim`` / ``ffn_dim`` the
    width and FFN width; ``layers`` / ``vace_blocks`` the block counts; ``patch`` the patch size."""

    base: int
    vace: int
    lora: int
    block: int
    dim: int
    ffn_dim: int
    layers: int
    vace_blocks: int
    patch: tuple[int, int, int]


@dataclass(frozen=True)
class Tokens:
    """Tokens per sample: ``dit`` over the ``R + T + P`` latent frames, ``context`` over the ``T + P``
    frames the VACE branch sees."""

    dit: int
    context: int

    @classmethod
    def of(cls, counts: ParamCounts, frames: tuple[int, int, int], latent_hw: tuple[int, int]) -> Tokens:
        """``frames = (R, T, P)`` latent frames, ``latent_hw = (h, w)`` the latent grid."""
        R, T, P = frames
        per_frame = (latent_hw[0] // counts.patch[1]) * (latent_hw[1] // counts.patch[2])
        return cls((R + T + P) * per_frame // counts.patch[0], (T + P) * per_frame // counts.patch[0])


@dataclass(frozen=True)
class Estimate:
    """Bytes per process of one stage under one setting (module docstring)."""

    stage: str
    precision: str
    gradient_checkpointing: bool
    batch_size: int
    distribution: str
    world: int
    frozen: float
    trained: float
    overhead: float
    activations: float

    @property
    def total(self) -> float:
        return self.frozen + self.trained + self.overhead + self.activations

    def summary(self) -> str:
        """``stage vace: 58.9 GB = weights 10.3 GB + trained (weights, grads, AdamW) 41.7 GB + activations
        6.9 GB (bf16, ...)`` (DDP's buckets or FSDP's gathered tensors as one more term when there are any)."""
        extra = {"ddp": "DDP buckets", "fsdp": "FSDP gathered"}.get(self.distribution, "")
        return (f"stage {self.stage}: {size(self.total)} = weights {size(self.frozen)} + trained (weights, grads, "
                f"AdamW) {size(self.trained)}" + (f" + {extra} {size(self.overhead)}" if self.overhead else "")
                + f" + activations {size(self.activations)} ({self.setting()})")

    def setting(self) -> str:
        return (f"{'bf16' if self.precision == 'bf16' else 'fp32'}, "
                f"{'gradient checkpointing' if self.gradient_checkpointing else 'no checkpointing'}, batch "
                f"{self.batch_size}, {self.distribution} x {self.world}")

    def record(self) -> dict:
        return {**asdict(self), "total": self.total}


def param_counts(config: dict[str, Any], lora_rank: int | None) -> ParamCounts:
    """Counts of the model ``config`` describes (the ``MirageTransformer3DModel`` arguments), with a
    LoRA of ``lora_rank`` (None: none) on :data:`~mirage_cli.train.model.LORA_TARGET_REGEX`; reads no weights.

    Raises:
        MirageError: the config does not build.
    """
    from accelerate import init_empty_weights

    from ..models.mirage_transformer import MirageTransformer3DModel
    from .model import add_lora, is_lora

    small = {**config, "num_layers": 2, "vace_layers": [0, 1]}
    try:
        with init_empty_weights():
            m = MirageTransformer3DModel(**small)
            if lora_rank is not None:
                add_lora(m, lora_rank, float(lora_rank), 0.0)
    except (TypeError, ValueError) as e:
        raise MirageError(f"cannot build the Mirage transformer from the base config: {e}") from e

    def count(module, lora: bool | None = None) -> int:
        return sum(p.numel() for n, p in module.named_parameters() if lora is None or is_lora(n) == lora)

    dit, dit_lora = count(m.blocks[0], False), count(m.blocks[0], True)
    vace0, vace1 = count(m.vace_blocks[0]), count(m.vace_blocks[1])
    vace_patch = count(m.vace_patch_embedding)
    shared = count(m, False) - 2 * dit - vace0 - vace1 - vace_patch
    layers, n_vace = int(config["num_layers"]), len(config["vace_layers"])
    return ParamCounts(base=shared + layers * dit, vace=vace_patch + vace0 + (n_vace - 1) * vace1,
                       lora=layers * dit_lora, block=dit + dit_lora, dim=int(m.config.num_attention_heads
                       * m.config.attention_head_dim), ffn_dim=int(m.config.ffn_dim), layers=layers,
                       vace_blocks=n_vace, patch=tuple(int(p) for p in m.config.patch_size))  # type: ignore[arg-type]


def estimate(counts: ParamCounts, tokens: Tokens, *, stage: str, stages: tuple[str, ...], precision: str = "no",
             gradient_checkpointing: bool = False, batch_size: int = 1, distribution: str = "single",
             world: int = 1) -> Estimate:
    """Bytes per process of ``stage`` of a run training ``stages`` (module docstring).

    Args:
        counts: :func:`param_counts`. tokens: :class:`Tokens` of one sample.
        precision: ``no`` (fp32) or ``bf16``. distribution: ``single``, ``ddp`` or ``fsdp`` over ``world``
            processes.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution {distribution!r}: expected one of {DISTRIBUTIONS}")
    low = 2 if precision == "bf16" else 4
    lora = counts.lora if "lora" in stages else 0
    frozen: float = counts.base * low + (lora if stage == "vace" else counts.vace) * 4
    trained: float = (counts.vace if stage == "vace" else lora) * 16
    overhead = 0.0
    if distribution == "ddp" and world > 1:
        overhead = (counts.vace if stage == "vace" else lora) * 4
    elif distribution == "fsdp":
        frozen, trained = frozen / world, trained / world
        overhead = (2 * counts.block + counts.vace) * low + (counts.vace * 4 if stage == "vace" else 0)
    D, F = counts.dim, counts.ffn_dim
    block = BLOCK_D * D + BLOCK_F * F
    block_tokens = counts.layers * tokens.dit + (counts.vace_blocks * tokens.context if stage == "vace" else 0)
    if gradient_checkpointing:
        elements = CHECKPOINTED_D * D * block_tokens + block * tokens.dit
    else:
        elements = block * block_tokens
    elements += OUTSIDE_D * D * tokens.dit
    activations = elements * low * batch_size
    return Estimate(stage, precision, gradient_checkpointing, batch_size, distribution, world, float(frozen),
                    float(trained), float(overhead), float(activations))


def available_memory(device) -> tuple[int, str]:
    """Free bytes on ``device`` and how they were read: CUDA ``torch.cuda.mem_get_info`` (free), CPU
    ``psutil.virtual_memory().available``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]), f"free on {device}"
    import psutil

    return int(psutil.virtual_memory().available), "available RAM"


def check_fits(estimates: list[Estimate], available: int, where: str) -> Estimate:
    """The peak stage; raises when it exceeds ``available`` bytes.

    Raises:
        MirageError: one line: the estimate, the free memory and the options that lower it.
    """
    peak = max(estimates, key=lambda e: e.total)
    if peak.total > available:
        hints = [h for ok, h in ((not peak.gradient_checkpointing, "--gradient-checkpointing"),
                                 (peak.precision != "bf16", "--mixed-precision bf16"),
                                 (peak.distribution != "fsdp", "FSDP (configs/accelerate/fsdp_5b.yaml)"),
                                 (peak.batch_size > 1, "a smaller --batch-size")) if ok]
        raise MirageError(f"memory: this run needs about {size(peak.total)} per process ({peak.summary()}), "
                          f"{size(available)} {where}: it cannot fit; try "
                          + (", ".join(hints) or "more GPUs with FSDP") + " (or --no-memory-check to try anyway)")
    return peak


def distribution_of(acc) -> tuple[str, int]:
    """``(single | ddp | fsdp, world size)`` of an ``accelerate.Accelerator``."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.FSDP:
        return "fsdp", int(acc.num_processes)
    return ("ddp" if acc.num_processes > 1 else "single"), int(acc.num_processes)


@dataclass(frozen=True)
class RunBudget:
    """A run's estimate: every stage's, the peak, the free memory and where it was read."""

    stages: tuple[Estimate, ...]
    peak: Estimate
    available: int
    where: str

    def line(self) -> str:
        """The one line printed before a run."""
        return (f"memory estimate: {size(self.peak.total)} per process at the peak, {self.peak.summary()}; "
                f"{size(self.available)} {self.where}")

    def record(self) -> dict:
        return {"peak_bytes": self.peak.total, "available_bytes": self.available, "where": self.where,
                "stages": [e.record() for e in self.stages], "line": self.line()}


def run_budget(cfg, distribution: str, world: int, device, available: int | None = None,
               check: bool = True) -> RunBudget:
    """The estimate of ``cfg`` (a :class:`~mirage_cli.train.config.TrainConfig`) from the base's config and
    the first sample's shapes (``R, T, P`` capped by the options, the latent grid), against ``available``
    bytes (None: :func:`available_memory` of ``device``).

    Raises:
        MirageError: (``check``) the peak exceeds the free memory (:func:`check_fits`); a bad base.
    """
    from ..data.shards import TrainingShards
    from .model import base_dir, mirage_config

    counts = param_counts(mirage_config(base_dir(cfg.model)), cfg.lora_rank if "lora" in cfg.stages else None)
    t = TrainingShards(cfg.data)[0].tensors
    T, _, h, w = t["target"].shape
    frames = (min(cfg.references, len(t["reference"])), T, min(cfg.preceding, len(t["preceding"])))
    tokens = Tokens.of(counts, frames, (h, w))
    est = tuple(estimate(counts, tokens, stage=s, stages=cfg.stages, precision=cfg.mixed_precision,
                         gradient_checkpointing=cfg.gradient_checkpointing, batch_size=cfg.batch_size,
                         distribution=distribution, world=world) for s in cfg.stages)
    where = "given"
    if available is None:
        available, where = available_memory(device)
    peak = check_fits(list(est), available, where) if check else max(est, key=lambda e: e.total)
    return RunBudget(est, peak, int(available), where)


#: The paper's transformer (Wan2.2-TI2V-5B's ``transformer/config.json`` + 15 VACE blocks on layers 0, 2, ..., 28).
PAPER_CONFIG: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
    text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, rope_max_seq_len=1024, vace_layers=list(range(0, 30, 2)), vace_in_channels=96)
#: A full-size sample: 4 references, 9 target and 2 preceding latent frames of 1280 x 704 (latent 44 x 80).
PAPER_FRAMES, PAPER_LATENT = (4, 9, 2), (44, 80)


def memory_table(config: dict[str, Any] = PAPER_CONFIG, lora_rank: int = 32, frames: tuple[int, int, int] = PAPER_FRAMES,
                 latent_hw: tuple[int, int] = PAPER_LATENT, batch_size: int = 1) -> str:
    """A Markdown table of GB per GPU, one row per stage x precision x gradient checkpointing, one column
    per distribution (one GPU; DDP on any number of GPUs >= 2; FSDP FULL_SHARD on 2, 4, 8 GPUs), for a run
    training ``vace,lora``."""
    counts = param_counts(config, lora_rank)
    tokens = Tokens.of(counts, frames, latent_hw)
    columns = [("single", 1, "1 GPU"), ("ddp", 2, "DDP, each GPU"), ("fsdp", 2, "FSDP x 2"), ("fsdp", 4, "FSDP x 4"),
               ("fsdp", 8, "FSDP x 8")]
    rows = ["| stage | precision | gradient checkpointing | " + " | ".join(c[2] for c in columns) + " |",
            "|---|---|---|" + "---:|" * len(columns)]
    for stage in ("vace", "lora"):
        for precision in ("no", "bf16"):
            for ckpt in (False, True):
                cells = [estimate(counts, tokens, stage=stage, stages=("vace", "lora"), precision=precision,
                                  gradient_checkpointing=ckpt, batch_size=batch_size, distribution=d, world=w).total / GB
                         for d, w, _ in columns]
                rows.append(f"| {stage} | {'bf16' if precision == 'bf16' else 'fp32'} | {'yes' if ckpt else 'no'} | "
                            + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------ time
#: Dense bf16 tensor-core peaks in TFLOP/s (NVIDIA's data sheets: H100 / H200 SXM 989, A100 312; the
#: sheets' larger figures assume 2:4 sparsity, which training does not use).
PEAK_TFLOPS: dict[str, float] = {"H100 / H200 SXM": 989.0, "A100": 312.0}
#: Model FLOP utilisations the time table spans: large-transformer training usually reaches 30-50 % of peak.
MFU_RANGE: tuple[float, float, float] = (0.3, 0.4, 0.5)


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one optimizer step of one sample: ``forward`` and ``total`` (forward + backward + the
    recomputation of gradient checkpointing), counted by torch's ``FlopCounterMode``."""

    stage: str
    gradient_checkpointing: bool
    forward: float
    total: float


def step_flops(config: dict[str, Any], lora_rank: int, frames: tuple[int, int, int], latent_hw: tuple[int, int], *,
               stage: str, gradient_checkpointing: bool) -> StepFlops:
    """FLOPs of one training step of the model ``config`` describes on one sample of ``frames = (R, T, P)``
    latent frames of ``latent_hw``, the text 512 tokens: the real ``MirageTransformer3DModel`` with its LoRA,
    the stage's tensors trainable, run forward and backward on the **meta device** (no memory, no compute)
    under ``torch.utils.flop_counter.FlopCounterMode``, which counts every matmul and attention call."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models.mirage_transformer import MirageTransformer3DModel
    from .model import add_lora, is_lora, is_vace

    with torch.device("meta"):
        m = MirageTransformer3DModel(**config)
        add_lora(m, lora_rank, float(lora_rank), 0.0)
    for n, p in m.named_parameters():
        p.requires_grad_(is_vace(n) if stage == "vace" else is_lora(n))
    if gradient_checkpointing:
        m.enable_gradient_checkpointing()
    m.train()
    R, T, P = frames
    c = m.config
    with torch.device("meta"):
        x = torch.empty(1, c.in_channels, R + T + P, *latent_hw)
        context = torch.empty(1, c.vace_in_channels, T + P, *latent_hw)
        text = torch.empty(1, 512, c.text_dim)
        timesteps = torch.zeros(1, R + T + P)
    counter = FlopCounterMode(display=False)
    with counter:
        out = m(x, timesteps, text, context, num_ref_frames=R, return_dict=False)[0]
        forward = counter.get_total_flops()
        out.sum().backward()
    return StepFlops(stage, gradient_checkpointing, float(forward), float(counter.get_total_flops()))


def time_table(config: dict[str, Any] = PAPER_CONFIG, lora_rank: int = 32, frames: tuple[int, int, int] = PAPER_FRAMES,
               latent_hw: tuple[int, int] = PAPER_LATENT) -> str:
    """A Markdown table of the computed minutes per 1,000 optimizer steps (batch 1 per GPU, bf16) per stage x
    gradient checkpointing x GPU, at :data:`MFU_RANGE` of :data:`PEAK_TFLOPS` (an estimate, not a measurement:
    communication, data loading and the optimizer step are not counted)."""
    lo, mid, hi = MFU_RANGE
    rows = ["| stage | gradient checkpointing | TFLOP per step | "
            + " | ".join(f"{gpu}: min / 1k steps at {mid:.0%} ({hi:.0%} - {lo:.0%}) MFU" for gpu in PEAK_TFLOPS) + " |",
            "|---|---|---:|" + "---:|" * len(PEAK_TFLOPS)]
    for stage in ("vace", "lora"):
        for ckpt in (False, True):
            f = step_flops(config, lora_rank, frames, latent_hw, stage=stage, gradient_checkpointing=ckpt)

            def minutes(peak: float, mfu: float, f: StepFlops = f) -> float:
                return 1000 * f.total / (peak * 1e12 * mfu) / 60

            cells = [f"{minutes(p, mid):.0f} ({minutes(p, hi):.0f} - {minutes(p, lo):.0f})" for p in PEAK_TFLOPS.values()]
            rows.append(f"| {stage} | {'yes' if ckpt else 'no'} | {f.total / 1e12:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
