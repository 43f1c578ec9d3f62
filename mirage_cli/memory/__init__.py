"""Spatial memories: the latent memory (lift / read / write / save / load) and the shared splat.

Modules: :mod:`.latent` (``LatentMemory``), :mod:`.reading` (its read: splat + gather of the winners),
:mod:`.lifting` (depth reduction, latent intrinsics),
:mod:`.splat` (the one deterministic z-buffer), :mod:`.policies` (write policies shared by every
memory), :mod:`.storage` (safetensors cache files), :mod:`.export` (PLY, memory-only renders),
:mod:`.pointcloud` (the RGB point-cloud baseline of ``mirage bench``).

The splat lives in :mod:`mirage_cli.memory.splat` (``from mirage_cli.memory.splat import splat``);
it is not re-exported here so that the function does not shadow its module.
"""

from .latent import WRITE_POLICIES, LatentMemory
from .lifting import reduce_depth
from .storage import FORMAT, INPUT_CHUNK, VERSION

__all__ = ["FORMAT", "INPUT_CHUNK", "VERSION", "WRITE_POLICIES", "LatentMemory", "reduce_depth"]
