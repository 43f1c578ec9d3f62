"""Validation while ``mirage train`` runs: a loss at fixed noise and sigmas, and a generation scored by eval.

**The held-out set** (:func:`held_out`): ``--validate-data SHARDS`` (a second ``mirage data prepare``
folder; all its samples), or else the last ``--validate-clips K`` clips (default 1) of ``--data`` in the
index's order (clip names sort the shards), **with every sample they have**, taken out of the training
set (:func:`training_indices`: the trainer's feed reads only the other samples, so no frame of a held-out
clip is trained on, even with several samples per clip).

**At each validation** (every ``--validate-every`` optimizer steps and after the last one; rank 0 alone,
the other ranks wait), :meth:`Validator.run`:

- *Loss*: :func:`~.objective.flow_loss` (the trainer's objective) on each held-out sample at
  **fixed** noise and sigmas: a generator seeded by ``(VALIDATION_SEED, sample number)`` only (not by
  ``--seed`` or the step), so every validation of a run (and of runs with other seeds) sees the same
  draws and the curve moves only with the weights. Text is never dropped; the reference / preceding
  counts are the options' (capped by what the sample holds). Mean over the samples.
- *Generation*: the first held-out sample's clip is read again from its source folder (recorded in the
  sample's metadata, windowed with the shards' own ``prepare`` options), its 33 target frames become an
  eval clip (:class:`~mirage_cli.eval.sources.Clip`: frame ``t0`` is the input image, its depth the input
  depth, the cameras relative to it), and eval's own path runs it: :func:`~mirage_cli.eval.recon.clip_job`
  / :func:`~mirage_cli.eval.recon.write_inputs`, :func:`mirage_cli.pipeline.generate.start` +
  :func:`~mirage_cli.pipeline.loop.run_loop` (the chunk engine) with a :class:`MirageBackend` built around
  the **model being trained** (in memory: VACE and LoRA as they are now, no export), the frozen VAE of
  the base folder, and the caption's stored UMT5 embedding (as the trainer's conditioning; no text
  encoder is loaded). :func:`~mirage_cli.eval.recon.score_run` scores the run against the clip's true
  frames (torchmetrics PSNR / SSIM, eval's metrics), frame 0 left out. The run directory, its video and
  eval's comparison strips stay in ``OUT/validation/step-NNNNNNN/``.

Training is unaffected: validation runs under ``torch.no_grad`` with every module in eval mode, inside
:func:`torch.random.fork_rng`, and puts every module's ``training`` flag and every parameter's
``requires_grad`` back, so a run computes the same losses with and without ``--validate-every``
(tested, bit for bit on the CPU, with a separate ``--validate-data``).
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backends.mirage import MirageBackend
from ..data.clips import ClipRef, read_clip
from ..data.samples import relative_cameras
from ..data.shards import TrainingSample, TrainingShards, load_extras, read_index
from ..errors import MirageError
from ..eval.sources import Clip
from ..models.wan_vae import WanVAECodec
from ..pipeline.config import GenerateConfig
from .config import TrainConfig
from .model import base_dir
from .objective import StoredConditioning, flow_loss, make_batch, sample_sigmas, transformer_fn

VALIDATION_DIR = "validation"
#: Seeds the validation loss's noise and sigmas with the sample number (never the run's --seed or step).
VALIDATION_SEED = 20_250_725
KIND = "validation"


@dataclass(frozen=True)
class HeldOut:
    """The validation samples: ``root`` (a shard folder), ``indices`` into it, the ``clips`` they come from,
    ``separate``: True for ``--validate-data`` (nothing is taken out of ``--data``)."""

    root: str
    indices: tuple[int, ...]
    clips: tuple[str, ...]
    separate: bool


@dataclass(frozen=True)
class ValidationRecord:
    """One validation: after optimizer step ``step`` (stage ``stage``). loss: mean fixed-noise loss over
    ``samples`` held-out samples. psnr / ssim: eval's clip means (frames 1..) of the generation (None when
    it could not run: ``note`` says why). run: the generation's run directory. seconds: the whole validation."""

    stage: str
    step: int
    loss: float
    samples: int
    psnr: float | None
    ssim: float | None
    run: str | None
    seconds: float
    note: str | None = None

    def row(self) -> dict:
        return {"kind": KIND, "stage": self.stage, "step": self.step, "loss": self.loss, "samples": self.samples,
                "psnr": self.psnr, "ssim": self.ssim, "run": self.run, "seconds": round(self.seconds, 3),
                "note": self.note}


# ------------------------------------------------------------------------------------ the held-out set
def _sample_clips(index: dict) -> list[tuple[str, str]]:
    """``(key, clip)`` of every sample in the index's order. A key is ``<clip>-NNN`` with the clip's dots
    made underscores (``samples.build_samples``); its clip is the one of its shard's clips it names."""
    out = []
    for s in index["shards"]:
        names = {c.replace(".", "_"): c for c in s["clips"]}
        for key in s["keys"]:
            m = re.fullmatch(r"(.*)-\d+", key)
            clip = names.get(m.group(1)) if m else None
            if clip is None:
                raise MirageError(f"index.json: sample {key!r} names none of its shard's clips {sorted(s['clips'])}")
            out.append((key, clip))
    return out


