"""Typed run records: ``run.json`` (:class:`RunRecord`) and the per-chunk records (:class:`ChunkRecord`).

Every record is a dataclass of JSON values (str, int, float, bool, None, lists, dicts, nested
records). ``to_json`` gives the dict written to disk (optional fields that are unset are left
out); ``from_json`` rebuilds the record and checks every field's presence and type, so a
hand-edited or truncated ``run.json`` (or a dump's chunk records) fails ``--resume`` with one line
naming the file and the field instead of a traceback later in the loop.
"""

from __future__ import annotations

import json
import platform
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import MirageError
from .config import GenerateConfig

RUN_FORMAT = "mirage.run"
STAGES = ("read", "denoise", "decode", "write", "dump")  # the timed stages of a chunk, in order


# ------------------------------------------------------------------------------------ records
@dataclass
class ChunkRecord:
    """One finished chunk: what it read, wrote and cost. ``frames``: first and last trajectory frame
    (inclusive); ``references``: trajectory frames of the reference latents; ``seconds``: per stage;
    ``known_frames``/``known_per_frame``: the trajectory frame of each written latent frame and the
    fraction of its cells the memory read covered (absent in records of older runs)."""

    index: int
    frames: list[int]
    latent_frames: int
    known_fraction: float
    references: list[int]
    points_added: int
    memory_points: int
    memory_bytes: int
    seconds: dict[str, float]
    known_frames: list[int] = field(default_factory=list)
    known_per_frame: list[float] = field(default_factory=list)


@dataclass
class CodecInfo:
    name: str
    channels: int
    spatial_factor: int
    temporal_factor: int


@dataclass
class ImageInfo:
    path: str
    sha256: str
    width: int
    height: int


@dataclass
class DepthInfo:
    source: str  # sidecar:PATH | file:PATH | model:NAME:KIND | prior
    reference_depth: float  # median input depth: the unit of relative trajectories


@dataclass
class TrajectoryInfo:
    source: str
    format: str
    frames: int
    fps: float
    scale: str
    saved: str  # the run's own copy (trajectory.json), which --resume reads
    look_at_depth: float | None = None  # a preset by name: its look-at depth (reference depths) as placed


@dataclass
class PlannedChunk:
    index: int
    frames: list[int]  # first and last trajectory frame, inclusive
    padded_length: int


@dataclass
class Totals:
    frames: int
    seconds: dict[str, float]
    wall_seconds: float
    finalize_seconds: float
    memory_points: int
    memory_bytes: int


@dataclass
class Outputs:
    video: str
    chunks: list[str]
    cache: list[str]
    run: str


@dataclass
class RunRecord:
    """``run.json``: how a run was made, how far it got, what it cost and wrote."""

    format: str
    mirage_version: str
    versions: dict
    status: str  # running | interrupted | failed | done
    started_at: str
    command: str
    config: GenerateConfig
    backend: dict
    codec: CodecInfo
    model: str | None
    seed: int
    device: str
    dtype: str
    image: ImageInfo
    depth: DepthInfo
    trajectory: TrajectoryInfo
    latent_grid: list[int]
    chunk_plan: list[PlannedChunk]
    chunks: list[ChunkRecord] = field(default_factory=list)
    threads: int | None = None  # torch intra-op threads of the (last) process that ran it (--threads)
    coverage: list[float] | None = None  # --dry-run: known fraction of each frame's memory read
    frame0_psnr_db: float | None = None  # frame 0 of the video against the input image (neural backends)
    resumed_at: list[str] | None = None
    error: str | None = None
    finished_at: str | None = None
    totals: Totals | None = None
    outputs: Outputs | None = None
    reference_selection: dict | None = None  # mirage backend: voxel-IoU parameters actually used

    def to_json(self) -> dict:
        """The dict written to run.json; optional fields that are unset are left out."""
        data = asdict(self)
        return {k: v for k, v in data.items() if v is not None or k not in _OPTIONAL_RUN_FIELDS}

    @classmethod
    def from_json(cls, data, source: Path | str) -> RunRecord:
        """Validate and rebuild a run.json dict; ``source`` names the file in error messages."""
        rec = _build(cls, data, source, "")
        if rec.format != RUN_FORMAT:
            raise MirageError(f"{source}: field 'format' must be '{RUN_FORMAT}' (got '{rec.format}'); not a mirage run record")
        return rec

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """Load and validate ``path``: one-line MirageError on unreadable, truncated or invalid JSON."""
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise MirageError(f"{path}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg}); "
                              "the run record is damaged") from e
        except (OSError, UnicodeDecodeError) as e:
            raise MirageError(f"{path}: cannot read the run record ({e})") from e
        return cls.from_json(data, path)


_OPTIONAL_RUN_FIELDS = {f.name for f in fields(RunRecord) if f.default is None}


def chunk_records_to_json(records: list[ChunkRecord]) -> list[dict]:
    return [asdict(r) for r in records]


def chunk_records_from_json(data, source: Path | str, where: str = "run_chunks") -> list[ChunkRecord]:
    """Validate a list of chunk-record dicts (a dump's ``run_chunks``)."""
    return _build(list[ChunkRecord], data, source, where)


# ------------------------------------------------------------------------------------ validation
def _build(hint, value, source, where: str):
    """``value`` (parsed JSON) as type ``hint``, or a MirageError naming ``source`` and the field ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _build(hint, value, source, where)
    if isinstance(hint, type) and is_dataclass(hint):  # the class (is_dataclass alone also takes instances)
        if not isinstance(value, dict):
            _bad(source, where, "an object", value)
        hints = typing.get_type_hints(hint)
        kwargs = {}
        for f in fields(hint):
            name = f"{where}.{f.name}" if where else f.name
            if f.name in value:
                kwargs[f.name] = _build(hints[f.name], value[f.name], source, name)
            elif f.default is MISSING and f.default_factory is MISSING:
                raise MirageError(f"{source}: field '{name}' is missing; the run record is incomplete")
        return hint(**kwargs)
    if origin is list:
        if not isinstance(value, list):
            _bad(source, where, "a list", value)
        return [_build(args[0], v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            _bad(source, where, "an object", value)
        return {k: _build(args[1], v, source, f"{where}.{k}") for k, v in value.items()} if args else value
    return _scalar(hint, value, source, where)


def _scalar(hint, value, source, where):
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _bad(source, where, "a number", value)
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        _bad(source, where, "an integer", value)
    if hint is str and not isinstance(value, str):
        _bad(source, where, "a string", value)
    if hint is bool and not isinstance(value, bool):
        _bad(source, where, "true or false", value)
    return value


def _bad(source, where: str, expected: str, value) -> None:
    got = "null" if value is None else type(value).__name__
    raise MirageError(f"{source}: field '{where}' must be {expected} (got {got}: {json.dumps(value)[:40]}); "
                      "the run record was edited or damaged")


# ------------------------------------------------------------------------------------ stamps
def now() -> str:
    """UTC time stamp, seconds precision (ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str | None]:
    """Versions of Python and the libraries that shape the output (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    v: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("diffusers", "transformers"):
        try:
            v[name] = version(name)
        except PackageNotFoundError:  # not installed: not needed by the preview
            v[name] = None
    return v
