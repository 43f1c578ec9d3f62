"""Tiny model kit: the real classes with tiny random weights, saved in exactly the Hub layout.

``make_tiny_kit(DIR)`` (also ``mirage models tiny DIR``) writes

```
DIR/                          a Wan2.1-VACE diffusers folder, written by WanVACEPipeline.save_pretrained
  model_index.json
  scheduler/scheduler_config.json      UniPCMultistepScheduler (flow_prediction, flow_shift 3), as on the Hub
  tokenizer/tokenizer.json ...         a WordLevel tokenizer built offline with `tokenizers`
  text_encoder/config.json, model.safetensors      UMT5EncoderModel, d_model 32
  transformer/config.json, diffusion_pytorch_model.safetensors   WanVACETransformer3DModel, 96 VACE channels
  vae/config.json, diffusion_pytorch_model.safetensors           AutoencoderKLWan (Wan2.1 layout, 16 ch)
  mirage_random_weights.json           marker: describe() reports weights "random"
  depth/                      a transformers depth-estimation folder
    config.json, model.safetensors     DepthAnythingForDepthEstimation with a tiny Dinov2 backbone
    preprocessor_config.json           DPTImageProcessor (28 px, multiple of 14)
    mirage_random_weights.json
```

Everything is loaded back by the same code as real weights (:func:`mirage_cli.backends.wan_vace.load_wan_vace`,
:func:`mirage_cli.models.depth_model.load_depth_model`). Building and saving takes well under a second
once diffusers/transformers are imported. Frame sizes must be multiples of 16 (VAE 8 x patch 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import MirageError
from .registry import RANDOM_WEIGHTS_MARKER, hf_progress

#: Tiny transformer config (as diffusers' own tests); ``rope_max_seq_len`` as the real models so any
#: frame size the real model accepts also runs here.
TINY_TRANSFORMER_CONFIG = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                               out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3,
                               cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=1024,
                               vace_layers=[0, 2], vace_in_channels=96)
TINY_VAE_CONFIG = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                       temperal_downsample=[False, True, True])
TINY_UMT5_CONFIG = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
_WORDS = ("a an the of and with in on at to from by is are photo video scene room indoor outdoor house street "
          "camera moves move left right up down forward backward orbit around view wide light dark window door "
          "table chair wall floor sky tree car people high quality detailed blurry low bad static").split()


def _marker(path: Path) -> None:
    (path / RANDOM_WEIGHTS_MARKER).write_text(json.dumps(
        {"random_weights": True, "created_by": "mirage models tiny",
         "note": "tiny randomly initialised instances of the real classes, for tests and CPU smoke runs"},
        indent=2) + "\n")


def tiny_tokenizer():
    """A T5-style fast tokenizer built offline: WordLevel over a small vocabulary, ``</s>`` appended, pad 0."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(("<pad>", "</s>", "<unk>") + tuple(_WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def tiny_vace_components(seed: int = 0, **transformer_overrides) -> dict:
    """The five components of a tiny Wan2.1-VACE pipeline (real classes, random weights, seeded)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**TINY_VAE_CONFIG)
        transformer = WanVACETransformer3DModel(**{**TINY_TRANSFORMER_CONFIG, **transformer_overrides})
        text_encoder = UMT5EncoderModel(UMT5Config(**TINY_UMT5_CONFIG)).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                        num_train_timesteps=1000)
    tokenizer = tiny_tokenizer()
    assert len(tokenizer) <= TINY_UMT5_CONFIG["vocab_size"], "tiny vocabulary larger than the embedding table"
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer)


def save_tiny_vace(path: str | os.PathLike, seed: int = 0, max_shard_size: str | None = None,
                   **transformer_overrides) -> Path:
    """Write a tiny Wan2.1-VACE diffusers folder with ``WanVACEPipeline.save_pretrained``."""
    from diffusers import WanVACEPipeline

    path = Path(path)
    pipe = WanVACEPipeline(**tiny_vace_components(seed, **transformer_overrides))
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    with hf_progress(False):
        pipe.save_pretrained(path, safe_serialization=True, **kw)
    _marker(path)
    return path


def save_tiny_depth(path: str | os.PathLike, kind: str = "relative", seed: int = 0) -> Path:
    """Write a tiny ``DepthAnythingForDepthEstimation`` + ``DPTImageProcessor`` folder (transformers layout).

    ``kind="metric"`` gives a metric head (sigmoid x ``max_depth`` = 20 m) like the metric-indoor models.
    """
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    path = Path(path)
    backbone = Dinov2Config(image_size=28, patch_size=14, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                            mlp_ratio=2, out_indices=[1, 2, 3, 4], reshape_hidden_states=False, apply_layernorm=True)
    cfg = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=16,
                              neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8, head_hidden_size=8,
                              depth_estimation_type=kind, max_depth=20 if kind == "metric" else 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DepthAnythingForDepthEstimation(cfg).eval()
        with torch.no_grad():  # a positive bias so the random head gives a non-degenerate map
            model.head.conv3.bias.fill_(1.0 if kind == "relative" else 0.0)
    # The real repos' preprocessor settings, at 28 px instead of 518 px.
    proc = DPTImageProcessorPil(do_resize=True, size={"height": 28, "width": 28}, keep_aspect_ratio=True,
                                ensure_multiple_of=14, resample=3, do_rescale=True, rescale_factor=1 / 255,
                                do_normalize=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                                do_pad=False)
    with hf_progress(False):
        model.save_pretrained(path, safe_serialization=True)
        proc.save_pretrained(path)
    _marker(path)
    return path


def make_tiny_kit(path: str | os.PathLike, seed: int = 0, force: bool = False) -> dict[str, Path]:
    """Write the whole kit to ``path`` (see module docstring) and return its paths.

    Returns:
        ``{"root": DIR, "vace": DIR, "vae": DIR / "vae", "depth": DIR / "depth"}``; pass ``"vace"`` as
        ``--model`` and ``"depth"`` to ``load_depth_model``.

    Raises:
        MirageError: ``path`` exists and is not empty (unless ``force``).
    """
    root = Path(path).expanduser()
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not force)):
        raise MirageError(f"{root} exists and is not an empty directory (choose a new one)")
    root.mkdir(parents=True, exist_ok=True)
    save_tiny_vace(root, seed=seed)
    save_tiny_depth(root / "depth", seed=seed)
    return {"root": root, "vace": root, "vae": root / "vae", "depth": root / "depth"}