def held_out(cfg: TrainConfig) -> HeldOut | None:
    """The validation set of a run (None without ``--validate-every``; see the module docstring).

    Raises:
        MirageError: unreadable or empty ``--validate-data``; ``--validate-clips`` leaving no clip to train on.
    """
    if not cfg.validate_every:
        return None
    if cfg.validate_data is not None:
        pairs = _sample_clips(read_index(cfg.validate_data))
        if not pairs:
            raise MirageError(f"--validate-data {cfg.validate_data}: no samples (index.json lists none)")
        load_extras(cfg.validate_data)
        return HeldOut(cfg.validate_data, tuple(range(len(pairs))), tuple(dict.fromkeys(c for _, c in pairs)), True)
    pairs = _sample_clips(read_index(cfg.data))
    clips = list(dict.fromkeys(c for _, c in pairs))
    if cfg.validate_clips >= len(clips):
        raise MirageError(f"--validate-clips {cfg.validate_clips}: {cfg.data} has {len(clips)} clip"
                          f"{'s' if len(clips) != 1 else ''}, none would be left to train on (use fewer, or "
                          "--validate-data SHARDS)")
    chosen = tuple(clips[len(clips) - cfg.validate_clips:])
    return HeldOut(cfg.data, tuple(i for i, (_, c) in enumerate(pairs) if c in chosen), chosen, False)


def training_indices(cfg: TrainConfig, held: HeldOut | None) -> tuple[int, ...] | None:
    """Indices of ``--data`` the trainer may read: all but the held-out clips' samples (None: all)."""
    if held is None or held.separate:
        return None
    out = set(held.indices)
    return tuple(i for i in range(len(TrainingShards(cfg.data))) if i not in out)


def check_validation(cfg: TrainConfig) -> None:
    """The validation options' cheap checks (before any model loads): the held-out set can be made."""
    held_out(cfg)


