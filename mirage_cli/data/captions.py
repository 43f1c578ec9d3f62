"""Captions from a local vision-language model of the Qwen-VL family (``--caption-model``), as the reference asks for them.

The reference (microsoft/LatentSpatialMemory at b2cd738, ``data_process/run_video_captioning``) captions the 33 target frames with
Qwen3-VL-8B: frames sampled evenly at 2 fps (4 to 10), one of six style sentences picked at random,
then a request to describe the visible scene and the camera motion, temperature 0, at most 512 new
tokens, the answer whitespace-normalised and cut to the style's word budget. mirage does the same with
any local Qwen-VL-family checkpoint that transformers loads without ``trust_remote_code``
(``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VL...``, ``Qwen3VL...``, through
``AutoModelForImageTextToText``), the style picked by an RNG seeded from ``--seed`` and the clip
(the reference's is unseeded), greedy decoding.

Inputs are built with the model's tokenizer (its chat template) and image processor; every
``<|image_pad|>`` placeholder is expanded to ``grid_thw.prod() // merge_size**2`` tokens, the rule of
transformers' ``Qwen2VLProcessor.replace_image_token`` (transformers 5.x,
``transformers/models/qwen2_vl/processing_qwen2_vl.py``): the processor class itself needs torchvision for its
video half, which mirage does not otherwise need.

:func:`save_tiny_captioner` writes a tiny randomly initialised ``Qwen2VLForConditionalGeneration`` with
its tokenizer and image processor in the Hub layout, for tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..errors import MirageError
from ..models.registry import RANDOM_WEIGHTS_MARKER, hf_progress, resolve_device, resolve_model
from .clips import window_rng

STYLES = (  # (style sentence, word budget, sentences), the reference's six
    ("Write a concise, literal description.", 120, "1-2"),
    ("Write a detailed, cinematic description.", 200, "2-4"),
    ("Write a calm, observational description.", 180, "2-3"),
    ("Write a thorough, descriptive account.", 250, "3-5"),
    ("Write a compact, vivid description.", 140, "1-2"),
    ("Write a rich, immersive description.", 180, "2-3"),
)
FPS = 2.0
MIN_FRAMES, MAX_FRAMES = 4, 10
MAX_NEW_TOKENS = 512


def caption_prompt(style: int) -> tuple[str, int]:
    """The prompt for style ``style`` (0..5) and its word budget."""
    sentence, words, sentences = STYLES[style]
    return (f"{sentence} Describe the visible scene: objects, environment, people, lighting and atmosphere, and the "
            "direction of the camera motion (pan, forward, tilt, rotate, zoom, track). Never mention the camera "
            f"operator; say \"person\" for humans. Use at most {words} words in {sentences} sentences."), words


def frame_indices(n: int, fps: float) -> list[int]:
    """Frames sampled evenly at 2 fps from ``n`` frames at ``fps``, clamped to 4..10."""
    k = int(np.clip(round(n / fps * FPS), MIN_FRAMES, MAX_FRAMES))
    return [int(round(x)) for x in np.linspace(0, n - 1, k)]


def check_caption_model(ref: str) -> None:
    """The model resolves to a local folder (no download) holding a transformers config; one line otherwise."""
    root = resolve_model(ref)
    if not (root / "config.json").is_file():
        raise MirageError(f"--caption-model {ref}: {root} has no config.json (expected a transformers model folder)")


@lru_cache(maxsize=1)
def _load(ref: str, device: str):
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    root = resolve_model(ref)
    dev = resolve_device(device)
    try:
        with hf_progress(False):
            tok = AutoTokenizer.from_pretrained(root)
            proc = AutoImageProcessor.from_pretrained(root)
            loaded = AutoModelForImageTextToText.from_pretrained(root, use_safetensors=True)
            # PreTrainedModel.to is decorated with functools.wraps(nn.Module.to), whose type (typeshed's _Wrapped)
            # takes `self` as its first argument again: its declared signature is wrong, the call is Module.to's
            model = cast(Any, loaded).to(dev).eval()
    except Exception as e:  # a foreign or corrupt folder: one line
        raise MirageError(f"--caption-model {ref}: cannot load it ({str(e).splitlines()[0] if str(e) else e})") from e
    if getattr(tok, "chat_template", None) is None:
        raise MirageError(f"--caption-model {ref}: its tokenizer has no chat template")
    return tok, proc, model, dev


def caption_frames(ref: str, frames: torch.Tensor, fps: float, style: int, device: str = "auto") -> str:
    """Caption ``frames (T, 3, H, W)`` in [0, 1] at ``fps`` with the model ``ref`` in style ``style``."""
    from PIL import Image

    tok, proc, model, dev = _load(str(ref), str(device))
    idx = frame_indices(len(frames), fps)
    images = [Image.fromarray((frames[i].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).byte().numpy()) for i in idx]
    prompt, words = caption_prompt(style)
    messages = [{"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    vision = proc(images=images, return_tensors="pt")
    merge = int(getattr(proc, "merge_size", 2)) ** 2
    pad = "<|image_pad|>"
    parts = text.split(pad)
    if len(parts) - 1 != len(images):
        raise MirageError(f"--caption-model {ref}: its chat template made {len(parts) - 1} image placeholders for "
                          f"{len(images)} images (not a Qwen-VL-family model?)")
    grid = vision["image_grid_thw"]
    text = parts[0] + "".join(pad * int(grid[i].prod() // merge) + parts[i + 1] for i in range(len(images)))
    inputs = tok([text], return_tensors="pt")
    inputs = {**inputs, **vision}
    with torch.no_grad():
        out = model.generate(**{k: v.to(dev) for k, v in inputs.items()}, max_new_tokens=MAX_NEW_TOKENS,
                             do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return " ".join(" ".join(answer.split()).split(" ")[:words])


def caption_samples(model: str | None, seed: int, device: str = "auto", fps: float = 16.0,
                    clip: str = "") -> Callable[[torch.Tensor], tuple[str, str]] | None:
    """A captioner for :func:`~.samples.build_samples` (``frames -> (caption, source)``), or None without a model.
    The style of each call is drawn from an RNG seeded by ``(seed, clip)``."""
    if model is None:
        return None
    rng = window_rng(seed, clip, "caption")

    def captioner(frames: torch.Tensor) -> tuple[str, str]:
        style = int(rng.integers(0, len(STYLES)))
        text = caption_frames(model, frames, fps, style, device)
        if not text:
            raise MirageError(f"--caption-model {model}: caption: the model answered nothing")
        return text, f"caption-model:{Path(str(model)).name}:style{style}"

    return captioner


# ------------------------------------------------------------------------------------ tiny model
def save_tiny_captioner(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random ``Qwen2VLForConditionalGeneration`` + tokenizer (byte-level BPE, the Qwen chat
    tokens and a chat template) + ``Qwen2VLImageProcessor`` in the Hub layout (tests, smoke runs)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2Tokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = Path(path)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for s in specials:
        vocab[s] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(specials)
    # transformers 5: Qwen2Tokenizer is the fast (tokenizers) class (Qwen2TokenizerFast: a runtime alias of it).
    # No unknown token (byte-level BPE covers every byte): transformers annotates unk_token as str, yet takes None
    tok = Qwen2Tokenizer(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         unk_token=cast(str, None), bos_token=None)
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    ids = {s: vocab[s] for s in specials}  # the tokenizer's ids: the BPE vocabulary's
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}, bos_token_id=ids["<|im_start|>"],
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(cfg).eval()
    with hf_progress(False):
        model.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
        Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(path)
    (path / RANDOM_WEIGHTS_MARKER).write_text('{"random_weights": true, "created_by": "mirage tests"}\n')
    return path
