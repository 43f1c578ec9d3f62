"""The paper's model: MirageTransformer3DModel, `mirage models convert`, the tiny mirage kit.

The subclass is checked against an independent re-statement of the reference network written here
(complex float64 RoPE with negative time positions, per-token modulation, VACE on non-reference tokens),
the LoRA fusion against peft, and a reference-named VACE/LoRA pair against the same weights built
directly in diffusers naming.
"""

import json
import re
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mirage_cli.cli import main
from mirage_cli.errors import MirageError
from mirage_cli.models.convert import convert_mirage, sha256_file
from mirage_cli.models.tiny import (
    LORA_TARGETS,
    TINY_MIRAGE_VACE,
    TINY_WAN22_TRANSFORMER_CONFIG,
    make_tiny_kit,
    tiny_mirage_weights,
)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return make_tiny_kit(tmp_path_factory.mktemp("mirage-kit") / "kit", kind="mirage")


@pytest.fixture(scope="module")
def converted(kit, tmp_path_factory):
    out = tmp_path_factory.mktemp("mirage-out") / "model"
    report = convert_mirage(kit["base"], kit["vace_file"], kit["lora_file"], out, max_shard_bytes=60_000)
    return out, report


def _model(**over):
    from mirage_cli import MirageTransformer3DModel

    torch.manual_seed(0)
    return MirageTransformer3DModel(**{**TINY_WAN22_TRANSFORMER_CONFIG, **TINY_MIRAGE_VACE, **over}).eval()


def _base(kit):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(kit["base"] / "transformer").eval()


