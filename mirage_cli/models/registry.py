"""Known models, where their weights come from, and the device/dtype policy.

A model reference (``--model``) is one of:

- a **name** from :data:`REGISTRY` (``wan2.1-vace-1.3b``),
- a Hugging Face **repo id** (``Wan-AI/Wan2.1-VACE-1.3B-diffusers``),
- a local **directory** in Hub layout (diffusers: ``model_index.json`` + one folder per component;
  transformers: ``config.json`` + weights).

:func:`resolve_model` turns any of them into a local directory. A directory is used as it is. A
name or repo id is looked up in the local Hugging Face cache (``HF_HUB_CACHE``, ``HF_HOME/hub`` or
``~/.cache/huggingface/hub``, read at call time); only the subfolders the caller needs are checked
(and, with ``download=True``, fetched). Nothing touches the network unless ``download=True`` and
``HF_HUB_OFFLINE`` is not set, so a missing model fails at once with one line that names the model,
the repo and the command that fetches it (``mirage models download NAME``).

Weights are only ever read from safetensors files (never pickle). This module imports neither
diffusers nor transformers, so resolving (and failing) costs milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MirageError

#: Marker file written by the tiny model kit (``mirage models tiny``): the weights are random.
RANDOM_WEIGHTS_MARKER = "mirage_random_weights.json"

#: Components of a diffusers Wan-VACE folder, in the order they are fetched.
VACE_SUBFOLDERS = ("scheduler", "tokenizer", "text_encoder", "transformer", "vae")

#: File patterns that may be fetched (configs, tokenizers and safetensors weights; never pickles).
_SAFE_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt")


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the registry.

    Attributes:
        name: short name used on the command line.
        repo_id: Hugging Face repo.
        kind: ``"wan-vace"`` (a full diffusers VACE pipeline folder), ``"wan-base"`` (a diffusers Wan
            pipeline folder without VACE, the base of ``mirage models convert``), ``"vae"`` (one VAE subfolder)
            or ``"depth"`` (a transformers depth-estimation model).
        subfolders: subfolders of the repo that are needed (``None``: the repo root holds the model).
        size_gb: approximate download size of those files in GB (from the parameter counts of the
            published configs; the Hub's own file listing is authoritative).
        description: one line for ``mirage models list``.
    """

    name: str
    repo_id: str
    kind: str
    subfolders: tuple[str, ...] | None
    size_gb: float
    description: str

    @property
    def default_subfolder(self) -> str | None:
        """The subfolder a single-component model lives in (``"vae"`` for the VAE entries)."""
        return self.subfolders[0] if self.subfolders and len(self.subfolders) == 1 else None


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("wan2.1-vace-1.3b", "Wan-AI/Wan2.1-VACE-1.3B-diffusers", "wan-vace", VACE_SUBFOLDERS, 20.5,
                  "Wan2.1 VACE 1.3B (fp32 transformer 8.6 GB + UMT5-XXL 11.4 GB + VAE 0.5 GB), 480p"),
        ModelSpec("wan2.1-vace-14b", "Wan-AI/Wan2.1-VACE-14B-diffusers", "wan-vace", VACE_SUBFOLDERS, 81.3,
                  "Wan2.1 VACE 14B (fp32 transformer 69.4 GB + UMT5-XXL 11.4 GB + VAE 0.5 GB), 480p/720p"),
        ModelSpec("wan2.2-ti2v-5b", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "wan-base", VACE_SUBFOLDERS, 34.2,
                  "Wan2.2 TI2V 5B base (fp32 transformer 20.0 GB + UMT5-XXL 11.4 GB + VAE 2.8 GB): the base of "
                  "the paper's model, input of `mirage models convert`"),
        ModelSpec("depth-anything-v2-small", "depth-anything/Depth-Anything-V2-Small-hf", "depth", None, 0.1,
                  "Depth Anything V2 small: relative inverse depth (Apache-2.0)"),
        ModelSpec("depth-anything-v2-metric-indoor-small", "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf",
                  "depth", None, 0.1, "Depth Anything V2 small, metric depth in metres, indoor (max 20 m)"),
        ModelSpec("depth-anything-v2-metric-outdoor-small",
                  "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf",
                  "depth", None, 0.1, "Depth Anything V2 small, metric depth in metres, outdoor (max 80 m)"),
        ModelSpec("wan2.1-vae", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "vae", ("vae",), 0.5,
                  "Wan2.1 VAE: 16 channels, 8x spatial, 4x temporal (used by mirage bench)"),
        ModelSpec("wan2.2-vae", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "vae", ("vae",), 2.8,
                  "Wan2.2 VAE: 48 channels, 16x spatial, 4x temporal (used by mirage bench)"),
    )
}

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


