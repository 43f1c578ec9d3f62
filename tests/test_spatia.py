"""`--backend spatia`: Spatia's layout converted (8-layer tiny base, VACE on 0 and 4, LoRA keys with `.default.`),
its chunk plan, its RGB / latent conditioning (encodes counted), LoRA off in chunk 0, generate + resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mirage_cli.backends import ChunkRequest, PixelHistory, PointRender
from mirage_cli.backends.specs import BACKENDS
from mirage_cli.cli import main
from mirage_cli.errors import MirageError
from mirage_cli.io import read_video
from mirage_cli.models.convert import layout_layers

ROOM = str(Path(__file__).resolve().parents[1] / "examples" / "room.png")
SPEC = BACKENDS["spatia"]


@pytest.fixture(scope="module")
def kit(spatia_kit):
    return spatia_kit  # conftest.py: shared with the bench's test


@pytest.fixture(scope="module")
def converted(spatia_model):
    return spatia_model


@pytest.fixture(scope="module")
def backend(converted):
    from mirage_cli.backends.spatia import load_spatia

    return load_spatia(str(converted), device="cpu", dtype="fp32", progress=False)


# ----------------------------------------------------------------------------------- conversion
def test_layouts_and_the_spatia_kit_keys(kit):
    p = Path("vace.safetensors")
    assert layout_layers("spatia", 8, 30, p) == [0, 4, 8, 12, 16, 20, 24, 28]
    with pytest.raises(MirageError, match="8 VACE blocks do not divide the base's 30 layers"):
        layout_layers("mirage", 8, 30, p)
    with pytest.raises(MirageError, match="the base has 4 layers"):
        layout_layers("spatia", 2, 4, p)
    keys = list(load_file(str(kit["lora_file"])))
    assert any(k.endswith(".lora_A.default.weight") for k in keys) and any(k.endswith(".alpha") for k in keys)


def test_convert_records_layout_and_keeps_the_lora_unfused(kit, converted):
    info = json.loads((converted / "mirage.json").read_text())
    assert info["layout"] == "spatia" and info["vace"]["vace_layers"] == [0, 4] and info["vace"]["tensors"] == 62
    assert info["lora"]["fused"] is False and info["lora"]["file"] == "lora.safetensors"
    assert info["lora"]["ignored_keys"] == 80 and info["lora"]["modules"] == 80  # the .alpha keys, as Spatia
    assert json.loads((converted / "model_index.json").read_text())["mirage_layout"] == "spatia"
    # the factors under diffusers names, unscaled (Spatia: scale 1, alpha never read)
    src, out = load_file(str(kit["lora_file"])), load_file(str(converted / "lora.safetensors"))
    assert torch.equal(out["blocks.3.attn1.to_q.lora_A.weight"], src["pipe.dit.blocks.3.self_attn.q.lora_A.default.weight"])
    assert torch.equal(out["blocks.7.ffn.net.2.lora_B.weight"], src["pipe.dit.blocks.7.ffn.2.lora_B.default.weight"])


def test_backends_refuse_the_other_layout(converted, model_dir):
    from mirage_cli.backends.mirage import load_mirage
    from mirage_cli.backends.spatia import load_spatia

    with pytest.raises(MirageError, match="spatia-layout model.*--backend spatia"):
        load_mirage(str(converted), device="cpu", progress=False)
    with pytest.raises(MirageError, match="mirage-layout model.*--layout spatia"):
        load_spatia(str(model_dir), device="cpu", progress=False)


def test_dry_run_refuses_the_other_layout_as_the_real_run(converted, model_dir, small_scene, tmp_path):
    """--dry-run checks the folder as the loader does (class and layout), without loading weights."""
    from mirage_cli.pipeline.generate import GenerateConfig, generate

    for backend, model, words in (("mirage", converted, "--backend spatia"), ("spatia", model_dir, "--layout spatia")):
        cfg = GenerateConfig(image=str(small_scene["image"]), traj="orbit_left", backend=backend, model=str(model),
                             out=str(tmp_path / backend))
        with pytest.raises(MirageError, match=words):
            generate(cfg, warn=lambda m: None, quiet=True, dry_run=True)


def _in_memory_model(kit, lora_fused: bool):
    """The same tensors assembled in memory (no converter): base + VACE on [0, 4] (+ the LoRA fused in fp32)."""
    from diffusers import WanTransformer3DModel

    from mirage_cli.models.mirage_transformer import MirageTransformer3DModel
    from mirage_cli.models.tiny import LORA_TARGETS, TINY_SPATIA_VACE, reference_vace_name

    base = WanTransformer3DModel.from_pretrained(kit["base"] / "transformer")
    cfg = {k: v for k, v in base.config.items() if not k.startswith("_")}
    model = MirageTransformer3DModel(**{**cfg, **TINY_SPATIA_VACE}).eval()
    sd = dict(base.state_dict())
    vace = load_file(str(kit["vace_file"]))
    for k in model.state_dict():
        if k.startswith("vace_"):
            sd[k] = vace[reference_vace_name(k)].float()
    if lora_fused:
        lora = load_file(str(kit["lora_file"]))
        for i in range(cfg["num_layers"]):
            for orig, dname in LORA_TARGETS.items():
                a = lora[f"pipe.dit.blocks.{i}.{orig}.lora_A.default.weight"].float()
                b = lora[f"pipe.dit.blocks.{i}.{orig}.lora_B.default.weight"].float()
                sd[f"blocks.{i}.{dname}.weight"] = sd[f"blocks.{i}.{dname}.weight"] + b @ a
    model.load_state_dict(sd)
    return model


def _forward(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 48, 4, 4, 4, generator=g)
    ctx = torch.randn(1, 96, 3, 4, 4, generator=g)
    emb = torch.randn(1, 8, 32, generator=g)
    ts = torch.tensor([[0.0, 0.0, 500.0, 500.0]])
    with torch.no_grad():
        return model(hidden_states=x, timestep=ts, encoder_hidden_states=emb, control_hidden_states=ctx,
                     num_ref_frames=1, return_dict=False)[0]


def test_converted_forward_equals_in_memory_and_lora_switches(kit, backend):
    be, _ = backend
    assert be.lora is not None and be.lora.modules == 80
    be.lora.set(False)  # chunk 0: base + VACE, bit for bit
    assert torch.equal(_forward(be.transformer), _forward(_in_memory_model(kit, lora_fused=False)))
    be.lora.set(True)  # later chunks: the LoRA branch equals the fused weights up to float rounding
    on = _forward(be.transformer)
    fused = _forward(_in_memory_model(kit, lora_fused=True))
    assert torch.allclose(on, fused, atol=1e-4, rtol=1e-4)
    be.lora.set(False)
    assert not torch.allclose(on, _forward(be.transformer), atol=1e-3)


# ----------------------------------------------------------------------------------- plan
@pytest.mark.parametrize("n, starts, lengths", [(121, [0], [121]), (193, [0, 112], [121, 81]),
                                                (194, [0, 112, 184], [121, 81, 81]), (265, [0, 112, 184], [121, 81, 81])])
def test_spatia_plan_121_81_overlap_9(n, starts, lengths):
    chunks = SPEC.plan(n, None, 4)
    assert [c.start for c in chunks] == starts and [c.length for c in chunks] == lengths
    assert len(chunks) == (1 if n <= 121 else 1 + -(-(n - 121) // 72))  # SPATIA_FACTS 2.1
    assert sum(c.real - c.new_from for c in chunks) == n  # every frame once in the video
    assert all(c.pinned_latents(4) == 3 for c in chunks[1:]) and chunks[0].pinned_latents(4) == 1


def test_other_plans_unchanged():
    chunks = BACKENDS["mirage"].plan(80, None, 4)
    assert [(c.start, c.stop, c.length, c.overlap) for c in chunks] == [(0, 33, 33, 1), (32, 65, 33, 1), (64, 80, 17, 1)]


# ----------------------------------------------------------------------------------- conditioning
def test_hole_mask_levels_and_black_holes():
    from mirage_cli.backends.spatia import hole_mask_video
    from mirage_cli.geometry.cameras import Cameras
    from mirage_cli.memory.pointcloud import PointCloudMemory

    known = torch.tensor([[[True, False]]])
    m = hole_mask_video(known)
    assert m.shape == (1, 3, 1, 2) and m[0, :, 0, 0].eq(0.5).all() and m[0, :, 0, 1].eq(1.0).all()
    cam = Cameras(torch.eye(4)[None], torch.tensor([[0.8, 0.8, 0.5, 0.5]]), 8, 8)
    pc = PointCloudMemory()
    depth = torch.ones(8, 8)
    depth[:, 4:] = 0  # no depth: a hole
    pc.lift(torch.full((3, 8, 8), 0.7), depth, cam)
    rgb, k, _ = pc.render(cam)
    assert bool((~k).any()) and rgb.permute(0, 2, 3, 1)[~k].eq(0).all()  # holes are black


def _request(be, chunk_index: int, T: int, L: int, h=2, w=2, refs: int = 0, render: bool = True):
    H, W = 16 * h, 16 * w
    g = torch.Generator().manual_seed(chunk_index)
    extras = [PixelHistory(torch.rand(9, 3, H, W, generator=g) if chunk_index else None,
                           torch.rand(refs, 3, H, W, generator=g) if refs else None, tuple(range(refs)))]
    if render:
        extras.append(PointRender(torch.rand(L, 3, H, W, generator=g), torch.rand(L, H, W, generator=g) > 0.5))
    known = torch.rand(T, h, w, generator=g) > 0.5
    return ChunkRequest(read_latents=torch.randn(T, 48, h, w, generator=g), known=known,
                        read_depth=torch.ones(T, h, w), first_latent=torch.randn(48, h, w, generator=g),
                        chunk_index=chunk_index, num_frames=L, steps=1, guidance=1.0, extras=tuple(extras))


def test_rgb_encodes_render_mask_references_history(backend):
    be, codec = backend
    be.conditioning = "rgb"
    n = codec.encode_calls
    inp = be.build_inputs(_request(be, 0, 31, 121))
    assert codec.encode_calls - n == 2 and len(inp.pin) == 1 and not inp.lora  # render + mask; LoRA off in round 0
    n = codec.encode_calls
    inp = be.build_inputs(_request(be, 1, 21, 81, refs=3))
    # render + mask + one per reference image + one for the 9 overlap frames (-> 3 pinned latents)
    assert codec.encode_calls - n == 2 + 3 + 1 and len(inp.pin) == 3 and inp.reference.shape[2] == 3 and inp.lora
    assert inp.context.shape == (1, 96, 21, 2, 2)


def test_latent_encodes_only_the_history(backend):
    be, codec = backend
    be.conditioning = "latent"
    try:
        be.build_inputs(_request(be, 1, 21, 81, render=False))  # caches the constant levels of an 81-frame chunk
        n = codec.encode_calls
        req = _request(be, 2, 21, 81, render=False)
        inp = be.build_inputs(req)
        assert codec.encode_calls - n == 1  # the overlap frames re-encoded for pinning, nothing else
        ctx = inp.context[0].permute(1, 0, 2, 3)  # (T, 96, h, w)
        black = codec.constant_latent(0.0, 81, 32, 32)
        k = req.known[:, None]
        assert torch.equal(torch.where(k, req.read_latents, black), ctx[:, :48])
        assert torch.equal(ctx[:, 48:], torch.where(k, codec.constant_latent(0.5, 81, 32, 32),
                                                    codec.constant_latent(1.0, 81, 32, 32)))
    finally:
        be.conditioning = "rgb"


# ----------------------------------------------------------------------------------- end to end
def _args(model, out, *extra):
    return ["generate", ROOM, "--traj", "orbit_left", "--backend", "spatia", "--model", str(model), "--frames", "130",
            "--width", "32", "--height", "32", "--steps", "1", "--guidance", "1", "--out", str(out), "--depth", "prior",
            "--keep-latents", "--quiet", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("conditioning", ["rgb", "latent"])
def test_generate_spatia_end_to_end(converted, tmp_path, conditioning):
    out = tmp_path / conditioning
    assert main(_args(converted, out, "--conditioning", conditioning)) == 0
    rec = json.loads((out / "run.json").read_text())
    assert len(read_video(out / "video.mp4")) == 130
    assert [(c["frames"], c["padded_length"]) for c in rec["chunk_plan"]] == [([0, 120], 121), ([112, 129], 81)]
    assert rec["config"]["conditioning"] == conditioning and rec["backend"]["experimental"] == (conditioning == "latent")
    assert rec["backend"]["last_chunk"]["pinned_frames"] == 3 and rec["backend"]["last_chunk"]["lora"] is True
    if conditioning == "rgb":
        assert rec["chunks"][1]["references"] and all(f % 4 == 0 and f < 112 for f in rec["chunks"][1]["references"])


@pytest.mark.slow
def test_spatia_resume_is_bit_identical(converted, tmp_path, monkeypatch):
    a, c = tmp_path / "a", tmp_path / "c"
    assert main(_args(converted, a)) == 0
    import mirage_cli.pipeline.loop as loop

    real = loop.run_chunk

    def dies(chunk, *args, **kw):
        if chunk.index == 1:
            raise KeyboardInterrupt
        return real(chunk, *args, **kw)

    monkeypatch.setattr(loop, "run_chunk", dies)
    main(_args(converted, c))
    monkeypatch.setattr(loop, "run_chunk", real)
    assert json.loads((c / "run.json").read_text())["status"] == "interrupted"
    assert main(["generate", "--resume", str(c), "--quiet"]) == 0
    for i in range(2):
        name = f"chunks/chunk_{i:03d}.latents.safetensors"
        assert torch.equal(load_file(str(a / name))["latents"], load_file(str(c / name))["latents"])
    assert np.array_equal(read_video(a / "video.mp4"), read_video(c / "video.mp4"))


# ----------------------------------------------------------------------------------- trajectory format
def test_spatia_w2c_txt_round_trip_and_errors(tmp_path):
    from dataclasses import replace

    from mirage_cli.trajectories import load_trajectory
    from mirage_cli.trajectories.formats import detect_format, read_trajectory, save_trajectory

    traj = replace(load_trajectory("orbit_left"), scale="absolute", fps=24.0)  # Spatia's files are metric
    k = traj.cameras.intrinsics
    traj.cameras.intrinsics = k[:1].expand_as(k).clone()  # Spatia: one intrinsics set for all frames
    files = save_trajectory(traj, tmp_path / "case", "spatia")
    w2c = tmp_path / "case" / "w2c.txt"
    assert [f.name for f in files] == ["w2c.txt", "intrinsics.txt"] and detect_format(w2c) == "spatia"
    lines = w2c.read_text().splitlines()
    assert len(lines) == len(traj) and json.loads(lines[0])[3] == [0.0, 0.0, 0.0, 1.0]  # JSON Lines, 4x4 w2c
    back = read_trajectory(w2c)
    assert back.fps == 24.0 and back.scale == "absolute" and abs(back.cameras.height - 704) < 400
    assert torch.allclose(back.cameras.c2w, traj.cameras.c2w, atol=1e-8)
    assert torch.allclose(back.cameras.intrinsics, traj.cameras.intrinsics, atol=1e-9)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "w2c.txt").write_text(lines[0] + "\n[[1, 2, 3]]\n")
    with pytest.raises(MirageError, match=r"frame 1 \(line 2\): w2c: expected a 3x4 or 4x4 matrix"):
        read_trajectory(tmp_path / "bad" / "w2c.txt")


def test_the_convert_line_says_which_lora_keys_spatia_ignores():
    from mirage_cli.models.convert import Ignored

    line = Ignored(80, 80).line()
    assert line.startswith("80 .alpha keys ignored: Spatia's loader scales every LoRA by 1") and "--lora-alpha" in line
    assert Ignored(3, 1).line().endswith("; 2 keys without pipe.dit. ignored, as Spatia's loader does")
    assert Ignored(0, 0).line() == ""
