"""What each backend is, stated once: the one registry of backends (torch-free).

Everything the rest of mirage needs to know about a backend *before* (or without) loading it lives
in its :class:`BackendSpec`: sampling defaults, the codec geometry its memory and frames use, the
frame-size multiple, the chunk length, whether it samples with a network (and so reads the sampling
options), whether it needs ``--model``, which context it takes (preceding frames with their stored
reads, references and how they are chosen), and how to load it. ``pipeline/``, ``batch/``, ``eval/``
and the CLI ask the spec; no backend name is compared outside ``backends/`` (``tests/test_engine.py``).

This module imports no torch, so ``mirage generate``'s option checks, ``--help`` and ``--dry-run``'s
plan can use it before torch loads.

Adding a backend: a module in ``backends/`` with its class (``build_inputs`` / ``sample`` /
``denoise`` / ``describe``) and a loader ``(cfg, show_progress) -> (codec, backend)``, plus one
``BackendSpec`` entry in :data:`BACKENDS` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Literal

from ..errors import MirageError

if TYPE_CHECKING:  # no torch at import
    from ..models.codecs import Codec
    from . import Backend

# Option names (GenerateConfig fields) that only a network-sampling backend reads.
SAMPLING_OPTIONS: dict[str, str] = {
    "prompts": "--prompt-file", "model": "--model", "steps": "--steps", "guidance": "--guidance", "shift": "--shift",
    "prompt": "--prompt",
    "negative_prompt": "--negative-prompt", "references": "--references", "cpu_offload": "--cpu-offload",
    "dtype": "--dtype"}
# Option names only a pixel-codec backend (the preview) reads.
PIXEL_OPTIONS: dict[str, str] = {"downscale": "--downscale"}


@dataclass(frozen=True)
class SamplingDefaults:
    """Values used for every sampling option the user left out (run.json records the effective ones).

    steps: denoising steps. guidance: classifier-free guidance scale (1 = off). shift: flow-matching
    timestep shift. references: reference latent frames per chunk. splat: the memory read
    (``patch`` | ``point``, see ``memory/modes.py``)."""

    steps: int
    guidance: float
    shift: float
    references: int
    splat: str


@dataclass(frozen=True)
class CodecGeometry:
    """The codec a backend uses, as far as planning needs it (no weights): ``name``, latent
    ``channels``, ``spatial_factor`` (pixels per latent cell; 0 = chosen per run by ``--downscale``,
    the pixel codec) and ``temporal_factor`` (video frames per latent frame after the first)."""

    name: str
    channels: int
    spatial_factor: int
    temporal_factor: int


@dataclass(frozen=True)
class BackendSpec:
    """One backend, described without loading it.

    Attributes:
        name: the ``--backend`` value. summary: one line for ``--help``.
        loader: ``"module:function"``, called as ``function(cfg, show_progress) -> (codec, backend)``.
        defaults: :class:`SamplingDefaults`.
        codec: :class:`CodecGeometry` of the codec it loads (a model folder's ``vae/config.json``
            refines it at plan time, see ``pipeline/dryrun.py``).
        patch: frame sizes are multiples of ``patch * codec cell`` (2 for Wan's 2x2 transformer patches).
        chunk_frames: ``--chunk-frames`` default (video frames per chunk, ``1 + temporal_factor * k``).
        samples: runs a network over ``steps`` (reads the sampling options); False = the preview.
        model_required: ``--model`` must be given (no default weights); ``default_model`` otherwise.
        missing_model: the message when a required ``--model`` is missing.
        preceding_reads: takes the memory reads its preceding frames were made from (stored per chunk
            so that ``--resume`` can give them back).
        references: how references are chosen: ``covisibility`` (mirage's own), ``voxel-iou``
            (the paper's reference loop, what its model was trained with) or ``matching`` (Spatia's:
            decoded frames matched one-to-one on the explicit cloud's front-most points, see
            ``pipeline/pixelcontext.py``; with a conditioning that renders no cloud, ``covisibility``).
        first_chunk_frames: length of chunk 0 when it differs from ``chunk_frames`` (Spatia: 121).
        overlap_frames: frames each chunk shares with the previous one (``1 + tf k``; Spatia: 9, three
            latent frames re-encoded from the decoded pixels and pinned).
        pad_full: pad a short last chunk to the full chunk length (Spatia's rule), not the next valid one.
        pixel_history: the engine keeps the decoded frames and gives the backend a
            :class:`~mirage_cli.pipeline.pixelcontext.PixelHistory` (overlap frames, pixel references).
        conditionings: the values ``--conditioning`` takes (first = default); empty: no such option.
        render_conditionings: those for which the engine renders the explicit RGB point cloud into every
            frame of the chunk (a :class:`~mirage_cli.pipeline.pixelcontext.PointRender` extra).
        experimental_conditionings: those labelled experimental in the output (not validated).
        lora_from_chunk: chunks before this one run without the model's switchable LoRA (Spatia: 1).
        exact_first_frame: the video's frame 0 is the input image itself (the preview: its decode of a
            downscaled grid would only upsample cell means).
        label: shown in the video's comment tag and the summary (the preview says it is one).
        model_check: ``"module:function"`` refusing a model folder the loader would refuse (``--dry-run``).
        model_kinds: the kinds of ``mirage models`` registry entries it runs (``ModelSpec.kind``); a
            registry name of another kind is refused before anything resolves or downloads.
    """

    name: str
    summary: str
    loader: str
    defaults: SamplingDefaults
    codec: CodecGeometry
    patch: int
    chunk_frames: int
    samples: bool
    model_required: bool = False
    default_model: str | None = None
    missing_model: str = ""
    preceding_reads: bool = False
    references: Literal["covisibility", "voxel-iou", "matching"] = "covisibility"
    exact_first_frame: bool = False
    label: str | None = None
    model_check: str = ""
    model_kinds: tuple[str, ...] = ()
    first_chunk_frames: int | None = None
    overlap_frames: int = 1
    pad_full: bool = False
    pixel_history: bool = False
    conditionings: tuple[str, ...] = ()
    render_conditionings: tuple[str, ...] = ()
    experimental_conditionings: tuple[str, ...] = ()
    lora_from_chunk: int = 0

    def plan(self, num_frames: int, chunk_frames: int | None, temporal_factor: int) -> list:
        """The chunk plan of ``num_frames`` frames (``--chunk-frames`` or the spec's) for this backend."""
        from ..pipeline.plan import plan_chunks

        return plan_chunks(num_frames, chunk_frames or self.chunk_frames, temporal_factor, self.overlap_frames,
                           self.first_chunk_frames, self.pad_full)

    def reads_options(self) -> dict[str, str]:
        """The option fields this backend reads of those only some backends read (name -> flag)."""
        own = {"conditioning": "--conditioning"} if self.conditionings else {}
        return {**(dict(SAMPLING_OPTIONS) if self.samples else dict(PIXEL_OPTIONS)), **own}

    def ignores_options(self) -> dict[str, str]:
        """The option fields this backend ignores (given, they do nothing: a warning says so)."""
        own = {} if self.conditionings else {"conditioning": "--conditioning"}
        return {**(dict(PIXEL_OPTIONS) if self.samples else dict(SAMPLING_OPTIONS)), **own}

    def grid_multiple(self, spatial_factor: int) -> int:
        """What the frame size must be a multiple of, for a codec with ``spatial_factor``."""
        return self.patch * spatial_factor

    def progress_steps(self, steps: int) -> int:
        """Steps of one chunk's denoise, for its progress bar."""
        return steps if self.samples else 1

    def check_model(self, root: Any) -> None:
        """Refuse a resolved model folder the loader would refuse (class, layout), without loading
        weights: ``model_check`` is ``"module:function"`` called with the folder (MirageError)."""
        if self.model_check:
            module, _, fn = self.model_check.partition(":")
            getattr(import_module(module), fn)(root)

    def check_model_ref(self, ref: str | None) -> None:
        """Refuse a ``--model`` registry name (or its repo id) whose kind this backend does not run,
        before anything resolves or downloads (MirageError, one line). Folders and unknown repo ids pass:
        their contents are checked by ``model_check`` once resolved."""
        if not ref or not self.samples:
            return
        from ..models.registry import lookup  # deferred: torch

        try:
            _, entry = lookup(str(ref))
        except MirageError:
            return  # a folder, or an unknown name the resolver refuses with its own message
        if entry is not None and entry.kind not in self.model_kinds:
            needs = (f"it runs a {' or '.join(self.model_kinds)} model" if self.model_kinds else
                     "it " + self.missing_model.removeprefix(f"the {self.name} backend ") if self.missing_model else
                     "it runs another model")
            raise MirageError(f"--model {ref}: a {entry.kind} model ({entry.repo_id}), which the {self.name} backend "
                              f"does not run; {needs}")

    def load(self, cfg: Any, show_progress: bool = True) -> tuple[Codec, Backend]:
        """Build the codec and the backend for the options ``cfg`` (a resolved ``GenerateConfig``)."""
        self.check_model_ref(cfg.model or self.default_model)
        module, _, fn = self.loader.partition(":")
        loader: Callable[..., tuple[Codec, Backend]] = getattr(import_module(module), fn)
        return loader(cfg, show_progress)


BACKENDS: dict[str, BackendSpec] = {
    "preview": BackendSpec(
        name="preview", summary="no network, seconds", loader="mirage_cli.backends.preview:load_preview",
        defaults=SamplingDefaults(steps=30, guidance=5.0, shift=3.0, references=2, splat="patch"),
        codec=CodecGeometry("pixel", 3, 0, 1), patch=1, chunk_frames=9, samples=False, exact_first_frame=True,
        label="PREVIEW (no neural network)"),
    "wan-vace": BackendSpec(
        name="wan-vace", summary="Wan2.1-VACE diffusion", loader="mirage_cli.backends.wan_vace:load_for_run",
        model_check="mirage_cli.backends.wan_vace:check_model_folder", model_kinds=("wan-vace",),
        # Wan2.1-VACE at 480p
        defaults=SamplingDefaults(steps=30, guidance=5.0, shift=3.0, references=2, splat="patch"),
        codec=CodecGeometry("wan2.1-vae", 16, 8, 4), patch=2, chunk_frames=49, samples=True,
        default_model="wan2.1-vace-1.3b"),
    "mirage": BackendSpec(
        name="mirage", summary="the paper's model, see `mirage models convert`",
        loader="mirage_cli.backends.mirage:load_for_run", model_check="mirage_cli.backends.mirage:check_model_folder",
        # the reference's loop: UniPC, 20 steps, no guidance, shift 5, 4 references; the model was trained on
        # the reference's nearest-cell splat, so the memory is read the same way
        defaults=SamplingDefaults(steps=20, guidance=1.0, shift=5.0, references=4, splat="point"),
        codec=CodecGeometry("wan2.2-vae", 48, 16, 4), patch=2, chunk_frames=33, samples=True, model_required=True,
        missing_model="the mirage backend needs a converted model (no weights are published): a folder written by "
                      "`mirage models convert`, a Hub repo id or a registry name",
        preceding_reads=True, references="voxel-iou"),
    "spatia": BackendSpec(
        name="spatia", summary="Spatia's published VACE + LoRA on Wan2.2-TI2V-5B, see `mirage models convert --layout spatia`",
        loader="mirage_cli.backends.spatia:load_for_run", model_check="mirage_cli.backends.spatia:check_model_folder",
        # Spatia's Spatia/inference.py defaults: UniPC, 40 steps, CFG 3.5, shift 5, 7 references; 121 then 81 frames
        # overlapping by 9 (3 latents re-encoded and pinned), the last round padded to 81; LoRA from round 1
        defaults=SamplingDefaults(steps=40, guidance=3.5, shift=5.0, references=7, splat="patch"),
        codec=CodecGeometry("wan2.2-vae", 48, 16, 4), patch=2, chunk_frames=81, samples=True, model_required=True,
        missing_model="the spatia backend needs Spatia's weights converted: `mirage models convert --layout spatia "
                      "--base wan2.2-ti2v-5b --vace step-8500.safetensors --lora lora_weights_10000.safetensors -o OUT` "
                      "(files from the Hub repo Jinjing713/Spatia)",
        references="matching", first_chunk_frames=121, overlap_frames=9, pad_full=True, pixel_history=True,
        conditionings=("rgb", "latent"), render_conditionings=("rgb",), experimental_conditionings=("latent",),
        lora_from_chunk=1),
}
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)
DEFAULT_BACKEND = BACKEND_NAMES[0]  # the one that needs no weights


def backend_spec(name: str) -> BackendSpec:
    """The spec of ``--backend name``; a one-line MirageError for an unknown name."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise MirageError(f"--backend: unknown backend '{name}' (choose {', '.join(BACKEND_NAMES)})") from None


def backend_help() -> str:
    """The ``--backend`` help text, from the registry (one place)."""
    return ", ".join(f"{s.name} ({s.summary})" for s in BACKENDS.values()) + "."
