from pathlib import Path

import numpy as np
import torch

from mirage_cli.data.example import write_example
from mirage_cli.io import load_image

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_example_is_what_the_code_renders(tmp_path):
    image, depth = write_example(tmp_path)
    shipped = ROOT / "examples"
    assert torch.equal(load_image(image), load_image(shipped / "room.png"))
    a, b = np.load(depth), np.load(shipped / "room.depth.npy")
    assert a.shape == b.shape == (480, 832) and np.allclose(a, b, rtol=1e-6)
    assert float(b.min()) > 0 and np.isfinite(b).all()
