"""A LoRA kept beside the weights and switched on or off between forwards (Spatia runs round 0 without it).

Spatia (ZhaoJingjing713/Spatia ``Spatia/inference.py`` lines 486-493, ``wan/lora.py``) fuses ``W += B @ A`` into
the bf16 DiT from round 1 on and un-fuses by subtraction. Here the factors stay unfused (``OUT/lora.safetensors``
of ``mirage models convert --layout spatia``, diffusers module names) and each targeted ``nn.Linear`` gets a
forward hook adding ``B (A x)`` while the LoRA is on: switching costs nothing, is exact both ways (no
weight is ever modified, so "off" is bit for bit the base + VACE forward), and needs no peft. The price
is two thin matmuls per targeted linear and forward: ``r (in + out)`` against ``in * out`` multiply-adds
(rank 32 on Wan2.2-5B: 2.0 % of an attention projection's, 1.3 % of an FFN layer's), and holding the
factors (80.6 M parameters, 161 MB in bf16 if Spatia used DiffSynth's example targets). Numerically the
unfused branch differs from Spatia's bf16 fuse by bf16 rounding only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import MirageError


class SwitchableLoRA:
    """LoRA factors attached to a model's linears through forward hooks (see the module docstring).

    Args:
        model: the ``nn.Module`` (a ``MirageTransformer3DModel``).
        factors: ``{"<module>.lora_A.weight": (r, in), "<module>.lora_B.weight": (out, r)}`` (scale folded into B).
        source: where the factors came from (error messages).

    The factors are registered as non-persistent buffers of their linear (``lora_A``/``lora_B``, in the
    weight's dtype), so they follow ``.to(device)`` and CPU offload and stay out of ``state_dict``.
    """

    def __init__(self, model: torch.nn.Module, factors: dict[str, torch.Tensor], source: str = "LoRA") -> None:
        mods = dict(model.named_modules())
        self.enabled = False
        self.modules = 0
        self._handles = []
        names = sorted({k.rsplit(".lora_", 1)[0] for k in factors})
        for name in names:
            a, b = factors.get(f"{name}.lora_A.weight"), factors.get(f"{name}.lora_B.weight")
            mod = mods.get(name)
            if a is None or b is None or not isinstance(mod, torch.nn.Linear):
                raise MirageError(f"{source}: '{name}' is not a linear layer of the transformer with both factors")
            if tuple(a.shape) != (a.shape[0], mod.in_features) or tuple(b.shape) != (mod.out_features, a.shape[0]):
                raise MirageError(f"{source}: factors of '{name}' have shapes {tuple(a.shape)} / {tuple(b.shape)}; "
                                  f"the layer is {mod.out_features} x {mod.in_features}")
            w = mod.weight
            mod.register_buffer("lora_A", a.to(w.device, w.dtype), persistent=False)
            mod.register_buffer("lora_B", b.to(w.device, w.dtype), persistent=False)
            self._handles.append(mod.register_forward_hook(self._hook))
            self.modules += 1
        self.rank = int(next(iter(factors.values())).shape[0]) if factors else 0

    def _hook(self, mod: torch.nn.Linear, args: tuple, out: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return out
        x = args[0]
        a, b = mod.get_buffer("lora_A"), mod.get_buffer("lora_B")  # registered in __init__
        return out + torch.nn.functional.linear(torch.nn.functional.linear(x, a.to(x.dtype)), b.to(x.dtype))

    def set(self, on: bool) -> None:
        """Switch the LoRA on or off (takes effect at the next forward)."""
        self.enabled = bool(on)

    def remove(self) -> None:
        """Detach the hooks (the factors' buffers stay, unused)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()


def load_switchable_lora(model: torch.nn.Module, path: Path) -> SwitchableLoRA:
    """Attach the factors of ``path`` (a converted folder's ``lora.safetensors``) to ``model``, switched off."""
    try:
        factors = load_file(str(path))
    except Exception as e:  # header errors from the Rust side
        raise MirageError(f"{path}: not a readable safetensors LoRA ({str(e).strip().splitlines()[0]})") from e
    return SwitchableLoRA(model, factors, str(path))
