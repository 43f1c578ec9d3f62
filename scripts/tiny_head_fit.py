"""How far can the frozen output head of a tiny Wan2.2 DiT reach? (docs/training.md, "Memorisation check")

For one prepared sample's flow targets ``v = eps - x0`` (192 outputs per token), optimise a FREE hidden
state per token (no DiT blocks at all) through the frozen ``norm_out`` (LayerNorm, no affine) + time
modulation + ``proj_out`` of a ``WanTransformer3DModel``, and print the best MSE reached. This is the floor
any trained VACE branch / LoRA meets when the head is frozen: the tiny kit's head has to let it reach ~0.

    PYTHONPATH=$PWD python3 scripts/tiny_head_fit.py SHARDS

(SHARDS: a `mirage data prepare` folder made with the tiny Wan2.2 kit, e.g. the one of the memorisation
check.) Rows: width (heads x head_dim), head init (``default``: nn.Linear's; ``orthonormal x g``: the
kit's ``torch.nn.init.orthogonal_(gain=g)``), best MSE, target mean square. sigma 0.8, Adam 1500 steps.
"""

from __future__ import annotations

import sys

import torch


def best_fit(x0: torch.Tensor, heads: int, head_dim: int, gain: float | None, sigma: float = 0.8) -> tuple[float, float]:
    from diffusers import WanTransformer3DModel

    from mirage_cli.models.tiny import TINY_WAN22_TRANSFORMER_CONFIG

    torch.manual_seed(0)
    m = WanTransformer3DModel(**{**TINY_WAN22_TRANSFORMER_CONFIG, "num_attention_heads": heads,
                                 "attention_head_dim": head_dim, "num_layers": 1})
    if gain is not None:
        torch.nn.init.orthogonal_(m.proj_out.weight, gain=gain)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    v = eps - x0  # (1, C, T, h, w) -> tokens (p_t p_h p_w C), diffusers' unpatchify order
    B, C, T, H, W = v.shape
    tok = v.reshape(B, C, T, H // 2, 2, W // 2, 2).permute(0, 2, 3, 5, 4, 6, 1).reshape(-1, C * 4)
    with torch.no_grad():
        temb, *_ = m.condition_embedder(torch.tensor([int(sigma * 1000)]), torch.zeros(1, 4, m.config.text_dim), None)
        shift, scale = (m.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    m.requires_grad_(False)
    h = torch.randn(tok.shape[0], heads * head_dim, requires_grad=True)
    opt = torch.optim.Adam([h], lr=0.05)
    for _ in range(1500):
        loss = ((m.proj_out(m.norm_out(h) * (1 + scale[0]) + shift[0]) - tok) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss), float(tok.pow(2).mean())


def main(shards: str) -> None:
    from mirage_cli.data.shards import TrainingShards

    torch.set_num_threads(1)
    x0 = TrainingShards(shards)[0].tensors["target"].float().permute(1, 0, 2, 3)[None]
    print("width  head               best MSE   target mean square")
    for heads, hd, gain in ((2, 12, None), (2, 96, None), (2, 128, None), (2, 96, 1.0), (2, 128, 1.0), (2, 128, 1.5)):
        fit, ms = best_fit(x0, heads, hd, gain)
        init = "default" if gain is None else f"orthonormal x {gain}"
        print(f"{heads * hd:5d}  {init:17s}  {fit:9.3g}  {ms:.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
