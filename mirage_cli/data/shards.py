"""Training shards: WebDataset-layout tar files, an index, and the reader a trainer uses.

On disk (``OUT/``)::

    index.json               format, dataset options, every shard (file, samples, bytes, sha256, clips)
                             and each sample's member offsets inside its shard
    dataset.safetensors      once per dataset: "empty_text" (L0, D) bf16 (the empty prompt, for prompt
                             dropout) and "white_<F>" (F, C, h, w) float16, the latent of an all-white
                             video of 1 + 4 (F - 1) frames for F = 9, 10, 11 (target + 0..2 preceding)
    shard-000000.tar ...     samples, three members each (WebDataset layout: ``<key>.<ext>``):
                             <key>.safetensors (tensors, see samples.py), <key>.json (indices,
                             IoUs, known fractions...), <key>.txt (caption, UTF-8)
    prepare.json             what ``mirage data prepare`` did, clip by clip

Why tar + safetensors: a tar is read by the standard library (``tarfile``) and has the layout the
``webdataset`` package streams (``<key>.<ext>`` members, grouped by key); safetensors holds tensors without code
(no pickle, no ``torch.load``);
JSON and text are plain. Tar headers are written deterministically (mtime 0, uid/gid 0, no names),
so the same samples give byte-identical shards whatever the worker layout.

Why an index: ``index.json`` records where every member starts inside its shard, so a sample is
read with one seek (the reference walks an LMDB cursor ``i`` steps to reach item ``i``), samples are
split exactly evenly over ranks x data-loader workers (not only whole shards), and a reader resumes
at any sample position.

Reading: :class:`TrainingShards` (map-style: ``len``, ``[i]``) and :class:`ShardStream` (an
``IterableDataset``: epoch order, rank x worker split, resume at a global sample position).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load, load_file, save, save_file

from ..errors import MirageError
from ..io import atomic_path, write_json

INDEX_FORMAT = "mirage.training-shards"
INDEX_VERSION = 1
MEMBER_EXTS = ("safetensors", "json", "txt")
INDEX_FILE = "index.json"
DATASET_FILE = "dataset.safetensors"


@dataclass
class TrainingSample:
    """One sample as the reader gives it.

    Attributes:
        key: unique name (``<clip>-<n>``). tensors: name -> tensor (``samples.TENSOR_KEYS``, shapes there).
        meta: the sample's JSON (indices, reference IoUs, known fractions, ...). caption: its text.
        index: position in the dataset (the index's order).
    """

    key: str
    tensors: dict[str, torch.Tensor]
    meta: dict
    caption: str
    index: int = -1


@dataclass(frozen=True)
class DatasetExtras:
    """The per-dataset tensors: ``empty_text (L0, D)`` and ``white[F] (F, C, h, w)`` (see the module docstring)."""

    empty_text: torch.Tensor | None
    white: dict[int, torch.Tensor] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ writing
def sample_members(key: str, tensors: dict[str, torch.Tensor], meta: dict, caption: str) -> list[tuple[str, bytes]]:
    """The three tar members of a sample: ``(name, bytes)`` for safetensors, JSON and text."""
    if "." in key or "/" in key:
        raise ValueError(f"sample key {key!r} must not contain '.' or '/' (WebDataset splits names at the first dot)")
    blob = save({k: v.contiguous().cpu() for k, v in tensors.items()})
    return [(f"{key}.safetensors", blob), (f"{key}.json", json.dumps(meta, sort_keys=True).encode()),
            (f"{key}.txt", caption.encode("utf-8"))]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    """Add one member with deterministic headers; returns the offset of its data in the file."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))
    blocks = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return tar.offset - blocks  # the data ends the member, padded to whole blocks


def write_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> list[tuple[str, int, int]]:
    """Write a tar (atomically, deterministic headers); returns ``(name, data offset, size)`` per member."""
    table = []
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in members:
                table.append((name, _add(tar, name, data), len(data)))
    return table


def read_tar_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every regular member of a tar, in order, as ``(name, bytes)`` (only the standard library)."""
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    raise MirageError(f"{path}: {info.name}: not a regular file (shards hold files only)")
                member = tar.extractfile(info)
                assert member is not None  # None only for a member that is not a regular file (refused above)
                yield info.name, member.read()
    except tarfile.TarError as e:
        raise MirageError(f"{path}: unreadable tar ({e})") from e


def group_samples(members: Iterable[tuple[str, bytes]], source: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group consecutive ``<key>.<ext>`` members into samples ``(key, {ext: bytes})`` (WebDataset's rule)."""
    key = ""  # no sample yet (the group is empty until the first member)
    group: dict[str, bytes] = {}
    for name, data in members:
        k, _, ext = name.partition(".")
        if ext not in MEMBER_EXTS:
            raise MirageError(f"{source}: {name}: unexpected member (a sample holds {', '.join(MEMBER_EXTS)})")
        if k != key and group:
            yield key, group
            group = {}
        key = k
        group[ext] = data
    if group:
        yield key, group


def pack_shards(parts: list[tuple[str, Path]], out: Path, first_shard: int, per_shard: int) -> list[dict]:
    """Concatenate part tars (``(clip, path)``, in this order) into shards of ``per_shard`` samples,
    numbered from ``first_shard``. Returns the index entries of the new shards."""
    shards: list[dict] = []
    pending: list[tuple[str, str, dict[str, bytes]]] = []  # (clip, key, members)

    def flush():
        if not pending:
            return
        name = f"shard-{first_shard + len(shards):06d}.tar"
        members = [(f"{key}.{ext}", g[ext]) for _, key, g in pending for ext in MEMBER_EXTS]
        table = write_tar(out / name, members)
        offsets = {n: (o, s) for n, o, s in table}
        path = out / name
        shards.append({"file": name, "samples": len(pending), "bytes": path.stat().st_size, "sha256": _sha256(path),
                       "clips": sorted({c for c, _, _ in pending}),
                       "keys": [k for _, k, _ in pending],
                       "offsets": [[v for ext in MEMBER_EXTS for v in offsets[f"{k}.{ext}"]] for _, k, _ in pending]})
        pending.clear()

    for clip, path in parts:
        for key, group in group_samples(read_tar_members(path), str(path)):
            missing = [e for e in MEMBER_EXTS if e not in group]
            if missing:
                raise MirageError(f"{path}: {key}: member .{missing[0]} missing")
            pending.append((clip, key, group))
            if len(pending) == per_shard:
                flush()
    flush()
    return shards


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_index(root: Path | str) -> dict:
    """The validated ``index.json`` of a shard folder.

    Raises:
        MirageError: missing or foreign index, or a shard it lists is missing.
    """
    root = Path(root)
    path = root / INDEX_FILE
    if not root.exists():
        raise MirageError(f"{root}: no such folder (give the folder `mirage data prepare` wrote)")
    if not root.is_dir():
        raise MirageError(f"{root}: a file, not a shard folder (give the folder `mirage data prepare` wrote)")
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise MirageError(f"{root}: no {INDEX_FILE} (not a folder written by `mirage data prepare`)") from None
    except (OSError, ValueError) as e:
        raise MirageError(f"{path}: unreadable ({e})") from e
    if index.get("format") != INDEX_FORMAT:
        raise MirageError(f"{path}: format: {index.get('format')!r}, expected {INDEX_FORMAT!r}")
    if index.get("version") != INDEX_VERSION:
        raise MirageError(f"{path}: version: {index.get('version')!r}; this mirage reads version {INDEX_VERSION}")
    for s in index.get("shards", []):
        if not (root / s["file"]).is_file():
            raise MirageError(f"{root / s['file']}: missing (listed in {INDEX_FILE})")
    return index


def write_index(root: Path, index: dict) -> None:
    write_json(root / INDEX_FILE, index)


def save_extras(path: Path, empty_text: torch.Tensor | None, white: dict[int, torch.Tensor]) -> None:
    """Write ``dataset.safetensors`` atomically."""
    tensors = {f"white_{f}": t.contiguous().cpu() for f, t in white.items()}
    if empty_text is not None:
        tensors["empty_text"] = empty_text.contiguous().cpu()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def load_extras(root: Path | str) -> DatasetExtras:
    """``dataset.safetensors`` of a shard folder."""
    path = Path(root) / DATASET_FILE
    if not path.is_file():
        raise MirageError(f"{path}: missing (written by `mirage data prepare`)")
    try:
        t = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise MirageError(f"{path}: not a safetensors file ({e})") from e
    return DatasetExtras(t.get("empty_text"), {int(k.split("_")[1]): v for k, v in t.items() if k.startswith("white_")})


def decode_sample(key: str, group: dict[str, bytes], index: int = -1) -> TrainingSample:
    """A sample from its three members' bytes (safetensors, JSON, UTF-8 text; nothing executes)."""
    try:
        return TrainingSample(key, load(group["safetensors"]), json.loads(group["json"]),
                              group["txt"].decode("utf-8"), index)
    except Exception as e:  # safetensors' own errors, JSON, UTF-8
        raise MirageError(f"sample {key}: unreadable ({type(e).__name__}: {e})") from e


# ------------------------------------------------------------------------------------ reading
class TrainingShards(torch.utils.data.Dataset):
    """Map-style access to every sample of a shard folder, in the index's order (one seek per member).

    Args:
        root: the folder written by ``mirage data prepare`` (holding ``index.json``).

    Raises:
        MirageError: see :func:`read_index`.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.index = read_index(self.root)
        self._entries: list[tuple[str, str, list[int]]] = [
            (s["file"], key, off) for s in self.index["shards"] for key, off in zip(s["keys"], s["offsets"])]
        self._files: dict[str, io.BufferedReader] = {}  # open shard files, by name
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def keys(self) -> list[str]:
        return [k for _, k, _ in self._entries]

    def raw(self, i: int) -> tuple[str, dict[str, bytes]]:
        """``(key, {ext: bytes})`` of sample ``i``."""
        file, key, off = self._entries[i]
        if self._pid != os.getpid():  # a forked data-loader worker: its own handles (a shared one shares its offset)
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(file)
        if f is None:  # opened lazily: after a DataLoader fork, each worker opens its own handles
            f = self._files[file] = open(self.root / file, "rb")
        group = {}
        for j, ext in enumerate(MEMBER_EXTS):
            f.seek(off[2 * j])
            group[ext] = f.read(off[2 * j + 1])
        return key, group

    def __getitem__(self, i: int) -> TrainingSample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        i = i % len(self)
        key, group = self.raw(i)
        return decode_sample(key, group, i)

    def __getstate__(self):  # DataLoader workers get no open file handles
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}


def epoch_order(n: int, epoch: int = 0, shuffle_seed: int | None = None) -> list[int]:
    """The sample order of an epoch: ``0..n-1``, or a permutation seeded by ``(shuffle_seed, epoch)``."""
    if shuffle_seed is None:
        return list(range(n))
    g = torch.Generator().manual_seed(int(shuffle_seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def stream_positions(n: int, rank: int, world_size: int, worker: int, num_workers: int, start: int = 0,
                     drop_last: bool = True) -> list[int]:
    """Positions in the epoch order that data-loader worker ``worker`` of rank ``rank`` reads.

    Position ``i`` belongs to rank ``i % world_size`` (``drop_last``: the epoch is cut to a multiple of
    ``world_size`` so every rank gets the same count). A rank's positions from ``start`` on are dealt
    to its workers in turn (the ``j``-th goes to worker ``j % num_workers``), which is the order a
    ``DataLoader`` yields them in: a rank that has consumed ``m`` samples resumes with
    ``start = m * world_size`` and sees exactly the rest of the uninterrupted sequence.
    """
    if not (0 <= rank < world_size and 0 <= worker < num_workers):
        raise ValueError(f"rank {rank} / {world_size}, worker {worker} / {num_workers}: out of range")
    end = n - n % world_size if drop_last else n
    mine = [i for i in range(max(0, int(start)), end) if i % world_size == rank]
    return mine[worker::num_workers]


class ShardStream(torch.utils.data.IterableDataset):
    """The samples one rank reads in one epoch, split over its data-loader workers, from a position on.

    Args:
        root: the shard folder. rank / world_size: this process's place (``torch.distributed`` or
            accelerate's ``process_index`` / ``num_processes``).
        start: global sample position to resume at (samples consumed by all ranks together:
            ``steps x batch x world_size``).
        epoch / shuffle_seed: the epoch order (:func:`epoch_order`; None = index order).
        drop_last: cut the epoch to a multiple of ``world_size`` (equal counts per rank).
        subset: read only these sample indices (an epoch is over them; None: every sample).

    Iterating yields :class:`TrainingSample`; within a ``DataLoader`` each worker reads its share
    (:func:`stream_positions`) and the loader interleaves them back in order.
    """

    def __init__(self, root: Path | str, rank: int = 0, world_size: int = 1, start: int = 0, epoch: int = 0,
                 shuffle_seed: int | None = None, drop_last: bool = True,
                 subset: Sequence[int] | None = None) -> None:
        super().__init__()
        self.shards = TrainingShards(root)
        self.subset = None if subset is None else [int(i) for i in subset]
        self.n = len(self.shards) if self.subset is None else len(self.subset)
        self.rank, self.world_size, self.start = int(rank), int(world_size), int(start)
        self.epoch, self.shuffle_seed, self.drop_last = int(epoch), shuffle_seed, bool(drop_last)

    def __len__(self) -> int:
        return len(stream_positions(self.n, self.rank, self.world_size, 0, 1, self.start, self.drop_last))

    def positions(self, worker: int = 0, num_workers: int = 1) -> list[int]:
        """Sample indices (into :class:`TrainingShards`) this rank's ``worker`` reads, in order."""
        order = epoch_order(self.n, self.epoch, self.shuffle_seed)
        if self.subset is not None:
            order = [self.subset[i] for i in order]
        return [order[p] for p in stream_positions(len(order), self.rank, self.world_size, worker, num_workers,
                                                   self.start, self.drop_last)]

    def __iter__(self) -> Iterator[TrainingSample]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in self.positions(worker, workers):
            yield self.shards[i]
