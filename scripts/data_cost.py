"""The full-size cost of one training sample of `mirage data prepare`, computed (not measured on a GPU).

Prints, for the reference's training size (1280 x 704, 33 target + 8 preceding frames, R reference
frames, a caption of L UMT5 tokens):

- disk bytes per sample, member by member, from the shapes and dtypes ``mirage_cli/data/samples.py``
  writes (exact arithmetic, plus the tar headers and the JSON / caption members measured on a tiny
  sample's sizes);
- the Wan2.2 VAE encoder's floating-point operations for the target, preceding and reference encodes,
  counted by ``torch.utils.flop_counter.FlopCounterMode`` on the real architecture built on the meta
  device (no weights, no compute; untiled; one multiply-add = 2 FLOPs).

Usage: PYTHONPATH=$PWD python3 scripts/data_cost.py [--refs 8] [--tokens 150]
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--refs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=150, help="caption tokens (UMT5); ~1.3 per English word")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=704)
    a = ap.parse_args()
    C, h, w, R, L, D = 48, a.height // 16, a.width // 16, a.refs, a.tokens, 4096
    members = {  # name: bytes
        "target (9,C,h,w) f16": 9 * C * h * w * 2, "target_read (9,C,h,w) f16": 9 * C * h * w * 2,
        "target_known (9,h,w) bool": 9 * h * w, "preceding (2,C,h,w) f16": 2 * C * h * w * 2,
        "preceding_read (2,C,h,w) f16": 2 * C * h * w * 2, "preceding_known (2,h,w) bool": 2 * h * w,
        f"reference ({R},C,h,w) f16": R * C * h * w * 2, f"text ({L},{D}) bf16": L * D * 2,
        "cameras + intrinsics f32": (9 + 2 + R) * 64 + (33 + 8 + R) * 16,
        "safetensors headers, JSON, caption, tar headers (approx.)": 8 * 1024,
    }
    total = sum(members.values())
    print(f"one sample at {a.width}x{a.height} (latent {h}x{w}), R={R} references, L={L} caption tokens:")
    for k, v in members.items():
        print(f"  {k:58s} {v / 1e6:8.3f} MB")
    print(f"  {'total':58s} {total / 1e6:8.3f} MB  ({1e12 / total / 1e6:.2f} M samples per TB)")

    from diffusers import AutoencoderKLWan
    from torch.utils.flop_counter import FlopCounterMode

    from mirage_cli.models.wan_vae import WAN22_VAE_CONFIG

    with torch.device("meta"):
        vae = AutoencoderKLWan(**WAN22_VAE_CONFIG)
    flops = {}
    for name, frames, times in (("target", 33, 1), ("preceding", 8, 1), ("reference", 1, R)):
        x = torch.empty(1, 3, frames, a.height, a.width, device="meta")
        fc = FlopCounterMode(display=False)
        with fc, torch.no_grad():
            vae.encode(x)
        flops[name] = fc.get_total_flops() * times
    total_f = sum(flops.values())
    print("Wan2.2 VAE encoder FLOPs per sample (FlopCounterMode, meta device, untiled):")
    for k, v in flops.items():
        print(f"  {k:10s} {v / 1e12:8.1f} TFLOP")
    print(f"  {'total':10s} {total_f / 1e12:8.1f} TFLOP")
    for rate in (30, 100, 300):
        print(f"  at a sustained {rate} TFLOP/s: {total_f / rate / 1e12:.2f} s per sample")


if __name__ == "__main__":
    main()
