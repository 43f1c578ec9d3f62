"""COLMAP sparse models written from mirage's exact cameras and memory: ``cameras``, ``images``
and ``points3D``, as text (``.txt``) or binary (``.bin``).

The layouts are COLMAP's own (``src/colmap/scene/reconstruction_io.cc``; the same as its
``colmap/scripts/python/read_write_model.py``): little-endian, ``cameras.bin`` = ``uint64`` count, then per
camera ``int32 id, int32 model (PINHOLE = 1), uint64 width, uint64 height, 4 x double params``;
``images.bin`` = ``uint64`` count, then per image ``int32 id, 4 x double qvec (w, x, y, z), 3 x
double tvec, int32 camera id, name + NUL, uint64 number of 2D points (0 here)``; ``points3D.bin``
= ``uint64`` count, then per point ``uint64 id, 3 x double xyz, 3 x uint8 rgb, double error,
uint64 track length (0 here)``. Poses are OpenCV world-to-camera, COLMAP's convention. The points
carry no tracks (no 2D observations): COLMAP, pycolmap, nerfstudio and gsplat read them as an
initial point cloud. The cameras and images come from
:func:`mirage_cli.trajectories.formats.colmap.model_records`, the text lines of cameras and images
from :func:`~mirage_cli.trajectories.formats.colmap.model_texts`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..trajectories.formats.colmap import ModelCamera, ModelImage, model_texts
from ..trajectories.formats.common import atomic_write_text

PINHOLE_ID = 1
"""COLMAP's model id of PINHOLE (``src/colmap/sensor/models.h``)."""


def points_text(xyz: np.ndarray, rgb: np.ndarray) -> str:
    """``points3D.txt``: ``POINT3D_ID X Y Z R G B ERROR`` per point (ids from 1, error 0, no track)."""
    head = ["# 3D point list with one line of data per point:",
            "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
            f"# Number of points: {len(xyz)}, mean track length: 0"]
    rows = [f"{i + 1} {x!r} {y!r} {z!r} {r} {g} {b} 0" for i, ((x, y, z), (r, g, b))
            in enumerate(zip(xyz.astype(np.float64).tolist(), rgb.tolist()))]
    return "\n".join(head + rows) + "\n"


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def cameras_bin(cameras: list[ModelCamera]) -> bytes:
    out = [struct.pack("<Q", len(cameras))]
    for c in cameras:
        out.append(struct.pack("<iiQQ4d", c.camera_id, PINHOLE_ID, c.width, c.height, *c.params))
    return b"".join(out)


def images_bin(images: list[ModelImage]) -> bytes:
    out = [struct.pack("<Q", len(images))]
    for im in images:
        out.append(struct.pack("<i4d3di", im.image_id, *im.qvec, *im.tvec, im.camera_id))
        out.append(im.name.encode("utf-8") + b"\x00")
        out.append(struct.pack("<Q", 0))
    return b"".join(out)


def points_bin(xyz: np.ndarray, rgb: np.ndarray) -> bytes:
    rec = np.zeros(len(xyz), dtype=np.dtype([("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"),
                                             ("track", "<u8")]))
    rec["id"] = np.arange(1, len(xyz) + 1)
    rec["xyz"], rec["rgb"] = xyz, rgb
    return struct.pack("<Q", len(xyz)) + rec.tobytes()


def write_model(folder: Path, cameras: list[ModelCamera], images: list[ModelImage], xyz: np.ndarray,
                rgb: np.ndarray, binary: bool = False) -> list[Path]:
    """Write a COLMAP model into ``folder`` (``cameras``, ``images``, ``points3D``; ``.bin`` with
    ``binary`` else ``.txt``), each file atomically; returns the files.

    Args:
        xyz: ``(P, 3)`` world points (float). rgb: ``(P, 3)`` uint8 colours.
    """
    ext = ".bin" if binary else ".txt"
    paths = [folder / f"cameras{ext}", folder / f"images{ext}", folder / f"points3D{ext}"]
    if binary:
        for path, data in zip(paths, (cameras_bin(cameras), images_bin(images), points_bin(xyz, rgb))):
            _write_bytes(path, data)
    else:
        images_txt, cameras_txt = model_texts(cameras, images)
        for path, text in zip(paths, (cameras_txt, images_txt, points_text(xyz, rgb))):
            atomic_write_text(path, text)
    return paths
