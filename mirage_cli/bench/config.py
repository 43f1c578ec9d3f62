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
DENOISERS = ("none", "tiny", "wan2.1-1.3b", "mirage", "mirage-tiny")
COMPARES = ("pointcloud",)
POLICIES = ("new", "replace", "average", "append")
FIDELITY = ("auto", "on", "off")
WRITE_DEPTH = ("auto", "exact", "filled")


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
        if (self.frames - 1) % self.laps:
            raise MirageError(f"--frames {self.frames}: frames - 1 must be divisible by --laps {self.laps} "
                              f"(each lap has the same frames, sharing its first frame with the previous lap's last)")

    @property
    def frames_per_lap(self) -> int:
        """Frames of one lap, both ends included."""
        return (self.frames - 1) // self.laps + 1
