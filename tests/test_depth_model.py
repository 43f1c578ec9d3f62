"""Depth model through transformers: tiny random Depth Anything in Hub layout, loaded like the real one."""

import time

import pytest
import torch

from mirage_cli.errors import MirageError
from mirage_cli.models.depth_model import DepthModel, disparity_to_depth, load_depth_model
from mirage_cli.models.tiny import save_tiny_depth


@pytest.fixture(scope="module")
def depth_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("depth")
    return {"relative": save_tiny_depth(base / "rel"), "metric": save_tiny_depth(base / "met", kind="metric")}


def test_relative_model_predicts_depth_in_median_units(depth_dirs):
    model = load_depth_model(str(depth_dirs["relative"]), device="cpu")
    assert isinstance(model, DepthModel) and model.kind == "relative" and model.weights == "random"
    image = torch.rand(3, 60, 80, generator=torch.Generator().manual_seed(0))
    depth, kind = model.predict(image)
    assert kind == "relative" and depth.shape == (60, 80) and depth.dtype == torch.float32
    assert torch.isfinite(depth).all() and (depth > 0).all()
    assert abs(depth.median().item() - 1.0) < 0.05
    again, _ = model.predict(image)
    assert torch.equal(depth, again)
    with pytest.raises(MirageError, match=r"\(3, H, W\)"):
        model.predict(torch.rand(60, 80))


def test_metric_model_gives_metres(depth_dirs):
    model = load_depth_model(depth_dirs["metric"])
    depth, kind = model.predict(torch.rand(3, 32, 48))
    assert kind == "metric" and depth.shape == (32, 48)
    assert (depth > 0).all() and (depth <= 20).all()  # sigmoid x max_depth (20 m)
    assert model.describe()["class"] == "DepthAnythingForDepthEstimation"


def test_disparity_rule():
    d = torch.tensor([[2.0, 1.0, 0.5], [0.0, -1.0, 1.0]])
    depth = disparity_to_depth(d)
    torch.testing.assert_close(depth, torch.tensor([[0.5, 1.0, 2.0], [100.0, 100.0, 1.0]]))
    assert (disparity_to_depth(torch.zeros(2, 2)) == 100).all()


def test_missing_model_is_none_unless_required(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    assert load_depth_model() is None
    with pytest.raises(MirageError, match="mirage models download depth-anything-v2-small"):
        load_depth_model("depth-anything-v2-small", required=True)
    assert time.perf_counter() - t0 < 1.0


def test_loading_shows_no_library_bar_even_without_quiet(depth_dirs, capfd):
    """transformers' "Loading weights" bar (a second's load) broke into generate's own lines without -q."""
    from mirage_cli.models.depth_model import load_depth_model

    capfd.readouterr()
    assert load_depth_model(str(depth_dirs["relative"]), progress=True) is not None
    out, err = capfd.readouterr()
    assert "Loading weights" not in err + out
