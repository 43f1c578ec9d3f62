"""Shared fixtures: a small synthetic scene image with exact depth, and the tiny model kit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirage_cli.io import save_image


def pytest_sessionstart(session):
    """Build (or load) the compiled splat before any test: its build announces itself on stderr
    (issue 22), which would otherwise land in the captured output of whichever test runs first."""
    from mirage_cli.memory import compiled

    compiled.extension()


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory):
    """A 208x120 render of the synthetic room with its exact depth sidecar.

    Returns ``dict(image=Path, depth=Path, scene=Scene, camera=Cameras)``.
    """
    from mirage_cli.data.scenes import default_camera, make_scene

    d = tmp_path_factory.mktemp("scene")
    scene = make_scene("room")
    cam = default_camera(208, 120)
    rgb, depth = scene.render(cam)
    save_image(d / "room.png", rgb[0])
    np.save(d / "room.depth.npy", depth[0].numpy())
    return {"image": d / "room.png", "depth": d / "room.depth.npy", "scene": scene, "camera": cam}


@pytest.fixture(scope="session")
def tiny_kit(tmp_path_factory):
    """The tiny random-weight Wan2.1-VACE + depth model kit, saved in Hub layout (built once)."""
    from mirage_cli.models.tiny import make_tiny_kit

    return make_tiny_kit(tmp_path_factory.mktemp("tiny-kit"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """The tiny mirage kit converted by ``models convert``: a ``--backend mirage --model`` folder (built once)."""
    from mirage_cli.models.convert import convert_mirage
    from mirage_cli.models.tiny import make_tiny_kit

    kit = make_tiny_kit(tmp_path_factory.mktemp("mirage-kit") / "kit", kind="mirage")
    out = tmp_path_factory.mktemp("mirage-model") / "model"
    convert_mirage(kit["base"], kit["vace_file"], kit["lora_file"], out)
    return out


@pytest.fixture(scope="session")
def spatia_kit(tmp_path_factory):
    """The tiny kit in Spatia's naming (8 DiT layers, VACE on 0 and 4, LoRA keys with ``.default.``), built once."""
    from mirage_cli.models.tiny import make_tiny_kit

    return make_tiny_kit(tmp_path_factory.mktemp("spatia-kit") / "kit", kind="spatia")


@pytest.fixture(scope="session")
def spatia_model(spatia_kit, tmp_path_factory):
    """The tiny Spatia kit converted by ``mirage models convert --layout spatia`` (LoRA kept unfused), built once."""
    from mirage_cli.cli import main

    out = tmp_path_factory.mktemp("spatia-model") / "model"
    assert main(["models", "convert", "--base", str(spatia_kit["base"]), "--vace", str(spatia_kit["vace_file"]),
                 "--lora", str(spatia_kit["lora_file"]), "-o", str(out), "--layout", "spatia"]) == 0
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): its renders
    and tiny models are small, and the machine is shared; the count is restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of two images in [0, 1] (channels first), optionally on a pixel mask."""
    err = (a.float() - b.float()) ** 2
    if mask is not None:
        err = err[..., mask]
    return float(10 * torch.log10(1.0 / err.mean().clamp(min=1e-12)))


@pytest.fixture(scope="session")
def train_kit(tmp_path_factory):
    """The tiny mirage kit (``make_tiny_kit(kind="mirage")``: ``base`` is a Wan2.2-TI2V folder) for the trainer's tests."""
    from mirage_cli.models.tiny import make_tiny_kit

    return make_tiny_kit(tmp_path_factory.mktemp("train-kit") / "kit", kind="mirage")


@pytest.fixture(scope="session")
def train_shards(train_kit, tmp_path_factory):
    """Two synthetic clips prepared at 128 x 64 (latent grid 4 x 8), one sample each; the clip folders stay
    (validation reads the held-out clip's frames back)."""
    from mirage_cli.data.prepare import PrepareOptions, prepare
    from mirage_cli.data.synth import synth

    clips = tmp_path_factory.mktemp("train-clips")
    synth(clips, 2, size=(128, 96))
    out = tmp_path_factory.mktemp("train-shards") / "s"
    prepare([str(clips)], out, PrepareOptions(model=str(train_kit["base"]), size=(128, 64), device="cpu"),
            warn=lambda w: None)
    return out
