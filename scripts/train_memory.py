"""Computed memory per GPU of `mirage train` for the full-size model (computed, not measured).

Prints the parameter counts of the paper's ``MirageTransformer3DModel`` (Wan2.2-TI2V-5B config, 15 VACE
blocks, rank-32 LoRA; counted on the meta device, no weights) and the table of
:func:`mirage_cli.train.budget.memory_table`: GB per GPU for every stage x precision x gradient
checkpointing x distribution, batch 1, 4 references + 9 target + 2 preceding latent frames at 1280 x 704.
With ``--activations`` it also prints the activation fit of ``mirage_cli/train/budget.py`` against the
bytes autograd saves for a small model of the real classes on the CPU. With ``--time`` it prints the
computed minutes per 1,000 steps (:func:`mirage_cli.train.budget.time_table`: FLOPs counted by torch on the
meta device, at an assumed share of the GPUs' peak). Run:
``PYTHONPATH=$PWD python3 scripts/train_memory.py [--activations] [--time]``.
"""

from __future__ import annotations

import sys

import torch

from mirage_cli.train.budget import GB, PAPER_CONFIG, Tokens, estimate, memory_table, param_counts, time_table


def saved_bytes(stage: str, checkpointing: bool, layers: int) -> tuple[float, float]:
    """Bytes autograd saves for one forward of a small model of the real classes (fp32, CPU), and the
    estimate of ``budget.estimate`` for it (activations only)."""
    from mirage_cli.models.mirage_transformer import MirageTransformer3DModel
    from mirage_cli.train.model import add_lora, is_lora, is_vace

    cfg = {**PAPER_CONFIG, "num_attention_heads": 8, "attention_head_dim": 64, "ffn_dim": 2391, "text_dim": 64,
           "freq_dim": 32, "num_layers": layers, "vace_layers": list(range(0, layers, 2))}
    torch.manual_seed(0)
    m = MirageTransformer3DModel(**cfg)
    add_lora(m, 4, 4.0, 0.0)
    for n, p in m.named_parameters():
        p.requires_grad_(is_vace(n) if stage == "vace" else is_lora(n))
    if checkpointing:
        m.enable_gradient_checkpointing()
    R, T, P, h, w = 1, 3, 1, 32, 48
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(torch.randn(1, 48, R + T + P, h, w), torch.tensor([[0.0] * R + [0.0, 500.0, 500.0] + [0.0] * P]),
          torch.randn(1, 512, 64), torch.randn(1, 96, T + P, h, w), num_ref_frames=R, return_dict=False)
    counts = param_counts(cfg, 4)
    est = estimate(counts, Tokens.of(counts, (R, T, P), (h, w)), stage=stage, stages=("vace", "lora"),
                   gradient_checkpointing=False)
    return float(sum(seen.values())), est.activations


if __name__ == "__main__":
    c = param_counts(PAPER_CONFIG, 32)
    print(f"parameters: base DiT {c.base / GB:.3f} B, VACE {c.vace / GB:.3f} B, LoRA r32 {c.lora / GB:.4f} B, "
          f"DiT block with its LoRA (an FSDP unit) {c.block / GB:.3f} B")
    print("GB per GPU (computed, not measured), batch 1, 4 + 9 + 2 latent frames of 1280 x 704:")
    print(memory_table())
    if "--activations" in sys.argv:
        for stage in ("vace", "lora"):
            for layers in (2, 6):
                got, est = saved_bytes(stage, False, layers)
                print(f"activations, stage {stage}, {layers} DiT layers (D 512, F 2391, 1920 tokens, fp32): saved by "
                      f"autograd {got / 1e6:.1f} MB, estimate {est / 1e6:.1f} MB ({est / got - 1:+.0%})")
    if "--time" in sys.argv:
        print("minutes per 1,000 optimizer steps (computed, not measured), batch 1 per GPU, bf16, same sample:")
        print(time_table())
