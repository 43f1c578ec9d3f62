"""The frozen models ``mirage data prepare`` runs: the Wan2.2 VAE and the UMT5 text encoder of a Wan folder.

``--model`` names a diffusers Wan2.2 folder: the base (``wan2.2-ti2v-5b``, a repo id or a directory)
or a ``mirage models convert`` output; only its ``vae/``, ``tokenizer/`` and ``text_encoder/`` are
loaded (never the transformer). Prompt embeddings come from the very function the backends encode
prompts with (:func:`~mirage_cli.backends.wan_vace.umt5_embeddings` after
:func:`~mirage_cli.backends.wan_vace.clean_prompt`: the Wan prompt cleaning, 512 tokens, zeros past
the prompt), so training sees what inference feeds the model.

A worker process loads them once (:func:`data_models` caches per model / device / dtype / text).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..backends.wan_vace import MAX_SEQUENCE_LENGTH, clean_prompt, umt5_embeddings
from ..errors import MirageError
from ..models.registry import dtype_kwargs, hf_progress, resolve_device, resolve_dtype, resolve_model
from ..models.wan_vae import WanVAECodec


class PromptEncoder:
    """UMT5 prompt embeddings exactly as the Wan backends compute them (the same function, not a copy).

    Attributes:
        tokenizer, text_encoder: the folder's. device / dtype: where and in which dtype embeddings come back.
    """

    def __init__(self, tokenizer, text_encoder, device: torch.device, dtype: torch.dtype,
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval().requires_grad_(False).to(device)
        self.device = device
        self.dtype = dtype
        self.max_sequence_length = int(max_sequence_length)

    @property
    def width(self) -> int:
        """Embedding width ``D`` (4096 for UMT5-XXL)."""
        return int(self.text_encoder.config.d_model)

    def embed(self, prompt: str) -> torch.Tensor:
        """``(L, D)`` embeddings of the prompt's ``L`` tokens (the zero rows past them dropped), on the CPU,
        in ``dtype``: the rows ``WanBackendBase.encode_prompt`` gives before its zero padding."""
        emb, n = umt5_embeddings(self.tokenizer, self.text_encoder, clean_prompt(prompt or ""), self.max_sequence_length,
                                 self.device)
        return emb[0, :n].to(self.device, self.dtype).cpu()


@dataclass
class DataModels:
    """The codec and (optionally) the prompt encoder of one Wan folder."""

    codec: WanVAECodec
    text: PromptEncoder | None
    source: str


def data_models(model: str, device: str = "auto", dtype: str = "auto", text: bool = True) -> DataModels:
    """The models of ``model`` loaded on this process (cached: a worker loads them once)."""
    return _load(str(model), str(device), str(dtype), bool(text))


@lru_cache(maxsize=2)
def _load(model: str, device: str, dtype: str, text: bool) -> DataModels:
    parts = ["vae", "tokenizer", "text_encoder"] if text else ["vae"]
    root = resolve_model(model, parts)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    codec = WanVAECodec.from_pretrained(root, subfolder="vae", device=dev, dtype=torch.float32)
    if codec.channels != 48:
        raise MirageError(f"{model}: its VAE has {codec.channels} latent channels; the paper's model is trained on "
                          "the Wan2.2 VAE (48 channels): give a Wan2.2 folder (wan2.2-ti2v-5b or a `mirage models "
                          "convert` output)")
    encoder = None
    if text:
        from transformers import AutoTokenizer, UMT5EncoderModel

        try:
            with hf_progress(False):
                tok = AutoTokenizer.from_pretrained(root / "tokenizer")
                te = UMT5EncoderModel.from_pretrained(root / "text_encoder", use_safetensors=True,
                                                      **dtype_kwargs("transformers", dt))
        except Exception as e:  # corrupt or foreign files: one line naming the component
            raise MirageError(f"could not load the text encoder from {root}: {str(e).splitlines()[0] if str(e) else e}") from e
        encoder = PromptEncoder(tok, te, dev, dt)
    return DataModels(codec, encoder, str(root))
