"""``mirage data inspect``: what a shard folder holds, and one sample drawn for a person to look at.

:func:`inspect_shards` summarises every sample from the safetensors headers and JSON members (no
tensor is loaded): counts, the shapes and dtypes of each key, caption lengths, text tokens,
reference counts and the IoU histogram, the read's known fraction, and the clips ``prepare`` skipped.
:func:`draw_sample` decodes one sample with the dataset's VAE into a PNG: the target frames at the
latent frames' times, the memory read decoded the same way, its known mask, and the references.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import MirageError
from ..io import atomic_path, to_uint8
from .models import data_models
from .shards import DATASET_FILE, TrainingShards

IOU_BINS = tuple(round(0.1 * i, 1) for i in range(11))


def _header(blob: bytes) -> dict:
    """The JSON header of a safetensors blob (``name -> {dtype, shape, ...}``), without reading the data."""
    n = struct.unpack("<Q", blob[:8])[0]
    h = json.loads(blob[8:8 + n])
    h.pop("__metadata__", None)
    return h


def _stats(values: Sequence[float]) -> dict | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"min": round(float(a.min()), 4), "mean": round(float(a.mean()), 4), "max": round(float(a.max()), 4)}


def inspect_shards(root: Path | str) -> dict:
    """The summary of a shard folder (the ``--json`` document).

    Raises:
        MirageError: not a shard folder (see :func:`~.shards.read_index`).
    """
    root = Path(root)
    ds = TrainingShards(root)
    shapes: dict[str, Counter] = {}
    dtypes: dict[str, set] = {}
    words, tokens, ious, known = [], [], [], []
    refs: Counter[int] = Counter()  # samples by their number of references
    try:
        for i in range(len(ds)):
            _, group = ds.raw(i)
            for k, v in _header(group["safetensors"]).items():
                shapes.setdefault(k, Counter())[str(tuple(v["shape"]))] += 1
                dtypes.setdefault(k, set()).add(v["dtype"])
            meta = json.loads(group["json"])
            words.append(len(group["txt"].decode("utf-8").split()))
            if meta.get("text_tokens") is not None:
                tokens.append(meta["text_tokens"])
            refs[len(meta.get("references", []))] += 1
            ious += meta.get("reference_iou", [])
            kf = meta.get("known_fraction") or []
            if kf:
                known.append(float(np.mean(kf[:len(meta.get("target_read_frames", kf))])))
    finally:
        ds.close()
    hist = np.histogram(np.asarray(ious, dtype=np.float64), bins=np.asarray(IOU_BINS))[0] if ious else np.zeros(10, int)
    prep = root / "prepare.json"
    prepared = json.loads(prep.read_text()) if prep.is_file() else {}
    skipped = {n: c.get("reason") for n, c in prepared.get("clips", {}).items() if c.get("status") in ("bad", "failed")}
    extras = {}
    if (root / DATASET_FILE).is_file():
        with open(root / DATASET_FILE, "rb") as f:
            head = f.read(8)
            head += f.read(struct.unpack("<Q", head)[0])
        extras = {k: {"shape": v["shape"], "dtype": v["dtype"]} for k, v in _header(head).items()}
    return {
        "format": "mirage.data-inspect", "root": str(root.resolve()), "samples": len(ds),
        "shards": len(ds.index["shards"]), "bytes": sum(s["bytes"] for s in ds.index["shards"]),
        "clips": len({c for s in ds.index["shards"] for c in s["clips"]}),
        "options": ds.index.get("options", {}),
        "keys": {k: {"dtype": sorted(dtypes[k])[0] if len(dtypes[k]) == 1 else sorted(dtypes[k]),
                     "shapes": dict(shapes[k].most_common())} for k in sorted(shapes)},
        "caption_words": _stats(words), "text_tokens": _stats(tokens),
        "references": {"per_sample": {str(k): v for k, v in sorted(refs.items())}, "iou": _stats(ious),
                       "iou_histogram": {f"{IOU_BINS[i]:.1f}-{IOU_BINS[i + 1]:.1f}": int(hist[i]) for i in range(10)}},
        "target_read_known_fraction": _stats(known),
        "dataset": extras,
        "skipped_clips": skipped,
    }


def draw_sample(root: Path | str, index: int, png: Path | str, model: str | None = None, device: str = "auto") -> Path:
    """Draw sample ``index`` into ``png``: rows = decoded target frames (at ``t0 + 4j``), the decoded
    memory read (grey where unknown), the known mask, the decoded references. ``model``: the Wan
    folder whose VAE decodes (default: the one the dataset was made with).

    Raises:
        MirageError: no such sample; the model cannot be loaded.
    """
    from PIL import Image, ImageDraw

    ds = TrainingShards(root)
    if not 0 <= index < len(ds):
        raise MirageError(f"--sample {index}: the dataset has {len(ds)} samples (0..{len(ds) - 1})")
    s = ds[index]
    ds.close()
    codec = data_models(model or ds.index["options"]["model"], device, "auto", text=False).codec
    t = s.tensors

    def frames_of(latents: torch.Tensor) -> np.ndarray:  # (F, C, h, w) video latents -> frames at 4j, uint8
        video = codec.decode(latents.float())
        return to_uint8(video[::codec.temporal_factor])

    rows = [("target", frames_of(t["target"])), ("memory read", frames_of(t["target_read"]))]
    mask = t["target_known"].float()[:, None].repeat(1, 3, 1, 1)
    H, W = rows[0][1].shape[1:3]
    mask = torch.nn.functional.interpolate(mask, size=(H, W), mode="nearest")
    rows.append(("known", to_uint8(mask)))
    if len(t["reference"]):
        refs = np.concatenate([to_uint8(codec.decode(r[None].float())) for r in t["reference"]])
        ious = s.meta.get("reference_iou", [])
        rows.append((f"references (IoU {', '.join(f'{x:.2f}' for x in ious)})", refs))
    label_h, cols = 14, max(len(r) for _, r in rows)
    canvas = Image.new("RGB", (cols * (W + 2), len(rows) * (H + label_h + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (label, imgs) in enumerate(rows):
        y = r * (H + label_h + 2)
        draw.text((2, y), f"{label}", fill=(0, 0, 0))
        for c, img in enumerate(imgs):
            canvas.paste(Image.fromarray(img), (c * (W + 2), y + label_h))
    png = Path(png)
    with atomic_path(png) as tmp:
        canvas.save(tmp, format="PNG")
    return png
