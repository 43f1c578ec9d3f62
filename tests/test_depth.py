import numpy as np
import pytest
import torch
from PIL import Image

from mirage_cli.errors import MirageError
from mirage_cli.geometry.depth import fill_depth, fit_scale_shift, input_depth_source, load_depth_file, prior_depth


def test_depth_file_formats(tmp_path):
    d = (1 + np.random.default_rng(0).random((12, 16))).astype(np.float32)
    np.save(tmp_path / "a.npy", d)
    np.savez(tmp_path / "b.npz", depth=d)
    Image.fromarray((d * 1000).astype(np.uint16)).save(tmp_path / "c.png")
    assert torch.allclose(load_depth_file(tmp_path / "a.npy"), torch.from_numpy(d))
    assert torch.allclose(load_depth_file(tmp_path / "b.npz"), torch.from_numpy(d))
    png = load_depth_file(tmp_path / "c.png", depth_scale=0.001)
    assert (png - torch.from_numpy(d)).abs().max() < 1.5e-3


def test_depth_file_errors(tmp_path):
    np.savez(tmp_path / "b.npz", other=np.ones((4, 4)))
    with pytest.raises(MirageError, match="no array named 'depth'"):
        load_depth_file(tmp_path / "b.npz")
    Image.fromarray(np.ones((4, 4), np.uint16)).save(tmp_path / "c.png")
    with pytest.raises(MirageError, match="--depth-scale"):
        load_depth_file(tmp_path / "c.png")
    np.save(tmp_path / "z.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(MirageError, match="more than half"):
        load_depth_file(tmp_path / "z.npy")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(MirageError, match="cannot read depth"):
        load_depth_file(tmp_path / "bad.npy")


def test_sidecar_is_found(tmp_path):
    np.save(tmp_path / "room.depth.npy", np.ones((4, 4), np.float32))
    kind, d = input_depth_source(None, tmp_path / "room.png", None)
    assert kind.startswith("sidecar:") and d.shape == (4, 4)
    assert input_depth_source(None, tmp_path / "other.png", None) == ("auto", None)


def test_fit_scale_shift_is_robust_to_outliers():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(40, 40, generator=g) + 0.5
    target = 2.5 * pred + 0.3
    target[:4] = 50.0  # 10 % gross outliers (occlusion edges)
    s, t = fit_scale_shift(pred, target, torch.ones_like(pred, dtype=torch.bool))
    assert abs(s - 2.5) < 1e-3 and abs(t - 0.3) < 1e-3


def test_fill_depth_takes_background_side():
    d = torch.full((1, 8, 8), 4.0)
    d[:, :, :3] = 1.0  # a near object on the left
    known = torch.ones(1, 8, 8, dtype=torch.bool)
    known[:, :, 3:5] = False  # disocclusion between object and wall
    f = fill_depth(d, known)
    assert torch.all(f[:, :, 3:5] == 4.0)
    assert torch.equal(f[known], d[known])


def test_prior_depth_shape_and_range():
    p = prior_depth(48, 64, 55.0)
    assert p.shape == (48, 64) and float(p.min()) >= 0.1 and float(p.max()) <= 1.0
    assert torch.all(p[-1] < p[0])  # the ground is nearer at the bottom


def test_separable_max3_equals_max_pool2d():
    import torch.nn.functional as F

    from mirage_cli.geometry.depth import _max3

    g = torch.Generator().manual_seed(0)
    for shape in [(2, 1, 1), (3, 5, 7), (1, 60, 104)]:
        x = torch.rand(*shape, generator=g)
        x[x < 0.3] = 0.0
        assert torch.equal(_max3(x), F.max_pool2d(x[:, None], 3, stride=1, padding=1)[:, 0])
