"""Issue 25 items 1, 3 and 6: memory dropout, the pre-run memory estimate, FSDP configs, bad input before a run."""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import test_train
import torch
from test_train import _cfg

from mirage_cli.backends import PrecedingReads
from mirage_cli.cli import main
from mirage_cli.data.shards import TrainingShards, load_extras, sample_members, write_tar
from mirage_cli.errors import MirageError
from mirage_cli.train.budget import (
    PAPER_CONFIG,
    PAPER_FRAMES,
    PAPER_LATENT,
    Tokens,
    estimate,
    memory_table,
    param_counts,
    run_budget,
    step_flops,
    time_table,
)
from mirage_cli.train.loop import _draw_batch, step_seed, train
from mirage_cli.train.model import base_dir, build_model, is_lora, is_vace, mirage_config
from mirage_cli.train.objective import StoredConditioning, make_batch, sample_request

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module
kit, shards = test_train.kit, test_train.shards  # test_train's module fixtures: the tiny kit, two prepared samples


# ------------------------------------------------------------------------------------------ memory dropout
def _cond(shards) -> StoredConditioning:
    return StoredConditioning(load_extras(shards), (1, 2, 2), str(shards))


def test_memory_dropout_one_is_the_empty_memory_read(shards):
    ds = TrainingShards(shards)
    s = ds[0]
    cond = _cond(shards)
    dropped = make_batch([s], cond, 2, 2, [False], [True])
    # what the engine hands the backend for an empty memory: nothing read, nothing known, no stored reads
    req = sample_request(s, 2, 2, s.key)
    T, C, h, w = req.read_latents.shape
    empty = replace(req, read_latents=torch.zeros(T, C, h, w), known=torch.zeros(T, h, w, dtype=torch.bool),
                    extras=(PrecedingReads(torch.zeros(3, C, h, w), torch.zeros(3, h, w, dtype=torch.bool)),))
    cond.set_texts({s.key: cond.pad_text(s.tensors["text"])})
    want = cond.build_inputs(empty)
    assert torch.equal(dropped.context, want.context.float())
    assert dropped.context[:, :C].abs().sum() == 0  # the memory half is empty ...
    kept = make_batch([s], cond, 2, 2, [False])
    assert kept.context[:, :C].abs().sum() > 0  # ... where the sample's read was not
    assert torch.equal(dropped.context[:, C:], kept.context[:, C:])  # the white-video half is untouched
    for f in ("x0", "reference", "preceding", "text"):
        assert torch.equal(getattr(dropped, f), getattr(kept, f)), f
    assert torch.equal(make_batch([s], cond, 2, 2, [False], [False]).context, kept.context)


def test_memory_dropout_draws_from_the_step_generator(kit, shards, tmp_path):
    ds = TrainingShards(shards)
    samples = [ds[0], ds[1]]
    cond = _cond(shards)
    C = samples[0].tensors["target"].shape[1]

    def draw(p: float, seed: int):
        g = torch.Generator().manual_seed(step_seed(seed))
        b = _draw_batch(_cfg(kit, shards, tmp_path, memory_dropout=p), cond, samples, g)
        return b, torch.rand(1, generator=g).item()  # where the generator stands after the draws

    plain = make_batch(samples, cond, 4, 2, (torch.rand(2, generator=torch.Generator().manual_seed(step_seed(0)))
                                             < 0.1).tolist())
    b0, after0 = draw(0.0, 0)
    assert torch.equal(b0.context, plain.context)
    g = torch.Generator().manual_seed(step_seed(0))
    torch.rand(2, generator=g)  # P = 0 draws nothing more than before the option existed
    assert after0 == torch.rand(1, generator=g).item()
    b1, _ = draw(1.0, 0)
    assert b1.context[:, :C].abs().sum() == 0 and torch.equal(b1.context[:, C:], plain.context[:, C:])
    # P = 0.5: per sample, the same draws for the same seed, both outcomes over seeds
    outcomes = set()
    for seed in range(12):
        a, b = draw(0.5, seed)[0], draw(0.5, seed)[0]
        assert torch.equal(a.context, b.context)
        outcomes.update(bool(a.context[i, :C].abs().sum() == 0) for i in range(2))
    assert outcomes == {True, False}


