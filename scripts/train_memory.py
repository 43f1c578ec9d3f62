"""Computed memory of `mirage train`'s weights, gradients and AdamW state for the full-size model (no activations).

Builds the paper's ``MirageTransformer3DModel`` (Wan2.2-TI2V-5B config, 15 VACE blocks) on the meta device, adds
the rank-32 LoRA the reference trains, counts parameters and prints the bytes per setting. Run:
``PYTHONPATH=$PWD python3 scripts/train_memory.py``.
"""

from __future__ import annotations

from accelerate import init_empty_weights

from mirage_cli.models.mirage_transformer import MirageTransformer3DModel
from mirage_cli.train.model import add_lora, is_lora, is_vace

CONFIG = dict(patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
              text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True,
              qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024, vace_layers=list(range(0, 30, 2)),
              vace_in_channels=96)

with init_empty_weights():
    model = MirageTransformer3DModel(**CONFIG)
    add_lora(model, 32, 32.0, 0.0)
counts = {"base": 0, "vace": 0, "lora": 0}
for n, p in model.named_parameters():
    counts["vace" if is_vace(n) else "lora" if is_lora(n) else "base"] += p.numel()
G = 1e9
print(f"parameters: base DiT {counts['base'] / G:.3f} B, VACE {counts['vace'] / G:.3f} B, LoRA r32 {counts['lora'] / G:.4f} B")
for stage in ("vace", "lora"):
    n = counts[stage]
    for precision, base_bytes in (("no (fp32)", 4), ("bf16", 2)):
        if stage == "lora":  # the VACE branch stays fp32 (frozen) while the LoRA trains
            frozen = counts["base"] * base_bytes + counts["vace"] * 4
        else:
            frozen = counts["base"] * base_bytes + counts["lora"] * 4
        trained = n * (4 + 4 + 8)  # fp32 weight, fp32 gradient, AdamW exp_avg + exp_avg_sq
        print(f"stage {stage:4s} mixed precision {precision:9s}: frozen {frozen / G:6.1f} GB + trained (weights, "
              f"grads, AdamW) {trained / G:6.1f} GB = {(frozen + trained) / G:6.1f} GB per GPU without activations "
              f"(DDP: on each GPU)")
