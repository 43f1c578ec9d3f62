"""Names of torch dtypes: the one place that spells them (light: imports only torch).

Two spellings exist because two formats need them: the CLI's ``--dtype`` values and run.json say
``fp32 | bf16 | fp16``; cache files store torch's own name (``float16``), which their loader
checks, so it cannot change without breaking saved caches.
"""

from __future__ import annotations

import torch

#: Chunk latents are rounded to this as soon as they are made and stored in it (``chunks/*.latents.safetensors``),
#: so a run rebuilt from stored latents (``--resume``) is bit-identical to an uninterrupted one.
LATENT_STORE_DTYPE = torch.float16

_SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def dtype_name(dtype: torch.dtype, style: str = "short") -> str:
    """``torch.bfloat16`` -> ``"bf16"`` (``style="short"``) or ``"bfloat16"`` (``style="torch"``).

    A dtype without a short name gets ``str(dtype)`` (``"torch.int32"``) in the short style.
    """
    torch_name = str(dtype).removeprefix("torch.")
    return torch_name if style == "torch" else _SHORT.get(dtype, str(dtype))