# --------------------------------------------------------------------------------------- cache
def hub_cache_dir() -> Path:
    """The Hugging Face hub cache directory, from the environment *at call time*."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or the older ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def snapshot_dir(repo_id: str, cache_dir: Path, revision: str = "main") -> Path | None:
    """The cached snapshot folder of ``repo_id`` (standard hub cache layout), or None."""
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        snap = repo_dir / "snapshots" / ref.read_text().strip()
        return snap if snap.is_dir() else None
    snaps = repo_dir / "snapshots"
    if snaps.is_dir():  # downloaded by commit hash only: take the most recent snapshot
        cands = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        return cands[-1] if cands else None
    return None


def _allow_patterns(subfolders: list[str] | None) -> list[str]:
    if not subfolders:
        return list(_SAFE_PATTERNS)
    pats = ["model_index.json"]
    for sf in subfolders:
        pats += [f"{sf}/{p}" for p in _SAFE_PATTERNS]
    return pats


# --------------------------------------------------------------------------------------- checks
def missing_parts(root: Path, subfolders: list[str] | None) -> list[str]:
    """What a local model folder lacks for the given subfolders (empty list: complete).

    A component folder is complete when it has a config (``config.json``, ``scheduler_config.json``
    or a tokenizer file) and, for weighted components, every safetensors file its index names (or at
    least one safetensors file when there is no index).
    """
    problems: list[str] = []
    folders: list[str | None] = list(subfolders) if subfolders else [None]  # None: the folder itself
    for sf in folders:
        d = root / sf if sf else root
        label = f"{sf}/" if sf else "the model folder"
        if not d.is_dir():
            problems.append(f"{label} is missing")
            continue
        names = {p.name for p in d.iterdir()}
        tokenizer_files = {"tokenizer.json", "spiece.model", "tokenizer_config.json", "vocab.json"}
        if "scheduler_config.json" in names or (names & tokenizer_files and "config.json" not in names):
            continue
        if "config.json" not in names:
            problems.append(f"{label} has no config.json")
            continue
        indexes = [n for n in names if n.endswith(".safetensors.index.json")]
        if indexes:
            try:
                wmap = json.loads((d / indexes[0]).read_text())["weight_map"]
            except (OSError, ValueError, KeyError):
                problems.append(f"{label}{indexes[0]} is unreadable")
                continue
            absent = sorted(set(wmap.values()) - names)
            if absent:
                problems.append(f"{label} lacks {len(absent)} weight shard(s), e.g. {absent[0]}")
        elif not any(n.endswith(".safetensors") for n in names):
            if any(n.endswith((".bin", ".pth", ".pt", ".ckpt")) for n in names):
                problems.append(f"{label} has only pickle weights (mirage reads safetensors only)")
            else:
                problems.append(f"{label} has no .safetensors weights")
    return problems


def weights_kind(path: str | os.PathLike) -> str:
    """``"random"`` for folders written by the tiny kit (marker file here or in a parent), else ``"real"``."""
    p = Path(path)
    for d in (p, *p.parents[:2]):
        if (d / RANDOM_WEIGHTS_MARKER).is_file():
            return "random"
    return "real"


# --------------------------------------------------------------------------------------- resolve
def lookup(ref: str) -> tuple[str, ModelSpec | None]:
    """``(repo_id, spec)`` for a registry name or repo id; ``MirageError`` for anything else."""
    if ref in REGISTRY:
        return REGISTRY[ref].repo_id, REGISTRY[ref]
    for spec in REGISTRY.values():
        if spec.repo_id.lower() == ref.lower():
            return spec.repo_id, spec
    if _REPO_ID.match(ref) and not ref.startswith((".", "~")):
        return ref, None
    raise MirageError(f"unknown model '{ref}': not a directory, a known name ({', '.join(REGISTRY)}) "
                      "or a Hugging Face repo id (owner/name)")


def resolve_model(ref: str | os.PathLike, subfolders: list[str] | None = None, *, download: bool = False) -> Path:
    """Turn ``NAME | REPO_ID | DIR`` into a local directory in Hub layout.

    Args:
        ref: a registry name, a Hugging Face repo id, or a local directory.
        subfolders: the components the caller needs (``["vae"]``, ``VACE_SUBFOLDERS``...); default: the
            registry entry's, or the repo root for an unknown repo id.
        download: fetch missing files (only those subfolders, configs and safetensors) from the Hub
            unless ``HF_HUB_OFFLINE`` is set. Off by default: a missing model is an error that says
            how to fetch it, and never a silent multi-GB download.

    Returns:
        The directory (the repo root; callers pass the subfolder to ``from_pretrained``).

    Raises:
        MirageError: unknown name, missing directory or subfolder, model not cached (offline or not).
    """
    ref_s = os.fspath(ref)
    p = Path(ref_s).expanduser()
    if p.is_dir():
        missing = missing_parts(p, list(subfolders) if subfolders else None)
        if missing:
            raise MirageError(f"model directory {p} is incomplete: {'; '.join(missing)} "
                              "(expected Hub layout, e.g. model_index.json + vae/, transformer/, ...)")
        return p.resolve()
    if p.exists():
        raise MirageError(f"model path {p} is a file, expected a directory in Hub layout")
    if ref_s.startswith((".", "/", "~")) or ref_s.endswith("/") or ref_s.count("/") > 1:
        raise MirageError(f"model directory {p} does not exist")
    if "/" in ref_s and p.parent.is_dir():  # owner/name whose owner is a local folder: a mistyped path
        raise MirageError(f"model directory {p} does not exist (its parent {p.parent}/ is a local folder, so this is "
                          "read as a path, not as a Hugging Face repo id)")

    repo_id, spec = lookup(ref_s)
    name = spec.name if spec else repo_id
    if subfolders is None and spec is not None:
        subfolders = list(spec.subfolders) if spec.subfolders else None
    subfolders = list(subfolders) if subfolders else None
    cache = hub_cache_dir()
    fetch = f"`mirage models download {name}`"
    label = f"model '{name}' ({repo_id})" if spec else f"model {repo_id}"

    snap = snapshot_dir(repo_id, cache)
    problems = missing_parts(snap, subfolders) if snap is not None else ["not in the cache"]
    if snap is not None and not problems:
        return snap
    if download and not hub_offline():
        return _download(repo_id, subfolders, cache, label)
    where = f"in the Hugging Face cache {cache}" + ("" if spec else " and there is no local directory of that name")
    state = "is not available" if snap is None else f"is incomplete ({'; '.join(problems)})"
    offline = " (HF_HUB_OFFLINE is set: unset it to download)" if hub_offline() else ""
    raise MirageError(f"{label} {state} {where}{offline}; fetch it with {fetch}, "
                      "or give a local directory in Hub layout instead (--model DIR, or --depth-model DIR for depth)")


def _download(repo_id: str, subfolders: list[str] | None, cache: Path, label: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, allow_patterns=_allow_patterns(subfolders), cache_dir=cache))
    except Exception as e:  # network, auth, disk: one line for the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MirageError(f"could not download {label}: {first}") from e
    problems = missing_parts(path, subfolders)
    if problems:
        raise MirageError(f"downloaded {label} is incomplete: {'; '.join(problems)}")
    return path


def cache_status(spec: ModelSpec) -> tuple[str, Path | None]:
    """``("cached" | "partial" | "absent", snapshot dir)`` for a registry entry, without network."""
    snap = snapshot_dir(spec.repo_id, hub_cache_dir())
    if snap is None:
        return "absent", None
    sub = list(spec.subfolders) if spec.subfolders else None
    return ("partial" if missing_parts(snap, sub) else "cached"), snap


# --------------------------------------------------------------------------------------- device/dtype
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``/``"cuda:N"`` or ``"mps"``."""
    d = str(device).strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MirageError(f"device '{device}' requested but CUDA is not available on this machine "
                              "(use --device cpu or --device auto)")
        dev = torch.device(d)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MirageError(f"device '{device}' does not exist ({torch.cuda.device_count()} CUDA device(s))")
        return dev
    if d == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise MirageError("device 'mps' requested but MPS is not available on this machine")
        return torch.device("mps")
    raise MirageError(f"unknown device '{device}' (use auto, cpu, cuda, cuda:N or mps)")