# ------------------------------------------------------------------------ independent re-statement
def _reference_forward(m, x, t_frames, text, vace_ctx, R):
    """The reference's ``model_fn_wan_video`` + ``DiTBlock`` + ``VaceWanAttentionBlock`` + ``Head``, restated.

    Original semantics, written from the reference (not from diffusers): float64 sinusoid ``[cos, sin]``,
    complex float64 RoPE with reference frames at time ``-R..-1`` and height ``h..2h-1``, per-token
    modulation, VACE on the non-reference tokens, hints added to those tokens only.
    """
    p = dict(m.named_parameters())
    cfg = m.config
    heads, hd = cfg.num_attention_heads, cfg.attention_head_dim
    dim, eps = heads * hd, cfg.eps
    _, _, Fr, H, W = x.shape
    h, w = H // 2, W // 2
    n_ref = R * h * w

    def lin(v, name):
        return F.linear(v, p[name + ".weight"], p[name + ".bias"])

    def ln(v, weight=None, bias=None):
        return F.layer_norm(v, (dim,), weight, bias, eps)

    def rms(v, weight):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps) * weight

    # timestep per token
    half = cfg.freq_dim // 2
    tt = t_frames.double().repeat_interleave(h * w)
    ang = torch.outer(tt, torch.pow(10000, -torch.arange(half, dtype=torch.float64) / half))
    sin_emb = torch.cat([torch.cos(ang), torch.sin(ang)], 1).float()
    e = lin(F.silu(lin(sin_emb, "condition_embedder.time_embedder.linear_1")), "condition_embedder.time_embedder.linear_2")
    e0 = lin(F.silu(e), "condition_embedder.time_proj").unflatten(-1, (6, dim))  # (N, 6, dim)
    ctx = lin(F.gelu(lin(text[0], "condition_embedder.text_embedder.linear_1"), approximate="tanh"),
              "condition_embedder.text_embedder.linear_2")

    # rope: complex, per axis (dims as the reference: f = d - 2(d//3), h = w = d//3 complex pairs*2)
    d = hd
    dims = (d - 2 * (d // 3), d // 3, d // 3)

    def axis(dd, pos):
        f = 1.0 / (10000 ** (torch.arange(0, dd, 2)[: dd // 2].double() / dd))
        return torch.polar(torch.ones(len(pos), dd // 2, dtype=torch.float64), torch.outer(pos.double(), f))

    def grid(tpos, hpos, wpos):
        ft, fh, fw = axis(dims[0], tpos), axis(dims[1], hpos), axis(dims[2], wpos)
        nt, nh, nw = len(tpos), len(hpos), len(wpos)
        return torch.cat([ft[:, None, None].expand(nt, nh, nw, -1), fh[None, :, None].expand(nt, nh, nw, -1),
                          fw[None, None].expand(nt, nh, nw, -1)], -1).reshape(nt * nh * nw, -1)

    freqs = grid(torch.arange(Fr - R), torch.arange(h), torch.arange(w))
    if R:
        freqs = torch.cat([grid(torch.arange(-R, 0), torch.arange(h, 2 * h), torch.arange(w)), freqs])

    def rope(v, fr):
        c = torch.view_as_complex(v.double().reshape(v.shape[0], heads, -1, 2))
        return torch.view_as_real(c * fr[:, None]).flatten(1).float()

    def attn(q, k, v):
        q, k, v = (t.view(t.shape[0], heads, hd).transpose(0, 1) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(-1, dim)

    def block(pre, v, mod, fr):
        m6 = p[pre + ".scale_shift_table"][0] + mod  # (N, 6, dim)
        sh, sc, g, csh, csc, cg = m6.unbind(1)
        y = ln(v) * (1 + sc) + sh
        q = rope(rms(lin(y, pre + ".attn1.to_q"), p[pre + ".attn1.norm_q.weight"]), fr)
        k = rope(rms(lin(y, pre + ".attn1.to_k"), p[pre + ".attn1.norm_k.weight"]), fr)
        v = v + g * lin(attn(q, k, lin(y, pre + ".attn1.to_v")), pre + ".attn1.to_out.0")
        y = ln(v, p[pre + ".norm2.weight"], p[pre + ".norm2.bias"])  # the original's affine norm3
        q = rms(lin(y, pre + ".attn2.to_q"), p[pre + ".attn2.norm_q.weight"])
        k = rms(lin(ctx, pre + ".attn2.to_k"), p[pre + ".attn2.norm_k.weight"])
        v = v + lin(attn(q, k, lin(ctx, pre + ".attn2.to_v")), pre + ".attn2.to_out.0")
        y = ln(v) * (1 + csc) + csh
        return v + cg * lin(F.gelu(lin(y, pre + ".ffn.net.0.proj"), approximate="tanh"), pre + ".ffn.net.2")

    tok = F.conv3d(x, p["patch_embedding.weight"], p["patch_embedding.bias"], stride=(1, 2, 2)).flatten(2)[0].T
    c = F.conv3d(vace_ctx, p["vace_patch_embedding.weight"], p["vace_patch_embedding.bias"],
                 stride=(1, 2, 2)).flatten(2)[0].T
    c = torch.cat([c, c.new_zeros(len(tok) - n_ref - len(c), dim)])
    hints = []
    for j in range(len(cfg.vace_layers)):
        pre = f"vace_blocks.{j}"
        if j == 0:
            c = lin(c, pre + ".proj_in") + tok[n_ref:]
        c = block(pre, c, e0[n_ref:], freqs[n_ref:])
        hints.append(lin(c, pre + ".proj_out"))
    for i in range(cfg.num_layers):
        tok = block(f"blocks.{i}", tok, e0, freqs)
        if i in cfg.vace_layers:
            tok = torch.cat([tok[:n_ref], tok[n_ref:] + hints[list(cfg.vace_layers).index(i)]])
    sh, sc = (p["scale_shift_table"][0] + e[:, None]).unbind(1)
    out = lin(ln(tok) * (1 + sc) + sh, "proj_out")  # (N, 1*2*2*C)
    C = cfg.out_channels
    out = out.view(Fr, h, w, 1, 2, 2, C).permute(6, 0, 3, 1, 4, 2, 5).reshape(C, Fr, H, W)
    return out[None]


def _inputs(seed=1, R=2, T=3, P=2, h=3, w=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 48, R + T + P, 2 * h, 2 * w, generator=g)
    text = torch.randn(1, 7, 32, generator=g)
    ctx = torch.randn(1, 96, T + P, 2 * h, 2 * w, generator=g)
    t = torch.tensor([0.0] * R + [0.0] + [731.0] * (T - 1) + [0.0] * P)
    return x, text, ctx, t


def test_forward_matches_an_independent_restatement_of_the_reference():
    m = _model()
    x, text, ctx, t = _inputs()
    with torch.no_grad():
        ours = m(x, t[None], text, ctx, num_ref_frames=2).sample
        ref = _reference_forward(m, x, t, text, ctx, R=2)
        # Reference frames matter: without them the target output changes.
        no_ref = m(x[:, :, 2:], t[None, 2:], text, ctx, num_ref_frames=0).sample
    assert ours.shape == x.shape
    rel = (ours - ref).abs().max() / ref.abs().max()
    assert rel < 1e-4, float(rel)
    assert (no_ref - ours[:, :, 2:]).abs().max() > 1e-3


def test_timestep_forms_agree_and_no_references_is_the_stock_forward():
    m = _model()
    x, text, ctx, t = _inputs(R=0, P=0, T=4)
    f, hw = x.shape[2], (x.shape[3] // 2) * (x.shape[4] // 2)
    with torch.no_grad():
        per_frame = m(x, t[None], text, ctx).sample
        per_token = m(x, t.repeat_interleave(hw)[None], text, ctx).sample
        scalar = m(x, torch.tensor([500.0]), text, ctx).sample
        stock = super(type(m), m).forward(x, torch.tensor([500.0]), text, control_hidden_states=ctx).sample
        frame500 = m(x, torch.full((1, f), 500.0), text, ctx).sample
    assert (per_frame - per_token).abs().max() < 1e-5
    assert torch.equal(scalar, stock)
    assert (frame500 - scalar).abs().max() < 1e-5
    with pytest.raises(ValueError, match="timestep"):
        m(x, torch.zeros(1, f + 1), text, ctx)
    with pytest.raises(ValueError, match="num_ref_frames"):
        m(x, t[None], text, ctx, num_ref_frames=f + 1)


def test_import_mirage_cli_stays_light_and_reexports_the_class():
    code = ("import sys, mirage_cli; assert 'diffusers' not in sys.modules; "
            "from mirage_cli import MirageTransformer3DModel as M; "
            "from diffusers import WanVACETransformer3DModel as V; assert issubclass(M, V); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    import mirage_cli

    with pytest.raises(AttributeError):
        mirage_cli.NoSuchThing  # noqa: B018


# ------------------------------------------------------------------------ tiny kit files
def test_tiny_kit_files_use_the_reference_naming(kit):
    per_block = ([f"{a}.{p}.{wb}" for a in ("self_attn", "cross_attn") for p in "qkvo" for wb in ("weight", "bias")]
                 + [f"{a}.norm_{p}.weight" for a in ("self_attn", "cross_attn") for p in "qk"]
                 + ["norm3.weight", "norm3.bias", "ffn.0.weight", "ffn.0.bias", "ffn.2.weight", "ffn.2.bias",
                    "modulation", "after_proj.weight", "after_proj.bias"])
    expected = {f"vace_blocks.{j}.{k}" for j in range(2) for k in per_block}
    expected |= {"vace_blocks.0.before_proj.weight", "vace_blocks.0.before_proj.bias",
                 "vace_patch_embedding.weight", "vace_patch_embedding.bias"}
    with safe_open(str(kit["vace_file"]), "pt") as f:
        assert set(f.keys()) == expected
        assert f.get_tensor("vace_blocks.0.modulation").dtype == torch.bfloat16
    lora = {f"pipe.dit.blocks.{i}.{mod}.lora_{ab}.weight" for i in range(4)
            for mod in LORA_TARGETS for ab in "AB"}
    with safe_open(str(kit["lora_file"]), "pt") as f:
        assert set(f.keys()) == lora
        width = TINY_WAN22_TRANSFORMER_CONFIG["num_attention_heads"] * TINY_WAN22_TRANSFORMER_CONFIG["attention_head_dim"]
        assert tuple(f.get_slice("pipe.dit.blocks.0.ffn.0.lora_A.weight").get_shape()) == (4, width)
        assert tuple(f.get_slice("pipe.dit.blocks.0.ffn.0.lora_B.weight").get_shape()) == (
            TINY_WAN22_TRANSFORMER_CONFIG["ffn_dim"], 4)
    cfg = json.loads((kit["base"] / "vae" / "config.json").read_text())
    assert (cfg["z_dim"], cfg["is_residual"], cfg["patch_size"], cfg["scale_factor_spatial"]) == (48, True, 2, 16)
    assert json.loads((kit["base"] / "model_index.json").read_text())["expand_timesteps"] is True


# ------------------------------------------------------------------------ conversion
def _direct_model(kit, lora_scale=1.0):
    """The same weights built directly in diffusers naming (no file in the reference's naming involved)."""
    base = _base(kit)
    vace, lora = tiny_mirage_weights(base, seed=0)
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    for name, (a, b) in lora.items():  # the kit stores bf16 factors
        a, b = a.to(torch.bfloat16).float(), b.to(torch.bfloat16).float()
        sd[name + ".weight"] = sd[name + ".weight"] + lora_scale * b @ a
    sd.update({k: v.to(torch.bfloat16).float() for k, v in vace.items()})
    m = _model()
    m.load_state_dict(sd, strict=True)
    return m


def test_reference_named_pair_converts_to_the_same_transformer(kit, converted):
    from mirage_cli import MirageTransformer3DModel

    out, report = converted
    loaded = MirageTransformer3DModel.from_pretrained(out / "transformer", dtype=torch.float32).eval()
    direct = _direct_model(kit)
    a, b = loaded.state_dict(), direct.state_dict()
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k]).abs().max().item() for k in a) < 1e-6
    x, text, ctx, t = _inputs()
    with torch.no_grad():
        ya = loaded(x, t[None], text, ctx, num_ref_frames=2).sample
        yb = direct(x, t[None], text, ctx, num_ref_frames=2).sample
    assert (ya - yb).abs().max() < 1e-5
    # Layout, sources and streaming
    index = json.loads((out / "model_index.json").read_text())
    assert index["transformer"] == ["mirage_cli", "MirageTransformer3DModel"]
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["_class_name"], sched["flow_shift"], sched["use_flow_sigmas"]) == ("UniPCMultistepScheduler", 5.0, True)
    info = json.loads((out / "mirage.json").read_text())
    assert info["vace"]["sha256"] == sha256_file(kit["vace_file"])
    assert info["lora"]["sha256"] == sha256_file(kit["lora_file"])
    assert info["lora"]["scale"] == 1.0 and info["lora"]["rank"] == 4 and info["lora"]["modules"] == 40
    assert info["vace"]["vace_layers"] == [0, 2] and info["created_by"].startswith("mirage ")
    assert report.shards > 1 and (out / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    largest = max(v.numel() * v.element_size() for v in a.values())  # fp32 as loaded; >= as written
    assert 0 < report.peak_held_bytes <= largest < report.total_bytes / 5  # one tensor at a time
    assert report.peak_rss_bytes > 0
    assert not list(out.parent.glob(".model.partial-*"))
    assert (out / "mirage_random_weights.json").is_file()


def test_lora_fusion_matches_peft(kit, tmp_path):
    peft = pytest.importorskip("peft")
    from diffusers import WanTransformer3DModel

    out = tmp_path / "half"
    convert_mirage(kit["base"], kit["vace_file"], kit["lora_file"], out, lora_scale=0.5)
    fused_sd = {k: v.float() for k, v in load_file(str(out / "transformer" / "diffusion_pytorch_model.safetensors")).items()
                if not k.startswith("vace_")}
    fused = WanTransformer3DModel(**TINY_WAN22_TRANSFORMER_CONFIG).eval()
    fused.load_state_dict(fused_sd, strict=True)

    base = _base(kit)
    _, lora = tiny_mirage_weights(base, seed=0)
    # peft scales B @ A by lora_alpha / r: alpha = 2, r = 4 gives the 0.5 passed to convert.
    base.add_adapter(peft.LoraConfig(r=4, lora_alpha=2, target_modules=sorted(lora), init_lora_weights=False))
    mods = dict(base.named_modules())
    with torch.no_grad():
        for name, (a, b) in lora.items():
            mods[name].lora_A["default"].weight.copy_(a.to(torch.bfloat16).float())
            mods[name].lora_B["default"].weight.copy_(b.to(torch.bfloat16).float())
    x, text, _, _ = _inputs(R=0, P=0, T=3)
    with torch.no_grad():
        y_peft = base(x, torch.tensor([400.0]), text).sample
        y_fused = fused(x, torch.tensor([400.0]), text).sample
        base.disable_adapters()
        y_plain = base(x, torch.tensor([400.0]), text).sample
    assert (y_peft - y_fused).abs().max() < 1e-4
    assert (y_plain - y_fused).abs().max() > 1e-3  # the LoRA did change the network


def _bad(tmp_path, kit, **over):
    args = dict(base=kit["base"], vace=kit["vace_file"], lora=kit["lora_file"], out=tmp_path / "out")
    args.update(over)
    with pytest.raises(MirageError) as e:
        convert_mirage(args.pop("base"), args.pop("vace"), args.pop("lora"), args.pop("out"), **args)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _edited(src, dst, fn):
    sd = load_file(str(src))
    fn(sd)
    save_file(sd, str(dst))
    return dst


def test_convert_rejects_bad_inputs_naming_file_and_key(kit, tmp_path):
    v = _edited(kit["vace_file"], tmp_path / "v_foreign.safetensors", lambda sd: sd.update(extra=torch.zeros(1)))
    msg = _bad(tmp_path, kit, vace=v)
    assert str(v) in msg and "'extra'" in msg

    def shrink(sd):
        sd["vace_blocks.1.ffn.0.weight"] = sd["vace_blocks.1.ffn.0.weight"][:8]
    v = _edited(kit["vace_file"], tmp_path / "v_shape.safetensors", shrink)
    assert "'vace_blocks.1.ffn.0.weight'" in _bad(tmp_path, kit, vace=v)

    v = _edited(kit["vace_file"], tmp_path / "v_missing.safetensors", lambda sd: sd.pop("vace_blocks.1.norm3.bias"))
    assert "vace_blocks.1.norm2.bias" in _bad(tmp_path, kit, vace=v)

    lr = _edited(kit["lora_file"], tmp_path / "l_foreign.safetensors",
                 lambda sd: sd.update({"lora_unet_blocks_0_q.lora_down.weight": torch.zeros(4, 24)}))
    msg = _bad(tmp_path, kit, lora=lr)
    assert str(lr) in msg and "'lora_unet_blocks_0_q.lora_down.weight'" in msg

    def bad_a(sd):
        sd["pipe.dit.blocks.2.self_attn.q.lora_A.weight"] = torch.zeros(4, 7)
    assert "'pipe.dit.blocks.2.self_attn.q.lora_A.weight'" in _bad(
        tmp_path, kit, lora=_edited(kit["lora_file"], tmp_path / "l_shape.safetensors", bad_a))

    lr = _edited(kit["lora_file"], tmp_path / "l_half.safetensors",
                 lambda sd: sd.pop("pipe.dit.blocks.1.ffn.2.lora_B.weight"))
    assert "'pipe.dit.blocks.1.ffn.2.lora_A.weight'" in _bad(tmp_path, kit, lora=lr)

    lr = _edited(kit["lora_file"], tmp_path / "l_block.safetensors",
                 lambda sd: sd.update({"pipe.dit.blocks.9.ffn.0.lora_A.weight": torch.zeros(4, 24)}))
    assert "'pipe.dit.blocks.9.ffn.0.lora_A.weight'" in _bad(tmp_path, kit, lora=lr)

    pt = tmp_path / "vace.pt"
    pt.write_bytes(b"not loaded")
    assert "safetensors" in _bad(tmp_path, kit, vace=pt)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 16)
    assert str(junk) in _bad(tmp_path, kit, lora=junk)


def test_convert_rejects_a_base_that_is_not_wan22(kit, tmp_path, tiny_kit):
    msg = _bad(tmp_path, kit, base=tiny_kit["vace"])  # the Wan2.1-VACE tiny kit
    assert "transformer/config.json" in msg and "_class_name" in msg
    import shutil

    base = tmp_path / "base16"
    shutil.copytree(kit["base"], base)
    cfg = json.loads((base / "transformer" / "config.json").read_text())
    (base / "transformer" / "config.json").write_text(json.dumps({**cfg, "in_channels": 16}))
    assert "in_channels" in _bad(tmp_path, kit, base=base)


def test_convert_never_leaves_a_half_written_folder(kit, tmp_path, monkeypatch):
    from mirage_cli.models import convert as conv

    def boom(self, produce):
        produce(self.shards[0][0])
        raise OSError("disk full")

    monkeypatch.setattr(conv.StreamingShards, "write", boom)
    with pytest.raises(OSError):
        convert_mirage(kit["base"], kit["vace_file"], kit["lora_file"], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    monkeypatch.undo()
    with pytest.raises(MirageError, match="exists and is not an empty directory"):
        convert_mirage(kit["base"], kit["vace_file"], kit["lora_file"], tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert (tmp_path / "taken" / "x").read_text() == "x"


def test_missing_base_offline_fails_fast_naming_repo_and_command(tmp_path, monkeypatch, kit):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(MirageError) as e:
        convert_mirage("wan2.2-ti2v-5b", kit["vace_file"], kit["lora_file"], tmp_path / "out")
    assert time.perf_counter() - t0 < 1.0
    assert "Wan-AI/Wan2.2-TI2V-5B-Diffusers" in str(e.value)
    assert "mirage models download wan2.2-ti2v-5b" in str(e.value)


def test_cli_tiny_and_convert(tmp_path, capsys):
    assert main(["models", "tiny", str(tmp_path / "kit"), "--kind", "mirage"]) == 0
    k = tmp_path / "kit"
    assert main(["models", "convert", "--base", str(k / "base"), "--vace", str(k / "vace.safetensors"),
                 "--lora", str(k / "lora.safetensors"), "-o", str(tmp_path / "out")]) == 0
    io = capsys.readouterr()
    assert re.search(r"\(\d+\.\d+ [kM]B\) in 1 shard", io.out)  # units, no 2.4e-05 GB
    assert "e-0" not in io.out and " GB" not in io.out.split("peak RSS")[0]
    assert (io.out + io.err).count("LoRA fused into") == 1
    assert json.loads((tmp_path / "out" / "mirage.json").read_text())["format"] == "mirage.model"
    code = main(["models", "convert", "--base", str(k / "base"), "--vace", str(k / "lora.safetensors"),
                 "--lora", str(k / "lora.safetensors"), "-o", str(tmp_path / "bad")])
    assert code == 2 and not (tmp_path / "bad").exists()
    assert main(["models", "tiny", str(tmp_path / "k3"), "--kind", "nope"]) == 2
