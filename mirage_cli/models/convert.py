"""``mirage models convert``: base Wan2.2-TI2V-5B + the reference's VACE and LoRA files -> one diffusers folder.

No trained checkpoint is published: the paper's reference implementation (microsoft/LatentSpatialMemory,
commit b2cd738) trains two files, ``vace.safetensors`` (the VACE branch, 439 tensors, bf16) and
``lora.safetensors`` (a rank-32 LoRA on the base DiT, 600 tensors), on top of the frozen base model.

Inputs:

- ``base``: a diffusers Wan2.2-TI2V-5B folder (``NAME | REPO_ID | DIR``, resolved as every model:
  local directory, Hugging Face cache, ``download=True``). Its transformer is a
  ``WanTransformer3DModel`` with 48 in/out channels; its VAE has ``z_dim = 48``.
- ``vace``: safetensors in the original Wan naming (``vace_blocks.N.self_attn.q.weight``,
  ``vace_blocks.0.before_proj.*``, ``vace_patch_embedding.*``). Names are converted with diffusers'
  own ``convert_wan_transformer_to_diffusers``, one tensor at a time.
- ``lora``: safetensors ``pipe.dit.blocks.N.{self_attn|cross_attn}.{q|k|v|o}.lora_{A|B}.weight`` and
  ``pipe.dit.blocks.N.ffn.{0|2}.lora_{A|B}.weight`` (``diffusion_model.`` is accepted as the
  prefix too), A ``(r, in)``, B ``(out, r)``, no alpha (the reference trains with alpha = r, so the
  scale is 1; an ``.alpha`` tensor, if present, scales by ``alpha / r``). Fused into the base weights:
  ``W += scale * B @ A`` (computed in fp32, stored in the base weight's dtype), so no peft is needed at
  run time.

Output ``OUT`` (diffusers layout)::

    model_index.json          transformer = ["mirage_cli", "MirageTransformer3DModel"]
    transformer/              config.json (MirageTransformer3DModel) + safetensors shards (+ index)
    vae/ text_encoder/ tokenizer/     hard links to the base's files (copies across file systems)
    scheduler/                UniPCMultistepScheduler, flow_prediction, flow sigmas, shift 5
    mirage.json               sources with sha256, LoRA scale, VACE layers, mirage version, peak memory
    mirage_random_weights.json        only when a source came from the tiny kit

Streaming: every input is read one tensor at a time through ``safe_open`` (memory-mapped) and each
output shard is written as its header (the layout is known after validation) followed by the tensors
as they are produced, so the process holds one tensor at a time (plus the LoRA factors being fused),
never a copy of the model. Measured on a 0.65 GB test model: peak RSS 0.53 GB, of which 0.44 GB is
the imported libraries; for the full 7.6 B model the largest tensor (an FFN weight, 14336 x 3072
fp32 = 176 MB) and its fused fp32 temporaries bound it at roughly 1-1.5 GB (estimate). Everything is
validated (keys, shapes, base architecture) before the first byte is written, the folder is built
in a temporary directory beside ``OUT`` and renamed into place at the end: a failure leaves no
``OUT``. Bad input raises :class:`MirageError` naming the file and the first offending key.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open
from safetensors.torch import save_file

from .. import __version__
from ..errors import MirageError
from .registry import RANDOM_WEIGHTS_MARKER, VACE_SUBFOLDERS, resolve_model, weights_kind
from .shards import ITEMSIZE, ShardEntry, StreamingShards

if TYPE_CHECKING:  # imports diffusers
    from .mirage_transformer import MirageTransformer3DModel

#: Latent channels of the Wan2.2 VAE / TI2V-5B transformer, and the VACE context (read 48 | white 48).
WAN22_CHANNELS = 48
MIRAGE_VACE_CHANNELS = 96
#: VACE layouts ``--layout`` knows: ``mirage`` = the reference's blocks evenly spaced from layer 0 (15 on
#: 0, 2, ..., 28 of 30), LoRA fused; ``spatia`` = Spatia's (ZhaoJingjing713/Spatia Spatia/inference.py build_pipe:
#: ``vace_layers=[0, 4, 8, ..., 28]``, every 4th layer), LoRA stored unfused so it can be off in round 0.
LAYOUTS = ("mirage", "spatia")
SPATIA_VACE_STRIDE = 4
#: File of the unfused LoRA in a converted folder (diffusers module names, ``<module>.lora_{A|B}.weight``).
LORA_FILE = "lora.safetensors"
DEFAULT_SHARD_BYTES = 5 * 10**9
FORMAT = "mirage.model"
FORMAT_VERSION = 1

_LORA_KEY = re.compile(r"^(?:pipe\.dit\.|diffusion_model\.)blocks\.(\d+)\.(self_attn\.[qkvo]|cross_attn\.[qkvo]|ffn\.[02])"
                       r"\.(lora_A\.weight|lora_B\.weight|alpha)$")
# Spatia's loader (DiffSynth GeneralLoRALoader behind Spatia/inference.py build_pipe, which keeps only keys containing
# ``pipe.dit.``): the module is the key without ``lora_A/B``, an optional adapter segment after it (``default``),
# and ``weight``; any module of the DiT may be a target; ``.alpha`` is never read (scale 1).
_SPATIA_LORA_KEY = re.compile(r"^pipe\.dit\.(?P<mod>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_VACE_KEY = re.compile(r"^(vace_blocks\.\d+\.|vace_patch_embedding\.)")
_COPIED = ("vae", "text_encoder", "tokenizer")


@dataclass
class ConvertReport:
    """What :func:`convert_mirage` wrote and what it cost."""

    out: Path
    tensors: int = 0
    total_bytes: int = 0
    shards: int = 0
    lora_modules: int = 0
    peak_held_bytes: int = 0  # largest output tensor held at once (the writer holds one at a time)
    peak_rss_bytes: int = 0  # the process's peak resident set size (ru_maxrss) after the conversion
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------- helpers
def converted_layout(root: Path) -> str:
    """The VACE layout a converted folder records in ``mirage.json`` (``mirage`` for folders written
    before layouts were recorded, or without a readable ``mirage.json``)."""
    try:
        return json.loads((Path(root) / "mirage.json").read_text()).get("layout", "mirage")
    except (OSError, ValueError, AttributeError):
        return "mirage"


def sha256_file(path: Path, block: int = 1 << 24) -> str:
    """sha256 of a file, read in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _open(path: Path, what: str):
    """``safe_open`` with a one-line error for missing / non-safetensors files."""
    if not path.is_file():
        raise MirageError(f"{path}: {what} file not found")
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        raise MirageError(f"{path}: {what} must be a .safetensors file (mirage never loads pickles)")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as e:  # header errors from the Rust side
        raise MirageError(f"{path}: not a readable safetensors file ({str(e).strip().splitlines()[0]})") from e


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MirageError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        raise MirageError(f"{path}: unreadable JSON ({e})") from e