_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu") -> torch.dtype:
    """``"auto"`` = bf16 on CUDA, fp32 elsewhere; else ``fp32|bf16|fp16`` (or a ``torch.dtype``)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    d = str(dtype).strip().lower().removeprefix("torch.")
    if d == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if d not in _DTYPES:
        raise MirageError(f"unknown dtype '{dtype}' (use auto, fp32, bf16 or fp16)")
    return _DTYPES[d]


def dtype_kwargs(library: str, dtype: torch.dtype) -> dict:
    """``from_pretrained`` keyword for a dtype: ``dtype=`` on current diffusers (>= 0.40) / transformers
    (>= 4.56), ``torch_dtype=`` on older releases that do not know ``dtype``."""
    import importlib.metadata as md

    try:
        parts = tuple(int(p) for p in re.findall(r"\d+", md.version(library))[:2])
    except (md.PackageNotFoundError, ValueError):
        return {"dtype": dtype}
    new = {"diffusers": (0, 40), "transformers": (4, 56)}.get(library, (0, 0))
    return {"dtype": dtype} if parts >= new else {"torch_dtype": dtype}


@contextlib.contextmanager
def hf_progress(enabled: bool = True):
    """Context in which diffusers'/transformers' own progress bars (weight loading, saving) are on or off."""
    if enabled:
        yield
        return
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    d_on, t_on = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if d_on:
            dlog.enable_progress_bar()
        if t_on:
            tlog.enable_progress_bar()
