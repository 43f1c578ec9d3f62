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

``make_tiny_kit(DIR, kind="mirage")`` (``mirage models tiny DIR --kind mirage``) writes the paper's model's
ingredients instead, as a user who trained it with the reference code would have them:

```
DIR/base/                     a Wan2.2-TI2V-style diffusers folder (WanPipeline, expand_timesteps=True):
                              WanTransformer3DModel (48 in/out channels), AutoencoderKLWan (Wan2.2 layout:
                              z_dim 48, is_residual, patch_size 2, 16x), UMT5, tokenizer, UniPC (shift 5)
DIR/vace.safetensors          a VACE branch in the reference's naming (vace_blocks.N.self_attn.q.weight, ...)
DIR/lora.safetensors          a LoRA in the reference's export naming (pipe.dit.blocks.N.self_attn.q.lora_A.weight)
DIR/depth/                    as above
```

``mirage models convert --base DIR/base --vace DIR/vace.safetensors --lora DIR/lora.safetensors -o OUT``
turns them into the folder ``--backend mirage`` loads.

``make_tiny_kit(DIR, kind="spatia")`` writes the same files in Spatia's layout (ZhaoJingjing713/Spatia, as
its Spatia/inference.py loads them): an 8-layer base, a VACE file with 2 blocks meant for layers 0 and 4 (Spatia:
8 blocks on 0, 4, ..., 28), a LoRA with adapter segments (``...q.lora_A.default.weight``) and ``.alpha``
keys Spatia ignores; convert with ``--layout spatia``.

Everything is loaded back by the same code as real weights (:func:`mirage_cli.backends.wan_vace.load_wan_vace`,
:func:`mirage_cli.models.depth_model.load_depth_model`). Building and saving takes well under a second
once diffusers/transformers are imported. Frame sizes must be multiples of 16 (VAE 8 x patch 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..errors import MirageError
from .registry import RANDOM_WEIGHTS_MARKER, hf_progress
from .wan_vae import TINY_WAN22_VAE_CONFIG

#: Tiny transformer config (as diffusers' own tests); ``rope_max_seq_len`` as the real models so any
#: frame size the real model accepts also runs here.
TINY_TRANSFORMER_CONFIG: dict[str, Any] = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                               out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3,
                               cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=1024,
                               vace_layers=[0, 2], vace_in_channels=96)
TINY_VAE_CONFIG: dict[str, Any] = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                       temperal_downsample=[False, True, True])
TINY_UMT5_CONFIG: dict[str, Any] = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
#: Tiny Wan2.2-TI2V-style base transformer (``WanTransformer3DModel``, 48 latent channels, 4 layers).
#: 256 wide (2 heads x 128, the real head size) for the 48 x 1 x 2 x 2 = 192 outputs of a token: the
#: frozen output projection follows a LayerNorm (fixed norm per token), so the hidden state needs room
#: beyond the 192 output directions to set each output's size; with the head of
#: :data:`TINY_HEAD_GAIN` the VACE branch and the LoRA can then reach every output (at 24 wide they
#: could remove about 12 % of the loss whatever the trainer did; ``tests/test_train_memorise.py``, ``scripts/tiny_head_fit.py``).
TINY_WAN22_TRANSFORMER_CONFIG: dict[str, Any] = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128,
                                     in_channels=48, out_channels=48, text_dim=32, freq_dim=256, ffn_dim=256,
                                     num_layers=4, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                     rope_max_seq_len=1024)
#: Gain of the tiny base's output projection (orthonormal rows x this): measured, a free hidden state
#: before the frozen head then fits a clip's flow targets to a loss of ~1e-9 (at 1.0: 1e-3; the
#: default random init of a 256-wide head: 0.3 of 1.16).
TINY_HEAD_GAIN = 1.5
#: The tiny Mirage VACE branch: every second layer (as the reference: 0, 2, ..., 28 of 30), 96 channels.
TINY_MIRAGE_VACE = dict(vace_layers=[0, 2], vace_in_channels=96)
#: The tiny Spatia kit: an 8-layer base with VACE on every 4th layer (as Spatia: 0, 4, ..., 28 of 30).
TINY_SPATIA_LAYERS = 8
TINY_SPATIA_VACE = dict(vace_layers=[0, 4], vace_in_channels=96)
TINY_LORA_RANK = 4
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


