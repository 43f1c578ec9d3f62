"""The chunk engine on its own (no run directory), the backend registry, and --dry-run's plan."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mirage_cli.backends.preview import PreviewBackend
from mirage_cli.backends.specs import BACKEND_NAMES, BACKENDS
from mirage_cli.geometry.cameras import Cameras
from mirage_cli.memory.latent import INPUT_CHUNK, LatentMemory
from mirage_cli.models.codecs import PixelCodec
from mirage_cli.pipeline.engine import Cancelled, CancelToken, ChunkEngine, EngineSettings, round_latents
from mirage_cli.pipeline.generate import GenerateConfig, generate
from mirage_cli.pipeline.plan import plan_chunks
from mirage_cli.trajectories import load_trajectory

ROOT = Path(__file__).resolve().parents[1]


def _engine(small_scene) -> tuple[ChunkEngine, Cameras, list]:
    """A preview engine on the small scene's image and exact depth, and an orbit's chunks."""
    from mirage_cli.io import load_image

    image = load_image(small_scene["image"])
    H, W = image.shape[-2:]
    depth = torch.from_numpy(np.load(small_scene["depth"], allow_pickle=False)).float()
    traj = load_trajectory("orbit_left")
    cams = traj.cameras_for(W, H).scaled(float(depth[depth > 0].median()))
    codec = PixelCodec(2)
    first = round_latents(codec.encode(image[None])[0])
    memory = LatentMemory(codec.channels, codec.spatial_factor, codec=codec.name)
    memory.lift(first, depth, cams[:1], chunk=INPUT_CHUNK)
    engine = ChunkEngine(codec, PreviewBackend(), memory, first, cams[:1],
                         EngineSettings(grid=(H // 2, W // 2), references=2), first_frame=image)
    return engine, cams, plan_chunks(len(cams), 9, 1)


def test_engine_steps_in_memory_and_restores_a_snapshot_bit_identically(small_scene, tmp_path):
    """3 chunks with no file written (read-only working directory); snapshot after chunk 1, step twice,
    restore, step again: chunk 2 is bit-identical to the first time."""
    ro = tmp_path / "ro"
    ro.mkdir()
    cwd = os.getcwd()
    os.chmod(ro, 0o555)
    try:
        os.chdir(ro)
        engine, cams, chunks = _engine(small_scene)
        engine.step(chunks[0], cams[chunks[0].frames])
        engine.step(chunks[1], cams[chunks[1].frames])
        snap = engine.snapshot()
        first = engine.step(chunks[2], cams[chunks[2].frames])
        engine.step(chunks[3], cams[chunks[3].frames])
        points_after = len(engine.memory)
        engine.restore(snap)
        assert engine.chunks_done == 2 and len(engine.memory) < points_after
        again = engine.step(chunks[2], cams[chunks[2].frames])
    finally:
        os.chdir(cwd)
        os.chmod(ro, 0o755)
    assert list(ro.iterdir()) == []
    assert torch.equal(first.latents, again.latents) and first.points_added == again.points_added
    assert (first.frames_u8 == again.frames_u8).all() and first.references == again.references


def test_engine_cancel_token_stops_between_stages(small_scene):
    engine, cams, chunks = _engine(small_scene)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        engine.step(chunks[0], cams[chunks[0].frames], cancel=token)
    assert engine.chunks_done == 0 and isinstance(Cancelled(), KeyboardInterrupt)
    with pytest.raises(ValueError):  # chunks go in order
        engine.step(chunks[1], cams[chunks[1].frames])


# Other namespaces that share a name with a backend: model-folder and tiny-kit kinds ("wan-vace",
# "mirage", "spatia": checkpoint families and layouts, models/ and `mirage models tiny --kind`),
# `mirage bench --denoiser` names and trajectory file formats (Spatia's w2c.txt is format "spatia").
# They name weights or files, not a backend; everything about a backend comes from backends/specs.py.
OTHER_NAMESPACES = ("models/", "cli/models.py", "bench/config.py", "bench/factories.py", "trajectories/formats/")


def test_no_backend_name_is_compared_outside_backends():
    """Backend knowledge lives in backends/ (specs.py): outside it no backend name is compared,
    used as a key or as a default (the program's own name "mirage" aside)."""
    names = "|".join(re.escape(n) for n in BACKEND_NAMES)
    pattern = re.compile(rf"""(==|!=|\bin\s*\(|startswith\(|=)\s*["']({names})["']|["']({names})["']\s*:""")
    hits = []
    for path in (ROOT / "mirage_cli").rglob("*.py"):
        rel = path.relative_to(ROOT / "mirage_cli").as_posix()
        if rel.startswith("backends/") or rel.startswith(OTHER_NAMESPACES):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            code = code.replace('name="mirage"', "")  # the Typer app's and click's program name
            if pattern.search(code) and "__version__" not in code:  # "mirage": its version, in records
                hits.append(f"{rel}:{i}: {line.strip()}")
    assert hits == []


def test_every_spec_is_complete_and_loadable_by_name():
    from importlib import import_module

    for name, spec in BACKENDS.items():
        assert spec.name == name and spec.defaults.steps >= 1 and spec.chunk_frames >= 2
        module, _, fn = spec.loader.partition(":")
        assert callable(getattr(import_module(module), fn))
        assert not spec.model_required or spec.missing_model


@pytest.mark.parametrize("backend", ["preview", "wan-vace", "mirage"])
def test_dry_run_plans_exactly_the_real_run(backend, small_scene, model_dir, tmp_path):
    """--dry-run's chunk plan, grid and frame size equal the real run's (tiny kits for the networks)."""
    from mirage_cli.models.tiny import make_tiny_kit

    kw = dict(image=str(small_scene["image"]), traj="orbit_left", frames=21, backend=backend, device="cpu")
    if backend == "wan-vace":
        kw.update(model=str(make_tiny_kit(tmp_path / "kit")["root"]), steps=1, height=64, width=96)
    elif backend == "mirage":
        kw.update(model=str(model_dir), steps=1, height=64, width=96)
    dry = generate(GenerateConfig(**kw, out=str(tmp_path / "dry")), warn=lambda m: None, quiet=True, dry_run=True)
    real = generate(GenerateConfig(**kw, out=str(tmp_path / "real")), warn=lambda m: None, quiet=True)
    assert dry["status"] == "dry-run" and real["status"] == "done"
    for key in ("chunk_plan", "latent_grid", "image"):
        strip = (lambda v: {k: x for k, x in v.items() if k != "path"}) if key == "image" else (lambda v: v)
        assert strip(dry[key]) == strip(real[key]), key
    assert dry["codec"]["spatial_factor"] == real["codec"]["spatial_factor"]
    assert dry["codec"]["temporal_factor"] == real["codec"]["temporal_factor"]


def test_dry_run_refuses_a_model_the_real_run_refuses(small_scene, tmp_path):
    from mirage_cli.errors import MirageError

    for model in ("nonexistent", str(tmp_path / "missing-dir")):
        cfg = GenerateConfig(image=str(small_scene["image"]), traj="orbit_left", backend="mirage", model=model,
                             out=str(tmp_path / "o"))
        with pytest.raises(MirageError):
            generate(cfg, warn=lambda m: None, quiet=True, dry_run=True)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("backend,model,kind", [("mirage", "wan2.1-vace-1.3b", "wan-vace"),
                                                ("wan-vace", "wan2.2-ti2v-5b", "wan-base"),
                                                ("spatia", "Wan-AI/Wan2.1-VACE-1.3B-diffusers", "wan-vace")])
def test_a_registry_model_of_another_kind_is_refused_before_any_download(backend, model, kind, small_scene, tmp_path):
    """Dry run and real run give the same one line, naming the kind, before resolving (no 'download it' advice
    for a model the backend cannot run)."""
    from mirage_cli.errors import MirageError

    cfg = GenerateConfig(image=str(small_scene["image"]), traj="orbit_left", backend=backend, model=model,
                         out=str(tmp_path / "o"))
    for dry in (True, False):
        with pytest.raises(MirageError, match=rf"--model {model}: a {kind} model .*which the {backend} backend does not run"):
            generate(cfg, warn=lambda m: None, quiet=True, dry_run=dry)
