"""Real-world image and depth files (issue 10): every Pillow mode scaled right, EXR and PFM depth,
warnings for depth that looks like disparity."""

import struct

import numpy as np
import pytest
import torch
from PIL import Image

from mirage_cli.errors import MirageError
from mirage_cli.geometry.depth import input_depth_source, load_depth_file, read_pfm
from mirage_cli.io import load_image


# ===================================================================================== 5. image modes
def _grey(tmp_path, arr, mode, name):
    path = tmp_path / name
    Image.fromarray(arr).save(path)
    with Image.open(path) as im:
        assert im.mode == mode  # the mode under test is what a reader sees
    return load_image(path)


def test_16_bit_grey_png_is_value_over_65535(tmp_path):
    arr = np.full((6, 8), 32768, np.uint16)
    arr[0, 0] = 65535
    img = _grey(tmp_path, arr, "I;16", "g16.png")
    assert img.shape == (3, 6, 8) and float(img[0, 0, 0]) == 1.0
    assert float(img[:, 1:].mean()) == pytest.approx(32768 / 65535, abs=1e-6)  # mid grey, not pure white
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])


def test_32_bit_integer_images(tmp_path):
    small = _grey(tmp_path, np.full((4, 4), 16384, np.int32), "I", "i16.tif")  # 16-bit data in a 32-bit image
    assert float(small.mean()) == pytest.approx(16384 / 65535, abs=1e-6)
    big = _grey(tmp_path, np.full((4, 4), 2**30, np.int32), "I", "i32.tif")
    assert float(big.mean()) == pytest.approx(2**30 / (2**31 - 1), abs=1e-6)


def test_float_images(tmp_path):
    assert float(_grey(tmp_path, np.full((4, 4), 0.25, np.float32), "F", "f.tif").mean()) == pytest.approx(0.25)
    arr = np.full((4, 4), 51.0, np.float32)
    arr[0, 0] = 255.0  # 0-255 floats: divided by the maximum, not clipped to a white image
    img = _grey(tmp_path, arr, "F", "f255.tif")
    assert float(img[0, 1, 1]) == pytest.approx(0.2) and float(img.max()) == 1.0


def test_rgba_is_composited_on_white(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 255  # red ...
    arr[:2, :, 3] = 0  # ... fully transparent in the top half
    arr[2:, :, 3] = 255
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert torch.allclose(img[:, 0, 0], torch.ones(3))  # transparent -> white
    assert torch.allclose(img[:, 3, 0], torch.tensor([1.0, 0, 0]))  # opaque -> its colour
    la = np.stack([np.zeros((2, 2), np.uint8), np.full((2, 2), 51, np.uint8)], -1)  # black at alpha 0.2
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert float(load_image(tmp_path / "la.png").mean()) == pytest.approx(0.8)


def test_palette_and_cmyk(tmp_path):
    p = Image.new("P", (4, 4))
    p.putpalette([0, 0, 0, 0, 128, 255] + [0] * 762)
    p.putpixel((1, 1), 1)
    p.save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png")
    assert img[:, 1, 1].tolist() == pytest.approx([0, 128 / 255, 1]) and float(img[:, 0, 0].sum()) == 0
    Image.new("CMYK", (4, 4), (255, 0, 0, 0)).save(tmp_path / "c.tif")  # pure cyan ink
    assert load_image(tmp_path / "c.tif")[:, 0, 0].tolist() == pytest.approx([0, 1, 1])
    Image.new("1", (4, 4), 1).save(tmp_path / "b.png")
    assert float(load_image(tmp_path / "b.png").mean()) == 1.0


def test_8_bit_rgb_unchanged(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "rgb.png")
    assert torch.equal(load_image(tmp_path / "rgb.png"), torch.from_numpy(arr.astype(np.float32) / 255).permute(2, 0, 1))


# ===================================================================================== 6. depth files
DEPTH = (np.arange(12, dtype=np.float32).reshape(3, 4) + 1) * 0.5  # 0.5 .. 6.0, row 0 at the top


def _exr(path, channels):
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))
    return path


