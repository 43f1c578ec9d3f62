"""Options of ``mirage bench --compare`` (:class:`BenchConfig`) and their validation.

The CLI fills a :class:`BenchConfig`; a bad value raises a one-line :class:`MirageError` at
construction, before anything is loaded. Checks that need the codec (frame size multiples) or the
scene (``--depth``, ``--fidelity on``) happen where those are known (``scene.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MirageError

BENCH_FORMAT = "mirage.bench"
CODECS = ("tiny", "pixel", "wan2.1-vae", "wan2.2-vae")
DENOISERS = ("none", "tiny", "wan2.1-1.3b", "mirage", "mirage-tiny", "spatia")
TWO_ENGINES = ("spatia",)
"""``--denoiser`` values that load a model (``--model``) bringing its own VAE, and run one engine per arm
(the point-cloud arm conditioned on the rendered RGB cloud, the latent arm on the memory read)."""
SPATIA_SPACE = (48, 16)  # the Wan2.2 VAE of Spatia's base (Wan2.2-TI2V-5B)
COMPARES = ("pointcloud",)
POLICIES = ("new", "replace", "average", "append")
FIDELITY = ("auto", "on", "off")
WRITE_DEPTH = ("auto", "exact", "filled")
LATENT_SPACE = {"tiny": (16, 8), "pixel": (3, 1), "wan2.1-vae": (16, 8), "wan2.2-vae": (48, 16)}
"""``(channels, spatial factor)`` of each ``--codec``, known before any codec is built (checked against
the built codecs in the tests), so that option errors come before the seconds a Wan VAE takes to make."""


def denoiser_problem(denoiser: str, codec: str, space: tuple[int, int] | None) -> str | None:
    """Why ``--denoiser`` cannot run on ``--codec`` (``space`` = its ``(channels, factor)``; None for a
    codec without Wan latents), or None when it can. ``codec`` is the name the user gave."""
    if denoiser == "none" or denoiser in TWO_ENGINES:  # the model brings its VAE
        return None
    if space is None:
        return f"--denoiser {denoiser} needs a Wan VAE codec (tiny, wan2.1-vae or wan2.2-vae), not --codec {codec}"
    C, f = space
    if denoiser.startswith("mirage") and space != (48, 16):
        return (f"--denoiser {denoiser} needs the Wan2.2 latent space (48 channels, 16x); --codec {codec} "
                f"gives {C} channels at {f}x (use --codec wan2.2-vae)")
    if denoiser == "wan2.1-1.3b" and space != (16, 8):
        return (f"--denoiser {denoiser} needs the Wan2.1 latent space (16 channels, 8x); --codec {codec} "
                f"gives {C} channels at {f}x (use --codec wan2.1-vae or tiny)")
    return None


def _choose(option: str, value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise MirageError(f"{option}: unknown {what} '{value}' (choose {', '.join(choices)})")


@dataclass(frozen=True)
class BenchConfig:
    """Every option of ``mirage bench --compare`` (the JSON report stores it under ``config``).

    Sizes are pixels; ``frames`` counts every frame of all ``laps`` (laps share their end frames).
    """

    compare: str = "pointcloud"
    scene: str = "synthetic"  # "synthetic" or an image path
    depth: str | None = None  # depth file for an image scene (default: its sidecar)
    traj: str | None = None  # FILE | PRESET [default orbit_360]
    frames: int = 25
    laps: int = 1
    chunk_frames: int = 9
    codec: str = "tiny"
    height: int = 240
    width: int = 416
    denoiser: str = "none"
    steps: int = 4
    write_policy: str = "new"
    device: str = "auto"
    fidelity: str = "auto"  # auto | on | off
    write_depth: str = "auto"  # auto | exact | filled
    seed: int = 0
    model: str | None = None  # --denoiser spatia: the converted model folder (or a Hub id / registry name)

    def __post_init__(self) -> None:
        _choose("--compare", self.compare, COMPARES, "baseline")
        _choose("--codec", self.codec, CODECS, "codec")
        _choose("--denoiser", self.denoiser, DENOISERS, "denoiser")
        _choose("--write-policy", self.write_policy, POLICIES, "policy")
        if self.fidelity not in FIDELITY:
            raise MirageError(f"--fidelity: must be auto, on or off (got '{self.fidelity}')")
        if self.write_depth not in WRITE_DEPTH:
            raise MirageError(f"--write-depth: must be auto, exact or filled (got '{self.write_depth}')")
        if self.chunk_frames < 2:
            raise MirageError(f"--chunk-frames must be >= 2 (got {self.chunk_frames})")
        if self.denoiser != "none" and self.steps < 1:
            raise MirageError(f"--steps must be >= 1 (got {self.steps})")
        if self.frames < 2:
            raise MirageError(f"--frames must be >= 2 (got {self.frames})")
        if self.laps < 1:
            raise MirageError(f"--laps must be >= 1 (got {self.laps})")
        if self.two_engines and not self.model:
            raise MirageError(f"--denoiser {self.denoiser} needs --model: a folder written by `mirage models convert "
                              f"--layout spatia` (a tiny one: `mirage models tiny DIR --kind spatia`, then convert it)")
        if self.model and not self.two_engines:
            raise MirageError(f"--model applies to --denoiser {' or '.join(TWO_ENGINES)} only (the other denoisers are built in)")
        if self.two_engines and self.fidelity == "on":
            raise MirageError(f"--fidelity on compares a shared chunk's reads with the true render; with --denoiser "
                              f"{self.denoiser} each arm makes its own chunks (use --fidelity off)")
        problem = denoiser_problem(self.denoiser, self.codec, None if self.codec == "pixel" else LATENT_SPACE[self.codec])
        if problem:
            raise MirageError(problem)
        multiple = self.size_multiple
        if self.height < multiple or self.width < multiple or self.height % multiple or self.width % multiple:
            denoiser = f" with --denoiser {self.denoiser}" if self.denoiser != "none" else ""
            codec = "" if self.two_engines else f" --codec {self.codec}"
            raise MirageError(f"--height/--width {self.height}x{self.width}: must be positive multiples of {multiple} "
                              f"for{codec}{denoiser}")
        synthetic = self.scene == "synthetic"
        if synthetic and self.depth:
            raise MirageError("--depth only applies to an image --scene (the synthetic scene has exact depth)")
        if self.fidelity == "on" and not synthetic:
            raise MirageError("--fidelity on needs the synthetic scene (ground-truth renders)")
        if self.write_depth == "exact" and not synthetic:
            raise MirageError("--write-depth exact needs the synthetic scene (an image scene has no true depth for new views)")
        if (self.frames - 1) % self.laps:
            raise MirageError(f"--frames {self.frames}: frames - 1 must be divisible by --laps {self.laps} "
                              f"(each lap has the same frames, sharing its first frame with the previous lap's last)")

    @property
    def two_engines(self) -> bool:
        """``--denoiser spatia``: one engine per arm (see :data:`TWO_ENGINES`)."""
        return self.denoiser in TWO_ENGINES

    @property
    def size_multiple(self) -> int:
        """Frame sizes must be multiples of this: the codec's spatial factor (x2 for the transformer's
        patches); with two engines, the model's VAE's."""
        factor = SPATIA_SPACE[1] if self.two_engines else LATENT_SPACE[self.codec][1]
        return factor * (2 if self.denoiser != "none" else 1)

    @property
    def frames_per_lap(self) -> int:
        """Frames of one lap, both ends included."""
        return (self.frames - 1) // self.laps + 1
