"""The model being trained: a frozen Wan2.2-TI2V base inside a :class:`MirageTransformer3DModel`, a VACE
branch and a peft LoRA on the DiT blocks.

As the reference's trainer (microsoft/LatentSpatialMemory/scripts/train.py at b2cd738 and its VACE
initialisation module ``vace_init``):

- VACE blocks on every ``num_layers / n``-th DiT layer (15 on 0, 2, ..., 28 for the 30-layer 5B DiT: the
  ``mirage`` layout of :func:`~mirage_cli.models.convert.layout_layers`), dim / heads / FFN from the DiT,
  96 input channels. ``scratch``: fresh blocks (PyTorch's default init, as the model's constructor makes
  them) with the output projection (``proj_out``, the reference's ``after_proj``) zeroed, so every hint is 0
  and the base prediction is unchanged at step 0. ``copy`` (the original VACE recipe): each block starts
  as a copy of its DiT layer, ``proj_out`` zeroed alike.
- LoRA through peft (``LoraConfig``, B = 0 at init) on the DiT blocks' self / cross attention q, k, v, o
  and FFN linears only: a regex target anchored at ``blocks.N.``, so the VACE blocks (``vace_blocks.N.``,
  which have the same module names) get none (a plain suffix list would hit them too).

Unlike the reference, trainable tensors stay fp32 (the reference casts everything to bf16, where most
AdamW updates at lr 1e-5 round away); with ``bf16`` mixed precision only the frozen base is stored in bf16.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from ..errors import MirageError
from ..models.convert import check_base, layout_layers, mirage_config_dict, weight_files
from ..models.registry import resolve_model

if TYPE_CHECKING:
    from ..models.mirage_transformer import MirageTransformer3DModel

#: peft target (full match on the module name): DiT blocks' attention and FFN linears, never the VACE blocks.
LORA_TARGET_REGEX = r"blocks\.\d+\.(?:attn1|attn2)\.(?:to_q|to_k|to_v|to_out\.0)|blocks\.\d+\.ffn\.net\.(?:0\.proj|2)"
ADAPTER = "default"
VACE_PREFIX = "vace_"
#: Input channels of the VACE context: 48 memory-read + 48 white-video latent channels.
VACE_CHANNELS = 96


def is_vace(name: str) -> bool:
    return name.startswith(VACE_PREFIX)


def is_lora(name: str) -> bool:
    return ".lora_" in name


def build_model(base: str, *, init_vace: str = "scratch", lora_rank: int | None = None, lora_alpha: float = 32.0,
                lora_dropout: float = 0.0, base_dtype: torch.dtype = torch.float32,
                seed: int = 0) -> MirageTransformer3DModel:
    """The trainable model from a Wan2.2-TI2V base folder.

    Args:
        base: a diffusers Wan2.2-TI2V folder (``transformer/`` a ``WanTransformer3DModel`` with 48
            channels, ``vae/`` with ``z_dim`` 48), resolved as every model (name, repo id, directory).
        init_vace: ``scratch`` or ``copy`` (module docstring).
        lora_rank: rank of the LoRA to add (None: none). lora_alpha / lora_dropout: peft's.
        base_dtype: dtype of the frozen base weights (VACE and LoRA stay fp32).
        seed: seeds the fresh VACE and LoRA-A initialisation.

    Raises:
        MirageError: not a Wan2.2-TI2V base (one line naming the file), unreadable weights.
    """
    from ..models.mirage_transformer import MirageTransformer3DModel

    root = base_dir(base)
    config = mirage_config(root)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        try:
            model = MirageTransformer3DModel(**config)
        except (TypeError, ValueError) as e:
            raise MirageError(f"{root / 'transformer' / 'config.json'}: cannot build the Mirage transformer ({e})") from e
    missing = {k for k, _ in model.named_parameters()}
    for f in weight_files(root / "transformer"):
        try:
            sd = load_file(str(f))
        except Exception as e:  # safetensors raises its own error types
            raise MirageError(f"{f}: unreadable weights ({e})") from e
        unknown = [k for k in sd if k not in missing]
        if unknown:
            raise MirageError(f"{f}: key '{unknown[0]}' is not a parameter of the Wan2.2-TI2V DiT")
        model.load_state_dict(sd, strict=False)
        missing -= set(sd)
    absent = sorted(k for k in missing if not is_vace(k))
    if absent:
        raise MirageError(f"{root / 'transformer'}: key '{absent[0]}' missing from the base weights")
    model.requires_grad_(False)
    for name, p in model.named_parameters():
        if not is_vace(name):
            p.data = p.data.to(base_dtype)
    init_vace_blocks(model, init_vace)
    if lora_rank is not None:
        add_lora(model, lora_rank, lora_alpha, lora_dropout, seed)
    return model


def mirage_config(root: Path) -> dict:
    """The ``MirageTransformer3DModel`` config trained on the base folder ``root`` (its transformer's
    ``config.json`` plus the VACE layout of the module docstring); reads no weights.

    Raises:
        MirageError: not a Wan2.2-TI2V base (one line naming the file).
    """
    cfg = check_base(root)
    n_layers = int(cfg["num_layers"])
    n_vace = (n_layers + 1) // 2
    while n_layers % n_vace:
        n_vace -= 1
    return mirage_config_dict(cfg, layout_layers("mirage", n_vace, n_layers, root), VACE_CHANNELS)


def init_vace_blocks(model: MirageTransformer3DModel, how: str) -> None:
    """``scratch``: keep the constructor's fresh init; ``copy``: copy each block's DiT layer. Both zero
    every ``proj_out`` (the reference's ``after_proj``), so the hints start at 0."""
    if how not in ("scratch", "copy"):
        raise MirageError(f"--init-vace {how}: expected scratch or copy")
    with torch.no_grad():
        for j, layer in enumerate(model.config.vace_layers):
            vb = model.vace_blocks[j]
            if how == "copy":
                src = model.blocks[layer].state_dict()
                own = vb.state_dict()
                for k, v in src.items():
                    if k in own:
                        own[k].copy_(v.float())
            vb.proj_out.weight.zero_()
            vb.proj_out.bias.zero_()
        for name, p in model.named_parameters():
            if is_vace(name):
                p.data = p.data.float()


def add_lora(model: MirageTransformer3DModel, rank: int, alpha: float, dropout: float, seed: int = 0) -> None:
    """Inject a peft LoRA (adapter ``default``, fp32 factors, B = 0) on :data:`LORA_TARGET_REGEX`."""
    from peft import LoraConfig, inject_adapter_in_model

    # peft annotates lora_alpha as int but computes the scale alpha / r in floats
    cfg = LoraConfig(r=int(rank), lora_alpha=alpha, lora_dropout=float(dropout), bias="none",  # type: ignore[arg-type]
                     target_modules=LORA_TARGET_REGEX, init_lora_weights=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + 1)
        inject_adapter_in_model(cfg, model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        if is_lora(name):
            p.data = p.data.float()
            p.requires_grad_(False)


def trainable(model: torch.nn.Module, stage: str) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` of the stage's trainable tensors (``vace``: every VACE tensor; ``lora``:
    every LoRA factor), in the model's order; sets ``requires_grad`` accordingly on every parameter."""
    pick = is_vace if stage == "vace" else is_lora
    out = []
    for name, p in model.named_parameters():
        p.requires_grad_(pick(name))
        if pick(name):
            out.append((name, p))
    if not out:
        raise MirageError(f"stage {stage}: the model has no {stage} parameters")
    return out


def set_stage_modes(model: torch.nn.Module, stage: str) -> None:
    """train()/eval() as the reference: stage ``vace`` trains the VACE blocks with the DiT in eval
    (LoRA dropout off); stage ``lora`` trains the DiT (LoRA dropout on) with the VACE blocks in eval."""
    model.eval()
    for name, mod in model.named_children():
        if (stage == "vace") == is_vace(name):
            mod.train()


def lora_module_names(model: torch.nn.Module) -> list[str]:
    """Module names carrying a LoRA (``blocks.N.attn1.to_q`` ...)."""
    pat = re.compile(rf"^(.*)\.lora_A\.{ADAPTER}\.weight$")
    return [m.group(1) for n, _ in model.named_parameters() if (m := pat.match(n))]


def base_dir(base: str) -> Path:
    return resolve_model(base, ["transformer", "vae"])