def tiny_wan22_base_components(seed: int = 0, num_layers: int | None = None) -> dict:
    """Components of a tiny Wan2.2-TI2V-style ``WanPipeline`` (real classes, random weights, seeded)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Non-trivial normalisation statistics so tests see them applied (the real ones come with real weights).
        mean = (torch.rand(48) - 0.5).tolist()
        std = (0.5 + torch.rand(48)).tolist()
        vae = AutoencoderKLWan(**TINY_WAN22_VAE_CONFIG, latents_mean=mean, latents_std=std)
        transformer = WanTransformer3DModel(**{**TINY_WAN22_TRANSFORMER_CONFIG,
                                               **({"num_layers": num_layers} if num_layers else {})})
        # A trained model's head reaches its outputs; a random one is ill-conditioned (some outputs
        # need a hidden state far larger than the LayerNorm before it allows): orthonormal rows, scaled.
        torch.nn.init.orthogonal_(transformer.proj_out.weight, gain=TINY_HEAD_GAIN)
        text_encoder = UMT5EncoderModel(UMT5Config(**TINY_UMT5_CONFIG)).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
                                        num_train_timesteps=1000)
    return dict(tokenizer=tiny_tokenizer(), text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                transformer=transformer)


def save_tiny_wan22_base(path: str | os.PathLike, seed: int = 0, num_layers: int | None = None) -> Path:
    """Write a tiny Wan2.2-TI2V-style diffusers folder with ``WanPipeline.save_pretrained``
    (``num_layers``: DiT layers, default the tiny config's 4)."""
    from diffusers import WanPipeline

    path = Path(path)
    pipe = WanPipeline(**tiny_wan22_base_components(seed, num_layers), expand_timesteps=True)
    with hf_progress(False):
        pipe.save_pretrained(path, safe_serialization=True)
    _marker(path)
    return path


def reference_vace_name(key: str) -> str:
    """A diffusers VACE parameter name -> the reference's (original Wan) name.

    Written from the reference's module structure (``VaceWanAttentionBlock(DiTBlock)``:
    ``self_attn``/``cross_attn`` with ``q k v o norm_q norm_k``, affine ``norm3`` before the
    cross-attention, ``ffn.0``/``ffn.2``, ``modulation``, ``before_proj``/``after_proj``), independently
    of diffusers' converter, so a round trip through ``mirage models convert`` checks both.
    """
    parts = key.split(".")
    if parts[0] == "vace_patch_embedding":
        return key
    if parts[0] != "vace_blocks":
        raise ValueError(f"not a VACE parameter: {key}")
    head, rest = ".".join(parts[:2]), ".".join(parts[2:])
    table = {"attn1.": "self_attn.", "attn2.": "cross_attn.", "norm2.": "norm3.", "ffn.net.0.proj.": "ffn.0.",
             "ffn.net.2.": "ffn.2.", "proj_in.": "before_proj.", "proj_out.": "after_proj."}
    for a, b in table.items():
        if rest.startswith(a):
            rest = b + rest[len(a):]
            break
    if rest == "scale_shift_table":
        rest = "modulation"
    for a, b in ((".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."), (".to_out.0.", ".o.")):
        rest = rest.replace(a, b)
    return f"{head}.{rest}"


#: LoRA targets of the reference (per DiT block), original name -> diffusers name.
LORA_TARGETS = {**{f"self_attn.{o}": f"attn1.{d}" for o, d in zip("qkvo", ("to_q", "to_k", "to_v", "to_out.0"))},
                **{f"cross_attn.{o}": f"attn2.{d}" for o, d in zip("qkvo", ("to_q", "to_k", "to_v", "to_out.0"))},
                "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}


def tiny_mirage_weights(base_transformer, seed: int = 0, rank: int = TINY_LORA_RANK,
                        vace_cfg: dict | None = None) -> tuple[dict, dict]:
    """Random VACE and LoRA weights for a base ``WanTransformer3DModel``, **in diffusers naming**.

    Returns:
        ``(vace, lora)``: ``vace`` maps ``vace_blocks.*``/``vace_patch_embedding.*`` to tensors as a
        ``MirageTransformer3DModel`` (``TINY_MIRAGE_VACE``) holds them; ``lora`` maps
        ``blocks.N.<diffusers module>`` to ``(A (r, in), B (out, r))``.
    """
    from .mirage_transformer import MirageTransformer3DModel

    cfg = {k: v for k, v in base_transformer.config.items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model = MirageTransformer3DModel(**{**cfg, **(vace_cfg or TINY_MIRAGE_VACE)})
        vace = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("vace_")}
        lora = {}
        mods = dict(base_transformer.named_modules())
        for i in range(base_transformer.config.num_layers):
            for dname in LORA_TARGETS.values():
                w = mods[f"blocks.{i}.{dname}"].weight
                # B is not zero (unlike a fresh peft adapter), so fusing visibly changes the weights.
                lora[f"blocks.{i}.{dname}"] = (torch.randn(rank, w.shape[1]) / w.shape[1] ** 0.5,
                                               torch.randn(w.shape[0], rank) / rank)
    return vace, lora


def save_tiny_mirage_files(base_transformer, vace_path: str | os.PathLike, lora_path: str | os.PathLike,
                           seed: int = 0, layout: str = "mirage") -> tuple[dict, dict]:
    """Write :func:`tiny_mirage_weights` in the reference's naming (bf16, as the reference saves them).

    ``layout="spatia"``: VACE on layers 0, 4 (Spatia's every 4th layer) and LoRA keys with the adapter
    segment ``pipe.dit.blocks.N.self_attn.q.lora_A.default.weight`` plus an ``.alpha`` per module that
    Spatia's loader never reads (set to half the rank, so a loader that applied it would differ).

    Returns the diffusers-named ``(vace, lora)`` dicts (values rounded to bf16 as written).
    """
    spatia = layout == "spatia"
    vace, lora = tiny_mirage_weights(base_transformer, seed, vace_cfg=TINY_SPATIA_VACE if spatia else None)
    vace = {k: v.to(torch.bfloat16) for k, v in vace.items()}
    save_file({reference_vace_name(k): v.contiguous() for k, v in vace.items()}, str(vace_path))
    original = {v: k for k, v in LORA_TARGETS.items()}
    out, lora_bf16 = {}, {}
    for key, (a, b) in lora.items():
        _, i, dname = key.split(".", 2)
        a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
        lora_bf16[key] = (a, b)
        seg = ".default" if spatia else ""
        out[f"pipe.dit.blocks.{i}.{original[dname]}.lora_A{seg}.weight"] = a.contiguous()
        out[f"pipe.dit.blocks.{i}.{original[dname]}.lora_B{seg}.weight"] = b.contiguous()
        if spatia:
            out[f"pipe.dit.blocks.{i}.{original[dname]}.alpha"] = torch.tensor(a.shape[0] / 2)
    save_file(out, str(lora_path))
    return vace, lora_bf16


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
                            mlp_ratio=2, out_indices=[1, 2, 3, 4], reshape_hidden_states=False,  # type: ignore[call-arg]  # out_indices: taken by **kwargs (BackboneConfigMixin), not in the typed signature
                            apply_layernorm=True)
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


def make_tiny_kit(path: str | os.PathLike, seed: int = 0, force: bool = False,
                  kind: str = "wan-vace") -> dict[str, Path]:
    """Write the whole kit to ``path`` (see module docstring) and return its paths.

    Returns:
        ``kind="wan-vace"``: ``{"root": DIR, "vace": DIR, "vae": DIR / "vae", "depth": DIR / "depth"}``;
        pass ``"vace"`` as ``--model`` and ``"depth"`` to ``load_depth_model``.
        ``kind="mirage"`` / ``"spatia"``: ``{"root", "base", "vace_file", "lora_file", "vae", "depth"}``; pass
        them to ``mirage models convert`` (``--layout spatia`` for the latter).

    Raises:
        MirageError: ``path`` exists and is not empty (unless ``force``).
    """
    if kind not in ("wan-vace", "mirage", "spatia"):
        raise MirageError(f"unknown tiny kit kind '{kind}' (use wan-vace, mirage or spatia)")
    root = Path(path).expanduser()
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not force)):
        raise MirageError(f"{root} exists and is not an empty directory (choose a new one)")
    root.mkdir(parents=True, exist_ok=True)
    if kind in ("mirage", "spatia"):
        base = save_tiny_wan22_base(root / "base", seed=seed,
                                    num_layers=TINY_SPATIA_LAYERS if kind == "spatia" else None)
        from diffusers import WanTransformer3DModel

        with hf_progress(False):
            transformer = WanTransformer3DModel.from_pretrained(base / "transformer")
        save_tiny_mirage_files(transformer, root / "vace.safetensors", root / "lora.safetensors", seed=seed,
                               layout=kind)
        save_tiny_depth(root / "depth", seed=seed)
        return {"root": root, "base": base, "vace_file": root / "vace.safetensors",
                "lora_file": root / "lora.safetensors", "vae": base / "vae", "depth": root / "depth"}
    save_tiny_vace(root, seed=seed)
    save_tiny_depth(root / "depth", seed=seed)
    return {"root": root, "vace": root, "vae": root / "vae", "depth": root / "depth"}
