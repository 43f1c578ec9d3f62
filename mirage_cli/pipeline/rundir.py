"""The run directory: where every file of a run lives, and reading/writing them.

Layout of ``OUT/``::

    run.json                         RunRecord (rewritten atomically after every chunk)
    trajectory.json                  the run's own copy of the trajectory (what --resume reads)
    video.mp4                        all frames, written when the run is done
    chunks/chunk_NNN.mp4             each chunk's frames
    chunks/chunk_NNN.latents.safetensors   each chunk's latents (float16), for --resume
    cache/chunk_NNN.safetensors      memory after chunk NNN (--cache-dump chunks)
    cache/last.safetensors           rolling checkpoint (--cache-dump none/final), removed when done
    cache/final.safetensors          memory at the end (--cache-dump final/chunks)

The memory dumps carry the chunk records in their metadata (``extras``), so the newest dump is a
complete resume checkpoint on its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import MirageError
from ..io import atomic_path, write_json
from .plan import Chunk
from .records import ChunkRecord, RunRecord, chunk_records_from_json, chunk_records_to_json

LATENT_STORE_DTYPE = torch.float16
RUN_FILES = ("video.mp4", "run.json", "trajectory.json", "chunks", "cache")  # what --overwrite removes


def prepare_out_dir(out: Path, overwrite: bool) -> Path:
    """Make ``out`` ready for a new run, never clobbering anything that is not an earlier mirage run
    (and an earlier run only with ``overwrite``)."""
    if out.exists() and not out.is_dir():
        raise MirageError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not (out / "run.json").exists():
            raise MirageError(f"{out}: not empty and not a mirage run directory (no run.json); "
                              "refusing to write there, choose another --out")
        if not overwrite:
            # a text probe, not RunRecord.read: a damaged run.json must still get this message
            done = '"status": "done"' in (out / "run.json").read_text(errors="replace")
            hint = "" if done else f", --resume {out} to continue it"
            raise MirageError(f"{out}: holds an earlier run; pass --overwrite to replace it{hint}, or --out for another directory")
        for name in RUN_FILES:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    try:
        (out / "chunks").mkdir(parents=True, exist_ok=True)
        (out / "cache").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MirageError(f"{out}: cannot write the output directory ({e.strerror or e})") from e
    return out


# ------------------------------------------------------------------------------------ paths
def run_json(out: Path) -> Path:
    return out / "run.json"


def trajectory_file(out: Path) -> Path:
    return out / "trajectory.json"


def video_file(out: Path) -> Path:
    return out / "video.mp4"


def chunk_video(out: Path, index: int) -> Path:
    return out / "chunks" / f"chunk_{index:03d}.mp4"


def chunk_latents(out: Path, index: int) -> Path:
    return out / "chunks" / f"chunk_{index:03d}.latents.safetensors"


def chunk_dump(out: Path, index: int, cache_dump: str) -> Path:
    """The memory dump after chunk ``index``: kept per chunk with ``--cache-dump chunks``, else the
    one rolling checkpoint ``last.safetensors``."""
    return out / "cache" / (f"chunk_{index:03d}.safetensors" if cache_dump == "chunks" else "last.safetensors")


def final_dump(out: Path) -> Path:
    return out / "cache" / "final.safetensors"


def last_dump(out: Path) -> Path:
    return out / "cache" / "last.safetensors"


def kept_dumps(out: Path) -> list[str]:
    """The dumps a finished run keeps (every one but the rolling checkpoint), sorted."""
    return sorted(str(p) for p in (out / "cache").glob("*.safetensors") if p.name != "last.safetensors")


# ------------------------------------------------------------------------------------ run.json
def write_run(out: Path, record: RunRecord) -> None:
    write_json(run_json(out), record.to_json())


def read_run(out: Path) -> RunRecord:
    """The validated run record of the run in ``out`` (MirageError: missing, damaged, complete)."""
    path = run_json(out)
    if not path.exists():
        raise MirageError(f"{out}: no run.json here; nothing to resume")
    record = RunRecord.read(path)
    if record.status == "done":
        raise MirageError(f"{out}: this run is already complete; nothing to resume")
    return record


# ------------------------------------------------------------------------------------ latents
def save_latents(path: Path, latents: torch.Tensor, chunk: Chunk,
                 reads: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Store a chunk's latents ``(T, C, h, w)`` as float16 (atomically); with ``reads``, also the
    memory read they were made from (``read (T, C, h, w)`` float16, ``known (T, h, w)`` bool), which
    the mirage backend takes back as preceding context -- so --resume needs it."""
    from safetensors.torch import save_file

    tensors = {"latents": latents.to(LATENT_STORE_DTYPE).cpu().contiguous()}
    if reads is not None:
        tensors["read"] = reads[0].to(LATENT_STORE_DTYPE).cpu().contiguous()
        tensors["known"] = reads[1].bool().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp),
                  metadata={"format": "mirage.chunk-latents", "chunk": str(chunk.index), "frames": json.dumps([chunk.start, chunk.stop - 1])})


def load_latents(path: Path) -> torch.Tensor:
    """A chunk's stored latents ``(T, C, h, w)`` as float32."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))["latents"].float()
    except (SafetensorError, OSError, KeyError) as e:
        raise MirageError(f"{path}: cannot read chunk latents ({e}); cannot resume") from e


def load_reads(path: Path, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor] | None:
    """A chunk's stored read ``(read (T, C, h, w) float32, known (T, h, w) bool)``, or None if not stored."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if "read" not in f.keys():
                return None
            return f.get_tensor("read").float().to(device), f.get_tensor("known").bool().to(device)
    except (SafetensorError, OSError) as e:
        raise MirageError(f"{path}: cannot read the chunk's stored memory read ({e}); cannot resume") from e


# ------------------------------------------------------------------------------------ dumps
def dump_extras(records: list[ChunkRecord], image_hash: str, reference_depth: float, size: tuple[int, int]) -> dict:
    """Metadata of every dump: what `mirage cache render` needs to scale relative trajectories and
    size its frames (``size`` = (width, height)), plus the chunk records that make the dump a
    resume checkpoint."""
    return {"image_sha256": image_hash, "run_chunks": chunk_records_to_json(records), "chunks_done": len(records),
            "reference_depth": reference_depth, "width": size[0], "height": size[1]}


def read_dump_extras(path: Path) -> dict:
    """The JSON ``extras`` of a memory dump's metadata (without loading its tensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("extras", "{}"))
    except Exception as e:  # a truncated dump from a killed run is skipped, not fatal
        return {"unreadable": str(e)}


def newest_dump(out: Path) -> tuple[Path, list[ChunkRecord]]:
    """The dump with the most finished chunks and its validated chunk records."""
    dumps = sorted((out / "cache").glob("chunk_*.safetensors")) + [p for p in [last_dump(out)] if p.exists()]
    best, best_n = None, 0
    for p in dumps:
        n = read_dump_extras(p).get("chunks_done", 0)
        if isinstance(n, int) and n > best_n:
            best, best_n = p, n
    if best is None:
        raise MirageError(f"{out}: no finished chunk to resume from (no cache dump); start the run again with --overwrite")
    return best, chunk_records_from_json(read_dump_extras(best).get("run_chunks"), best)