def test_exr_depth_single_channel_and_named_channels(tmp_path):
    assert torch.equal(load_depth_file(_exr(tmp_path / "moge.exr", {"Y": DEPTH})), torch.from_numpy(DEPTH))
    half = load_depth_file(_exr(tmp_path / "h.exr", {"depth": DEPTH.astype(np.float16)}))
    assert torch.equal(half, torch.from_numpy(DEPTH))  # k/2 is exact in half precision
    rgbaz = {"R": DEPTH * 0 + 0.3, "G": DEPTH * 0, "B": DEPTH * 0, "A": DEPTH * 0 + 1, "Z": DEPTH}  # Blender: Z is depth
    assert torch.equal(load_depth_file(_exr(tmp_path / "blender.exr", rgbaz)), torch.from_numpy(DEPTH))
    layered = {"ViewLayer.Depth.Z": DEPTH, "ViewLayer.Combined.R": DEPTH * 0 + 0.5}
    assert torch.equal(load_depth_file(_exr(tmp_path / "layers.exr", layered)), torch.from_numpy(DEPTH))
    rgb = {"R": DEPTH, "G": DEPTH, "B": DEPTH}  # depth written into a colour image: first of R/G/B
    assert torch.equal(load_depth_file(_exr(tmp_path / "rgb.exr", rgb), depth_scale=2.0), torch.from_numpy(DEPTH * 2))


def test_exr_without_depth_channel_and_corrupt(tmp_path):
    with pytest.raises(MirageError, match=r"no depth channel in this EXR \(has A, B; looked for Z, Y, R"):
        load_depth_file(_exr(tmp_path / "ab.exr", {"A": DEPTH, "B": DEPTH}))
    (tmp_path / "bad.exr").write_bytes(b"not an exr")
    with pytest.raises(MirageError, match="bad.exr: cannot read depth"):
        load_depth_file(tmp_path / "bad.exr")


def _pfm(path, arr, little: bool, colour: bool = False):
    rows = arr[::-1]  # PFM stores the bottom row first
    data = np.repeat(rows[..., None], 3, -1) if colour else rows
    head = f"{'PF' if colour else 'Pf'}\n{arr.shape[1]} {arr.shape[0]}\n{-1.0 if little else 1.0}\n".encode()
    path.write_bytes(head + data.astype("<f4" if little else ">f4").tobytes())
    return path


def test_pfm_both_byte_orders_and_colour(tmp_path):
    for little in (True, False):
        assert np.array_equal(read_pfm(_pfm(tmp_path / f"{little}.pfm", DEPTH, little)), DEPTH)
    assert torch.equal(load_depth_file(_pfm(tmp_path / "c.pfm", DEPTH, True, colour=True)), torch.from_numpy(DEPTH))
    assert float(load_depth_file(tmp_path / "c.pfm")[0, 0]) == 0.5  # top-left stays top-left
    (tmp_path / "short.pfm").write_bytes(b"Pf\n4 3\n-1.0\n" + struct.pack("<3f", 1, 2, 3))
    with pytest.raises(MirageError, match="too short"):
        load_depth_file(tmp_path / "short.pfm")
    (tmp_path / "p6.pfm").write_bytes(b"P6\n4 3\n255\n" + bytes(36))
    with pytest.raises(MirageError, match="not a PFM file"):
        load_depth_file(tmp_path / "p6.pfm")


def test_sidecar_exr_is_found(tmp_path):
    _exr(tmp_path / "room.depth.exr", {"Z": DEPTH})
    kind, d = input_depth_source(None, tmp_path / "room.png", None)
    assert kind == f"sidecar:{tmp_path / 'room.depth.exr'}" and torch.equal(d, torch.from_numpy(DEPTH))


def test_suspicious_depth_warns(tmp_path):
    warnings = []
    Image.fromarray((np.arange(48).reshape(6, 8) + 10).astype(np.uint8), "L").save(tmp_path / "disp.png")
    d = load_depth_file(tmp_path / "disp.png", depth_scale=0.1, warn=warnings.append)
    assert float(d[0, 0]) == pytest.approx(1.0) and len(warnings) == 1 and "8-bit depth PNG" in warnings[0]
    warnings.clear()
    np.save(tmp_path / "flat.npy", np.full((4, 4), 1.0, np.float32) + np.eye(4, dtype=np.float32) * 0.02)
    load_depth_file(tmp_path / "flat.npy", warn=warnings.append)
    assert len(warnings) == 1 and "varies by only 2.0 %" in warnings[0]
    warnings.clear()
    Image.fromarray((DEPTH * 1000).astype(np.uint16)).save(tmp_path / "mm.png")
    load_depth_file(tmp_path / "mm.png", depth_scale=0.001, warn=warnings.append)
    assert warnings == []  # a 16-bit map with real depth variation: no warning
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(MirageError, match="must be single-channel 16-bit"):
        load_depth_file(tmp_path / "rgb.png", depth_scale=1.0)