def test_memory_dropout_resume_is_bit_identical(kit, shards, tmp_path):
    cfg = _cfg(kit, shards, tmp_path / "a", stages=("vace",), max_steps=3, save_every=1, memory_dropout=0.5)
    a = train(cfg)

    def crash(rec):
        if rec.step == 2:
            raise KeyboardInterrupt
    b_cfg = replace(cfg, out=str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        train(b_cfg, on_step=crash)
    b = train(b_cfg, resume=tmp_path / "b")
    assert b.losses == a.losses
    memory = json.loads((tmp_path / "a" / "final" / "train.json").read_text())["memory_estimate"]
    assert memory["line"].startswith("memory estimate: ") and memory["peak_bytes"] > 0
    assert train(replace(cfg, out=str(tmp_path / "c"), memory_dropout=0.0)).losses != a.losses


# ------------------------------------------------------------------------------------------ memory estimate
ROOT = Path(__file__).resolve().parents[1]


def test_parameter_counts_from_the_config_are_the_built_models(kit):
    counts = param_counts(mirage_config(base_dir(str(kit["base"]))), 4)
    model = build_model(str(kit["base"]), lora_rank=4)
    n = {"vace": 0, "lora": 0, "base": 0}
    for name, p in model.named_parameters():
        n["vace" if is_vace(name) else "lora" if is_lora(name) else "base"] += p.numel()
    assert (counts.base, counts.vace, counts.lora) == (n["base"], n["vace"], n["lora"])
    assert counts.layers == model.config.num_layers and counts.vace_blocks == len(model.vace_blocks)


def test_step_flops_count_every_matmul_of_a_block():
    """Two more DiT layers add exactly two blocks' matmuls and attention, counted by hand (LoRA included)."""
    cfg = {**PAPER_CONFIG, "num_attention_heads": 2, "attention_head_dim": 32, "ffn_dim": 128, "text_dim": 64,
           "freq_dim": 32}
    r, frames, hw = 4, (1, 3, 1), (8, 12)

    def flops(layers, stage="vace", ckpt=False):
        return step_flops({**cfg, "num_layers": layers, "vace_layers": [0]}, r, frames, hw, stage=stage,
                          gradient_checkpointing=ckpt)

    two, four = flops(2), flops(4)
    D, F, N, L = 64, 128, 5 * 4 * 6, 512  # width, FFN width, tokens (5 latent frames of 4 x 6 patches), text
    block = (2 * N * 4 * D * D + 2 * N * 2 * D * D + 2 * L * 2 * D * D + 2 * N * 2 * D * F  # self-attn, cross-attn, FFN
             + 2 * N * r * 2 * D * 4 + 2 * N * r * 2 * D * 2 + 2 * L * r * 2 * D * 2 + 2 * N * r * (D + F) * 2  # LoRA
             + 4 * N * N * D + 4 * N * L * D)  # attention scores and values
    assert four.forward - two.forward == 2 * block
    assert two.forward < two.total < flops(2, ckpt=True).total  # backward, then the recomputation


@pytest.mark.slow
def test_full_size_time_is_the_documented_table():
    assert time_table() in (ROOT / "docs" / "training.md").read_text()  # the docs print what the code computes


def test_full_size_estimate_is_the_documented_table():
    c = param_counts(PAPER_CONFIG, 32)
    # the reference trains a 2.6 B VACE branch and 600 LoRA tensors = 30 blocks x 10 modules x (A, B) of rank 32
    assert round(c.base / 1e9, 3) == 5.0 and round(c.vace / 1e9, 3) == 2.607
    assert c.lora == 30 * 32 * (16 * 3072 + 2 * (3072 + 14336))
    table = memory_table()
    assert table in (ROOT / "docs" / "training.md").read_text()  # the docs print what the code computes
    tok = Tokens.of(c, PAPER_FRAMES, PAPER_LATENT)
    assert (tok.dit, tok.context) == (15 * 880, 11 * 880)

    def total(**kw):
        return estimate(c, tok, stage="vace", stages=("vace", "lora"), **kw).total

    assert total(gradient_checkpointing=True) < total()
    assert total(precision="bf16") < total()
    assert total(distribution="fsdp", world=8) < total(distribution="fsdp", world=2) < total()
    assert total(distribution="ddp", world=2) > total()  # DDP's gradient buckets
    assert total(batch_size=2) > total()


def test_a_run_that_cannot_fit_is_refused_with_one_line(kit, shards, tmp_path, capsys):
    cfg = _cfg(kit, shards, tmp_path / "o")
    with pytest.raises(MirageError) as e:
        run_budget(cfg, "single", 1, "cpu", available=10**6)  # a device with 1 MB free
    msg = str(e.value)
    assert "\n" not in msg and "cannot fit" in msg and "--no-memory-check" in msg and "--gradient-checkpointing" in msg
    unchecked = run_budget(cfg, "single", 1, "cpu", available=10**6, check=False)
    assert unchecked.peak.total > 10**6 and "\n" not in unchecked.line()
    fits = run_budget(cfg, "single", 1, "cpu", available=10**12)
    assert fits.record()["peak_bytes"] == fits.peak.total and {e.stage for e in fits.stages} == {"vace", "lora"}
    # the CLI: a batch no machine holds is refused before any weight loads, one line, exit 2
    assert main(["train", "--data", str(shards), "--model", str(kit["base"]), "--out", str(tmp_path / "o"),
                 "--batch-size", "100000000", "--device", "cpu", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot fit" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ accelerate configs
def _launch_args(name: str):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(ROOT / "configs" / "accelerate" / name), "-m",
                                               "mirage_cli", "train"])
    return _validate_launch_command(args)[0]


def test_accelerate_configs_parse_and_fsdp_wraps_every_block(kit, monkeypatch):
    """What `accelerate launch --config_file ...` reads: the DDP config launches 8 processes, the FSDP one
    FSDP2 FULL_SHARD with one unit per DiT block of the real model (accelerate's own wrap policy)."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from accelerate.utils.launch import prepare_multi_gpu_env

    ddp = _launch_args("ddp.yaml")
    assert ddp.multi_gpu and not ddp.use_fsdp and ddp.num_processes == 8
    args = _launch_args("fsdp_5b.yaml")
    assert args.use_fsdp and args.num_processes == 8
    env = prepare_multi_gpu_env(args)
    for k, v in env.items():
        if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(k, v)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    model = build_model(str(kit["base"]), lora_rank=4)
    plugin.set_auto_wrap_policy(model)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    wrapped = {id(m) for m in model.modules() if policy(m)}
    assert wrapped == {id(m) for m in model.blocks}  # the VACE blocks stay in the root unit (sharding.py)


# ------------------------------------------------------------------------------------------ bad input (item 6)
def _copy_shards(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _one_sample_shards(src: Path, dst: Path, edit) -> Path:
    """A shard folder whose one sample is ``src``'s first with its tensors passed through ``edit``."""
    dst.mkdir()
    s = TrainingShards(src)[0]
    table = write_tar(dst / "shard-000000.tar", sample_members(s.key, edit(dict(s.tensors)), s.meta, s.caption))
    index = json.loads((src / "index.json").read_text())
    index["shards"] = [{"file": "shard-000000.tar", "samples": 1, "keys": [s.key],
                        "offsets": [[v for _, o, n in table for v in (o, n)]]}]
    (dst / "index.json").write_text(json.dumps(index))
    shutil.copy(src / "dataset.safetensors", dst / "dataset.safetensors")
    return dst


def test_bad_input_before_a_run_is_one_line_exit_2(kit, shards, tmp_path, capsys):
    empty = _copy_shards(shards, tmp_path / "empty")
    index = json.loads((empty / "index.json").read_text())
    (empty / "index.json").write_text(json.dumps({**index, "shards": []}))
    foreign = _copy_shards(shards, tmp_path / "foreign")
    (foreign / "index.json").write_text(json.dumps({**index, "format": "webdataset"}))
    junk = _copy_shards(shards, tmp_path / "junk")
    (junk / "dataset.safetensors").write_bytes(b"not tensors")
    no_text = _one_sample_shards(shards, tmp_path / "no-text", lambda t: {k: v for k, v in t.items() if k != "text"})
    wan21 = _one_sample_shards(shards, tmp_path / "wan21", lambda t: {k: (v[:, :16] if v.dim() == 4 else v)
                                                                       for k, v in t.items()})
    base21 = tmp_path / "base21"  # a Wan2.1-shaped base: 16 latent channels
    shutil.copytree(kit["base"], base21)
    cfg = json.loads((base21 / "transformer" / "config.json").read_text())
    (base21 / "transformer" / "config.json").write_text(json.dumps({**cfg, "in_channels": 16, "out_channels": 16}))
    model = ["--model", str(kit["base"])]
    cases = [(["--data", str(empty), *model], "no samples"),
             (["--data", str(foreign), *model], "format"),
             (["--data", str(junk), *model], "not a safetensors file"),
             (["--data", str(no_text), *model], "'text'"),
             (["--data", str(wan21), *model], "16 channels"),
             (["--data", str(shards), "--model", str(base21)], "in_channels is 16"),
             (["--data", str(shards), *model, "--lora-rank", "0"], "--lora-rank"),
             (["--data", str(shards), *model, "--memory-dropout", "1.5"], "--memory-dropout")]
    for args, word in cases:
        assert main(["train", "--out", str(tmp_path / "o"), "--device", "cpu", "-q", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert word in err and len(err.splitlines()) == 1, (args, err)
    assert not (tmp_path / "o").exists()
    # a resume folder from another configuration: one line naming the option
    train(_cfg(kit, shards, tmp_path / "r", stages=("vace",), max_steps=1))
    capsys.readouterr()
    assert main(["train", "--data", str(shards), *model, "--out", str(tmp_path / "r"), "--stage", "vace", "--max-steps",
                 "2", "--lora-rank", "4", "--lora-alpha", "8", "--lr-vace", "5e-4", "--device", "cpu", "-q",
                 "--resume", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--lr-vace was 0.001, now 0.0005" in err and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_fsdp2_checkpoint_gathers_and_reshards(kit, tmp_path):
    """accelerate runs FSDP only on GPUs; the checkpoint code's FSDP2 path (DTensor shards gathered on every
    rank, one writer, moments re-sharded on load) is checked with torch's fully_shard on 2 CPU ranks (gloo)."""
    worker = Path(__file__).with_name("train_fsdp2_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(worker), str(kit["base"]),
           str(tmp_path / "ck")]
    proc = subprocess.run(cmd, env=test_train._env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(": ok (") == 2
    assert [p.name for p in (tmp_path / "ck" / "checkpoints").iterdir()] == ["step-0000001"]


def test_every_resume_field_names_an_option_the_cli_has():
    """A resume mismatch names the option to give; each one exists on `mirage train` (or the field has none)."""
    from mirage_cli.cli.train import train_cmd
    from mirage_cli.train.config import NO_OPTION, RESUME_FIXED, option_of

    flags = {f for p in inspect.signature(train_cmd).parameters.values() for f in getattr(p.default, "param_decls", [])}
    for field in RESUME_FIXED:
        assert field in NO_OPTION or all(o in flags for o in option_of(field).split(" / ")), field
