"""Sharded training (FSDP2) for ``mirage train``: whole tensors out of shards, shards out of whole tensors.

Under an accelerate FSDP config with ``fsdp_version: 2`` (``configs/accelerate/fsdp_5b.yaml``),
accelerate applies ``torch.distributed.fsdp.fully_shard`` to every ``WanTransformerBlock`` (DiT block)
and to the root, which holds the VACE blocks (they run through ``WanTransformerBlock.forward`` rather than
their own ``__call__``, so the hooks FSDP2 gathers a unit on would not fire for them as units of their
own): each parameter becomes a ``DTensor`` holding this rank's
shard (dim-0 chunk), and AdamW's ``exp_avg`` / ``exp_avg_sq`` follow the parameter's sharding. FSDP2 keeps
the module tree and parameter names (no ``_fsdp_wrapped_module`` prefixes), so the checkpoint names do
not change; only the tensors must be gathered before a save and re-sharded after a load:

- :func:`full`: the whole tensor of a ``DTensor`` (``DTensor.full_tensor()``: an all-gather, so **every
  rank must call it**, in the same order), any other tensor unchanged. The checkpoint code gathers only
  the trained tensors (VACE or LoRA), never the 5 B frozen base: accelerate's ``get_state_dict`` would
  gather the whole model on every save (the reference's trainer builds its full 7.6 B state dict at every save).
- :func:`like`: a whole tensor laid out as a reference parameter (``distribute_tensor`` with its mesh
  and placements; every rank holds the whole tensor read from the checkpoint and keeps its chunk).

Source: torch.distributed.tensor (``DTensor.full_tensor``, ``distribute_tensor``) and
torch/distributed/fsdp/_fully_shard; accelerate/utils/fsdp_utils.py ``fsdp2_prepare_model`` (what the
config applies) and accelerate/accelerator.py ``_prepare_fsdp2`` (the model and its optimizer are
prepared together: the optimizer's parameters are swapped for the sharded ones).
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from ..errors import MirageError


def is_sharded(t: torch.Tensor) -> bool:
    """Whether ``t`` is a ``DTensor`` (an FSDP2 shard)."""
    return isinstance(t, DTensor)


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: ``t.full_tensor()`` for a ``DTensor`` (collective: every rank calls), else ``t``."""
    return t.full_tensor() if is_sharded(t) else t  # type: ignore[attr-defined]


def like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` (a whole tensor, same on every rank) laid out as ``ref``: sharded like a ``DTensor`` ``ref``
    (collective), else moved to ``ref``'s device."""
    if not is_sharded(ref):
        return t.to(ref.device)
    mesh = ref.device_mesh  # type: ignore[attr-defined]
    return distribute_tensor(t.to(mesh.device_type), mesh, ref.placements)  # type: ignore[attr-defined]


def prepare_stage(acc, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """``(wrapped model, optimizer, its parameters)`` for a stage: under FSDP2 the model and optimizer are
    prepared together (accelerate shards the model once and points the optimizer at the shards; a model
    already sharded by an earlier stage stays as it is); otherwise the model alone (DDP when distributed,
    re-wrapped per stage because DDP records which tensors need gradients)."""
    if getattr(acc, "is_fsdp2", False):
        model, optimizer = acc.prepare(model, optimizer)
        wrapped = model
    else:
        wrapped = acc.prepare_model(model)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    return wrapped, optimizer, params


def check_supported(acc) -> None:
    """FSDP version 1 is refused: its flat parameters need one dtype per wrapped block, and a DiT block
    holds the bf16 frozen base next to fp32 LoRA factors.

    Raises:
        MirageError: an accelerate FSDP config with ``fsdp_version: 1``.
    """
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.FSDP and not getattr(acc, "is_fsdp2", False):
        raise MirageError("accelerate config: FSDP version 1 is not supported (a DiT block mixes the bf16 base and "
                          "fp32 LoRA tensors); set fsdp_version: 2 (configs/accelerate/fsdp_5b.yaml)")