def diffusers_name(original: str) -> str:
    """Original Wan parameter name -> diffusers name, through diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    (name,) = convert_wan_transformer_to_diffusers({original: None}).keys()
    return name


def _shape(sf, key: str) -> tuple[int, ...]:
    return tuple(sf.get_slice(key).get_shape())


def _entry(sf, path: Path, key: str, name: str) -> ShardEntry:
    sl = sf.get_slice(key)
    dtype = sl.get_dtype()
    if dtype not in ITEMSIZE:
        raise MirageError(f"{path}: key '{key}' has dtype {dtype}, which mirage does not convert")
    return ShardEntry(name, dtype, tuple(sl.get_shape()), path, key)


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a diffusers model folder (shards in index order, or the single file)."""
    idx = sorted(folder.glob("*.safetensors.index.json"))
    if idx:
        wmap = _read_json(idx[0]).get("weight_map")
        if not isinstance(wmap, dict):
            raise MirageError(f"{idx[0]}: no weight_map")
        return [folder / n for n in dict.fromkeys(wmap.values())]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise MirageError(f"{folder}: no .safetensors weights")
    return files


# --------------------------------------------------------------------------------------- validation
def check_base(root: Path) -> dict:
    """Validate a Wan2.2-TI2V base folder; returns the transformer config."""
    cfg_path = root / "transformer" / "config.json"
    cfg = _read_json(cfg_path)
    if cfg.get("_class_name") != "WanTransformer3DModel":
        raise MirageError(f"{cfg_path}: _class_name is {cfg.get('_class_name')!r}, expected 'WanTransformer3DModel' "
                          "(the base must be Wan2.2-TI2V-5B in diffusers layout)")
    for key in ("in_channels", "out_channels"):
        if cfg.get(key) != WAN22_CHANNELS:
            raise MirageError(f"{cfg_path}: {key} is {cfg.get(key)}, expected {WAN22_CHANNELS} "
                              "(the base must be Wan2.2-TI2V-5B, whose VAE has 48 latent channels)")
    vae_path = root / "vae" / "config.json"
    vae = _read_json(vae_path)
    if vae.get("z_dim") != WAN22_CHANNELS:
        raise MirageError(f"{vae_path}: z_dim is {vae.get('z_dim')}, expected {WAN22_CHANNELS} (the Wan2.2 VAE)")
    return cfg


