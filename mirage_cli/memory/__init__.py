"""Spatial memories: the latent memory (lift / read / write / save / load) and the shared splat.

The splat lives in :mod:`mirage_cli.memory.splat` (``from mirage_cli.memory.splat import splat``);
it is not re-exported here so that the function does not shadow its module.
"""

from .latent import FORMAT, INPUT_CHUNK, VERSION, WRITE_POLICIES, LatentMemory, reduce_depth

__all__ = ["FORMAT", "INPUT_CHUNK", "VERSION", "WRITE_POLICIES", "LatentMemory", "reduce_depth"]
