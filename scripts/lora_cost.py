"""Cost of the switchable (unfused) LoRA branch on one Wan2.2-5B-sized linear (mirage_cli/backends/lora.py).

Times ``y = W x`` against ``y = W x + B (A x)`` for an attention projection (3072 x 3072) and an FFN
layer (3072 -> 14336), rank 32, on ``--tokens`` tokens (858 = one latent frame at 1248x704), fp32 CPU,
median of 20 runs after 3 warm-ups. Usage: ``PYTHONPATH=. python3 scripts/lora_cost.py [--tokens N]``.
"""

import argparse
import statistics
import time

import torch

from mirage_cli.backends.lora import SwitchableLoRA

ap = argparse.ArgumentParser()
ap.add_argument("--tokens", type=int, default=858)
ap.add_argument("--rank", type=int, default=32)
args = ap.parse_args()
torch.manual_seed(0)
for name, (i, o) in {"attention 3072x3072": (3072, 3072), "ffn 3072->14336": (3072, 14336)}.items():
    model = torch.nn.Sequential(torch.nn.Linear(i, o))
    lora = SwitchableLoRA(model, {"0.lora_A.weight": torch.randn(args.rank, i) / i ** 0.5,
                                  "0.lora_B.weight": torch.randn(o, args.rank) / args.rank})
    x = torch.randn(args.tokens, i)
    times = {}
    for on in (False, True):
        lora.set(on)
        with torch.no_grad():
            for _ in range(3):
                model(x)
            ts = []
            for _ in range(20):
                t = time.perf_counter()
                model(x)
                ts.append(time.perf_counter() - t)
        times[on] = statistics.median(ts)
    print(f"{name}: off {times[False] * 1e3:.2f} ms, on {times[True] * 1e3:.2f} ms "
          f"(+{100 * (times[True] / times[False] - 1):.1f} %; multiply-adds +{100 * args.rank * (i + o) / (i * o):.1f} %)")
