"""The ``mirage`` backend on the tiny kit: kit -> ``models convert`` -> ``load_mirage`` -> one chunk."""

import math
import time

import pytest
import torch

from mirage_cli.backends import Backend, ChunkRequest, PrecedingReads
from mirage_cli.backends.mirage import frame_timesteps, load_mirage, reference_sigmas
from mirage_cli.errors import MirageError

C, h, w, T = 48, 4, 6, 3  # 64 x 96 pixels, 9 video frames


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_mirage(str(model_dir), device="cpu", progress=False)


def _request(chunk_index=0, **kw):
    g = torch.Generator().manual_seed(7 + chunk_index)
    read = torch.randn(T, C, h, w, generator=g)
    known = torch.rand(T, h, w, generator=g) < 0.6
    base = dict(read_latents=read * known[:, None], known=known, read_depth=known.float(),
                first_latent=torch.randn(C, h, w, generator=g), chunk_index=chunk_index, num_frames=1 + 4 * (T - 1),
                prompt="a photo of a room", seed=3, steps=2, guidance=1.0)
    base.update(kw)
    return ChunkRequest(**base)


def _spy(backend, monkeypatch):
    calls = []
    orig = backend._velocity

    def spy(seq, ts, emb, ctx, n_ref):
        v = orig(seq, ts, emb, ctx, n_ref)
        calls.append(dict(seq=seq.clone(), ts=ts.clone(), ctx=ctx.clone(), n_ref=n_ref, v=v.clone()))
        return v

    monkeypatch.setattr(backend, "_velocity", spy)
    return calls


def test_one_chunk_is_deterministic_pins_frame0_and_encodes_white_once_per_shape(model_dir):
    backend, codec = load_mirage(str(model_dir), device="cpu", progress=False)
    assert isinstance(backend, Backend) and codec.name == "wan2.2-vae" and codec.spatial_factor == 16
    assert codec.encode_calls == 0
    req = _request()
    a = backend.denoise(req)
    assert codec.encode_calls == 1  # the white-video latent of this chunk shape
    b = backend.denoise(req)
    assert codec.encode_calls == 1
    assert a.shape == (T, C, h, w) and torch.equal(a, b)
    assert torch.equal(a[0], req.first_latent)
    assert torch.isfinite(a).all() and not torch.equal(a[1:], b[1:] * 0)
    other = backend.denoise(_request(seed=4))
    assert (other[1:] - a[1:]).abs().max() > 1e-3
    # a second chunk with 2 preceding frames: context over T + 2 frames -> one more white latent, then cached
    prec = torch.randn(4, C, h, w)
    backend.denoise(_request(chunk_index=1, preceding=prec))
    backend.denoise(_request(chunk_index=2, preceding=prec))
    assert codec.encode_calls == 2
    d = backend.describe()
    assert d["name"] == "mirage" and d["weights"] == "random" and d["transformer"]["class"] == "MirageTransformer3DModel"


def test_sequence_timesteps_and_context_follow_the_reference_loop(loaded, monkeypatch):
    backend, codec = loaded
    calls = _spy(backend, monkeypatch)
    prec = torch.randn(4, C, h, w)
    prec_read = torch.randn(4, C, h, w)
    prec_known = torch.rand(4, h, w) < 0.5
    ref = torch.randn(2, C, h, w)
    req = _request(chunk_index=1, preceding=prec, extras=(PrecedingReads(prec_read, prec_known),),
                   reference=ref, steps=3)
    out = backend.denoise(req)
    assert torch.equal(out[0], prec[-1])  # the overlap frame is pinned
    assert len(calls) == 3
    sig = reference_sigmas(3)
    shifted = 5.0 * sig / (1 + 4.0 * sig)  # the documented sigmas after UniPC's flow shift
    for i, c in enumerate(calls):
        seq, ts = c["seq"][0].float(), c["ts"][0]
        assert c["n_ref"] == 2 and seq.shape[1] == 2 + T + 2
        assert torch.equal(seq[:, :2].permute(1, 0, 2, 3), ref)
        assert torch.equal(seq[:, 2 + T:].permute(1, 0, 2, 3), prec[1:3])  # the 2 frames before the overlap
        assert torch.equal(seq[:, 2], prec[-1])
        # integer timesteps, as Wan's FlowUniPC and diffusers' UniPC both truncate sigma * 1000 to int64
        expect = [0.0] * 3 + [math.floor(1000 * shifted[i])] * (T - 1) + [0.0] * 2
        assert ts.tolist() == expect
    ctx = calls[0]["ctx"][0].float()  # (96, T + 2, h, w)
    assert ctx.shape == (2 * C, T + 2, h, w)
    read = (req.read_latents * req.known[:, None]).permute(1, 0, 2, 3)
    assert torch.equal(ctx[:C, :T], read)
    assert torch.equal(ctx[:C, T:], (prec_read[1:3] * prec_known[1:3, None]).permute(1, 0, 2, 3))
    white = codec.constant_latent(1.0, 1 + 4 * (T + 1), h * 16, w * 16).permute(1, 0, 2, 3)
    assert torch.equal(ctx[C:], white)
    assert not torch.equal(white[:, 0], white[:, 1])  # causal VAE: frame 0 differs


def test_single_step_is_the_flow_x0_prediction(loaded, monkeypatch):
    """One UniPC step from sigma_0 to 0 is first order: x0 = x - sigma_0 v (hand-computed)."""
    backend, _ = loaded
    calls = _spy(backend, monkeypatch)
    req = _request(steps=1)
    out = backend.denoise(req)
    s0 = float(5.0 * 0.999 / (1 + 4.0 * 0.999))
    x = calls[0]["seq"][0].float()  # no references / preceding in chunk 0
    v = calls[0]["v"][0]
    expect = (x - s0 * v).permute(1, 0, 2, 3)
    assert (out[1:] - expect[1:]).abs().max() < 1e-4
    assert frame_timesteps(torch.tensor(500.0), 1, 3, 1).tolist() == [[0.0, 0.0, 500.0, 500.0, 0.0]]


def test_guidance_progress_and_zero_preceding(model_dir, monkeypatch):
    backend, codec = load_mirage(str(model_dir), device="cpu", progress=False, preceding_frames=0)
    calls = _spy(backend, monkeypatch)
    seen = []
    backend.denoise(_request(chunk_index=1, preceding=torch.randn(3, C, h, w), guidance=4.0,
                             negative_prompt="blurry"), progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 2), (2, 2)]
    assert len(calls) == 4  # cond + uncond per step
    assert calls[0]["seq"].shape[2] == T and calls[0]["ctx"].shape[2] == T
    assert backend.describe()["prompts_cached"] == 2


def test_invalid_requests_and_models(loaded, tiny_kit, tmp_path, monkeypatch):
    backend, _ = loaded
    with pytest.raises(MirageError, match="48"):
        backend.denoise(_request(read_latents=torch.zeros(T, 16, h, w)))
    with pytest.raises(MirageError, match="divisible"):
        backend.denoise(_request(read_latents=torch.zeros(T, C, h, 5), known=torch.ones(T, h, 5, dtype=torch.bool)))
    with pytest.raises(MirageError, match="steps"):
        backend.denoise(_request(steps=0))
    with pytest.raises(MirageError, match="MirageTransformer3DModel"):
        load_mirage(str(tiny_kit["vace"]), device="cpu", progress=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(MirageError, match="mirage models download"):
        load_mirage("someone/mirage-weights", device="cpu")
    assert time.perf_counter() - t0 < 1.0
