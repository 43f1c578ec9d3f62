"""The run directory: where every file of a run lives, and reading/writing them.

Layout of ``OUT/``::

    run.json                         RunRecord (rewritten atomically after every chunk)
    trajectory.json                  the run's own copy of the trajectory (what --resume reads)
    video.mp4                        all frames, streamed chunk by chunk into a temporary, renamed when the run is done
    depth.npy, depth.png             the input depth used (float32 z-depth (H, W) at the output size; colour-mapped)
    coverage.mp4                     --dry-run: what the memory alone sees from each camera, holes magenta
    chunks/chunk_NNN.mp4             each chunk's frames
    chunks/chunk_NNN.latents.safetensors   each chunk's latents (float16), for --resume
    cache/chunk_NNN.safetensors      memory after chunk NNN (--cache-dump chunks)
    cache/checkpoint/                resume checkpoint (--cache-dump none/final): index.json + one entry_NNNNNN.safetensors
                                     per chunk holding only what that chunk changed (memory/checkpoint.py); removed when done
    cache/last.safetensors           the rolling checkpoint of runs made before the checkpoint directory (still resumed)
    cache/final.safetensors          memory at the end (--cache-dump final/chunks)

The checkpoint (and every dump) carries the chunk records in its extras, so the newest one is a
complete resume point on its own.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..dtypes import LATENT_STORE_DTYPE
from ..errors import MirageError
from ..io import atomic_path, save_image, stale_temporaries, write_json
from ..memory.checkpoint import read_extras
from .plan import Chunk
from .records import ChunkRecord, RunRecord, chunk_records_from_json, chunk_records_to_json
from .runlock import RunLock

RUN_SUBDIRS = ("chunks", "cache")  # where a run writes besides its top level


# ------------------------------------------------------------------------------------ identity
def run_status(out: Path) -> str | None:
    """What ``out`` holds: None (missing or empty: free for a new run), ``foreign`` (anything that is
    not a mirage run: never touched) or the earlier run's recorded status (running, interrupted,
    failed, done). A run is recognised by a ``run.json`` that validates as mirage's run format,
    not by the file name."""
    if not out.exists():
        return None
    if not out.is_dir():
        return "foreign"
    if not any(p for p in out.iterdir()):
        return None
    try:
        return RunRecord.read(run_json(out)).status if run_json(out).is_file() else "foreign"
    except MirageError:
        return "foreign"


def _earlier_run_message(out: Path, status: str) -> str:
    """Why a new run refuses ``out``, per status of the earlier run (the lock is ours: nothing runs there)."""
    if status == "foreign":
        why = (f"not a mirage run directory ({run_json(out).name} missing or not a mirage run record)"
               if out.is_dir() else "exists and is not a directory")
        return f"{out}: {why}; refusing to touch it, choose another --out"
    what = {"done": "a complete earlier run",
            "interrupted": "an interrupted earlier run",
            "failed": "an earlier run that failed",
            "running": "an earlier run whose process ended without finishing (killed)"}.get(status, "an earlier run")
    if status == "done":
        hint = ""
    elif resumable(out):
        hint = f", --resume {out} to continue it"
    else:  # stopped before its first dump: --resume would only refuse
        hint = " (it saved no chunk, so there is nothing to resume: start it over)"
    return f"{out}: holds {what}; pass --overwrite to replace it{hint}, or --out for another directory"


# ------------------------------------------------------------------------------------ the directory
class RunDir:
    """A run directory held by this process: its lock, and an ``--overwrite`` in progress.

    ``--overwrite`` renames the old run into the sibling ``.<name>.mirage-trash`` in one step and
    the new run starts in a fresh directory; :meth:`committed` (after the new run's first dump)
    deletes the old run, :meth:`abort` (anything failing before) puts it back intact. A process
    killed in between leaves the trash, which the next ``generate`` or ``--resume`` on the
    directory resolves (:meth:`_recover`). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, out: Path, warn: Callable[[str], None]):
        self.out, self.warn = out, warn
        self.trash = out.parent / f".{out.name}.mirage-trash"
        self.replacing = False  # an old run sits in self.trash until committed()
        self.lock = RunLock(out)

    # -- opening
    @classmethod
    def open_new(cls, out: Path, overwrite: bool, warn: Callable[[str], None]) -> RunDir:
        """Lock ``out`` and make it ready for a new run, never touching anything that is not an
        earlier mirage run (and an earlier run only with ``overwrite``)."""
        rd = cls(out, warn)
        rd.lock.acquire(warn)
        try:
            rd._recover()
            status = run_status(out)
            if status == "foreign" or (status is not None and not overwrite):
                raise MirageError(_earlier_run_message(out, status))
            if status is not None:
                rd._clear_temporaries()
                rd._move(out, rd.trash, "move the earlier run aside")
                rd.replacing = True
            rd._make_dirs()
        except BaseException:
            rd.abort()
            raise
        return rd

    @classmethod
    def open_resume(cls, out: Path, warn: Callable[[str], None]) -> RunDir:
        """Lock the run in ``out`` for ``--resume`` and clear what a killed process left there."""
        rd = cls(out, warn)
        rd.lock.acquire(warn)
        try:
            rd._recover()
            rd._clear_temporaries()
        except BaseException:
            rd.close()
            raise
        return rd

    def _make_dirs(self) -> None:
        try:
            (self.out / "chunks").mkdir(parents=True, exist_ok=True)  # cache/ only once a dump is written
            probe = self.out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise MirageError(f"{self.out}: cannot write the output directory ({e.strerror or e})") from e

    # -- the overwrite transaction
    def committed(self) -> None:
        """The new run has its first dump: the old run can go. A failure to delete it only warns
        (the new run is safe; the leftover is named)."""
        if not self.replacing:
            return
        self.replacing = False
        try:
            shutil.rmtree(self.trash)
        except OSError as e:
            self.warn(f"{self.trash}: could not delete the replaced run ({e.strerror or e}); delete it by hand")

    def abort(self) -> None:
        """The new run failed before its first dump: remove it and put the old run back; release the lock."""
        try:
            if self.replacing:
                if self.out.exists():
                    shutil.rmtree(self.out, ignore_errors=True)
                self._move(self.trash, self.out, "restore the earlier run")
                self.replacing = False
        finally:
            self.close()

    def _recover(self) -> None:
        """Finish an ``--overwrite`` that a killed process left half done (we hold the lock): keep
        the new run if it reached a dump, else put the old one back."""
        if not self.trash.exists():
            return
        new_has_dump = self.out.is_dir() and any((self.out / "cache").glob("*.safetensors"))
        if new_has_dump:
            shutil.rmtree(self.trash, ignore_errors=True)
            return
        if self.out.exists():
            shutil.rmtree(self.out)  # a replacement that never finished a chunk: nothing to keep
        self._move(self.trash, self.out, "restore the earlier run")
        self.warn(f"{self.out}: restored the earlier run that an interrupted --overwrite had moved aside")

    def _move(self, src: Path, dst: Path, what: str) -> None:
        try:
            os.rename(src, dst)
        except OSError as e:
            raise MirageError(f"{src}: cannot {what} ({e.strerror or e}); nothing was deleted") from e

    def _clear_temporaries(self) -> None:
        """Delete what killed atomic writes left in the run (we hold the lock: none is live) and say how much."""
        temps = [p for d in (self.out, *(self.out / s for s in RUN_SUBDIRS)) for p in stale_temporaries(d)]
        if not temps:
            return
        size = sum(p.stat().st_size for p in temps)
        for p in temps:
            p.unlink(missing_ok=True)
        self.warn(f"{self.out}: removed {len(temps)} stale temporary file(s) of a killed run ({size:,} bytes)")

    def close(self) -> None:
        self.lock.release()