# ------------------------------------------------------------------------------------ the validator
class _TrainedBackend(MirageBackend):
    """:class:`MirageBackend` around the model being trained, prompts answered from stored UMT5 embeddings
    (``texts``: prompt -> ``(1, 512, D)``), as :class:`~.objective.StoredConditioning` answers the trainer."""

    def __init__(self, transformer, codec, texts: dict[str, torch.Tensor], device: torch.device,
                 dtype: torch.dtype, preceding: int, model: str) -> None:
        # The text encoder is never called (encode_prompt below): an empty module stands in its place.
        super().__init__(transformer, torch.nn.Identity(), None, codec, device=device, dtype=dtype,
                         preceding_frames=preceding, model=model, weights="training")
        self._texts = texts

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        if prompt not in self._texts:
            raise MirageError(f"validation: no stored text embedding for the prompt {prompt!r}")
        return self._texts[prompt].to(self.device, self.dtype)


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module, device: torch.device):
    """Eval mode, no grad, forked RNG; every module's ``training`` and parameter's ``requires_grad`` restored."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.eval()
            yield
    finally:
        for m, t in modes:
            m.training = t
        for p, g in grads:
            p.requires_grad_(g)


class Validator:
    """Runs validations for one training run (rank 0). Loads the held-out samples once; the VAE of the base
    and the clip's frames on the first generation.

    Args:
        cfg: the run's options. held: :func:`held_out`'s set. cond: the trainer's conditioning of ``--data``
            (reused when the held-out samples come from it). device: the accelerator's. autocast: a
            context-manager factory (accelerate's ``autocast``). say: one-line messages.
    """

    def __init__(self, cfg: TrainConfig, held: HeldOut, cond: StoredConditioning, device: torch.device,
                 autocast, say) -> None:
        shards = TrainingShards(held.root)
        self.cfg, self.held, self.device, self.autocast, self.say = cfg, held, device, autocast, say
        self.samples: list[TrainingSample] = [shards[i] for i in held.indices]
        shards.close()
        self.cond = cond if not held.separate else StoredConditioning(load_extras(held.root), cond.patch, held.root)
        self.options = read_index(held.root)["options"]
        self._codec: Any = None
        self._clip: Any = None
        self._clip_note: str | None = None

    # -------------------------------------------------------------------------------- loss
    def draws(self, j: int, n_frames: int, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """Sigmas ``(T,)`` and noise of held-out sample ``j``: the same at every validation."""
        from .loop import step_seed

        g = torch.Generator().manual_seed(step_seed(VALIDATION_SEED, j))
        return sample_sigmas(n_frames, self.cfg.shift, g), torch.randn(shape, generator=g)

    def loss(self, model: torch.nn.Module) -> float:
        """Mean fixed-noise loss of the held-out samples (each a batch of one)."""
        from .loop import _to

        cfg, fn, total = self.cfg, transformer_fn(model), 0.0
        for j, s in enumerate(self.samples):
            n_ref = min(cfg.references, len(s.tensors["reference"]))
            n_prec = min(cfg.preceding, len(s.tensors["preceding"]))
            batch = make_batch([s], self.cond, n_ref, n_prec, [False])
            sigmas, noise = self.draws(j, batch.x0.shape[2], batch.x0.shape)
            batch = _to(batch, self.device)
            with self.autocast():
                total += float(flow_loss(fn, batch, sigmas.to(self.device), noise.to(self.device)))
        return total / len(self.samples)

    # -------------------------------------------------------------------------------- generation
    def clip(self):
        """The eval :class:`~mirage_cli.eval.sources.Clip` of the first held-out sample's target frames
        (None when its source folder cannot be read: :attr:`_clip_note` says why)."""
        if self._clip is None and self._clip_note is None:
            try:
                self._clip = heldout_clip(self.samples[0], self.options)
            except MirageError as e:
                self._clip_note = f"no generation: {e}"
                self.say(f"warning: validation: {self._clip_note} (the loss is still computed)")
        return self._clip

    def codec(self):
        """The base folder's Wan2.2 VAE (fp32, on the training device), loaded once."""
        if self._codec is None:
            self._codec = WanVAECodec.from_pretrained(base_dir(self.cfg.model), subfolder="vae", device=self.device,
                                                      dtype=torch.float32)
        return self._codec

    def generate(self, model: torch.nn.Module, folder: Path) -> dict | None:
        """Generate the held-out clip with ``model`` into ``folder`` and score it (eval's entry), or None."""
        clip = self.clip()
        if clip is None:
            return None
        from ..eval.recon import clip_job, score_run, write_inputs
        from ..pipeline.generate import start
        from ..pipeline.inputs import Loaders
        from ..pipeline.loop import run_loop

        s = self.samples[0]
        texts = {s.caption: self.cond.pad_text(s.tensors["text"]), "": self.cond.empty_text}
        dtype = torch.bfloat16 if self.cfg.mixed_precision == "bf16" else torch.float32
        backend = _TrainedBackend(model, self.codec(), texts, self.device, dtype, self.cfg.preceding, self.cfg.model)
        loaders = Loaders(codec_backend=lambda cfg, show_progress=True: (self.codec(), backend))
        base = GenerateConfig(backend=MirageBackend.name, model=self.cfg.model, prompt=s.caption,
                              steps=self.cfg.validate_steps, references=self.cfg.references,
                              preceding_frames=self.cfg.preceding, device=str(self.device), overwrite=True, seed=0)
        spec = {"name": clip.name, "source": clip.source, "traj": None, "depth": None, "frames": None, "size": None}
        job, _ = clip_job(spec, clip, base, folder, 1)
        write_inputs(job, clip)
        with self.autocast():
            run = start(job.run_config, warn=self.say, quiet=True, loaders=loaders)
            run_loop(run, warn=self.say)
            return score_run(clip, Path(job.out), loaders)

    # -------------------------------------------------------------------------------- one validation
    def run(self, model: torch.nn.Module, stage: str, step: int) -> ValidationRecord:
        """One validation of ``model`` after optimizer step ``step`` (training state untouched)."""
        t0 = time.perf_counter()
        folder = Path(self.cfg.out) / VALIDATION_DIR / f"step-{step:07d}"
        with _evaluating(model, self.device):
            loss = self.loss(model)
            entry = self.generate(model, folder)
        means = entry["means"] if entry else {}
        return ValidationRecord(stage, step, loss, len(self.samples), means.get("psnr_all"), means.get("ssim_all"),
                                entry["run_dir"] if entry else None, time.perf_counter() - t0,
                                None if entry else self._clip_note)


def heldout_clip(sample: TrainingSample, options: dict):
    """The eval clip of ``sample``'s target frames: its source clip read again with the shards' ``prepare``
    options (the same window and crop), frames ``t0 .. t0 + 32``, cameras relative to ``t0``, ``t0``'s depth
    (0 on dynamic pixels, which the trainer's memory never lifts) and every target frame's depth.

    Raises:
        MirageError: the source folder is gone or unreadable, or its window changed.
    """
    m = sample.meta
    folder = Path(m["folder"])
    if not folder.exists():
        raise MirageError(f"{folder}: the held-out clip's source folder is gone")
    ann = read_clip(ClipRef(m["clip"], str(folder), m["layout"]), tuple(options["size"]), int(options["frames"]),
                    float(options["fps"]), int(options["seed"]))
    src = list(ann.window.indices)
    if [src[0], src[-1]] != m["window"]["source_frames"]:
        raise MirageError(f"{folder}: the clip changed since `mirage data prepare` (window {src[0]}..{src[-1]}, "
                          f"the sample's {m['window']['source_frames']})")
    t0, target = int(m["t0"]), list(m["target"])
    cams = relative_cameras(ann, t0)[target]
    depth = torch.from_numpy(ann.depth[target].astype(np.float32))
    depth0 = depth[0].clone()
    if ann.dynamic is not None:
        depth0[torch.from_numpy(ann.dynamic[t0])] = 0
    return Clip(sample.key, np.ascontiguousarray(ann.frames[target]), cams, depth0, depth, float(ann.window.fps),
                str(folder))
