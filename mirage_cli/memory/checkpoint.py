"""Incremental memory checkpoints: a directory that grows with what each chunk changed, not with the memory.

Saving the whole memory after every chunk (:meth:`~.latent.LatentMemory.save`) costs O(N) per chunk
and grows over a run. A checkpoint directory instead holds a chain of *entries*, one safetensors
file each, and ``index.json`` listing them:

- The first entry of a chain is **full**: exactly the single-file cache format of :mod:`.storage`
  (``format = "mirage.latent-memory"``).
- Each later entry is a **delta** (``format = "mirage.latent-memory-delta"``, version 1) against the
  state the previous entry left (``base_points`` rows, ``base_observations`` observations): tensors
  ``dropped (D,) int64`` (ascending rows of that state removed: policy ``replace``), ``changed (M,) int64``
  (ascending rows of that state, not dropped, whose features changed: policy ``average``) with
  ``changed_features (M, C)``, the rows added since, ``points``/``features``/``footprint``/``axes``/``chunk``
  as in a cache (``K`` rows, possibly 0), and the observations added since (``observed_*``, as in a
  cache). Its metadata is the cache's (codec, channels, ..., ``extras``, ``points`` = rows *after* it) plus
  ``base_points`` and ``base_observations``. Replaying it: drop, set the changed features, append.
- ``index.json`` (``format = "mirage.latent-memory-checkpoint"``, version 1) is written last, atomically
  and fsynced: it is the commit point. It lists the chain's entries (``file``, ``kind``, ``points``,
  ``bytes``, ``sha256`` of the file, ``chain`` = sha256 of the previous entry's chain and this file's
  sha256, ``dead_bytes``), the memory settings of the chain, the newest entry's ``extras`` and ``next``,
  the number of the next entry file (``entry_{next:06d}.safetensors``). A file the index does not list
  (a process killed mid-append leaves one) is ignored and overwritten by the next append.

What an append writes: the memory records what changed since the previous append
(:meth:`~.latent.LatentMemory.mark` / :meth:`~.latent.LatentMemory.changes_since`, keyed by the newest
entry's ``chain`` hash). It writes a **full** entry instead of a delta, restarting the chain (and
removing the files of the old one after the index commit), when that record is missing (the memory was
not the one appended last, or not loaded from this checkpoint), when the memory's settings changed,
when the delta would be as large as the whole memory, or when the chain's dead bytes (rows dropped and
features overwritten since the chain's start, which a replay reads for nothing) would exceed the
memory's bytes: so a replay reads at most about twice the memory, and a full entry's cost is paid for by
the deltas before it (amortised O(change) per append). Policies ``new`` and ``append`` only add rows:
their chains never compact. :meth:`MemoryCheckpoint.append` with ``full=True`` compacts on demand.

Loading (:func:`read_checkpoint`, used by :meth:`~.latent.LatentMemory.load` for a directory) checks
each listed file's size and sha256, validates each entry (a full one as a cache file, a delta's indices,
shapes, dtypes and values), replays the chain and validates the result as a cache file would be: the
memory is bit-identical to the one appended (every tensor; observation grids padded as a file pads
them). Errors are one line naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import MirageError
from ..io import atomic_path, file_sha256
from .storage import (
    FEATURE_DTYPES,
    LATENT_TENSORS,
    OBSERVATION_TENSORS,
    LatentCache,
    check_header,
    check_observations,
    check_rows,
    check_tensor,
    latent_cache,
    observation_tensors,
    parse_int,
    parse_json,
    read_metadata,
    read_safetensors,
    write_safetensors,
)
from .storage import FORMAT as CACHE_FORMAT
from .storage import VERSION as CACHE_VERSION

if TYPE_CHECKING:  # latent.py imports this module (its load reads checkpoint directories)
    from .latent import LatentMemory, MemoryChanges

INDEX = "index.json"
INDEX_FORMAT = "mirage.latent-memory-checkpoint"
DELTA_FORMAT = "mirage.latent-memory-delta"
VERSION = 1
FULL, DELTA = "full", "delta"
ENTRY_NAME = re.compile(r"entry_\d{6}\.safetensors")
DELTA_TENSORS = ("dropped", "changed", "changed_features")
# the memory settings a chain shares (a change of any of them starts a new chain)
SETTINGS = ("codec", "channels", "spatial_factor", "feature_dtype", "write_policy", "splat", "image_hash", "convention")


def entry_name(number: int) -> str:
    return f"entry_{number:06d}.safetensors"


@dataclass(frozen=True)
class CheckpointEntry:
    """One committed entry of the index: its ``file`` (name in the directory), ``kind`` (``"full"`` or
    ``"delta"``), ``points`` (rows after it), ``bytes`` and ``sha256`` of the file, ``chain`` (sha256 of
    the previous entry's chain + this file's sha256: names the memory state after it) and ``dead_bytes``
    (the chain's rows dropped and features overwritten so far, in bytes). The entry's extras are in its
    file's metadata (:func:`entry_extras`)."""

    file: str
    kind: str
    points: int
    bytes: int
    sha256: str
    chain: str
    dead_bytes: int


# ------------------------------------------------------------------------------ index
def _index_error(path: Path, problem: str) -> MirageError:
    return MirageError(f"{path}: {problem}")


def _entry(path: Path, k: int, raw) -> CheckpointEntry:
    fields = {"file": str, "kind": str, "points": int, "bytes": int, "sha256": str, "chain": str, "dead_bytes": int}
    if not isinstance(raw, dict):
        raise _index_error(path, f"entry {k} is not a JSON object")
    for name, typ in fields.items():
        if not isinstance(raw.get(name), typ) or (typ is int and isinstance(raw[name], bool)):
            raise _index_error(path, f"entry {k}: field {name!r} is missing or not a {typ.__name__}")
    e = CheckpointEntry(**{name: raw[name] for name in fields})
    if not ENTRY_NAME.fullmatch(e.file):
        raise _index_error(path, f"entry {k}: file {e.file!r} is not an entry file name (entry_NNNNNN.safetensors)")
    if e.kind != (FULL if k == 0 else DELTA):
        raise _index_error(path, f"entry {k}: kind {e.kind!r}, expected {FULL if k == 0 else DELTA!r} "
                                 "(a chain is one full entry and then deltas)")
    return e


@dataclass(frozen=True)
class _Index:
    """The index: the chain's entries, the next entry file number, the chain's memory settings and the
    newest entry's extras (also in that entry's file: here so that they read without a tensor file)."""

    entries: tuple[CheckpointEntry, ...] = ()
    next: int = 0
    settings: dict | None = None
    extras: dict = field(default_factory=dict)

    def write(self, path: Path) -> None:
        data = {"format": INDEX_FORMAT, "version": VERSION, "next": self.next, "settings": self.settings,
                "extras": self.extras, "entries": [vars(e) for e in self.entries]}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, separators=(",", ":")) + "\n")