# ------------------------------------------------------------------------------------ paths
def run_json(out: Path) -> Path:
    return out / "run.json"


def trajectory_file(out: Path) -> Path:
    return out / "trajectory.json"


def video_file(out: Path) -> Path:
    return out / "video.mp4"


def depth_file(out: Path) -> Path:
    return out / "depth.npy"


def coverage_video(out: Path) -> Path:
    return out / "coverage.mp4"


def save_depth(out: Path, depth: torch.Tensor) -> None:
    """``OUT/depth.npy`` (float32 z-depth ``(H, W)``, scene units) and ``OUT/depth.png`` (turbo colour
    map of inverse depth between its 2nd and 98th percentile: near = red, far = blue), atomically."""
    from matplotlib import colormaps

    d = depth.detach().float().cpu()
    with atomic_path(depth_file(out)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, d.numpy().astype(np.float32))
    inv = torch.where(d > 0, 1.0 / d.clamp(min=1e-6), torch.zeros_like(d))
    lo, hi = torch.quantile(inv.flatten(), torch.tensor([0.02, 0.98], dtype=inv.dtype))
    t = ((inv - lo) / (hi - lo).clamp(min=1e-9)).clamp(0, 1).numpy()
    rgb = torch.from_numpy(colormaps["turbo"](t)[..., :3]).float().permute(2, 0, 1)
    save_image(out / "depth.png", rgb)


def chunk_video(out: Path, index: int) -> Path:
    return out / "chunks" / f"chunk_{index:03d}.mp4"


