"""WanVAECodec and the wan-vace backend, on tiny random-weight instances of the real classes.

The kit is written in Hub layout and loaded back through ``load_wan_vace`` -- the same code that
loads real weights.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mirage_cli.backends import Backend, ChunkRequest
from mirage_cli.backends.wan_vace import build_vace_context, chunk_generator, load_wan_vace
from mirage_cli.errors import MirageError
from mirage_cli.models.codecs import Codec
from mirage_cli.models.tiny import make_tiny_kit, save_tiny_vace
from mirage_cli.models.wan_vae import WanVAECodec

H, W = 32, 64  # latent grid 4 x 8
T = 3  # latent frames per chunk (9 video frames)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return make_tiny_kit(tmp_path_factory.mktemp("tiny") / "kit")


@pytest.fixture(scope="module")
def loaded(kit):
    return load_wan_vace(str(kit["vace"]), device="cpu")


def _request(codec, chunk_index=0, seed=0, known_frac=0.5, **kw):
    g = torch.Generator().manual_seed(100 + chunk_index)
    h, w = H // 8, W // 8
    first = torch.randn(codec.channels, h, w, generator=g)
    read = torch.randn(T, codec.channels, h, w, generator=g)
    known = torch.rand(T, h, w, generator=g) < known_frac
    read = read * known[:, None]  # zeros where unknown, as the memory returns
    base = dict(read_latents=read, known=known, read_depth=known.float() * 2.0, first_latent=first,
                chunk_index=chunk_index, num_frames=1 + 4 * (T - 1), prompt="a photo of a room",
                negative_prompt="blurry low quality", seed=seed, steps=2, guidance=1.0)
    base.update(kw)
    return ChunkRequest(**base)


def _capture_context(backend, monkeypatch):
    seen = []
    orig = backend._velocity

    def spy(x, ts, emb, ctx, scale):
        seen.append((x.clone(), ctx.clone()))
        return orig(x, ts, emb, ctx, scale)

    monkeypatch.setattr(backend, "_velocity", spy)
    return seen


# ----------------------------------------------------------------------------------------- codec
def test_codec_shapes_normalisation_and_protocol(loaded):
    _, codec = loaded
    assert isinstance(codec, Codec)
    assert (codec.name, codec.channels, codec.spatial_factor, codec.temporal_factor) == ("wan2.1-vae", 16, 8, 4)
    frames = torch.rand(10, 3, 32, 48, generator=torch.Generator().manual_seed(0))  # 10 -> 1 + 4*2 used
    z = codec.encode(frames)
    assert z.shape == (3, 16, 4, 6) and z.dtype == torch.float32
    with torch.no_grad():
        raw = codec.vae.encode(frames[:9].permute(1, 0, 2, 3)[None] * 2 - 1).latent_dist.mode()[0]
    mean = torch.tensor(codec.vae.config.latents_mean).view(-1, 1, 1, 1)
    std = torch.tensor(codec.vae.config.latents_std).view(-1, 1, 1, 1)
    torch.testing.assert_close(z, ((raw - mean) / std).permute(1, 0, 2, 3))
    x = codec.decode(z)
    assert x.shape == (9, 3, 32, 48) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(MirageError, match="divisible by 8"):
        codec.encode(torch.rand(1, 3, 30, 48))
    d = codec.describe()
    assert d["weights"] == "random" and d["dtype"] == "fp32" and d["tiling"] is True


def test_grey_latent_cached_per_shape_and_latent_to_rgb(kit):
    codec = WanVAECodec.from_pretrained(kit["vace"], device="cpu")
    g1 = codec.grey_latent(9, H, W)
    g2 = codec.grey_latent(11, H, W)  # 11 frames -> same 3 latent frames: same cache entry
    assert g1.shape == (3, 16, H // 8, W // 8) and torch.equal(g1, g2) and codec.encode_calls == 1
    torch.testing.assert_close(g1, codec.encode(torch.full((9, 3, H, W), 0.5)))
    codec.grey_latent(5, H, W)
    assert codec.encode_calls == 3
    rgb = codec.latent_to_rgb(g1[0].flatten(1).T)
    assert rgb.shape == (H // 8 * W // 8, 3) and 0 <= rgb.min() and rgb.max() <= 1
    codec.latent_to_rgb(g1[1].flatten(1).T)
    assert codec.calibration_calls == 1 and codec.encode_calls == 3


@pytest.mark.parametrize("kind,channels,factor", [("wan2.1", 16, 8), ("wan2.2", 48, 16)])
def test_random_codecs_real_architecture(kind, channels, factor):
    codec = WanVAECodec.random(kind, device="cpu", tiny=True)
    assert (codec.channels, codec.spatial_factor, codec.weights) == (channels, factor, "random")
    z = codec.encode(torch.rand(5, 3, 32, 32))
    assert z.shape == (2, channels, 32 // factor, 32 // factor)
    assert codec.decode(z).shape == (5, 3, 32, 32)
    again = WanVAECodec.random(kind, tiny=True)  # seeded: same weights
    assert all(torch.equal(a, b) for a, b in zip(codec.vae.parameters(), again.vae.parameters()))


# ----------------------------------------------------------------------------------------- context
def test_vace_context_is_built_from_the_read(loaded, monkeypatch):
    backend, codec = loaded
    assert isinstance(backend, Backend)
    req = _request(codec, chunk_index=1)  # no pinning: every frame comes from the read
    seen = _capture_context(backend, monkeypatch)
    backend.denoise(req)
    ctx = seen[0][1][0]  # (96, T, h, w)
    assert ctx.shape == (96, T, H // 8, W // 8) == (backend.transformer.config.vace_in_channels, T, 4, 8)
    inactive, reactive, mask = ctx[:16].permute(1, 0, 2, 3), ctx[16:32].permute(1, 0, 2, 3), ctx[32:]
    grey = codec.grey_latent(req.num_frames, H, W)
    k = req.known[:, None].expand_as(inactive)
    assert torch.equal(inactive[k], req.read_latents[k])  # known cells carry the memory's latents exactly
    assert torch.equal(inactive[~k], grey[~k])
    assert torch.equal(reactive, grey)
    assert torch.equal(mask, (~req.known).float()[None].expand(64, -1, -1, -1))


def test_mask_channels_match_the_diffusers_pipeline_layout(loaded):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline

    backend, codec = loaded
    pipe = WanVACEPipeline(tokenizer=backend.tokenizer, text_encoder=backend.text_encoder, vae=codec.vae,
                           scheduler=FlowMatchEulerDiscreteScheduler(), transformer=backend.transformer)
    known = torch.rand(H // 8, W // 8, generator=torch.Generator().manual_seed(3)) < 0.5
    pixel_mask = (~known).float().repeat_interleave(8, 0).repeat_interleave(8, 1)  # 1 = generate
    video_mask = pixel_mask[None, None, None].expand(1, 3, 9, H, W)  # (B, C, T, H, W), constant in time
    theirs = pipe.prepare_masks(video_mask, reference_images=[[]])[0]  # (64, T_lat, h, w)
    grey = torch.zeros(T, 16, H // 8, W // 8)
    ours = build_vace_context(grey, known[None].expand(T, -1, -1), grey, 64)[0, 32:]
    assert theirs.shape == ours.shape == (64, T, H // 8, W // 8)
    assert torch.equal(theirs, ours)


def test_sampling_loop_matches_diffusers_pipeline(loaded):
    """Nothing known and nothing pinned == WanVACEPipeline with no video/mask, same noise and scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline

    backend, codec = loaded
    req = _request(codec, chunk_index=1, seed=7, known_frac=0.0, steps=3, guidance=4.0)
    ours = backend.denoise(req)
    pipe = WanVACEPipeline(tokenizer=backend.tokenizer, text_encoder=backend.text_encoder, vae=codec.vae,
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=backend.shift),
                           transformer=backend.transformer)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn((1, 16, T, H // 8, W // 8), generator=chunk_generator(7, 1))
    theirs = pipe(prompt=req.prompt, negative_prompt=req.negative_prompt, height=H, width=W, num_frames=9,
                  num_inference_steps=3, guidance_scale=4.0, latents=noise, output_type="latent").frames
    torch.testing.assert_close(ours, theirs[0].permute(1, 0, 2, 3), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------- denoise
def test_reads_do_no_vae_encode(kit):
    backend, codec = load_wan_vace(str(kit["vace"]), device="cpu")
    encoder_runs = []
    orig = codec.vae.encode
    codec.vae.encode = lambda x, *a, **k: (encoder_runs.append(tuple(x.shape)), orig(x, *a, **k))[1]
    image = torch.rand(1, 3, H, W)
    first = codec.encode(image)[0]  # the input image: 1 encode
    prev = None
    for c in range(3):
        req = _request(codec, chunk_index=c, first_latent=first, preceding=prev)
        out = backend.denoise(req)
        prev = out[-1:]
    assert codec.encode_calls == 2  # the image + the grey latent of this chunk shape, once
    assert len(encoder_runs) == 2


def test_deterministic_for_a_seed_and_pins(loaded):
    backend, codec = loaded
    req = _request(codec, chunk_index=0, seed=3, guidance=3.0)
    a, b = backend.denoise(req), backend.denoise(req)
    assert a.shape == (T, 16, H // 8, W // 8) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, backend.denoise(_request(codec, chunk_index=0, seed=4, guidance=3.0)))
    assert torch.equal(a[0], req.first_latent)  # frame 0 of chunk 0 is the input image's latent
    prev = torch.randn(2, 16, H // 8, W // 8)
    out = backend.denoise(_request(codec, chunk_index=1, preceding=prev))
    assert torch.equal(out[0], prev[-1])  # a later chunk starts on the previous chunk's last frame


def test_preceding_context_and_reference_frames(loaded, monkeypatch):
    backend, codec = loaded
    prev = torch.randn(2, 16, H // 8, W // 8)
    ref = torch.randn(1, 16, H // 8, W // 8)
    seen = _capture_context(backend, monkeypatch)
    monkeypatch.setattr(backend, "preceding_frames", 2)
    out = backend.denoise(_request(codec, chunk_index=1, preceding=prev, reference=ref))
    assert out.shape == (T, 16, H // 8, W // 8) and torch.equal(out[0], prev[-1])
    x, ctx = seen[0]
    assert x.shape[2] == ctx.shape[2] == 1 + 1 + T  # reference + extra preceding + chunk
    assert torch.equal(ctx[0, :16, 0], ref[0]) and ctx[0, 16:, 0].abs().sum() == 0  # as the pipeline: ref, 0, 0
    assert torch.equal(ctx[0, :16, 1], prev[0]) and ctx[0, 32:, 1:3].sum() == 0  # pinned frames: keep


def test_progress_guidance_and_prompt_cache(loaded):
    backend, codec = loaded
    calls = []
    backend.denoise(_request(codec, steps=3, guidance=2.0, prompt="a room with a window"),
                    progress=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    n = len(backend._prompt_cache)
    backend.denoise(_request(codec, steps=1, guidance=2.0, prompt="a  room with a window "))  # same after cleaning
    assert len(backend._prompt_cache) == n
    d = backend.describe()
    assert d["name"] == "wan-vace" and d["weights"] == "random" and d["steps"] == 1 and d["shift"] == 3.0
    assert d["device"] == "cpu" and d["dtype"] == "fp32"


def test_invalid_requests(loaded):
    backend, codec = loaded
    with pytest.raises(MirageError, match="divisible by 16"):
        backend.denoise(ChunkRequest(read_latents=torch.zeros(1, 16, 5, 8), known=torch.zeros(1, 5, 8, dtype=bool),
                                     read_depth=torch.zeros(1, 5, 8), first_latent=torch.zeros(16, 5, 8)))
    with pytest.raises(MirageError, match="3-channel"):
        backend.denoise(ChunkRequest(read_latents=torch.zeros(1, 3, 4, 8), known=torch.zeros(1, 4, 8, dtype=bool),
                                     read_depth=torch.zeros(1, 4, 8), first_latent=torch.zeros(3, 4, 8)))
    with pytest.raises(MirageError, match="steps"):
        backend.denoise(_request(codec, steps=0))


# ----------------------------------------------------------------------------------------- loading
def test_loader_accepts_any_diffusers_layout(tmp_path):
    root = save_tiny_vace(tmp_path / "other", seed=1, max_shard_size="100KB", num_layers=2, vace_layers=[0])
    assert list((root / "transformer").glob("*.safetensors.index.json"))  # sharded like the real repos
    (root / "mirage_random_weights.json").unlink()
    backend, codec = load_wan_vace(str(root), device="cpu", dtype="fp32")
    assert backend.describe()["weights"] == "real" and backend.transformer.config.num_layers == 2
    out = backend.denoise(_request(codec, steps=1))
    assert out.shape == (T, 16, H // 8, W // 8)


def test_registry_name_loads_from_the_hf_cache_offline(tmp_path, kit, monkeypatch):
    import shutil

    repo = tmp_path / "hf" / "hub" / "models--Wan-AI--Wan2.1-VACE-1.3B-diffusers"
    shutil.copytree(kit["vace"], repo / "snapshots" / "c0ffee", ignore=shutil.ignore_patterns("depth"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend, codec = load_wan_vace("wan2.1-vace-1.3b", device="cpu", progress=False)
    assert backend.describe()["model"] == "wan2.1-vace-1.3b" and codec.source.endswith("c0ffee/vae")
    assert WanVAECodec.from_pretrained("Wan-AI/Wan2.1-VACE-1.3B-diffusers", device="cpu").channels == 16


def test_loader_rejects_other_models(tmp_path, kit):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(kit["vace"], root)
    index = json.loads((root / "model_index.json").read_text())
    index["transformer"] = ["diffusers", "WanTransformer3DModel"]
    (root / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(MirageError, match="expected WanVACETransformer3DModel"):
        load_wan_vace(str(root), device="cpu")
    shutil.rmtree(root / "vae")
    with pytest.raises(MirageError, match="vae/ is missing"):
        load_wan_vace(str(root), device="cpu")


def test_offline_missing_model_fails_in_under_a_second_without_importing_diffusers(tmp_path):
    script = textwrap.dedent("""
        import json, sys, time
        from mirage_cli.backends.wan_vace import load_wan_vace
        from mirage_cli.errors import MirageError
        t0 = time.perf_counter()
        try:
            load_wan_vace("wan2.1-vace-1.3b")
            msg = None
        except MirageError as e:
            msg = str(e)
        print(json.dumps({"t": time.perf_counter() - t0, "msg": msg, "diffusers": "diffusers" in sys.modules}))
    """)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["msg"] and out["t"] < 1.0 and not out["diffusers"]
    assert "Wan-AI/Wan2.1-VACE-1.3B-diffusers" in out["msg"] and "mirage models download wan2.1-vace-1.3b" in out["msg"]


def test_cli_models_tiny_writes_the_hub_layout(tmp_path):
    from mirage_cli.cli import main

    target = tmp_path / "k"
    assert main(["models", "tiny", str(target)]) == 0
    for rel in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json",
                "text_encoder/config.json", "transformer/config.json", "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors", "depth/config.json", "depth/preprocessor_config.json"):
        assert (target / rel).is_file(), rel
    assert main(["models", "tiny", str(target)]) == 2  # never overwrites


def test_clean_prompt_matches_diffusers_wan_prompt_clean():
    """clean_prompt re-implements diffusers' (non-public) Wan ``prompt_clean``; catch drift."""
    from mirage_cli.backends.wan_vace import clean_prompt

    wan = pytest.importorskip("diffusers.pipelines.wan.pipeline_wan")
    if not hasattr(wan, "prompt_clean"):
        pytest.skip("this diffusers has no prompt_clean")
    for text in ["  a  cosy\n\troom ", "fish &amp;amp; chips", "caf\u00c3\u00a9 at dusk", "", "one\u00a0two   three"]:
        assert clean_prompt(text) == wan.prompt_clean(text), text


def test_quiet_silences_the_libraries_loading_bars(kit, tmp_path, capfd):
    """`generate --backend wan-vace --quiet` prints nothing on stderr; without --quiet the
    transformers/diffusers weight-loading bars show (so the check can see them)."""
    from pathlib import Path

    from mirage_cli.cli import main

    example = str(Path(__file__).resolve().parents[1] / "examples" / "room.png")
    args = ["generate", example, "--traj", "orbit_left", "--frames", "5", "--width", "112", "--backend", "wan-vace",
            "--model", str(kit["vace"]), "--steps", "1", "--depth", "model", "--depth-model", str(kit["depth"])]
    assert main(args + ["--out", str(tmp_path / "loud")]) == 0
    loud = capfd.readouterr()
    assert "Loading weights" in loud.err and "random weights" in loud.out  # the summary says so (review 32)
    assert main(args + ["--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capfd.readouterr().err == ""
