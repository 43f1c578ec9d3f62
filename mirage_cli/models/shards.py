"""Safetensors shards written one tensor at a time, from a layout known in advance.

Used by ``mirage models convert`` (``convert.py``) so that converting a 7.6 B-parameter model holds
one tensor in memory at a time, never a copy of the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

ITEMSIZE = {  # bytes per element of each safetensors dtype mirage writes
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass
class ShardEntry:
    """One output tensor: its name, safetensors dtype and shape, and where it comes from."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    source: Path
    key: str

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEMSIZE[self.dtype]


class StreamingShards:
    """Writes safetensors shards one tensor at a time from a layout known in advance.

    The safetensors format is an 8-byte little-endian header length, a JSON header giving every
    tensor's dtype, shape and byte range, then the raw bytes. Because every output tensor's dtype and
    shape are known after validation (a fused LoRA weight keeps the base weight's), each shard's
    header is written first and the tensors are appended as they are produced: only one tensor is
    ever held in memory (``safetensors.torch.save_file`` would need the whole shard, serialized twice).
    """

    def __init__(self, folder: Path, entries: list[ShardEntry], max_bytes: int,
                 prefix: str = "diffusion_pytorch_model") -> None:
        self.folder, self.prefix = folder, prefix
        self.shards: list[list[ShardEntry]] = [[]]
        size = 0
        for e in entries:
            if self.shards[-1] and size + e.nbytes > max_bytes:
                self.shards.append([])
                size = 0
            self.shards[-1].append(e)
            size += e.nbytes
        n = len(self.shards)
        self.names = ([f"{prefix}.safetensors"] if n == 1 else
                      [f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
        self.total = sum(e.nbytes for e in entries)
        self.count = len(entries)
        self.peak_held = 0

    def write(self, produce) -> None:
        """Write every shard; ``produce(entry)`` returns the tensor for an entry (dtype and shape as planned)."""
        import torch

        for i, shard in enumerate(self.shards):
            header, off = {}, 0
            for e in shard:
                header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [off, off + e.nbytes]}
                off += e.nbytes
            header["__metadata__"] = {"format": "pt"}
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)  # the format aligns the data section to 8 bytes
            with open(self.folder / self.names[i], "wb") as f:
                f.write(len(raw).to_bytes(8, "little"))
                f.write(raw)
                for e in shard:
                    t = produce(e)
                    if tuple(t.shape) != e.shape or t.element_size() != ITEMSIZE[e.dtype]:
                        raise RuntimeError(f"{e.name}: produced {tuple(t.shape)} {t.dtype}, planned {e.shape} {e.dtype}")
                    self.peak_held = max(self.peak_held, e.nbytes)
                    f.write(t.contiguous().reshape(-1).view(torch.uint8).numpy().data)
        if len(self.shards) > 1:
            wmap = {e.name: self.names[i] for i, shard in enumerate(self.shards) for e in shard}
            index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(wmap.items()))}
            (self.folder / f"{self.prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