def mirage_config_dict(base_cfg: dict, vace_layers: list[int], vace_in_channels: int) -> dict:
    """The ``MirageTransformer3DModel`` constructor arguments: the base config's ones plus the VACE layout."""
    from diffusers import WanVACETransformer3DModel

    allowed = set(inspect.signature(WanVACETransformer3DModel.__init__).parameters) - {"self"}
    cfg = {k: v for k, v in base_cfg.items() if k in allowed}
    cfg.update(vace_layers=list(vace_layers), vace_in_channels=int(vace_in_channels))
    return cfg


def expected_model(base_cfg: dict, vace_layers: list[int], vace_in_channels: int):
    """A ``MirageTransformer3DModel`` on the meta device (config + expected parameter shapes, no memory)."""
    from accelerate import init_empty_weights

    from .mirage_transformer import MirageTransformer3DModel

    cfg = mirage_config_dict(base_cfg, vace_layers, vace_in_channels)
    try:
        with init_empty_weights():
            return MirageTransformer3DModel(**cfg)
    except (TypeError, ValueError) as e:
        raise MirageError(f"cannot build the Mirage transformer from the base config: {e}") from e


def layout_layers(layout: str, n: int, num_layers: int, source: Path) -> list[int]:
    """The DiT layers of ``n`` VACE blocks in ``layout`` on a base of ``num_layers`` layers.

    ``mirage``: evenly spaced from 0 (``num_layers // n`` apart; the reference's 15 on 0, 2, ..., 28);
    ``spatia``: every 4th layer from 0 (Spatia's 8 on 0, 4, ..., 28). Raises MirageError naming ``source``
    when the blocks do not fit."""
    if layout == "spatia":
        layers = list(range(0, SPATIA_VACE_STRIDE * n, SPATIA_VACE_STRIDE))
        if layers[-1] >= num_layers:
            raise MirageError(f"{source}: {n} VACE blocks in Spatia's layout sit on layers 0, 4, ..., {layers[-1]}, "
                              f"but the base has {num_layers} layers")
        return layers
    if num_layers % n:
        raise MirageError(f"{source}: {n} VACE blocks do not divide the base's {num_layers} layers evenly; "
                          "pass the VACE layers explicitly (--vace-layers 0,4,...) or --layout spatia")
    return list(range(0, num_layers, num_layers // n))


def check_vace_layers(layers: list[int], n: int, num_layers: int, source: Path) -> list[int]:
    """Explicit VACE layers: ``n`` distinct increasing layers starting at 0, all below ``num_layers``
    (what diffusers' ``WanVACETransformer3DModel`` requires, diffusers/models/transformers/transformer_wan_vace.py
    lines 211-214)."""
    layers = [int(x) for x in layers]
    if len(layers) != n:
        raise MirageError(f"{source}: holds {n} VACE blocks but {len(layers)} VACE layers were given")
    if layers[0] != 0 or any(b <= a for a, b in zip(layers, layers[1:])) or layers[-1] >= num_layers:
        raise MirageError(f"--vace-layers {','.join(map(str, layers))}: must increase from 0 and stay below the "
                          f"base's {num_layers} layers")
    return layers


def _plan_vace(path: Path, num_layers: int, vace_layers: list[int] | None,
               layout: str = "mirage") -> tuple[dict[str, str], list[int], int]:
    """Keys of the VACE file -> diffusers names; the VACE layers and input channels it implies."""
    with _open(path, "VACE") as sf:
        keys = sorted(sf.keys())
        if not keys:
            raise MirageError(f"{path}: no tensors")
        for k in keys:
            if not _VACE_KEY.match(k):
                raise MirageError(f"{path}: key '{k}' is not a VACE weight (expected vace_blocks.N.* or "
                                  "vace_patch_embedding.* in the reference's naming, no prefix)")
        if "vace_patch_embedding.weight" not in keys:
            raise MirageError(f"{path}: key 'vace_patch_embedding.weight' is missing")
        in_ch = _shape(sf, "vace_patch_embedding.weight")[1]
    if in_ch != MIRAGE_VACE_CHANNELS:
        meaning = ("48 VAE(point-cloud render) + 48 VAE(hole mask) channels" if layout == "spatia"
                   else "48 memory-read + 48 white-video latent channels")
        raise MirageError(f"{path}: key 'vace_patch_embedding.weight' takes {in_ch} channels, expected "
                          f"{MIRAGE_VACE_CHANNELS} ({meaning})")
    n = 1 + max(int(k.split(".")[1]) for k in keys if k.startswith("vace_blocks."))
    layers = (layout_layers(layout, n, num_layers, path) if vace_layers is None
              else check_vace_layers(vace_layers, n, num_layers, path))
    return {k: diffusers_name(k) for k in keys}, layers, in_ch


def _lora_target(path: Path, key: str, module: str, targets: dict[str, tuple[int, ...]]) -> str:
    """The diffusers name of the base weight an original-Wan ``module`` names (MirageError otherwise)."""
    try:
        name = diffusers_name(f"{module}.weight")
    except Exception:  # diffusers' converter on a name it does not know
        name = f"{module}.weight"
    if name not in targets:
        raise MirageError(f"{path}: key '{key}' targets {name}, which the base transformer does not have "
                          "(as a 2-D weight)")
    return name


@dataclass(frozen=True)
class Ignored:
    """LoRA keys Spatia's loader leaves out: ``keys`` in all, of which ``alphas`` are ``.alpha`` tensors."""

    keys: int
    alphas: int

    def line(self) -> str:
        """``80 .alpha keys ignored: Spatia's loader scales every LoRA by 1`` (+ the other keys when any)."""
        parts = []
        if self.alphas:
            parts.append(f"{self.alphas} .alpha keys ignored: Spatia's loader scales every LoRA by 1, so a LoRA "
                         "trained with --lora-alpha other than its rank changes strength in this layout")
        if self.keys - self.alphas:
            parts.append(f"{self.keys - self.alphas} keys without pipe.dit. ignored, as Spatia's loader does")
        return "; ".join(parts)


def _plan_lora(path: Path, targets: dict[str, tuple[int, ...]],
               layout: str = "mirage") -> tuple[dict[str, dict], Ignored]:
    """LoRA file -> ``({diffusers weight name: {"A": key, "B": key, "alpha": key | None, "rank": r}}, Ignored)``.

    ``mirage``: the reference's keys (module ``blocks.N.{self_attn|cross_attn}.{q|k|v|o}`` or
    ``blocks.N.ffn.{0|2}``, prefix ``pipe.dit.`` or ``diffusion_model.``, optional adapter segment such as
    ``lora_A.default.weight``, optional ``.alpha``). ``spatia``: Spatia's loader's rule (see ``_SPATIA_LORA_KEY``):
    keys without ``pipe.dit.`` and ``.alpha`` keys are ignored (counted),
    any 2-D weight of the DiT may be a target, the scale is always 1."""
    mods: dict[str, dict] = {}
    ignored = alphas = 0
    with _open(path, "LoRA") as sf:
        keys = sorted(sf.keys())
        if not keys:
            raise MirageError(f"{path}: no tensors")
        for k in keys:
            if layout == "spatia":
                m = _SPATIA_LORA_KEY.match(k)
                if not m:
                    ignored += 1  # Spatia drops keys without pipe.dit., and never reads one without .lora_B.
                    alphas += k.endswith(".alpha")
                    continue
                name = _lora_target(path, k, m["mod"], targets)
                part = m["ab"]
            else:
                m = _LORA_KEY.match(k) or _LORA_KEY.match(re.sub(r"\.(lora_[AB])\.[^.]+\.weight$", r".\1.weight", k))
                if not m:
                    raise MirageError(f"{path}: key '{k}' is not a LoRA weight of the base DiT (expected "
                                      "pipe.dit.blocks.N.{self_attn|cross_attn}.{q|k|v|o}.lora_{A|B}.weight or "
                                      "pipe.dit.blocks.N.ffn.{0|2}.lora_{A|B}.weight)")
                block, mod, part = m.groups()
                name = _lora_target(path, k, f"blocks.{block}.{mod}", targets)
                part = {"lora_A.weight": "A", "lora_B.weight": "B", "alpha": "alpha"}[part]
            entry = mods.setdefault(name, {"A": None, "B": None, "alpha": None})
            if entry[part] is not None:
                raise MirageError(f"{path}: keys '{entry[part]}' and '{k}' name the same LoRA factor of {name}")
            entry[part] = k
        if not mods:
            raise MirageError(f"{path}: no LoRA factors (Spatia's loader keeps keys 'pipe.dit.<module>.lora_A|B"
                              "[.adapter].weight'; this file has none)")
        for name, mod in mods.items():
            first = next(v for v in (mod["A"], mod["B"], mod["alpha"]) if v)
            if mod["A"] is None or mod["B"] is None:
                raise MirageError(f"{path}: key '{first}' has no matching lora_{'A' if mod['A'] is None else 'B'}")
            out_f, in_f = targets[name]
            a, b = _shape(sf, mod["A"]), _shape(sf, mod["B"])
            if len(a) != 2 or len(b) != 2 or a[1] != in_f or b[0] != out_f or a[0] != b[1]:
                bad = mod["A"] if len(a) != 2 or a[1] != in_f else mod["B"]
                raise MirageError(f"{path}: key '{bad}' has shape {a if bad == mod['A'] else b}; the base weight "
                                  f"{name} is {(out_f, in_f)}, so A must be (r, {in_f}) and B ({out_f}, r)")
            if mod["alpha"] is not None and _shape(sf, mod["alpha"]) not in ((), (1,)):
                raise MirageError(f"{path}: key '{mod['alpha']}' must be a scalar")
            mod["rank"] = a[0]
    return mods, Ignored(ignored, alphas)


# --------------------------------------------------------------------------------------- writing
def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of ``src`` into ``dst`` (symlinks resolved, as in the HF cache); copy if linking fails."""
    for p in sorted(src.rglob("*")):
        if p.is_dir():
            continue
        target = dst / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        real = p.resolve()
        try:
            os.link(real, target)
        except OSError:
            shutil.copy2(real, target)


def _peak_rss_bytes() -> int:
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r if sys.platform == "darwin" else r * 1024)
    except (ImportError, OSError):
        return 0


# --------------------------------------------------------------------------------------- main
def convert_mirage(base: str | os.PathLike, vace: str | os.PathLike, lora: str | os.PathLike | None,
                   out: str | os.PathLike, *, lora_scale: float = 1.0, download: bool = False,
                   max_shard_bytes: int = DEFAULT_SHARD_BYTES, vace_layers: list[int] | None = None,
                   layout: str = "mirage", fuse_lora: bool | None = None, log=None) -> ConvertReport:
    """Convert the reference's (or Spatia's) checkpoints into a diffusers folder (see the module docstring).

    Args:
        base: Wan2.2-TI2V-5B as ``NAME | REPO_ID | DIR`` (``wan2.2-ti2v-5b``).
        vace, lora: the VACE and LoRA safetensors (``lora`` None: no LoRA).
        out: new directory (must not exist, or be empty).
        lora_scale: ``W += lora_scale * B @ A`` (1 for the reference's training: alpha = rank; Spatia: 1).
        download: fetch a missing base from the Hub (otherwise a missing base is an error).
        max_shard_bytes: largest output shard file (memory use does not depend on it).
        vace_layers: DiT layers of the VACE blocks (default: the ``layout``'s).
        layout: ``mirage`` (the reference's) or ``spatia`` (Spatia's 8 blocks on every 4th layer, its LoRA
            key rule); recorded in ``mirage.json`` so the backends pick their loop.
        fuse_lora: fuse the LoRA into the base weights (default: yes for ``mirage``, no for ``spatia``, whose
            loop runs round 0 without it: the factors are then written to ``OUT/lora.safetensors`` in
            diffusers names and applied at run time, see ``backends/lora.py``).
        log: optional ``callable(str)`` for progress lines.

    Raises:
        MirageError: bad input (one line naming the file and the first offending key); ``out`` is untouched.
    """
    t0 = time.perf_counter()
    say = log or (lambda s: None)
    out = Path(out).expanduser()
    if layout not in LAYOUTS:
        raise MirageError(f"--layout: must be {' or '.join(LAYOUTS)} (got '{layout}')")
    fuse = (layout == "mirage") if fuse_lora is None else bool(fuse_lora)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MirageError(f"{out} exists and is not an empty directory (choose a new one)")
    if not (lora_scale == lora_scale and abs(lora_scale) < float("inf")):
        raise MirageError(f"--lora-scale must be a finite number (got {lora_scale})")
    vace_path = Path(vace).expanduser()
    lora_path = Path(lora).expanduser() if lora is not None else None
    root = resolve_model(base, list(VACE_SUBFOLDERS), download=download)
    base_cfg = check_base(root)

    # 1. Plan and validate everything before writing anything.
    plan = _plan(root, base_cfg, vace_path, lora_path, vace_layers, layout)
    say(f"validated: base {plan.base_tensors} tensors, VACE {plan.vace_tensors} tensors "
        f"(layers {list(plan.model.config.vace_layers)}), LoRA {len(plan.lora)} modules"
        + (f" ({plan.lora_ignored.line()})" if plan.lora_ignored.keys else ""))

    # 2. Write into a temporary folder beside OUT, rename at the end.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    report = ConvertReport(out=out)
    try:
        report = _write(tmp, out, root, base, plan, vace_path, lora_path, float(lora_scale), int(max_shard_bytes),
                        layout, fuse, say)
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    report.peak_rss_bytes = _peak_rss_bytes()
    return report


@dataclass
class _Plan:
    """What :func:`convert_mirage` validated before writing: the output tensors in order (base, then
    VACE), the meta-device model they fill, and the LoRA modules (and the LoRA keys ignored)."""

    base_files: list[Path]
    base_tensors: int
    vace_tensors: int
    entries: list[ShardEntry]
    model: MirageTransformer3DModel  # on the meta device
    lora: dict[str, dict]
    lora_ignored: Ignored = field(default_factory=lambda: Ignored(0, 0))


def _plan(root: Path, base_cfg: dict, vace_path: Path, lora_path: Path | None, vace_layers: list[int] | None,
          layout: str = "mirage") -> _Plan:
    """Every key and shape of the three sources checked against the model they make (one line naming
    the file and the first offending key otherwise)."""
    base_files = weight_files(root / "transformer")
    entries: list[ShardEntry] = []
    for f in base_files:
        with _open(f, "base transformer") as sf:
            entries += [_entry(sf, f, k, k) for k in sf.keys()]
    vace_map, layers, in_ch = _plan_vace(vace_path, int(base_cfg["num_layers"]), vace_layers, layout)
    model = expected_model(base_cfg, layers, in_ch)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for e in entries:
        if e.name not in expected or e.name.startswith("vace_"):
            raise MirageError(f"{e.source}: key '{e.name}' is not a parameter of a Wan2.2-TI2V transformer")
        if e.shape != expected[e.name]:
            raise MirageError(f"{e.source}: key '{e.name}' has shape {e.shape}, the config says {expected[e.name]}")
    base = {e.name: e.shape for e in entries}
    entries += _vace_entries(vace_path, vace_map, layers, expected)
    have = set(base) | set(vace_map.values())
    missing = [k for k in expected if k not in have]
    if missing:
        where = vace_path if missing[0].startswith("vace_") else root / "transformer"
        raise MirageError(f"{where}: key '{missing[0]}' is missing ({len(missing)} parameter(s) missing in all)")
    lora, ignored = ({}, Ignored(0, 0)) if lora_path is None else _plan_lora(lora_path, {k: s for k, s in base.items()
                                                                             if len(s) == 2}, layout)
    return _Plan(base_files, len(base), len(vace_map), entries, model, lora, ignored)


def _vace_entries(path: Path, vace_map: dict[str, str], layers: list[int], expected: dict) -> list[ShardEntry]:
    """The VACE file's tensors under their diffusers names, each checked against the model's shape."""
    entries = []
    with _open(path, "VACE") as sf:
        for orig, name in vace_map.items():
            if name not in expected or not name.startswith("vace_"):
                raise MirageError(f"{path}: key '{orig}' (diffusers: {name}) is not a parameter of the "
                                  f"VACE branch for layers {layers}")
            entries.append(_entry(sf, path, orig, name))
            if entries[-1].shape != expected[name]:
                raise MirageError(f"{path}: key '{orig}' has shape {entries[-1].shape}, the base model "
                                  f"needs {expected[name]}")
    return entries


def lora_scale_of(mod: dict, lsf, lora_scale: float, layout: str) -> float:
    """The factor of ``B @ A`` for one module: ``lora_scale``, times ``alpha / r`` where the reference's file
    has an ``.alpha`` (Spatia's loader never reads one: scale 1)."""
    if layout == "spatia" or mod["alpha"] is None:
        return lora_scale
    return lora_scale * float(lsf.get_tensor(mod["alpha"]).float().reshape(())) / mod["rank"]


def _write(tmp: Path, out: Path, root: Path, base_ref, plan: _Plan, vace_path: Path, lora_path: Path | None,
           lora_scale: float, max_shard_bytes: int, layout: str, fuse: bool, say) -> ConvertReport:
    from diffusers import UniPCMultistepScheduler

    entries, lora_plan, model, base_files = plan.entries, plan.lora, plan.model, plan.base_files
    (tmp / "transformer").mkdir(parents=True)
    shards = StreamingShards(tmp / "transformer", entries, max_shard_bytes)
    fused = 0
    with (_open(lora_path, "LoRA") if lora_path is not None else nullcontext()) as lsf:
        def produce(e: ShardEntry):
            """Read one source tensor (memory-mapped) and fuse its LoRA: ``W += s * B @ A`` in fp32."""
            nonlocal fused
            with _open(e.source, "weights") as sf:
                t = sf.get_tensor(e.key)
            mod = lora_plan.get(e.name) if fuse and e.source != vace_path else None
            if mod is not None:
                assert lsf is not None  # a LoRA plan comes from the LoRA file (_plan: none without one)
                a, b = lsf.get_tensor(mod["A"]).float(), lsf.get_tensor(mod["B"]).float()
                t = (t.float() + lora_scale_of(mod, lsf, lora_scale, layout) * (b @ a)).to(t.dtype)
                fused += 1
            return t

        shards.write(produce)
        if lora_plan and not fuse:  # unfused: the factors under diffusers names, scale folded into B
            assert lsf is not None  # a LoRA plan comes from the LoRA file (_plan: none without one)
            factors = {}
            for name, mod in lora_plan.items():
                module = name[:-len(".weight")]
                s = lora_scale_of(mod, lsf, lora_scale, layout)
                b = lsf.get_tensor(mod["B"])
                factors[f"{module}.lora_A.weight"] = lsf.get_tensor(mod["A"]).contiguous()
                factors[f"{module}.lora_B.weight"] = (b if s == 1.0 else (b.float() * s).to(b.dtype)).contiguous()
            save_file(factors, str(tmp / LORA_FILE), metadata={"format": "mirage.lora", "scale": "1"})
    n_shards = len(shards.names)
    say(f"transformer written: {n_shards} shard{'s' if n_shards != 1 else ''}")  # the LoRA count: in the report
    model.save_config(tmp / "transformer")

    for sub in _COPIED:
        _link_tree(root / sub, tmp / sub)
    sched_cfg = _read_json(root / "scheduler" / "scheduler_config.json")
    UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
                            num_train_timesteps=int(sched_cfg.get("num_train_timesteps", 1000))
                            ).save_config(tmp / "scheduler")
    index = _read_json(root / "model_index.json")
    new_index = {"_class_name": "MiragePipeline", "_diffusers_version": index.get("_diffusers_version"),
                 "scheduler": ["diffusers", "UniPCMultistepScheduler"],
                 "text_encoder": index.get("text_encoder", ["transformers", "UMT5EncoderModel"]),
                 "tokenizer": index.get("tokenizer", ["transformers", "AutoTokenizer"]),
                 "transformer": ["mirage_cli", "MirageTransformer3DModel"],
                 "vae": index.get("vae", ["diffusers", "AutoencoderKLWan"]),
                 "mirage_layout": layout}
    (tmp / "model_index.json").write_text(json.dumps(new_index, indent=2) + "\n")

    sources = [root, vace_path.parent] + ([lora_path.parent] if lora_path is not None else [])
    random_sources = [str(p) for p in sources if weights_kind(p) == "random"]
    if random_sources:
        (tmp / RANDOM_WEIGHTS_MARKER).write_text(json.dumps(
            {"random_weights": True, "created_by": "mirage models convert", "sources": random_sources},
            indent=2) + "\n")
    ranks = sorted({m["rank"] for m in lora_plan.values()})
    lora_info = None
    if lora_path is not None:
        lora_info = {"path": str(lora_path.resolve()), "sha256": sha256_file(lora_path), "modules": len(lora_plan),
                     "rank": ranks[0] if len(ranks) == 1 else ranks, "scale": lora_scale, "fused": fuse,
                     "ignored_keys": plan.lora_ignored.keys,
                     "alpha": "ignored (scale 1, as Spatia's loader)" if layout == "spatia" else "alpha / r when present"}
        if not fuse:
            lora_info["file"] = LORA_FILE
    info = {
        "format": FORMAT, "version": FORMAT_VERSION, "created_by": f"mirage {__version__}", "layout": layout,
        "base": {"ref": os.fspath(base_ref), "path": str(root),
                 "transformer_sha256": {f.name: sha256_file(f) for f in base_files}},
        "vace": {"path": str(vace_path.resolve()), "sha256": sha256_file(vace_path),
                 "tensors": sum(e.source == vace_path for e in entries),
                 "vace_layers": list(model.config.vace_layers), "vace_in_channels": model.config.vace_in_channels},
        "lora": lora_info,
        "transformer": {"class": "MirageTransformer3DModel", "tensors": shards.count,
                        "bytes": shards.total, "shards": n_shards},
        "conversion": {"max_shard_bytes": max_shard_bytes, "peak_held_bytes": shards.peak_held,
                       "dtypes": "as in the sources (LoRA fused in fp32, stored in the base weight's dtype)"},
    }
    (tmp / "mirage.json").write_text(json.dumps(info, indent=2) + "\n")
    return ConvertReport(out=out, tensors=shards.count, total_bytes=shards.total, shards=n_shards,
                         lora_modules=fused if fuse else len(lora_plan), peak_held_bytes=shards.peak_held, info=info)
