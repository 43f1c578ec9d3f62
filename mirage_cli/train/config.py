"""The options of ``mirage train`` as one frozen, validated record."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import MirageError

STAGES = ("vace", "lora")
INIT_VACE = ("scratch", "copy")
PRECISIONS = ("no", "bf16")
EXPORT_DTYPES = ("fp32", "bf16")
TRACKERS = ("none", "tensorboard", "wandb")
#: Fields a resumed run must share with the run that wrote the checkpoint (the others may change:
#: ``max_steps`` to train longer, ``save_every``, ``keep_last``, ``quiet``).
RESUME_FIXED = ("data", "model", "stages", "batch_size", "grad_accum", "lr_vace", "lr_lora", "warmup", "lora_rank",
                "lora_alpha", "lora_dropout", "text_dropout", "memory_dropout", "references", "preceding",
                "random_counts", "seed", "mixed_precision", "init_vace", "weight_decay", "max_grad_norm", "shift",
                "held_out_clips")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on.

    Attributes:
        data: shard folder of ``mirage data prepare``. model: Wan2.2-TI2V base folder (diffusers layout).
        out: output folder (checkpoints, exported files, ``train.jsonl``).
        stages: ``("vace",)``, ``("lora",)`` or ``("vace", "lora")``: run in order, each for ``max_steps``
            optimizer steps with its own AdamW.
        max_steps: optimizer steps per stage. batch_size: samples per micro-batch per process.
        grad_accum: micro-batches per optimizer step. lr_vace / lr_lora: AdamW learning rates.
        warmup: linear warm-up steps (0: constant, the reference). weight_decay: AdamW's (reference 0.01).
        max_grad_norm: global gradient-norm clip (reference 1.0; 0 = off).
        lora_rank / lora_alpha / lora_dropout: peft LoRA (reference 32 / 32 / 0.05; scale alpha / rank).
        text_dropout: probability a sample's caption is replaced by the empty prompt (reference 0.1).
        memory_dropout: probability a sample's memory reads (the VACE context's memory part) are replaced
            by "nothing known", what inference gives for an empty memory (mirage's option; the reference
            drops no memory: default 0).
        references / preceding: at most this many reference / preceding latent frames per sample
            (defaults: what ``--backend mirage`` feeds at inference: 4 and 2).
        random_counts: draw the counts uniformly in ``0..max`` each step (shared by the batch).
        shift: sigma shift of the timestep sampler (reference 5).
        seed: initialisation, data order, noise, sigmas, dropout. mixed_precision: ``no`` or ``bf16``
            (bf16 autocast with fp32 trainable weights; the frozen base is stored in bf16).
        init_vace: ``scratch`` (reference) or ``copy`` (DiT block weights copied).
        init_vace_file / init_lora_file: start from these weights (the exported files' layout).
        export_dtype: dtype of the exported files (fp32 keeps what was trained; bf16 as the reference).
        save_every: checkpoint every N optimizer steps (0: only at the end). keep_last: checkpoints kept.
        gradient_checkpointing: recompute blocks in backward (memory for time).
        device: ``auto`` | ``cpu`` | ``cuda`` (accelerate's ``cpu=True`` for cpu).
        memory_check: refuse a run whose memory estimate exceeds the free memory (:mod:`.budget`).
        validate_every: validate every N optimizer steps and at the end (0: never; :mod:`.validate`).
        validate_data: held-out shard folder (None: the last ``validate_clips`` clips of ``data``, not trained on).
        validate_steps: sampling steps of the validation's generation (None: the backend's default).
        report_to: ``none`` | ``tensorboard`` | ``wandb`` (accelerate's trackers, logging to ``out``).
        overwrite: start over in an ``out`` that holds an earlier run's outputs (removed first); without it
            such an ``out`` is refused unless the run resumes.
    """

    data: str
    model: str
    out: str
    stages: tuple[str, ...] = ("vace", "lora")
    max_steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    lr_vace: float = 1e-5
    lr_lora: float = 1e-5
    warmup: int = 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    lora_rank: int = 32
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    text_dropout: float = 0.1
    memory_dropout: float = 0.0
    references: int = 4
    preceding: int = 2
    random_counts: bool = False
    shift: float = 5.0
    seed: int = 0
    mixed_precision: str = "no"
    init_vace: str = "scratch"
    init_vace_file: str | None = None
    init_lora_file: str | None = None
    export_dtype: str = "fp32"
    save_every: int = 0
    keep_last: int = 2
    gradient_checkpointing: bool = False
    device: str = "auto"
    memory_check: bool = True
    validate_every: int = 0
    validate_data: str | None = None
    validate_clips: int = 1
    validate_steps: int | None = None
    report_to: str = "none"
    overwrite: bool = False

    def __post_init__(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        if not self.stages or bad or len(set(self.stages)) != len(self.stages):
            raise MirageError(f"--stage {','.join(self.stages)}: expected vace, lora or vace,lora")
        checks = [
            (self.max_steps >= 1, f"--max-steps must be >= 1 (got {self.max_steps})"),
            (self.batch_size >= 1, f"--batch-size must be >= 1 (got {self.batch_size})"),
            (self.grad_accum >= 1, f"--grad-accum must be >= 1 (got {self.grad_accum})"),
            (self.lr_vace > 0 and self.lr_lora > 0, "--lr-vace / --lr-lora must be > 0"),
            (self.warmup >= 0, f"--warmup must be >= 0 (got {self.warmup})"),
            (self.lora_rank >= 1, f"--lora-rank must be >= 1 (got {self.lora_rank})"),
            (self.lora_alpha > 0, f"--lora-alpha must be > 0 (got {self.lora_alpha})"),
            (0 <= self.lora_dropout < 1, f"--lora-dropout must be in [0, 1) (got {self.lora_dropout})"),
            (0 <= self.text_dropout <= 1, f"--text-dropout must be in [0, 1] (got {self.text_dropout})"),
            (0 <= self.memory_dropout <= 1, f"--memory-dropout must be in [0, 1] (got {self.memory_dropout})"),
            (self.references >= 0 and self.preceding >= 0, "--references / --preceding must be >= 0"),
            (self.preceding <= 2, f"--preceding must be <= 2 (the shards hold 2 preceding latents; got {self.preceding})"),
            (self.shift > 0, f"--shift must be > 0 (got {self.shift})"),
            (self.mixed_precision in PRECISIONS, f"--mixed-precision {self.mixed_precision}: expected no or bf16"),
            (self.init_vace in INIT_VACE, f"--init-vace {self.init_vace}: expected scratch, copy or a FILE"),
            (self.export_dtype in EXPORT_DTYPES, f"--export-dtype {self.export_dtype}: expected fp32 or bf16"),
            (self.save_every >= 0 and self.keep_last >= 1, "--save-every must be >= 0 and --keep-last >= 1"),
            (self.device in ("auto", "cpu", "cuda"), f"--device {self.device}: expected auto, cpu or cuda"),
            (self.validate_every >= 0, f"--validate-every must be >= 0 (got {self.validate_every})"),
            (self.validate_clips >= 1, f"--validate-clips must be >= 1 (got {self.validate_clips})"),
            (self.validate_steps is None or self.validate_steps >= 1, "--validate-steps must be >= 1"),
            (self.report_to in TRACKERS, f"--report-to {self.report_to}: expected none, tensorboard or wandb"),
        ]
        for ok, message in checks:
            if not ok:
                raise MirageError(message)

    def record(self) -> dict:
        """JSON-ready dict (tuples as lists)."""
        d = asdict(self)
        d["stages"] = list(self.stages)
        d["held_out_clips"] = self.held_out_clips
        return d

    @property
    def held_out_clips(self) -> int:
        """Clips of ``data`` kept out of training for validation (they change the training set)."""
        return self.validate_clips if self.validate_every and self.validate_data is None else 0

    def mismatches(self, saved: dict) -> list[str]:
        """Fields of :data:`RESUME_FIXED` that differ from a checkpoint's recorded config."""
        mine = self.record()
        return [k for k in RESUME_FIXED if k in saved and saved[k] != mine[k]]


#: The option that sets a :data:`RESUME_FIXED` field, where it is not ``--`` + the field with dashes.
RESUME_OPTIONS = {"stages": "--stage", "held_out_clips": "--validate-clips / --validate-data"}
#: :data:`RESUME_FIXED` fields the CLI has no option for (the reference's fixed values).
NO_OPTION = ("lora_dropout", "weight_decay", "max_grad_norm", "shift")


def option_of(field: str) -> str:
    """``lr_vace`` -> ``--lr-vace``: the option a user gives for a configuration field (a field in
    :data:`NO_OPTION` is named as it is)."""
    if field in NO_OPTION:
        return field
    return RESUME_OPTIONS.get(field, "--" + field.replace("_", "-"))


def parse_stages(text: str) -> tuple[str, ...]:
    """``"vace,lora"`` -> ``("vace", "lora")`` (validated by :class:`TrainConfig`)."""
    return tuple(s.strip() for s in text.split(",") if s.strip())
