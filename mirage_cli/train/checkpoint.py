"""Checkpoints of a training run and the exported VACE / LoRA files.

A checkpoint is a folder ``OUT/checkpoints/step-NNNNNNN/`` (N = optimizer steps over all stages)::

    weights.safetensors     every VACE and LoRA tensor of the model (fp32, the model's own names)
    optimizer.safetensors   the current stage's AdamW state, ``<parameter name>::<exp_avg|exp_avg_sq|step>``
    state.json              stage, step, samples consumed, scheduler state, config, recent losses,
                            torch CPU thread count

Tensors via safetensors only (no pickle); the folder is written beside its final name and renamed into
place, so a crash leaves either the previous checkpoint or the new one, never half of one. Nothing else
needs saving for a bit-identical resume: every random draw of a step (noise, sigmas, text and memory dropout, LoRA
dropout, reference / preceding counts) comes from a generator seeded by ``(seed, step, micro-batch, rank)``,
and the data position is the count of samples consumed.

The exported files use the reference's naming (what its trainer saves and its inference loads), which ``mirage models convert``
reads: ``vace.safetensors`` = ``vace_blocks.N.*`` / ``vace_patch_embedding.*`` (original Wan names), and
``lora.safetensors`` = ``pipe.dit.blocks.N.{self_attn|cross_attn}.{q|k|v|o}.lora_{A|B}.weight``,
``pipe.dit.blocks.N.ffn.{0|2}.lora_{A|B}.weight`` plus one scalar ``...alpha`` per module (``convert``
scales ``B @ A`` by ``alpha / rank``); rank and alpha are also in the file's metadata.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import MirageError
from ..io import atomic_path, write_json
from ..models.tiny import LORA_TARGETS, reference_vace_name
from .model import ADAPTER, is_lora, is_vace
from .sharding import full, is_sharded, like

CHECKPOINTS = "checkpoints"
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
VACE_FILE = "vace.safetensors"
LORA_FILE = "lora.safetensors"
FORMAT = "mirage.train-checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its folder, its trainable tensors, optimizer tensors and state."""

    path: Path
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    state: dict


def checkpoint_dir(out: Path, step: int) -> Path:
    return Path(out) / CHECKPOINTS / f"step-{int(step):07d}"


def list_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints under ``OUT/checkpoints``, oldest first."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE).is_file())


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every VACE and LoRA tensor, whole (gathered from FSDP2 shards: call on every rank), detached fp32
    copies on the CPU."""
    return {n: full(p.detach()).float().cpu().clone() for n, p in model.named_parameters()
            if is_vace(n) or is_lora(n)}


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter state keyed ``<name>::<field>`` (``names`` in the optimizer's parameter order),
    whole (gathered from FSDP2 shards: call on every rank)."""
    out = {}
    for i, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{names[i]}::{k}"] = full(torch.as_tensor(v).detach()).cpu().clone()
    return out