def _read_index(directory: Path) -> _Index:
    path = directory / INDEX
    if not path.is_file():
        raise MirageError(f"{directory}: not a memory checkpoint (no {INDEX})")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _index_error(path, f"not a readable JSON index ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict) or raw.get("format") != INDEX_FORMAT:
        raise _index_error(path, f"not a memory checkpoint index (expected format {INDEX_FORMAT!r})")
    if raw.get("version") != VERSION:
        raise _index_error(path, f"checkpoint version {raw.get('version')!r} is not supported "
                                 f"(this mirage reads version {VERSION})")
    entries = raw.get("entries")
    if not isinstance(entries, list) or not entries:
        raise _index_error(path, "lists no entries")
    nxt, settings, extras = raw.get("next"), raw.get("settings"), raw.get("extras")
    if not isinstance(nxt, int) or isinstance(nxt, bool) or not isinstance(settings, dict) or not isinstance(extras, dict):
        raise _index_error(path, "field 'next', 'settings' or 'extras' is missing or of the wrong type")
    out = tuple(_entry(path, k, e) for k, e in enumerate(entries))
    if any(int(e.file[6:12]) >= nxt for e in out):
        raise _index_error(path, f"an entry file is numbered at or after 'next' = {nxt}")
    return _Index(out, nxt, settings, extras)


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a checkpoint index (not validated)."""
    return (Path(path) / INDEX).is_file()


def read_extras(directory: str | os.PathLike) -> dict:
    """The extras of a checkpoint's newest entry, from its index alone (no tensor read).

    Raises:
        MirageError: no index, or an index that does not validate.
    """
    return _read_index(Path(directory)).extras


def entry_extras(directory: str | os.PathLike, entry: CheckpointEntry) -> dict:
    """The extras of one entry of the chain (from its file's metadata, no tensor read)."""
    path = Path(directory) / entry.file
    return parse_json(path, read_metadata(path), "extras")


def _chain(previous: str, sha: str) -> str:
    return hashlib.sha256(f"{previous}:{sha}".encode()).hexdigest()


# ------------------------------------------------------------------------------ writing
def _settings(meta: dict[str, str]) -> dict[str, str]:
    return {k: meta[k] for k in SETTINGS}


class MemoryCheckpoint:
    """An incremental checkpoint directory (see the module docstring for the layout).

    ``MemoryCheckpoint(directory)`` opens it (reading and validating its index if there is one; it
    creates nothing until the first :meth:`append`). Load it with
    :meth:`LatentMemory.load(directory) <mirage_cli.memory.latent.LatentMemory.load>`: the loaded memory is
    marked so that the next append to this directory is incremental again.

    Raises:
        MirageError: the index exists and does not validate.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._index = _read_index(self.directory) if (self.directory / INDEX).exists() else _Index()

    @property
    def entries(self) -> tuple[CheckpointEntry, ...]:
        """The committed entries of the chain, oldest first."""
        return self._index.entries

    def __len__(self) -> int:
        return len(self._index.entries)

    @property
    def extras(self) -> dict:
        """The newest entry's extras (``{}`` when there is none)."""
        return self._index.extras

    def append(self, memory: LatentMemory, extras: dict | None = None, full: bool = False) -> int:
        """Commit the memory's current state as a new entry: a delta of what changed since the previous
        append (or since :meth:`LatentMemory.load` of this directory), or a full entry (see the module
        docstring for when; ``full=True`` always: compaction). ``extras`` (JSON) are merged over
        ``memory.extras`` and kept in the entry file's metadata, as :meth:`~.latent.LatentMemory.save`
        keeps them in a file (and the newest entry's in the index). The entry file is written atomically
        and fsynced, then the index (the commit point); then the memory is marked
        (:meth:`~.latent.LatentMemory.mark`) with the new entry's chain hash.

        Returns:
            the bytes of the entry file written.
        Raises:
            MirageError: extras that are not JSON, or a write that fails (the checkpoint is left as it was).
        """
        try:
            meta = memory.metadata(extras)
        except (TypeError, ValueError) as e:
            raise MirageError(f"{self.directory}: extras are not JSON-serialisable ({e})") from None
        idx = self._index
        last = idx.entries[-1] if idx.entries else None
        changes = memory.changes_since(last.chain) if last is not None else None
        tensors, kind, dead = None, FULL, 0
        if last is not None and changes is not None and not full and _settings(meta) == idx.settings:
            tensors, meta_delta, dead = _delta(memory, changes, meta)
            live = memory.nbytes()
            if sum(t.numel() * t.element_size() for t in tensors.values()) >= live or last.dead_bytes + dead > live:
                tensors = None  # no smaller than the memory, or the chain is more dead than alive: compact
            else:
                kind, meta, dead = DELTA, meta_delta, last.dead_bytes + dead
        if tensors is None:
            tensors = memory.cache_tensors()
        name = entry_name(idx.next)
        path = self.directory / name
        write_safetensors(path, tensors, meta)
        sha = file_sha256(path)
        previous = last.chain if last is not None and kind == DELTA else ""
        entry = CheckpointEntry(name, kind, len(memory), path.stat().st_size, sha, _chain(previous, sha), dead)
        chain = idx.entries + (entry,) if kind == DELTA else (entry,)
        new = _Index(chain, idx.next + 1, _settings(meta), json.loads(meta["extras"]))
        new.write(self.directory / INDEX)  # the commit point
        self._index = new
        memory.mark(entry.chain)
        if kind == FULL and idx.entries:
            self._remove_unlisted()
        return entry.bytes

    def _remove_unlisted(self) -> None:
        """Remove the entry files the index does not list (an earlier chain, a killed append's file)."""
        listed = {e.file for e in self._index.entries}
        for p in self.directory.glob("entry_*.safetensors"):
            if p.name not in listed:
                try:
                    p.unlink()
                except OSError:
                    pass  # left behind: ignored by every reader, removed by the next compaction


def _delta(memory: LatentMemory, changes: MemoryChanges,
           meta: dict[str, str]) -> tuple[dict[str, torch.Tensor], dict[str, str], int]:
    """The tensors and metadata of a delta entry, and the bytes it makes dead (dropped rows, overwritten features)."""
    tensors = {k: getattr(memory, k)[changes.first_new :] for k in LATENT_TENSORS}
    feature_bytes = memory.channels * torch.empty(0, dtype=memory.feature_dtype).element_size()
    row_bytes = 12 + feature_bytes + 4 + 12 + 4  # points, features, footprint, axes, chunk
    if changes.dropped.numel():
        tensors["dropped"] = changes.dropped
    if changes.changed.numel():
        # a changed row's index in the marked state -> its index now (rows before it that were dropped)
        now = changes.changed - torch.searchsorted(changes.dropped, changes.changed)
        tensors["changed"] = changes.changed
        tensors["changed_features"] = memory.features[now.to(memory.features.device)]
    tensors.update(observation_tensors(memory.observations[changes.base_observations :]))
    out = dict(meta, format=DELTA_FORMAT, version=str(VERSION), base_points=str(changes.base_rows),
               base_observations=str(changes.base_observations))
    dead = int(changes.dropped.numel()) * row_bytes + int(changes.changed.numel()) * feature_bytes
    return tensors, out, dead


# ------------------------------------------------------------------------------ reading
def _entry_file(directory: Path, e: CheckpointEntry) -> Path:
    path = directory / e.file
    if not path.is_file():
        raise MirageError(f"{path}: checkpoint entry file not found (listed in {directory / INDEX})")
    size = path.stat().st_size
    if size != e.bytes:
        raise MirageError(f"{path}: {size} bytes, the index says {e.bytes} - truncated or overwritten?")
    if file_sha256(path) != e.sha256:
        raise MirageError(f"{path}: sha256 differs from the index's - corrupt or overwritten?")
    return path


def _indices(path: Path, tensors: dict, name: str, below: int) -> torch.Tensor:
    t = check_tensor(path, name, tensors, (None,), (torch.int64,))
    if t.numel() and (int(t[0]) < 0 or int(t[-1]) >= below or not bool((t[1:] > t[:-1]).all())):
        raise MirageError(f"{path}: tensor {name!r} must hold ascending distinct rows in [0, {below})")
    return t


class _Replay:
    """The memory state a chain replay builds: per-point tensors (appends gathered, concatenated when
    a drop or a feature change needs them), observations."""

    def __init__(self, cache: LatentCache) -> None:
        self.rows = [dict(cache.tensors)]
        self.observations = list(cache.observations)

    def tensors(self) -> dict[str, torch.Tensor]:
        if len(self.rows) > 1:
            self.rows = [{k: torch.cat([r[k] for r in self.rows]) for k in LATENT_TENSORS}]
        return self.rows[0]

    def __len__(self) -> int:
        return sum(r["points"].shape[0] for r in self.rows)

    def apply(self, path: Path, tensors: dict, meta: dict, settings: dict) -> None:
        check_header(path, meta, DELTA_FORMAT)
        for k in SETTINGS:
            if meta.get(k) != settings.get(k):
                raise MirageError(f"{path}: metadata field {k!r} = {meta.get(k)!r} differs from the chain's "
                                  f"{settings.get(k)!r}")
        base = parse_int(path, meta, "base_points")
        if base != len(self):
            raise MirageError(f"{path}: delta against {base} points, but the entries before it leave {len(self)}")
        if parse_int(path, meta, "base_observations") != len(self.observations):
            raise MirageError(f"{path}: delta against {meta['base_observations']} observations, "
                              f"but the entries before it leave {len(self.observations)}")
        channels = int(settings["channels"])
        unknown = sorted(set(tensors) - set(LATENT_TENSORS) - set(OBSERVATION_TENSORS) - set(DELTA_TENSORS))
        if unknown:
            raise MirageError(f"{path}: unexpected tensors {', '.join(unknown)} for delta version {VERSION}")
        empty = torch.zeros(0, dtype=torch.int64)
        dropped = _indices(path, tensors, "dropped", base) if "dropped" in tensors else empty
        changed = _indices(path, tensors, "changed", base) if "changed" in tensors else empty
        if ("changed" in tensors) != ("changed_features" in tensors):
            raise MirageError(f"{path}: tensors 'changed' and 'changed_features' come together")
        rows = {k: v for k, v in tensors.items() if k not in DELTA_TENSORS}
        new = check_rows(path, rows, {}, channels)
        dtype = FEATURE_DTYPES[settings["feature_dtype"]]
        if new["features"].dtype != dtype:
            raise MirageError(f"{path}: tensor 'features' has dtype {new['features'].dtype}, the chain's is {dtype}")
        if changed.numel():
            feats = check_tensor(path, "changed_features", tensors, (changed.numel(), channels), (dtype,))
            if not torch.isfinite(feats.float()).all():
                raise MirageError(f"{path}: tensor 'changed_features' contains NaN or inf")
            if bool(torch.isin(changed, dropped).any()):
                raise MirageError(f"{path}: tensor 'changed' names rows that 'dropped' removes")
        points = parse_int(path, meta, "points")
        if points != base - dropped.numel() + new["points"].shape[0]:
            raise MirageError(f"{path}: metadata says {points} points, the delta leaves "
                              f"{base - dropped.numel() + new['points'].shape[0]}")
        if dropped.numel() or changed.numel():
            state = self.tensors()
            if changed.numel():
                state["features"] = state["features"].clone()
                state["features"][changed] = feats
            if dropped.numel():
                keep = torch.ones(base, dtype=torch.bool)
                keep[dropped] = False
                state = {k: v[keep] for k, v in state.items()}
            self.rows = [state]
        self.rows.append(new)
        self.observations += check_observations(path, tensors)


def read_checkpoint(directory: str | os.PathLike) -> tuple[LatentCache, str]:
    """Replay and validate a checkpoint directory: the cache it holds (as :func:`.storage.read_latent_cache`
    returns a file's) and the newest entry's chain hash (the token to mark the loaded memory with).

    Raises:
        MirageError: one line naming the file (index or entry) and the problem.
    """
    directory = Path(directory)
    idx = _read_index(directory)
    settings = idx.settings or {}
    path = _entry_file(directory, idx.entries[0])
    tensors, meta = read_safetensors(path)
    if _settings_of(path, meta) != settings:
        raise MirageError(f"{directory / INDEX}: the chain's settings differ from its first entry's ({path.name})")
    state, chain = _Replay(latent_cache(path, tensors, meta)), ""
    for k, e in enumerate(idx.entries):
        if k:
            path = _entry_file(directory, e)
            tensors, meta = read_safetensors(path)
            state.apply(path, tensors, meta, settings)
        chain = _chain(chain, e.sha256)
        if e.chain != chain:
            raise MirageError(f"{directory / INDEX}: entry {e.file}: chain hash does not match the entries up to it")
        if len(state) != e.points:
            raise MirageError(f"{directory / INDEX}: says {e.points} points after {e.file}, the entries hold {len(state)}")
    if parse_json(path, meta, "extras") != idx.extras:
        raise MirageError(f"{directory / INDEX}: extras differ from the newest entry's ({path.name})")
    meta = dict(meta, format=CACHE_FORMAT, version=str(CACHE_VERSION))
    for name in ("base_points", "base_observations"):
        meta.pop(name, None)
    whole = {**state.tensors(), **observation_tensors(state.observations)}
    return latent_cache(directory, whole, meta), chain


def _settings_of(path: Path, meta: dict[str, str]) -> dict[str, str]:
    missing = [k for k in SETTINGS if k not in meta]
    if missing:
        raise MirageError(f"{path}: metadata field {missing[0]!r} is missing")
    return _settings(meta)


# ------------------------------------------------------------------------------ inspection
def cache_files(path: str | os.PathLike) -> list[Path]:
    """The files a cache consists of: a cache file itself, or a checkpoint's index and listed entries
    (newest last)."""
    p = Path(path)
    if not p.is_dir():
        return [p]
    return [p / INDEX] + [p / e.file for e in _read_index(p).entries]


def cache_summary(path: str | os.PathLike, memory) -> dict:
    """Everything ``mirage cache inspect`` shows: ``memory`` (the cache file or checkpoint directory
    ``path`` loaded with ``LatentMemory.load``) stats plus the file's (the newest entry's) metadata.

    Keys: ``file``, ``file_bytes``, ``format``, ``version``, ``created_by``, ``codec``, ``channels``,
    ``spatial_factor``, ``dtype``, ``points``, ``bytes``, ``bytes_per_point``, ``write_policy``, ``splat``,
    ``observations`` (observed views whose free space writes keep free), ``image_hash``, ``bounds``, ``footprint``,
    ``chunks`` (chunk -> points), ``extras``.
    """
    st = memory.stats()
    files = cache_files(path)
    meta = read_metadata(files[-1])
    return {
        "file": str(path),
        "file_bytes": sum(f.stat().st_size for f in files),
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "created_by": meta.get("created_by", ""),
        "codec": st["codec"],
        "channels": st["channels"],
        "spatial_factor": st["spatial_factor"],
        "dtype": st["dtype"],
        "points": st["points"],
        "bytes": st["bytes"],
        "bytes_per_point": st["bytes_per_point"],
        "write_policy": st["write_policy"],
        "splat": st["splat"],
        "observations": st["observations"],
        "image_hash": st["image_hash"],
        "bounds": st["bounds"],
        "footprint": st["footprint"],
        "chunks": st["points_per_chunk"],
        "extras": memory.extras,
    }
