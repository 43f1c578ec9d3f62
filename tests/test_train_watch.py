"""Issue 25 item 5, watching `mirage train`: validation (held-out loss at fixed noise, a generation scored by
eval's metrics), OUT/loss.png, --report-to trackers, the last validation in the progress."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math

import pytest
import torch
from PIL import Image

from mirage_cli.cli import main
from mirage_cli.data.shards import load_extras
from mirage_cli.errors import MirageError
from mirage_cli.train.config import TrainConfig
from mirage_cli.train.loop import train
from mirage_cli.train.model import build_model
from mirage_cli.train.objective import StoredConditioning
from mirage_cli.train.report import PROJECT, read_log, smoothed
from mirage_cli.train.validate import Validator, held_out, training_indices

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module
# train_kit, train_shards: conftest (the tiny mirage kit; two synthetic clips prepared at 128 x 64)


def _cfg(train_kit, train_shards, out, **kw) -> TrainConfig:
    base = dict(data=str(train_shards), model=str(train_kit["base"]), out=str(out), max_steps=2, lora_rank=4, lora_alpha=8.0,
                lr_vace=1e-2, lr_lora=1e-2, device="cpu", validate_steps=2)
    base.update(kw)
    return TrainConfig(**base)


def test_validation_rows_scores_held_out_clip_and_plot(train_kit, train_shards, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", "--data", str(train_shards), "--model", str(train_kit["base"]), "--out", str(out), "--stage", "vace",
                 "--max-steps", "3", "--lora-rank", "4", "--lr-vace", "1e-2", "--device", "cpu",
                 "--validate-every", "2", "--validate-steps", "2", "--save-every", "2"]) == 0
    err = capsys.readouterr().err
    steps, vals = read_log(out / "train.jsonl")
    # every 2 steps and at the end; the held-out clip (the last of the index) is never trained on
    assert [v["step"] for v in vals] == [2, 3] and len(steps) == 3
    held = held_out(_cfg(train_kit, train_shards, out, validate_every=2))
    assert held is not None and held.clips == ("synth-0001",) and not held.separate
    trained = {k for r in steps for rank in r["keys"] for k in rank}
    assert trained == {"synth-0000-000"}
    for v in vals:
        assert math.isfinite(v["loss"]) and math.isfinite(v["psnr"]) and 0 < v["psnr"] < 100
        assert math.isfinite(v["ssim"]) and -1 <= v["ssim"] <= 1 and v["samples"] == 1 and v["note"] is None
        assert (out / "validation" / f"step-{v['step']:07d}" / "synth-0001-000" / "run" / "video.mp4").is_file()
    assert "validation at step 3: loss" in err and "PSNR" in err
    record = json.loads((out / "final" / "train.json").read_text())
    assert record["validation"] == vals and record["config"]["held_out_clips"] == 1
    with Image.open(out / "loss.png") as im:  # a valid PNG (verify() checks the chunks' CRCs)
        assert im.format == "PNG" and im.size == (1200, 480)
        im.verify()


def test_validation_loss_is_fixed_noise_and_repeatable(train_kit, train_shards, tmp_path):
    cfg = _cfg(train_kit, train_shards, tmp_path / "v", validate_every=1, validate_data=str(train_shards))
    held = held_out(cfg)
    assert held is not None and held.separate and held.indices == (0, 1) and training_indices(cfg, held) is None
    model = build_model(str(train_kit["base"]), lora_rank=4, lora_alpha=8.0)
    cond = StoredConditioning(load_extras(train_shards), model.config.patch_size, str(train_shards))
    # no mixed precision: accelerate's autocast is a null context
    v1 = Validator(cfg, held, cond, torch.device("cpu"), contextlib.nullcontext, lambda m: None)
    v2 = Validator(cfg, held, cond, torch.device("cpu"), contextlib.nullcontext, lambda m: None)
    sig_a, noise_a = v1.draws(1, 9, torch.Size([1, 48, 9, 4, 8]))
    sig_b, noise_b = v2.draws(1, 9, torch.Size([1, 48, 9, 4, 8]))
    assert torch.equal(sig_a, sig_b) and torch.equal(noise_a, noise_b) and sig_a[0] == 0 and (sig_a[1:] > 0).all()
    assert not torch.equal(v1.draws(0, 9, torch.Size([1, 48, 9, 4, 8]))[1], noise_a)  # one draw per sample
    model.train()
    torch.manual_seed(123)
    before = torch.rand(4)
    torch.manual_seed(123)
    a = v1.run(model, "vace", 1)
    after = torch.rand(4)
    b = v2.run(model, "vace", 2)  # unchanged weights: the same loss, the same generation
    assert a.loss == b.loss and math.isfinite(a.loss) and a.psnr == b.psnr and a.ssim == b.ssim
    assert torch.equal(before, after)  # the global RNG is where it was
    assert all(m.training for m in model.modules())  # modes and trainable flags restored
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    assert v1.loss(model) != a.loss  # it does measure the weights


def test_training_losses_are_unchanged_by_validation(train_kit, train_shards, tmp_path):
    plain = train(_cfg(train_kit, train_shards, tmp_path / "a", stages=("vace", "lora")))
    watched = train(_cfg(train_kit, train_shards, tmp_path / "b", stages=("vace", "lora"), validate_every=2,
                         validate_data=str(train_shards)))
    assert len(plain.losses) == 4 and plain.losses == watched.losses
    assert [(v["stage"], v["step"]) for v in read_log(tmp_path / "b" / "train.jsonl")[1]] == [("vace", 2), ("lora", 4)]
    for (n, p), (_, q) in zip(plain.model.named_parameters(), watched.model.named_parameters()):
        assert torch.equal(p, q), n


def test_held_out_clips_must_leave_training_data(train_kit, train_shards, tmp_path, capsys):
    args = ["train", "--data", str(train_shards), "--model", str(train_kit["base"]), "--out", str(tmp_path / "o"), "--device",
            "cpu", "--max-steps", "1", "-q", "--validate-every", "1"]
    assert main(args + ["--validate-clips", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--validate-clips 2" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    # holding a clip out changes the training set: a run trained on every clip is not resumed with one held out
    assert main(args[:-2] + ["--stage", "vace"]) == 0
    capsys.readouterr()
    assert main(args + ["--stage", "vace", "--resume", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--validate-clips / --validate-data was 0, now 1" in err and len(err.splitlines()) == 1


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_report_to_a_missing_tracker_is_one_line_exit_2(train_kit, train_shards, tmp_path, capsys):
    assert main(["train", "--data", str(train_shards), "--model", str(train_kit["base"]), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--report-to", "wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--report-to wandb" in err and "pip install wandb" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_report_to_tensorboard_logs_losses_and_validations(train_kit, train_shards, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = train(_cfg(train_kit, train_shards, tmp_path / "tb", stages=("vace",), validate_every=2, report_to="tensorboard"))
    logdir = tmp_path / "tb" / PROJECT
    ev = EventAccumulator(str(logdir)).Reload()
    losses = [e.value for e in ev.Scalars("train/loss")]
    assert [e.step for e in ev.Scalars("train/loss")] == [1, 2]
    assert losses == pytest.approx(r.losses, rel=1e-6)
    assert [e.step for e in ev.Scalars("validation/psnr")] == [2] and math.isfinite(ev.Scalars("validation/loss")[0].value)


def test_smoothing_is_tensorboards_debiased_ema():
    assert smoothed([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    # by hand: last = 0.1 * 1 = 0.1 -> 0.1 / 0.1 = 1; last = 0.09 + 0.3 = 0.39 -> 0.39 / 0.19
    assert smoothed([1.0, 3.0]) == pytest.approx([1.0, 0.39 / 0.19])
    assert math.isnan(smoothed([1.0, float("nan"), 1.0])[1]) and smoothed([1.0, float("nan"), 1.0])[2] == pytest.approx(1.0)


def test_validation_under_fsdp_is_refused_in_one_line(train_kit, train_shards, tmp_path, monkeypatch):
    """Rank 0 validates alone; a model sharded by FSDP needs every rank for a forward, so the run would hang."""
    import mirage_cli.train.loop as loop

    monkeypatch.setattr(loop, "distribution_of", lambda acc: ("fsdp", 2))
    with pytest.raises(MirageError, match="--validate-every is not supported under FSDP"):
        train(_cfg(train_kit, train_shards, tmp_path / "w", validate_every=1))
    assert not (tmp_path / "w").exists()  # refused before anything is written
