"""Spatial memories: the latent memory (lift / read / write / save / load) and the shared splat.

Modules: :mod:`.latent` (``LatentMemory``), :mod:`.reading` (its read: splat + gather of the winners),
:mod:`.lifting` (depth reduction, latent intrinsics),
:mod:`.splat` (the one deterministic z-buffer), :mod:`.policies` (write policies shared by every
memory), :mod:`.storage` (safetensors cache files), :mod:`.export` (PLY, memory-only renders),
:mod:`.pointcloud` (the RGB point-cloud baseline of ``mirage bench``).

The splat lives in :mod:`mirage_cli.memory.splat` (``from mirage_cli.memory.splat import splat``);
it is not re-exported here so that the function does not shadow its module.
"""

from ..lazy import lazy_exports

# Lazy re-exports (PEP 562): importing a torch-free module of this package (``modes``) does not
# import torch; the names below load their module on first use.
_EXPORTS = {"WRITE_POLICIES": "latent", "LatentMemory": "latent", "reduce_depth": "lifting", "FORMAT": "storage",
            "INPUT_CHUNK": "storage", "VERSION": "storage"}

__all__ = ["FORMAT", "INPUT_CHUNK", "VERSION", "WRITE_POLICIES", "LatentMemory", "reduce_depth"]


__getattr__ = lazy_exports(__name__, _EXPORTS)