def collect(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, names: list[str],
            writer: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(trainable_state, optimizer_tensors)`` for the rank that writes (``writer``); empty dicts elsewhere.
    Call on every rank: with FSDP2 shards every rank takes part in the gathers (and drops the result unless
    it writes); without, the other ranks copy nothing (DDP replicas are identical)."""
    if not (writer or any(is_sharded(p) for p in model.parameters())):
        return {}, {}
    weights = trainable_state(model)
    moments = optimizer_tensors(optimizer, names) if optimizer is not None else {}
    return (weights, moments) if writer else ({}, {})


def load_optimizer(optimizer: torch.optim.Optimizer, names: list[str], tensors: dict[str, torch.Tensor],
                   source: Path) -> None:
    """Restore :func:`optimizer_tensors` into ``optimizer`` (same parameter names, same order; moment
    tensors laid out as their parameter, sharded under FSDP2: call on every rank)."""
    sd = optimizer.state_dict()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        name, _, field = key.partition("::")
        if name not in names:
            raise MirageError(f"{source / OPTIMIZER}: key '{key}' names no trainable parameter of this stage")
        i = names.index(name)
        state.setdefault(i, {})[field] = v if field == "step" else like(v, params[i])
    sd["state"] = state
    optimizer.load_state_dict(sd)


def save_checkpoint(out: Path, step: int, weights: dict[str, torch.Tensor], optimizer: dict[str, torch.Tensor],
                    state: dict, keep_last: int) -> Path:
    """Write checkpoint ``step`` atomically (temporary folder renamed into place); keep the newest ``keep_last``.

    ``weights`` / ``optimizer``: :func:`trainable_state` / :func:`optimizer_tensors` (gathered on every
    rank; one rank writes)."""
    final = checkpoint_dir(out, step)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(weights, str(tmp / WEIGHTS))
    save_file(optimizer, str(tmp / OPTIMIZER))
    write_json(tmp / STATE, {"format": FORMAT, **state})
    if final.exists():  # a rerun of the same step (after a resume): replace it
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    for stale in list_checkpoints(out)[:-keep_last]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def find_checkpoint(path: Path) -> Path:
    """``path`` itself (a checkpoint folder) or the newest checkpoint of an output folder.

    Raises:
        MirageError: no checkpoint there.
    """
    path = Path(path)
    if (path / STATE).is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise MirageError(f"{path}: no checkpoint to resume from (expected {CHECKPOINTS}/step-N/{STATE})")
    return found[-1]


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint folder (see :func:`find_checkpoint`).

    Raises:
        MirageError: missing or foreign files.
    """
    path = find_checkpoint(path)
    try:
        state = json.loads((path / STATE).read_text())
        weights = load_file(str(path / WEIGHTS))
        opt = load_file(str(path / OPTIMIZER))
    except (OSError, ValueError) as e:
        raise MirageError(f"{path}: unreadable checkpoint ({e})") from e
    except Exception as e:  # safetensors' own errors
        raise MirageError(f"{path}: unreadable checkpoint ({e})") from e
    if state.get("format") != FORMAT:
        raise MirageError(f"{path / STATE}: format {state.get('format')!r}, expected {FORMAT!r}")
    return Checkpoint(path, weights, opt, state)


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Copy saved VACE / LoRA tensors into the model (names and shapes must match)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in weights.items():
            p = params.get(k)
            if p is None or p.shape != v.shape:
                raise MirageError(f"{source}: tensor '{k}' {tuple(v.shape)} does not fit this model "
                                  f"({'no such parameter' if p is None else tuple(p.shape)}); another configuration?")
            p.copy_(v.to(p.dtype))


# ------------------------------------------------------------------------------------------ export
def _lora_key(module: str) -> str:
    """``blocks.N.attn1.to_q`` -> ``pipe.dit.blocks.N.self_attn.q`` (the reference's naming)."""
    original = {v: k for k, v in LORA_TARGETS.items()}
    _, i, dname = module.split(".", 2)
    return f"pipe.dit.blocks.{i}.{original[dname]}"


def export_weights(weights: dict[str, torch.Tensor], out: Path, *, rank: int, alpha: float, dtype: str = "fp32",
                   meta: dict | None = None) -> tuple[Path, Path | None]:
    """Write ``out/vace.safetensors`` and (if ``weights`` hold a LoRA) ``out/lora.safetensors`` atomically,
    in the reference's naming (module docstring). ``weights``: :func:`trainable_state`. Returns their paths."""
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {k: str(v) for k, v in (meta or {}).items()}
    vace = {reference_vace_name(n): p.detach().to("cpu", dt).contiguous() for n, p in weights.items() if is_vace(n)}
    with atomic_path(out / VACE_FILE) as tmp:
        save_file(vace, str(tmp), metadata={"format": "mirage.vace", **info})
    lora: dict[str, torch.Tensor] = {}
    for n, p in weights.items():
        if is_lora(n):
            module, _, rest = n.partition(".lora_")
            ab = rest.split(".")[0]  # A | B
            if rest != f"{ab}.{ADAPTER}.weight":
                continue
            key = _lora_key(module)
            lora[f"{key}.lora_{ab}.weight"] = p.detach().to("cpu", dt).contiguous()
            lora[f"{key}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    if not lora:
        return out / VACE_FILE, None
    with atomic_path(out / LORA_FILE) as tmp:
        save_file(lora, str(tmp), metadata={"format": "mirage.lora", "rank": str(rank), "alpha": str(alpha),
                                            "scale": str(alpha / rank), **info})
    return out / VACE_FILE, out / LORA_FILE


def load_exported(model: torch.nn.Module, vace: Path | None, lora: Path | None) -> None:
    """``--init-vace FILE`` / ``--init-lora FILE``: load exported files (this module's layout) into the model.

    Raises:
        MirageError: a key that names no parameter, or a shape mismatch.
    """
    params = dict(model.named_parameters())
    if vace is not None:
        names = {reference_vace_name(n): n for n in params if is_vace(n)}
        weights = {}
        for k, v in _load(load_file, vace).items():
            if k not in names:
                raise MirageError(f"{vace}: key '{k}' is not a VACE tensor of this model")
            weights[names[k]] = v
        load_trainable(model, weights, vace)
    if lora is not None:
        names = {}
        for n in params:
            if is_lora(n):
                module, _, rest = n.partition(".lora_")
                names[f"{_lora_key(module)}.lora_{rest.split('.')[0]}.weight"] = n
        weights = {}
        for k, v in _load(load_file, lora).items():
            if k.endswith(".alpha"):
                continue
            if k not in names:
                raise MirageError(f"{lora}: key '{k}' is not a LoRA factor of this model (rank / targets differ?)")
            weights[names[k]] = v
        load_trainable(model, weights, lora)


def _load(load_file, path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise MirageError(f"{path}: no such file") from None
    except Exception as e:
        raise MirageError(f"{path}: not a safetensors file ({e})") from e