def chunk_latents(out: Path, index: int) -> Path:
    return out / "chunks" / f"chunk_{index:03d}.latents.safetensors"


def chunk_dump(out: Path, index: int, cache_dump: str) -> Path:
    """The memory dump after chunk ``index``: kept per chunk with ``--cache-dump chunks``, else the
    one rolling checkpoint ``last.safetensors``. ``cache/`` is made on the first dump, so a run that
    keeps none leaves no empty folder (see :func:`drop_empty_cache`)."""
    (out / "cache").mkdir(exist_ok=True)
    return out / "cache" / (f"chunk_{index:03d}.safetensors" if cache_dump == "chunks" else "last.safetensors")


def checkpoint_dir(out: Path) -> Path:
    """The incremental resume checkpoint of a run (``--cache-dump none/final``): after chunk k only what
    chunk k added or changed is written (``memory/checkpoint.py``), so a checkpoint costs O(points added)."""
    return out / "cache" / "checkpoint"


def final_dump(out: Path) -> Path:
    return out / "cache" / "final.safetensors"


def last_dump(out: Path) -> Path:
    return out / "cache" / "last.safetensors"


def drop_empty_cache(out: Path) -> None:
    """``--cache-dump none``: once the rolling checkpoint is gone, ``cache/`` goes too."""
    cache = out / "cache"
    if cache.is_dir() and not any(cache.iterdir()):
        cache.rmdir()


def drop_checkpoint(out: Path) -> None:
    """A finished run's resume checkpoint (the checkpoint directory, or an older run's rolling
    ``last.safetensors``) goes once the run is recorded done."""
    ckpt = checkpoint_dir(out)
    if ckpt.is_dir():  # flat: its entries, its index, perhaps a killed append's temporary
        for p in ckpt.iterdir():
            p.unlink()
        ckpt.rmdir()
    if last_dump(out).exists():
        last_dump(out).unlink()


def drop_chunk_latents(out: Path) -> None:
    """A finished run no longer needs the chunk latents (they exist for --resume): removed unless
    ``--keep-latents``."""
    for p in (out / "chunks").glob("chunk_*.latents.safetensors"):
        p.unlink()


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
    tensors = {"latents": latents.to(LATENT_STORE_DTYPE).cpu().contiguous()}
    if reads is not None:
        tensors["read"] = reads[0].to(LATENT_STORE_DTYPE).cpu().contiguous()
        tensors["known"] = reads[1].bool().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp),
                  metadata={"format": "mirage.chunk-latents", "chunk": str(chunk.index),
                            "frames": json.dumps([chunk.start, chunk.stop - 1])})


def load_latents(path: Path) -> torch.Tensor:
    """A chunk's stored latents ``(T, C, h, w)`` as float32."""
    try:
        return load_file(str(path))["latents"].float()
    except (SafetensorError, OSError, KeyError) as e:
        raise MirageError(f"{path}: cannot read chunk latents ({e}); cannot resume") from e


def load_reads(path: Path, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor] | None:
    """A chunk's stored read ``(read (T, C, h, w) float32, known (T, h, w) bool)``, or None if not stored."""
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
    """The JSON ``extras`` of a memory dump's metadata or of a checkpoint directory's newest entry
    (without loading its tensors)."""
    if path.is_dir():
        try:
            return read_extras(path)
        except MirageError as e:  # a damaged checkpoint is skipped here; loading it says why
            return {"unreadable": str(e)}
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("extras", "{}"))
    except Exception as e:  # a truncated dump from a killed run is skipped, not fatal
        return {"unreadable": str(e)}


def resumable(out: Path) -> bool:
    """Whether ``out`` holds a resume checkpoint: a readable dump with at least one finished chunk."""
    try:
        newest_dump(out)
    except MirageError:
        return False
    return True


def newest_dump(out: Path) -> tuple[Path, list[ChunkRecord]]:
    """The resume point with the most finished chunks -- a per-chunk dump, the checkpoint directory
    or an older run's ``last.safetensors`` (``LatentMemory.load`` reads each) -- and its validated
    chunk records."""
    dumps = sorted((out / "cache").glob("chunk_*.safetensors")) + [p for p in [last_dump(out)] if p.exists()]
    if checkpoint_dir(out).is_dir():
        dumps.append(checkpoint_dir(out))
    best, best_n = None, 0
    for p in dumps:
        n = read_dump_extras(p).get("chunks_done", 0)
        if isinstance(n, int) and n > best_n:
            best, best_n = p, n
    if best is None:
        raise MirageError(f"{out}: no finished chunk to resume from (no cache dump); start the run again with --overwrite")
    return best, chunk_records_from_json(read_dump_extras(best).get("run_chunks"), best)
