"""The latent spatial memory from Python: lift an image, read it from a moved camera, write, save, load.

Shows :class:`mirage_cli.memory.LatentMemory` with the pixel codec (latents = 4x4-pixel cell means, so
every read can be looked at as a picture):

1. lift the shipped example ``examples/room.png`` with its exact depth ``examples/room.depth.npy``
   (one 3D point per latent cell, seen by the camera the image was rendered with: identity pose,
   vertical fov 55 degrees);
2. read the memory from a camera turned 15 degrees and moved sideways: what it knows there, and
   the holes (cells no point lands in) that a backend would have to generate;
3. write a "generated" frame back (here the read with its holes painted grey, a stand-in for a
   denoiser's output; the depth of the holes extended from their background side);
4. save the memory as a ``.safetensors`` cache, load it, check that the copy reads the same, and
   print its stats (``mirage cache inspect`` prints the same for any cache file).

Run from the repository root (offline, CPU, about 2 s; ``--out DIR`` keeps the images and the cache)::

    python3 examples/memory_api.py [--out DIR]
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from mirage_cli.geometry.cameras import Cameras
from mirage_cli.geometry.depth import fill_depth, load_depth_file
from mirage_cli.io import load_image, save_image
from mirage_cli.memory import LatentMemory
from mirage_cli.models.codecs import PixelCodec

from _outdir import run_with_out_dir  # examples/_outdir.py: the --out option

HERE = Path(__file__).resolve().parent
FOV_Y_DEG = 55.0  # the example image's camera (mirage_cli/data/scenes.py: default_camera)
CELL = 4  # pixels per latent cell along each axis


def moved_camera(first: Cameras, yaw_deg: float, right: float) -> Cameras:
    """``first`` turned ``yaw_deg`` about its y axis (OpenCV: y down) and moved ``right`` along x."""
    a = math.radians(yaw_deg)
    pose = torch.eye(4, dtype=torch.float64)
    pose[0, 0], pose[0, 2], pose[2, 0], pose[2, 2] = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
    pose[0, 3] = right
    return Cameras(first.c2w @ pose, first.intrinsics, first.width, first.height)


def main(out: Path) -> None:
    torch.set_num_threads(1)  # as `mirage --threads 1`: quick, and polite on a shared machine
    image = load_image(HERE / "room.png")  # (3, H, W) in [0, 1]
    depth = load_depth_file(HERE / "room.depth.npy")  # (H, W) z-depth in scene units
    height, width = image.shape[-2:]
    camera = Cameras.from_fov(torch.eye(4, dtype=torch.float64), FOV_Y_DEG, width, height)

    codec = PixelCodec(CELL)
    memory = LatentMemory(codec.channels, CELL, codec="pixel")  # write policy "new", patch splat
    lifted = memory.lift(codec.encode(image[None])[0], depth, camera)
    print(f"lifted {lifted:,} points from {width}x{height} ({width // CELL}x{height // CELL} latent cells)")

    reference_depth = float(depth.median())  # the scale presets and `mirage generate` use
    moved = moved_camera(camera, yaw_deg=15.0, right=0.2 * reference_depth)
    latents, known, read_depth = memory.read(moved)  # (1, 3, h, w), (1, h, w), (1, h, w)
    print(f"moved camera: the memory covers {float(known.float().mean()):.1%} of its latent cells")
    save_image(out / "read.png", codec.decode(latents)[0])  # holes are black (features 0)

    generated = torch.where(known[:, None], latents, torch.full_like(latents, 0.5))  # holes: grey
    added = memory.write(generated, fill_depth(read_depth, known), moved, known, chunk=1)
    print(f"write (policy {memory.write_policy!r}): {added:,} new points, only where the read had holes")
    again = memory.read(moved)[1]
    print(f"after the write the memory covers {float(again.float().mean()):.1%} of the moved view")

    cache = out / "memory.safetensors"
    memory.save(cache, extras={"reference_depth": reference_depth, "width": width, "height": height})
    loaded = LatentMemory.load(cache)
    assert len(loaded) == len(memory)
    assert all(torch.equal(a, b) for a, b in zip(memory.read(moved), loaded.read(moved)))
    stats = loaded.stats()
    print(f"saved and loaded {cache.name}: {stats['points']:,} points, {stats['bytes'] / 1e6:.2f} MB "
          f"({stats['bytes_per_point']:.0f} B/point, {stats['dtype']} features), points per chunk "
          f"{stats['points_per_chunk']}, extras {loaded.extras}")


if __name__ == "__main__":
    run_with_out_dir(main, __doc__.splitlines()[0])
